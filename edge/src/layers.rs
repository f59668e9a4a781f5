//! C's layers and their feature maps (`Planes`, channels-first as PyTorch lays them out;
//! `ChannelsLast` between layers), and the convolution every CPU can run.
//!
//! Each convolution is an im2col (unfold the input into a (positions, k^d C_in) matrix) and one
//! matrix product on candle's CPU backend (the gemm crate: blocked, vectorised, threaded), with
//! bias, BatchNorm and activation applied in one pass over its output. Features stay
//! channels-last between layers, so the unfold copies runs of channels and the product is long
//! along the positions. One unfold for 2D and 3D: an image is a volume of depth 1. (candle's
//! own conv2d converts layouts around every call and has no 3D form; this is several times
//! faster for C's layers.)

use candle_core::{Device, Result, Tensor};

/// LeakyReLU's slope in C (SegAN's 0.2), as in the worker's layers.
pub(crate) const LEAKY_SLOPE: f32 = 0.2;
/// BatchNorm's epsilon (PyTorch's default, which the worker uses).
const NORM_EPS: f32 = 1e-5;

/// Feature maps of one input: `channels` planes of `sides` (depth, height, width; depth 1 for
/// images), channel-major, as PyTorch lays them out.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    pub channels: usize,
    pub sides: [usize; 3],
    pub data: Vec<f32>,
}

/// What follows a convolution, applied per channel in the same pass.
#[derive(Debug)]
pub(crate) enum After {
    /// + bias, LeakyReLU (the stem).
    BiasLeaky(Vec<f32>),
    /// BatchNorm at inference as PyTorch's CPU kernel computes it (scale = weight /
    /// sqrt(var + eps), shift = bias - mean * scale, x * scale + shift, in f32), LeakyReLU.
    NormLeaky { scale: Vec<f32>, shift: Vec<f32> },
    /// + bias, tanh (the head).
    BiasTanh(Vec<f32>),
}

/// Feature maps inside C, channels-last (depth, height, width, channel): each position's
/// channels are contiguous, so the unfolded matrix has one row per output position and the
/// product's long side is the positions (the side the matrix kernels are fast along).
#[derive(Clone, Debug)]
pub(crate) struct ChannelsLast {
    pub(crate) channels: usize,
    pub(crate) sides: [usize; 3],
    pub(crate) data: Vec<f32>,
}

impl ChannelsLast {
    pub(crate) fn from_planes(x: &Planes) -> ChannelsLast {
        let positions: usize = x.sides.iter().product();
        let mut data = vec![0f32; x.data.len()];
        for (c, plane) in x.data.chunks(positions).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                data[p * x.channels + c] = v;
            }
        }
        ChannelsLast {
            channels: x.channels,
            sides: x.sides,
            data,
        }
    }

    pub(crate) fn to_planes(&self) -> Planes {
        let positions: usize = self.sides.iter().product();
        let mut data = vec![0f32; self.data.len()];
        for (p, pixel) in self.data.chunks(self.channels).enumerate() {
            for (c, &v) in pixel.iter().enumerate() {
                data[c * positions + p] = v;
            }
        }
        Planes {
            channels: self.channels,
            sides: self.sides,
            data,
        }
    }
}

/// A convolution with a cubic (square) kernel, stride and symmetric padding, and what follows it.
#[derive(Debug)]
pub struct Conv {
    /// (k^d C_in, C_out), rows in (dz, dy, dx, c) order: the kernel as the right factor of
    /// (positions, k^d C_in) x (k^d C_in, C_out).
    weight: Tensor,
    /// The same values, for the direct kernels (`direct`).
    pub(crate) right: Vec<f32>,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    /// Kernel extent per axis (depth 1 for 2D).
    pub(crate) kernel: [usize; 3],
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) after: After,
}

impl Conv {
    /// `values` in PyTorch's layout (C_out, C_in, k...).
    pub(crate) fn new(
        values: Vec<f32>,
        c_out: usize,
        c_in: usize,
        kernel: usize,
        dims: usize,
        stride: usize,
        after: After,
    ) -> Result<Conv> {
        let k = [if dims == 3 { kernel } else { 1 }, kernel, kernel];
        let taps: usize = k.iter().product();
        let mut right = vec![0f32; values.len()];
        for o in 0..c_out {
            for c in 0..c_in {
                for t in 0..taps {
                    right[(t * c_in + c) * c_out + o] = values[(o * c_in + c) * taps + t];
                }
            }
        }
        // "Same" padding for odd kernels, halving for the 4-wide stride-2 kernels (as the worker).
        let padding = if kernel % 2 == 1 {
            kernel / 2
        } else {
            (kernel - stride) / 2
        };
        Ok(Conv {
            weight: Tensor::from_vec(right.clone(), (taps * c_in, c_out), &Device::Cpu)?,
            right,
            c_in,
            c_out,
            kernel: k,
            stride,
            padding,
            after,
        })
    }

