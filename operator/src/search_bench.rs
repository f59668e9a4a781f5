//! The search benchmark (`orchestra bench-search`): real learning curves, recorded once from a
//! sweep's store, replayed through the real planner under each search algorithm. Each replay is
//! a discrete-event simulation of `parallelism` workers in which a trial trains one step per
//! time unit; the planner decides every start, promotion and stop exactly as it would for the
//! runners, and a trial that reaches a step target gets the recorded scores at that step. What
//! is measured: the hypervolume of the trials trained to `steps` against the trial-steps spent.

use std::collections::BTreeMap;

use orchestra_api::{ExperimentPhase, ExperimentSpec, RungScore, TrialPhase, TrialSpec, Variant};
use orchestra_report::pareto::{hypervolume, pareto_front};
use orchestra_store::layout::{self, ExperimentKeys};
use orchestra_store::Store;
use serde::{Deserialize, Serialize};

use crate::observed::ObservedTrial;
use crate::planner::{plan, PlannerConfig};
use crate::results::{self, ResultsError};
use crate::runner::Runner;

/// The learning curves of one sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// The sweep they come from, and how it was run.
    pub experiment: String,
    pub dataset: String,
    pub steps: u64,
    pub trials: Vec<RecordedTrial>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedTrial {
    pub trial: String,
    pub variant: Variant,
    pub params: BTreeMap<String, f64>,
    /// (step, real-bitstream bpp, Dice) at every evaluation on the validation split.
    pub curve: Vec<(u64, f64, f64)>,
}

impl RecordedTrial {
    fn at(&self, step: u64) -> Option<RungScore> {
        self.curve
            .iter()
            .find(|c| c.0 == step)
            .map(|&(step, bpp, dice)| RungScore { step, bpp, dice })
    }
}

/// Reads the curves of every finished trial of `experiment`: its rung records, or for workers
/// that predate them, the evaluation lines of `metrics.jsonl` (the same scores).
pub fn record(store: &Store, experiment: &str) -> Result<Recording, ResultsError> {
    let exp = layout::read_experiment(store, experiment)?.ok_or_else(|| ResultsError::Corrupt {
        key: ExperimentKeys::new(experiment).spec(),
        reason: "no such experiment in the store".into(),
    })?;
    let mut trials = Vec::new();
    for f in results::read_finished(store, experiment)? {
        let keys = ExperimentKeys::new(experiment).trial(&f.result.trial);
        let mut curve: Vec<(u64, f64, f64)> = layout::read_rungs(store, &keys)?
            .iter()
            .map(|r| (r.step, r.bpp(), r.scores.dice))
            .collect();
        if curve.is_empty() {
            let text = store.get(&keys.metrics())?.unwrap_or_default();
            for line in String::from_utf8_lossy(&text).lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let (Some(step), Some(eval)) = (v["step"].as_u64(), v.get("eval")) else {
                    continue;
                };
                let dice = eval["scores"]["dice"].as_f64();
                let bpp = eval["rate"]["bpp"]
                    .as_f64()
                    .or(eval["rate"]["bppEstimate"].as_f64());
                if let (Some(dice), Some(bpp)) = (dice, bpp) {
                    curve.push((step, bpp, dice));
                }
            }
        }
        curve.sort_by_key(|c| c.0);
        curve.dedup_by_key(|c| c.0);
        trials.push(RecordedTrial {
            trial: f.result.trial.clone(),
            variant: f.result.variant,
            params: f.params,
            curve,
        });
    }
    Ok(Recording {
        experiment: experiment.to_string(),
        dataset: exp.spec.dataset.clone(),
        steps: exp.spec.steps,
        trials,
    })
}

/// One search algorithm as the benchmark runs it.
#[derive(Clone, Debug)]
pub struct Method {
    pub name: &'static str,
    /// `spec.algorithm` and `spec.objective` (YAML flow maps); `{seed}` is replaced.
    pub algorithm: String,
    pub objective: String,
    /// Whether the seed changes anything (grid order does not).
    pub seeded: bool,
}

