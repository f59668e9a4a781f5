//! Views read from the cluster, for the dashboard the operator serves (`--dashboard-addr`):
//! the Experiments and Trials as the controller's own watches hold them (no list of its own,
//! so the pages cost the API server nothing but an events list now and then), phases,
//! attempts, conditions and events from the cluster, and what only the store holds (metrics,
//! checkpoints, rung records, the leaderboard) from each Experiment's `spec.store`, read as
//! the operator reads it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use orchestra_api::{Experiment, Trial, TrialPhase};

use super::server::Source;
use super::store_source::StoreSource;
use super::view::{ConditionView, EventView, ExperimentList, ExperimentView, TrialPage, TrialView};
use super::{experiment_phase, trial_page};
use crate::candidates::candidates;
use crate::k8s::cache::{scoped, strip_trial};
use crate::k8s::names::{LABEL_EXPERIMENT, MANAGER};
use crate::summary::shown_bpp;

/// How long an Experiment's events are shown before they are listed again (a live page redraws
/// about once a second while trials change; the events need not be fresher than that).
const EVENTS_FOR: Duration = Duration::from_secs(2);

/// How long an events list may take before the page is drawn without it.
const EVENTS_WAIT: Duration = Duration::from_secs(3);

/// An Experiment's events as listed (or why not), and when.
type Listed = (Instant, Result<Vec<Event>, String>);

/// The cluster as the operator's watches show it, and the stores its Experiments name.
pub struct ClusterSource {
    experiments: Store<Experiment>,
    trials: Store<Trial>,
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    /// One per store URI, kept: each remembers what it read.
    stores: Mutex<HashMap<String, Arc<StoreSource>>>,
    /// Per Experiment (namespace, name): when its events were listed, and what they were.
    events: Mutex<HashMap<(String, String), Listed>>,
    scope: String,
}

impl ClusterSource {
    /// Over the controller's reflected Experiments and Trials; `namespace` is what it watches
    /// (for the footer). Called on the runtime that the events are to be listed on.
    pub fn new(
        experiments: Store<Experiment>,
        trials: Store<Trial>,
        client: kube::Client,
        namespace: Option<&str>,
    ) -> ClusterSource {
        ClusterSource {
            experiments,
            trials,
            client,
            runtime: tokio::runtime::Handle::current(),
            stores: Mutex::new(HashMap::new()),
            events: Mutex::new(HashMap::new()),
            scope: match namespace {
                Some(ns) => format!("namespace {ns}"),
                None => "all namespaces".into(),
            },
        }
    }

