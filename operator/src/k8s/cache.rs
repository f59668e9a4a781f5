//! What the reconciler reads instead of listing: the controller's own watches of Trials, Jobs and
//! Pods, each reflected into a store (kube-runtime's reflector), so that a reconciliation costs the
//! API server no list at all. At 1,000 trials per Experiment three lists per look were most of
//! the API server's CPU and half of each reconciliation (docs/results/2026-12-03-cluster-scale.md).
//!
//! A cache is behind what this process just wrote (its watch has not delivered it yet), so each
//! write's answer is kept (`WriteThrough`) and read in place of the cached object until the cache
//! holds that version or a later one: a trial whose status was just written is never seen in its
//! previous phase (which would record its transition twice), and a Job just created is never
//! taken for a gang whose Job is gone.
//!
//! Fields the reconciler never reads are dropped before caching (managed fields everywhere, a
//! pod's spec, a Job's pod template, all of an ended Job but its end), and finished pods are not
//! watched at all, which keeps the operator's memory to a few kB per trial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use k8s_openapi::api::batch::v1::JobCondition;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use orchestra_api::{Trial, TrialPhase};

use super::gang_job::{GangJob, GangJobStatus};
use super::names::LABEL_EXPERIMENT;

/// How long a written object stands in for the cache at most: a watch delivers in well under
/// that, and an object deleted before its watch ever showed it must not linger.
const WRITE_THROUGH_FOR: Duration = Duration::from_secs(120);

/// Objects this process wrote, by namespace and name, until the cache catches up.
pub struct WriteThrough<K> {
    written: Mutex<HashMap<(String, String), (K, Instant)>>,
    /// What the cache drops of such an object, dropped here too.
    strip: fn(&mut K),
}

impl<K> WriteThrough<K> {
    pub fn stripping(strip: fn(&mut K)) -> Self {
        WriteThrough {
            written: Mutex::new(HashMap::new()),
            strip,
        }
    }
}

/// Whether version `a` is later than `b`. Resource versions are opaque to clients in general;
/// the API server's are etcd revisions, which count up, so they are compared as numbers, and an
/// unreadable one is never taken for the later.
fn later(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(|a| a.parse::<u64>().ok()),
        b.and_then(|b| b.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

fn key<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl<K: Resource + Clone> WriteThrough<K> {
    pub fn remember(&self, mut object: K) {
        object.meta_mut().managed_fields = None;
        (self.strip)(&mut object);
        let mut w = self
            .written
            .lock()
            .expect("the write-through lock is never poisoned");
        w.insert(key(&object), (object, Instant::now()));
    }

    /// This process deleted it: the cache's word (and, once its watch says so, its absence) is
    /// the truth.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut w = self
            .written
            .lock()
            .expect("the write-through lock is never poisoned");
        w.remove(&(namespace.to_string(), name.to_string()));
    }

    /// `cached` with each object replaced by what this process wrote when that is later, plus
    /// the written objects (of `wanted`) that the cache does not hold yet. Written objects the
    /// cache has caught up with are dropped.
    pub fn merge(&self, cached: Vec<Arc<K>>, wanted: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let mut w = self
            .written
            .lock()
            .expect("the write-through lock is never poisoned");
        w.retain(|_, (_, at)| at.elapsed() < WRITE_THROUGH_FOR);
        let mut out = Vec::with_capacity(cached.len());
        let mut seen = std::collections::HashSet::new();
        for c in cached {
            let k = key(c.as_ref());
            match w.get(&k) {
                Some((mine, _))
                    if later(
                        mine.resource_version().as_deref(),
                        c.resource_version().as_deref(),
                    ) =>
                {
                    out.push(Arc::new(mine.clone()));
                }
                Some(_) => {
                    w.remove(&k);
                    out.push(c);
                }
                None => out.push(c),
            }
            seen.insert(k);
        }
        out.extend(
            w.iter()
                .filter(|(k, (o, _))| !seen.contains(*k) && wanted(o))
                .map(|(_, (o, _))| Arc::new(o.clone())),
        );
        out
    }
}

/// One namespace or all of them, for every kind the operator watches.
pub fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The reconciler's caches and what it wrote ahead of them.
pub struct Caches {
    trials: Store<Trial>,
    jobs: Store<GangJob>,
    pods: Store<Pod>,
    pub written_trials: WriteThrough<Trial>,
    pub written_jobs: WriteThrough<GangJob>,
}

/// One Experiment's objects as the caches (and this process's writes) show them, shared with
/// the caches rather than copied (at 1,000 trials an Experiment, ten reconciliations at once
/// each copying theirs were most of the operator's memory).
pub struct Seen {
    pub trials: Vec<Arc<Trial>>,
    pub jobs: Vec<Arc<GangJob>>,
    /// Pods that have not finished (a finished pod tells the reconciler nothing).
    pub pods: Vec<Arc<Pod>>,
}

fn of<K: Resource>(o: &K, namespace: &str, experiment: &str) -> bool {
    o.namespace().as_deref() == Some(namespace)
        && o.labels().get(LABEL_EXPERIMENT).map(String::as_str) == Some(experiment)
}

impl Caches {
    /// Whether every cache holds its first complete listing, waiting `patience` at most. A
    /// reconciliation never goes on without (an empty cache would read as "no trials, every Job
    /// gone"); it is retried instead. Each call waits afresh: under a throttled API server (a
    /// 429 on the first listing) a waiter from before the listing came back was seen to wait
    /// for ever, while later ones found the caches filled.
    pub async fn ready(&self, patience: Duration) -> bool {
        let all = async {
            self.trials.wait_until_ready().await.is_ok()
                && self.jobs.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(patience, all).await.unwrap_or(false)
    }

    /// The Trials as watched (for readers that do not write, such as the dashboard).
    pub fn trials(&self) -> Store<Trial> {
        self.trials.clone()
    }

    pub fn experiment(&self, namespace: &str, experiment: &str) -> Seen {
        Seen {
            trials: self
                .written_trials
                .merge(self.trials.state_filter(|t| of(t, namespace, experiment)), |t| {
                    of(t, namespace, experiment)
                }),
            jobs: self
                .written_jobs
                .merge(self.jobs.state_filter(|j| of(j, namespace, experiment)), |j| {
                    of(j, namespace, experiment)
                }),
            pods: self
                .pods
                .state_filter(|p| of(p, namespace, experiment) && !finished(p)),
        }
    }
}

/// The streams that feed the controller's triggers and the caches.
pub struct Watches<T, J, P> {
    pub trials: T,
    pub jobs: J,
    pub pods: P,
}

/// A watch of `api` (filtered by `config`) whose objects, stripped by `strip`, go into a store
/// and on to the controller.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            strip(o);
        })
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// The pods watched: those that have not finished. A finished pod tells the reconciler nothing
/// (its Job says how its gang ended), yet every trial leaves one behind until its Experiment is
/// deleted; the API server sends a pod that finishes as deleted from this watch, so the cache
/// holds the running gangs only, not every pod the Experiment ever ran.
const UNFINISHED_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Observation reads a pod's labels, deletion time, phase and conditions only.
fn strip_pod(p: &mut Pod) {
    p.spec = None;
    p.metadata.annotations = None;
    if let Some(s) = p.status.as_mut() {
        s.container_statuses = None;
        s.init_container_statuses = None;
        s.pod_ips = None;
        s.host_ips = None;
    }
}