/// The methods compared: grid and random search train every trial to the end; ASHA ranks by
/// Dice under a bpp budget; Hyperband, the median rule and Pareto ASHA rank by the front.
pub fn methods(reference_bpp: f64, bpp_budget: f64, min_steps: u64, eta: u32, samples: u32) -> Vec<Method> {
    let pareto = format!("{{ mode: pareto, referenceBpp: {reference_bpp} }}");
    let budget = format!("{{ mode: budget, bppBudget: {bpp_budget}, referenceBpp: {reference_bpp} }}");
    vec![
        Method {
            name: "grid",
            algorithm: "{ type: grid }".into(),
            objective: pareto.clone(),
            seeded: false,
        },
        Method {
            name: "random",
            algorithm: format!("{{ type: random, seed: {{seed}}, samples: {samples} }}"),
            objective: pareto.clone(),
            seeded: true,
        },
        Method {
            name: "ASHA (Dice under budget)",
            algorithm: format!(
                "{{ type: asha, sampler: grid, seed: {{seed}}, eta: {eta}, minSteps: {min_steps} }}"
            ),
            objective: budget,
            seeded: true,
        },
        Method {
            name: "Hyperband (Pareto)",
            algorithm: format!(
                "{{ type: hyperband, sampler: grid, seed: {{seed}}, eta: {eta}, minSteps: {min_steps} }}"
            ),
            objective: pareto.clone(),
            seeded: true,
        },
        Method {
            name: "median stopping (Pareto)",
            algorithm: format!(
                "{{ type: medianStop, sampler: grid, seed: {{seed}}, minSteps: {}, minTrials: 3 }}",
                min_steps * 2
            ),
            objective: pareto.clone(),
            seeded: true,
        },
        Method {
            name: "Pareto ASHA",
            algorithm: format!(
                "{{ type: asha, sampler: grid, seed: {{seed}}, eta: {eta}, minSteps: {min_steps} }}"
            ),
            objective: pareto,
            seeded: true,
        },
    ]
}

/// What one replay reached.
#[derive(Clone, Debug)]
pub struct Trace {
    /// (trial-steps spent, hypervolume of the trials trained to `steps`), at each change.
    pub curve: Vec<(f64, f64)>,
    pub spent: f64,
    pub hypervolume: f64,
    pub trained_to_end: usize,
    pub stopped_early: usize,
}

impl Trace {
    /// Trial-steps spent when the hypervolume first reached `level`.
    pub fn spent_to_reach(&self, level: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.1 >= level - 1e-12).map(|p| p.0)
    }

    /// The hypervolume reached with `spent` trial-steps (a step function).
    pub fn at(&self, spent: f64) -> f64 {
        self.curve
            .iter()
            .take_while(|p| p.0 <= spent)
            .last()
            .map_or(0.0, |p| p.1)
    }
}

/// The Experiment a method searches: the recording's variants and the values it holds of each
/// swept parameter, as lists, so that every candidate is a recorded trial.
pub fn spec_for(
    rec: &Recording,
    method: &Method,
    seed: u64,
    parallelism: u32,
) -> Result<ExperimentSpec, String> {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in &rec.trials {
        for (p, v) in &t.params {
            let list = values.entry(p.as_str()).or_default();
            if !list.contains(v) {
                list.push(*v);
            }
        }
    }
    let search: Vec<String> = values
        .iter()
        .map(|(p, vs)| {
            let vs: Vec<String> = vs.iter().map(|v| format!("{v:?}")).collect();
            format!("{p}: {{ type: list, values: [{}] }}", vs.join(", "))
        })
        .collect();
    let mut variants: Vec<String> = rec.trials.iter().map(|t| t.variant.to_string()).collect();
    variants.sort();
    variants.dedup();
    let text = format!(
        "dataset: synthetic://lesion\nmodel: {{ inputSize: 64 }}\nvariants: [{}]\nsteps: {}\nstore: memory://bench\n\
         parallelism: {parallelism}\nsearch: {{ {} }}\nalgorithm: {}\nobjective: {}\n",
        variants.join(", "),
        rec.steps,
        search.join(", "),
        method.algorithm.replace("{seed}", &seed.to_string()),
        method.objective
    );
    let spec: ExperimentSpec = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", method.name))?;
    spec.validate("bench", method.name).map_err(|e| e.to_string())?;
    Ok(spec)
}

/// A running gang in the simulation.
struct Gang {
    started: u64,
    from: u64,
    until: u64,
}

/// The simulation's state: the recorded trials the planner's candidates stand for, what the
/// planner observes of them, and the gangs that run.
struct Replay<'r> {
    rec: &'r Recording,
    now: u64,
    observed: BTreeMap<String, ObservedTrial>,
    recorded: BTreeMap<String, &'r RecordedTrial>,
    gangs: BTreeMap<String, Gang>,
}

