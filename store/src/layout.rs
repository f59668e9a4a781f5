//! The store layout: the one place where an object's key is spelled, and the rules over the
//! objects (how a result is read, when a trial counts as finished, what `latest` may hold).
//!
//! ```text
//! <experiment>/experiment.yaml                          the Experiment, as the runner saw it
//! <experiment>/leaderboard.{json,md,svg,png}            rewritten whenever a trial finishes
//! <experiment>/<trial>/params.json                      the swept values, by whoever created the trial
//! <experiment>/<trial>/trial.yaml                       the trial's spec as its worker ran it, at its end
//! <experiment>/<trial>/step-<n>/weights.safetensors     every variable, BatchNorm statistics too
//! <experiment>/<trial>/step-<n>/optimizer.safetensors   Adam moments, per optimiser
//! <experiment>/<trial>/step-<n>/state.json              step, Adam step counts, byte sizes
//! <experiment>/<trial>/latest                           "step-<n>", written last
//! <experiment>/<trial>/metrics.jsonl                    one line per step, plus evaluations
//! <experiment>/<trial>/progress.json                    step, speed, losses, ETA while running
//! <experiment>/<trial>/rungs/step-<n>.json              scores at each evaluation and step target
//! <experiment>/<trial>/stopped.json                     the search stopped it early: step, reason
//! <experiment>/<trial>/result.json                      written last of all: the trial is done
//! ```
//!
//! Step folders are zero-padded to eight digits so that lexical order is step order.

use std::collections::BTreeMap;

use orchestra_api::{Experiment, RungRecord, StoppedTrial, TrialProgress, TrialResult};

use crate::{Store, StoreError};

/// The Experiment file, also the name of its copy in a local run folder.
pub const EXPERIMENT_FILE: &str = "experiment.yaml";
/// The stem of the leaderboard files (`.json`, `.md`, `.svg`, `.png`), in the store and in a
/// local run folder.
pub const LEADERBOARD_STEM: &str = "leaderboard";

const PARAMS: &str = "params.json";
const TRIAL_SPEC: &str = "trial.yaml";
const RESULT: &str = "result.json";
const METRICS: &str = "metrics.jsonl";
const PROGRESS: &str = "progress.json";
const RUNGS: &str = "rungs";
const STOPPED: &str = "stopped.json";
const LATEST: &str = "latest";
const STEP_PREFIX: &str = "step-";
/// How a checkpoint folder's name looks, for error messages.
pub const CHECKPOINT_DIR_FORM: &str = "step-<n>";
const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const CHECKPOINT_STATE: &str = "state.json";

/// Keys of one Experiment's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExperimentKeys {
    name: String,
}

impl ExperimentKeys {
    pub fn new(experiment: &str) -> ExperimentKeys {
        ExperimentKeys {
            name: experiment.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix every object of the Experiment lives under.
    pub fn prefix(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> String {
        format!("{}/{EXPERIMENT_FILE}", self.name)
    }

    /// `<experiment>/leaderboard.<extension>`.
    pub fn leaderboard(&self, extension: &str) -> String {
        format!("{}/{LEADERBOARD_STEM}.{extension}", self.name)
    }

    pub fn trial(&self, trial: &str) -> TrialKeys {
        TrialKeys::new(&self.name, trial)
    }

    /// The trial whose result `key` is (`<experiment>/<trial>/result.json`), if it is one.
    pub fn trial_of_result<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.trial_of(key, RESULT)
    }

    /// The trial whose early-stop record `key` is (`<experiment>/<trial>/stopped.json`).
    pub fn trial_of_stopped<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.trial_of(key, STOPPED)
    }

    /// The trial whose folder `key` lies in (`<experiment>/<trial>/...`), if it lies in one.
    pub fn trial_of_object<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.name.as_str())?.strip_prefix('/')?;
        let (trial, object) = rest.split_once('/')?;
        (!trial.is_empty() && !object.is_empty()).then_some(trial)
    }

    fn trial_of<'k>(&self, key: &'k str, object: &str) -> Option<&'k str> {
        key.strip_prefix(self.name.as_str())?
            .strip_prefix('/')?
            .strip_suffix(object)?
            .strip_suffix('/')
            .filter(|t| !t.is_empty() && !t.contains('/'))
    }

    /// The Experiment whose spec `key` is (`<experiment>/experiment.yaml`), if it is one.
    pub fn experiment_of_spec(key: &str) -> Option<&str> {
        key.strip_suffix(EXPERIMENT_FILE)?
            .strip_suffix('/')
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

/// Keys of one trial's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialKeys {
    /// `<experiment>/<trial>`
    base: String,
}

