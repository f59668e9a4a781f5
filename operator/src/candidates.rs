//! The candidate trials of an Experiment: which variant with which parameter values, in a fixed
//! order. Pure and deterministic: the same spec always gives the same list.
//!
//! A parameter is only varied for the variants it affects (lambdaRate changes nothing in D1-D3),
//! so a sweep never trains the same configuration twice. With `maxTrials` below the number of
//! candidates, variants take turns so that every variant is represented.

use std::collections::BTreeMap;

use orchestra_api::{affects, ExperimentSpec, Sampling, SearchSpace, Variant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sobol::Sobol;

#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Trial name: `<experiment>-<variant>-<nnn>`.
    pub name: String,
    pub variant: Variant,
    /// Swept parameter values (only those that affect the variant).
    pub params: BTreeMap<String, f64>,
}

/// The `i`-th value grid search takes from a space (`i` below its `grid_len`): computed, never
/// listed, so that a space of billions of points costs nothing until its values are taken.
fn grid_value(space: &SearchSpace, i: u64) -> f64 {
    match space {
        SearchSpace::List { values } => values[i as usize],
        SearchSpace::Uniform { min, max, points } => spaced(*min, *max, points.unwrap_or(1), i, |x| x, |x| x),
        SearchSpace::LogUniform { min, max, points } => {
            spaced(*min, *max, points.unwrap_or(1), i, f64::ln, f64::exp)
        }
        SearchSpace::IntRange { min, step, .. } => {
            min.saturating_add((i as i64).saturating_mul((*step).max(1))) as f64
        }
    }
}

fn spaced(min: f64, max: f64, points: u32, i: u64, to: fn(f64) -> f64, from: fn(f64) -> f64) -> f64 {
    let points = points as u64;
    match i {
        _ if points <= 1 => from((to(min) + to(max)) / 2.0),
        // Exact endpoints: a user who writes min: 0.0001 gets 0.0001, not 0.00010000000000000009.
        0 => min,
        i if i == points - 1 => max,
        i => from(to(min) + (to(max) - to(min)) * i as f64 / (points - 1) as f64),
    }
}

/// One variant's candidates in order, generated as they are taken.
fn variant_candidates<'a>(
    spec: &'a ExperimentSpec,
    vi: usize,
    variant: Variant,
) -> Box<dyn Iterator<Item = BTreeMap<String, f64>> + 'a> {
    let relevant: Vec<(&String, &SearchSpace)> =
        spec.search.iter().filter(|(p, _)| affects(p, variant)).collect();
    let mix = |seed: u64| seed ^ (vi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match spec.algorithm.sampling() {
        Sampling::Grid { shuffle } => {
            // Combination j in mixed radix: the last parameter (in name order) varies fastest.
            let radices: Vec<u64> = relevant.iter().map(|(_, s)| s.grid_len().unwrap_or(0)).collect();
            let total = radices.iter().fold(1u64, |acc, &r| acc.saturating_mul(r));
            let order = shuffle.map(|seed| Permutation::new(total, mix(seed)));
            Box::new((0..total).map(move |i| {
                let j = order.as_ref().map_or(i, |p| p.at(i));
                let mut rest = j;
                let mut params = BTreeMap::new();
                for ((param, space), &radix) in relevant.iter().zip(&radices).rev() {
                    params.insert((*param).clone(), grid_value(space, rest % radix));
                    rest /= radix;
                }
                params
            }))
        }
        Sampling::Random { seed, samples } => {
            if relevant.is_empty() {
                return Box::new(std::iter::once(BTreeMap::new()));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed));
            Box::new((0..samples).map(move |_| {
                relevant
                    .iter()
                    .map(|(p, s)| ((*p).clone(), sample(s, rng.random::<f64>())))
                    .collect()
            }))
        }
        Sampling::Sobol { seed, samples } => {
            if relevant.is_empty() {
                return Box::new(std::iter::once(BTreeMap::new()));
            }
            let mut sobol = Sobol::new(relevant.len(), mix(seed));
            Box::new((0..samples).map(move |_| {
                let u = sobol.next_point();
                relevant
                    .iter()
                    .zip(u)
                    .map(|((p, s), u)| ((*p).clone(), sample(s, u)))
                    .collect()
            }))
        }
    }
}

