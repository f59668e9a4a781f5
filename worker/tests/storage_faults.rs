//! An S3 server that stops in the middle of a checkpoint: a loopback proxy in front of moto
//! cuts every connection at a chosen PUT. Writes are retried; when the server stays away the
//! trial fails naming the object, and the partial checkpoint is never loaded on resume.

mod common;

use std::time::Duration;

use common::tiny_spec;
use orchestra_api::{TrialSpec, Variant};
use orchestra_store::moto::{create_bucket, point_at, start_moto, CuttableProxy, SERIAL};
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::{run_trial, Outcome, RunOptions};

fn spec(store: &str, trial: &str) -> TrialSpec {
    TrialSpec {
        steps: 12,
        checkpoint_every: 4,
        keep_checkpoints: 3,
        ..tiny_spec(Variant::D4, store, trial)
    }
}

/// Options without progress records: the scenarios count the checkpoint's PUTs, and a
/// progress.json written in between would move the cut.
fn checkpoints_only() -> RunOptions {
    RunOptions {
        progress_every: std::time::Duration::ZERO,
        ..Default::default()
    }
}

fn finished(spec: &TrialSpec, opts: &RunOptions) -> orchestra_api::TrialResult {
    match run_trial(spec, opts).unwrap() {
        Outcome::Finished(r) => *r,
        Outcome::Paused { step, .. } => panic!("paused at {step}"),
    }
}

#[test]
fn a_server_that_stops_mid_checkpoint_never_leaves_a_loadable_partial_checkpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "faults");
    let proxy = CuttableProxy::start(moto.port);
    let twin = finished(&spec("memory://faults-twin", "cut"), &RunOptions::default());

    // The checkpoint at step 4 is PUTs 1-6 (metrics, the TensorBoard events, weights,
    // optimizer, state, latest); the one at step 8 starts with PUT 7 (metrics), 8 (events),
    // 9 (weights): the server goes at PUT 10.
    point_at(proxy.port);
    proxy.cut_at_put(10);
    let err = run_trial(&spec("s3://faults/runs", "cut"), &checkpoints_only())
        .err()
        .expect("the trial fails while the server is away")
        .to_string();
    assert!(proxy.is_down());
    assert!(
        err.contains("put") && err.contains("step-00000008/optimizer.safetensors"),
        "the error names the object that could not be written: {err}"
    );

    // What the server holds: step 8's weights, but `latest` still names step 4.
    point_at(moto.port);
    let ts = TrialStore::new(Store::open("s3://faults/runs").unwrap(), "tests", "cut");
    assert_eq!(ts.latest_step().unwrap(), Some(4));
    assert!(ts.store.get(&ts.keys.weights(8)).unwrap().is_some());
    assert!(ts.store.get(&ts.keys.checkpoint_state(8)).unwrap().is_none());

    // Back again: the resumed trial starts from step 4 and ends exactly where the twin did.
    let resumed = finished(
        &spec("s3://faults/runs", "cut"),
        &RunOptions {
            resume: true,
            ..checkpoints_only()
        },
    );
    assert_eq!(resumed.scores, twin.scores);
    assert_eq!(resumed.rate, twin.rate);
    assert_eq!(ts.latest_step().unwrap(), Some(12));
}

#[test]
fn a_server_that_comes_back_within_the_retries_costs_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "blips");
    let proxy = std::sync::Arc::new(CuttableProxy::start(moto.port));
    let twin = finished(&spec("memory://blips-twin", "blip"), &RunOptions::default());

    point_at(proxy.port);
    // Down at step 4's weights (PUT 3, after the metrics and the TensorBoard events); back
    // 300 ms later, inside the writer's retry backoff.
    proxy.cut_at_put(3);
    let p = proxy.clone();
    let watcher = std::thread::spawn(move || {
        while !p.is_down() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
        p.restore();
    });
    let result = finished(&spec("s3://blips/runs", "blip"), &checkpoints_only());
    watcher.join().unwrap();
    assert!(proxy.puts() > 3, "the cut happened");
    assert_eq!(result.scores, twin.scores);
    let ts = TrialStore::new(Store::open("s3://blips/runs").unwrap(), "tests", "blip");
    assert_eq!(ts.latest_step().unwrap(), Some(12));
    assert!(
        ts.load(4).is_ok(),
        "the checkpoint written across the outage is whole"
    );
}
