//! Views read from a store, and from a local run's folder where there is one: every Experiment
//! the store holds, each trial from its objects, and the phases from the run's state file (from
//! a store alone, from which objects a trial has). Objects are read again only when their size
//! or time of writing changed, so that a live page over a thousand trials reads what changed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use orchestra_api::{Experiment, RungRecord, StoppedTrial, TrialPhase, TrialProgress, TrialResult};
use orchestra_store::layout::{ExperimentKeys, TrialKeys, EXPERIMENT_FILE};
use orchestra_store::{ObjectInfo, Store, StoreError};
use serde::Deserialize;

use super::view::{CheckpointView, ExperimentList, ExperimentView, TrialPage, TrialView};
use super::{metrics_file, trial_page};
use crate::candidates::candidates;
use crate::leaderboard::Leaderboard;
use crate::local::TrialRecord;
use crate::summary::shown_bpp;

/// A store, and the run folder of the local runner that writes into it (if the dashboard was
/// opened on one).
pub struct StoreSource {
    store: Store,
    run: Option<PathBuf>,
    read: Mutex<HashMap<String, Read>>,
}

/// An object as read, with the size and time it had then.
#[derive(Clone)]
struct Read {
    size: u64,
    written_ms: i64,
    bytes: Bytes,
}

/// The local runner's state file, as far as the dashboard reads it.
#[derive(Deserialize)]
struct RunState {
    experiment: String,
    trials: BTreeMap<String, TrialRecord>,
}

/// One trial's objects in a listing.
#[derive(Default)]
struct TrialObjects<'a> {
    all: Vec<&'a ObjectInfo>,
}