/// Observation reads a Job's name, labels, `suspend`, conditions and times only (all a
/// `GangJob` has); of a Job that has ended, only that it ended and why.
fn strip_job(j: &mut GangJob) {
    j.metadata.annotations = None;
    if ended(j) {
        shrink_ended_job(j);
    }
}

/// Whether a condition says its Job has ended for good: Complete or Failed, true (a
/// FailureTarget Job still has pods stopping, and its start time and pods are still read).
fn ends_job(c: &JobCondition) -> bool {
    c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed")
}

fn ended(j: &GangJob) -> bool {
    let conditions = j.status.as_ref().and_then(|s| s.conditions.as_deref());
    conditions.unwrap_or_default().iter().any(ends_job)
}

/// An ended Job stays in the cache until its Experiment goes (every finished trial keeps its
/// Job for `kubectl logs`), so at 10,000 trials the cache held thousands of them: it keeps
/// what tells its trial's gang ended and how (name, labels, version, the true terminal
/// conditions with their reason and message).
fn shrink_ended_job(j: &mut GangJob) {
    let m = &mut j.metadata;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    m.uid = None;
    m.creation_timestamp = None;
    j.spec = None;
    let conditions = j.status.take().and_then(|s| s.conditions).map(|cs| {
        cs.into_iter()
            .filter(ends_job)
            .map(|c| JobCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                ..Default::default()
            })
            .collect()
    });
    j.status = Some(GangJobStatus {
        conditions,
        ..Default::default()
    });
}

/// A finished trial's result stays in its status on the server, not in the cache: at 10,000
/// trials the results were a good part of the operator's memory, and nothing reads them from
/// the cache (the ranking reads the store). A Succeeded trial's status is never written again
/// (`Scope::write_trial_status` refuses a Succeeded status without its result, so that a
/// stripped copy can never erase the result on the server).
pub fn strip_trial(t: &mut Trial) {
    if let Some(s) = t.status.as_mut().filter(|s| s.phase == TrialPhase::Succeeded) {
        s.result = None;
    }
}