    /// A stem: conv k^d, stride 1, bias, LeakyReLU.
    pub fn stem(weight: Vec<f32>, bias: Vec<f32>, c_in: usize, dims: usize) -> Result<Conv> {
        Conv::new(weight, bias.len(), c_in, 3, dims, 1, After::BiasLeaky(bias))
    }

    /// A halving: conv 4^d, stride 2, no bias, BatchNorm (weight, bias, running mean and
    /// variance), LeakyReLU.
    pub fn halving(weight: Vec<f32>, c_in: usize, dims: usize, norm: [&[f32]; 4]) -> Result<Conv> {
        let [w, b, mean, var] = norm;
        let scale: Vec<f32> = w
            .iter()
            .zip(var)
            .map(|(w, v)| w / (v + NORM_EPS).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Conv::new(
            weight,
            scale.len(),
            c_in,
            4,
            dims,
            2,
            After::NormLeaky { scale, shift },
        )
    }

    /// The head: conv 1^d to the code channels, bias, tanh.
    pub fn head(weight: Vec<f32>, bias: Vec<f32>, c_in: usize, dims: usize) -> Result<Conv> {
        Conv::new(weight, bias.len(), c_in, 1, dims, 1, After::BiasTanh(bias))
    }

    /// (kernel, stride, padding) along axis `a` (depth, height, width); an image's depth axis
    /// is neither strided nor padded.
    pub(crate) fn axis(&self, a: usize) -> (usize, usize, usize) {
        if a == 0 && self.kernel[0] == 1 {
            (1, 1, 0)
        } else {
            (self.kernel[a], self.stride, self.padding)
        }
    }

    pub(crate) fn out_sides(&self, sides: [usize; 3]) -> [usize; 3] {
        std::array::from_fn(|a| {
            let (k, s, p) = self.axis(a);
            (sides[a] + 2 * p - k) / s + 1
        })
    }

    /// The (positions, k^d C_in) matrix: row (oz, oy, ox) holds, tap after tap, the C_in
    /// channels the output position reads there (zeros in the padding).
    fn unfold(&self, x: &ChannelsLast, out: [usize; 3]) -> Vec<f32> {
        let [d, h, w] = x.sides;
        let c = self.c_in;
        let [kd, kh, kw] = self.kernel;
        let (_, sd, pd) = self.axis(0);
        let (_, s, p) = self.axis(1);
        let width = kd * kh * kw * c;
        // Written front to back, padding included, so nothing is written twice.
        let mut cols = Vec::with_capacity(out.iter().product::<usize>() * width);
        for oz in 0..out[0] {
            for oy in 0..out[1] {
                for ox in 0..out[2] {
                    for dz in 0..kd {
                        let Some(iz) = (oz * sd + dz).checked_sub(pd).filter(|&z| z < d) else {
                            cols.resize(cols.len() + kh * kw * c, 0.0);
                            continue;
                        };
                        for dy in 0..kh {
                            let Some(iy) = (oy * s + dy).checked_sub(p).filter(|&y| y < h) else {
                                cols.resize(cols.len() + kw * c, 0.0);
                                continue;
                            };
                            // The taps of one kernel row whose column lands inside the input are
                            // contiguous in the input: copy them in one piece.
                            let lo = p.saturating_sub(ox * s).min(kw);
                            let hi = kw.min((w + p).saturating_sub(ox * s)).max(lo);
                            cols.resize(cols.len() + lo * c, 0.0);
                            if hi > lo {
                                let src = ((iz * h + iy) * w + ox * s + lo - p) * c;
                                cols.extend_from_slice(&x.data[src..src + (hi - lo) * c]);
                            }
                            cols.resize(cols.len() + (kw - hi) * c, 0.0);
                        }
                    }
                }
            }
        }
        cols
    }

    /// Whether this is a stem the direct kernel computes: 3x3 (2D) or 3x3x3 (3D), stride 1,
    /// bias and LeakyReLU.
    pub(crate) fn is_stem(&self) -> bool {
        matches!(self.kernel, [1, 3, 3] | [3, 3, 3])
            && self.stride == 1
            && matches!(self.after, After::BiasLeaky(_))
    }

    /// Whether this layer reads one position per output (a 1-wide kernel, stride 1).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1, 1] && self.stride == 1
    }

    /// Multiply-adds per output position: k^d C_in C_out.
    pub(crate) fn macs_per_output(&self) -> usize {
        self.kernel.iter().product::<usize>() * self.c_in * self.c_out
    }