impl StoreSource {
    /// On a store URI, or on a local run folder (`runs/<name>`: its Experiment names the store).
    pub fn open(source: &str) -> Result<StoreSource, String> {
        let folder = Path::new(source);
        if source.contains("://") {
            let store = Store::open(source).map_err(|e| e.to_string())?;
            return Ok(StoreSource::new(store, None));
        }
        let file = folder.join(EXPERIMENT_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "{}: {e} (give a run folder, runs/<name>, or a store URI such as file:///path)",
                file.display()
            )
        })?;
        let exp: Experiment = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let store =
            Store::open(&exp.spec.store).map_err(|e| format!("{}: spec.store: {e}", file.display()))?;
        Ok(StoreSource::new(store, Some(folder.to_path_buf())))
    }

    pub fn new(store: Store, run: Option<PathBuf>) -> StoreSource {
        StoreSource {
            store,
            run,
            read: Mutex::new(HashMap::new()),
        }
    }

    pub fn uri(&self) -> &str {
        self.store.uri()
    }

    /// A fingerprint of everything the pages show: it changes when an object is written or
    /// removed, or the run's state file changes.
    pub fn version(&self) -> Result<u64, StoreError> {
        let mut h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
        for o in self.store.list_objects("")? {
            h.write(o.key.as_bytes());
            h.write_u64(o.size);
            h.write_i64(o.written_ms);
        }
        if let Some(meta) = self
            .run
            .as_ref()
            .and_then(|r| std::fs::metadata(r.join("state.json")).ok())
        {
            h.write_u64(meta.len());
            if let Ok(t) = meta.modified() {
                h.write_u128(
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
            }
        }
        Ok(h.finish())
    }

    /// Every Experiment in the store, by name, and the specs that are not one.
    pub fn experiments(&self) -> Result<ExperimentList, StoreError> {
        let listing = self.store.list_objects("")?;
        let names: Vec<&str> = listing
            .iter()
            .filter_map(|o| ExperimentKeys::experiment_of_spec(&o.key))
            .collect();
        let mut out = ExperimentList::default();
        for name in names {
            let prefix = format!("{name}/");
            let objects: Vec<&ObjectInfo> = listing.iter().filter(|o| o.key.starts_with(&prefix)).collect();
            if let Some(v) = self.experiment_view(name, &objects, &mut out.problems)? {
                out.views.push(v);
            }
        }
        Ok(out)
    }

    pub fn experiment(&self, name: &str) -> Result<Option<ExperimentView>, StoreError> {
        let listing = self.store.list_objects(name)?;
        let prefix = format!("{name}/");
        let objects: Vec<&ObjectInfo> = listing.iter().filter(|o| o.key.starts_with(&prefix)).collect();
        self.experiment_view(name, &objects, &mut Vec::new())
    }

    /// One trial's page, with its metrics, checkpoints and spec.
    pub fn trial(
        &self,
        experiment: &str,
        trial: &str,
    ) -> Result<Option<(ExperimentView, TrialPage)>, StoreError> {
        let Some(view) = self.experiment(experiment)? else {
            return Ok(None);
        };
        Ok(self.trial_of(&view, trial)?.map(|page| (view, page)))
    }

    /// The page of `trial`, a row of `view` (read from this store or from elsewhere): its
    /// metrics and checkpoints from this store.
    pub fn trial_of(&self, view: &ExperimentView, trial: &str) -> Result<Option<TrialPage>, StoreError> {
        let Some(row) = view.trials.iter().find(|t| t.name == trial).cloned() else {
            return Ok(None);
        };
        let keys = TrialKeys::new(&view.name, trial);
        let listing = self.store.list_objects(keys.prefix())?;
        let metrics = self.read_listed(&listing, &keys.metrics())?;
        let latest = self
            .read_listed(&listing, &keys.latest())?
            .and_then(|b| TrialKeys::parse_checkpoint_dir(&String::from_utf8_lossy(&b)));
        let mut checkpoints: BTreeMap<u64, u64> = BTreeMap::new();
        for o in &listing {
            if let Some(step) = keys.checkpoint_step_of(&o.key) {
                *checkpoints.entry(step).or_default() += o.size;
            }
        }
        let checkpoints = checkpoints
            .into_iter()
            .map(|(step, bytes)| CheckpointView {
                step,
                bytes,
                latest: latest == Some(step),
            })
            .collect();
        let log_tail = self
            .run
            .as_ref()
            .and_then(|r| log_tail(&r.join("logs").join(format!("{trial}.log")), 30));
        Ok(Some(trial_page(
            view,
            row,
            metrics.as_deref().map(metrics_file),
            checkpoints,
            log_tail,
        )))
    }

    /// The latest checkpoint's weights of a trial: its model file.
    pub fn model(&self, experiment: &str, trial: &str) -> Result<Option<(String, Bytes)>, StoreError> {
        let keys = TrialKeys::new(experiment, trial);
        let Some(latest) = self.store.get(&keys.latest())? else {
            return Ok(None);
        };
        let Some(step) = TrialKeys::parse_checkpoint_dir(&String::from_utf8_lossy(&latest)) else {
            return Ok(None);
        };
        let key = keys.weights(step);
        Ok(self.store.get(&key)?.map(|b| (key, b)))
    }

    /// The Experiment's published leaderboard plot (`svg` or `png`).
    pub fn plot(&self, experiment: &str, extension: &str) -> Result<Option<Bytes>, StoreError> {
        self.store
            .get(&ExperimentKeys::new(experiment).leaderboard(extension))
    }

    /// The Experiment `name` from its objects; None when it has no spec, or a spec that does
    /// not parse (said in `unreadable`).
    fn experiment_view(
        &self,
        name: &str,
        objects: &[&ObjectInfo],
        unreadable: &mut Vec<String>,
    ) -> Result<Option<ExperimentView>, StoreError> {
        let keys = ExperimentKeys::new(name);
        let spec_key = keys.spec();
        let Some(spec) = self.read_listed(objects, &spec_key)? else {
            return Ok(None);
        };
        let mut problems = Vec::new();
        let experiment: Experiment = match serde_yaml::from_slice(&spec) {
            Ok(e) => e,
            Err(e) => {
                unreadable.push(format!(
                    "{spec_key}: not an Experiment, so {name} is not shown: {e}"
                ));
                return Ok(None);
            }
        };
        let leaderboard = match self.read_listed(objects, &keys.leaderboard("json"))? {
            None => None,
            Some(b) => serde_json::from_slice::<Leaderboard>(&b)
                .map_err(|e| problems.push(format!("{}: {e}", keys.leaderboard("json"))))
                .ok(),
        };
        let mut by_trial: BTreeMap<&str, TrialObjects> = BTreeMap::new();
        for o in objects {
            if let Some(t) = keys.trial_of_object(&o.key) {
                by_trial.entry(t).or_default().all.push(o);
            }
        }
        let state = self.run_state(name);
        let all = candidates(name, &experiment.spec);
        let mut trials = Vec::new();
        for (trial, objects) in &by_trial {
            let Some(c) = all.iter().find(|c| c.name == *trial) else {
                continue;
            };
            let record = state.as_ref().and_then(|s| s.trials.get(*trial));
            trials.push(self.trial_view(name, c, objects, record, &mut problems)?);
        }
        // Trials the runner knows of that have no objects yet.
        if let Some(s) = &state {
            for (trial, r) in &s.trials {
                if !by_trial.contains_key(trial.as_str()) {
                    trials.push(from_record(trial, r));
                }
            }
            trials.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let created_ms = objects.iter().find(|o| o.key == spec_key).map(|o| o.written_ms);
        let (phase, message) = super::experiment_phase(&trials, all.len());
        Ok(Some(ExperimentView {
            namespace: experiment.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: name.to_string(),
            phase,
            message: Some(message),
            conditions: Vec::new(),
            events: Vec::new(),
            total: all.len(),
            trials,
            leaderboard,
            created_ms,
            phase_source: Some(match state {
                Some(_) => "phases from the local run's state file".to_string(),
                None => "phases read from the store's objects: a store alone cannot tell a running worker from one that stopped".to_string(),
            }),
            problems,
            experiment,
        }))
    }

    fn trial_view(
        &self,
        experiment: &str,
        c: &crate::candidates::Candidate,
        objects: &TrialObjects,
        record: Option<&TrialRecord>,
        problems: &mut Vec<String>,
    ) -> Result<TrialView, StoreError> {
        let keys = TrialKeys::new(experiment, &c.name);
        let listed: Vec<&ObjectInfo> = objects.all.clone();
        let read = |key: String| self.read_listed(&listed, &key);
        let result: Option<TrialResult> = json(read(keys.result())?, &keys.result(), problems);
        let stopped: Option<StoppedTrial> = json(read(keys.stopped())?, &keys.stopped(), problems);
        let progress: Option<TrialProgress> = json(read(keys.progress())?, &keys.progress(), problems);
        let mut rung_steps: Vec<u64> = listed.iter().filter_map(|o| keys.rung_step_of(&o.key)).collect();
        rung_steps.sort_unstable();
        let mut rungs = Vec::new();
        let mut last_rung: Option<RungRecord> = None;
        for step in rung_steps {
            let key = keys.rung(step);
            if let Some(r) = json::<RungRecord>(self.read_listed(&listed, &key)?, &key, problems) {
                rungs.push(r.score());
                last_rung = Some(r);
            }
        }
        let checkpoint = listed
            .iter()
            .filter_map(|o| keys.checkpoint_step_of(&o.key))
            .max();
        let has_metrics = listed.iter().any(|o| o.key == keys.metrics() && o.size > 0);
        let derived = match (&result, &stopped, &progress) {
            (Some(_), _, _) => TrialPhase::Succeeded,
            (None, Some(_), _) => TrialPhase::Stopped,
            (None, None, Some(_)) => TrialPhase::Running,
            _ if checkpoint.is_some() => TrialPhase::Running,
            _ => TrialPhase::Pending,
        };
        let mut row = match record {
            Some(r) => from_record(&c.name, r),
            None => TrialView {
                phase: derived,
                ..TrialView::new(&c.name, c.variant)
            },
        };
        row.params = c.params.clone();
        row.has_metrics = has_metrics;
        row.step = [
            result.as_ref().map(|r| r.steps),
            progress.as_ref().map(|p| p.step),
            checkpoint,
            rungs.last().map(|r| r.step),
        ]
        .into_iter()
        .flatten()
        .max();
        if row.rungs.is_empty() {
            row.rungs = rungs;
        }
        if let Some(r) = &result {
            row.dice = Some(r.scores.dice);
            row.iou = Some(r.scores.iou);
            row.bpp = Some(shown_bpp(r));
            row.seconds = Some(r.timings.train_seconds);
        } else if let Some(r) = &last_rung {
            row.dice = Some(r.scores.dice);
            row.iou = Some(r.scores.iou);
            row.bpp = Some(r.bpp());
        }
        if let Some(s) = &stopped {
            row.message = Some(s.reason.clone());
        }
        Ok(row)
    }

    /// The run's state file, if the dashboard was opened on the run folder of `experiment`.
    fn run_state(&self, experiment: &str) -> Option<RunState> {
        let path = self.run.as_ref()?.join("state.json");
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<RunState>(&text) {
            Ok(s) if s.experiment == experiment => Some(s),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "not a run state file");
                None
            }
        }
    }

    /// An object of a listing (of objects or of references to them), from what was read before
    /// when its size and time are the same.
    fn read_listed<O: std::borrow::Borrow<ObjectInfo>>(
        &self,
        listing: &[O],
        key: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        match listing.iter().map(|o| o.borrow()).find(|o| o.key == key) {
            Some(info) => self.read_info(info),
            None => Ok(None),
        }
    }

    fn read_info(&self, info: &ObjectInfo) -> Result<Option<Bytes>, StoreError> {
        let known = self
            .read
            .lock()
            .expect("the read cache's lock")
            .get(&info.key)
            .cloned();
        if let Some(r) = known.filter(|r| r.size == info.size && r.written_ms == info.written_ms) {
            return Ok(Some(r.bytes));
        }
        let Some(bytes) = self.store.get(&info.key)? else {
            return Ok(None);
        };
        self.read.lock().expect("the read cache's lock").insert(
            info.key.clone(),
            Read {
                size: info.size,
                written_ms: info.written_ms,
                bytes: bytes.clone(),
            },
        );
        Ok(Some(bytes))
    }
}

