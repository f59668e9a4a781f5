//! g, the feature-reconstruction layers in the cloud: upsampling convs from the code to a
//! single-channel (or few-channel) map at the segmentor's input size. They are trained for
//! segmentation and do not try to reconstruct the image, but for an optional autoencoder
//! pre-training before the trial's steps (`hyper.codePretrainSteps`) and an optional
//! reconstruction term beside the segmentation loss (`hyper.reconstructionWeight`).

use tch::nn::ModuleT;
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

/// A box along one axis, [start, end) on some grid.
type Span = std::ops::Range<i64>;

/// `span` widened by one position each way (a 3-wide kernel's reach), within [0, side).
fn reach(span: &Span, side: i64) -> Span {
    (span.start - 1).max(0)..(span.end + 1).min(side)
}

/// The positions on the grid half as fine that a nearest-neighbour doubling reads for `span`.
fn halve(span: &Span) -> Span {
    span.start.div_euclid(2)..(span.end + 1).div_euclid(2)
}

/// Cuts `xs` (N, C, spatial...) whose first position along each axis is `origin[a]` down to
/// `spans`.
fn cut(xs: Tensor, origin: &[i64], spans: &[Span]) -> Tensor {
    spans.iter().enumerate().fold(xs, |x, (a, s)| {
        x.narrow(2 + a as i64, s.start - origin[a], s.end - s.start)
    })
}

impl Reconstructor {
    /// The features of `keep` (a box per axis at the output's resolution) from a code region
    /// (N, K, cells...), computing each layer only where a later layer reads it: the full
    /// pass over the region would spend most of its work on a tile's halo, which its finest
    /// layers need only a few voxels deep. Equal to `forward_t`'s output cut to `keep`: each
    /// layer's kept values see the same inputs, and the region's own border is zero-padded in
    /// both.
    pub fn forward_kept(&self, bits: &Tensor, keep: &[Span]) -> Tensor {
        let cells = &bits.size()[2..];
        let stages = self.ups.len() as u32;
        let side = |a: usize, stage: u32| cells[a] << stage;
        let axes = 0..keep.len();
        // What each layer must produce, from the output back to the code.
        let out_in: Vec<Span> = axes.clone().map(|a| reach(&keep[a], side(a, stages))).collect();
        let mut up_out = vec![out_in];
        let mut up_in = Vec::new();
        for stage in (1..=stages).rev() {
            let needed = up_out.last().expect("one per stage");
            let conv_in: Vec<Span> = axes.clone().map(|a| reach(&needed[a], side(a, stage))).collect();
            up_out.push(conv_in.iter().map(halve).collect());
            up_in.push(conv_in);
        }
        let entry_out = up_out.pop().expect("the entry's output");
        up_out.reverse();
        up_in.reverse();
        let entry_in: Vec<Span> = axes.clone().map(|a| reach(&entry_out[a], side(a, 0))).collect();
        let starts = |spans: &[Span]| spans.iter().map(|s| s.start).collect::<Vec<_>>();
        let zero = vec![0; keep.len()];
        let mut ys = cut(bits.shallow_clone(), &zero, &entry_in);
        ys = cut(self.entry.forward_t(&ys, false), &starts(&entry_in), &entry_out);
        let mut origin = starts(&entry_out);
        for (i, up) in self.ups.iter().enumerate() {
            let doubled: Vec<i64> = origin.iter().map(|o| 2 * o).collect();
            ys = cut(upsample2(&ys, self.spatial), &doubled, &up_in[i]);
            ys = cut(up.forward_t(&ys, false), &starts(&up_in[i]), &up_out[i]);
            origin = starts(&up_out[i]);
        }
        cut(nn::Module::forward(&self.out, &ys), &origin, keep)
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

#[cfg(test)]
mod tests {
    use super::*;
    use orchestra_api::{ModelSpec, Preset};
    use tch::{Device, Kind};

    /// Every box, at the volume's borders and inside it, equals the whole pass cut to it, in 3D
    /// and 2D.
    #[test]
    fn kept_boxes_equal_the_whole_pass_cut_to_them() {
        for dims in [3u32, 2] {
            let spec = ModelSpec {
                downsample: Some(8),
                ..ModelSpec::new(Preset::Small, 32, dims)
            };
            let c = super::super::config::resolve(&spec, 1, 3);
            let vs = nn::VarStore::new(Device::Cpu);
            let g = Reconstructor::new(vs.root() / "g", &c);
            tch::no_grad(|| {
                for (name, mut t) in vs.variables() {
                    if name.ends_with("running_mean") {
                        let _ = t.uniform_(-0.5, 0.5);
                    }
                }
            });
            let cells: Vec<i64> = if dims == 3 { vec![3, 4, 5] } else { vec![4, 5] };
            let mut shape = vec![1, 3];
            shape.extend(&cells);
            let bits = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).sign();
            let whole = tch::no_grad(|| g.forward_t(&bits, false));
            let boxes: [&[Span]; 3] = if dims == 3 {
                [
                    &[0..24, 0..32, 0..40],
                    &[8..16, 13..27, 0..5],
                    &[23..24, 1..2, 35..40],
                ]
            } else {
                [&[0..32, 0..40], &[8..16, 13..27], &[31..32, 0..1]]
            };
            for keep in boxes {
                let kept = tch::no_grad(|| g.forward_kept(&bits, keep));
                let expected = cut(whole.shallow_clone(), &vec![0; keep.len()], keep);
                assert_eq!(kept.size(), expected.size(), "{keep:?}");
                let d = (&kept - &expected).abs().max().double_value(&[]);
                assert!(d <= 1e-5, "{dims}D box {keep:?}: differs by {d}");
            }
        }
    }
}
