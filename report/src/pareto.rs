//! Pareto geometry over (bits per pixel, Dice), bpp down and Dice up: the front, its
//! hypervolume, the layers of non-dominated sorting, and the order in which greedy hypervolume
//! selection picks the points of a layer. The leaderboard ranks finished trials with them; the
//! search ranks trials at a rung with them.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};

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

/// Within each layer (`layers` as `nondominated_layers` gives them), the order in which greedy
/// hypervolume subset selection picks the points, and the area each adds when it is picked:
/// first the point that dominates the most area alone within [0, reference] x [0, 1], then
/// each time the one that adds the most to the area of those picked before it.
///
/// Why not each point's exclusive contribution to its whole layer: two close points near the
/// best trade-off each add almost nothing the other does not, so both would rank last and a
/// promotion of the top k could drop the trade-off entirely. Greedy picks keep one of them
/// first, and the top k of the order dominate at least (1 - 1/e) of the best area any k points
/// of the layer can (the hypervolume is submodular).
///
/// Ties (equal gains, equal points) go to the lower bpp, then to `tie`. Points beyond the
/// reference or with a non-finite coordinate add nothing. Lazy greedy: a point's gain only
/// shrinks as others are picked, so a stale gain is an upper bound and is recomputed only when
/// it reaches the top of the queue; in a layer, a point's gain depends only on its picked
/// neighbours along the layer, found in a sorted set.
pub fn greedy_hypervolume_picks(
    points: &[(f64, f64)],
    layers: &[usize],
    reference: f64,
    tie: impl Fn(usize, usize) -> Ordering,
) -> Vec<(usize, f64)> {
    let finite = |i: usize| points[i].0.is_finite() && points[i].1.is_finite();
    // One total order for every tie, independent of the order of `points`.
    let mut by_bpp: Vec<usize> = (0..points.len()).collect();
    by_bpp.sort_by(|&a, &b| {
        let bpp = |i: usize| if finite(i) { points[i].0 } else { f64::INFINITY };
        bpp(a).total_cmp(&bpp(b)).then_with(|| tie(a, b))
    });
    let mut tie_rank = vec![0; points.len()];
    for (r, &i) in by_bpp.iter().enumerate() {
        tie_rank[i] = r;
    }
    let mut picks = vec![(0, 0.0); points.len()];
    let Some(&top) = layers.iter().max() else {
        return picks;
    };
    for l in 0..=top {
        // Along a layer bpp and Dice rise together.
        let members: Vec<usize> = by_bpp.iter().copied().filter(|&i| layers[i] == l).collect();
        let dice = |i: usize| {
            if finite(i) {
                points[i].1.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let mut picked: BTreeSet<usize> = BTreeSet::new();
        let gain = |picked: &BTreeSet<usize>, k: usize| {
            let i = members[k];
            if !finite(i) || points[i].0 >= reference {
                return 0.0;
            }
            let right = picked
                .range(k + 1..)
                .next()
                .map_or(reference, |&r| points[members[r]].0.min(reference));
            let below = picked.range(..k).next_back().map_or(0.0, |&p| dice(members[p]));
            let area = (right - points[i].0) * (dice(i) - below);
            // Never negative, and never -0.0, which would sort below the other zeros.
            if area > 0.0 {
                area
            } else {
                0.0
            }
        };
        let mut queue: BinaryHeap<(Gain, Reverse<usize>, usize)> = (0..members.len())
            .map(|k| (Gain(gain(&picked, k)), Reverse(tie_rank[members[k]]), k))
            .collect();
        let mut order = 0;
        while let Some((_, rank, k)) = queue.pop() {
            let fresh = gain(&picked, k);
            let still_first = queue
                .peek()
                .is_none_or(|next| (Gain(fresh), rank) >= (next.0, next.1));
            if !still_first {
                queue.push((Gain(fresh), rank, k));
                continue;
            }
            picks[members[k]] = (order, fresh);
            order += 1;
            picked.insert(k);
        }
    }
    picks
}

/// A gain as a totally ordered key.
#[derive(Clone, Copy)]
struct Gain(f64);

impl PartialEq for Gain {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Gain {}

impl PartialOrd for Gain {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Gain {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Promotion order of points under Pareto ranking: by layer, then in the order greedy
/// hypervolume selection picks them within the layer (`greedy_hypervolume_picks`); `tie`
/// breaks what remains (trial names).
pub fn pareto_order(
    points: &[(f64, f64)],
    reference: f64,
    tie: impl Fn(usize, usize) -> Ordering,
) -> Vec<usize> {
    let layers = nondominated_layers(points);
    let picks = greedy_hypervolume_picks(points, &layers, reference, &tie);
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| layers[a].cmp(&layers[b]).then(picks[a].0.cmp(&picks[b].0)));
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
    fn greedy_picks_by_hand() {
        let by_index = |a: usize, b: usize| a.cmp(&b);
        // c is cheap and poor; a is the best trade-off; b is a hair above a in both. Each of a
        // and b adds little beside the other (exclusive contributions would rank c, a, b and
        // promote c alone), but a alone dominates the most: a, then c, then b.
        let (c, a, b) = ((0.002, 0.10), (0.010, 0.85), (0.0101, 0.851));
        let p = [c, a, b];
        let layers = nondominated_layers(&p);
        assert_eq!(layers, vec![0, 0, 0]);
        let picks = greedy_hypervolume_picks(&p, &layers, 0.02, by_index);
        let expected = [
            (1, (0.010 - 0.002) * 0.10),
            (0, 0.010 * 0.85),
            (2, (0.02 - 0.0101) * (0.851 - 0.85)),
        ];
        for (got, want) in picks.iter().zip(expected) {
            assert_eq!(got.0, want.0, "{picks:?}");
            assert!((got.1 - want.1).abs() < 1e-15, "{picks:?}");
        }
        assert_eq!(pareto_order(&p, 0.02, by_index), vec![1, 0, 2]);
        // Duplicates: the first adds its area, the second nothing; beyond the reference rate
        // nothing either.
        let d = [(0.004, 0.8), (0.004, 0.8), (0.2, 0.95)];
        let picks = greedy_hypervolume_picks(&d, &nondominated_layers(&d), 0.1, by_index);
        assert_eq!(picks[0].0, 0);
        assert!((picks[0].1 - 0.096 * 0.8).abs() < 1e-15);
        assert_eq!(&picks[1..], &[(1, 0.0), (2, 0.0)]);
        // Promotion order: the front in greedy order (alone 0.0768; then 0.0045 beside it;
        // then 0.0006), then the layer below.
        let q = [(0.003, 0.60), (0.004, 0.80), (0.010, 0.85), (0.006, 0.70)];
        assert_eq!(pareto_order(&q, 0.1, by_index), vec![1, 2, 0, 3]);
        // The order does not depend on the order of the input, only on `tie`.
        let names = ["w", "x", "y", "z"];
        let named_order = |pts: &[(f64, f64)], names: &[&'static str]| -> Vec<&'static str> {
            pareto_order(pts, 0.1, |a, b| names[a].cmp(names[b]))
                .iter()
                .map(|&i| names[i])
                .collect()
        };
        let forward = named_order(&q, &names);
        let rev: Vec<(f64, f64)> = q.iter().rev().copied().collect();
        let reversed_names: Vec<&str> = names.iter().rev().copied().collect();
        let backward = named_order(&rev, &reversed_names);
        assert_eq!(forward, backward);
    }

    /// Checked against the definitions on many small random sets: a point's layer is one more
    /// than the highest layer among the points that dominate it; within a layer, each pick adds
    /// to the area of the points picked before it exactly its gain, and no point left adds
    /// more.
    #[test]
    fn layers_and_greedy_picks_match_their_definitions() {
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
            let picks = greedy_hypervolume_picks(&p, &layers, 0.1, |a, b| a.cmp(&b));
            for l in 0..=layers.iter().copied().max().unwrap_or(0) {
                let mut members: Vec<usize> = (0..n).filter(|&j| layers[j] == l).collect();
                members.sort_by_key(|&j| picks[j].0);
                let order: Vec<usize> = members.iter().map(|&j| picks[j].0).collect();
                assert_eq!(order, (0..members.len()).collect::<Vec<_>>(), "{p:?}");
                let area = |set: &[usize]| {
                    let pts: Vec<(f64, f64)> = set.iter().map(|&j| p[j]).collect();
                    all_hypervolume(&pts, 0.1)
                };
                for k in 0..members.len() {
                    let before = area(&members[..k]);
                    let gain_of = |j: usize| {
                        let mut with = members[..k].to_vec();
                        with.push(j);
                        area(&with) - before
                    };
                    let i = members[k];
                    assert!(
                        (picks[i].1 - gain_of(i)).abs() < 1e-12,
                        "{p:?} pick {k}: {picks:?}"
                    );
                    for &j in &members[k + 1..] {
                        assert!(gain_of(j) <= picks[i].1 + 1e-12, "{p:?} pick {k}: {j} adds more");
                    }
                }
            }
        }
    }
}
