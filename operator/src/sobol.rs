//! A low-discrepancy sampler for continuous search spaces: the Sobol sequence (Joe and Kuo's
//! primitive polynomials and initial direction numbers, "new-joe-kuo-6.21201", for the first
//! dimensions), randomised by a seeded digital shift, which keeps the sequence's
//! stratification: the first 2^m points put exactly one point in each of 2^m equal intervals of
//! every coordinate, where independent draws leave gaps and clumps.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (degree s, coefficients a, initial direction numbers m_1..m_s) of dimensions 2, 3, ...
const DIRECTIONS: [(u32, u32, &[u32]); 12] = [
    (1, 0, &[1]),
    (2, 1, &[1, 3]),
    (3, 1, &[1, 3, 1]),
    (3, 2, &[1, 1, 1]),
    (4, 1, &[1, 1, 3, 3]),
    (4, 4, &[1, 3, 5, 13]),
    (5, 2, &[1, 1, 5, 5, 17]),
    (5, 4, &[1, 1, 5, 5, 5]),
    (5, 7, &[1, 1, 7, 11, 19]),
    (5, 11, &[1, 1, 5, 1, 1]),
    (5, 13, &[1, 1, 1, 3, 11]),
    (5, 14, &[1, 3, 5, 5, 31]),
];

/// Dimensions available: one more than the table (the first is the van der Corput sequence).
pub const MAX_DIMENSIONS: usize = DIRECTIONS.len() + 1;
const BITS: usize = 32;

/// A Sobol sequence over `dims` coordinates with a seeded digital shift.
pub struct Sobol {
    /// Direction numbers per dimension, v[d][i] for bit i.
    v: Vec<[u32; BITS]>,
    shift: Vec<u32>,
    index: u32,
}

impl Sobol {
    /// `dims` must not exceed `MAX_DIMENSIONS` (the sweepable parameters are fewer).
    pub fn new(dims: usize, seed: u64) -> Sobol {
        assert!(
            dims <= MAX_DIMENSIONS,
            "Sobol: {dims} dimensions, at most {MAX_DIMENSIONS}"
        );
        let mut v = Vec::with_capacity(dims);
        for d in 0..dims {
            let mut dir = [0u32; BITS];
            if d == 0 {
                for (i, x) in dir.iter_mut().enumerate() {
                    *x = 1 << (BITS - 1 - i);
                }
            } else {
                let (s, a, m) = DIRECTIONS[d - 1];
                let s = s as usize;
                for i in 0..BITS {
                    dir[i] = if i < s {
                        m[i] << (BITS - 1 - i)
                    } else {
                        let mut x = dir[i - s] ^ (dir[i - s] >> s);
                        for k in 1..s {
                            if (a >> (s - 1 - k)) & 1 == 1 {
                                x ^= dir[i - k];
                            }
                        }
                        x
                    };
                }
            }
            v.push(dir);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shift = (0..dims).map(|_| rng.random::<u32>()).collect();
        Sobol { v, shift, index: 0 }
    }

    /// The next point, each coordinate in (0, 1).
    pub fn next_point(&mut self) -> Vec<f64> {
        let n = self.index;
        self.index = self.index.wrapping_add(1);
        self.v
            .iter()
            .zip(&self.shift)
            .map(|(dir, shift)| {
                let mut x = 0u32;
                for (bit, d) in dir.iter().enumerate() {
                    if (n >> bit) & 1 == 1 {
                        x ^= d;
                    }
                }
                // The centre of the point's cell: never exactly 0 or 1.
                ((x ^ shift) as f64 + 0.5) / 4_294_967_296.0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_length_two_to_the_m_stratifies_every_coordinate() {
        for seed in [0, 7] {
            let mut s = Sobol::new(MAX_DIMENSIONS, seed);
            let points: Vec<Vec<f64>> = (0..1024).map(|_| s.next_point()).collect();
            for m in 1..=10 {
                let n = 1usize << m;
                for d in 0..MAX_DIMENSIONS {
                    let mut seen = vec![false; n];
                    for p in &points[..n] {
                        let cell = (p[d] * n as f64) as usize;
                        assert!(
                            !seen[cell],
                            "seed {seed}, dim {d}: two of the first {n} points in cell {cell}"
                        );
                        seen[cell] = true;
                    }
                }
            }
        }
    }

    /// Without the shift, the well-known start of the sequence: (1/2, 1/2), (3/4, 1/4),
    /// (1/4, 3/4), (3/8, 3/8), ... in its natural (not Gray-code) order.
    #[test]
    fn the_unshifted_sequence_starts_as_published() {
        let mut s = Sobol::new(2, 0);
        s.shift = vec![0, 0];
        let pts: Vec<Vec<f64>> = (0..5).map(|_| s.next_point()).collect();
        let want = [[0.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.75, 0.25], [0.125, 0.625]];
        for (p, w) in pts.iter().zip(want) {
            assert!(
                (p[0] - w[0]).abs() < 1e-9 && (p[1] - w[1]).abs() < 1e-9,
                "{pts:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_points_other_seed_other_points() {
        let take = |seed| {
            let mut s = Sobol::new(3, seed);
            (0..16).map(|_| s.next_point()).collect::<Vec<_>>()
        };
        assert_eq!(take(1), take(1));
        assert_ne!(take(1), take(2));
    }
}
