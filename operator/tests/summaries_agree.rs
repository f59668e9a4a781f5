//! Both runners summarise the same trials the same way: one fixture (an Experiment, results in
//! a store, trials in every phase a restarted runner can find them in) seen by the local runner
//! through its state file and by the operator through Trial objects gives equal observations,
//! equal leaderboards and equal summaries.

use std::collections::BTreeMap;

mod support;

use support::results::result;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use orchestra_api::{ExperimentSpec, Trial, TrialPhase, TrialStatus};
use orchestra_operator::candidates::candidates;
use orchestra_operator::k8s::gang_job::GangJob;
use orchestra_operator::k8s::observe::{format_time, observe};
use orchestra_operator::leaderboard::rank;
use orchestra_operator::local::{LocalOptions, LocalRunner};
use orchestra_operator::planner::{plan, PlannerConfig};
use orchestra_operator::results::{self, read_finished};
use orchestra_operator::summary::Summary;
use orchestra_store::layout::TrialKeys;
use orchestra_store::Store;

const NOW: u64 = 1_000_000;

#[test]
fn the_local_runner_and_the_operator_summarise_one_fixture_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store_uri = format!("file://{}", dir.path().join("store").display());
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: agree }}
spec:
  dataset: synthetic://lesion
  model: {{ inputSize: 64 }}
  variants: [D2, D4]
  search: {{ lambdaRate: {{ type: list, values: [0.05, 0.2, 1.0] }} }}
  steps: 10
  parallelism: 1
  maxFailedTrials: 3
  maxAttempts: 2
  objective: {{ bppBudget: 0.01 }}
  store: {store_uri}
"
    );
    let exp = ExperimentSpec::parse_resource(&text, "agree.yaml").unwrap();
    let name = "agree";
    let all = candidates(name, &exp.spec);
    assert_eq!(all.len(), 4, "D2 once, D4 per lambdaRate");
    // Two finished with results, one out of attempts, one waiting for its restart (the planner
    // decides what happens to it, in both runners alike).
    let phases = [
        (TrialPhase::Succeeded, 1),
        (TrialPhase::Succeeded, 1),
        (TrialPhase::Failed, 2),
        (TrialPhase::AttemptFailed, 1),
    ];
    let store = Store::open(&store_uri).unwrap();
    for (i, c) in all.iter().enumerate().take(2) {
        let spec = exp.spec.trial_spec(&c.name, name, c.variant, &c.params);
        let keys = TrialKeys::new(name, &c.name);
        let r = result(
            name,
            &c.name,
            &spec,
            0.7 + 0.1 * i as f64,
            0.004 + 0.01 * i as f64,
        );
        store
            .put(&keys.result(), serde_json::to_vec(&r).unwrap())
            .unwrap();
        store
            .put(&keys.params(), serde_json::to_vec(&c.params).unwrap())
            .unwrap();
    }

    // The local runner, restarted on its state file.
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let records: BTreeMap<String, serde_json::Value> = all
        .iter()
        .zip(phases)
        .map(|(c, (phase, attempts))| {
            (
                c.name.clone(),
                serde_json::json!({"variant": c.variant, "params": c.params, "phase": phase, "attempts": attempts, "since": NOW - 100}),
            )
        })
        .collect();
    std::fs::write(
        run_dir.join("state.json"),
        serde_json::to_vec(&serde_json::json!({"experiment": name, "trials": records})).unwrap(),
    )
    .unwrap();
    let opts = LocalOptions {
        gpus: None,
        worker: "/bin/false".into(),
        jobs: 1,
        progress: false,
        progress_every: std::time::Duration::ZERO,
        planner: PlannerConfig::default(),
    };
    let mut runner = LocalRunner::new(exp.clone(), &run_dir, opts).unwrap();
    let (_, local_observed) = runner.look().unwrap();
    let (local_lb, _) = results::publish(&store, &exp, &run_dir).unwrap();

    // The operator, on Trial objects in the same phases.
    let trials: Vec<Trial> = all
        .iter()
        .zip(phases)
        .map(|(c, (phase, attempts))| Trial {
            metadata: ObjectMeta {
                name: Some(c.name.clone()),
                ..Default::default()
            },
            spec: exp.spec.trial_spec(&c.name, name, c.variant, &c.params),
            status: Some(TrialStatus {
                phase,
                attempts,
                finished_at: Some(format_time(NOW - 100)),
                ..Default::default()
            }),
        })
        .collect();
    let (k8s_observed, transitions) =
        observe(&trials, &[] as &[GangJob], &[] as &[Pod], NOW, 600, &mut |_| None);
    assert!(transitions.is_empty());
    let k8s_lb = rank(name, &read_finished(&store, name).unwrap(), &exp.spec.objective);

    assert_eq!(local_observed, k8s_observed);
    assert_eq!(local_lb, k8s_lb);
    let cfg = PlannerConfig::default();
    let local_plan = plan(name, &exp.spec, &local_observed, NOW, &cfg);
    let k8s_plan = plan(name, &exp.spec, &k8s_observed, NOW, &cfg);
    assert_eq!(local_plan, k8s_plan);
    let total = all.len();
    let local = Summary::after(&local_observed, &local_plan.actions, total, &local_lb);
    let k8s = Summary::after(&k8s_observed, &k8s_plan.actions, total, &k8s_lb);
    assert_eq!(local, k8s);
    // And the fixture is not trivial: both finished trials counted, the best one chosen.
    assert_eq!((local.succeeded, local.failed, local.total), (2, 1, 4));
    assert!(local.best.is_some());
}

#[test]
fn a_ranking_after_more_trials_ended_reads_only_the_new_ones_and_equals_one_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let store_uri = format!("file://{}", dir.path().display());
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: again }}
spec:
  dataset: synthetic://lesion
  model: {{ inputSize: 64 }}
  variants: [D4]
  search: {{ lambdaRate: {{ type: list, values: [0.05, 0.2, 1.0] }} }}
  steps: 10
  store: {store_uri}
"
    );
    let exp = ExperimentSpec::parse_resource(&text, "again.yaml").unwrap();
    let name = "again";
    let store = Store::open(&store_uri).unwrap();
    let finish = |i: usize| {
        let c = &candidates(name, &exp.spec)[i];
        let spec = exp.spec.trial_spec(&c.name, name, c.variant, &c.params);
        let keys = TrialKeys::new(name, &c.name);
        let r = result(name, &c.name, &spec, 0.6 + 0.1 * i as f64, 0.002 * (i + 1) as f64);
        store
            .put(&keys.result(), serde_json::to_vec(&r).unwrap())
            .unwrap();
        store
            .put(&keys.params(), serde_json::to_vec(&c.params).unwrap())
            .unwrap();
        keys
    };
    let mut read = results::ReadSoFar::default();
    let first = finish(0);
    assert_eq!(
        results::leaderboard_after(&store, &exp, &mut read)
            .unwrap()
            .entries
            .len(),
        1
    );
    finish(1);
    let from_scratch = results::leaderboard(&store, &exp).unwrap();
    assert_eq!(from_scratch.entries.len(), 2);
    // The first trial's result is damaged now: a ranking that read it again would fail.
    store.put(&first.result(), b"{ not json".to_vec()).unwrap();
    assert!(
        results::leaderboard(&store, &exp).is_err(),
        "a full read meets the damage"
    );
    let again = results::leaderboard_after(&store, &exp, &mut read).unwrap();
    assert_eq!(
        again, from_scratch,
        "only the new trial was read, and the ranking is the same"
    );
}
