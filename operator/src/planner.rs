//! The spine: `plan(experiment, observed trials, now) -> actions`.
//!
//! The Kubernetes reconciler and the local runner both observe their trials, call `plan`, and
//! carry out the actions with their own means (pods and Services, or local processes). Sweep
//! order, parallelism, restarts, failure budgets and the end of the Experiment are decided here
//! once, from data alone, and tested without any cluster.

use std::collections::{BTreeMap, HashSet};

use orchestra_api::{ExperimentPhase, ExperimentSpec, TrialPhase, TrialSpec, Variant};

use crate::candidates::{candidates, Candidate};

/// What the runner knows about one trial.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedTrial {
    pub name: String,
    pub phase: TrialPhase,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the phase last changed (seconds since the Unix epoch).
    pub since: u64,
}

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
    /// Start attempt `attempt` of a trial's workers; they resume from its latest checkpoint
    /// when there is one (phase Running).
    StartTrial { name: String, attempt: u32 },
    /// Give up on a trial (phase Failed).
    FailTrial { name: String, reason: String },
    /// Stop a trial's workers because the Experiment ended (phase Stopped).
    StopTrial { name: String },
    /// Stop a running trial's workers because the Experiment is suspended: the attempt is
    /// given back (phase Pending, attempts one less), and the trial resumes from its latest
    /// checkpoint when the Experiment does.
    SuspendTrial { name: String },
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
    // 1. Attempts that failed: out of attempts means the trial failed.
    let (mut actions, restartable) = fail_spent_attempts(spec, observed);
    let failed = count(observed, TrialPhase::Failed) + actions.len();
    // 2. The failure budget: once spent, stop everything that still runs.
    if failed > spec.max_failed_trials as usize {
        stop_everything(observed, &mut actions);
        return Plan {
            actions,
            phase: ExperimentPhase::Failed,
            message: format!(
                "{failed} trials failed, more than maxFailedTrials = {}",
                spec.max_failed_trials
            ),
            requeue_after: None,
        };
    }
    // 3. Suspended: the running gangs stop, nothing starts (failed attempts wait too).
    let over = |actions: &[Action]| {
        let phase = phase_after(observed, &all, actions, failed).0;
        matches!(phase, ExperimentPhase::Succeeded | ExperimentPhase::Failed)
    };
    if spec.suspend && !over(&actions) {
        for t in observed.iter().filter(|t| t.phase == TrialPhase::Running) {
            actions.push(Action::SuspendTrial { name: t.name.clone() });
        }
        let waiting = observed.iter().filter(|t| !t.phase.is_terminal()).count();
        return Plan {
            actions,
            phase: ExperimentPhase::Suspended,
            message: format!(
                "suspended: {waiting} trials wait to resume from their checkpoints (spec.suspend: false resumes)"
            ),
            requeue_after: None,
        };
    }
    // 4. Fill free slots.
    let requeue_after = fill_slots(name, spec, observed, &all, &restartable, now, cfg, &mut actions);
    // 5. Done when every candidate exists and every trial is terminal.
    let (phase, message) = phase_after(observed, &all, &actions, failed);
    Plan {
        actions,
        phase,
        message,
        requeue_after,
    }
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
        if t.attempts >= spec.max_attempts {
            actions.push(Action::FailTrial {
                name: t.name.clone(),
                reason: format!("attempt {} of {} failed", t.attempts, spec.max_attempts),
            });
        } else {
            restartable.push(t);
        }
    }
    (actions, restartable)
}

/// Stops every trial that still runs or waits, but those failing in `actions`.
fn stop_everything(observed: &[ObservedTrial], actions: &mut Vec<Action>) {
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
        actions.push(Action::StopTrial { name: t.name.clone() });
    }
}

/// Fills the free slots: restarts first (their work is half done), once their backoff has
/// passed; then pending trials; then new candidates in order. Returns how long until the
/// earliest restart still waiting on its backoff.
#[allow(clippy::too_many_arguments)]
fn fill_slots(
    name: &str,
    spec: &ExperimentSpec,
    observed: &[ObservedTrial],
    all: &[Candidate],
    restartable: &[&ObservedTrial],
    now: u64,
    cfg: &PlannerConfig,
    actions: &mut Vec<Action>,
) -> Option<u64> {
    let known: HashSet<&str> = observed.iter().map(|t| t.name.as_str()).collect();
    let mut free = (spec.parallelism as usize).saturating_sub(count(observed, TrialPhase::Running));
    let mut requeue_after: Option<u64> = None;
    for t in restartable {
        let ready_at = t.since + backoff(cfg, t.attempts);
        if ready_at > now {
            let wait = ready_at - now;
            requeue_after = Some(requeue_after.map_or(wait, |w| w.min(wait)));
        } else if free > 0 {
            actions.push(Action::StartTrial {
                name: t.name.clone(),
                attempt: t.attempts + 1,
            });
            free -= 1;
        }
    }
    for t in observed.iter().filter(|t| t.phase == TrialPhase::Pending) {
        if free == 0 {
            break;
        }
        actions.push(Action::StartTrial {
            name: t.name.clone(),
            attempt: t.attempts + 1,
        });
        free -= 1;
    }
    for c in all.iter().filter(|c| !known.contains(c.name.as_str())) {
        if free == 0 {
            break;
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
        });
        free -= 1;
    }
    requeue_after
}

/// The Experiment's phase and message once `actions` are carried out: finished when every
/// candidate exists and every trial is terminal (succeeded if any trial did).
fn phase_after(
    observed: &[ObservedTrial],
    all: &[Candidate],
    actions: &[Action],
    failed: usize,
) -> (ExperimentPhase, String) {
    let known: HashSet<&str> = observed.iter().map(|t| t.name.as_str()).collect();
    let all_created = all.iter().all(|c| known.contains(c.name.as_str()));
    let failing_now = actions
        .iter()
        .filter(|a| matches!(a, Action::FailTrial { .. }))
        .count();
    let open = observed.iter().filter(|t| !t.phase.is_terminal()).count() - failing_now;
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
        let finished = succeeded + failed;
        (
            ExperimentPhase::Running,
            format!("{finished}/{} trials finished", all.len()),
        )
    }
}
