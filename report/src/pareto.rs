//! Pareto geometry over (bits per pixel, Dice), bpp down and Dice up: the front, its
//! hypervolume, the layers of non-dominated sorting, and each point's exclusive hypervolume
//! contribution. The leaderboard ranks finished trials with them; the search ranks trials at a
//! rung with them.

use std::cmp::Ordering;

/// Indices of the Pareto-optimal points (no other point has lower-or-equal bpp and
/// higher-or-equal Dice with one strictly better), by increasing bpp. O(n log n).
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            front.push(i);
            best = points[i].1;
        }
    }
    front
}

/// Area dominated by `front` (by increasing bpp) within [0, reference] x [0, 1].
pub fn hypervolume(points: &[(f64, f64)], front: &[usize], reference: f64) -> f64 {
    let mut area = 0.0;
    let mut below = 0.0;
    for &i in front {
        let (bpp, dice) = points[i];
        if bpp >= reference {
            break;
        }
        let dice = dice.clamp(0.0, 1.0);
        if dice > below {
            area += (reference - bpp) * (dice - below);
            below = dice;
        }
    }
    area
}

/// Whether `a` dominates `b`: no worse in both, better in one.
pub fn dominates(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 <= b.0 && a.1 >= b.1 && (a.0 < b.0 || a.1 > b.1)
}