/// The replay's meaning of each planner action: a trial is its recording, a gang is a span of
/// the recorded curve; failures and suspensions do not happen in a replay.
impl Runner for Replay<'_> {
    type Done<'a>
        = Result<(), String>
    where
        Self: 'a;

    fn create_trial<'a>(
        &'a mut self,
        name: &'a str,
        variant: Variant,
        params: &'a BTreeMap<String, f64>,
        _spec: &'a TrialSpec,
    ) -> Result<(), String> {
        let r = self
            .rec
            .trials
            .iter()
            .find(|t| t.variant == variant && &t.params == params)
            .ok_or_else(|| format!("no recorded trial of {variant} with {params:?}"))?;
        self.recorded.insert(name.to_string(), r);
        self.observed.insert(
            name.to_string(),
            ObservedTrial::new(name, TrialPhase::Pending, 0, self.now),
        );
        Ok(())
    }

    fn start_trial<'a>(
        &'a mut self,
        name: &'a str,
        attempt: u32,
        until: u64,
        promotion: bool,
    ) -> Result<(), String> {
        let t = self.observed.get_mut(name).ok_or("start of an unknown trial")?;
        let from = t.rungs.last().map_or(0, |r| r.step);
        self.gangs.insert(
            name.to_string(),
            Gang {
                started: self.now,
                from,
                until,
            },
        );
        t.phase = TrialPhase::Running;
        t.attempts = attempt;
        t.promotions += u32::from(promotion);
        t.target = until;
        Ok(())
    }

    fn fail_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Result<(), String> {
        Err(format!("{name} failed ({reason}) in a replay without failures"))
    }

    fn stop_trial<'a>(&'a mut self, name: &'a str, _reason: &'a str) -> Result<(), String> {
        self.observed
            .get_mut(name)
            .ok_or("stop of an unknown trial")?
            .phase = TrialPhase::Stopped;
        Ok(())
    }

    fn suspend_trial<'a>(&'a mut self, name: &'a str) -> Result<(), String> {
        Err(format!(
            "{name} suspended in a replay of an Experiment that never is"
        ))
    }
}

/// Replays one method with one seed.
pub fn replay(rec: &Recording, spec: &ExperimentSpec, reference_bpp: f64) -> Result<Trace, String> {
    let cfg = PlannerConfig::default();
    let mut sim = Replay {
        rec,
        now: 0,
        observed: BTreeMap::new(),
        recorded: BTreeMap::new(),
        gangs: BTreeMap::new(),
    };
    let mut finals: Vec<(f64, f64)> = Vec::new();
    let mut spent_done = 0u64;
    let mut curve = vec![(0.0, 0.0)];
    for _ in 0..1_000_000 {
        let obs: Vec<ObservedTrial> = sim.observed.values().cloned().collect();
        let p = plan("bench", spec, &obs, sim.now, &cfg);
        for a in &p.actions {
            a.carry_out(&mut sim)?;
        }
        if matches!(p.phase, ExperimentPhase::Succeeded | ExperimentPhase::Failed) {
            let hv = curve.last().map_or(0.0, |c| c.1);
            let count = |ph| sim.observed.values().filter(|t| t.phase == ph).count();
            return Ok(Trace {
                spent: spent_done as f64,
                hypervolume: hv,
                trained_to_end: count(TrialPhase::Succeeded),
                stopped_early: count(TrialPhase::Stopped),
                curve,
            });
        }
        // The next gang to reach its target (ties by name: deterministic).
        let (name, end) = sim
            .gangs
            .iter()
            .map(|(n, g)| (n.clone(), g.started + (g.until - g.from)))
            .min_by_key(|(n, end)| (*end, n.clone()))
            .ok_or("the planner waits with nothing running")?;
        let g = sim.gangs.remove(&name).expect("chosen above");
        sim.now = end;
        spent_done += g.until - g.from;
        let r = sim.recorded[&name];
        let score = r
            .at(g.until)
            .ok_or_else(|| format!("{}: no recorded evaluation at step {}", r.trial, g.until))?;
        let t = sim.observed.get_mut(&name).expect("observed");
        t.rungs.push(score);
        t.since = sim.now;
        if g.until >= spec.steps {
            t.phase = TrialPhase::Succeeded;
            finals.push((score.bpp, score.dice));
            let spent_now = spent_done + sim.gangs.values().map(|g| sim.now - g.started).sum::<u64>();
            let hv = hypervolume(&finals, &pareto_front(&finals), reference_bpp);
            curve.push((spent_now as f64, hv));
        } else {
            t.phase = TrialPhase::Paused;
        }
    }
    Err("the replay did not end".into())
}

