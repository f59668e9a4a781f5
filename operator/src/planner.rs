//! The spine: `plan(experiment, observed trials, now) -> actions`.
//!
//! The Kubernetes reconciler and the local runner both observe their trials, call `plan`, and
//! carry out the actions with their own means (pods and Services, or local processes). Sweep
//! order, parallelism, restarts, failure budgets and the end of the Experiment are decided here
//! once, from data alone, and tested without any cluster.

use std::collections::{BTreeMap, HashMap, HashSet};

use orchestra_api::{ExperimentPhase, ExperimentSpec, Schedule, TrialPhase, TrialSpec, Variant};

use crate::candidates::{candidates, Candidate};
pub use crate::observed::ObservedTrial;
use crate::search::{decide, Decisions};

/// Something the runner must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Record a new trial (phase Pending).
    CreateTrial {
        name: String,
        variant: Variant,
        params: BTreeMap<String, f64>,
        spec: Box<TrialSpec>,
    },
    /// Start gang `attempt` of a trial's workers, training to step `until` (a rung of the
    /// search, or `steps`); they resume from its latest checkpoint when there is one (phase
    /// Running). A promotion continues a paused trial to its next rung: it is a new gang but
    /// not a new attempt.
    StartTrial {
        name: String,
        attempt: u32,
        until: u64,
        promotion: bool,
    },
    /// Give up on a trial (phase Failed).
    FailTrial { name: String, reason: String },
    /// Stop a trial: the Experiment ended, or the search stopped it early at a rung (phase
    /// Stopped).
    StopTrial { name: String, reason: String },
    /// Stop a running trial's workers because the Experiment is suspended: the attempt is
    /// given back (phase Pending, attempts one less), and the trial resumes from its latest
    /// checkpoint when the Experiment does.
    SuspendTrial { name: String },
}

impl Action {
    /// The trial the action is about.
    pub fn trial(&self) -> &str {
        match self {
            Action::CreateTrial { name, .. }
            | Action::StartTrial { name, .. }
            | Action::FailTrial { name, .. }
            | Action::StopTrial { name, .. }
            | Action::SuspendTrial { name } => name,
        }
    }
}

/// The planner's decision for one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The Experiment's phase once the actions are carried out.
    pub phase: ExperimentPhase,
    pub message: String,
    /// Observe again after this many seconds at the latest (a restart is waiting on backoff).
    pub requeue_after: Option<u64>,
}

/// Tunables that are the runner's business rather than the Experiment's.
#[derive(Clone, Copy, Debug)]
pub struct PlannerConfig {
    /// Delay before the first restart of a failed attempt; doubles with each attempt.
    pub restart_backoff: u64,
    pub max_backoff: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            restart_backoff: 10,
            max_backoff: 300,
        }
    }
}

/// Seconds until a trial whose earlier gang is draining is looked at again.
pub const DRAIN_RECHECK: u64 = 2;

fn backoff(cfg: &PlannerConfig, attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (cfg.restart_backoff << doublings).min(cfg.max_backoff)
}

/// Decides what to do next. Deterministic: same inputs, same plan.
pub fn plan(
    name: &str,
    spec: &ExperimentSpec,
    observed: &[ObservedTrial],
    now: u64,
    cfg: &PlannerConfig,
) -> Plan {
    let all = candidates(name, spec);
    let schedule = spec.algorithm.schedule(spec.steps);
    let brackets = schedule.brackets();
    let index = candidate_index(&all, brackets);
    let bracket_of = |trial: &str| index.get(trial).copied().unwrap_or(0) % brackets;
    let known: HashSet<&str> = observed.iter().map(|t| t.name.as_str()).collect();
    // 1. Attempts that failed: out of attempts means the trial failed.
    let (mut actions, restartable) = fail_spent_attempts(spec, observed);
    let failed = count(observed, TrialPhase::Failed) + actions.len();
    // 2. The failure budget: once spent, stop everything that still runs.
    if failed > spec.max_failed_trials as usize {
        return failed_plan(spec, observed, actions, failed);
    }
    // 3. Suspended: the running gangs stop, nothing starts (failed attempts wait too).
    let over = |actions: &[Action]| {
        let phase = phase_after(observed, &known, &all, actions, failed).0;
        matches!(phase, ExperimentPhase::Succeeded | ExperimentPhase::Failed)
    };
    if spec.suspend && !over(&actions) {
        return suspended_plan(observed, actions);
    }
    // 4. The search: which paused trials go on to their next rung and which stop here.
    let more_to_come = all.iter().any(|c| !known.contains(c.name.as_str()))
        || !restartable.is_empty()
        || observed
            .iter()
            .any(|t| matches!(t.phase, TrialPhase::Running | TrialPhase::Pending));
    let decisions = if schedule == Schedule::Full {
        Decisions::default()
    } else {
        let view = failing_as_failed(observed, &actions);
        decide(spec, &schedule, &view, &bracket_of, more_to_come)
    };
    for (trial, reason) in &decisions.stop {
        actions.push(Action::StopTrial {
            name: trial.clone(),
            reason: reason.clone(),
        });
    }
    // 5. Fill free slots.
    let slots = Slots {
        spec,
        schedule: &schedule,
        bracket_of: &bracket_of,
    };
    let requeue_after = slots.fill(
        name,
        observed,
        &known,
        &all,
        &restartable,
        &decisions,
        now,
        cfg,
        &mut actions,
    );
    // 6. Done when every candidate exists and every trial is terminal.
    let (phase, message) = phase_after(observed, &known, &all, &actions, failed);
    Plan {
        actions,
        phase,
        message,
        requeue_after,
    }
}

