//! Whole-volume evaluation of a 3D trial, as the edge and the cloud would run it: C codes the
//! whole scan into one bitstream (fully convolutional, so the scan need not be a patch; it is
//! padded up to a multiple of f and to at least one patch), the stream is entropy coded and
//! decoded again, g turns the code back into a feature volume, and s segments that by sliding a
//! patch-sized window over it (overlap 0.5, Gaussian weighting). The label volume is brought back
//! to the scan's source resolution and scored there: Dice and IoU per structure over the whole
//! volume. Rates are the real streams' bits over the source voxels.
//!
//! C and g run over a large scan tile by tile (`tiled_volume`), with the same code and features
//! as one whole pass, so a 512 x 512 x 300 CT fits in memory as a cardiac MR volume does; the
//! code is still one stream.

use std::time::Instant;

use orchestra_api::RateScores;
use tch::{nn::ModuleT, Device, Kind, Tensor};

pub use super::cloud_pass::{CloudPass, CloudProfile};
use super::evaluation::Evaluation;
use super::scores::{dice_iou, summarise};
use super::sliding_window::{argmax, SlidingWindow};
use super::tiled_volume::{encode_volume, reconstruct_volume};
use crate::codec::model_code::{code_rows, code_shape, codec_for};
use crate::codec::Codec;
use crate::data::VolumeSample;
use crate::nets::Model;
use crate::train::autocast::with_precision;
use orchestra_edge::preparation::{crop, pad, padded_side, VolumePreprocessing};
use orchestra_edge::tiling::Tiling;

/// Overlap of neighbouring windows (nnU-Net's).
pub const WINDOW_OVERLAP: f64 = 0.5;

/// One volume through the model.
#[derive(Clone, Debug)]
pub struct VolumePrediction {
    /// A class per voxel at the scan's sides (as given).
    pub labels: Vec<u8>,
    /// The whole code's bitstream (compressing variants).
    pub stream: Option<Vec<u8>>,
    /// Bits of the code before entropy coding.
    pub code_bits: Option<u64>,
    /// Ideal code length under q, in bits.
    pub estimate_bits: Option<f64>,
    /// The stream decoded to another code, or could not be coded.
    pub round_trip_failed: bool,
}

/// The sides a prepared scan is padded to before C (compressing variants) or s (D1): a
/// multiple of f, and at least one patch, along each axis.
pub fn padded_sides(model: &Model, sides: [usize; 3]) -> [usize; 3] {
    let c = &model.config;
    let f = if model.compressor.is_some() {
        c.downsample as usize
    } else {
        1
    };
    std::array::from_fn(|a| padded_side(sides[a], f, c.sides[a] as usize))
}

/// A prepared scan (sides z, y, x), padded, as a (1, 1, z, y, x) tensor on `device`.
pub fn scan_tensor(model: &Model, voxels: &[f32], sides: [usize; 3], device: Device) -> Tensor {
    let padded = padded_sides(model, sides);
    Tensor::from_slice(&pad(voxels, sides, padded))
        .view([1, 1, padded[0] as i64, padded[1] as i64, padded[2] as i64])
        .to_device(device)
}

/// Cloud side: class indices of a volume of `sides` from what s takes (g's features of the
/// code, or the padded scan for D1), by sliding a patch-sized window over it; with the time it
/// took and the windows (`g_s` is 0).
pub fn segment_features(
    model: &Model,
    s_input: &Tensor,
    sides: [usize; 3],
    pass: CloudPass,
) -> (Vec<u8>, CloudProfile) {
    let _guard = tch::no_grad_guard();
    let started = Instant::now();
    let c = &model.config;
    let device = s_input.device();
    let window: [usize; 3] = std::array::from_fn(|a| c.sides[a] as usize);
    let padded: [usize; 3] = std::array::from_fn(|a| s_input.size()[2 + a] as usize);
    // g has one output channel in every preset; the window slides over that map.
    let features = Vec::<f32>::try_from(
        s_input
            .select(1, 0)
            .flatten(0, -1)
            .to_device(Device::Cpu)
            .to_kind(Kind::Float),
    )
    .expect("a float volume");
    let classes = c.classes as usize;
    let binary = c.classes == 2;
    let sliding = SlidingWindow {
        window,
        overlap: WINDOW_OVERLAP,
        batch: pass.window_batch.max(1),
        pad_value: 0.0,
    };
    let scores = sliding.run(&features, padded, classes, |input, n| {
        let mut shape = vec![n as i64, 1];
        shape.extend(window.map(|s| s as i64));
        let x = Tensor::from_slice(input).view(shape.as_slice()).to_device(device);
        let probs = with_precision(pass.precision, device, || model.segmentor.forward_t(&x, false));
        // One score per class: a binary task's single map p becomes (1 - p, p).
        let probs = probs.to_kind(Kind::Float);
        let probs = if binary {
            Tensor::cat(&[1.0 - &probs, probs.shallow_clone()], 1)
        } else {
            probs
        };
        Vec::<f32>::try_from(probs.flatten(0, -1).to_device(Device::Cpu)).expect("float scores")
    });
    let labels = crop(&argmax(&scores, classes), padded, sides);
    let profile = CloudProfile {
        g_s: 0.0,
        s_s: started.elapsed().as_secs_f64(),
        windows: sliding.corners(padded).len(),
    };
    (labels, profile)
}