/// Trial-steps that synchronous successive halving spends on `trials` trials over one ladder:
/// every trial to the first rung, then the top floor(n / eta) of each rung to the next. The
/// floor of any ASHA run on the ladder that ranks perfectly and never promotes early (the
/// asynchronous one promotes more: a trial in the top third of the first few results may
/// drop out of it later, after it went on).
pub fn halving_budget(trials: u64, eta: u32, rungs: &[u64]) -> u64 {
    let mut alive = trials;
    let mut from = 0;
    let mut spent = 0;
    for (k, &rung) in rungs.iter().enumerate() {
        if k > 0 {
            alive /= u64::from(eta);
        }
        spent += alive * (rung - from);
        from = rung;
    }
    spent
}

/// Results of every method over `seeds` seeds, as a Markdown report.
pub struct SearchBench {
    pub markdown: String,
    /// Per method, the seed-averaged hypervolume against the share of the grid's trial-steps.
    pub series: Vec<orchestra_report::lines::Series>,
    pub target: f64,
}

/// How the benchmark runs: seeds per method, workers, the objective's rates, the rungs (also
/// the flags of `orchestra bench-search`).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct BenchConfig {
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    #[arg(long, default_value_t = 4)]
    pub parallelism: u32,
    /// Reference rate of the hypervolume.
    #[arg(long, default_value_t = 0.02)]
    pub reference_bpp: f64,
    /// The budget of the single-objective ASHA.
    #[arg(long, default_value_t = 0.012)]
    pub bpp_budget: f64,
    /// Steps of the lowest rung (recorded evaluations must fall on every rung).
    #[arg(long, default_value_t = 80)]
    pub min_steps: u64,
    /// Reduction factor of the successive-halving methods.
    #[arg(long, default_value_t = 3)]
    pub eta: u32,
}

/// One method's row of the table (over its seeds' replays) and its mean hypervolume curve
/// against the share of the grid's trial-steps.
fn method_row(
    name: &str,
    runs: &[Trace],
    grid_spent: f64,
    target: f64,
) -> (String, orchestra_report::lines::Series) {
    let n = runs.len() as f64;
    let mean = |f: &dyn Fn(&Trace) -> f64| runs.iter().map(f).sum::<f64>() / n;
    let reach: Vec<f64> = runs.iter().filter_map(|r| r.spent_to_reach(target)).collect();
    let reach_text = if reach.is_empty() {
        "never".to_string()
    } else {
        format!(
            "{:.1} % ({}/{})",
            100.0 * reach.iter().sum::<f64>() / reach.len() as f64 / grid_spent,
            reach.len(),
            runs.len()
        )
    };
    let row = format!(
        "| {} | {:.6} | {:.1} % | {} | {:.1} | {:.1} |\n",
        name,
        mean(&|r| r.hypervolume),
        100.0 * mean(&|r| r.spent) / grid_spent,
        reach_text,
        mean(&|r| r.trained_to_end as f64),
        mean(&|r| r.stopped_early as f64),
    );
    let xs: Vec<f64> = (0..=200).map(|i| grid_spent * i as f64 / 200.0).collect();
    let curve = orchestra_report::lines::Series {
        name: name.to_string(),
        points: xs
            .iter()
            .map(|&x| (x / grid_spent, runs.iter().map(|r| r.at(x)).sum::<f64>() / n))
            .collect(),
    };
    (row, curve)
}

