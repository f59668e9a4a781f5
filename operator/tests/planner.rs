//! The planner, on its own: scenarios by hand and properties under random interleavings.

use std::collections::BTreeMap;

use orchestra_api::{ExperimentPhase, ExperimentSpec, TrialPhase};
use orchestra_operator::planner::{plan, Action, ObservedTrial, PlannerConfig, DRAIN_RECHECK};
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
    ObservedTrial::new(name, phase, attempts, since)
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
            Action::StartTrial { name, attempt, .. } => format!("start {name} #{attempt}"),
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

/// The names of the trials a plan creates.
fn created(p: &orchestra_operator::planner::Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateTrial { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn trials_that_learn_from_the_d1_trial_start_once_it_succeeded() {
    let mut s = spec(4, 1, 3);
    s.hyper.distill = Some(orchestra_api::Distill {
        from: "trial:e-d1-000".into(),
        weight: 1.0,
        loss: Default::default(),
    });
    s.hyper.warm_start = Some("trial:e-d1-000".into());
    s.validate("e", "test")
        .expect("a D1 trial of the Experiment is a valid source");
    // The trials' specs: D1 learns from nobody and says so; D4 carries both sources.
    let params = Default::default();
    let d1 = s.trial_spec("e-d1-000", "e", orchestra_api::Variant::D1, &params);
    assert!(d1.hyper.warm_start.is_none() && d1.hyper.distill.is_none());
    let d4 = s.trial_spec("e-d4-000", "e", orchestra_api::Variant::D4, &params);
    assert_eq!(d4.hyper.warm_start.as_deref(), Some("trial:e-d1-000"));
    assert!(d4.hyper.distill.is_some());
    // Only D1 starts; the free slots wait rather than run trials that cannot start.
    let p = plan("e", &s, &[], 100, &CFG);
    assert_eq!(created(&p), ["e-d1-000"]);
    assert_eq!(p.phase, ExperimentPhase::Running);
    let running = [observed("e-d1-000", TrialPhase::Running, 1, 100)];
    assert!(created(&plan("e", &s, &running, 200, &CFG)).is_empty());
    // Once it succeeded, the compressing trials start, up to the parallelism.
    let done = [observed("e-d1-000", TrialPhase::Succeeded, 1, 100)];
    let p = plan("e", &s, &done, 300, &CFG);
    assert_eq!(created(&p), ["e-d2-000", "e-d3-000", "e-d4-000", "e-d4-001"]);
    // A source that failed holds nothing back: the trials start and their workers say why
    // they cannot (the Experiment does not wait forever).
    let failed = [observed("e-d1-000", TrialPhase::Failed, 3, 100)];
    assert_eq!(created(&plan("e", &s, &failed, 300, &CFG)).len(), 4);
    // Sources in the Experiment must be its D1 trials (a D4 reading a D4 would wait on itself).
    // D1 comes first in spec.variants, yet a source that is not one is still caught.
    for bad in [
        "trial:e-d4-000",
        "trial:other-d1-000",
        "trial:e-d1-x",
        "ftp://runs/e/t",
    ] {
        s.hyper.warm_start = Some(bad.into());
        let e = s.validate("e", "test").expect_err(bad);
        assert!(e.to_string().contains("spec.hyper.warmStart"), "{e}");
    }
    s.hyper.warm_start = Some("s3://runs/isic/isic-d1-000".into());
    s.validate("e", "test")
        .expect("a trial in a store is a valid source");
    s.variants = vec![orchestra_api::Variant::D4];
    s.hyper.distill = None;
    let p = plan("e", &s, &[], 100, &CFG);
    assert_eq!(
        created(&p),
        ["e-d4-000", "e-d4-001", "e-d4-002"],
        "a stored source is not waited for"
    );
}

#[test]
fn a_suspended_experiment_stops_its_gangs_gives_back_the_attempts_and_resumes() {
    let mut s = spec(2, 0, 3);
    s.suspend = true;
    let obs = [
        observed("e-d1-000", TrialPhase::Succeeded, 1, 100),
        observed("e-d2-000", TrialPhase::Running, 2, 100),
        observed("e-d3-000", TrialPhase::Running, 1, 100),
        observed("e-d4-000", TrialPhase::AttemptFailed, 1, 100),
    ];
    let p = plan("e", &s, &obs, 1_000, &CFG);
    assert_eq!(
        p.actions,
        [
            Action::SuspendTrial {
                name: "e-d2-000".into()
            },
            Action::SuspendTrial {
                name: "e-d3-000".into()
            },
        ],
        "running gangs stop; no restart, no new trial"
    );
    assert_eq!(p.phase, ExperimentPhase::Suspended);
    assert!(p.message.contains("3 trials wait"), "{}", p.message);
    // Resumed: the suspended trials (now Pending with their attempts given back) start again
    // with the same attempt numbers, before any new candidate.
    s.suspend = false;
    let resumed = [
        observed("e-d1-000", TrialPhase::Succeeded, 1, 100),
        observed("e-d2-000", TrialPhase::Pending, 1, 1_000),
        observed("e-d3-000", TrialPhase::Pending, 0, 1_000),
        observed("e-d4-000", TrialPhase::AttemptFailed, 1, 100),
    ];
    let p = plan("e", &s, &resumed, 1_010, &CFG);
    assert_eq!(
        p.actions,
        [
            Action::StartTrial {
                name: "e-d4-000".into(),
                attempt: 2,
                until: 10,
                promotion: false
            },
            Action::StartTrial {
                name: "e-d2-000".into(),
                attempt: 2,
                until: 10,
                promotion: false
            },
        ]
    );
    assert_eq!(p.phase, ExperimentPhase::Running);
    // A finished Experiment stays finished when suspended.
    let mut done = spec(1, 0, 3);
    done.search.clear();
    done.variants = vec![orchestra_api::Variant::D1];
    done.suspend = true;
    let p = plan(
        "e",
        &done,
        &[observed("e-d1-000", TrialPhase::Succeeded, 1, 100)],
        1_000,
        &CFG,
    );
    assert_eq!((p.phase, p.actions.len()), (ExperimentPhase::Succeeded, 0));
}

#[test]
fn parallelism_max_trials_and_the_failure_budget_take_effect_when_edited() {
    let mut s = spec(1, 0, 3);
    let obs = [observed("e-d1-000", TrialPhase::Running, 1, 100)];
    assert!(
        plan("e", &s, &obs, 200, &CFG).actions.is_empty(),
        "one slot, taken"
    );
    // parallelism 1 -> 3: two more trials start at the next look.
    s.parallelism = 3;
    let starts = plan("e", &s, &obs, 200, &CFG)
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StartTrial { .. }))
        .count();
    assert_eq!(starts, 2);
    // maxTrials lowered to what already exists: nothing new, and the Experiment ends with them.
    s.max_trials = Some(1);
    let p = plan("e", &s, &obs, 200, &CFG);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let done = [observed("e-d1-000", TrialPhase::Succeeded, 1, 300)];
    assert_eq!(plan("e", &s, &done, 300, &CFG).phase, ExperimentPhase::Succeeded);
    // maxFailedTrials raised: a failed trial no longer fails the Experiment.
    s.max_trials = None;
    let failed = [observed("e-d1-000", TrialPhase::Failed, 3, 300)];
    assert_eq!(plan("e", &s, &failed, 300, &CFG).phase, ExperimentPhase::Failed);
    s.max_failed_trials = 1;
    assert_eq!(plan("e", &s, &failed, 300, &CFG).phase, ExperimentPhase::Running);
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
            attempt: 2,
            until: 10,
            promotion: false
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

/// Counterpart on the real control plane: `cluster_faults.rs`, where a deleted rank's gang and
/// a suspended gang leave pods terminating while the planner would start the next gang.
#[test]
fn a_trial_whose_earlier_gang_still_runs_waits_for_it_and_keeps_its_place() {
    let s = spec(2, 5, 3);
    let draining = |name: &str, phase: TrialPhase, attempts: u32| ObservedTrial {
        draining: true,
        ..observed(name, phase, attempts, 0)
    };
    let obs = [
        draining("e-d1-000", TrialPhase::AttemptFailed, 1),
        draining("e-d2-000", TrialPhase::Pending, 0),
    ];
    let p = plan("e", &s, &obs, 1000, &CFG);
    assert!(
        p.actions.is_empty(),
        "nothing starts while the earlier gangs' pods run, and no new trial takes their places: {:?}",
        p.actions
    );
    assert_eq!(p.requeue_after, Some(DRAIN_RECHECK), "looked at again soon");
    assert_eq!(p.phase, ExperimentPhase::Running);

    // One drained: it starts (the restart from its checkpoint), the other still waits.
    let obs = [
        observed("e-d1-000", TrialPhase::AttemptFailed, 1, 0),
        draining("e-d2-000", TrialPhase::Pending, 0),
    ];
    let p = plan("e", &s, &obs, 1000, &CFG);
    let started: Vec<&str> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StartTrial { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["e-d1-000"], "{:?}", p.actions);

    // A running trial's own gang is not draining: a stale flag on it changes nothing.
    let obs = [
        draining("e-d1-000", TrialPhase::Running, 1),
        observed("e-d2-000", TrialPhase::Pending, 0, 0),
    ];
    let p = plan("e", &s, &obs, 1000, &CFG);
    assert!(
        matches!(&p.actions[..], [Action::StartTrial { name, .. }] if name == "e-d2-000"),
        "{:?}",
        p.actions
    );
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
                name: "e-d3-000".into(),
                reason: "stopped: the Experiment failed".into()
            },
            Action::StopTrial {
                name: "e-d4-000".into(),
                reason: "stopped: the Experiment failed".into()
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
                Action::StartTrial { name, attempt, .. } => {
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
                Action::StopTrial { name, .. } => {
                    let t = self.trials.get_mut(name).unwrap();
                    assert!(!t.phase.is_terminal());
                    t.phase = TrialPhase::Stopped;
                }
                Action::SuspendTrial { name } => {
                    let t = self.trials.get_mut(name).unwrap();
                    assert_eq!(t.phase, TrialPhase::Running, "{name} suspended while not running");
                    t.phase = TrialPhase::Pending;
                    t.attempts -= 1;
                    t.since = now;
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
        let mut s = spec(parallelism, max_failed, max_attempts);
        let mut world = World { trials: BTreeMap::new(), created: Vec::new() };
        let mut now = 0u64;
        let mut events = events.into_iter().cycle();
        let mut finished_phase = None;
        for round in 0..2000 {
            // Suspended now and then (an event of kind 9), never after round 1500.
            s.suspend = s.suspend && round < 1500;
            let obs: Vec<ObservedTrial> = world.trials.values().cloned().collect();
            let p = plan("e", &s, &obs, now, &CFG);
            world.apply(&p.actions, now, max_attempts);
            let running = world.trials.values().filter(|t| t.phase == TrialPhase::Running).count();
            prop_assert!(running <= parallelism as usize, "{running} running > {parallelism}");
            if s.suspend && p.phase == ExperimentPhase::Suspended {
                prop_assert_eq!(running, 0, "gangs run while suspended");
            }
            if !matches!(p.phase, ExperimentPhase::Running | ExperimentPhase::Suspended) {
                prop_assert!(world.trials.values().all(|t| t.phase.is_terminal()), "ended with open trials");
                finished_phase = Some(p.phase);
                break;
            }
            // One observation changes: some running trial finishes its attempt, or time passes.
            let (pick, outcome) = events.next().unwrap();
            if outcome == 9 && round < 1500 {
                s.suspend = !s.suspend;
                now += 7;
                continue;
            }
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

/// An arbitrary Experiment spec as JSON: sizes and values from the ordinary to the absurd
/// (billions of points, i64 extremes, 1e308), unknown parameters, empty lists.
fn arbitrary_spec() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let names = prop_oneof![
        12 => proptest::sample::select(
            orchestra_api::SWEEPABLE
                .iter()
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
        ),
        1 => Just("notAParameter".to_string()),
    ];
    let real = prop_oneof![-1e308f64..1e308, -2.0f64..2.0, Just(0.0), 1e-9f64..1e-1];
    let int = prop_oneof![any::<i64>(), -5i64..300, Just(i64::MAX), Just(i64::MIN)];
    let points = proptest::option::of(prop_oneof![any::<u32>(), 0u32..50]);
    let space = prop_oneof![
        proptest::collection::vec(real.clone(), 0..6).prop_map(|v| json!({"type": "list", "values": v})),
        (real.clone(), real.clone(), points.clone())
            .prop_map(|(a, b, p)| json!({"type": "uniform", "min": a, "max": b, "points": p})),
        (real.clone(), real, points)
            .prop_map(|(a, b, p)| json!({"type": "logUniform", "min": a, "max": b, "points": p})),
        (int.clone(), int.clone(), int)
            .prop_map(|(a, b, s)| json!({"type": "intRange", "min": a, "max": b, "step": s})),
    ];
    let algorithm = prop_oneof![
        Just(json!({"type": "grid"})),
        (any::<u64>(), prop_oneof![any::<u32>(), 0u32..20])
            .prop_map(|(seed, samples)| json!({"type": "random", "seed": seed, "samples": samples})),
    ];
    (
        prop_oneof![
            9 => proptest::sample::subsequence(vec!["D1", "D2", "D3", "D4"], 1..=4),
            1 => Just(vec![]),
        ],
        proptest::collection::btree_map(names, space, 0..4),
        algorithm,
        proptest::option::of(prop_oneof![any::<u32>(), 0u32..10]),
        prop_oneof![any::<u64>(), 0u64..100],
        prop_oneof![any::<u32>(), 0u32..6],
        prop_oneof![any::<u32>(), 1u32..16],
    )
        .prop_map(
            |(variants, search, algorithm, max_trials, steps, parallelism, batch)| {
                json!({
                    "dataset": "synthetic://lesion", "model": {"inputSize": 64}, "store": "memory://p",
                    "variants": variants, "search": search, "algorithm": algorithm,
                    "maxTrials": max_trials, "steps": steps, "parallelism": parallelism,
                    "hyper": {"batchSize": batch},
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the spec, validation answers (never panics), and a spec it accepts gives a
    /// bounded candidate list and a plan without panicking: the operator runs this code on
    /// every Experiment in the cluster.
    #[test]
    fn arbitrary_specs_are_validated_and_planned_without_panic_or_unbounded_work(json in arbitrary_spec()) {
        let Ok(spec) = serde_json::from_value::<ExperimentSpec>(json.clone()) else {
            return Ok(());
        };
        if spec.validate("e", "prop").is_err() {
            return Ok(());
        }
        let candidates = orchestra_operator::candidates::candidates("e", &spec);
        let bound = orchestra_api::experiment::MAX_CANDIDATES_PER_VARIANT as usize * spec.variants.len();
        prop_assert!(candidates.len() <= bound, "{} candidates: {json}", candidates.len());
        if let Some(max) = spec.max_trials {
            prop_assert!(candidates.len() <= max as usize);
        }
        let p = plan("e", &spec, &[], 0, &CFG);
        let starts = p.actions.iter().filter(|a| matches!(a, Action::StartTrial { .. })).count();
        prop_assert!(starts <= spec.parallelism.max(1) as usize, "{json}");
    }
}

/// A spec that searches with early stopping: 4 variants x 3 rate weights under `algorithm`.
fn searching(parallelism: u32, algorithm: &str, objective: &str) -> ExperimentSpec {
    let text = format!(
        "dataset: synthetic://lesion\nmodel: {{ inputSize: 64 }}\nvariants: [D2, D3, D4]\nsteps: 90\n\
         store: memory://p\nparallelism: {parallelism}\nmaxFailedTrials: 40\nmaxAttempts: 2\n\
         search: {{ lambdaRate: {{ type: list, values: [0.1, 0.2, 0.4, 0.8] }}, lr: {{ type: list, values: [0.001, 0.002, 0.004] }} }}\n\
         algorithm: {algorithm}\nobjective: {objective}\n"
    );
    let s: ExperimentSpec = serde_yaml::from_str(&text).unwrap();
    s.validate("e", "test").unwrap();
    s
}

/// A trial's made-up score at a step, the same whenever asked: Dice and bpp from a hash of
/// the name, Dice rising with the steps.
fn score_of(name: &str, step: u64) -> orchestra_api::RungScore {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let quality = (h % 1000) as f64 / 1000.0;
    orchestra_api::RungScore {
        step,
        bpp: 0.002 + ((h >> 20) % 1000) as f64 / 1000.0 * 0.02,
        dice: quality * (1.0 - 1.0 / (1.0 + step as f64 / 30.0)),
    }
}

/// The search's world: gangs finish at their targets (a rung record, or the result), fail, or
/// the Experiment is suspended; every decision is logged.
struct SearchWorld {
    trials: BTreeMap<String, ObservedTrial>,
    created: Vec<String>,
    log: Vec<String>,
}

impl SearchWorld {
    fn apply(&mut self, actions: &[Action], spec: &ExperimentSpec, now: u64) -> Result<(), TestCaseError> {
        let ladder = |name: &str| -> Vec<u64> {
            let all = orchestra_operator::candidates::candidates("e", spec);
            let i = all.iter().position(|c| c.name == name).unwrap();
            let schedule = spec.algorithm.schedule(spec.steps);
            schedule.rungs(i % schedule.brackets(), spec.steps)
        };
        for a in actions {
            self.log.push(format!("{a:?}"));
            match a {
                Action::CreateTrial { name, .. } => {
                    prop_assert!(!self.created.contains(name), "{} created twice", name);
                    self.created.push(name.clone());
                    self.trials.insert(
                        name.clone(),
                        ObservedTrial::new(name, TrialPhase::Pending, 0, now),
                    );
                }
                Action::StartTrial {
                    name,
                    attempt,
                    until,
                    promotion,
                } => {
                    let rungs = ladder(name);
                    let before = self.trials[name].clone();
                    prop_assert!(
                        rungs.contains(until),
                        "{} started to {} off its ladder {:?}",
                        name,
                        until,
                        rungs
                    );
                    prop_assert!(*until <= spec.steps);
                    prop_assert_eq!(*attempt, before.attempts + 1);
                    if *promotion {
                        prop_assert_eq!(
                            before.phase,
                            TrialPhase::Paused,
                            "{} promoted while {:?}",
                            name,
                            before.phase
                        );
                        let next = rungs.iter().find(|r| **r > before.target).copied();
                        prop_assert_eq!(Some(*until), next, "{} promoted past its next rung", name);
                        check_rung_budget(spec, &self.trials, name, before.target, &ladder)?;
                    } else {
                        prop_assert!(matches!(
                            before.phase,
                            TrialPhase::Pending | TrialPhase::AttemptFailed
                        ));
                        prop_assert!(
                            before.target == 0 || before.target == *until,
                            "{} restarted to another target",
                            name
                        );
                        prop_assert!(attempt - before.promotions <= spec.max_attempts);
                    }
                    let t = self.trials.get_mut(name).unwrap();
                    t.promotions += u32::from(*promotion);
                    t.phase = TrialPhase::Running;
                    t.attempts = *attempt;
                    t.target = *until;
                    t.since = now;
                }
                Action::FailTrial { name, .. } => {
                    let t = self.trials.get_mut(name).unwrap();
                    prop_assert_eq!(t.phase, TrialPhase::AttemptFailed);
                    t.phase = TrialPhase::Failed;
                }
                Action::StopTrial { name, .. } => {
                    let t = self.trials.get_mut(name).unwrap();
                    prop_assert!(!t.phase.is_terminal());
                    t.phase = TrialPhase::Stopped;
                }
                Action::SuspendTrial { name } => {
                    let t = self.trials.get_mut(name).unwrap();
                    prop_assert_eq!(t.phase, TrialPhase::Running);
                    t.phase = TrialPhase::Pending;
                    t.attempts -= 1;
                }
            }
        }
        Ok(())
    }

    /// A running gang reaches its target: a rung record (Paused) or the result (Succeeded).
    fn reach(&mut self, name: &str, steps: u64, now: u64) {
        let t = self.trials.get_mut(name).unwrap();
        t.rungs.push(score_of(name, t.target));
        t.phase = if t.target < steps {
            TrialPhase::Paused
        } else {
            TrialPhase::Succeeded
        };
        t.since = now;
    }
}

/// Successive halving promotes `name` from the rung at `step` only if it is in the top
/// floor(n / eta) of the n trials of its bracket there, ranked by the Experiment's objective;
/// or, when nothing else can reach the rung and no trial of the bracket went all the way, as
/// the best of those waiting there.
fn check_rung_budget(
    spec: &ExperimentSpec,
    trials: &BTreeMap<String, ObservedTrial>,
    name: &str,
    step: u64,
    ladder: &dyn Fn(&str) -> Vec<u64>,
) -> Result<(), TestCaseError> {
    let orchestra_api::Schedule::Halving { eta, .. } = spec.algorithm.schedule(spec.steps) else {
        return Ok(());
    };
    let mine = ladder(name);
    let peers: Vec<&ObservedTrial> = trials
        .values()
        .filter(|t| ladder(&t.name) == mine && t.rungs.iter().any(|r| r.step == step))
        .collect();
    let points: Vec<(f64, f64)> = peers
        .iter()
        .map(|t| {
            let r = t.rungs.iter().find(|r| r.step == step).unwrap();
            (r.bpp, r.dice)
        })
        .collect();
    let order: Vec<usize> = match spec.objective.effective_mode() {
        orchestra_api::ObjectiveMode::Pareto => {
            orchestra_report::pareto::pareto_order(&points, spec.objective.reference_bpp, |a, b| {
                peers[a].name.cmp(&peers[b].name)
            })
        }
        orchestra_api::ObjectiveMode::Budget => {
            let budget = spec.objective.bpp_budget.unwrap();
            let key = |i: usize| {
                if points[i].0 <= budget {
                    points[i].1
                } else {
                    -points[i].0 / budget
                }
            };
            let mut o: Vec<usize> = (0..points.len()).collect();
            o.sort_by(|&a, &b| {
                key(b)
                    .total_cmp(&key(a))
                    .then_with(|| peers[a].name.cmp(&peers[b].name))
            });
            o
        }
    };
    let rank = order.iter().position(|&i| peers[i].name == name).unwrap();
    if rank < peers.len() / eta as usize {
        return Ok(());
    }
    // The end of a bracket: nothing else can come, and the best waiting trial goes on.
    let quiet = trials.values().all(|t| {
        !matches!(
            t.phase,
            TrialPhase::Running | TrialPhase::Pending | TrialPhase::AttemptFailed
        )
    });
    let all_created = orchestra_operator::candidates::candidates("e", spec).len() == trials.len();
    let none_at_top = peers
        .iter()
        .all(|t| !(t.target == spec.steps && t.phase == TrialPhase::Succeeded));
    let waiting: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| peers[i].phase == TrialPhase::Paused && peers[i].target == step)
        .collect();
    prop_assert!(
        quiet && all_created && none_at_top && waiting.first().map(|&i| peers[i].name.as_str()) == Some(name),
        "{} promoted from step {} at rank {} of {} (eta {}); quiet {} all created {} none at top {} waiting {:?}; {:?}",
        name, step, rank, peers.len(), eta, quiet, all_created, none_at_top,
        waiting.iter().map(|&i| &peers[i].name).collect::<Vec<_>>(),
        peers.iter().map(|t| (&t.name, t.phase, t.target)).collect::<Vec<_>>()
    );
    Ok(())
}

/// Runs a search to its end under random interleavings; returns the decisions.
fn run_search(
    spec: &mut ExperimentSpec,
    events: &[(usize, u8)],
) -> Result<(Vec<String>, BTreeMap<String, ObservedTrial>), TestCaseError> {
    let mut world = SearchWorld {
        trials: BTreeMap::new(),
        created: Vec::new(),
        log: Vec::new(),
    };
    let mut now = 0u64;
    let mut events = events.iter().cycle();
    for round in 0..5000 {
        spec.suspend = spec.suspend && round < 3000;
        let obs: Vec<ObservedTrial> = world.trials.values().cloned().collect();
        let p = plan("e", spec, &obs, now, &CFG);
        world.apply(&p.actions, spec, now)?;
        let running = world
            .trials
            .values()
            .filter(|t| t.phase == TrialPhase::Running)
            .count();
        prop_assert!(running <= spec.parallelism as usize);
        if !matches!(p.phase, ExperimentPhase::Running | ExperimentPhase::Suspended) {
            prop_assert!(
                world.trials.values().all(|t| t.phase.is_terminal()),
                "ended with open trials"
            );
            return Ok((world.log, world.trials));
        }
        let &(pick, outcome) = events.next().unwrap();
        if outcome == 9 && round < 3000 {
            spec.suspend = !spec.suspend;
        } else {
            let running: Vec<String> = world
                .trials
                .values()
                .filter(|t| t.phase == TrialPhase::Running)
                .map(|t| t.name.clone())
                .collect();
            if !running.is_empty() {
                let name = running[pick % running.len()].clone();
                if outcome < 8 {
                    world.reach(&name, spec.steps, now);
                } else {
                    let t = world.trials.get_mut(&name).unwrap();
                    t.phase = TrialPhase::AttemptFailed;
                    t.since = now;
                }
            }
        }
        now += 11;
    }
    Err(TestCaseError::fail("the search never ended"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// ASHA, Hyperband and the median rule under random interleavings of finishing, failing and
    /// suspended gangs: no trial is promoted twice from a rung, past its next rung or past
    /// `steps`; successive halving promotes at most the top 1/eta of each rung (one more per
    /// bracket when none went all the way); every trial ends terminal and the Experiment ends
    /// with a trial trained to `steps`; the same inputs give the same decisions.
    #[test]
    fn searches_promote_within_their_rung_budgets_and_always_end(
        parallelism in 1u32..5,
        algorithm in 0usize..5,
        events in proptest::collection::vec((0usize..8, 0u8..10), 1..300),
    ) {
        let (algo, objective) = [
            ("{ type: asha, sampler: grid, seed: 3, eta: 3, minSteps: 10 }", "{ mode: pareto, referenceBpp: 0.05 }"),
            ("{ type: asha, sampler: random, seed: 5, samples: 7, eta: 2, minSteps: 10 }", "{ bppBudget: 0.012 }"),
            ("{ type: hyperband, sampler: sobol, seed: 1, samples: 9, eta: 3, minSteps: 10 }", "{ mode: pareto, referenceBpp: 0.05 }"),
            ("{ type: medianStop, sampler: grid, seed: 2, minSteps: 30, minTrials: 2 }", "{ mode: pareto, referenceBpp: 0.05 }"),
            ("{ type: grid }", "{}"),
        ][algorithm];
        let mut spec = searching(parallelism, algo, objective);
        let (log, trials) = run_search(&mut spec.clone(), &events)?;
        let (again, _) = run_search(&mut spec, &events)?;
        prop_assert_eq!(&log, &again, "same inputs, other decisions");
        let succeeded = trials.values().filter(|t| t.phase == TrialPhase::Succeeded).count();
        prop_assert!(succeeded > 0 || trials.values().all(|t| t.phase != TrialPhase::Stopped || t.rungs.is_empty()),
            "the search stopped every trial early: {:?}", trials.values().map(|t| (&t.name, t.phase, t.target, t.rungs.len())).collect::<Vec<_>>());
    }
}
