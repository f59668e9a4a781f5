//! C and g over whole scans in bounded memory: volumes above a `Tiling`'s limit run tile by
//! tile on the code's grid, each tile computed on its region widened by the stack's disturbed
//! border and cut back (see `orchestra_edge::tiling`), so the code and the features equal those
//! of one whole pass while memory follows the tile. The edge tiles C the same way. g computes
//! each tile's layers only where a later layer reads them (`Reconstructor::forward_kept`), so its
//! full-resolution layers spend a few voxels, not the whole halo, around what a tile keeps.

use tch::{nn::ModuleT, Device, Kind, Tensor};

use crate::nets::binarize::binarize;
use crate::nets::compressor::Compressor;
use crate::nets::reconstructor::Reconstructor;
use crate::nets::Model;
use orchestra_edge::tiling::{halo_cells, TiledPass, Tiling};

/// A (1, C, z, y, x) float tensor's values on the host and its channels.
fn values_of(t: &Tensor) -> (Vec<f32>, usize) {
    let values = Vec::<f32>::try_from(t.flatten(0, -1).to_device(Device::Cpu).to_kind(Kind::Float))
        .expect("a float volume");
    (values, t.size()[1] as usize)
}

/// Runs `forward` over one region (channel-major values) on `device`; its output's values.
fn region_pass(
    region: &[f32],
    channels: usize,
    sides: [usize; 3],
    device: Device,
    forward: impl FnOnce(&Tensor) -> Tensor,
) -> Vec<f32> {
    let y = forward(&tensor_of(region, channels, sides, device));
    Vec::try_from(y.flatten(0, -1).to_device(Device::Cpu).to_kind(Kind::Float)).expect("float outputs")
}

fn tensor_of(values: &[f32], channels: usize, sides: [usize; 3], device: Device) -> Tensor {
    let mut shape = vec![1, channels as i64];
    shape.extend(sides.map(|s| s as i64));
    Tensor::from_slice(values)
        .view(shape.as_slice())
        .to_device(device)
}

/// C's activations and code (inference: sign) of one padded scan (1, C, z, y, x), sides
/// multiples of f; `None` for D1.
pub fn encode_volume(model: &Model, scan: &Tensor, tiling: Tiling) -> Option<(Tensor, Tensor)> {
    let c = model.compressor.as_ref()?;
    let _guard = tch::no_grad_guard();
    let f = model.config.downsample as usize;
    let size = scan.size();
    let sides: [usize; 3] = std::array::from_fn(|a| size[2 + a] as usize);
    // Decided from the sides alone: a scan that runs whole is not copied out first.
    let Some(tile) = tiling.tile_cells(sides, f) else {
        return model.encode(scan, false);
    };
    let (values, channels) = values_of(scan);
    let device = scan.device();
    let cells = sides.map(|s| s / f);
    let k = model.config.code_channels as usize;
    let halo = halo_cells(&Compressor::axis_layers(&model.config), f, 1);
    let activations = TiledPass {
        input: &values,
        in_channels: channels,
        cells,
        scale_in: [f; 3],
        scale_out: [1; 3],
        out_channels: k,
        tile,
        halo,
    }
    .run::<std::convert::Infallible>(|region, s| {
        Ok(region_pass(region, channels, s, device, |x| {
            c.forward_t(x, false)
        }))
    })
    .unwrap_or_else(|never| match never {});
    let a = tensor_of(&activations, k, cells, device);
    let bits = binarize(&a, false);
    Some((a, bits))
}

/// g's features (1, g_out, code sides x f) of a code (1, K, cells).
pub fn reconstruct_volume(model: &Model, bits: &Tensor, tiling: Tiling) -> Tensor {
    let g = model.reconstructor.as_ref().expect("compressing variants have g");
    let _guard = tch::no_grad_guard();
    let f = model.config.downsample as usize;
    let size = bits.size();
    let cells: [usize; 3] = std::array::from_fn(|a| size[2 + a] as usize);
    let Some(tile) = tiling.tile_cells(cells.map(|c| c * f), f) else {
        return g.forward_t(bits, false);
    };
    let device = bits.device();
    let (values, k) = values_of(bits);
    let out = model.config.g_out as usize;
    let halo = halo_cells(&Reconstructor::axis_layers(&model.config), 1, f);
    let features = TiledPass {
        input: &values,
        in_channels: k,
        cells,
        scale_in: [1; 3],
        scale_out: [f; 3],
        out_channels: out,
        tile,
        halo,
    }
    .run_kept::<std::convert::Infallible>(|region, sides, kept| {
        let keep: Vec<std::ops::Range<i64>> = (0..3)
            .map(|a| kept.start[a] as i64..(kept.start[a] + kept.sides[a]) as i64)
            .collect();
        Ok(region_pass(region, k, sides, device, |x| {
            g.forward_kept(x, &keep)
        }))
    })
    .unwrap_or_else(|never| match never {});
    tensor_of(&features, out, cells.map(|c| c * f), device)
}