/// Each candidate's position, which puts trial i in bracket i mod brackets; with one bracket
/// (every algorithm but Hyperband) there is nothing to look up.
fn candidate_index(all: &[Candidate], brackets: usize) -> HashMap<&str, usize> {
    if brackets > 1 {
        all.iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect()
    } else {
        HashMap::new()
    }
}

/// The failure budget is spent: everything that still runs stops, and the Experiment failed.
fn failed_plan(
    spec: &ExperimentSpec,
    observed: &[ObservedTrial],
    mut actions: Vec<Action>,
    failed: usize,
) -> Plan {
    stop_everything(observed, &mut actions, "stopped: the Experiment failed");
    Plan {
        actions,
        phase: ExperimentPhase::Failed,
        message: format!(
            "{failed} trials failed, more than maxFailedTrials = {}",
            spec.max_failed_trials
        ),
        requeue_after: None,
    }
}

/// The Experiment is suspended: the running gangs stop (their attempts given back), nothing
/// starts.
fn suspended_plan(observed: &[ObservedTrial], mut actions: Vec<Action>) -> Plan {
    for t in observed.iter().filter(|t| t.phase == TrialPhase::Running) {
        actions.push(Action::SuspendTrial { name: t.name.clone() });
    }
    let waiting = observed.iter().filter(|t| !t.phase.is_terminal()).count();
    Plan {
        actions,
        phase: ExperimentPhase::Suspended,
        message: format!(
            "suspended: {waiting} trials wait to resume from their checkpoints (spec.suspend: false resumes)"
        ),
        requeue_after: None,
    }
}

/// What the search sees: the observed trials, with those failing in this plan as failed (they
/// free their places).
fn failing_as_failed(observed: &[ObservedTrial], actions: &[Action]) -> Vec<ObservedTrial> {
    let failing: HashSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::FailTrial { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    observed
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if failing.contains(t.name.as_str()) {
                t.phase = TrialPhase::Failed;
            }
            t
        })
        .collect()
}

fn count(observed: &[ObservedTrial], phase: TrialPhase) -> usize {
    observed.iter().filter(|t| t.phase == phase).count()
}

/// Fails the trials whose last attempt failed and that have no attempt left; returns those
/// actions and the trials that may be restarted.
fn fail_spent_attempts<'a>(
    spec: &ExperimentSpec,
    observed: &'a [ObservedTrial],
) -> (Vec<Action>, Vec<&'a ObservedTrial>) {
    let mut actions = Vec::new();
    let mut restartable = Vec::new();
    for t in observed.iter().filter(|t| t.phase == TrialPhase::AttemptFailed) {
        if t.failures_allowed_used() >= spec.max_attempts {
            actions.push(Action::FailTrial {
                name: t.name.clone(),
                reason: format!(
                    "attempt {} of {} failed",
                    t.failures_allowed_used(),
                    spec.max_attempts
                ),
            });
        } else {
            restartable.push(t);
        }
    }
    (actions, restartable)
}

/// Stops every trial that still runs or waits, but those failing in `actions`.
fn stop_everything(observed: &[ObservedTrial], actions: &mut Vec<Action>, reason: &str) {
    let failed_now: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::FailTrial { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    for t in observed
        .iter()
        .filter(|t| !t.phase.is_terminal() && !failed_now.contains(&t.name))
    {
        actions.push(Action::StopTrial {
            name: t.name.clone(),
            reason: reason.to_string(),
        });
    }
}

/// What filling slots needs to know of the search: each trial's first step target.
struct Slots<'a> {
    spec: &'a ExperimentSpec,
    schedule: &'a Schedule,
    bracket_of: &'a dyn Fn(&str) -> usize,
}

/// Trials waiting for an earlier gang's pods to stop: each keeps its place, since those pods
/// still hold their resources.
fn draining(observed: &[ObservedTrial]) -> HashSet<&str> {
    observed
        .iter()
        .filter(|t| t.draining && t.phase != TrialPhase::Running && !t.phase.is_terminal())
        .map(|t| t.name.as_str())
        .collect()
}

