//! Running a fully convolutional network over a large volume in tiles whose results equal the
//! whole-volume pass: each tile is computed on its region widened by a halo and only its own
//! part is kept, so memory is bounded by the tile, not by the scan (a 512 x 512 x 274 CT
//! would need about 18 GB for the unfolded input of C's first halving in one piece).
//!
//! Tiles are laid out on the code's grid (one cell = f voxels per axis), the grid both C's
//! output and g's input live on, so a region starts at a multiple of f and every strided layer
//! sees the same positions as in the whole pass. A region's artificial border (zeros where the
//! whole volume has data) disturbs only a few outputs next to it; `disturbed_border` counts
//! them for a layer stack by following exactness through it, and the halo is that many
//! cells. Where a region reaches the volume's real border it sees the same zero padding as
//! the whole pass, so nothing is disturbed there.

use std::ops::Range;

/// One layer as it acts along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisLayer {
    /// A convolution (or a pointwise stage, kernel 1) with symmetric zero padding.
    Conv {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Nearest-neighbour upsampling by a whole factor.
    Upsample(usize),
}

/// Outputs disturbed at either end of a stack's result when its input of `input_len`
/// positions is cut out of a longer line (zeros read beyond both ends instead of data): the
/// larger of the two ends' counts, in output positions.
///
/// # Panics
/// When `input_len` is too short for any output to stay exact (a caller's bug: the halo is
/// measured on a line many cells long).
pub fn disturbed_border(layers: &[AxisLayer], input_len: usize) -> usize {
    let mut exact = vec![true; input_len];
    for layer in layers {
        exact = match *layer {
            AxisLayer::Conv {
                kernel,
                stride,
                padding,
            } => {
                let n = exact.len();
                let out = (n + 2 * padding).saturating_sub(kernel) / stride + 1;
                (0..out)
                    .map(|o| {
                        (0..kernel).all(|t| {
                            (o * stride + t)
                                .checked_sub(padding)
                                .is_some_and(|i| i < n && exact[i])
                        })
                    })
                    .collect()
            }
            AxisLayer::Upsample(u) => (0..exact.len() * u).map(|o| exact[o / u]).collect(),
        };
    }
    let first = exact
        .iter()
        .position(|&e| e)
        .expect("the line is longer than the stack's reach");
    let last = exact.iter().rposition(|&e| e).expect("an exact output exists");
    first.max(exact.len() - 1 - last)
}

/// The halo, in whole code cells, of a stack from a grid of `scale_in` positions per cell to
/// one of `scale_out`: its disturbed border, measured on a line 64 cells long and rounded up
/// to cells.
pub fn halo_cells(layers: &[AxisLayer], scale_in: usize, scale_out: usize) -> usize {
    disturbed_border(layers, 64 * scale_in).div_ceil(scale_out)
}

/// One tile: the code cells it produces (kept) and the cells of the region it is computed on
/// (the kept cells widened by the halo, clipped to the volume), per axis (z, y, x).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    pub kept: [Range<usize>; 3],
    pub region: [Range<usize>; 3],
}

impl Tile {
    /// Cells of the region per axis.
    pub fn region_sides(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.region[a].len())
    }

    /// Where the kept cells start inside the region.
    pub fn kept_offset(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.kept[a].start - self.region[a].start)
    }

    /// Cells kept per axis.
    pub fn kept_sides(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.kept[a].len())
    }
}

/// The tiles that cover a code grid of `cells` with at most `tile` kept cells per axis, each
/// computed with `halo` cells around it.
pub fn tiles(cells: [usize; 3], tile: [usize; 3], halo: usize) -> Vec<Tile> {
    let ranges = |a: usize| -> Vec<Range<usize>> {
        let step = tile[a].max(1);
        (0..cells[a])
            .step_by(step)
            .map(|s| s..(s + step).min(cells[a]))
            .collect()
    };
    let (zs, ys, xs) = (ranges(0), ranges(1), ranges(2));
    let widen = |r: &Range<usize>, a: usize| r.start.saturating_sub(halo)..(r.end + halo).min(cells[a]);
    let mut out = Vec::with_capacity(zs.len() * ys.len() * xs.len());
    for z in &zs {
        for y in &ys {
            for x in &xs {
                let kept = [z.clone(), y.clone(), x.clone()];
                let region = std::array::from_fn(|a| widen(&kept[a], a));
                out.push(Tile { kept, region });
            }
        }
    }
    out
}