pub fn run(rec: &Recording, cfg: &BenchConfig) -> Result<SearchBench, String> {
    let BenchConfig {
        seeds,
        parallelism,
        reference_bpp,
        bpp_budget,
        min_steps,
        eta,
    } = *cfg;
    // Random search draws as many trials as the grid has, spread evenly over the variants.
    let mut variants: Vec<Variant> = rec.trials.iter().map(|t| t.variant).collect();
    variants.sort();
    variants.dedup();
    let samples = (rec.trials.len() as u32).div_ceil(variants.len().max(1) as u32);
    let methods = methods(reference_bpp, bpp_budget, min_steps, eta, samples);
    let grid = replay(rec, &spec_for(rec, &methods[0], 0, parallelism)?, reference_bpp)?;
    let target = 0.95 * grid.hypervolume;
    let mut md = format!(
        "## Search benchmark: {} recorded trials of `{}` ({}), replayed through the planner\n\n\
         {parallelism} workers; rungs from {min_steps} steps, eta {eta}; hypervolume of the trials trained to all {} steps in [0, {reference_bpp} bpp] x [0, 1]; \
         {seeds} seeds per seeded method. Grid: {} trial-steps, hypervolume {:.6}; target 95 %: {:.6}.\n\n\
         | method | final hypervolume (mean) | trial-steps spent (share of grid) | share of grid's trial-steps to reach 95 % (mean; seeds reaching it) | trained to the end | stopped early |\n\
         |---|---|---|---|---|---|\n",
        rec.trials.len(),
        rec.experiment,
        rec.dataset,
        rec.steps,
        grid.spent,
        grid.hypervolume,
        target
    );
    let mut series = Vec::new();
    for m in &methods {
        let runs: Vec<Trace> = (0..if m.seeded { seeds } else { 1 })
            .map(|seed| replay(rec, &spec_for(rec, m, seed, parallelism)?, reference_bpp))
            .collect::<Result<_, _>>()?;
        let (row, curve) = method_row(m.name, &runs, grid.spent, target);
        md += &row;
        series.push(curve);
    }
    let pareto_asha = methods.last().expect("Pareto ASHA is listed last");
    if let orchestra_api::Schedule::Halving { eta, brackets } = spec_for(rec, pareto_asha, 0, parallelism)?
        .algorithm
        .schedule(rec.steps)
    {
        let floor = halving_budget(rec.trials.len() as u64, eta, &brackets[0]);
        md += &format!(
            "\nSuccessive halving's own budget on the ladder {:?} (every trial to the first rung, the top 1/{eta} of each rung to the next, promoted once the rung is full): \
             {floor} trial-steps, {:.1} % of the grid's.\n",
            brackets[0],
            100.0 * floor as f64 / grid.spent
        );
    }
    md += "\nRandom search draws with replacement from the recorded values (a discrete space), so some of its draws repeat a trial: they cost steps and add nothing, as they would in a real sweep over these lists.\n";
    Ok(SearchBench {
        markdown: md,
        series,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small made-up recording: a 2 x 3 grid of D4 trials whose curves rise at different
    /// rates, some that look good early and end badly.
    fn recording() -> Recording {
        let mut trials = Vec::new();
        for (i, lambda) in [0.01, 0.1].iter().enumerate() {
            for (j, lr) in [0.001, 0.002, 0.004].iter().enumerate() {
                let k = (i * 3 + j) as f64;
                let curve = (1..=9)
                    .map(|s| {
                        let step = s * 10;
                        let dice = (0.3 + 0.07 * k) * (1.0 - (-(step as f64) / (20.0 + 15.0 * k)).exp());
                        (step, 0.004 + 0.002 * i as f64 + 0.0005 * j as f64, dice)
                    })
                    .collect();
                trials.push(RecordedTrial {
                    trial: format!("r-d4-{k}"),
                    variant: Variant::D4,
                    params: BTreeMap::from([("lambdaRate".to_string(), *lambda), ("lr".to_string(), *lr)]),
                    curve,
                });
            }
        }
        Recording {
            experiment: "r".into(),
            dataset: "synthetic://lesion".into(),
            steps: 90,
            trials,
        }
    }

    #[test]
    fn the_halving_budget_by_hand() {
        // 32 trials: 32 x 80, then 10 x 160, then 3 x 240.
        assert_eq!(halving_budget(32, 3, &[80, 240, 480]), 2560 + 1600 + 720);
        // Too few trials for the top rung: nobody goes there.
        assert_eq!(halving_budget(8, 3, &[10, 30, 90]), 80 + 2 * 20);
        assert_eq!(halving_budget(5, 2, &[100]), 500);
    }

    #[test]
    fn the_grid_replay_trains_every_recorded_trial_and_reaches_their_front() {
        let rec = recording();
        let m = &methods(0.02, 0.006, 10, 3, 6)[0];
        let trace = replay(&rec, &spec_for(&rec, m, 0, 2).unwrap(), 0.02).unwrap();
        assert_eq!((trace.trained_to_end, trace.stopped_early), (6, 0));
        assert_eq!(trace.spent, 6.0 * 90.0);
        let finals: Vec<(f64, f64)> = rec.trials.iter().map(|t| (t.curve[8].1, t.curve[8].2)).collect();
        let want = hypervolume(&finals, &pareto_front(&finals), 0.02);
        assert!((trace.hypervolume - want).abs() < 1e-12);
    }

    #[test]
    fn successive_halving_spends_less_and_each_replay_is_deterministic() {
        let rec = recording();
        let ms = methods(0.02, 0.006, 10, 3, 6);
        for m in &ms[2..] {
            let spec = spec_for(&rec, m, 1, 2).unwrap();
            let a = replay(&rec, &spec, 0.02).unwrap();
            let b = replay(&rec, &spec, 0.02).unwrap();
            assert_eq!(a.curve, b.curve, "{}", m.name);
            assert!(a.spent < 6.0 * 90.0, "{}: {}", m.name, a.spent);
            assert!(a.trained_to_end >= 1, "{}", m.name);
            assert_eq!(a.trained_to_end + a.stopped_early, 6, "{}", m.name);
        }
    }
}