impl Slots<'_> {
    /// The first step target of a trial: the lowest rung of its bracket.
    fn first_target(&self, trial: &str) -> u64 {
        self.schedule.rungs((self.bracket_of)(trial), self.spec.steps)[0]
    }

    /// Fills the free slots: restarts first (their work is half done), once their backoff has
    /// passed; then promotions (highest rung first); then pending trials; then new candidates
    /// in order. Returns how long until the earliest restart still waiting on its backoff.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        name: &str,
        observed: &[ObservedTrial],
        known: &HashSet<&str>,
        all: &[Candidate],
        restartable: &[&ObservedTrial],
        decisions: &Decisions,
        now: u64,
        cfg: &PlannerConfig,
        actions: &mut Vec<Action>,
    ) -> Option<u64> {
        let spec = self.spec;
        let draining = draining(observed);
        let busy = count(observed, TrialPhase::Running) + draining.len();
        let mut free = (spec.parallelism as usize).saturating_sub(busy);
        let mut requeue_after: Option<u64> = (!draining.is_empty()).then_some(DRAIN_RECHECK);
        let drained = |trial: &str| !draining.contains(&trial);
        let start = |actions: &mut Vec<Action>, name: &str, attempt: u32, until: u64, promotion: bool| {
            actions.push(Action::StartTrial {
                name: name.to_string(),
                attempt,
                until,
                promotion,
            });
        };
        let target_of = |t: &ObservedTrial| {
            if t.target > 0 {
                t.target
            } else {
                self.first_target(&t.name)
            }
        };
        for t in restartable.iter().filter(|t| drained(&t.name)) {
            let ready_at = t.since + backoff(cfg, t.attempts);
            if ready_at > now {
                let wait = ready_at - now;
                requeue_after = Some(requeue_after.map_or(wait, |w| w.min(wait)));
            } else if free > 0 {
                start(actions, &t.name, t.attempts + 1, target_of(t), false);
                free -= 1;
            }
        }
        for (trial, until) in decisions.promote.iter().filter(|(t, _)| drained(t)) {
            if free == 0 {
                break;
            }
            let t = observed
                .iter()
                .find(|t| &t.name == trial)
                .expect("promotions are of observed trials");
            start(actions, trial, t.attempts + 1, *until, true);
            free -= 1;
        }
        for t in observed
            .iter()
            .filter(|t| t.phase == TrialPhase::Pending && drained(&t.name))
        {
            if free == 0 {
                break;
            }
            start(actions, &t.name, t.attempts + 1, target_of(t), false);
            free -= 1;
        }
        self.create_new(name, observed, known, all, free, actions);
        requeue_after
    }

    /// Creates and starts new candidates in order, up to `free` of them; those that read a
    /// trial of this Experiment still running wait for it.
    fn create_new(
        &self,
        name: &str,
        observed: &[ObservedTrial],
        known: &HashSet<&str>,
        all: &[Candidate],
        mut free: usize,
        actions: &mut Vec<Action>,
    ) {
        let spec = self.spec;
        for c in all.iter().filter(|c| !known.contains(c.name.as_str())) {
            if free == 0 {
                break;
            }
            if waits_for_source(spec, c, observed, all) {
                continue;
            }
            actions.push(Action::CreateTrial {
                name: c.name.clone(),
                variant: c.variant,
                params: c.params.clone(),
                spec: Box::new(spec.trial_spec(&c.name, name, c.variant, &c.params)),
            });
            actions.push(Action::StartTrial {
                name: c.name.clone(),
                attempt: 1,
                until: self.first_target(&c.name),
                promotion: false,
            });
            free -= 1;
        }
    }
}

/// Whether a candidate reads weights from a trial of this Experiment (its warm start or its
/// teacher) that has yet to finish: it is created once that trial succeeded. A source that
/// failed, was stopped or is no candidate at all does not hold it back: the worker then says
/// what is missing, and the trial fails like any other.
fn waits_for_source(
    spec: &ExperimentSpec,
    c: &Candidate,
    observed: &[ObservedTrial],
    all: &[Candidate],
) -> bool {
    let sources = spec.hyper.model_sources(c.variant);
    sources
        .iter()
        .filter_map(|s| s.same_experiment_trial())
        .any(|source| match observed.iter().find(|t| t.name == source) {
            Some(t) => !t.phase.is_terminal(),
            None => all.iter().any(|other| other.name == source),
        })
}

/// The Experiment's phase and message once `actions` are carried out: finished when every
/// candidate exists and every trial is terminal (succeeded if any trial did).
fn phase_after(
    observed: &[ObservedTrial],
    known: &HashSet<&str>,
    all: &[Candidate],
    actions: &[Action],
    failed: usize,
) -> (ExperimentPhase, String) {
    let all_created = all.iter().all(|c| known.contains(c.name.as_str()));
    let ending_now: HashSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::FailTrial { name, .. } | Action::StopTrial { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let open = observed
        .iter()
        .filter(|t| !t.phase.is_terminal() && !ending_now.contains(t.name.as_str()))
        .count();
    let succeeded = count(observed, TrialPhase::Succeeded);
    if all_created && open == 0 {
        if succeeded > 0 {
            (
                ExperimentPhase::Succeeded,
                format!("{succeeded} of {} trials succeeded", all.len()),
            )
        } else {
            (ExperimentPhase::Failed, "no trial succeeded".to_string())
        }
    } else {
        // Trials the search stopped early are finished too.
        let finished = succeeded + failed + count(observed, TrialPhase::Stopped);
        (
            ExperimentPhase::Running,
            format!("{finished}/{} trials finished", all.len()),
        )
    }
}