/// Cloud side: class indices of a volume of `sides` from its decoded code (N = 1, K, ...), and
/// where the time went.
pub fn segment_code(
    model: &Model,
    bits: &Tensor,
    sides: [usize; 3],
    pass: CloudPass,
) -> (Vec<u8>, CloudProfile) {
    let started = Instant::now();
    let features = with_precision(pass.precision, bits.device(), || {
        reconstruct_volume(model, bits, Tiling::default())
    });
    let g_s = started.elapsed().as_secs_f64();
    let (labels, profile) = segment_features(model, &features, sides, pass);
    (labels, CloudProfile { g_s, ..profile })
}

/// Segments one prepared scan (sides z, y, x), coding it first for compressing variants.
pub fn predict_volume(
    model: &Model,
    codec: Option<&Codec>,
    voxels: &[f32],
    sides: [usize; 3],
    device: Device,
    window_batch: usize,
) -> VolumePrediction {
    let _guard = tch::no_grad_guard();
    let scan = scan_tensor(model, voxels, sides, device);
    let mut prediction = VolumePrediction {
        labels: Vec::new(),
        stream: None,
        code_bits: None,
        estimate_bits: None,
        round_trip_failed: false,
    };
    prediction.labels = match encode_volume(model, &scan, Tiling::default()) {
        Some((_, bits)) => {
            prediction.code_bits = Some(bits.numel() as u64);
            if let Some(q) = &model.bit_model {
                prediction.estimate_bits = Some(q.code_length(&bits).double_value(&[0]));
            }
            let mut decoded = bits.shallow_clone();
            if let Some(codec) = codec {
                let shape = code_shape(&bits);
                let row = code_rows(&bits).remove(0);
                match codec.encode(&shape, &row) {
                    Ok(stream) => {
                        match codec.decode(&stream) {
                            Ok((back_shape, back)) if back_shape == shape && back == row => {
                                // s works from what the decoder got, as in the cloud.
                                decoded = Tensor::from_slice(&back)
                                    .to_kind(Kind::Float)
                                    .view(bits.size().as_slice())
                                    .to_device(device);
                            }
                            _ => prediction.round_trip_failed = true,
                        }
                        prediction.stream = Some(stream);
                    }
                    Err(_) => prediction.round_trip_failed = true,
                }
            }
            segment_code(model, &decoded, sides, CloudPass::fp32(window_batch)).0
        }
        None => segment_features(model, &scan, sides, CloudPass::fp32(window_batch)).0,
    };
    prediction
}

/// Dice and IoU rows (1, classes - 1) of a volume's predicted labels (at its training
/// resolution) against its labels at the source resolution.
pub fn score_volume(
    labels: Vec<u8>,
    vol: &VolumeSample,
    prep: &VolumePreprocessing,
    classes: i64,
) -> (Tensor, Tensor) {
    let (truth_sides, truth) = vol.truth();
    let labels = if truth_sides == vol.sides {
        labels
    } else {
        prep.restore_labels(&labels, vol.sides, truth_sides)
    };
    let as_tensor = |l: &[u8]| Tensor::from_slice(l).to_kind(Kind::Int64).view([1, -1]);
    dice_iou(&as_tensor(&labels), &as_tensor(truth), classes)
}

/// Dice and IoU per structure over each whole validation volume (at the source resolution),
/// and the real streams' rate over all of them (total bits over total source voxels).
pub fn evaluate_volumes(
    model: &Model,
    volumes: &[VolumeSample],
    prep: &VolumePreprocessing,
    device: Device,
    window_batch: usize,
) -> Evaluation {
    let codec = codec_for(model);
    let classes = model.config.classes;
    let (mut dice_rows, mut iou_rows) = (Vec::new(), Vec::new());
    let (mut voxels_total, mut code_bits, mut estimate, mut stream_bytes, mut header_bytes) =
        (0f64, 0u64, 0f64, 0usize, 0usize);
    let mut failures = 0u32;
    let mut streams = 0usize;
    for vol in volumes {
        let p = predict_volume(
            model,
            codec.as_ref(),
            &vol.voxels,
            vol.sides,
            device,
            window_batch,
        );
        let (d, i) = score_volume(p.labels, vol, prep, classes);
        dice_rows.push(d);
        iou_rows.push(i);
        voxels_total += vol.source_voxels() as f64;
        code_bits += p.code_bits.unwrap_or(0);
        estimate += p.estimate_bits.unwrap_or(0.0);
        failures += p.round_trip_failed as u32;
        if let (Some(stream), Some(codec)) = (&p.stream, &codec) {
            stream_bytes += stream.len();
            header_bytes += codec.header_len(stream).unwrap_or(0);
            streams += 1;
        }
    }
    let scores = summarise(&dice_rows, &iou_rows, volumes.len());
    let n = volumes.len().max(1);
    let rate = model.bit_model.is_some().then(|| {
        let measured = streams > 0;
        RateScores {
            code_bits: code_bits / n as u64,
            bits_per_pixel_raw: code_bits as f64 / voxels_total,
            bpp_estimate: estimate / voxels_total,
            bpp: measured.then(|| 8.0 * stream_bytes as f64 / voxels_total),
            bpp_no_header: measured.then(|| 8.0 * (stream_bytes - header_bytes) as f64 / voxels_total),
            mean_stream_bytes: measured.then(|| stream_bytes as f64 / streams as f64),
            round_trip_failures: failures,
        }
    });
    Evaluation { scores, rate }
}
