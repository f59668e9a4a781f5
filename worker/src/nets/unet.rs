//! s for volumes: a 3D U-Net in nnU-Net's style (Isensee et al. 2021). Each resolution level
//! is two blocks of 3x3x3 convolution - instance norm - LeakyReLU(0.01); the first block of a
//! level downsamples with stride 2 (no pooling layers); the decoder upsamples to the skip's
//! sides, concatenates the skip and runs two blocks again; a 1x1x1 convolution gives the class
//! scores. Widths double per level up to ten times the base (nnU-Net's 32 -> 320).
//!
//! Anisotropy: an axis is halved only while it stays at least `MIN_SIDE` long, so a patch of
//! few thick slices (cardiac MR: 16 x 64 x 64) stops pooling along z early while the in-plane
//! axes go on, as nnU-Net's planner does for such data.

use tch::{nn, Kind, Tensor};

use super::config::NetConfig;
use super::layers::{conv, conv_strided, instance_norm, upsample_to, Conv, InstanceNorm, Spatial};

/// The shortest side a level may have after halving.
const MIN_SIDE: i64 = 4;

/// Strides of each level's first block along each axis: `depth` halvings planned from the patch
/// sides. Level 0 keeps full resolution.
pub fn pooling_plan(sides: &[i64], depth: i64) -> Vec<Vec<i64>> {
    let mut current = sides.to_vec();
    let mut plan = vec![vec![1; sides.len()]];
    for _ in 0..depth {
        let strides: Vec<i64> = current
            .iter()
            .map(|&s| if s % 2 == 0 && s / 2 >= MIN_SIDE { 2 } else { 1 })
            .collect();
        for (s, k) in current.iter_mut().zip(&strides) {
            *s /= k;
        }
        plan.push(strides);
    }
    plan
}

/// conv 3^d - instance norm - LeakyReLU(0.01).
#[derive(Debug)]
struct Block {
    conv: Conv,
    norm: InstanceNorm,
}

fn block(p: nn::Path, c_in: i64, c_out: i64, strides: &[i64], sp: Spatial) -> Block {
    Block {
        // No bias: the norm's shift replaces it.
        conv: conv_strided(&p / "conv", c_in, c_out, 3, strides, 1, false, sp),
        norm: instance_norm(&p / "norm", c_out),
    }
}

impl Block {
    fn forward(&self, xs: &Tensor) -> Tensor {
        nn::Module::forward(&self.norm, &nn::Module::forward(&self.conv, xs)).leaky_relu()
    }
}

#[derive(Debug)]
struct Level {
    a: Block,
    b: Block,
}

impl Level {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.b.forward(&self.a.forward(xs))
    }
}

#[derive(Debug)]
pub struct UNet {
    encoder: Vec<Level>,
    /// From the deepest level up, one per skip.
    decoder: Vec<Level>,
    out: Conv,
    spatial: Spatial,
    binary: bool,
}

impl UNet {
    /// `in_channels`: the scan's channels (D1) or g's output channels.
    pub fn new(p: nn::Path, c: &NetConfig, in_channels: i64) -> UNet {
        let sp = c.spatial;
        let cap = c.s_width * 10;
        let width = |level: usize| (c.s_width << level).min(cap);
        let plan = pooling_plan(&c.sides, c.s_depth);
        let mut encoder = Vec::with_capacity(plan.len());
        let mut ch = in_channels;
        for (level, strides) in plan.iter().enumerate() {
            let w = width(level);
            let ones = vec![1; strides.len()];
            encoder.push(Level {
                a: block(&p / format!("enc{level}") / "a", ch, w, strides, sp),
                b: block(&p / format!("enc{level}") / "b", w, w, &ones, sp),
            });
            ch = w;
        }
        let mut decoder = Vec::with_capacity(plan.len() - 1);
        for level in (0..plan.len() - 1).rev() {
            let w = width(level);
            let ones = vec![1; c.sides.len()];
            decoder.push(Level {
                a: block(&p / format!("dec{level}") / "a", ch + w, w, &ones, sp),
                b: block(&p / format!("dec{level}") / "b", w, w, &ones, sp),
            });
            ch = w;
        }
        let out = conv(&p / "out", ch, c.out_channels(), 1, 1, 0, true, sp);
        UNet {
            encoder,
            decoder,
            out,
            spatial: sp,
            binary: c.classes == 2,
        }
    }
}

impl nn::ModuleT for UNet {
    /// Input (N, C, D, H, W) -> class probabilities (N, 1 or classes, D, H, W). Instance norm
    /// behaves the same in training and inference, so `train` changes nothing here.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.encoder.len());
        let mut ys = xs.shallow_clone();
        for level in &self.encoder {
            ys = level.forward(&ys);
            skips.push(ys.shallow_clone());
        }
        skips.pop();
        for level in &self.decoder {
            let skip = skips.pop().expect("one skip per decoder level");
            let up = upsample_to(&ys, &skip.size()[2..], self.spatial);
            ys = level.forward(&Tensor::cat(&[up, skip], 1));
        }
        let logits = nn::Module::forward(&self.out, &ys);
        if self.binary {
            logits.sigmoid()
        } else {
            logits.softmax(1, Kind::Float)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_axes_stop_halving_early() {
        // Cardiac MR: 16 slices of 64 x 64. z: 16 -> 8 -> 4, then stays.
        let plan = pooling_plan(&[16, 64, 64], 4);
        assert_eq!(
            plan,
            vec![
                vec![1, 1, 1],
                vec![2, 2, 2],
                vec![2, 2, 2],
                vec![1, 2, 2],
                vec![1, 2, 2]
            ]
        );
        // An odd side is never halved (the decoder could not match its skip).
        assert_eq!(
            pooling_plan(&[12, 40, 40], 4)[1..],
            [vec![2, 2, 2], vec![1, 2, 2], vec![1, 2, 2], vec![1, 1, 1]]
        );
    }
}