/// The layer of each point under non-dominated sorting: 0 for the front, 1 for the front of
/// the rest, and so on. Equal points share a layer; points with a non-finite coordinate come
/// after every layer. O(n log n): in bpp order, a point joins the first layer that does not
/// dominate it, found by bisection (a layer that dominates a point has every layer before it
/// dominate it too).
pub fn nondominated_layers(points: &[(f64, f64)]) -> Vec<usize> {
    let finite = |i: usize| points[i].0.is_finite() && points[i].1.is_finite();
    let mut order: Vec<usize> = (0..points.len()).filter(|&i| finite(i)).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    // Per layer: its best Dice so far and the lowest bpp at which it was reached.
    let mut best: Vec<(f64, f64)> = Vec::new();
    let mut layer = vec![usize::MAX; points.len()];
    for i in order {
        let (bpp, dice) = points[i];
        let dominated_by = |l: usize| {
            let (d, at) = best[l];
            d > dice || (d == dice && at < bpp)
        };
        let (mut lo, mut hi) = (0, best.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if dominated_by(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == best.len() {
            best.push((dice, bpp));
        } else if dice > best[lo].0 {
            best[lo] = (dice, bpp);
        }
        layer[i] = lo;
    }
    let after = best.len();
    layer
        .iter()
        .map(|&l| if l == usize::MAX { after } else { l })
        .collect()
}

/// Each point's exclusive contribution to the hypervolume of the points of its own layer
/// (`layers` as `nondominated_layers` gives them) within [0, reference] x [0, 1]: the area
/// that only it dominates. Equal points share their area, so each contributes nothing.
pub fn hypervolume_contributions(points: &[(f64, f64)], layers: &[usize], reference: f64) -> Vec<f64> {
    let mut contribution = vec![0.0; points.len()];
    let Some(&top) = layers.iter().max() else {
        return contribution;
    };
    for l in 0..=top {
        let mut members: Vec<usize> = (0..points.len())
            .filter(|&i| layers[i] == l && points[i].0.is_finite() && points[i].1.is_finite())
            .collect();
        // Along a layer bpp and Dice rise together.
        members.sort_by(|&a, &b| {
            points[a]
                .0
                .total_cmp(&points[b].0)
                .then(points[a].1.total_cmp(&points[b].1))
        });
        for (k, &i) in members.iter().enumerate() {
            let (bpp, dice) = points[i];
            let same = |j: usize| points[j] == points[i];
            if bpp >= reference || members.iter().filter(|&&j| same(j)).count() > 1 {
                continue;
            }
            let next_bpp = members[k + 1..]
                .first()
                .map_or(reference, |&j| points[j].0.min(reference));
            let below = k
                .checked_sub(1)
                .map_or(0.0, |p| points[members[p]].1.clamp(0.0, 1.0));
            let width = (next_bpp - bpp).max(0.0);
            let height = (dice.clamp(0.0, 1.0) - below).max(0.0);
            contribution[i] = width * height;
        }
    }
    contribution
}

/// Promotion order of points under Pareto ranking: by layer, then by larger hypervolume
/// contribution, then by lower bpp; `tie` breaks what remains (trial names).
pub fn pareto_order(
    points: &[(f64, f64)],
    reference: f64,
    tie: impl Fn(usize, usize) -> Ordering,
) -> Vec<usize> {
    let layers = nondominated_layers(points);
    let contribution = hypervolume_contributions(points, &layers, reference);
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        layers[a]
            .cmp(&layers[b])
            .then(contribution[b].total_cmp(&contribution[a]))
            .then(points[a].0.total_cmp(&points[b].0))
            .then_with(|| tie(a, b))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_hypervolume(points: &[(f64, f64)], reference: f64) -> f64 {
        hypervolume(points, &pareto_front(points), reference)
    }

    #[test]
    fn layers_by_hand() {
        // a dominates b; c is on the front; d dominates nothing and nothing dominates it; e
        // equals a; f has a NaN.
        let p = [
            (0.004, 0.80),
            (0.006, 0.78),
            (0.010, 0.85),
            (0.002, 0.60),
            (0.004, 0.80),
            (f64::NAN, 0.9),
            (0.020, 0.50),
        ];
        let layers = nondominated_layers(&p);
        // g (0.02, 0.5) is dominated by b, which is dominated by a: layer 2.
        assert_eq!(layers, vec![0, 1, 0, 0, 0, 3, 2]);
    }

    #[test]
    fn contributions_by_hand() {
        let p = [(0.002, 0.60), (0.004, 0.80), (0.010, 0.85), (0.2, 0.95)];
        let layers = nondominated_layers(&p);
        assert_eq!(layers, vec![0, 0, 0, 0]);
        let c = hypervolume_contributions(&p, &layers, 0.1);
        let expected = [
            (0.004 - 0.002) * 0.60,
            (0.010 - 0.004) * (0.80 - 0.60),
            (0.1 - 0.010) * (0.85 - 0.80),
            0.0, // beyond the reference rate
        ];
        for (got, want) in c.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{c:?}");
        }
        // Duplicates share their area: each adds nothing alone.
        let d = [(0.004, 0.8), (0.004, 0.8)];
        assert_eq!(
            hypervolume_contributions(&d, &nondominated_layers(&d), 0.1),
            vec![0.0, 0.0]
        );
        // Promotion order: the front by contribution (0.0045, 0.0012, 0.0006), then the layer
        // below.
        let q = [(0.003, 0.60), (0.004, 0.80), (0.010, 0.85), (0.006, 0.70)];
        assert_eq!(pareto_order(&q, 0.1, |a, b| a.cmp(&b)), vec![2, 1, 0, 3]);
    }

    /// Checked against the definitions on many small random sets: a point's layer is one more
    /// than the highest layer among the points that dominate it, and its contribution is the
    /// hypervolume lost when it is removed from its layer.
    #[test]
    fn layers_and_contributions_match_their_definitions() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64 / 1000.0
        };
        for case in 0..400 {
            let n = 1 + case % 12;
            // Coarse values, so that ties and equal points are common.
            let p: Vec<(f64, f64)> = (0..n)
                .map(|_| ((next() * 10.0).floor() / 80.0, (next() * 10.0).floor() / 10.0))
                .collect();
            let layers = nondominated_layers(&p);
            for i in 0..n {
                let want = (0..n)
                    .filter(|&j| dominates(p[j], p[i]))
                    .map(|j| layers[j] + 1)
                    .max()
                    .unwrap_or(0);
                assert_eq!(layers[i], want, "{p:?}");
            }
            let c = hypervolume_contributions(&p, &layers, 0.1);
            for i in 0..n {
                let layer: Vec<(f64, f64)> =
                    (0..n).filter(|&j| layers[j] == layers[i]).map(|j| p[j]).collect();
                let without: Vec<(f64, f64)> = (0..n)
                    .filter(|&j| layers[j] == layers[i] && j != i)
                    .map(|j| p[j])
                    .collect();
                let lost = all_hypervolume(&layer, 0.1) - all_hypervolume(&without, 0.1);
                assert!((c[i] - lost).abs() < 1e-12, "{p:?} point {i}: {} vs {lost}", c[i]);
            }
        }
    }
}