/// How a large volume is cut: volumes of at most `whole_max_voxels` (input voxels) run in one
/// piece; larger ones in tiles of `tile_side` voxels per axis (rounded down to whole cells,
/// at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub whole_max_voxels: usize,
    pub tile_side: usize,
}

impl Default for Tiling {
    /// Up to 16 M voxels whole (a few GB for the small preset's C in 3D); beyond, 128-voxel
    /// tiles, whose unfolded inputs stay under about 1.5 GB.
    fn default() -> Self {
        Tiling {
            whole_max_voxels: 1 << 24,
            tile_side: 128,
        }
    }
}

impl Tiling {
    /// Kept cells per tile along each axis for a volume of `voxels` (sides multiples of `f`),
    /// or `None` when it runs whole.
    pub fn tile_cells(&self, voxels: [usize; 3], f: usize) -> Option<[usize; 3]> {
        if voxels.iter().product::<usize>() <= self.whole_max_voxels {
            return None;
        }
        let cells = (self.tile_side / f.max(1)).max(1);
        Some([cells; 3])
    }
}

/// Copies the box `extent` (per axis) from `src` (channel-major, `src_sides` per channel) at
/// `src_start` into `dst` (`dst_sides`) at `dst_start`, for each of `channels` channels.
#[allow(clippy::too_many_arguments)]
pub fn copy_box<T: Copy>(
    src: &[T],
    src_sides: [usize; 3],
    src_start: [usize; 3],
    dst: &mut [T],
    dst_sides: [usize; 3],
    dst_start: [usize; 3],
    extent: [usize; 3],
    channels: usize,
) {
    let (src_plane, dst_plane) = (
        src_sides.iter().product::<usize>(),
        dst_sides.iter().product::<usize>(),
    );
    for c in 0..channels {
        for z in 0..extent[0] {
            for y in 0..extent[1] {
                let s = c * src_plane
                    + ((src_start[0] + z) * src_sides[1] + src_start[1] + y) * src_sides[2]
                    + src_start[2];
                let d = c * dst_plane
                    + ((dst_start[0] + z) * dst_sides[1] + dst_start[1] + y) * dst_sides[2]
                    + dst_start[2];
                dst[d..d + extent[2]].copy_from_slice(&src[s..s + extent[2]]);
            }
        }
    }
}

/// The part of a tile's region that it keeps, at the output's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptBox {
    pub start: [usize; 3],
    pub sides: [usize; 3],
}

/// A fully convolutional stack run over a volume tile by tile: from `input` (channel-major,
/// `in_channels` of `cells * scale_in` per axis) to a result of `out_channels` of
/// `cells * scale_out` per axis, each tile computed on its region widened by `halo` cells
/// (at least the stack's disturbed border) and cut back to the cells it keeps.
#[derive(Clone, Copy, Debug)]
pub struct TiledPass<'a> {
    pub input: &'a [f32],
    pub in_channels: usize,
    pub cells: [usize; 3],
    pub scale_in: [usize; 3],
    pub scale_out: [usize; 3],
    pub out_channels: usize,
    pub tile: [usize; 3],
    pub halo: usize,
}

