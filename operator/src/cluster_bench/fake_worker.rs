//! The workers of the benchmark's trials: no process runs (KWOK plays the kubelet), so this
//! watches the gangs' pods and, when one starts running, writes its trial's result to the store
//! as the worker would, before KWOK completes the pod (CLUSTER_KWOK_POD_S later). The operator
//! then sees the Job complete and reads the result the normal way. The result's rate follows the
//! trial's swept `lambdaRate` (read from the store, where the operator wrote it) and its Dice
//! the rate, so that the leaderboard has a front to rank.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use orchestra_store::layout::{self, TrialKeys};
use orchestra_store::Store;

use crate::bench::{synthetic_dice, synthetic_result};
use crate::k8s::names::{LABEL_EXPERIMENT, LABEL_TRIAL, MANAGER};

/// What the watch has seen so far.
#[derive(Debug, Default)]
pub struct Tally {
    /// Pods running now.
    pub running: HashSet<String>,
    /// Each trial's first running pod: seconds from the start of the benchmark.
    pub started: HashMap<String, f64>,
    pub results_written: usize,
    /// Store writes that failed (the trial then fails its attempt: counted, not hidden).
    pub write_failures: usize,
}

/// A rate that falls as the rate weight rises, over the range D4 reaches on ISIC.
fn rate_for(lambda_rate: f64) -> f64 {
    0.001 + 0.02 / (1.0 + 20.0 * lambda_rate.max(0.0))
}

/// A deterministic jitter in [-0.02, 0.02] from the trial's name.
fn noise_of(trial: &str) -> f64 {
    let h = trial.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % 4001) as f64 / 100_000.0 - 0.02
}

/// The store is opened where it is used, off the async threads (its calls block on a runtime
/// of their own, which may neither run nor be dropped on an async thread).
async fn write_result_blocking(uri: &str, experiment: &str, trial: &str, steps: u64) -> Result<(), String> {
    let (uri, experiment, trial) = (uri.to_string(), experiment.to_string(), trial.to_string());
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&uri).map_err(|e| e.to_string())?;
        write_result(&store, &experiment, &trial, steps)
    })
    .await
    .map_err(|e| format!("the store task failed: {e}"))?
}

/// The result a worker of `trial` would leave (see the module's comment).
pub fn write_result(store: &Store, experiment: &str, trial: &str, steps: u64) -> Result<(), String> {
    let keys = TrialKeys::new(experiment, trial);
    let params = layout::read_params(store, &keys).map_err(|e| e.to_string())?;
    let bpp = rate_for(params.get("lambdaRate").copied().unwrap_or(0.1));
    let result = synthetic_result(
        experiment,
        trial,
        steps,
        bpp,
        synthetic_dice(bpp, noise_of(trial)),
    );
    let bytes = serde_json::to_vec_pretty(&result).expect("results serialise");
    store.put(&keys.result(), bytes).map_err(|e| e.to_string())
}

fn label<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Watches the operator's pods in `namespace` until aborted, keeping `tally`.
pub async fn run(pods: Api<Pod>, store: String, steps: u64, t0: Instant, tally: Arc<Mutex<Tally>>) {
    let config = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let mut events = watcher(pods, config).boxed();
    while let Some(event) = events.next().await {
        let (pod, deleted) = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch: retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let running = !deleted && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let (Some(experiment), Some(trial)) = (label(&pod, LABEL_EXPERIMENT), label(&pod, LABEL_TRIAL))
        else {
            continue;
        };
        // A trial's first running pod (the tally's `started` says which trials have had one).
        let first_run = running
            && !tally
                .lock()
                .expect("the tally's lock is never poisoned")
                .started
                .contains_key(trial);
        let outcome = if first_run {
            Some(write_result_blocking(&store, experiment, trial, steps).await)
        } else {
            None
        };
        let mut t = tally.lock().expect("the tally's lock is never poisoned");
        if running {
            t.running.insert(name);
            t.started
                .entry(trial.to_string())
                .or_insert_with(|| t0.elapsed().as_secs_f64());
        } else {
            t.running.remove(&name);
        }
        match outcome {
            Some(Ok(())) => t.results_written += 1,
            Some(Err(e)) => {
                tracing::warn!(%trial, error = %e, "could not write the trial's result");
                t.write_failures += 1;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_gets_a_finished_result_whose_rate_follows_its_weight() {
        let store = Store::open("memory://fake-worker").unwrap();
        let keys = TrialKeys::new("e", "e-d4-001");
        store
            .put(&keys.params(), br#"{"lambdaRate": 1.0}"#.to_vec())
            .unwrap();
        write_result(&store, "e", "e-d4-001", 10).unwrap();
        write_result(&store, "e", "e-d4-002", 10).unwrap();
        let read = |t: &str| {
            orchestra_store::layout::finished_result(&store, &TrialKeys::new("e", t), 10)
                .unwrap()
                .expect("a finished result")
        };
        let (heavy, light) = (read("e-d4-001"), read("e-d4-002"));
        let bpp = |r: &orchestra_api::TrialResult| r.rate.as_ref().unwrap().bpp_estimate;
        assert!(bpp(&heavy) < bpp(&light), "a higher rate weight, a lower rate");
        assert!((0.0..=1.0).contains(&heavy.scores.dice));
        assert!(noise_of("a").abs() <= 0.02 && noise_of("a") != noise_of("b"));
    }
}