/// A JSON object, or nothing with the reason among `problems`.
fn json<T: serde::de::DeserializeOwned>(
    bytes: Option<Bytes>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let bytes = bytes?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{key}: {e}"));
            None
        }
    }
}

/// A trial's row from the local runner's record of it.
fn from_record(name: &str, r: &TrialRecord) -> TrialView {
    TrialView {
        params: r.params.clone(),
        phase: r.phase,
        attempts: Some(r.attempts),
        promotions: r.promotions,
        target: (r.target > 0).then_some(r.target),
        rungs: r.rungs.clone(),
        message: r.message.clone(),
        ..TrialView::new(name, r.variant)
    }
}

/// The last `lines` lines of a log file, if it can be read.
fn log_tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> (tempfile::TempDir, StoreSource) {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", dir.path().display());
        let store = Store::open(&uri).unwrap();
        let yaml = format!(
            "apiVersion: orchestra.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: e }}\nspec:\n  dataset: synthetic://lesion\n  model: {{ inputSize: 64 }}\n  variants: [D4]\n  search: {{ lambdaRate: {{ type: list, values: [0.1, 0.2, 0.4] }} }}\n  steps: 10\n  store: {uri}\n"
        );
        store.put("e/experiment.yaml", yaml).unwrap();
        (dir, StoreSource::new(store, None))
    }

    #[test]
    fn phases_come_from_the_objects_and_a_damaged_one_is_named() {
        let (_dir, s) = source();
        let progress =
            r#"{"trial":"e-d4-000","step":4,"steps":10,"imagesPerSecond":9.0,"lossSeg":0.3,"at":1.0}"#;
        s.store.put("e/e-d4-000/progress.json", progress).unwrap();
        s.store
            .put("e/e-d4-001/params.json", r#"{"lambdaRate":0.2}"#)
            .unwrap();
        s.store.put("e/e-d4-001/result.json", "{ broken").unwrap();
        let v = s.experiment("e").unwrap().expect("the Experiment");
        assert_eq!(v.total, 3);
        let t: Vec<(&str, TrialPhase, Option<u64>)> = v
            .trials
            .iter()
            .map(|t| (t.name.as_str(), t.phase, t.step))
            .collect();
        assert_eq!(
            t,
            [
                ("e-d4-000", TrialPhase::Running, Some(4)),
                ("e-d4-001", TrialPhase::Pending, None)
            ]
        );
        assert!(
            v.trials.iter().all(|t| t.attempts.is_none()),
            "a store does not count attempts"
        );
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].starts_with("e/e-d4-001/result.json: "),
            "{:?}",
            v.problems
        );
        assert_eq!(v.phase, "Running");
        assert!(s.experiment("nope").unwrap().is_none());
    }

    #[test]
    fn a_spec_that_is_not_an_experiment_is_listed_as_a_problem() {
        let (_dir, s) = source();
        s.store
            .put("bad/experiment.yaml", "spec: [not, an, experiment")
            .unwrap();
        let list = s.experiments().unwrap();
        assert_eq!(
            list.views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["e"]
        );
        assert_eq!(list.problems.len(), 1, "{:?}", list.problems);
        assert!(
            list.problems[0].starts_with("bad/experiment.yaml: not an Experiment, so bad is not shown"),
            "{:?}",
            list.problems
        );
    }

    #[test]
    fn the_version_changes_when_an_object_is_written_again() {
        let (_dir, s) = source();
        let before = s.version().unwrap();
        assert_eq!(before, s.version().unwrap(), "nothing changed");
        s.store.put("e/e-d4-000/progress.json", "{}").unwrap();
        let written = s.version().unwrap();
        assert_ne!(before, written);
        s.store.put("e/e-d4-000/progress.json", "{ }").unwrap();
        assert_ne!(written, s.version().unwrap(), "the same key written again");
    }
}
