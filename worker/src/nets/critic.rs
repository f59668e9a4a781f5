//! D, SegAN's critic applied to label maps only (predicted vs ground truth): strided 4x4 conv
//! blocks with BatchNorm and LeakyReLU. Its multi-scale features are the input plus the output
//! of every block; the loss compares them with an L1 distance.

use orchestra_api::DisReduction;
use tch::{nn, nn::ModuleT, Kind, Tensor};

use super::config::NetConfig;
use super::layers::{conv_block, Activation, ConvBlock};

#[derive(Debug)]
pub struct Critic {
    blocks: Vec<ConvBlock>,
}

impl Critic {
    pub fn new(p: nn::Path, c: &NetConfig) -> Critic {
        let mut ch = c.out_channels();
        let blocks = (0..c.d_depth)
            .map(|level| {
                let w = c.d_width << level.min(3);
                let b = conv_block(
                    &p / format!("block{level}"),
                    ch,
                    w,
                    4,
                    2,
                    level > 0,
                    Activation::Leaky,
                    c.spatial,
                );
                ch = w;
                b
            })
            .collect();
        Critic { blocks }
    }

    /// The input followed by every block's output.
    pub fn features(&self, label_map: &Tensor, train: bool) -> Vec<Tensor> {
        let mut out = vec![label_map.shallow_clone()];
        for b in &self.blocks {
            let next = b.forward_t(out.last().expect("starts with the input"), train);
            out.push(next);
        }
        out
    }

    /// Multi-scale L1 loss between the critic's features of `pred` and of `truth`.
    pub fn multi_scale_l1(
        &self,
        pred: &Tensor,
        truth: &Tensor,
        reduction: DisReduction,
        train: bool,
    ) -> Tensor {
        let fp = self.features(pred, train);
        let ft = self.features(truth, train);
        match reduction {
            DisReduction::PerLayer => {
                let per_layer: Vec<Tensor> = fp
                    .iter()
                    .zip(&ft)
                    .map(|(a, b)| (a - b).abs().mean(Kind::Float))
                    .collect();
                Tensor::stack(&per_layer, 0).mean(Kind::Float)
            }
            DisReduction::Concatenated => {
                let diffs: Vec<Tensor> = fp
                    .iter()
                    .zip(&ft)
                    .map(|(a, b)| (a - b).abs().flatten(1, -1))
                    .collect();
                Tensor::cat(&diffs, 1).mean(Kind::Float)
            }
        }
    }
}
