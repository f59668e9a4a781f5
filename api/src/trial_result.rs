//! What a finished trial reports: written by rank 0 as `result.json` in the store, read by the
//! operator and the local runner for the leaderboard.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::training::{Hyper, Variant};

/// Segmentation quality on the held-out split. Per-class figures cover foreground classes only
/// (class 1 onwards); an image where prediction and truth are both empty counts as 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentationScores {
    /// Mean over images and foreground classes.
    pub dice: f64,
    pub iou: f64,
    /// Mean over images, one entry per foreground class.
    pub dice_per_class: Vec<f64>,
    pub iou_per_class: Vec<f64>,
    /// Images evaluated.
    pub images: usize,
}

/// Rate figures. `bits_per_pixel_raw` counts the binary code before entropy coding;
/// `bpp_estimate` is the ideal code length under the learned bit model (the training estimate).
/// Real-bitstream figures are filled in by the codec and are never replaced by the estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateScores {
    pub code_bits: u64,
    pub bits_per_pixel_raw: f64,
    pub bpp_estimate: f64,
    /// Bits of the real entropy-coded bitstream (header included) per pixel, when measured:
    /// the mean over the evaluation images of 8 * stream bytes / pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpp: Option<f64>,
    /// The same without the header bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpp_no_header: Option<f64>,
    /// Mean bitstream size in bytes, header included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_stream_bytes: Option<f64>,
    /// Evaluation images whose decoded bits differed from the encoded ones (must be 0).
    #[serde(default)]
    pub round_trip_failures: u32,
}

impl RateScores {
    /// Rate figures of a code that has not been entropy coded: the raw code and the estimate.
    pub fn estimated(code_bits: u64, bits_per_pixel_raw: f64, bpp_estimate: f64) -> RateScores {
        RateScores {
            code_bits,
            bits_per_pixel_raw,
            bpp_estimate,
            ..Default::default()
        }
    }
}

/// Parameter counts per network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamCounts {
    pub compressor: u64,
    pub reconstructor: u64,
    pub segmentor: u64,
    pub critic: u64,
    pub bit_model: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub train_seconds: f64,
    /// Images of the whole batch (all ranks) per second of this run's training.
    pub train_images_per_second: f64,
    pub eval_seconds: f64,
    /// Ranks that trained (data-parallel world size).
    #[serde(default = "one")]
    pub world_size: u32,
    /// Seconds of this run's training that rank 0 spent averaging over ranks.
    #[serde(default)]
    pub communication_seconds: f64,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialResult {
    pub experiment: String,
    pub trial: String,
    pub variant: Variant,
    pub steps: u64,
    pub scores: SegmentationScores,
    /// None for D1, which sends the raw image.
    pub rate: Option<RateScores>,
    /// Bits per pixel of the uncompressed 8-bit input (24 for RGB, 8 for grey): D1's rate.
    pub source_bits_per_pixel: f64,
    pub params: ParamCounts,
    pub timings: Timings,
    /// The hyperparameters the trial ran with, for the leaderboard.
    pub hyper: Hyper,
    /// The finished trials it read weights from (warm start, distillation teacher): their
    /// training is part of what this trial cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teachers: Vec<TeacherCost>,
}

impl TrialResult {
    /// Steps of this trial, of its code pre-training (`hyper.codePretrainSteps`) and of every
    /// trial it read weights from.
    pub fn steps_in_all(&self) -> u64 {
        self.steps + self.code_pretrain_steps() + self.teacher_steps()
    }

    /// The steps its teachers (warm start, distillation) trained, each counted once.
    pub fn teacher_steps(&self) -> u64 {
        self.teachers.iter().map(|t| t.steps).sum()
    }

    /// The autoencoder steps C and g took before the trial's own (none for D1).
    pub fn code_pretrain_steps(&self) -> u64 {
        if self.variant.has_compressor() {
            self.hyper.code_pretrain_steps
        } else {
            0
        }
    }
}