impl TrialKeys {
    pub fn new(experiment: &str, trial: &str) -> TrialKeys {
        TrialKeys {
            base: format!("{experiment}/{trial}"),
        }
    }

    /// The prefix every object of the trial lives under.
    pub fn prefix(&self) -> &str {
        &self.base
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    pub fn params(&self) -> String {
        self.key(PARAMS)
    }

    /// The spec the trial ran with, written just before its result: what a later trial that
    /// reads its weights rebuilds its model from, with or without an Experiment around it.
    pub fn spec(&self) -> String {
        self.key(TRIAL_SPEC)
    }

    pub fn result(&self) -> String {
        self.key(RESULT)
    }

    pub fn metrics(&self) -> String {
        self.key(METRICS)
    }

    /// The TensorBoard event file of one run of the trial (a start, or a resume after
    /// `first_step` steps) begun at `started` (seconds since the epoch): named so that a trial's
    /// files sort in the order they were written, which is the order TensorBoard reads them in.
    pub fn events(&self, started: u64, first_step: u64) -> String {
        format!(
            "{}/events.out.tfevents.{started:010}.orchestra-step-{first_step:08}",
            self.base
        )
    }

    pub fn latest(&self) -> String {
        self.key(LATEST)
    }

    pub fn progress(&self) -> String {
        self.key(PROGRESS)
    }

    /// The rung record at `step`: `rungs/step-<n>.json`.
    pub fn rung(&self, step: u64) -> String {
        format!("{}/{RUNGS}/{}.json", self.base, Self::checkpoint_dir(step))
    }

    pub fn stopped(&self) -> String {
        self.key(STOPPED)
    }

    /// The prefix of every rung record of the trial.
    pub fn rungs(&self) -> String {
        self.key(RUNGS)
    }

    /// The folder name of the checkpoint at `step`, as `latest` holds it.
    pub fn checkpoint_dir(step: u64) -> String {
        format!("{STEP_PREFIX}{step:08}")
    }

    /// The step a `latest` pointer (or a folder name) names, if it is well formed.
    pub fn parse_checkpoint_dir(text: &str) -> Option<u64> {
        let digits = text.trim().strip_prefix(STEP_PREFIX)?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// The step of the checkpoint folder that `key` lies in, if it lies in one of this trial's.
    pub fn checkpoint_step_of(&self, key: &str) -> Option<u64> {
        let rest = key.strip_prefix(self.base.as_str())?.strip_prefix('/')?;
        let (dir, object) = rest.split_once('/')?;
        Self::parse_checkpoint_dir(dir).filter(|_| !object.is_empty())
    }

    /// The step of the rung record `key` is, if it is one of this trial's.
    pub fn rung_step_of(&self, key: &str) -> Option<u64> {
        let name = key
            .strip_prefix(&self.rungs())?
            .strip_prefix('/')?
            .strip_suffix(".json")?;
        Self::parse_checkpoint_dir(name)
    }

    /// The prefix of the checkpoint at `step`.
    pub fn checkpoint(&self, step: u64) -> String {
        self.key(&Self::checkpoint_dir(step))
    }

    pub fn weights(&self, step: u64) -> String {
        format!("{}/{WEIGHTS}", self.checkpoint(step))
    }

    pub fn optimizer(&self, step: u64) -> String {
        format!("{}/{OPTIMIZER}", self.checkpoint(step))
    }

    pub fn checkpoint_state(&self, step: u64) -> String {
        format!("{}/{CHECKPOINT_STATE}", self.checkpoint(step))
    }
}

/// A trial's stored result, if there is one. A result that does not parse is an error naming
/// its key, never a missing result: a trial must not be retrained over a damaged record silently.
pub fn read_result(store: &Store, keys: &TrialKeys) -> Result<Option<TrialResult>, StoreError> {
    read_json(store, keys.result(), "a trial result")
}

/// A running trial's latest progress record, if its worker has written one.
pub fn read_progress(store: &Store, keys: &TrialKeys) -> Result<Option<TrialProgress>, StoreError> {
    read_json(store, keys.progress(), "a progress record")
}

/// A trial's early-stop record, if the search stopped it.
pub fn read_stopped(store: &Store, keys: &TrialKeys) -> Result<Option<StoppedTrial>, StoreError> {
    read_json(store, keys.stopped(), "an early-stop record")
}

/// The rung record at `step`, if the worker wrote one.
pub fn read_rung(store: &Store, keys: &TrialKeys, step: u64) -> Result<Option<RungRecord>, StoreError> {
    read_json(store, keys.rung(step), "a rung record")
}

/// Every rung record of a trial, by increasing step (the trial's learning curve).
pub fn read_rungs(store: &Store, keys: &TrialKeys) -> Result<Vec<RungRecord>, StoreError> {
    let mut records = Vec::new();
    for key in store.list(&keys.rungs())? {
        if let Some(r) = read_json::<RungRecord>(store, key, "a rung record")? {
            records.push(r);
        }
    }
    records.sort_by_key(|r| r.step);
    Ok(records)
}

/// The swept values a trial was created with; a trial without `params.json` (one trained alone)
/// has none.
pub fn read_params(store: &Store, keys: &TrialKeys) -> Result<BTreeMap<String, f64>, StoreError> {
    Ok(read_json(store, keys.params(), "a parameter map")?.unwrap_or_default())
}

/// An Experiment's stored spec, if there is one (parsed, not validated: it was validated when
/// it was stored).
pub fn read_experiment(store: &Store, name: &str) -> Result<Option<Experiment>, StoreError> {
    let key = ExperimentKeys::new(name).spec();
    match store.get(&key)? {
        None => Ok(None),
        Some(bytes) => orchestra_api::parse_yaml(&String::from_utf8_lossy(&bytes), &key)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                uri: store.uri().to_string(),
                key,
                reason: format!("not an Experiment: {e}"),
            }),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: String,
    what: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(&key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                uri: store.uri().to_string(),
                key,
                reason: format!("not {what}: {e}"),
            }),
    }
}

