//! The planner, on its own: scenarios by hand and properties under random interleavings.

use std::collections::BTreeMap;

use orchestra_api::{ExperimentPhase, ExperimentSpec, TrialPhase};
use orchestra_operator::planner::{plan, Action, ObservedTrial, PlannerConfig};
use proptest::prelude::*;

fn spec(parallelism: u32, max_failed: u32, max_attempts: u32) -> ExperimentSpec {
    let text = format!(
        "dataset: synthetic://lesion\nmodel: {{ inputSize: 64 }}\nvariants: [D1, D2, D3, D4]\nsteps: 10\n\
         store: memory://p\nparallelism: {parallelism}\nmaxFailedTrials: {max_failed}\nmaxAttempts: {max_attempts}\n\
         search: {{ lambdaRate: {{ type: list, values: [0.1, 0.2, 0.4] }} }}\n"
    );
    serde_yaml::from_str(&text).unwrap()
}

fn observed(name: &str, phase: TrialPhase, attempts: u32, since: u64) -> ObservedTrial {
    ObservedTrial {
        name: name.into(),
        phase,
        attempts,
        since,
    }
}

const CFG: PlannerConfig = PlannerConfig {
    restart_backoff: 10,
    max_backoff: 300,
};

#[test]
fn a_new_experiment_creates_and_starts_up_to_the_parallelism() {
    let p = plan("e", &spec(2, 0, 3), &[], 100, &CFG);
    let names: Vec<String> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::CreateTrial { name, .. } => format!("create {name}"),
            Action::StartTrial { name, attempt } => format!("start {name} #{attempt}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "create e-d1-000",
            "start e-d1-000 #1",
            "create e-d2-000",
            "start e-d2-000 #1"
        ]
    );
    assert_eq!(p.phase, ExperimentPhase::Running);
    let Action::CreateTrial { spec, .. } = &p.actions[0] else {
        unreachable!()
    };
    assert_eq!((spec.experiment.as_str(), spec.trial.as_str()), ("e", "e-d1-000"));
}

#[test]
fn failed_attempts_restart_after_backoff_then_fail() {
    let s = spec(2, 5, 2);
    let obs = [
        observed("e-d1-000", TrialPhase::AttemptFailed, 1, 100),
        observed("e-d2-000", TrialPhase::Running, 1, 100),
    ];
    let p = plan("e", &s, &obs, 105, &CFG);
    let restarts_d1 = |p: &orchestra_operator::planner::Plan| {
        p.actions
            .iter()
            .any(|a| matches!(a, Action::StartTrial { name, .. } if name == "e-d1-000"))
    };
    assert!(!restarts_d1(&p), "waits for the backoff: {:?}", p.actions);
    assert_eq!(p.requeue_after, Some(5));
    // While it waits, the free slot goes to the next candidate rather than idling.
    assert!(matches!(&p.actions[0], Action::CreateTrial { name, .. } if name == "e-d3-000"));
    let p = plan("e", &s, &obs, 110, &CFG);
    assert_eq!(
        p.actions[0],
        Action::StartTrial {
            name: "e-d1-000".into(),
            attempt: 2
        }
    );
    assert_eq!(
        p.actions.len(),
        1,
        "the restart takes the only free slot: {:?}",
        p.actions
    );
    let obs = [observed("e-d1-000", TrialPhase::AttemptFailed, 2, 100)];
    let p = plan("e", &s, &obs, 1000, &CFG);
    assert!(matches!(&p.actions[0], Action::FailTrial { name, .. } if name == "e-d1-000"));
}

#[test]
fn the_failure_budget_spent_stops_everything() {
    let s = spec(3, 1, 1);
    let obs = [
        observed("e-d1-000", TrialPhase::Failed, 1, 0),
        observed("e-d2-000", TrialPhase::AttemptFailed, 1, 0),
        observed("e-d3-000", TrialPhase::Running, 1, 0),
        observed("e-d4-000", TrialPhase::Pending, 0, 0),
    ];
    let p = plan("e", &s, &obs, 50, &CFG);
    assert_eq!(p.phase, ExperimentPhase::Failed);
    assert!(p.message.contains("maxFailedTrials = 1"), "{}", p.message);
    assert_eq!(
        p.actions[1..],
        [
            Action::StopTrial {
                name: "e-d3-000".into()
            },
            Action::StopTrial {
                name: "e-d4-000".into()
            }
        ]
    );
    assert!(p
        .actions
        .iter()
        .all(|a| !matches!(a, Action::CreateTrial { .. } | Action::StartTrial { .. })));
}