    pub(crate) fn forward(&self, x: &ChannelsLast) -> Result<ChannelsLast> {
        let out = self.out_sides(x.sides);
        let positions: usize = out.iter().product();
        let width = self.weight.dim(0)?;
        let product = if self.kernel == [1, 1, 1] && self.stride == 1 {
            // A 1-wide kernel reads each position once: the features are the matrix.
            let cols = Tensor::from_slice(&x.data, (positions, width), &Device::Cpu)?;
            cols.matmul(&self.weight)?
        } else {
            let cols = Tensor::from_vec(self.unfold(x, out), (positions, width), &Device::Cpu)?;
            cols.matmul(&self.weight)?
        };
        let mut data: Vec<f32> = product.flatten_all()?.to_vec1()?;
        for pixel in data.chunks_exact_mut(self.c_out) {
            match &self.after {
                After::BiasLeaky(bias) => pixel.iter_mut().zip(bias).for_each(|(v, b)| *v = leaky(*v + b)),
                After::NormLeaky { scale, shift } => pixel
                    .iter_mut()
                    .zip(scale.iter().zip(shift))
                    .for_each(|(v, (a, b))| *v = leaky(*v * a + b)),
                After::BiasTanh(bias) => pixel.iter_mut().zip(bias).for_each(|(v, b)| *v = (*v + b).tanh()),
            }
        }
        Ok(ChannelsLast {
            channels: self.c_out,
            sides: out,
            data,
        })
    }
}

fn leaky(v: f32) -> f32 {
    v.max(v * LEAKY_SLOPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct convolution, loops only, over (C, D, H, W) with a cubic kernel (depth 1 for 2D).
    fn direct(x: &Planes, k: &[f32], c_out: usize, [kd, kh, kw]: [usize; 3], s: usize, p: usize) -> Vec<f32> {
        let [d, h, w] = x.sides;
        let (sd, pd) = if kd == 1 { (1, 0) } else { (s, p) };
        let od = (d + 2 * pd - kd) / sd + 1;
        let (oh, ow) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
        let mut y = vec![0f32; c_out * od * oh * ow];
        for o in 0..c_out {
            for z in 0..od {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut acc = 0f32;
                        for c in 0..x.channels {
                            for dz in 0..kd {
                                for dy in 0..kh {
                                    for dx in 0..kw {
                                        let iz = (z * sd + dz) as isize - pd as isize;
                                        let iy = (yy * s + dy) as isize - p as isize;
                                        let ix = (xx * s + dx) as isize - p as isize;
                                        if iz < 0
                                            || iy < 0
                                            || ix < 0
                                            || iz >= d as isize
                                            || iy >= h as isize
                                            || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((c * d + iz as usize) * h + iy as usize) * w + ix as usize;
                                        let ki = (((o * x.channels + c) * kd + dz) * kh + dy) * kw + dx;
                                        acc += x.data[xi] * k[ki];
                                    }
                                }
                            }
                        }
                        y[((o * od + z) * oh + yy) * ow + xx] = acc;
                    }
                }
            }
        }
        y
    }

    fn planes(channels: usize, sides: [usize; 3]) -> Planes {
        let n = channels * sides.iter().product::<usize>();
        Planes {
            channels,
            sides,
            data: (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect(),
        }
    }

    #[test]
    fn unfolded_convolutions_equal_direct_ones_in_2d_and_3d() {
        // Includes a height equal to the channel count (32 x 32 x 32), the shape at which
        // candle 0.9.2's conv2d read its input as channels-last.
        let cases = [
            (2, 3, [1, 6, 7], 3usize, 1, 2),
            (32, 4, [1, 32, 32], 4, 2, 2),
            (3, 8, [1, 16, 16], 1, 1, 2),
            (2, 3, [5, 6, 7], 3, 1, 3),
            (2, 3, [6, 6, 8], 4, 2, 3),
            (4, 2, [3, 4, 5], 1, 1, 3),
        ];
        for (c_in, c_out, sides, kernel, stride, dims) in cases {
            let x = planes(c_in, sides);
            let taps = if dims == 3 { kernel.pow(3) } else { kernel * kernel };
            let k: Vec<f32> = (0..c_out * c_in * taps)
                .map(|i| ((i * 13 % 7) as f32 - 3.0) / 5.0)
                .collect();
            let conv = Conv::new(
                k.clone(),
                c_out,
                c_in,
                kernel,
                dims,
                stride,
                After::BiasLeaky(vec![0.0; c_out]),
            )
            .unwrap();
            let got = conv.forward(&ChannelsLast::from_planes(&x)).unwrap().to_planes();
            let kd = if dims == 3 { kernel } else { 1 };
            let want: Vec<f32> = direct(&x, &k, c_out, [kd, kernel, kernel], stride, conv.padding)
                .into_iter()
                .map(leaky)
                .collect();
            assert_eq!(got.data.len(), want.len(), "{c_in}->{c_out} {sides:?} k{kernel}");
            for (g, e) in got.data.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-4,
                    "{c_in}->{c_out} {sides:?} k{kernel}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn norm_uses_running_statistics() {
        // A 1x1 identity kernel, then BatchNorm (weight 2, bias 1, mean 3, var 4 - eps): 3 -> 1, 5 -> 3.
        let conv = Conv::halving(vec![1.0; 16], 1, 2, [&[2.0], &[1.0], &[3.0], &[4.0 - NORM_EPS]]).unwrap();
        let After::NormLeaky { scale, shift } = &conv.after else {
            panic!("a halving normalises");
        };
        assert_eq!((scale[0], shift[0]), (1.0, -2.0));
    }
}
