//! g, the feature-reconstruction layers in the cloud: upsampling convs from the code to a
//! single-channel (or few-channel) map at the segmentor's input size. They are trained for
//! segmentation only and do not try to reconstruct the image.

use tch::{nn, Tensor};

use orchestra_edge::tiling::AxisLayer;

use super::config::NetConfig;
use super::layers::{conv, conv_block, upsample2, Activation, Conv, ConvBlock, Spatial};

#[derive(Debug)]
pub struct Reconstructor {
    entry: ConvBlock,
    ups: Vec<ConvBlock>,
    out: Conv,
    spatial: Spatial,
}

impl Reconstructor {
    pub fn new(p: nn::Path, c: &NetConfig) -> Reconstructor {
        let sp = c.spatial;
        let stages = c.downsample.trailing_zeros() as i64;
        // Widths mirror the compressor: widest at the code, halving towards full resolution.
        let width_at = |stage: i64| (c.g_width << (stages - stage)).min(c.g_max_width);
        let entry = conv_block(
            &p / "entry",
            c.code_channels,
            width_at(0),
            3,
            1,
            true,
            Activation::Leaky,
            sp,
        );
        let ups = (0..stages)
            .map(|i| {
                conv_block(
                    &p / format!("up{i}"),
                    width_at(i),
                    width_at(i + 1),
                    3,
                    1,
                    true,
                    Activation::Leaky,
                    sp,
                )
            })
            .collect();
        let out = conv(&p / "out", width_at(stages), c.g_out, 3, 1, 1, true, sp);
        Reconstructor {
            entry,
            ups,
            out,
            spatial: sp,
        }
    }

    /// The stack along one axis (entry, upsample and conv per stage, output conv), for the
    /// halo of tiled reconstruction.
    pub fn axis_layers(c: &NetConfig) -> Vec<AxisLayer> {
        let same = AxisLayer::Conv {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let mut layers = vec![same];
        for _ in 0..c.downsample.trailing_zeros() {
            layers.extend([AxisLayer::Upsample(2), same]);
        }
        layers.push(same);
        layers
    }
}

impl nn::ModuleT for Reconstructor {
    /// Code (N, K, H/f, W/f) in {-1, +1} -> feature map (N, g_out, H, W).
    fn forward_t(&self, bits: &Tensor, train: bool) -> Tensor {
        let mut ys = self.entry.forward_t(bits, train);
        for up in &self.ups {
            ys = up.forward_t(&upsample2(&ys, self.spatial), train);
        }
        nn::Module::forward(&self.out, &ys)
    }
}
