//! The cloud's g + sliding-window s beside PyTorch eager's on the same code: seconds, work per
//! second, each run's speed against PyTorch in the same precision, how many voxels' labels
//! differ from the first run's (Orchestra in fp32), and Dice against the scan's ground truth
//! when there is one. Data in, text out: tested without a model.

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::eval::scores::dice_iou;

/// One framework's pass in one precision.
#[derive(Clone, Debug, Serialize)]
pub struct CloudRun {
    pub framework: String,
    pub precision: String,
    pub g_s: f64,
    pub s_s: f64,
    pub windows: usize,
    /// The networks' work (g over the code, s over every window), GFLOP.
    pub gflop: f64,
    /// Labels at the scan's source sides (not serialised).
    #[serde(skip)]
    pub labels: Vec<u8>,
    /// Filled by `compare`: voxels labelled unlike the first run, and the mean Dice against
    /// the ground truth when there is one.
    pub voxels_unlike_first: usize,
    pub dice_vs_truth: Option<f64>,
}

impl CloudRun {
    pub fn seconds(&self) -> f64 {
        self.g_s + self.s_s
    }

    fn is_pytorch(&self) -> bool {
        self.framework.starts_with("pytorch")
    }
}

/// Voxels whose labels differ.
pub fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// Mean Dice over the foreground classes (1..classes) of `labels` against `truth`, a class
/// absent from both counting 1.
pub fn mean_dice(labels: &[u8], truth: &[u8], classes: i64) -> f64 {
    let t = |l: &[u8]| Tensor::from_slice(l).to_kind(Kind::Int64).view([1, -1]);
    let (dice, _) = dice_iou(&t(labels), &t(truth), classes);
    dice.mean(Kind::Double).double_value(&[])
}

/// Compares every run's labels with the first run's and with the ground truth (`truth` and the
/// number of classes), when there is one.
pub fn compare(runs: &mut [CloudRun], truth: Option<(&[u8], i64)>) {
    let first = runs.first().map(|r| r.labels.clone()).unwrap_or_default();
    for r in runs.iter_mut() {
        r.voxels_unlike_first = differing(&first, &r.labels);
        r.dice_vs_truth = truth.map(|(t, classes)| mean_dice(&r.labels, t, classes));
    }
}

/// A comparison row per run, in the order given (`compare` first).
pub fn table(runs: &[CloudRun]) -> String {
    let header: Vec<String> = [
        "framework",
        "precision",
        "g",
        "s (sliding window)",
        "g + s",
        "GFLOP/s",
        "speed vs PyTorch eager as nnU-Net runs it (same precision)",
        "voxels labelled unlike the first row",
        "mean Dice vs ground truth",
    ]
    .map(String::from)
    .to_vec();
    let voxels = runs.first().map_or(1, |r| r.labels.len().max(1));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let pytorch = runs.iter().find(|p| p.is_pytorch() && p.precision == r.precision);
            let speed = pytorch.map_or("-".to_string(), |p| {
                format!("{:.2}x", p.seconds() / r.seconds().max(1e-9))
            });
            let diff = r.voxels_unlike_first;
            vec![
                r.framework.clone(),
                r.precision.clone(),
                format!("{:.1} s", r.g_s),
                format!("{:.1} s ({} windows)", r.s_s, r.windows),
                format!("{:.1} s", r.seconds()),
                format!("{:.0}", r.gflop / r.seconds().max(1e-9)),
                speed,
                format!("{diff} ({:.4} %)", 100.0 * diff as f64 / voxels as f64),
                r.dice_vs_truth.map_or("-".to_string(), |d| format!("{d:.4}")),
            ]
        })
        .collect();
    super::markdown::table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framework: &str, precision: &str, secs: f64, labels: &[u8]) -> CloudRun {
        CloudRun {
            framework: framework.into(),
            precision: precision.into(),
            g_s: secs / 4.0,
            s_s: 3.0 * secs / 4.0,
            windows: 12,
            gflop: 100.0 * secs,
            labels: labels.to_vec(),
            voxels_unlike_first: 0,
            dice_vs_truth: None,
        }
    }

    #[test]
    fn speed_is_against_pytorch_in_the_same_precision_and_labels_against_the_first_row() {
        let truth = [0u8, 1, 1, 2, 2, 0];
        let mut runs = [
            run("orchestra", "fp32", 10.0, &truth),
            run("pytorch 2.11 eager", "fp32", 20.0, &[0, 1, 1, 2, 0, 0]),
            run("orchestra", "bf16", 4.0, &truth),
            run("pytorch 2.11 eager", "bf16", 5.0, &truth),
        ];
        compare(&mut runs, Some((&truth, 3)));
        assert_eq!(runs[1].voxels_unlike_first, 1);
        let text = table(&runs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[2].contains("| 2.00x |"), "{}", lines[2]);
        assert!(lines[4].contains("| 1.25x |"), "{}", lines[4]);
        assert!(lines[3].contains("| 1 (16.6667 %) |"), "{}", lines[3]);
        // Class 2: predicted once, true twice, one overlap: 2/3; class 1 perfect.
        assert!(
            lines[3].contains(&format!("| {:.4} |", (1.0 + 2.0 / 3.0) / 2.0)),
            "{}",
            lines[3]
        );
        assert!(lines[2].contains("| 0 (0.0000 %) | 1.0000 |"), "{}", lines[2]);
        assert!(lines[2].contains("| 100 |"), "GFLOP over seconds: {}", lines[2]);
        compare(&mut runs, None);
        assert!(runs.iter().all(|r| r.dice_vs_truth.is_none()));
        assert!(table(&runs).lines().all(|l| l.matches('|').count() == 10));
    }

    #[test]
    fn differing_counts_unequal_voxels_and_a_length_mismatch() {
        assert_eq!(differing(&[1, 2, 3], &[1, 0, 3]), 1);
        assert_eq!(differing(&[1, 2], &[1, 2, 3, 4]), 2);
    }
}
