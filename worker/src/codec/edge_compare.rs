//! The edge's C (pure Rust, candle) against the worker's (libtorch) on the same images: how
//! many code bits differ and how close to the binarization threshold they were, whether the
//! edge's streams decode in the cloud, and the scores of the label maps segmented from each.
//! Two implementations of the same convolutions sum in different orders, so activations differ
//! by rounding; a bit can only flip where libtorch's activation is within that rounding of 0.

use orchestra_edge::input::to_planes;
use orchestra_edge::EdgeModel;
use tch::{Device, Kind, Tensor};

use super::model_code::{code_rows, code_shape};
use super::model_file::CompressionModel;
use crate::data::{batch, Sample};
use crate::eval::scores::dice_iou;

/// What `compare` measured, summed over the images.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeComparison {
    pub images: usize,
    pub code_bits: usize,
    /// Code bits where the edge's bit is not libtorch's.
    pub bits_differing: usize,
    /// The largest |libtorch activation| among the differing bits (0 when none differ): how far
    /// from the threshold a flipped bit was.
    pub max_margin_of_differing: f64,
    /// The largest |edge - libtorch| over every activation: the rounding between the two.
    pub max_activation_difference: f64,
    /// Bits whose libtorch activation is within that rounding of 0 (the possible ties).
    pub bits_within_rounding: usize,
    /// Images whose two streams are byte-identical.
    pub streams_identical: usize,
    /// The edge's streams the cloud's decoder (libtorch model file) decoded to the edge's bits.
    pub edge_streams_decoded: usize,
    /// Mean Dice (over images and foreground classes) of the label maps segmented from each
    /// encoder's stream, against the ground truth.
    pub dice_libtorch: f64,
    pub dice_edge: f64,
    /// Pixels whose class differs between the two label maps.
    pub label_pixels_differing: usize,
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).expect("float tensor")
}

/// Runs both encoders over `samples` (at the model's size) in batches of 16.
pub fn compare(
    cloud: &CompressionModel,
    edge: &EdgeModel,
    samples: &[&Sample],
) -> anyhow::Result<EdgeComparison> {
    let config = &cloud.model.config;
    let (channels, side) = (config.in_channels as usize, config.input_size as u32);
    let mut r = EdgeComparison::default();
    let (mut dice_torch, mut dice_edge, mut scored) = (0.0, 0.0, 0usize);
    for chunk in samples.chunks(16) {
        let (images, labels) = batch(chunk, channels, side, Device::Cpu);
        let (torch_act, torch_bits) =
            tch::no_grad(|| cloud.model.encode(&images, false)).expect("a compressing model");
        let shape = code_shape(&torch_bits);
        let torch_rows = code_rows(&torch_bits);
        let mut a_edge = Vec::new();
        let mut edge_rows = Vec::new();
        for sample in chunk {
            let x = to_planes(&sample.image, channels, side as usize).map_err(anyhow::Error::msg)?;
            let a = edge.activations(&x)?;
            edge_rows.push(orchestra_edge::compressor::binarize(&a));
            a_edge.extend(a.data);
        }

        let a_torch = floats(&torch_act);
        let rounding = a_torch
            .iter()
            .zip(&a_edge)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        r.max_activation_difference = r.max_activation_difference.max(rounding);
        let flat_torch: Vec<i8> = torch_rows.iter().flatten().copied().collect();
        let flat_edge: Vec<i8> = edge_rows.iter().flatten().copied().collect();
        for (i, (t, e)) in flat_torch.iter().zip(&flat_edge).enumerate() {
            if t != e {
                r.bits_differing += 1;
                r.max_margin_of_differing = r.max_margin_of_differing.max(a_torch[i].abs() as f64);
            }
        }
        r.code_bits += flat_torch.len();

        let mut decoded = Vec::new();
        for (t_bits, e_bits) in torch_rows.iter().zip(&edge_rows) {
            let t_stream = cloud.codec.encode(&shape, t_bits)?;
            let e_stream = edge.codec.encode(&shape, e_bits)?;
            r.streams_identical += usize::from(t_stream == e_stream);
            let (_, bits) = cloud.codec.decode(&e_stream)?;
            r.edge_streams_decoded += usize::from(&bits == e_bits);
            decoded.push(bits);
        }
        let edge_codes: Vec<&[i8]> = decoded.iter().map(Vec::as_slice).collect();
        let torch_codes: Vec<&[i8]> = torch_rows.iter().map(Vec::as_slice).collect();
        let pred_torch = cloud.segment_codes(&shape, &torch_codes).to_device(Device::Cpu);
        let pred_edge = cloud.segment_codes(&shape, &edge_codes).to_device(Device::Cpu);
        r.label_pixels_differing +=
            pred_torch.ne_tensor(&pred_edge).sum(Kind::Int64).int64_value(&[]) as usize;
        let mean = |p: &Tensor| {
            dice_iou(p, &labels, config.classes)
                .0
                .sum(Kind::Double)
                .double_value(&[])
        };
        dice_torch += mean(&pred_torch);
        dice_edge += mean(&pred_edge);
        scored += chunk.len() * (config.classes as usize - 1);
        r.images += chunk.len();
        r.bits_within_rounding += a_torch.iter().filter(|a| (a.abs() as f64) <= rounding).count();
    }
    r.dice_libtorch = dice_torch / scored.max(1) as f64;
    r.dice_edge = dice_edge / scored.max(1) as f64;
    Ok(r)
}