impl TiledPass<'_> {
    fn sides(&self, scale: [usize; 3]) -> [usize; 3] {
        std::array::from_fn(|a| self.cells[a] * scale[a])
    }

    /// A tile's region of the input and its sides.
    fn region(&self, t: &Tile) -> (Vec<f32>, [usize; 3]) {
        let rs = t.region_sides();
        let sides: [usize; 3] = std::array::from_fn(|a| rs[a] * self.scale_in[a]);
        let mut region = vec![0f32; self.in_channels * sides.iter().product::<usize>()];
        copy_box(
            self.input,
            self.sides(self.scale_in),
            std::array::from_fn(|a| t.region[a].start * self.scale_in[a]),
            &mut region,
            sides,
            [0; 3],
            sides,
            self.in_channels,
        );
        (region, sides)
    }

    /// Copies the kept part of a tile's `result` (over its whole region) into `out`.
    fn place(&self, t: &Tile, result: &[f32], out: &mut [f32]) {
        let rs = t.region_sides();
        let (offset, kept) = (t.kept_offset(), t.kept_sides());
        copy_box(
            result,
            std::array::from_fn(|a| rs[a] * self.scale_out[a]),
            std::array::from_fn(|a| offset[a] * self.scale_out[a]),
            out,
            self.sides(self.scale_out),
            std::array::from_fn(|a| t.kept[a].start * self.scale_out[a]),
            std::array::from_fn(|a| kept[a] * self.scale_out[a]),
            self.out_channels,
        );
    }

    fn output(&self) -> Vec<f32> {
        vec![0f32; self.out_channels * self.sides(self.scale_out).iter().product::<usize>()]
    }

    /// One tile after another (`pass` takes a region and its sides).
    pub fn run<E>(
        &self,
        mut pass: impl FnMut(&[f32], [usize; 3]) -> Result<Vec<f32>, E>,
    ) -> Result<Vec<f32>, E> {
        let mut out = self.output();
        for t in tiles(self.cells, self.tile, self.halo) {
            let (region, sides) = self.region(&t);
            let result = pass(&region, sides)?;
            self.place(&t, &result, &mut out);
        }
        Ok(out)
    }

    /// One tile after another, for a stack that computes only what it keeps: `pass` takes a
    /// region, its sides and the kept box inside it at the output's scale (start and sides per
    /// axis) and returns the kept box alone. The halo still bounds what the pass may read;
    /// the work on it shrinks to what each layer's kernel reaches.
    pub fn run_kept<E>(
        &self,
        mut pass: impl FnMut(&[f32], [usize; 3], KeptBox) -> Result<Vec<f32>, E>,
    ) -> Result<Vec<f32>, E> {
        let mut out = self.output();
        for t in tiles(self.cells, self.tile, self.halo) {
            let (region, sides) = self.region(&t);
            let (offset, kept) = (t.kept_offset(), t.kept_sides());
            let kept_box = KeptBox {
                start: std::array::from_fn(|a| offset[a] * self.scale_out[a]),
                sides: std::array::from_fn(|a| kept[a] * self.scale_out[a]),
            };
            let result = pass(&region, sides, kept_box)?;
            copy_box(
                &result,
                kept_box.sides,
                [0; 3],
                &mut out,
                self.sides(self.scale_out),
                std::array::from_fn(|a| t.kept[a].start * self.scale_out[a]),
                kept_box.sides,
                self.out_channels,
            );
        }
        Ok(out)
    }

    /// Tiles spread over the current rayon pool's threads: independent, so a pool of n
    /// threads keeps n tiles in flight (and n tiles' memory).
    pub fn run_parallel<E: Send>(
        &self,
        pass: impl Fn(&[f32], [usize; 3]) -> Result<Vec<f32>, E> + Sync,
    ) -> Result<Vec<f32>, E> {
        use rayon::prelude::*;
        let out = std::sync::Mutex::new(self.output());
        tiles(self.cells, self.tile, self.halo)
            .par_iter()
            .try_for_each(|t| {
                let (region, sides) = self.region(t);
                let result = pass(&region, sides)?;
                self.place(t, &result, &mut out.lock().expect("no tile panicked"));
                Ok(())
            })?;
        Ok(out.into_inner().expect("no tile panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn conv(kernel: usize, stride: usize, padding: usize) -> AxisLayer {
        AxisLayer::Conv {
            kernel,
            stride,
            padding,
        }
    }

    #[test]
    fn disturbed_borders_by_hand() {
        // A 3-wide "same" conv reads one zero at each end: one output disturbed.
        assert_eq!(disturbed_border(&[conv(3, 1, 1)], 10), 1);
        // Two of them: two.
        assert_eq!(disturbed_border(&[conv(3, 1, 1), conv(3, 1, 1)], 10), 2);
        // Pointwise stages disturb nothing.
        assert_eq!(disturbed_border(&[conv(1, 1, 0)], 10), 0);
        // C's stack (stem, four 4-wide halvings, 1-wide head): the first cell at each end.
        let c = [
            conv(3, 1, 1),
            conv(4, 2, 1),
            conv(4, 2, 1),
            conv(4, 2, 1),
            conv(4, 2, 1),
            conv(1, 1, 0),
        ];
        assert_eq!(disturbed_border(&c, 16 * 12), 1);
        // g's (entry conv, then upsample and conv four times, output conv): 2 cells at f 16.
        let mut g = vec![conv(3, 1, 1)];
        for _ in 0..4 {
            g.extend([AxisLayer::Upsample(2), conv(3, 1, 1)]);
        }
        g.push(conv(3, 1, 1));
        assert_eq!(disturbed_border(&g, 12), 32);
    }

    #[test]
    fn tiles_cover_the_grid_once_and_stay_inside() {
        let cells = [3, 7, 5];
        let ts = tiles(cells, [2, 3, 5], 1);
        assert_eq!(ts.len(), 2 * 3);
        let mut seen = [0u8; 3 * 7 * 5];
        for t in &ts {
            for ((region, kept), side) in t.region.iter().zip(&t.kept).zip(cells) {
                assert!(region.start <= kept.start && kept.end <= region.end);
                assert!(region.end <= side);
                // The halo is one cell wherever the grid has room.
                assert_eq!(kept.start - region.start, kept.start.min(1));
            }
            for z in t.kept[0].clone() {
                for y in t.kept[1].clone() {
                    for x in t.kept[2].clone() {
                        seen[(z * 7 + y) * 5 + x] += 1;
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every cell kept exactly once");
    }

    /// A 1D-separable box filter of width 3 ("same" zero padding) along every axis, then a
    /// stride-2 sum of pairs: a stack whose disturbed border is known and whose whole result is
    /// easy to compute.
    fn blur_then_halve(x: &[f32], sides: [usize; 3]) -> Vec<f32> {
        let at = |v: &[f32], s: [usize; 3], p: [isize; 3]| -> f32 {
            if (0..3).any(|a| p[a] < 0 || p[a] >= s[a] as isize) {
                0.0
            } else {
                v[(p[0] as usize * s[1] + p[1] as usize) * s[2] + p[2] as usize]
            }
        };
        let mut blurred = vec![0f32; x.len()];
        for z in 0..sides[0] {
            for y in 0..sides[1] {
                for xx in 0..sides[2] {
                    let mut acc = 0.0;
                    for d in [
                        [-1, 0, 0],
                        [1, 0, 0],
                        [0, -1, 0],
                        [0, 1, 0],
                        [0, 0, -1],
                        [0, 0, 1],
                        [0, 0, 0],
                    ] {
                        acc += at(
                            x,
                            sides,
                            [z as isize + d[0], y as isize + d[1], xx as isize + d[2]],
                        );
                    }
                    blurred[(z * sides[1] + y) * sides[2] + xx] = acc;
                }
            }
        }
        let half = sides.map(|s| s / 2);
        let mut out = vec![0f32; half.iter().product()];
        for z in 0..half[0] {
            for y in 0..half[1] {
                for xx in 0..half[2] {
                    out[(z * half[1] + y) * half[2] + xx] = blurred
                        [((2 * z) * sides[1] + 2 * y) * sides[2] + 2 * xx]
                        + blurred[((2 * z + 1) * sides[1] + 2 * y + 1) * sides[2] + 2 * xx + 1];
                }
            }
        }
        out
    }

    #[test]
    fn tiled_results_equal_the_whole_pass_with_the_measured_halo_and_differ_without() {
        let cells = [5, 6, 7];
        let sides = cells.map(|c| c * 2);
        let x: Vec<f32> = (0..sides.iter().product::<usize>())
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let whole = blur_then_halve(&x, sides);
        let stack = [conv(3, 1, 1), conv(2, 2, 0)];
        let halo = disturbed_border(&stack, 40);
        assert_eq!(halo, 1);
        let pass = |halo| TiledPass {
            input: &x,
            in_channels: 1,
            cells,
            scale_in: [2; 3],
            scale_out: [1; 3],
            out_channels: 1,
            tile: [2, 2, 3],
            halo,
        };
        let run = |halo| pass(halo).run::<()>(|r, s| Ok(blur_then_halve(r, s))).unwrap();
        assert_eq!(run(halo), whole);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let parallel = pool.install(|| pass(halo).run_parallel::<()>(|r, s| Ok(blur_then_halve(r, s))));
        assert_eq!(parallel.unwrap(), whole, "tiles in parallel");
        assert_ne!(run(0), whole, "without a halo the tiles' borders show");
    }

    #[test]
    fn tiling_applies_only_above_the_whole_limit() {
        let t = Tiling {
            whole_max_voxels: 1000,
            tile_side: 64,
        };
        assert_eq!(t.tile_cells([10, 10, 10], 4), None);
        assert_eq!(t.tile_cells([10, 10, 11], 4), Some([16; 3]));
        assert_eq!(t.tile_cells([100, 100, 100], 128), Some([1; 3]));
    }
}
