//! C over a volume one plane (z-slice) at a time, every layer at once: each layer keeps only
//! the few input planes its kernel reaches across in depth, and writes each output plane
//! straight into the padded plane the next layer reads. Memory is bounded by a few planes per
//! layer (tens of MB for a 512 x 512 CT), whatever the scan's depth, and nothing is computed
//! twice: unlike tiles, there is no halo to recompute.
//!
//! The planes are computed by the direct kernels (`direct`); a stack that has a layer they do
//! not cover on this CPU (other than the pointwise head, which runs on the unfold path one
//! plane at a time) is not streamed, and C runs whole or in tiles as before. The result equals
//! the whole pass exactly: the same kernels, the same sums, plane for plane.

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::Result;

use crate::direct::{scratch, DirectLayer, PlaneLayout, RowsAt};
use crate::layers::{ChannelsLast, Conv, Planes};

/// Work and time of one layer over a whole stream.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerWork {
    /// Kernel extent, channels in and out, stride (for the reader of a report).
    pub kernel: [usize; 3],
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    /// Floating-point operations (2 per multiply-add of the convolution; the bias, BatchNorm
    /// and activation are not counted).
    pub flops: f64,
    pub seconds: f64,
}

impl LayerWork {
    pub fn gflops_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.flops / self.seconds / 1e9
        } else {
            0.0
        }
    }
}

/// How a stage computes its planes.
enum Compute<'a> {
    Direct(DirectLayer<'a>),
    /// A pointwise layer (the head) on the unfold path, one bare plane at a time.
    Pointwise,
}

/// One layer of the stream: the input planes it still needs and the next plane it owes.
struct Stage<'a> {
    layer: &'a Conv,
    compute: Compute<'a>,
    /// Input depth and plane sides; output depth and plane sides.
    in_depth: usize,
    in_plane: [usize; 2],
    out_depth: usize,
    out_plane: [usize; 2],
    /// How an input plane is laid out (padded for a direct kernel, bare for the head).
    layout: PlaneLayout,
    /// Depth kernel, stride and padding.
    depth: (usize, usize, usize),
    /// Input planes received and not yet done with, by depth index.
    ring: VecDeque<(usize, Vec<f32>)>,
    /// Input planes done with, kept to be written again (their padding is still zero).
    spare: Vec<Vec<f32>>,
    /// The depth padding: a plane of zeros.
    zero: Vec<f32>,
    next_out: usize,
    work: LayerWork,
}

impl<'a> Stage<'a> {
    fn new(layer: &'a Conv, [d, h, w]: [usize; 3]) -> Option<Stage<'a>> {
        let compute = if layer.is_pointwise() {
            Compute::Pointwise
        } else {
            Compute::Direct(DirectLayer::new(layer)?)
        };
        let [od, oh, ow] = layer.out_sides([d, h, w]);
        let layout = match &compute {
            Compute::Direct(direct) => direct.layout([h, w]),
            Compute::Pointwise => PlaneLayout {
                channels: layer.c_in,
                pad: 0,
                rows: h,
                cols: w,
                planar: false,
            },
        };
        let depth = layer.axis(0);
        Some(Stage {
            layer,
            compute,
            in_depth: d,
            in_plane: [h, w],
            out_depth: od,
            out_plane: [oh, ow],
            layout,
            depth,
            ring: VecDeque::new(),
            spare: Vec::new(),
            zero: if depth.0 > 1 {
                vec![0f32; layout.len()]
            } else {
                Vec::new()
            },
            next_out: 0,
            work: LayerWork {
                kernel: layer.kernel,
                c_in: layer.c_in,
                c_out: layer.c_out,
                stride: layer.stride,
                ..LayerWork::default()
            },
        })
    }

    /// A plane to write this stage's input into: a spare one (its padding still zero, its
    /// inside about to be overwritten) or a zeroed one.
    fn blank(&mut self) -> Vec<f32> {
        self.spare
            .pop()
            .unwrap_or_else(|| scratch::zeroed(self.layout.len()))
    }

    /// Whether output plane `next_out` can be computed now: every input plane it reads
    /// has arrived (or lies in the padding), or the input is complete.
    fn ready(&self, received: usize) -> bool {
        let (kd, s, p) = self.depth;
        if self.next_out >= self.out_depth {
            return false;
        }
        let last = (self.next_out * s + kd - 1).checked_sub(p);
        match last {
            None => true,
            Some(z) => z < received || received == self.in_depth,
        }
    }

    /// The next output plane, written into `out` at `at`.
    fn compute(&mut self, out: &mut [f32], at: RowsAt) -> Result<()> {
        let (kd, s, p) = self.depth;
        let oz = self.next_out;
        let started = Instant::now();
        match &self.compute {
            Compute::Direct(direct) => {
                let reads: Vec<&[f32]> = (0..kd)
                    .map(|dz| {
                        (oz * s + dz)
                            .checked_sub(p)
                            .filter(|&z| z < self.in_depth)
                            .map_or(&self.zero[..], |z| {
                                let (_, plane) = self.ring.iter().find(|(at, _)| *at == z).expect(
                                    "an input plane is kept until every output that reads it is done",
                                );
                                &plane[..]
                            })
                    })
                    .collect();
                direct.plane(&reads, self.in_plane, out, at);
            }
            Compute::Pointwise => {
                let (_, plane) = self.ring.front().expect("the pointwise input has arrived");
                let [h, w] = self.in_plane;
                let y = self.layer.forward(&ChannelsLast {
                    channels: self.layer.c_in,
                    sides: [1, h, w],
                    data: plane.clone(),
                })?;
                let len = w * self.layer.c_out;
                for (row, values) in y.data.chunks_exact(len).enumerate() {
                    let start = (at.first_row + row) * at.stride + at.first_col;
                    out[start..start + len].copy_from_slice(values);
                }
            }
        }
        self.work.seconds += started.elapsed().as_secs_f64();
        let [oh, ow] = self.out_plane;
        self.work.flops += 2.0 * (oh * ow * self.layer.macs_per_output()) as f64;
        self.next_out += 1;
        // Planes the next output no longer reads are done with.
        let first_needed = (self.next_out * s).saturating_sub(p);
        while self.ring.front().is_some_and(|(z, _)| *z < first_needed) {
            let (_, plane) = self.ring.pop_front().expect("checked");
            self.spare.push(plane);
        }
        Ok(())
    }
}

/// C's layers run plane by plane over a volume, when every layer but a pointwise one has a
/// direct kernel on this CPU.
pub struct PlaneStream<'a> {
    stages: Vec<Stage<'a>>,
    /// Input planes received by each stage.
    received: Vec<usize>,
    /// The last stage's output, channel-major (K, depth, height, width).
    result: Vec<f32>,
}

