//! The spine: `plan(experiment, observed trials, now) -> actions`.
//!
//! The Kubernetes reconciler and the local runner both observe their trials, call `plan`, and
//! carry out the actions with their own means (pods and Services, or local processes). Sweep
//! order, parallelism, restarts, failure budgets and the end of the Experiment are decided here
//! once, from data alone, and tested without any cluster.

use std::collections::{BTreeMap, HashSet};

use orchestra_api::{ExperimentPhase, ExperimentSpec, TrialPhase, TrialSpec, Variant};

use crate::candidates::candidates;

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
    let known: HashSet<&str> = observed.iter().map(|t| t.name.as_str()).collect();
    let count = |p: TrialPhase| observed.iter().filter(|t| t.phase == p).count();
    let mut actions = Vec::new();

    // 1. Attempts that failed: out of attempts means the trial failed.
    let mut failed = count(TrialPhase::Failed);
    let mut restartable = Vec::new();
    for t in observed.iter().filter(|t| t.phase == TrialPhase::AttemptFailed) {
        if t.attempts >= spec.max_attempts {
            actions.push(Action::FailTrial {
                name: t.name.clone(),
                reason: format!("attempt {} of {} failed", t.attempts, spec.max_attempts),
            });
            failed += 1;
        } else {
            restartable.push(t);
        }
    }

    // 2. The failure budget: once spent, stop everything that still runs.
    if failed > spec.max_failed_trials as usize {
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

    // 3. Fill free slots: restarts first (their work is half done), then pending trials, then
    //    new candidates in order.
    let running = count(TrialPhase::Running);
    let mut free = (spec.parallelism as usize).saturating_sub(running);
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

    // 4. Done when every candidate exists and every trial is terminal.
    let all_created = all.iter().all(|c| known.contains(c.name.as_str()));
    let failing_now = actions
        .iter()
        .filter(|a| matches!(a, Action::FailTrial { .. }))
        .count();
    let open = observed.iter().filter(|t| !t.phase.is_terminal()).count() - failing_now;
    let succeeded = count(TrialPhase::Succeeded);
    let (phase, message) = if all_created && open == 0 {
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
    };
    Plan {
        actions,
        phase,
        message,
        requeue_after,
    }
}