    /// With watches of its own (Experiments, and the Trials the operator manages), for a
    /// replica that waits for the lease and so has no controller's to share: the source, and
    /// the task that keeps its watches going.
    pub fn watching(
        client: kube::Client,
        namespace: Option<&str>,
    ) -> (
        ClusterSource,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (experiments, experiment_writer) = reflector::store();
        let (trials, trial_writer) = reflector::store();
        let ours = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
        let experiment_watch = watcher(
            scoped::<Experiment>(&client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(experiment_writer)
        .for_each(|_| std::future::ready(()));
        let trial_watch = watcher(scoped::<Trial>(&client, namespace), ours)
            .default_backoff()
            .modify(strip_trial)
            .reflect(trial_writer)
            .for_each(|_| std::future::ready(()));
        let source = ClusterSource::new(experiments, trials, client, namespace);
        (source, async move {
            futures::join!(experiment_watch, trial_watch);
        })
    }

    fn store(&self, uri: &str) -> Result<Arc<StoreSource>, String> {
        let mut stores = self.stores.lock().expect("the stores' lock");
        if let Some(s) = stores.get(uri) {
            return Ok(s.clone());
        }
        let store = orchestra_store::Store::open(uri).map_err(|e| format!("spec.store {uri}: {e}"))?;
        let s = Arc::new(StoreSource::new(store, None));
        stores.insert(uri.to_string(), s.clone());
        Ok(s)
    }

    fn find(&self, namespace: &str, name: &str) -> Option<Arc<Experiment>> {
        self.experiments
            .state()
            .into_iter()
            .find(|e| e.name_any() == name && e.namespace().as_deref() == Some(namespace))
    }

    fn trials_of(&self, exp: &Experiment) -> Vec<Arc<Trial>> {
        let (ns, name) = (exp.namespace(), exp.name_any());
        self.trials.state_filter(|t| {
            t.namespace() == ns && t.labels().get(LABEL_EXPERIMENT).map(String::as_str) == Some(name.as_str())
        })
    }

    /// One Experiment: the store's view of it where the store answers, with the cluster's word
    /// on phases, attempts, conditions and (on its own page) events.
    fn view(&self, exp: &Experiment, with_events: bool) -> ExperimentView {
        let name = exp.name_any();
        let namespace = exp.namespace().unwrap_or_default();
        let mut problems = Vec::new();
        let stored = self.store(&exp.spec.store).and_then(|s| {
            s.experiment(&name)
                .map_err(|e| format!("spec.store {}: {e}", exp.spec.store))
        });
        let mut view = match stored {
            Ok(Some(v)) => v,
            Ok(None) => bare(exp),
            Err(e) => {
                problems.push(e);
                bare(exp)
            }
        };
        // The cluster's spec, which may be newer than the copy in the store.
        view.experiment = exp.clone();
        view.namespace = namespace.clone();
        view.total = candidates(&name, &exp.spec).len();
        overlay_trials(&mut view, &self.trials_of(exp), now_ms());
        let status = exp.status.clone().unwrap_or_default();
        view.phase = format!("{:?}", status.phase);
        view.message = status.message.or(Some(status.progress)).filter(|m| !m.is_empty());
        if exp.status.is_none() {
            let (_, so_far) = experiment_phase(&view.trials, view.total);
            view.message = Some(format!("{so_far}; the operator has not written a status yet"));
        }
        view.conditions = status
            .conditions
            .iter()
            .map(|c| ConditionView {
                kind: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect();
        view.created_ms = exp
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond());
        view.phase_source = None;
        if with_events {
            match self.events_of(&namespace, &name) {
                Ok(events) => view.events = events.iter().map(event_view).collect(),
                Err(e) => problems.push(format!("events of {namespace}/{name}: {e}")),
            }
        }
        problems.append(&mut view.problems);
        view.problems = problems;
        view
    }

    /// The Experiment's events, the newest first, listed again when older than `EVENTS_FOR`.
    fn events_of(&self, namespace: &str, name: &str) -> Result<Vec<Event>, String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((at, events)) = self.events.lock().expect("the events' lock").get(&key) {
            if at.elapsed() < EVENTS_FOR {
                return events.clone();
            }
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let params =
            ListParams::default().fields(&format!("regarding.kind=Experiment,regarding.name={name}"));
        let listed = self
            .runtime
            .block_on(tokio::time::timeout(EVENTS_WAIT, api.list(&params)));
        let events = match listed {
            Ok(Ok(list)) => {
                let mut items = list.items;
                items.sort_by_key(|e| std::cmp::Reverse(event_ms(e)));
                Ok(items)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", EVENTS_WAIT.as_secs())),
        };
        self.events
            .lock()
            .expect("the events' lock")
            .insert(key, (Instant::now(), events.clone()));
        events
    }
}

/// An Experiment known to the cluster with nothing in its store yet.
fn bare(exp: &Experiment) -> ExperimentView {
    ExperimentView {
        namespace: exp.namespace().unwrap_or_default(),
        name: exp.name_any(),
        experiment: exp.clone(),
        phase: String::new(),
        message: None,
        conditions: Vec::new(),
        events: Vec::new(),
        trials: Vec::new(),
        total: 0,
        leaderboard: None,
        created_ms: None,
        phase_source: None,
        problems: Vec::new(),
    }
}

/// The Trials' statuses over the store's rows: the phase, attempts, promotions, target, rungs,
/// message and scores the operator recorded; a Trial with no objects in the store yet gets a
/// row of its own.
fn overlay_trials(view: &mut ExperimentView, trials: &[Arc<Trial>], now_ms: i64) {
    let all = candidates(&view.name, &view.experiment.spec);
    for t in trials {
        let name = t.name_any();
        let i = match view.trials.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                let mut row = TrialView::new(&name, t.spec.variant);
                if let Some(c) = all.iter().find(|c| c.name == name) {
                    row.params = c.params.clone();
                }
                view.trials.push(row);
                view.trials.len() - 1
            }
        };
        overlay(&mut view.trials[i], t, now_ms);
    }
    view.trials.sort_by(|a, b| a.name.cmp(&b.name));
}

fn overlay(row: &mut TrialView, t: &Trial, now_ms: i64) {
    let Some(s) = &t.status else {
        row.phase = TrialPhase::Pending;
        row.attempts = Some(0);
        return;
    };
    row.phase = s.phase;
    row.attempts = Some(s.attempts);
    row.promotions = s.promotions;
    row.target = s.target_step.or(row.target);
    if !s.rungs.is_empty() {
        row.rungs = s.rungs.clone();
    }
    if s.message.is_some() {
        row.message = s.message.clone();
    }
    row.step = [
        row.step,
        s.last_checkpoint_step,
        s.result.as_ref().map(|r| r.steps),
    ]
    .into_iter()
    .flatten()
    .max();
    match &s.result {
        Some(r) => {
            row.dice = Some(r.scores.dice);
            row.iou = Some(r.scores.iou);
            row.bpp = Some(shown_bpp(r));
            row.seconds = Some(r.timings.train_seconds);
        }
        None => {
            // A finished trial's result is not kept in the operator's cache: its headline.
            row.dice = s.dice.or(row.dice);
            row.bpp = s.bpp.or(row.bpp);
            let started = s.started_at.as_deref().and_then(rfc3339_ms);
            let until = s.finished_at.as_deref().and_then(rfc3339_ms).unwrap_or(now_ms);
            if let Some(start) = started.filter(|_| row.seconds.is_none()) {
                row.seconds = Some((until - start).max(0) as f64 / 1000.0);
            }
        }
    }
}

fn rfc3339_ms(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When an event last happened, in milliseconds since the epoch.
fn event_ms(e: &Event) -> Option<i64> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0.as_millisecond())
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
}

fn event_view(e: &Event) -> EventView {
    let times = e
        .series
        .as_ref()
        .map_or(e.deprecated_count.unwrap_or(1), |s| s.count);
    let note = e.note.clone().unwrap_or_default();
    EventView {
        kind: e.type_.clone().unwrap_or_else(|| "Normal".into()),
        reason: e.reason.clone().unwrap_or_default(),
        note: if times > 1 {
            format!("{note} (x{times})")
        } else {
            note
        },
        trial: e
            .related
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Trial"))
            .and_then(|r| r.name.clone()),
        age_s: event_ms(e).map(|at| ((now_ms() - at).max(0) / 1000) as u64),
    }
}

/// Whether an Experiment's event is about `trial`: its related object is that Trial. Events
/// without a related Trial (from operators before it was set) fall back to the note, which the
/// operator starts with the trial's name.
fn about(e: &EventView, trial: &str) -> bool {
    match &e.trial {
        Some(related) => related == trial,
        None => {
            e.note == trial
                || e.note
                    .strip_prefix(trial)
                    .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(" ("))
        }
    }
}

