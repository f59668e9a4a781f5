//! C's inference in pure Rust: the same network as the worker's `nets::compressor` (a stem conv
//! 3 with LeakyReLU 0.2; per halving a 4-wide stride-2 conv, BatchNorm with its running
//! statistics and LeakyReLU; a 1-wide conv to K channels and tanh), then binarization by sign
//! with 0 counted as +1.
//!
//! The layers themselves, and the im2col path every CPU has, are in `layers`; `direct` holds the
//! faster kernels that cover the common layers on x86-64.

use candle_core::Result;

use crate::direct;
pub(crate) use crate::layers::ChannelsLast;
pub use crate::layers::{Conv, Planes};
use crate::plane_stream::{LayerWork, PlaneStream};

/// C: stem, the halvings, the head.
#[derive(Debug)]
pub struct Compressor {
    pub layers: Vec<Conv>,
}

impl Compressor {
    /// The stack as it acts along one in-plane axis (every axis of a volume model), for the
    /// halo of tiled coding.
    pub fn axis_layers(&self) -> Vec<crate::tiling::AxisLayer> {
        self.layers
            .iter()
            .map(|l| crate::tiling::AxisLayer::Conv {
                kernel: l.kernel[2],
                stride: l.stride,
                padding: l.padding,
            })
            .collect()
    }

    /// C over `data` (channel-major planes of `data_sides`, zeros beyond them up to `sides`)
    /// plane by plane, with each layer's work and time; `None` where the direct kernels do not
    /// cover the stack on this CPU (`plane_stream`).
    pub fn streamed(
        &self,
        data: &[f32],
        data_sides: [usize; 3],
        sides: [usize; 3],
    ) -> Option<Result<(Planes, Vec<LayerWork>)>> {
        PlaneStream::new(&self.layers, sides).map(|stream| stream.run(data, data_sides))
    }

    /// One input's planes in [0, 1] -> its code activations in (-1, 1), (K, sides / f):
    /// streamed plane by plane where the direct kernels cover C, else layer by layer.
    pub fn activations(&self, x: &Planes) -> Result<Planes> {
        if let Some(streamed) = self.streamed(&x.data, x.sides, x.sides) {
            return streamed.map(|(a, _)| a);
        }
        // `direct::stem` decides whether it covers this stem and this CPU.
        let (mut y, rest) = match self.layers.first().and_then(|stem| direct::stem(stem, x)) {
            Some(y) => (y, &self.layers[1..]),
            None => (ChannelsLast::from_planes(x), &self.layers[..]),
        };
        for layer in rest {
            let next = match direct::conv(layer, &y) {
                Some(out) => out,
                None => layer.forward(&y)?,
            };
            direct::scratch::recycle(std::mem::replace(&mut y, next).data);
        }
        let planes = y.to_planes();
        direct::scratch::recycle(y.data);
        Ok(planes)
    }

    /// Every layer on the unfold path, whatever the CPU (the fallback, for comparisons).
    pub fn activations_unfolded(&self, x: &Planes) -> Result<Planes> {
        let mut y = ChannelsLast::from_planes(x);
        for layer in &self.layers {
            y = layer.forward(&y)?;
        }
        Ok(y.to_planes())
    }

    /// Floating-point operations of the convolutions over an input of `sides` (2 per
    /// multiply-add).
    pub fn flops(&self, sides: [usize; 3]) -> f64 {
        let mut at = sides;
        let mut total = 0.0;
        for layer in &self.layers {
            at = layer.out_sides(at);
            total += 2.0 * (at.iter().product::<usize>() * layer.macs_per_output()) as f64;
        }
        total
    }
}

/// A code's bits (-1/+1) in coding order (channel-major, then raster: the planes' own layout),
/// by sign with 0 as +1, as the worker binarizes at inference.
pub fn binarize(activations: &Planes) -> Vec<i8> {
    activations
        .data
        .iter()
        .map(|&a| if a >= 0.0 { 1 } else { -1 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_plus_bit() {
        let a = Planes {
            channels: 1,
            sides: [1, 2, 2],
            data: vec![-0.3, 0.0, 0.7, -0.0],
        };
        assert_eq!(binarize(&a), vec![-1, 1, 1, 1]);
    }
}
