//! Trial results as a worker writes them, for tests that fill a store by hand.

use orchestra_api::{ParamCounts, RateScores, SegmentationScores, Timings, TrialResult, TrialSpec};

/// A finished trial's result with Dice `dice` at `bpp` (real bitstream; the estimate a tenth
/// lower).
pub fn result(experiment: &str, trial: &str, spec: &TrialSpec, dice: f64, bpp: f64) -> TrialResult {
    TrialResult {
        experiment: experiment.into(),
        trial: trial.into(),
        variant: spec.variant,
        steps: spec.steps,
        scores: SegmentationScores {
            dice,
            iou: dice * 0.8,
            dice_per_class: vec![dice],
            iou_per_class: vec![dice * 0.8],
            images: 8,
        },
        rate: Some(RateScores {
            bpp: Some(bpp),
            ..RateScores::estimated(192, 0.0117, bpp * 0.9)
        }),
        source_bits_per_pixel: 24.0,
        params: ParamCounts::default(),
        timings: Timings::default(),
        hyper: spec.hyper.clone(),
        teachers: Vec::new(),
    }
}
