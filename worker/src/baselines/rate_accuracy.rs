//! Rate against accuracy on held-out images: baseline codecs swept over their quality knob and
//! segmented by the D1 segmentor, beside the learned models measured on their real bitstreams.

use orchestra_report::leaderboard::{hypervolume, pareto_front, BppSource, Curve, Entry, Leaderboard};
use tch::{Device, Kind, Tensor};

pub use super::rate_point::{table, RatePoint};
use super::{h264, jpeg, jpeg2000};
use crate::data::{batch, Sample};
use crate::eval::evaluate_images;
use crate::eval::scores::dice_iou;
use crate::nets::Model;

/// One setting of a standard codec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CodecSetting {
    /// JPEG at a quality (1-100).
    Jpeg(u8),
    /// JPEG-2000 at a target rate in bits per pixel.
    Jpeg2000(f64),
    /// H.264 intra (one IDR frame) at a quantiser (0-51).
    H264(u8),
}

impl CodecSetting {
    pub fn method(&self) -> &'static str {
        match self {
            CodecSetting::Jpeg(_) => "JPEG",
            CodecSetting::Jpeg2000(_) => "JPEG-2000",
            CodecSetting::H264(_) => "H.264 intra",
        }
    }

    pub fn label(&self) -> String {
        match self {
            CodecSetting::Jpeg(q) => format!("quality {q}"),
            CodecSetting::Jpeg2000(b) => format!("target {b} bpp"),
            CodecSetting::H264(qp) => format!("QP {qp}"),
        }
    }

    /// Compresses interleaved 8-bit pixels of a square image into the codec's file.
    pub fn encode(&self, pixels: &[u8], side: u32, channels: usize) -> Result<Vec<u8>, String> {
        match *self {
            CodecSetting::Jpeg(q) => jpeg::encode(pixels, side, channels, q),
            CodecSetting::Jpeg2000(bpp) => jpeg2000::encode(pixels, side, channels, bpp),
            CodecSetting::H264(qp) => h264::encode(pixels, side, channels, qp),
        }
    }

    /// Decodes a file of this codec back to interleaved 8-bit pixels.
    pub fn decode(&self, file: &[u8], channels: usize) -> Result<Vec<u8>, String> {
        match self {
            CodecSetting::Jpeg(_) => jpeg::decode(file, channels),
            CodecSetting::Jpeg2000(_) => jpeg2000::decode(file, channels),
            CodecSetting::H264(_) => h264::decode(file, channels),
        }
    }

    fn round_trip(&self, pixels: &[u8], side: u32, channels: usize) -> Result<(usize, Vec<u8>), String> {
        let file = self.encode(pixels, side, channels)?;
        Ok((file.len(), self.decode(&file, channels)?))
    }
}

/// A codec at each setting: compress every image, decode it, segment it with the D1 model.
pub fn codec_curve(
    d1: &Model,
    samples: &[Sample],
    channels: usize,
    side: u32,
    settings: &[CodecSetting],
) -> Result<Vec<RatePoint>, String> {
    let pixels = (side * side) as f64;
    let mut points = Vec::new();
    for setting in settings {
        let mut bits = 0.0;
        let mut decoded = Vec::with_capacity(samples.len());
        for s in samples {
            let (bytes, image) = setting.round_trip(&s.image, side, channels)?;
            bits += 8.0 * bytes as f64;
            decoded.push(Sample {
                image,
                mask: s.mask.clone(),
            });
        }
        let scores = segment_scores(d1, &decoded, channels, side);
        let pixels = pixels * samples.len() as f64;
        points.push(RatePoint::codec(
            setting.method(),
            setting.label(),
            bits,
            pixels,
            scores,
            samples.len(),
        ));
    }
    Ok(points)
}

/// JPEG at each quality (see `codec_curve`).
pub fn jpeg_curve(
    d1: &Model,
    samples: &[Sample],
    channels: usize,
    side: u32,
    qualities: &[u8],
) -> Result<Vec<RatePoint>, String> {
    let settings: Vec<CodecSetting> = qualities.iter().map(|q| CodecSetting::Jpeg(*q)).collect();
    codec_curve(d1, samples, channels, side, &settings)
}

/// Mean Dice and IoU of `model`'s segmentation of `samples` (it must take images: D1).
pub fn segment_scores(model: &Model, samples: &[Sample], channels: usize, side: u32) -> (f64, f64) {
    let mut dice = Vec::new();
    let mut iou = Vec::new();
    tch::no_grad(|| {
        for chunk in samples.chunks(16) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            let (images, labels) = batch(&refs, channels, side, Device::Cpu);
            let pred = model.labels(&model.forward(&images.to_device(model.vs.device()), false).probs);
            let (d, i) = dice_iou(&pred.to_device(Device::Cpu), &labels, model.config.classes);
            dice.push(d);
            iou.push(i);
        }
    });
    let mean = |v: &[Tensor]| Tensor::cat(v, 0).mean(Kind::Double).double_value(&[]);
    (mean(&dice), mean(&iou))
}

/// A learned compressing model on its real bitstreams.
pub fn learned_point(
    name: &str,
    model: &Model,
    samples: &[Sample],
    channels: usize,
    side: u32,
) -> Result<RatePoint, String> {
    let e = evaluate_images(model, samples, channels, side, model.vs.device(), 16);
    RatePoint::learned(name, model, e, samples.len(), "image")
}

/// A leaderboard of the learned models with the baselines as curves, for tables and plots.
pub fn report(
    title: &str,
    learned: &[(RatePoint, orchestra_api::Variant)],
    baselines: &[RatePoint],
) -> Leaderboard {
    let mut entries: Vec<Entry> = learned
        .iter()
        .map(|(p, v)| Entry {
            trial: p.method.clone(),
            variant: *v,
            params: Default::default(),
            bpp: p.bpp,
            bpp_source: BppSource::Bitstream,
            bpp_estimate: None,
            dice: p.dice,
            iou: p.iou,
            dice_per_class: vec![],
            on_front: false,
            steps: 0,
            teacher_steps: 0,
            pretrain_steps: 0,
        })
        .collect();
    entries.sort_by(|a, b| b.dice.total_cmp(&a.dice));
    let points: Vec<(f64, f64)> = entries.iter().map(|e| (e.bpp, e.dice)).collect();
    let front = pareto_front(&points);
    for &i in &front {
        entries[i].on_front = true;
    }
    let mut curves: Vec<Curve> = Vec::new();
    for p in baselines {
        match curves.iter_mut().find(|c| c.name == p.method) {
            Some(c) => c.points.push((p.bpp, p.dice)),
            None => curves.push(Curve {
                name: p.method.clone(),
                points: vec![(p.bpp, p.dice)],
            }),
        }
    }
    for c in &mut curves {
        c.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Leaderboard {
        experiment: title.to_string(),
        front: front.iter().map(|&i| entries[i].trial.clone()).collect(),
        hypervolume: hypervolume(&points, &front, 0.1),
        entries,
        bpp_budget: None,
        winner: None,
        reference_bpp: 0.1,
        baselines: curves,
        stopped: Vec::new(),
    }
}