/// A seeded permutation of 0..n, computed index by index (no list): i -> (a i + b) mod n with a
/// coprime to n, so that a shuffled grid of any size costs nothing until its points are taken.
struct Permutation {
    n: u64,
    a: u64,
    b: u64,
}

impl Permutation {
    fn new(n: u64, seed: u64) -> Permutation {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n1 = n.max(1);
        let b = rng.random_range(0..n1);
        let mut a = rng.random_range(0..n1) | 1;
        while gcd(a, n1) != 1 {
            a = (a + 2) % n1.max(2);
            if a == 0 {
                a = 1;
            }
        }
        Permutation { n: n1, a, b }
    }

    fn at(&self, i: u64) -> u64 {
        ((self.a as u128 * i as u128 + self.b as u128) % self.n as u128) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The value of a space at `u` in [0, 1): a uniform draw (random search) or a coordinate of a
/// low-discrepancy point (Sobol) maps to a value the same way.
fn sample(space: &SearchSpace, u: f64) -> f64 {
    let u = u.clamp(0.0, 1.0);
    // One of `count` values, counted without overflow whatever a range's ends.
    let pick = |count: u64| ((u * count as f64) as u64).min(count.saturating_sub(1));
    match space {
        SearchSpace::List { values } => values[pick(values.len() as u64) as usize],
        SearchSpace::Uniform { min, max, .. } => (min + (max - min) * u).clamp(*min, *max),
        SearchSpace::LogUniform { min, max, .. } => {
            (min.ln() + (max.ln() - min.ln()) * u).exp().clamp(*min, *max)
        }
        SearchSpace::IntRange { .. } => grid_value(space, pick(space.grid_len().unwrap_or(1).max(1))),
    }
}

/// Every candidate of the Experiment `name`, in planning order, at most `maxTrials`: only the
/// candidates taken are generated, so memory follows the trials, not the size of the space.
pub fn candidates(name: &str, spec: &ExperimentSpec) -> Vec<Candidate> {
    let mut per_variant: Vec<_> = spec
        .variants
        .iter()
        .enumerate()
        .map(|(vi, &variant)| variant_candidates(spec, vi, variant))
        .collect();
    let limit = spec.max_trials.map_or(usize::MAX, |m| m as usize);
    // Round-robin over variants: candidate k of every variant before candidate k + 1 of any.
    let mut out = Vec::new();
    for k in 0.. {
        let mut any = false;
        for (vi, combos) in per_variant.iter_mut().enumerate() {
            if out.len() >= limit {
                return out;
            }
            if let Some(params) = combos.next() {
                any = true;
                let variant = spec.variants[vi];
                out.push(Candidate {
                    name: format!("{name}-{}-{k:03}", variant.to_string().to_lowercase()),
                    variant,
                    params,
                });
            }
        }
        if !any {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml_search: &str, algorithm: &str) -> ExperimentSpec {
        let text = format!(
            "dataset: synthetic://lesion\nmodel: {{ inputSize: 64 }}\nvariants: [D1, D2, D3, D4]\nsteps: 10\nstore: memory://x\nsearch: {yaml_search}\nalgorithm: {algorithm}\n"
        );
        serde_yaml::from_str(&text).unwrap()
    }

    #[test]
    fn grid_varies_each_parameter_only_where_it_matters() {
        let s = spec(
            "{ lambdaRate: { type: list, values: [0.1, 1.0] } }",
            "{ type: grid }",
        );
        let c = candidates("q", &s);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["q-d1-000", "q-d2-000", "q-d3-000", "q-d4-000", "q-d4-001"]
        );
        assert!(c[0].params.is_empty());
        assert_eq!(c[4].params["lambdaRate"], 1.0);
    }

    #[test]
    fn grid_takes_the_product_and_spaces_continuous_ranges() {
        let s = spec(
            "{ lr: { type: logUniform, min: 0.0001, max: 0.01, points: 3 }, batchSize: { type: intRange, min: 4, max: 8, step: 4 } }",
            "{ type: grid }",
        );
        let c: Vec<Candidate> = candidates("g", &s)
            .into_iter()
            .filter(|c| c.variant == Variant::D2)
            .collect();
        assert_eq!(c.len(), 6);
        let lrs: Vec<f64> = c.iter().map(|c| c.params["lr"]).collect();
        // batchSize is the outer loop (parameters in name order), lr the inner one.
        assert_eq!((lrs[0], lrs[2], lrs[3]), (1e-4, 1e-2, 1e-4), "{lrs:?}");
        assert!((lrs[1] - 1e-3).abs() < 1e-15, "{lrs:?}");
        assert_eq!(c[0].params["batchSize"], 4.0);
        assert_eq!(c[3].params["batchSize"], 8.0);
    }

    #[test]
    fn random_search_is_seeded_and_within_bounds() {
        let s = spec(
            "{ wDis: { type: uniform, min: 0.1, max: 0.5 } }",
            "{ type: random, seed: 3, samples: 4 }",
        );
        let a = candidates("r", &s);
        assert_eq!(a, candidates("r", &s));
        // D2 has no relevant parameter: one candidate; D1, D3, D4 get 4 each.
        assert_eq!(a.len(), 13);
        assert!(a
            .iter()
            .filter_map(|c| c.params.get("wDis"))
            .all(|w| (0.1..0.5).contains(w)));
    }

    #[test]
    fn sobol_fills_the_space_and_a_shuffled_grid_is_the_grid() {
        let s = spec(
            "{ lr: { type: logUniform, min: 0.0001, max: 0.01 }, wDis: { type: uniform, min: 0.1, max: 0.5 } }",
            "{ type: sobol, seed: 4, samples: 16 }",
        );
        let d3: Vec<Candidate> = candidates("s", &s)
            .into_iter()
            .filter(|c| c.variant == Variant::D3)
            .collect();
        assert_eq!(d3.len(), 16);
        assert_eq!(
            d3,
            candidates("s", &s)
                .into_iter()
                .filter(|c| c.variant == Variant::D3)
                .collect::<Vec<_>>()
        );
        // Sixteen points: one in each sixteenth of wDis's range, and of lr's on a log scale.
        for (param, to_unit) in [
            (
                "wDis",
                Box::new(|x: f64| (x - 0.1) / 0.4) as Box<dyn Fn(f64) -> f64>,
            ),
            (
                "lr",
                Box::new(|x: f64| (x.ln() - 1e-4f64.ln()) / (1e-2f64.ln() - 1e-4f64.ln())),
            ),
        ] {
            let mut cells: Vec<usize> = d3
                .iter()
                .map(|c| (to_unit(c.params[param]) * 16.0) as usize)
                .collect();
            cells.sort();
            assert_eq!(cells, (0..16).collect::<Vec<_>>(), "{param}");
        }
        let grid =
            "{ lr: { type: list, values: [1, 2, 3, 4, 5] }, wDis: { type: list, values: [0.1, 0.2, 0.3] } }";
        let plain = candidates("g", &spec(grid, "{ type: grid }"));
        let shuffled = candidates(
            "g",
            &spec(
                grid,
                "{ type: asha, sampler: grid, seed: 9, eta: 3, minSteps: 2 }",
            ),
        );
        let key = |c: &Candidate| format!("{}{:?}", c.variant, c.params);
        let (mut a, mut b): (Vec<String>, Vec<String>) = (
            plain.iter().map(key).collect(),
            shuffled.iter().map(key).collect(),
        );
        assert_ne!(a, b, "the order is shuffled");
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same points");
    }

    #[test]
    fn max_trials_keeps_every_variant() {
        let mut s = spec(
            "{ lr: { type: list, values: [0.1, 0.2, 0.3] } }",
            "{ type: grid }",
        );
        s.max_trials = Some(5);
        let c = candidates("m", &s);
        let variants: Vec<Variant> = c.iter().map(|c| c.variant).collect();
        assert_eq!(
            variants,
            [Variant::D1, Variant::D2, Variant::D3, Variant::D4, Variant::D1]
        );
    }
}