impl<'a> PlaneStream<'a> {
    /// The stream for `layers` over an input of `sides` (depth, height, width), or `None`
    /// where a layer is not covered (or the stack does not start with a planar stem).
    pub fn new(layers: &'a [Conv], sides: [usize; 3]) -> Option<PlaneStream<'a>> {
        let mut stages = Vec::with_capacity(layers.len());
        let mut at = sides;
        for layer in layers {
            let stage = Stage::new(layer, at)?;
            at = [stage.out_depth, stage.out_plane[0], stage.out_plane[1]];
            stages.push(stage);
        }
        let first = stages.first()?;
        let inner_planar = stages.iter().skip(1).any(|s| s.layout.planar);
        if !first.layout.planar || inner_planar {
            return None;
        }
        let last = stages.last()?;
        let k = last.layer.c_out;
        let result = vec![0f32; k * last.out_depth * last.out_plane[0] * last.out_plane[1]];
        Some(PlaneStream {
            received: vec![0; stages.len()],
            stages,
            result,
        })
    }

    /// Runs C over `data` (channel-major planes of `data_sides`, zero beyond them up to the
    /// stream's input sides: the padding a prepared scan gets) and returns the activations
    /// (K, sides / f) with each layer's work and time.
    pub fn run(mut self, data: &[f32], data_sides: [usize; 3]) -> Result<(Planes, Vec<LayerWork>)> {
        let first = &self.stages[0];
        let (depth, [h, w]) = (first.in_depth, first.in_plane);
        let channels = first.layout.channels;
        assert!(
            (0..3).all(|a| data_sides[a] <= [depth, h, w][a]),
            "the data fits in the stream's input"
        );
        assert_eq!(data.len(), channels * data_sides.iter().product::<usize>());
        let [dd, dh, dw] = data_sides;
        for z in 0..depth {
            let layout = self.stages[0].layout;
            let mut plane = self.stages[0].blank();
            let p = layout.pad;
            for c in 0..channels {
                for y in 0..h {
                    let row = &mut plane[(c * layout.rows + y + p) * layout.cols + p..][..w];
                    if z < dd && y < dh {
                        let src = ((c * dd + z) * dh + y) * dw;
                        row[..dw].copy_from_slice(&data[src..src + dw]);
                        row[dw..].fill(0.0);
                    } else {
                        row.fill(0.0);
                    }
                }
            }
            self.push(0, z, plane)?;
        }
        for stage in 0..self.stages.len() {
            self.drain(stage)?;
        }
        let last = self.stages.last().expect("a stage");
        let (k, od, [oh, ow]) = (last.layer.c_out, last.out_depth, last.out_plane);
        let work = self
            .stages
            .iter_mut()
            .map(|s| std::mem::take(&mut s.work))
            .collect();
        for stage in self.stages {
            stage
                .ring
                .into_iter()
                .map(|(_, p)| p)
                .chain(stage.spare)
                .for_each(scratch::recycle);
        }
        Ok((
            Planes {
                channels: k,
                sides: [od, oh, ow],
                data: self.result,
            },
            work,
        ))
    }

    /// Input plane `z` of stage `i`; computes every plane that makes ready, down the stack.
    fn push(&mut self, i: usize, z: usize, plane: Vec<f32>) -> Result<()> {
        debug_assert_eq!(z, self.received[i], "planes arrive in order");
        self.stages[i].ring.push_back((z, plane));
        self.received[i] += 1;
        self.drain(i)
    }

    /// Computes the output planes stage `i` can compute now, handing each to the next stage.
    fn drain(&mut self, i: usize) -> Result<()> {
        while self.stages[i].ready(self.received[i]) {
            let oz = self.stages[i].next_out;
            if i + 1 < self.stages.len() {
                let next = &mut self.stages[i + 1];
                let at = next.layout.rows_at();
                let mut out = next.blank();
                self.stages[i].compute(&mut out, at)?;
                self.push(i + 1, oz, out)?;
            } else {
                let stage = &mut self.stages[i];
                let [oh, ow] = stage.out_plane;
                let k = stage.layer.c_out;
                let mut out = scratch::zeroed(oh * ow * k);
                stage.compute(&mut out, RowsAt::bare(ow * k))?;
                // Channels-last plane -> channel-major result.
                let (plane, depth) = (oh * ow, stage.out_depth);
                for (pos, values) in out.chunks_exact(k).enumerate() {
                    for (c, &v) in values.iter().enumerate() {
                        self.result[(c * depth + oz) * plane + pos] = v;
                    }
                }
                scratch::recycle(out);
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::direct::tests::{halving, planes, values};
    use crate::layers::After;

    /// C's stack in 3D (stem 3^3 1 -> 8, halvings 8 -> 16 -> 32, a 1-wide head to 3 with tanh).
    fn c_3d() -> Vec<Conv> {
        vec![
            Conv::stem(values(8 * 27, 1), values(8, 2), 1, 3).unwrap(),
            halving(8, 16, 3),
            halving(16, 32, 3),
            Conv::head(values(3 * 32, 4), values(3, 5), 32, 3).unwrap(),
        ]
    }

    fn whole_pass(layers: &[Conv], x: &Planes) -> Planes {
        let mut y = ChannelsLast::from_planes(x);
        for layer in layers {
            y = layer.forward(&y).unwrap();
        }
        y.to_planes()
    }

    #[test]
    fn a_streamed_volume_equals_the_whole_pass() {
        if !std::arch::is_x86_feature_detected!("avx2") || !std::arch::is_x86_feature_detected!("fma") {
            eprintln!("skipped: no direct kernels on this CPU, nothing streams");
            return;
        }
        let layers = c_3d();
        // Depths not a multiple of the downsampling on the data, padded by the stream.
        for (data_sides, sides) in [([12, 16, 20], [12, 16, 20]), ([9, 13, 20], [12, 16, 24])] {
            let x = planes(1, data_sides, 3);
            let mut padded = Planes {
                channels: 1,
                sides,
                data: vec![0f32; sides.iter().product()],
            };
            crate::tiling::copy_box(
                &x.data,
                data_sides,
                [0; 3],
                &mut padded.data,
                sides,
                [0; 3],
                data_sides,
                1,
            );
            let want = whole_pass(&layers, &padded);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (got, work) = pool.install(|| {
                    PlaneStream::new(&layers, sides)
                        .expect("covered on this CPU")
                        .run(&x.data, data_sides)
                        .unwrap()
                });
                assert_eq!((got.channels, got.sides), (3, sides.map(|s| s / 4)));
                // The two passes sum in different orders (and on another CPU through other
                // kernels): on an AMD EPYC with AVX-512 the padded case differs by 2.9e-5 on
                // activations of magnitude ~1, on the Intel machines by under 1e-5. The test is
                // after misplaced tiles and pads, not rounding.
                for (i, (g, e)) in got.data.iter().zip(&want.data).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4,
                        "{sides:?}, {threads} threads: activation {i}: {g} vs {e}"
                    );
                }
                assert_eq!(work.len(), 4);
                let stem_flops = 2.0 * (27 * 8 * sides.iter().product::<usize>()) as f64;
                assert_eq!(work[0].flops, stem_flops);
                assert!(work.iter().all(|w| w.flops > 0.0));
            }
        }
    }

    #[test]
    fn a_stack_with_an_uncovered_layer_is_not_streamed() {
        let mut layers = c_3d();
        // Output channels not a multiple of a register: no direct kernel.
        layers[1] = Conv::new(
            values(12 * 8 * 64, 3),
            12,
            8,
            4,
            3,
            2,
            After::BiasLeaky(vec![0.0; 12]),
        )
        .unwrap();
        assert!(PlaneStream::new(&layers, [8, 8, 8]).is_none());
        // Nor a stack that does not start with a stem.
        assert!(PlaneStream::new(&c_3d()[1..], [8, 8, 8]).is_none());
    }
}
