//! Early stopping at rungs, pure: from the scores trials reached at their rungs, which paused
//! trials go on (a promotion: the same trial continues from its checkpoint to the next rung)
//! and which stop.
//!
//! - Successive halving (ASHA, and each bracket of Hyperband): at rung k, the top
//!   floor(n_k / eta) of the n_k trials that reached it so far may go on, as soon as they are
//!   known (asynchronous: no rung waits to be full).
//! - The median stopping rule: a trial whose objective at a step is below the median of the
//!   others' there (once `minTrials` others reached it) waits, and stops when the search ends;
//!   the others go on. Waiting rather than stopping at once keeps the rule's answer open while
//!   the trials above it can still fail: if none of them gets to `steps`, the best waiting
//!   trial goes on instead, as in successive halving.
//!
//! Ranking at a rung follows `objective.mode`: `pareto` sorts by non-dominated layer over (real
//! bitstream bpp down, Dice up) and, within a layer, by greedy hypervolume contribution (each
//! trial by the area it adds to those ranked before it), so that the whole front is kept alive;
//! `budget` ranks by Dice at or below `bppBudget`.

use std::cmp::Ordering;

use orchestra_api::{ExperimentSpec, ObjectiveMode, RungScore, Schedule, TrialPhase};
use orchestra_report::pareto::pareto_order;

use crate::observed::ObservedTrial;

/// What the search decided for the paused trials.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decisions {
    /// Trials to continue, in priority order (the highest rung first), each with its next
    /// step target.
    pub promote: Vec<(String, u64)>,
    /// Trials to stop here, each with the reason.
    pub stop: Vec<(String, String)>,
}

/// One trial's score at one rung, as the ranking takes it.
struct AtRung<'a> {
    name: &'a str,
    score: RungScore,
    /// Paused there, waiting for a promotion.
    waiting: bool,
}

/// The trials of `members` that reached the rung at `step`, with their scores there.
fn at_rung<'a>(members: &[&'a ObservedTrial], step: u64) -> Vec<AtRung<'a>> {
    members
        .iter()
        .filter_map(|t| {
            score_at(t, step).map(|score| AtRung {
                name: &t.name,
                score,
                waiting: waiting_at(t, step),
            })
        })
        .collect()
}

/// Indices of `at` from best to worst under the Experiment's objective.
fn ranked(spec: &ExperimentSpec, at: &[AtRung]) -> Vec<usize> {
    let by_name = |a: usize, b: usize| at[a].name.cmp(at[b].name);
    match spec.objective.effective_mode() {
        ObjectiveMode::Pareto => {
            let points: Vec<(f64, f64)> = at.iter().map(|a| (a.score.bpp, a.score.dice)).collect();
            pareto_order(&points, spec.objective.reference_bpp, by_name)
        }
        ObjectiveMode::Budget => {
            let mut order: Vec<usize> = (0..at.len()).collect();
            order.sort_by(|&a, &b| {
                scalar(spec, &at[b].score)
                    .total_cmp(&scalar(spec, &at[a].score))
                    .then_with(|| by_name(a, b))
            });
            order
        }
    }
}

