//! PyTorch eager's cloud side beside Orchestra's, on the same code in the same run:
//! `scripts/pytorch_sliding_window.py` loads g and s from the same model file into the reference
//! networks, runs g over the decoded code and nnU-Net's sliding window over its features, and
//! hands back its timings and label volume, which are compared with Orchestra's here.

use std::path::Path;
use std::process::Command;

use orchestra_api::Precision;
use orchestra_codec::CodeShape;
use serde::{Deserialize, Serialize};

/// What the script measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PytorchCloud {
    pub framework: String,
    pub threads: i64,
    pub precision: String,
    pub window_batch: usize,
    /// `nnunet` (PyTorch's default layout, InstanceNorm3d) or `channels-last` (Orchestra's).
    pub layout: String,
    pub windows: usize,
    pub g_s: f64,
    pub s_s: f64,
    pub peak_rss_mb: f64,
}

/// Where the script is and which Python runs it (one with torch).
#[derive(Clone, Debug)]
pub struct PytorchScript<'a> {
    pub python: &'a Path,
    pub script: &'a Path,
}

/// The code and the sides of the prepared scan it was made from.
#[derive(Clone, Copy, Debug)]
pub struct DecodedCode<'a> {
    pub shape: &'a CodeShape,
    pub bits: &'a [i8],
    pub prepared_sides: [usize; 3],
}

impl PytorchScript<'_> {
    /// Runs g + s on `threads` threads in `layout` (`nnunet` or `channels-last`): the
    /// measurement and the labels (the prepared sides).
    pub fn run(
        &self,
        model: &Path,
        code: DecodedCode,
        threads: i32,
        precision: Precision,
        window_batch: usize,
        layout: &str,
    ) -> Result<(PytorchCloud, Vec<u8>), String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no scratch folder for PyTorch: {e}"))?;
        let (code_path, labels_path, json_path) = (
            dir.path().join("code.i8"),
            dir.path().join("labels.u8"),
            dir.path().join("pytorch-measurement.json"),
        );
        let raw: Vec<u8> = code.bits.iter().map(|&b| b as u8).collect();
        std::fs::write(&code_path, raw).map_err(|e| format!("{}: {e}", code_path.display()))?;
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let mut shape = vec![code.shape.channels];
        shape.extend(&code.shape.sides);
        let status = Command::new(self.python)
            .arg(self.script)
            .arg("--model")
            .arg(model)
            .arg("--code")
            .arg(&code_path)
            .args(["--code-shape", &list(&shape)])
            .args(["--sides", &list(&code.prepared_sides)])
            .args(["--threads", &threads.to_string()])
            .args(["--precision", precision.name()])
            .args(["--batch", &window_batch.to_string()])
            .args(["--layout", layout])
            .arg("--labels-out")
            .arg(&labels_path)
            .arg("--json-out")
            .arg(&json_path)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot start {}: {e}", self.python.display()))?;
        if !status.success() {
            return Err(format!(
                "{} {} failed ({status}); its error is above",
                self.python.display(),
                self.script.display()
            ));
        }
        let result = std::fs::read(&json_path).map_err(|e| format!("{}: {e}", json_path.display()))?;
        let measured: PytorchCloud =
            serde_json::from_slice(&result).map_err(|e| format!("{}: {e}", json_path.display()))?;
        let labels = std::fs::read(&labels_path).map_err(|e| format!("{}: {e}", labels_path.display()))?;
        let voxels: usize = code.prepared_sides.iter().product();
        if labels.len() != voxels {
            return Err(format!(
                "{}: {} labels for {voxels} voxels",
                labels_path.display(),
                labels.len()
            ));
        }
        Ok((measured, labels))
    }
}
