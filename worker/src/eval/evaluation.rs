//! What an evaluation on the validation split reports: segmentation scores, and for the
//! variants that code, the rate measured on the entropy-coded bitstreams.

use orchestra_api::{RateScores, SegmentationScores};
use serde::Serialize;

/// Scores on the validation split.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub scores: SegmentationScores,
    pub rate: Option<RateScores>,
}