/// The objective as one number, higher is better (the median rule needs one). Budget: Dice
/// within the budget, else below every feasible trial and the lower the bpp the better.
/// Pareto: the area the point alone dominates, Dice x (reference - bpp) / reference.
pub fn scalar(spec: &ExperimentSpec, s: &RungScore) -> f64 {
    let o = &spec.objective;
    let dice = if s.dice.is_finite() {
        s.dice.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let bpp = if s.bpp.is_finite() { s.bpp } else { f64::MAX };
    match o.effective_mode() {
        ObjectiveMode::Budget => {
            let budget = o.bpp_budget.unwrap_or(o.reference_bpp);
            if bpp <= budget {
                dice
            } else {
                -(bpp / budget).min(1e12)
            }
        }
        ObjectiveMode::Pareto => dice * (1.0 - bpp / o.reference_bpp).max(0.0),
    }
}

fn score_at(t: &ObservedTrial, step: u64) -> Option<RungScore> {
    t.rungs.iter().rev().find(|r| r.step == step).copied()
}

/// A paused trial waits at its step target with its record there.
fn waiting_at(t: &ObservedTrial, step: u64) -> bool {
    t.phase == TrialPhase::Paused && t.target == step && score_at(t, step).is_some()
}

/// Decides for every paused trial. `bracket_of` gives a trial's bracket (Hyperband);
/// `more_to_come` says whether anything can still change the rungs (trials running, waiting
/// to start or to restart, candidates not yet created). When nothing can, successive halving
/// ends: each bracket whose trials all stopped below `steps` sends its best trial on, and
/// every other paused trial stops.
pub fn decide(
    spec: &ExperimentSpec,
    schedule: &Schedule,
    observed: &[ObservedTrial],
    bracket_of: &dyn Fn(&str) -> usize,
    more_to_come: bool,
) -> Decisions {
    match schedule {
        Schedule::Full => Decisions::default(),
        Schedule::Halving { eta, brackets } => {
            let mut d = Decisions::default();
            for (b, rungs) in brackets.iter().enumerate() {
                let members: Vec<&ObservedTrial> = observed
                    .iter()
                    .filter(|t| bracket_of(&t.name) % brackets.len() == b)
                    .collect();
                halving(spec, *eta, rungs, &members, more_to_come, &mut d);
            }
            // Higher rungs first: their trials are closest to finishing.
            d.promote.sort_by_key(|(_, next)| std::cmp::Reverse(*next));
            d
        }
        Schedule::MedianStop { rungs, min_trials } => {
            median_stop(spec, rungs, *min_trials, observed, more_to_come)
        }
    }
}

fn halving(
    spec: &ExperimentSpec,
    eta: u32,
    rungs: &[u64],
    members: &[&ObservedTrial],
    more_to_come: bool,
    d: &mut Decisions,
) {
    let below_top = &rungs[..rungs.len() - 1];
    let mut promoted_any = false;
    for (k, &step) in below_top.iter().enumerate() {
        let at = at_rung(members, step);
        let top = at.len() / eta as usize;
        for &i in ranked(spec, &at).iter().take(top) {
            if at[i].waiting {
                d.promote.push((at[i].name.to_string(), rungs[k + 1]));
                promoted_any = true;
            }
        }
    }
    if more_to_come || promoted_any {
        return;
    }
    // Nothing else can arrive: the search of this bracket ends. If no trial went all the way
    // (one that failed there frees the place), the best trial of the highest rung still
    // occupied goes on, so that the bracket ends with a trial trained to `steps`.
    if !reached_top(members, rungs) {
        for (k, &step) in below_top.iter().enumerate().rev() {
            // Ranked among every trial of the rung, as promotions are; the best waiting goes.
            let at = at_rung(members, step);
            let best = ranked(spec, &at).into_iter().find(|&i| at[i].waiting);
            if let Some(best) = best {
                d.promote.push((at[best].name.to_string(), rungs[k + 1]));
                return;
            }
        }
    }
    for t in members.iter().filter(|t| t.phase == TrialPhase::Paused) {
        let reached = t.rungs.last().map_or(0, |r| r.step);
        d.stop.push((
            t.name.clone(),
            format!("stopped early at step {reached}: not in the top 1/{eta} of its rung"),
        ));
    }
}

/// Whether one of `members` trains, or trained, to the last rung (a trial that failed or was
/// stopped does not).
fn reached_top(members: &[&ObservedTrial], rungs: &[u64]) -> bool {
    let last = *rungs.last().expect("a ladder ends with steps");
    members.iter().any(|t| {
        t.target == last
            && !matches!(
                t.phase,
                TrialPhase::Paused | TrialPhase::Failed | TrialPhase::Stopped
            )
    })
}

fn median_stop(
    spec: &ExperimentSpec,
    rungs: &[u64],
    min_trials: u32,
    observed: &[ObservedTrial],
    more_to_come: bool,
) -> Decisions {
    let mut d = Decisions::default();
    // Below the median: (rung index, objective, trial, others at the step); they wait.
    let mut below: Vec<(usize, f64, &ObservedTrial, usize)> = Vec::new();
    for (k, &step) in rungs[..rungs.len() - 1].iter().enumerate() {
        for t in observed.iter().filter(|t| waiting_at(t, step)) {
            let own = scalar(spec, &score_at(t, step).expect("waiting trials have their score"));
            let mut others: Vec<f64> = observed
                .iter()
                .filter(|o| o.name != t.name)
                .filter_map(|o| score_at(o, step))
                .map(|s| scalar(spec, &s))
                .collect();
            if others.len() < min_trials as usize {
                d.promote.push((t.name.clone(), rungs[k + 1]));
                continue;
            }
            others.sort_by(f64::total_cmp);
            let n = others.len();
            let median = if n % 2 == 1 {
                others[n / 2]
            } else {
                (others[n / 2 - 1] + others[n / 2]) / 2.0
            };
            if own.total_cmp(&median) == Ordering::Less {
                below.push((k, own, t, n));
            } else {
                d.promote.push((t.name.clone(), rungs[k + 1]));
            }
        }
    }
    d.promote.sort_by_key(|(_, next)| std::cmp::Reverse(*next));
    if more_to_come || !d.promote.is_empty() {
        return d;
    }
    // Nothing else can arrive. If no trial went all the way (those above the median failed),
    // the best waiting trial of the highest rung goes on; every other waiting trial stops.
    let members: Vec<&ObservedTrial> = observed.iter().collect();
    if !reached_top(&members, rungs) {
        let best = below.iter().max_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then_with(|| b.2.name.cmp(&a.2.name))
        });
        if let Some(&(k, _, t, _)) = best {
            d.promote.push((t.name.clone(), rungs[k + 1]));
            return d;
        }
    }
    for (k, _, t, n) in below {
        d.stop.push((
            t.name.clone(),
            format!(
                "stopped early at step {}: below the median of {n} other trials there",
                rungs[k]
            ),
        ));
    }
    d
}
