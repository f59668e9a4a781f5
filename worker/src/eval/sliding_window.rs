//! Whole-volume inference by sliding window, as nnU-Net does it: windows of the training patch
//! size with a given overlap (0.5), each window's class scores weighted by a Gaussian centred
//! on the window (sigma = 1/8 of its side) so that predictions near a window's border, which
//! see less context, count less; windows handed to the network in batches; the weighted sums
//! divided by the summed weights. Memory is bounded: one score accumulator per class and one
//! weight per voxel, plus one batch of windows.
//!
//! The network is a closure (windows in, scores out), so the tiling and the weighting are tested
//! without a model and the same code serves libtorch on the CPU or a GPU.

/// Corners of the windows along one axis: evenly spaced, the first at 0 and the last flush
/// with the end, consecutive ones overlapping by at least `overlap` of the window.
pub fn positions(side: usize, window: usize, overlap: f64) -> Vec<usize> {
    if side <= window {
        return vec![0];
    }
    let stride = ((window as f64) * (1.0 - overlap.clamp(0.0, 0.95)))
        .floor()
        .max(1.0);
    let steps = (((side - window) as f64) / stride).ceil() as usize;
    (0..=steps)
        .map(|i| ((i as f64) * (side - window) as f64 / steps as f64).round() as usize)
        .collect()
}

/// The Gaussian importance of each voxel of a window (z-major), 1 at the centre, never below a
/// small floor (a voxel covered by one window border only still gets a prediction).
pub fn gaussian_weights(window: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let sigma = n as f64 / 8.0;
        let centre = (n as f64 - 1.0) / 2.0;
        (0..n)
            .map(|i| {
                let d = i as f64 - centre;
                (-d * d / (2.0 * sigma * sigma).max(1e-12)).exp()
            })
            .collect()
    };
    let (wz, wy, wx) = (axis(window[0]), axis(window[1]), axis(window[2]));
    let mut w = Vec::with_capacity(window.iter().product());
    for z in &wz {
        for y in &wy {
            for x in &wx {
                w.push(((z * y * x) as f32).max(1e-3));
            }
        }
    }
    w
}

/// How to slide.
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindow {
    /// Window sides (z, y, x); a volume smaller along an axis is padded with `pad_value`.
    pub window: [usize; 3],
    pub overlap: f64,
    /// Windows per call of the network.
    pub batch: usize,
    pub pad_value: f32,
}

impl SlidingWindow {
    /// Every window's corner (z, y, x), z-major.
    pub fn corners(&self, sides: [usize; 3]) -> Vec<[usize; 3]> {
        let win = self.window;
        let (pz, py, px) = (
            positions(sides[0], win[0], self.overlap),
            positions(sides[1], win[1], self.overlap),
            positions(sides[2], win[2], self.overlap),
        );
        let mut corners = Vec::with_capacity(pz.len() * py.len() * px.len());
        for &z in &pz {
            for &y in &py {
                for &x in &px {
                    corners.push([z, y, x]);
                }
            }
        }
        corners
    }

    /// The rows of a window at `corner` that fall inside a volume of `sides`: (offset of the
    /// row in the window, offset in the volume, voxels inside). A window is copied and its
    /// scores added back row by row, not voxel by voxel (no index arithmetic per voxel).
    fn rows(
        &self,
        corner: [usize; 3],
        sides: [usize; 3],
    ) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let win = self.window;
        let len = win[2].min(sides[2].saturating_sub(corner[2]));
        let zs = win[0].min(sides[0].saturating_sub(corner[0]));
        let ys = win[1].min(sides[1].saturating_sub(corner[1]));
        (0..zs).flat_map(move |z| {
            (0..ys).map(move |y| {
                let volume_row = ((corner[0] + z) * sides[1] + corner[1] + y) * sides[2] + corner[2];
                ((z * win[1] + y) * win[2], volume_row, len)
            })
        })
    }

    /// Class scores of every voxel of `volume` (sides z, y, x), `classes` per voxel, class-major
    /// (`scores[c * voxels + i]`). `forward` gets a batch of windows (each z-major, window
    /// voxels long, concatenated) and returns their scores (per window, class-major).
    pub fn run(
        &self,
        volume: &[f32],
        sides: [usize; 3],
        classes: usize,
        mut forward: impl FnMut(&[f32], usize) -> Vec<f32>,
    ) -> Vec<f32> {
        let voxels: usize = sides.iter().product();
        assert_eq!(
            volume.len(),
            voxels,
            "volume of {} voxels for sides {sides:?}",
            volume.len()
        );
        let per_window: usize = self.window.iter().product();
        let weights = gaussian_weights(self.window);
        let mut sums = vec![0f32; classes * voxels];
        let mut norm = vec![0f32; voxels];
        let corners = self.corners(sides);
        let mut input = Vec::new();
        for group in corners.chunks(self.batch.max(1)) {
            input.clear();
            input.resize(group.len() * per_window, self.pad_value);
            for (w, &corner) in group.iter().enumerate() {
                let window = &mut input[w * per_window..(w + 1) * per_window];
                for (at, from, len) in self.rows(corner, sides) {
                    window[at..at + len].copy_from_slice(&volume[from..from + len]);
                }
            }
            let out = forward(&input, group.len());
            assert_eq!(
                out.len(),
                group.len() * classes * per_window,
                "the network returned {} scores for {} windows of {per_window} voxels and {classes} classes",
                out.len(),
                group.len()
            );
            for (w, &corner) in group.iter().enumerate() {
                let scores = &out[w * classes * per_window..(w + 1) * classes * per_window];
                for (at, to, len) in self.rows(corner, sides) {
                    let g = &weights[at..at + len];
                    for (n, g) in norm[to..to + len].iter_mut().zip(g) {
                        *n += g;
                    }
                    for c in 0..classes {
                        let s = &scores[c * per_window + at..c * per_window + at + len];
                        let sum = &mut sums[c * voxels + to..c * voxels + to + len];
                        for ((sum, s), g) in sum.iter_mut().zip(s).zip(g) {
                            *sum += g * s;
                        }
                    }
                }
            }
        }
        for class in sums.chunks_mut(voxels) {
            for (s, n) in class.iter_mut().zip(&norm) {
                *s /= n;
            }
        }
        sums
    }
}