impl Source for ClusterSource {
    fn experiments(&self) -> Result<ExperimentList, String> {
        let mut all = self.experiments.state();
        all.sort_by_key(|e| (e.namespace(), e.name_any()));
        Ok(ExperimentList {
            views: all.iter().map(|e| self.view(e, false)).collect(),
            problems: Vec::new(),
        })
    }

    fn experiment(&self, namespace: &str, name: &str) -> Result<Option<ExperimentView>, String> {
        Ok(self.find(namespace, name).map(|e| self.view(&e, true)))
    }

    fn trial(
        &self,
        namespace: &str,
        name: &str,
        trial: &str,
    ) -> Result<Option<(ExperimentView, TrialPage)>, String> {
        let Some(exp) = self.find(namespace, name) else {
            return Ok(None);
        };
        let view = self.view(&exp, true);
        let Some(row) = view.trials.iter().find(|t| t.name == trial).cloned() else {
            return Ok(None);
        };
        let read = self.store(&exp.spec.store).and_then(|s| {
            s.trial_of(&view, trial)
                .map_err(|e| format!("spec.store {}: {e}", exp.spec.store))
        });
        let mut page = match read {
            Ok(Some(page)) => page,
            Ok(None) => trial_page(&view, row, None, Vec::new(), None),
            Err(e) => {
                let mut page = trial_page(&view, row, None, Vec::new(), None);
                page.problems.insert(0, e);
                page
            }
        };
        page.history = view.events.iter().filter(|e| about(e, trial)).cloned().collect();
        Ok(Some((view, page)))
    }

    fn model(&self, namespace: &str, name: &str, trial: &str) -> Result<Option<(String, Bytes)>, String> {
        let Some(exp) = self.find(namespace, name) else {
            return Ok(None);
        };
        self.store(&exp.spec.store)?
            .model(name, trial)
            .map_err(|e| e.to_string())
    }

    /// Changes with any Experiment's or Trial's resource version, or any of their stores.
    fn version(&self) -> Result<u64, String> {
        let mut h = DefaultHasher::new();
        let mut uris = std::collections::BTreeSet::new();
        let mut experiments = self.experiments.state();
        experiments.sort_by_key(|e| (e.namespace(), e.name_any()));
        for e in &experiments {
            (e.namespace(), e.name_any(), e.resource_version()).hash(&mut h);
            uris.insert(e.spec.store.clone());
        }
        let mut trials: Vec<(Option<String>, String, Option<String>)> = self
            .trials
            .state()
            .iter()
            .map(|t| (t.namespace(), t.name_any(), t.resource_version()))
            .collect();
        trials.sort();
        trials.hash(&mut h);
        for uri in uris {
            match self
                .store(&uri)
                .and_then(|s| s.version().map_err(|e| e.to_string()))
            {
                Ok(v) => v.hash(&mut h),
                Err(e) => e.hash(&mut h),
            }
        }
        Ok(h.finish())
    }