/// What a trial's warm start or teacher cost to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeacherCost {
    /// The source as the spec names it (`trial:<name>` or a trial folder's URI).
    pub source: String,
    pub variant: Variant,
    pub steps: u64,
    pub train_seconds: f64,
}

/// Where an entry's bpp comes from. Real bitstreams win over estimates whenever present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BppSource {
    /// Bits of the real entropy-coded bitstream, header included.
    Bitstream,
    /// The ideal code length under the learned bit model (training estimate).
    Estimate,
    /// Uncompressed 8-bit pixels (D1).
    Uncompressed,
}

/// The rate a trial is ranked by: the real bitstream's when measured, else the training
/// estimate, else (D1, which sends the raw image) the source's bits per pixel. One rule for the
/// leaderboard, the search's rungs and the operator's status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    pub bpp: f64,
    pub source: BppSource,
    /// The training estimate, shown beside a real-bitstream bpp.
    pub estimate: Option<f64>,
}

impl Ranked {
    pub fn of(rate: Option<&RateScores>, source_bits_per_pixel: f64) -> Ranked {
        match rate {
            Some(r) => match r.bpp {
                Some(real) => Ranked {
                    bpp: real,
                    source: BppSource::Bitstream,
                    estimate: Some(r.bpp_estimate),
                },
                None => Ranked {
                    bpp: r.bpp_estimate,
                    source: BppSource::Estimate,
                    estimate: Some(r.bpp_estimate),
                },
            },
            None => Ranked {
                bpp: source_bits_per_pixel,
                source: BppSource::Uncompressed,
                estimate: None,
            },
        }
    }

    /// (bpp, source, estimate).
    pub fn parts(self) -> (f64, BppSource, Option<f64>) {
        (self.bpp, self.source, self.estimate)
    }
}

/// A trial's scores at one evaluation on the validation split, written by rank 0 as
/// `rungs/step-<n>.json` at every evaluation and at each step target (a rung of the search):
/// both runners read them to promote or stop trials, and the search benchmark replays them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RungRecord {
    pub step: u64,
    pub scores: SegmentationScores,
    /// None for D1, which sends the raw image.
    pub rate: Option<RateScores>,
    pub source_bits_per_pixel: f64,
}

impl RungRecord {
    /// The rate the record is ranked by (`Ranked`'s rule, the leaderboard's too).
    pub fn bpp(&self) -> f64 {
        Ranked::of(self.rate.as_ref(), self.source_bits_per_pixel).bpp
    }

    pub fn score(&self) -> RungScore {
        RungScore {
            step: self.step,
            bpp: self.bpp(),
            dice: self.scores.dice,
        }
    }

    /// The record of a finished trial's final evaluation.
    pub fn of_result(r: &TrialResult) -> RungRecord {
        RungRecord {
            step: r.steps,
            scores: r.scores.clone(),
            rate: r.rate.clone(),
            source_bits_per_pixel: r.source_bits_per_pixel,
        }
    }
}

/// What the search ranks a trial by at a rung: its step, rate and Dice (kept in the Trial's
/// status, so that the planner needs no store reads to decide).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RungScore {
    pub step: u64,
    pub bpp: f64,
    pub dice: f64,
}

/// A trial the search stopped early, written by the runner as `stopped.json` beside its rung
/// records: the leaderboard lists it with the step it reached and its scores there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoppedTrial {
    pub trial: String,
    pub variant: Variant,
    /// The step of its last rung record (and checkpoint).
    pub step: u64,
    pub reason: String,
}

impl StoppedTrial {
    /// The record of a trial stopped at the last of its `rungs` (lowest first).
    pub fn at_last_rung(trial: &str, variant: Variant, rungs: &[RungScore], reason: &str) -> StoppedTrial {
        StoppedTrial {
            trial: trial.to_string(),
            variant,
            step: rungs.last().map_or(0, |r| r.step),
            reason: reason.to_string(),
        }
    }
}
