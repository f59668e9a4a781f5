//! The edge's C (pure Rust, plane by plane on the direct kernels) against the worker's
//! (libtorch, tiled) on whole scans, prepared as the edge prepares them: the code bits that
//! differ and how close to the threshold they were, whether the two streams are the same,
//! and how long each took. As for images, a bit can only flip where libtorch's activation is
//! within the two implementations' rounding of 0.

use std::time::Instant;

use orchestra_edge::compressor::{binarize, Planes};
use orchestra_edge::preparation::pad;
use orchestra_edge::tiling::Tiling;
use orchestra_edge::volume::Volume;
use orchestra_edge::EdgeModel;
use tch::{Device, Kind, Tensor};

use super::model_file::CompressionModel;
use crate::eval::tiled_volume::encode_volume;

/// What `compare_volume` measured on one scan.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeComparison {
    /// The sides C ran on (prepared, padded).
    pub sides: [usize; 3],
    pub code_bits: usize,
    pub bits_differing: usize,
    /// The largest |libtorch activation| among the differing bits (0 when none differ).
    pub max_margin_of_differing: f64,
    /// The largest |edge - libtorch| over every activation.
    pub max_activation_difference: f64,
    /// Bits whose libtorch activation is within that difference of 0.
    pub bits_within_rounding: usize,
    pub streams_identical: bool,
    /// C alone, on the threads of the calling process (libtorch's and rayon's pools).
    pub libtorch_seconds: f64,
    pub edge_seconds: f64,
}

/// Both encoders over one scan.
pub fn compare_volume(
    cloud: &CompressionModel,
    edge: &EdgeModel,
    scan: Volume,
) -> anyhow::Result<VolumeComparison> {
    let scan = edge.prepare_scan(scan)?;
    let sides = scan.input_sides;
    let padded = Planes {
        channels: 1,
        sides,
        data: pad(&scan.voxels, scan.sides, sides),
    };
    drop(scan);

    let started = Instant::now();
    let edge_act = edge.activations(&padded)?;
    let edge_seconds = started.elapsed().as_secs_f64();

    let x = Tensor::from_slice(&padded.data).view([1, 1, sides[0] as i64, sides[1] as i64, sides[2] as i64]);
    drop(padded);
    let started = Instant::now();
    let (torch_act, _) = encode_volume(&cloud.model, &x, Tiling::default())
        .ok_or_else(|| anyhow::anyhow!("the model has no compressor (D1)"))?;
    let libtorch_seconds = started.elapsed().as_secs_f64();
    let a_torch = Vec::<f32>::try_from(
        torch_act
            .flatten(0, -1)
            .to_device(Device::Cpu)
            .to_kind(Kind::Float),
    )?;
    anyhow::ensure!(
        a_torch.len() == edge_act.data.len(),
        "libtorch's code has {} values, the edge's {}",
        a_torch.len(),
        edge_act.data.len()
    );

    let mut r = VolumeComparison {
        sides,
        libtorch_seconds,
        edge_seconds,
        ..VolumeComparison::default()
    };
    r.max_activation_difference = a_torch
        .iter()
        .zip(&edge_act.data)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let torch_bits: Vec<i8> = a_torch.iter().map(|&a| if a >= 0.0 { 1 } else { -1 }).collect();
    let edge_bits = binarize(&edge_act);
    for (i, (t, e)) in torch_bits.iter().zip(&edge_bits).enumerate() {
        if t != e {
            r.bits_differing += 1;
            r.max_margin_of_differing = r.max_margin_of_differing.max(a_torch[i].abs() as f64);
        }
    }
    r.code_bits = torch_bits.len();
    r.bits_within_rounding = a_torch
        .iter()
        .filter(|a| (a.abs() as f64) <= r.max_activation_difference)
        .count();
    let shape = super::CodeShape {
        channels: edge_act.channels,
        sides: edge_act.sides.to_vec(),
    };
    r.streams_identical =
        cloud.codec.encode(&shape, &torch_bits)? == edge.codec.encode(&shape, &edge_bits)?;
    Ok(r)
}