#[allow(clippy::type_complexity)]
pub fn watches(
    trials: Api<Trial>,
    jobs: Api<GangJob>,
    pods: Api<Pod>,
    config: watcher::Config,
) -> (
    Caches,
    Watches<
        impl Stream<Item = Result<Trial, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<GangJob, watcher::Error>> + Send + 'static,
        impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    >,
) {
    let (trial_store, trial_stream) = reflected(trials, config.clone(), strip_trial);
    let (job_store, job_stream) = reflected(jobs, config.clone(), strip_job);
    let (pod_store, pod_stream) = reflected(pods, config.fields(UNFINISHED_PODS), strip_pod);
    (
        Caches {
            trials: trial_store,
            jobs: job_store,
            pods: pod_store,
            written_trials: WriteThrough::stripping(strip_trial),
            written_jobs: WriteThrough::stripping(strip_job),
        },
        Watches {
            trials: trial_stream,
            jobs: job_stream,
            pods: pod_stream,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, rv: &str, exp: &str) -> GangJob {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                         "labels": {LABEL_EXPERIMENT: exp}, "annotations": {"note": "unread"}},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_succeeded_trial_loses_its_result_in_the_cache() {
        let trial = |phase: &str| -> Trial {
            let mut t: Trial = serde_json::from_value(serde_json::json!({
                "apiVersion": "orchestra.dev/v1alpha1", "kind": "Trial",
                "metadata": {"name": "t", "namespace": "ns"},
                "spec": {"experiment": "e", "trial": "t", "variant": "D4", "dataset": "synthetic://lesion",
                         "model": {"inputSize": 64}, "steps": 10, "store": "memory://"},
                "status": {"phase": phase, "dice": 0.8, "bpp": 0.004}
            }))
            .unwrap();
            t.status.as_mut().unwrap().result = Some(orchestra_api::TrialResult {
                experiment: "e".into(),
                trial: "t".into(),
                variant: orchestra_api::Variant::D4,
                steps: 10,
                scores: orchestra_api::SegmentationScores {
                    dice: 0.8,
                    iou: 0.7,
                    dice_per_class: vec![0.8],
                    iou_per_class: vec![0.7],
                    images: 4,
                },
                rate: None,
                source_bits_per_pixel: 24.0,
                params: Default::default(),
                timings: Default::default(),
                hyper: Default::default(),
                teachers: Vec::new(),
            });
            t
        };
        let mut done = trial("Succeeded");
        strip_trial(&mut done);
        let s = done.status.unwrap();
        assert!(s.result.is_none());
        assert_eq!((s.dice, s.bpp), (Some(0.8), Some(0.004)), "its headline stays");
        // (No other phase carries a result; one that did would keep it.)
        let mut other = trial("Paused");
        strip_trial(&mut other);
        assert!(other.status.unwrap().result.is_some());
    }

    /// A Job as the API server sends it (shortened pod template), ended as `end` says.
    fn served_job(end: Option<(&str, &str)>) -> serde_json::Value {
        let mut conditions = vec![serde_json::json!({"type": "SuccessCriteriaMet", "status": "True",
            "lastProbeTime": "2026-12-03T10:00:00Z", "lastTransitionTime": "2026-12-03T10:00:00Z",
            "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"})];
        if let Some((kind, reason)) = end {
            conditions.push(serde_json::json!({"type": kind, "status": "True",
                "lastProbeTime": "2026-12-03T10:00:01Z", "lastTransitionTime": "2026-12-03T10:00:01Z",
                "reason": reason, "message": "the gang's pods said so"}));
        }
        serde_json::json!({
            "metadata": {"name": "t-a1", "namespace": "ns", "resourceVersion": "42",
                "uid": "0b4c1f7e-5d0e-4a8e-9d55-0d8a3c7f0e11", "generation": 1,
                "creationTimestamp": "2026-12-03T09:59:00Z",
                "labels": {LABEL_EXPERIMENT: "e", "orchestra.dev/trial": "t",
                           "app.kubernetes.io/managed-by": "orchestra-operator"},
                "ownerReferences": [{"apiVersion": "orchestra.dev/v1alpha1", "kind": "Trial",
                    "name": "t", "uid": "9a1d2c3b-0000-4000-8000-000000000001", "controller": true}]},
            "spec": {"parallelism": 1, "completions": 1, "completionMode": "Indexed",
                "backoffLimit": 0, "suspend": false,
                "podFailurePolicy": {"rules": [{"action": "FailJob",
                    "onExitCodes": {"operator": "NotIn", "values": [0]}}]},
                "template": {"metadata": {"labels": {"orchestra.dev/trial": "t"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "worker",
                        "image": "orchestra-worker:latest", "args": ["train", "--spec", "/etc/orchestra/trial.json"]}]}}},
            "status": {"startTime": "2026-12-03T09:59:01Z", "completionTime": "2026-12-03T10:00:01Z",
                "succeeded": 1, "ready": 0, "terminating": 0, "completedIndexes": "0",
                "uncountedTerminatedPods": {}, "conditions": conditions}
        })
    }

    #[test]
    fn an_ended_job_is_cached_as_its_end_and_a_running_one_as_observation_reads_it() {
        use k8s_openapi::api::batch::v1::Job;
        assert!(
            size_of::<GangJob>() * 4 < size_of::<Job>(),
            "a cached Job is {} bytes before its strings, a Job {}",
            size_of::<GangJob>(),
            size_of::<Job>()
        );
        let size = |j: &serde_json::Value| serde_json::to_vec(j).unwrap().len();
        for (kind, reason) in [("Complete", "CompletionsReached"), ("Failed", "PodFailurePolicy")] {
            let served = served_job(Some((kind, reason)));
            let mut cached: GangJob = serde_json::from_value(served.clone()).unwrap();
            strip_job(&mut cached);
            let kept = serde_json::to_value(&cached).unwrap();
            assert!(
                size(&kept) * 3 < size(&served),
                "{kind}: {} of {} bytes kept",
                size(&kept),
                size(&served)
            );
            assert_eq!(cached.name_any(), "t-a1");
            assert_eq!(cached.resource_version().as_deref(), Some("42"));
            assert!(of(&cached, "ns", "e"), "still found as the Experiment's");
            let conditions = cached.status.unwrap().conditions.unwrap();
            assert_eq!(conditions.len(), 1, "the end only: {conditions:?}");
            let c = &conditions[0];
            assert_eq!((c.type_.as_str(), c.reason.as_deref()), (kind, Some(reason)));
            assert_eq!(c.message.as_deref(), Some("the gang's pods said so"));
        }
        let mut complete: GangJob =
            serde_json::from_value(served_job(Some(("Complete", "CompletionsReached")))).unwrap();
        strip_job(&mut complete);
        assert!(super::super::observe::gang_completed(&[complete], "t", 1));
        // Still running (a FailureTarget Job too): its start time and `suspend` stay.
        for end in [None, Some(("FailureTarget", "PodFailurePolicy"))] {
            let mut running: GangJob = serde_json::from_value(served_job(end)).unwrap();
            strip_job(&mut running);
            assert!(running.status.as_ref().unwrap().start_time.is_some());
            assert_eq!(running.spec.as_ref().unwrap().suspend, Some(false));
            assert!(running.metadata.creation_timestamp.is_some());
        }
    }

    #[test]
    fn a_write_stands_in_for_the_cache_until_the_cache_catches_up() {
        let w = WriteThrough::stripping(strip_job);
        let wanted = |j: &GangJob| j.labels().get(LABEL_EXPERIMENT).map(String::as_str) == Some("e");
        // Just created: not cached yet, read from the write.
        w.remember(job("a", "10", "e"));
        w.remember(job("other", "11", "f"));
        let seen = w.merge(vec![], wanted);
        assert_eq!(seen.iter().map(|j| j.name_any()).collect::<Vec<_>>(), ["a"]);
        assert!(
            seen[0].metadata.annotations.is_none(),
            "stripped as the cache strips"
        );
        // The cache still shows an older version: the write wins.
        w.remember(job("b", "20", "e"));
        let seen = w.merge(vec![Arc::new(job("b", "15", "e"))], wanted);
        let b = seen.iter().find(|j| j.name_any() == "b").unwrap();
        assert_eq!(b.resource_version().as_deref(), Some("20"));
        // The cache caught up (same or later version): the cache wins, the write is dropped.
        let seen = w.merge(
            vec![Arc::new(job("b", "25", "e")), Arc::new(job("a", "10", "e"))],
            wanted,
        );
        let versions: Vec<_> = seen.iter().map(|j| j.resource_version().unwrap()).collect();
        assert_eq!(versions, ["25", "10"]);
        assert!(w.written.lock().unwrap().keys().all(|(_, n)| n == "other"));
        // Deleted by us: forgotten.
        w.remember(job("c", "30", "e"));
        w.forget("ns", "c");
        assert!(w.merge(vec![], wanted).is_empty());
    }

    #[test]
    fn versions_compare_as_numbers_and_unreadable_ones_never_win() {
        assert!(later(Some("100"), Some("99")));
        assert!(!later(Some("99"), Some("100")));
        assert!(!later(Some("x"), Some("1")));
        assert!(!later(None, Some("1")));
    }
}