#[test]
fn all_done_is_succeeded_and_stays_quiet() {
    let s = spec(2, 0, 1);
    let names = [
        "e-d1-000", "e-d2-000", "e-d3-000", "e-d4-000", "e-d4-001", "e-d4-002",
    ];
    let obs: Vec<ObservedTrial> = names
        .iter()
        .map(|n| observed(n, TrialPhase::Succeeded, 1, 0))
        .collect();
    let p = plan("e", &s, &obs, 0, &CFG);
    assert_eq!((p.phase, p.actions.len()), (ExperimentPhase::Succeeded, 0));
}

#[test]
fn planning_is_deterministic() {
    let s = spec(3, 1, 2);
    let obs = [
        observed("e-d1-000", TrialPhase::Running, 1, 0),
        observed("e-d2-000", TrialPhase::AttemptFailed, 1, 0),
    ];
    assert_eq!(plan("e", &s, &obs, 99, &CFG), plan("e", &s, &obs, 99, &CFG));
}

/// A world the planner drives: actions change trial phases; random events finish attempts.
struct World {
    trials: BTreeMap<String, ObservedTrial>,
    created: Vec<String>,
}

impl World {
    fn apply(&mut self, actions: &[Action], now: u64, max_attempts: u32) {
        for a in actions {
            match a {
                Action::CreateTrial { name, .. } => {
                    assert!(!self.created.contains(name), "trial {name} created twice");
                    self.created.push(name.clone());
                    self.trials
                        .insert(name.clone(), observed(name, TrialPhase::Pending, 0, now));
                }
                Action::StartTrial { name, attempt } => {
                    let t = self.trials.get_mut(name).expect("started trial exists");
                    assert!(
                        !t.phase.is_terminal() && t.phase != TrialPhase::Running,
                        "{name} started while {:?}",
                        t.phase
                    );
                    assert_eq!(*attempt, t.attempts + 1);
                    assert!(
                        *attempt <= max_attempts,
                        "{name} attempt {attempt} > {max_attempts}"
                    );
                    t.phase = TrialPhase::Running;
                    t.attempts = *attempt;
                    t.since = now;
                }
                Action::FailTrial { name, .. } => {
                    let t = self.trials.get_mut(name).unwrap();
                    assert_eq!(t.phase, TrialPhase::AttemptFailed);
                    t.phase = TrialPhase::Failed;
                }
                Action::StopTrial { name } => {
                    let t = self.trials.get_mut(name).unwrap();
                    assert!(!t.phase.is_terminal());
                    t.phase = TrialPhase::Stopped;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_too_many_running_never_twice_always_ends(
        parallelism in 1u32..4,
        max_failed in 0u32..3,
        max_attempts in 1u32..4,
        events in proptest::collection::vec((0usize..8, 0u8..10), 1..400),
    ) {
        let s = spec(parallelism, max_failed, max_attempts);
        let mut world = World { trials: BTreeMap::new(), created: Vec::new() };
        let mut now = 0u64;
        let mut events = events.into_iter().cycle();
        let mut finished_phase = None;
        for _round in 0..2000 {
            let obs: Vec<ObservedTrial> = world.trials.values().cloned().collect();
            let p = plan("e", &s, &obs, now, &CFG);
            world.apply(&p.actions, now, max_attempts);
            let running = world.trials.values().filter(|t| t.phase == TrialPhase::Running).count();
            prop_assert!(running <= parallelism as usize, "{running} running > {parallelism}");
            if p.phase != orchestra_api::ExperimentPhase::Running {
                prop_assert!(world.trials.values().all(|t| t.phase.is_terminal()), "ended with open trials");
                finished_phase = Some(p.phase);
                break;
            }
            // One observation changes: some running trial finishes its attempt, or time passes.
            let (pick, outcome) = events.next().unwrap();
            let running: Vec<String> = world.trials.values().filter(|t| t.phase == TrialPhase::Running).map(|t| t.name.clone()).collect();
            if !running.is_empty() {
                let t = world.trials.get_mut(&running[pick % running.len()]).unwrap();
                t.phase = if outcome < 7 { TrialPhase::Succeeded } else { TrialPhase::AttemptFailed };
                t.since = now;
            }
            now += 7;
        }
        prop_assert!(finished_phase.is_some(), "the experiment never ended");
        prop_assert!(world.created.len() <= 6);
    }
}
