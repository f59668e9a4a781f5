//! Resampling a scan to a target voxel spacing, as nnU-Net does before training: scans from
//! different scanners (ACDC's in-plane spacing runs from 1.3 to 1.7 mm) reach C and s at one
//! physical scale, so a structure has the same size in voxels in every scan.
//!
//! The resampled grid covers the scan's extent exactly: along each axis it has
//! `round(side x spacing / target)` voxels (at least one), so the spacing reached is the
//! target up to that rounding, and the grid is defined by the two sides alone. The cloud
//! therefore derives it from the stream's geometry (sides and affine) and the model's target,
//! with no more bytes on the wire than the target itself.
//!
//! Scans are resampled one axis at a time. Where an axis shrinks, each new voxel is the mean of
//! the source voxels it covers, weighted by overlap (a box filter: no aliasing, and for a whole
//! ratio exactly the block mean of `preparation::block_mean`); where it grows, linear
//! interpolation between voxel centres. Labels take the source voxel nearest to each new
//! voxel's centre, in both directions (a prediction is brought back to the scan's voxels the
//! same way).

/// Sides of a scan (sides, spacing in mm) resampled to `target` mm.
pub fn resampled_sides(sides: [usize; 3], spacing: [f32; 3], target: [f32; 3]) -> [usize; 3] {
    std::array::from_fn(|a| {
        let n = (sides[a] as f64 * spacing[a] as f64 / target[a] as f64).round();
        // Bounded by the caller's checks (positive finite spacings, a voxel limit on sides);
        // the clamp keeps a wild ratio from overflowing.
        n.clamp(1.0, (sides[a] as f64) * 64.0 + 1.0) as usize
    })
}

/// A z-major scan resampled from `sides` to `to` (box filter down, linear up, per axis).
pub fn resample_scan(voxels: &[f32], sides: [usize; 3], to: [usize; 3]) -> Vec<f32> {
    debug_assert_eq!(voxels.len(), sides.iter().product::<usize>());
    let mut current = voxels.to_vec();
    let mut shape = sides;
    // x first: the axis with the most voxels per row, shrinking the data soonest.
    for axis in [2, 1, 0] {
        if shape[axis] == to[axis] {
            continue;
        }
        let weights = axis_weights(shape[axis], to[axis]);
        let mut next_shape = shape;
        next_shape[axis] = to[axis];
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut next = vec![0f32; outer * to[axis] * inner];
        for o in 0..outer {
            let src = &current[o * shape[axis] * inner..(o + 1) * shape[axis] * inner];
            let dst = &mut next[o * to[axis] * inner..(o + 1) * to[axis] * inner];
            for (i, taps) in weights.iter().enumerate() {
                let row = &mut dst[i * inner..(i + 1) * inner];
                for &(j, w) in taps {
                    for (d, s) in row.iter_mut().zip(&src[j * inner..(j + 1) * inner]) {
                        *d += w * s;
                    }
                }
            }
        }
        current = next;
        shape = next_shape;
    }
    current
}

/// For each of `m` new voxels along an axis of `n`, the source voxels and their weights
/// (summing to one).
fn axis_weights(n: usize, m: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n as f64 / m as f64;
    (0..m)
        .map(|i| {
            if m < n {
                // The new voxel covers [i, i + 1) x scale of the source axis.
                let (start, end) = (i as f64 * scale, (i + 1) as f64 * scale);
                let mut taps = Vec::new();
                let mut j = start.floor() as usize;
                while (j as f64) < end && j < n {
                    let overlap = (end.min(j as f64 + 1.0) - start.max(j as f64)).max(0.0);
                    if overlap > 0.0 {
                        taps.push((j, (overlap / scale) as f32));
                    }
                    j += 1;
                }
                taps
            } else {
                // Centre of the new voxel in source voxel coordinates, clamped to the outer
                // centres (no extrapolation).
                let c = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (n - 1) as f64);
                let j = c.floor() as usize;
                let t = c - j as f64;
                if t == 0.0 || j + 1 >= n {
                    vec![(j, 1.0)]
                } else {
                    vec![(j, (1.0 - t) as f32), (j + 1, t as f32)]
                }
            }
        })
        .collect()
}

/// Index of the source voxel (of `n`) nearest to new voxel `i`'s centre (of `m`).
fn nearest(i: usize, n: usize, m: usize) -> usize {
    // (i + 1/2) n / m in integers: exact, so that whole ratios pick the same voxel as
    // `preparation::block_centre` and `expand_labels`.
    (((2 * i + 1) * n) / (2 * m)).min(n - 1)
}

