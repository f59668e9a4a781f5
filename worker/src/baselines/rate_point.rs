//! One measured point of rate against accuracy, for images and volumes alike: how a codec
//! setting or a learned model is turned into a point is the same whatever the number of
//! dimensions; only how the files are written and the scans segmented differs.

use orchestra_api::SegmentationScores;
use serde::Serialize;

use crate::eval::evaluation::Evaluation;
use crate::nets::Model;

/// One measured setting of one method.
#[derive(Clone, Debug, Serialize)]
pub struct RatePoint {
    pub method: String,
    pub setting: String,
    /// Every byte written, times 8, over every source pixel (or voxel).
    pub bpp: f64,
    pub dice: f64,
    pub iou: f64,
    /// Images (or volumes) measured.
    pub images: usize,
}

impl RatePoint {
    /// A standard codec at one setting: `bits` written for `pixels` source pixels in all,
    /// segmented by the D1 model with `scores`.
    pub fn codec(
        method: &str,
        setting: String,
        bits: f64,
        pixels: f64,
        scores: (f64, f64),
        images: usize,
    ) -> RatePoint {
        RatePoint {
            method: method.into(),
            setting,
            bpp: bits / pixels,
            dice: scores.0,
            iou: scores.1,
            images,
        }
    }

    /// A learned compressing model's point from its evaluation on real bitstreams; an error
    /// when it sends raw input (D1) or a stream did not round-trip. `per` names what one code
    /// covers ("image", "volume").
    pub fn learned(
        name: &str,
        model: &Model,
        e: Evaluation,
        images: usize,
        per: &str,
    ) -> Result<RatePoint, String> {
        let rate = e.rate.ok_or_else(|| {
            format!(
                "{name}: {} sends raw input; give a compressing model",
                model.variant
            )
        })?;
        if rate.round_trip_failures > 0 {
            return Err(format!(
                "{name}: {} bitstreams did not round-trip",
                rate.round_trip_failures
            ));
        }
        let SegmentationScores { dice, iou, .. } = e.scores;
        Ok(RatePoint {
            method: format!("{name} ({})", model.variant),
            setting: format!("{} code bits per {per}", rate.code_bits),
            bpp: rate.bpp.expect("compressing models are entropy coded"),
            dice,
            iou,
            images,
        })
    }
}

/// One Markdown table of every point, baselines and learned models together.
pub fn table(points: &[RatePoint]) -> String {
    let mut s = String::from("| method | setting | bpp | Dice | IoU | images |\n|---|---|---|---|---|---|\n");
    for p in points {
        s += &format!(
            "| {} | {} | {:.5} | {:.4} | {:.4} | {} |\n",
            p.method, p.setting, p.bpp, p.dice, p.iou, p.images
        );
    }
    s
}