/// The class of each voxel: the highest score (ties to the lower class).
pub fn argmax(scores: &[f32], classes: usize) -> Vec<u8> {
    let voxels = scores.len() / classes.max(1);
    (0..voxels)
        .map(|v| {
            (0..classes)
                .fold((0usize, f32::NEG_INFINITY), |best, c| {
                    let s = scores[c * voxels + v];
                    if s > best.1 {
                        (c, s)
                    } else {
                        best
                    }
                })
                .0 as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network whose scores at a voxel depend on that voxel alone: (v, 1 - v).
    fn pointwise(input: &[f32], windows: usize) -> Vec<f32> {
        let per = input.len() / windows;
        let mut out = Vec::with_capacity(2 * input.len());
        for w in 0..windows {
            let x = &input[w * per..(w + 1) * per];
            out.extend(x.iter().copied());
            out.extend(x.iter().map(|v| 1.0 - v));
        }
        out
    }

    fn volume(sides: [usize; 3]) -> Vec<f32> {
        (0..sides.iter().product::<usize>())
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn windows_cover_every_voxel_evenly_and_end_flush() {
        assert_eq!(positions(10, 16, 0.5), vec![0]);
        assert_eq!(positions(16, 16, 0.5), vec![0]);
        assert_eq!(positions(40, 16, 0.5), vec![0, 8, 16, 24]);
        let p = positions(37, 16, 0.5);
        assert_eq!((p[0], *p.last().unwrap()), (0, 21));
        assert!(
            p.windows(2).all(|w| w[1] - w[0] <= 8),
            "{p:?}: at least half overlap"
        );
        let w = gaussian_weights([4, 8, 8]);
        let peak = w.iter().cloned().fold(0.0, f32::max);
        assert!(w.iter().all(|&x| x >= 1e-3 && x <= peak));
        assert!(
            w[0] < w[(2 * 8 + 4) * 8 + 4],
            "the border counts less than the centre"
        );
    }

    /// With one window covering the volume, the result is the network's output on the volume
    /// itself (the weights divide out).
    #[test]
    fn one_window_equals_one_forward_pass() {
        let sides = [6, 10, 12];
        let v = volume(sides);
        let sw = SlidingWindow {
            window: sides,
            overlap: 0.5,
            batch: 4,
            pad_value: 0.0,
        };
        let mut calls = 0;
        let out = sw.run(&v, sides, 2, |x, n| {
            calls += 1;
            pointwise(x, n)
        });
        assert_eq!(calls, 1);
        let direct = pointwise(&v, 1);
        for (a, b) in out.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// Overlapping windows of a per-voxel network give the per-voxel answer everywhere (a
    /// weighted mean of equal values), whatever the tiling, the padding and the batch size.
    #[test]
    fn overlapping_windows_average_back_to_the_per_voxel_answer() {
        let sides = [5, 23, 30];
        let v = volume(sides);
        for (window, batch) in [([4, 8, 8], 3), ([8, 16, 16], 1), ([3, 7, 11], 64)] {
            let sw = SlidingWindow {
                window,
                overlap: 0.5,
                batch,
                pad_value: -5.0,
            };
            let out = sw.run(&v, sides, 2, pointwise);
            let direct = pointwise(&v, 1);
            for (i, (a, b)) in out.iter().zip(&direct).enumerate() {
                assert!((a - b).abs() < 1e-5, "window {window:?}, score {i}: {a} vs {b}");
            }
            assert_eq!(argmax(&out, 2), argmax(&direct, 2));
        }
    }
}