/// z-major labels from `sides` to `to`, each new voxel taking the label nearest its centre.
pub fn resample_labels(labels: &[u8], sides: [usize; 3], to: [usize; 3]) -> Vec<u8> {
    debug_assert_eq!(labels.len(), sides.iter().product::<usize>());
    if sides == to {
        return labels.to_vec();
    }
    let index = |a: usize| -> Vec<usize> { (0..to[a]).map(|i| nearest(i, sides[a], to[a])).collect() };
    let (zs, ys, xs) = (index(0), index(1), index(2));
    let mut out = Vec::with_capacity(to.iter().product());
    for &z in &zs {
        for &y in &ys {
            let row = &labels[(z * sides[1] + y) * sides[2]..][..sides[2]];
            out.extend(xs.iter().map(|&x| row[x]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preparation::{block_centre, block_mean, expand_labels};

    fn ramp(sides: [usize; 3]) -> Vec<f32> {
        let mut v = Vec::new();
        for z in 0..sides[0] {
            for y in 0..sides[1] {
                for x in 0..sides[2] {
                    v.push(3.0 * z as f32 - 2.0 * y as f32 + 0.5 * x as f32 + ((x * y) % 5) as f32);
                }
            }
        }
        v
    }

    #[test]
    fn sides_follow_the_physical_extent() {
        // ACDC-like: 10 slices of 10 mm, 216 x 256 at 1.5625 mm, to 10 x 3 x 3 mm.
        assert_eq!(
            resampled_sides([10, 216, 256], [10.0, 1.5625, 1.5625], [10.0, 3.0, 3.0]),
            [10, 113, 133]
        );
        // Upsampling an axis, and a tiny scan keeps one voxel.
        assert_eq!(
            resampled_sides([4, 8, 8], [5.0, 1.0, 1.0], [2.5, 1.0, 4.0]),
            [8, 8, 2]
        );
        assert_eq!(
            resampled_sides([1, 2, 2], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]),
            [1, 1, 1]
        );
    }

    #[test]
    fn whole_ratios_equal_block_means_and_block_centres() {
        let sides = [4, 6, 10];
        let v = ramp(sides);
        let to = [2, 3, 5];
        let (block_sides, blocks) = block_mean(&v, sides, [2, 2, 2]);
        assert_eq!(block_sides, to);
        let resampled = resample_scan(&v, sides, to);
        for (a, b) in resampled.iter().zip(&blocks) {
            assert!((a - b).abs() < 1e-5, "{a} against the block mean {b}");
        }
        let labels: Vec<u8> = (0..240).map(|i| (i * 7 % 11) as u8).collect();
        let small = resample_labels(&labels, sides, to);
        assert_eq!(small, block_centre(&labels, sides, [2, 2, 2]).1);
        for f in [2, 3] {
            let small_sides = [2, 2, 2];
            let big = [2 * f, 2 * f, 2 * f];
            let s: Vec<u8> = (0..8).collect();
            assert_eq!(
                resample_labels(&s, small_sides, big),
                expand_labels(&s, small_sides, big, [f, f, f])
            );
        }
    }

    #[test]
    fn shrinking_keeps_the_mean_and_growing_is_linear() {
        // A box filter over a non-whole ratio keeps the scan's mean (each source voxel's
        // weights over the new voxels sum to m / n).
        let sides = [5, 7, 9];
        let v = ramp(sides);
        let to = [3, 4, 4];
        let r = resample_scan(&v, sides, to);
        let mean = |x: &[f32]| x.iter().map(|&a| a as f64).sum::<f64>() / x.len() as f64;
        assert!(
            (mean(&r) - mean(&v)).abs() < 1e-4,
            "{} against {}",
            mean(&r),
            mean(&v)
        );
        // A linear ramp along x, upsampled 2x: inside the outer centres the new voxels lie on
        // the ramp exactly.
        let line: Vec<f32> = (0..6).map(|x| 2.0 * x as f32 + 1.0).collect();
        let up = resample_scan(&line, [1, 1, 6], [1, 1, 12]);
        for (i, u) in up.iter().enumerate().skip(1).take(10) {
            let x = (i as f32 + 0.5) / 2.0 - 0.5;
            assert!((u - (2.0 * x + 1.0)).abs() < 1e-5, "voxel {i}: {u}");
        }
        assert_eq!((up[0], up[11]), (1.0, 11.0), "clamped to the outer centres");
        // A constant stays constant in every direction.
        let c = resample_scan(&[4.0; 60], [3, 4, 5], [5, 2, 7]);
        assert!(c.iter().all(|&x| (x - 4.0).abs() < 1e-6));
    }

    #[test]
    fn labels_go_there_and_back() {
        // Down by a non-whole ratio (20 -> 13) and back up: every label that comes back is one
        // that was there, and a voxel comes back wrong only next to the region's border (the
        // coarse grid cannot place a border finer than its own voxel).
        let sides = [6, 20, 20];
        let inside = |y: usize, x: usize| (5..15).contains(&y) && (4..16).contains(&x);
        let mut labels = vec![0u8; 2400];
        for z in 0..6 {
            for y in 0..20 {
                for x in 0..20 {
                    labels[(z * 20 + y) * 20 + x] = if inside(y, x) { 2 } else { 0 };
                }
            }
        }
        let to = [6, 13, 13];
        let small = resample_labels(&labels, sides, to);
        let back = resample_labels(&small, to, sides);
        assert!(back.iter().all(|&l| l == 0 || l == 2));
        let mut wrong = 0;
        for z in 0..6 {
            for y in 0..20usize {
                for x in 0..20usize {
                    let i = (z * 20 + y) * 20 + x;
                    if back[i] != labels[i] {
                        wrong += 1;
                        let near_border = [(0, 1), (2, 1), (1, 0), (1, 2)].iter().any(|&(dy, dx)| {
                            let (ny, nx) = ((y + dy).wrapping_sub(1), (x + dx).wrapping_sub(1));
                            ny < 20 && nx < 20 && inside(ny, nx) != inside(y, x)
                        });
                        assert!(near_border, "voxel ({z}, {y}, {x}) is wrong away from the border");
                    }
                }
            }
        }
        assert!(wrong > 0 && wrong < 2400 / 10, "{wrong} wrong voxels");
    }
}