/// The rule for "this trial is finished": its result is stored and covers the full step target
/// (a result of an earlier, shorter target means the trial must continue from its checkpoint).
pub fn is_finished(result: &TrialResult, target_steps: u64) -> bool {
    result.steps >= target_steps
}

/// The stored result of a trial that is finished for `target_steps`, if there is one.
pub fn finished_result(
    store: &Store,
    keys: &TrialKeys,
    target_steps: u64,
) -> Result<Option<TrialResult>, StoreError> {
    Ok(read_result(store, keys)?.filter(|r| is_finished(r, target_steps)))
}

/// What a trial's gang left in the store for its step target.
#[derive(Clone, Debug, PartialEq)]
pub enum Reached {
    /// The result: the trial trained to `steps`.
    Finished(Box<TrialResult>),
    /// The rung record at its target, a rung of the search below `steps`.
    Rung(Box<RungRecord>),
}

/// The one rule both runners read a gang's end by: a result that covers `steps` (whatever the
/// gang's target: a finished trial is finished), else the rung record at `target` when that is a
/// rung below `steps`.
pub fn reached(
    store: &Store,
    keys: &TrialKeys,
    target: u64,
    steps: u64,
) -> Result<Option<Reached>, StoreError> {
    if let Some(r) = finished_result(store, keys, steps)? {
        return Ok(Some(Reached::Finished(Box::new(r))));
    }
    if target > 0 && target < steps {
        if let Some(r) = read_rung(store, keys, target)? {
            return Ok(Some(Reached::Rung(Box::new(r))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_as_documented() {
        let e = ExperimentKeys::new("sweep");
        let t = e.trial("sweep-d4-000");
        assert_eq!(e.spec(), "sweep/experiment.yaml");
        assert_eq!(e.leaderboard("png"), "sweep/leaderboard.png");
        assert_eq!(t.result(), "sweep/sweep-d4-000/result.json");
        assert_eq!(t.params(), "sweep/sweep-d4-000/params.json");
        assert_eq!(t.metrics(), "sweep/sweep-d4-000/metrics.jsonl");
        assert_eq!(t.latest(), "sweep/sweep-d4-000/latest");
        assert_eq!(t.progress(), "sweep/sweep-d4-000/progress.json");
        assert_eq!(t.rung(40), "sweep/sweep-d4-000/rungs/step-00000040.json");
        assert_eq!(t.stopped(), "sweep/sweep-d4-000/stopped.json");
        assert_eq!(
            t.events(1_796_000_000, 40),
            "sweep/sweep-d4-000/events.out.tfevents.1796000000.orchestra-step-00000040"
        );
        assert_eq!(e.trial_of_stopped(&t.stopped()), Some("sweep-d4-000"));
        assert_eq!(
            t.weights(12),
            "sweep/sweep-d4-000/step-00000012/weights.safetensors"
        );
        assert_eq!(
            t.optimizer(12),
            "sweep/sweep-d4-000/step-00000012/optimizer.safetensors"
        );
        assert_eq!(
            t.checkpoint_state(12),
            "sweep/sweep-d4-000/step-00000012/state.json"
        );
    }

    #[test]
    fn an_objects_trial_and_a_rungs_step_parse_back() {
        let e = ExperimentKeys::new("sweep");
        let t = e.trial("a");
        for key in [t.result(), t.weights(3), t.rung(40), t.events(1, 0)] {
            assert_eq!(e.trial_of_object(&key), Some("a"), "{key}");
        }
        for other in [
            e.spec(),
            e.leaderboard("png"),
            "sweep2/a/result.json".into(),
            "sweep//x".into(),
        ] {
            assert_eq!(e.trial_of_object(&other), None, "{other}");
        }
        assert_eq!(t.rung_step_of(&t.rung(40)), Some(40));
        for other in [t.result(), t.weights(40), "sweep/a/rungs/step-x.json".into()] {
            assert_eq!(t.rung_step_of(&other), None, "{other}");
        }
    }

    #[test]
    fn keys_parse_back_and_strangers_do_not() {
        let e = ExperimentKeys::new("sweep");
        let t = e.trial("a");
        assert_eq!(e.trial_of_result(&t.result()), Some("a"));
        for other in [
            "sweep/result.json",
            "sweep//result.json",
            "sweep/a/b/result.json",
            "sweeping/a/result.json",
            "sweep/a/result.jsonx",
        ] {
            assert_eq!(e.trial_of_result(other), None, "{other}");
        }
        assert_eq!(ExperimentKeys::experiment_of_spec(&e.spec()), Some("sweep"));
        assert_eq!(ExperimentKeys::experiment_of_spec("a/b/experiment.yaml"), None);
        assert_eq!(ExperimentKeys::experiment_of_spec("/experiment.yaml"), None);

        assert_eq!(
            TrialKeys::parse_checkpoint_dir(&TrialKeys::checkpoint_dir(7)),
            Some(7)
        );
        assert_eq!(TrialKeys::parse_checkpoint_dir("step-00000007\n"), Some(7));
        for bad in [
            "step-",
            "step-+7",
            "step--7",
            "step-7x",
            "garbage",
            "step-99999999999999999999999",
        ] {
            assert_eq!(TrialKeys::parse_checkpoint_dir(bad), None, "{bad}");
        }
        assert_eq!(t.checkpoint_step_of(&t.weights(3)), Some(3));
        assert_eq!(t.checkpoint_step_of(&t.latest()), None);
        assert_eq!(t.checkpoint_step_of("sweep/a/step-00000003"), None);
        assert_eq!(t.checkpoint_step_of("sweep/ab/step-00000003/x"), None);
    }

    #[test]
    fn a_result_counts_as_finished_only_at_the_target() {
        let store = Store::open("memory://layout-rules").unwrap();
        let keys = TrialKeys::new("e", "t");
        assert!(read_result(&store, &keys).unwrap().is_none());
        store.put(&keys.result(), "{not json").unwrap();
        let err = read_result(&store, &keys).unwrap_err().to_string();
        assert!(
            err.contains("e/t/result.json") && err.contains("not a trial result"),
            "{err}"
        );

        let result = r#"{"experiment": "e", "trial": "t", "variant": "D2", "steps": 20,
            "scores": {"dice": 0.5, "iou": 0.4, "dicePerClass": [0.5], "iouPerClass": [0.4], "images": 8},
            "sourceBitsPerPixel": 24.0,
            "params": {"compressor": 1, "reconstructor": 1, "segmentor": 1, "critic": 0, "bitModel": 1},
            "timings": {"trainSeconds": 1.0, "trainImagesPerSecond": 10.0, "evalSeconds": 0.1},
            "hyper": {}}"#;
        store.put(&keys.result(), result).unwrap();
        assert_eq!(read_result(&store, &keys).unwrap().unwrap().steps, 20);
        assert!(finished_result(&store, &keys, 20).unwrap().is_some());
        assert!(finished_result(&store, &keys, 10).unwrap().is_some());
        assert!(
            finished_result(&store, &keys, 40).unwrap().is_none(),
            "a shorter run's result does not finish a longer target"
        );
    }
}