    fn describe(&self) -> String {
        format!("the cluster ({}) and each Experiment's store", self.scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use orchestra_api::{TrialStatus, Variant};

    fn trial(name: &str, status: Option<TrialStatus>) -> Arc<Trial> {
        let mut t: Trial = serde_json::from_value(serde_json::json!({
            "apiVersion": "orchestra.dev/v1alpha1", "kind": "Trial",
            "metadata": {"name": name, "namespace": "ns", "labels": {LABEL_EXPERIMENT: "e"}},
            "spec": {"experiment": "e", "trial": name, "variant": "D4", "dataset": "synthetic://lesion",
                     "model": {"inputSize": 64}, "steps": 10, "store": "memory://"}
        }))
        .unwrap();
        t.status = status;
        Arc::new(t)
    }

    fn experiment() -> Experiment {
        serde_yaml::from_str(
            "apiVersion: orchestra.dev/v1alpha1\nkind: Experiment\nmetadata: { name: e, namespace: ns }\nspec:\n  dataset: synthetic://lesion\n  model: { inputSize: 64 }\n  variants: [D4]\n  search: { lambdaRate: { type: list, values: [0.1, 0.2] } }\n  steps: 10\n  store: memory://\n",
        )
        .unwrap()
    }

    #[test]
    fn the_cluster_says_the_phase_and_attempts_and_a_trial_without_objects_gets_a_row() {
        let exp = experiment();
        let mut view = bare(&exp);
        let mut stored = TrialView::new("e-d4-000", Variant::D4);
        stored.phase = TrialPhase::Running;
        stored.step = Some(4);
        stored.has_metrics = true;
        view.trials.push(stored);
        let restarted = TrialStatus {
            phase: TrialPhase::AttemptFailed,
            attempts: 2,
            last_checkpoint_step: Some(6),
            message: Some("exit code 137".into()),
            started_at: Some("2026-12-03T10:00:00Z".into()),
            ..Default::default()
        };
        let now = rfc3339_ms("2026-12-03T10:01:30Z").unwrap();
        overlay_trials(
            &mut view,
            &[trial("e-d4-000", Some(restarted)), trial("e-d4-001", None)],
            now,
        );
        let rows: Vec<_> = view
            .trials
            .iter()
            .map(|t| (t.name.as_str(), t.phase, t.attempts, t.step, t.seconds))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "e-d4-000",
                    TrialPhase::AttemptFailed,
                    Some(2),
                    Some(6),
                    Some(90.0)
                ),
                ("e-d4-001", TrialPhase::Pending, Some(0), None, None),
            ]
        );
        assert!(view.trials[0].has_metrics, "what the store said stays");
        assert_eq!(view.trials[0].message.as_deref(), Some("exit code 137"));
        assert_eq!(view.trials[1].params.get("lambdaRate"), Some(&0.2));
    }

    #[test]
    fn a_trials_history_is_the_events_that_name_it() {
        let e = |note: &str| EventView {
            kind: "Normal".into(),
            reason: "R".into(),
            note: note.into(),
            trial: None,
            age_s: None,
        };
        assert!(about(&e("e-d4-001: attempt 2, resuming"), "e-d4-001"));
        assert!(about(&e("e-d4-001"), "e-d4-001"));
        assert!(about(&e("e-d4-001 (x3)"), "e-d4-001"));
        assert!(!about(&e("e-d4-0012: attempt 2"), "e-d4-001"));
        assert!(!about(&e("finished: e-d4-001 won"), "e-d4-001"));
    }

    #[test]
    fn an_events_related_trial_decides_over_its_note() {
        let mut ev = Event {
            note: Some("e-d4-001: started".into()),
            related: Some(ObjectReference {
                kind: Some("Trial".into()),
                name: Some("e-d4-002".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = event_view(&ev);
        assert_eq!(view.trial.as_deref(), Some("e-d4-002"));
        assert!(
            about(&view, "e-d4-002"),
            "the related Trial, whatever the note says"
        );
        assert!(
            !about(&view, "e-d4-001"),
            "a note naming another trial does not count"
        );
        ev.related.as_mut().unwrap().kind = Some("Pod".into());
        let view = event_view(&ev);
        assert_eq!(view.trial, None, "only a Trial is a trial");
        assert!(
            about(&view, "e-d4-001"),
            "without a related Trial, the note decides"
        );
    }
}
