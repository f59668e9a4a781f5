//! `bench-latency-volume`: the paper's Table 2 for one whole scan (a 512 x 512 x N CT): the
//! edge's compression on one core and on every core, transmission, entropy decoding and the
//! cloud's g + sliding-window s, beside the raw scan segmented by D1.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use orchestra_api::Variant;
use orchestra_edge::nifti_write::write_labels;
use orchestra_edge::scan::read_scan;
use orchestra_edge::volume::{LabelVolume, DEFAULT_MAX_VOXELS};
use orchestra_edge::EdgeModel;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::data::TrainingData;
use orchestra_worker::latency::volumes::{orchestra_row, raw_row, table};
use tch::Device;

use super::bench_latency::{gpu_device, GpuColumn};

#[derive(clap::Args)]
pub struct VolumeLatencyArgs {
    /// Orchestra's exported volume model (`orchestra-worker export` of a 3D D2-D4 trial).
    #[arg(long)]
    model: PathBuf,
    /// The scan: a `.nii(.gz)` file or a DICOM series folder.
    #[arg(long)]
    scan: PathBuf,
    /// Trial spec of a trained 3D D1 model, for the raw scan's row. Without it only
    /// Orchestra's row is measured.
    #[arg(long)]
    d1: Option<PathBuf>,
    /// Link speed for the transmission time (the paper: 300 MB in 13 s).
    #[arg(long, default_value_t = 23.0)]
    link_mb_per_s: f64,
    #[arg(long, value_enum, default_value_t = GpuColumn::Auto)]
    gpu: GpuColumn,
    /// Write Orchestra's label volume here (`.nii.gz`, the scan's sides and affine).
    #[arg(long)]
    write_labels: Option<PathBuf>,
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: VolumeLatencyArgs) -> Result<()> {
    let report = |line: &str| eprintln!("  {line}");
    let gpu = gpu_device(args.gpu)?;
    let edge = EdgeModel::load(&args.model)?;
    let cloud = CompressionModel::load(&args.model, Device::Cpu)?;
    let cloud_gpu = gpu.map(|d| CompressionModel::load(&args.model, d)).transpose()?;
    let started = std::time::Instant::now();
    let scan = read_scan(&args.scan, DEFAULT_MAX_VOXELS)
        .with_context(|| format!("reading {}", args.scan.display()))?;
    let [z, y, x] = scan.geometry.sides;
    eprintln!(
        "{}: {z} x {y} x {x} voxels read in {:.1} s (not counted below: the scanner has it in memory)",
        args.scan.display(),
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    eprintln!("Orchestra ({}):", cloud.model.variant);
    let (row, labels) = orchestra_row(
        &edge,
        &cloud,
        cloud_gpu.as_ref(),
        &scan,
        args.link_mb_per_s,
        report,
    )
    .map_err(anyhow::Error::msg)?;
    rows.push(row);
    if let Some(path) = &args.write_labels {
        write_labels(
            path,
            &LabelVolume {
                geometry: scan.geometry.clone(),
                labels,
            },
        )?;
        eprintln!("  label volume written to {}", path.display());
    }
    if let Some(path) = &args.d1 {
        let spec = super::trial::read_spec(path)?;
        if spec.variant != Variant::D1 {
            bail!("--d1 {}: variant {}, expected D1", path.display(), spec.variant);
        }
        let (d1, _, data) = super::trial::load_checkpoint(&spec, None)?;
        let TrainingData::Volumes(set) = data else {
            bail!("--d1 {}: not a volume model", path.display());
        };
        let d1_gpu = gpu
            .map(|device| d1.copy_to(device))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        eprintln!("raw scan, D1:");
        let (row, _) = raw_row(
            &d1,
            d1_gpu.as_ref(),
            &set.preprocessing,
            &scan,
            args.link_mb_per_s,
            report,
        )
        .map_err(anyhow::Error::msg)?;
        rows.push(row);
    } else {
        eprintln!("no --d1 model: the raw scan's row is skipped");
    }
    let text = table(&rows);
    print!("{text}");
    println!("(one whole scan per stage, timed once; the scan's reading from disk is not counted)");
    if let Some(path) = &args.out {
        super::bench::write_results(path, &rows, &text)?;
    }
    Ok(())
}
