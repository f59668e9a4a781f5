//! C, the compressor that runs on the edge device: a light strided conv encoder ending in a
//! 1x1 conv to K code channels and tanh. Binarization (see `binarize`) follows it.

use tch::{nn, Tensor};

use orchestra_edge::tiling::AxisLayer;

use super::config::NetConfig;
use super::layers::{conv, conv_block, Activation, Conv, ConvBlock};

#[derive(Debug)]
pub struct Compressor {
    stem: ConvBlock,
    downs: Vec<ConvBlock>,
    head: Conv,
}

impl Compressor {
    pub fn new(p: nn::Path, c: &NetConfig) -> Compressor {
        let sp = c.spatial;
        let stem = conv_block(
            &p / "stem",
            c.in_channels,
            c.c_width,
            3,
            1,
            false,
            Activation::Leaky,
            sp,
        );
        let stages = c.downsample.trailing_zeros() as i64;
        let mut width = c.c_width;
        let downs = (0..stages)
            .map(|i| {
                let next = (width * 2).min(c.c_max_width);
                let block = conv_block(
                    &p / format!("down{i}"),
                    width,
                    next,
                    4,
                    2,
                    true,
                    Activation::Leaky,
                    sp,
                );
                width = next;
                block
            })
            .collect();
        let head = conv(&p / "head", width, c.code_channels, 1, 1, 0, true, sp);
        Compressor { stem, downs, head }
    }

    /// The stack along one axis (stem, halvings, head), for the halo of tiled coding.
    pub fn axis_layers(c: &NetConfig) -> Vec<AxisLayer> {
        let stages = c.downsample.trailing_zeros() as usize;
        let mut layers = vec![AxisLayer::Conv {
            kernel: 3,
            stride: 1,
            padding: 1,
        }];
        layers.extend(std::iter::repeat_n(
            AxisLayer::Conv {
                kernel: 4,
                stride: 2,
                padding: 1,
            },
            stages,
        ));
        layers.push(AxisLayer::Conv {
            kernel: 1,
            stride: 1,
            padding: 0,
        });
        layers
    }
}

impl nn::ModuleT for Compressor {
    /// Image (N, C, H, W) -> code activations in (-1, 1), (N, K, H/f, W/f).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for d in &self.downs {
            ys = d.forward_t(&ys, train);
        }
        nn::Module::forward(&self.head, &ys).tanh()
    }
}
