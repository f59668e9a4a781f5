//! Timings of the pure parts at scale: planning a 10,000-trial sweep, ranking 10,000 results and
//! ordering 10,000 trials at a rung for promotion.

use std::collections::BTreeMap;
use std::time::Instant;

use orchestra_api::{
    ExperimentSpec, Objective, ParamCounts, RateScores, SegmentationScores, Timings, TrialPhase, TrialResult,
    Variant,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::leaderboard::{rank, Finished};
use crate::observed::ObservedTrial;
use crate::planner::{plan, PlannerConfig};
use orchestra_report::pareto::pareto_order;

#[derive(Serialize)]
pub struct PlannerBench {
    pub trials: usize,
    /// The first plan of a new sweep (creates up to the parallelism).
    pub plan_new_ms: f64,
    /// A plan with every trial observed, half of them finished.
    pub plan_observed_ms: f64,
    pub rank_ms: f64,
    pub front_size: usize,
    /// Pareto promotion order at one rung (non-dominated sorting, then greedy hypervolume
    /// picks within each layer) of the same scores, and of as many scores all on one front
    /// (the most a layer can hold).
    pub promotion_order_ms: f64,
    pub promotion_order_one_front_ms: f64,
}

impl PlannerBench {
    pub fn to_markdown(&self) -> String {
        format!(
            "| operation ({} trials) | ms |\n|---|---|\n| plan, new sweep | {:.2} |\n| plan, all observed | {:.2} |\n| rank + Pareto front + hypervolume | {:.2} |\n\
             | Pareto promotion order at a rung | {:.2} |\n| Pareto promotion order, all on one front | {:.2} |\n\nfront: {} trials",
            self.trials,
            self.plan_new_ms,
            self.plan_observed_ms,
            self.rank_ms,
            self.promotion_order_ms,
            self.promotion_order_one_front_ms,
            self.front_size
        )
    }
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

/// A finished D4 trial's result with the given rate and Dice and nothing measured beside them:
/// what the benchmarks rank, and what `bench-cluster`'s fake workers leave in the store.
pub fn synthetic_result(experiment: &str, trial: &str, steps: u64, bpp: f64, dice: f64) -> TrialResult {
    TrialResult {
        experiment: experiment.into(),
        trial: trial.into(),
        variant: Variant::D4,
        steps,
        scores: SegmentationScores {
            dice,
            iou: dice / (2.0 - dice),
            dice_per_class: vec![dice],
            iou_per_class: vec![],
            images: 100,
        },
        rate: Some(RateScores::estimated(192, 0.0117, bpp)),
        source_bits_per_pixel: 24.0,
        params: ParamCounts::default(),
        timings: Timings::default(),
        hyper: Default::default(),
        teachers: Vec::new(),
    }
}

/// A Dice that rises with the rate as a trained D4's does (0.6 at no rate, about 0.9 at 0.05
/// bpp), plus `noise`.
pub fn synthetic_dice(bpp: f64, noise: f64) -> f64 {
    (0.6 + 0.3 * (bpp / 0.05).sqrt() + noise).clamp(0.0, 1.0)
}

/// `trials` finished D4 trials whose Dice rises with their rate, with noise (seed 7).
fn synthetic_results(trials: usize) -> Vec<Finished> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..trials)
        .map(|i| {
            let bpp: f64 = rng.random_range(0.001..0.05);
            let dice = synthetic_dice(bpp, rng.random_range(-0.05..0.05));
            Finished {
                result: synthetic_result("bench", &format!("bench-d4-{i:05}"), 100, bpp, dice),
                params: BTreeMap::from([("lambdaRate".to_string(), bpp)]),
            }
        })
        .collect()
}

pub fn planner_and_leaderboard(trials: usize) -> PlannerBench {
    let text = format!(
        "dataset: synthetic://lesion\nmodel: {{ inputSize: 128 }}\nvariants: [D4]\nsteps: 100\nstore: memory://b\n\
         parallelism: 64\nalgorithm: {{ type: random, seed: 1, samples: {trials} }}\n\
         search: {{ lambdaRate: {{ type: logUniform, min: 0.001, max: 1.0 }}, lr: {{ type: logUniform, min: 0.0001, max: 0.01 }} }}\n"
    );
    let spec: ExperimentSpec = serde_yaml::from_str(&text).expect("bench spec parses");
    let cfg = PlannerConfig::default();
    let (plan_new_ms, _) = best_of(5, || plan("bench", &spec, &[], 0, &cfg));
    let observed: Vec<ObservedTrial> = crate::candidates::candidates("bench", &spec)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let phase = if i % 2 == 0 {
                TrialPhase::Succeeded
            } else {
                TrialPhase::Pending
            };
            ObservedTrial::new(&c.name, phase, 1, 0)
        })
        .collect();
    let (plan_observed_ms, _) = best_of(5, || plan("bench", &spec, &observed, 0, &cfg));

    let finished = synthetic_results(trials);
    let objective = Objective {
        bpp_budget: Some(0.01),
        reference_bpp: 0.05,
        mode: None,
    };
    let (rank_ms, lb) = best_of(5, || rank("bench", &finished, &objective));
    let scores: Vec<(f64, f64)> = finished
        .iter()
        .map(|f| {
            let rate = f.result.rate.as_ref().expect("every bench result has a rate");
            (rate.bpp.unwrap_or(rate.bpp_estimate), f.result.scores.dice)
        })
        .collect();
    let by_index = |a: usize, b: usize| a.cmp(&b);
    let (promotion_order_ms, _) = best_of(5, || pareto_order(&scores, 0.05, by_index));
    let one_front: Vec<(f64, f64)> = (0..trials)
        .map(|i| {
            let x = (i + 1) as f64 / (trials + 1) as f64;
            (0.05 * x, x.sqrt())
        })
        .collect();
    let (promotion_order_one_front_ms, _) = best_of(5, || pareto_order(&one_front, 0.05, by_index));
    PlannerBench {
        trials,
        plan_new_ms,
        plan_observed_ms,
        rank_ms,
        front_size: lb.front.len(),
        promotion_order_ms,
        promotion_order_one_front_ms,
    }
}
