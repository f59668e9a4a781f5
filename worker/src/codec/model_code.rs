//! A model's code as the entropy coder sees it: a batch's bits as rows in coding order, their
//! shape, and the coder of the model's bit model (as the edge builds it from the model file).
//! Used by training's evaluation (the measured bpp), the model file and the benchmarks.

use tch::{Device, Kind, Tensor};

use super::deploy::codec_for_model;
use super::{CodeShape, Codec};
use crate::nets::{Group, Model, Spatial};

/// The code of each image of a batch (N, K, spatial...) as -1/+1 values in coding order
/// (channel-major, then raster: the tensor's own layout).
pub fn code_rows(bits: &Tensor) -> Vec<Vec<i8>> {
    let n = bits.size()[0];
    let flat = bits
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Int8)
        .reshape([n, -1]);
    (0..n)
        .map(|i| Vec::<i8>::try_from(flat.get(i)).expect("int8 row"))
        .collect()
}

/// The code shape of a batch of codes (N, K, spatial...).
pub fn code_shape(bits: &Tensor) -> CodeShape {
    let size = bits.size();
    CodeShape {
        channels: size[1] as usize,
        sides: size[2..].iter().map(|&s| s as usize).collect(),
    }
}

/// The entropy coder of a model's bit model, tagged by its C and q weights (built as the edge
/// builds it from the model file).
pub fn codec_for(model: &Model) -> Option<Codec> {
    let q = model.bit_model.as_ref()?;
    let weights: Vec<Vec<f32>> = model
        .group_params(Group::Compressor)
        .iter()
        .map(|(_, t)| {
            let t = t
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1);
            Vec::<f32>::try_from(t).expect("float weights")
        })
        .collect();
    let c = &model.config;
    let shape = CodeShape {
        channels: c.code_channels as usize,
        sides: c.code_sides().iter().map(|&s| s as usize).collect(),
    };
    let codec = codec_for_model(&q.logit_values(), weights.iter().map(Vec::as_slice), shape).ok()?;
    Some(match c.spatial {
        // A whole volume is coded at once: its code may be as large as the largest scan the
        // NIfTI reader accepts, far beyond four training patches.
        Spatial::Three => codec.with_limits(crate::codec::Limits::volumes(
            c.downsample as usize,
            orchestra_edge::volume::DEFAULT_MAX_VOXELS,
        )),
        Spatial::Two => codec,
    })
}
