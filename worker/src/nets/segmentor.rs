//! s, SegAN's segmentor (Xue et al. 2018): a U-Net-like encoder/decoder with 4x4 stride-2
//! convolutions, LeakyReLU(0.2), BatchNorm, residual blocks at every scale and skip
//! connections, ending in a sigmoid (binary) or softmax (multi-class).

use tch::{nn, Kind, Tensor};

use super::config::NetConfig;
use super::layers::{conv, conv_block, residual, upsample2, Activation, Conv, ConvBlock, Residual, Spatial};

#[derive(Debug)]
pub struct Segmentor {
    downs: Vec<(ConvBlock, Vec<Residual>)>,
    ups: Vec<ConvBlock>,
    last: ConvBlock,
    out: Conv,
    spatial: Spatial,
    binary: bool,
}

impl Segmentor {
    /// `in_channels`: the image's channels (D1) or g's output channels.
    pub fn new(p: nn::Path, c: &NetConfig, in_channels: i64) -> Segmentor {
        let sp = c.spatial;
        let width = |level: i64| c.s_width << level.min(3);
        let mut downs = Vec::new();
        let mut ch = in_channels;
        for level in 0..c.s_depth {
            let w = width(level);
            // SegAN's first block has no BatchNorm.
            let block = conv_block(
                &p / format!("down{level}"),
                ch,
                w,
                4,
                2,
                level > 0,
                Activation::Leaky,
                sp,
            );
            let res = (0..c.s_res_blocks)
                .map(|r| residual(&p / format!("res{level}_{r}"), w, sp))
                .collect();
            downs.push((block, res));
            ch = w;
        }
        // Decoder: upsample, conv to the skip's width, concatenate the skip.
        let mut ups = Vec::new();
        for level in (0..c.s_depth - 1).rev() {
            let w = width(level);
            ups.push(conv_block(
                &p / format!("up{level}"),
                ch,
                w,
                3,
                1,
                true,
                Activation::Relu,
                sp,
            ));
            ch = 2 * w;
        }
        let last = conv_block(&p / "last", ch, c.s_width, 3, 1, true, Activation::Relu, sp);
        let out = conv(&p / "out", c.s_width, c.out_channels(), 3, 1, 1, true, sp);
        Segmentor {
            downs,
            ups,
            last,
            out,
            spatial: sp,
            binary: c.classes == 2,
        }
    }
}

impl nn::ModuleT for Segmentor {
    /// Input (N, C, H, W) -> class probabilities (N, 1 or classes, H, W).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.downs.len());
        let mut ys = xs.shallow_clone();
        for (block, res) in &self.downs {
            ys = block.forward_t(&ys, train);
            for r in res {
                ys = r.forward_t(&ys, train);
            }
            skips.push(ys.shallow_clone());
        }
        skips.pop();
        for up in &self.ups {
            let skip = skips.pop().expect("one skip per decoder level");
            ys = Tensor::cat(&[up.forward_t(&upsample2(&ys, self.spatial), train), skip], 1);
        }
        let ys = self.last.forward_t(&upsample2(&ys, self.spatial), train);
        let logits = nn::Module::forward(&self.out, &ys);
        if self.binary {
            logits.sigmoid()
        } else {
            logits.softmax(1, Kind::Float)
        }
    }
}
