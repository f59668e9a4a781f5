//! From what the cluster shows (Trials, their gangs' Jobs and Pods) and what the store holds
//! (`result.json`), to what the planner needs: each trial's phase, attempts and the time of its
//! last change, plus the transitions to record. Pure: the reconciler does the I/O.

use std::borrow::Borrow;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use orchestra_api::{RungRecord, Trial, TrialPhase, TrialResult};
pub use orchestra_store::layout::Reached;

use super::gang_job::GangJob;
use super::names;
use crate::observed::ObservedTrial;

/// A change seen in this observation.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// The gang finished and its result is in the store.
    Succeeded { trial: String, result: Box<TrialResult> },
    /// The gang reached its rung and its record there is in the store: the trial waits for
    /// the search to promote or stop it.
    Paused { trial: String, record: Box<RungRecord> },
    /// The gang failed (a pod failed, the Job is gone, or no result was written).
    AttemptFailed {
        trial: String,
        attempt: u32,
        reason: String,
    },
    /// Some pods of the gang are still unscheduled after the gang timeout.
    Unschedulable {
        trial: String,
        pending: Vec<String>,
        waited: u64,
    },
}

impl Transition {
    /// The trial that made the transition.
    pub fn trial(&self) -> &str {
        match self {
            Transition::Succeeded { trial, .. }
            | Transition::Paused { trial, .. }
            | Transition::AttemptFailed { trial, .. }
            | Transition::Unschedulable { trial, .. } => trial,
        }
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp().max(0) as u64)
}

pub fn format_time(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether the running gang of `trial` (attempt `attempts`) has completed: only then does the
/// store hold what it reached, so only then is the store read for it.
pub fn gang_completed<J: Borrow<GangJob>>(jobs: &[J], trial: &str, attempts: u32) -> bool {
    let name = names::job(trial, attempts);
    jobs.iter().map(Borrow::borrow).any(|j: &GangJob| {
        j.metadata.name.as_deref() == Some(name.as_str()) && j.condition_true("Complete").is_some()
    })
}

fn unscheduled(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Pending")
        && status.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

/// Seconds past a pod's deletion deadline after which it no longer holds its trial back: its
/// node stopped answering (a dead node's pods stay Terminating until it comes back), so the
/// trial restarts elsewhere rather than wait for ever.
pub const LOST_POD_GRACE: u64 = 30;

/// Whether `pod` is a live process of one of `trial`'s gangs other than `current` (the Job of
/// its running gang, if it runs): a failed or suspended gang's rank still terminating.
fn of_earlier_gang(pod: &Pod, trial: &str, current: Option<&str>, now: u64) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if label(names::LABEL_TRIAL) != Some(trial) {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if current.is_some() && label("job-name") == current {
        return false;
    }
    match &pod.metadata.deletion_timestamp {
        Some(deadline) => (deadline.0.as_second().max(0) as u64) + LOST_POD_GRACE > now,
        None => true,
    }
}

/// Observes every trial (in name order). `reached_of(trial)` is what the store holds for a
/// running trial's step target (its result, or its rung record).
pub fn observe<T: Borrow<Trial>, J: Borrow<GangJob>, P: Borrow<Pod>>(
    trials: &[T],
    jobs: &[J],
    pods: &[P],
    now: u64,
    gang_timeout: u64,
    reached_of: &mut dyn FnMut(&str) -> Option<Reached>,
) -> (Vec<ObservedTrial>, Vec<Transition>) {
    let mut sorted: Vec<&Trial> = trials.iter().map(Borrow::borrow).collect();
    sorted.sort_by_key(|t| t.metadata.name.clone());
    // Each trial looks at its own pods only: indexed once, not searched once per trial.
    let mut pods_of: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods.iter().map(Borrow::borrow) {
        if let Some(trial) = p.metadata.labels.as_ref().and_then(|l| l.get(names::LABEL_TRIAL)) {
            pods_of.entry(trial.as_str()).or_default().push(p);
        }
    }
    let mut observed = Vec::new();
    let mut transitions = Vec::new();
    for t in sorted {
        let name = t.metadata.name.clone().unwrap_or_default();
        let status = t.status.clone().unwrap_or_default();
        let created = t
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |ts| ts.0.as_second().max(0) as u64);
        let since = status
            .finished_at
            .as_deref()
            .or(status.started_at.as_deref())
            .and_then(parse_time)
            .unwrap_or(created);
        let mut phase = status.phase;
        let mut since = since;
        let mut rungs = status.rungs.clone();
        let own_pods = pods_of.get(name.as_str()).map_or(&[][..], Vec::as_slice);
        if phase == TrialPhase::Running {
            let change = gang_change(
                &name,
                status.attempts,
                jobs,
                own_pods,
                now,
                gang_timeout,
                reached_of,
            );
            match &change {
                Some(Transition::Succeeded { result, .. }) => {
                    phase = TrialPhase::Succeeded;
                    since = now;
                    rungs.push(RungRecord::of_result(result).score());
                }
                Some(Transition::Paused { record, .. }) => {
                    phase = TrialPhase::Paused;
                    since = now;
                    rungs.push(record.score());
                }
                Some(Transition::AttemptFailed { .. }) => {
                    phase = TrialPhase::AttemptFailed;
                    since = now;
                }
                _ => {}
            }
            transitions.extend(change);
        }
        let current_gang = (phase == TrialPhase::Running).then(|| names::job(&name, status.attempts));
        observed.push(ObservedTrial {
            target: status.target_step.unwrap_or(0),
            promotions: status.promotions,
            rungs,
            draining: own_pods
                .iter()
                .any(|p| of_earlier_gang(p, &name, current_gang.as_deref(), now)),
            ..ObservedTrial::new(&name, phase, status.attempts, since)
        });
    }
    (observed, transitions)
}

/// What became of a running trial's gang: its Job failed or is gone (the attempt failed), it
/// completed (succeeded with the stored result, or failed without one), or part of it is still
/// unscheduled after the gang timeout.
fn gang_change<J: Borrow<GangJob>>(
    name: &str,
    attempts: u32,
    jobs: &[J],
    pods: &[&Pod],
    now: u64,
    gang_timeout: u64,
    reached_of: &mut dyn FnMut(&str) -> Option<Reached>,
) -> Option<Transition> {
    let job_name = names::job(name, attempts);
    let job = jobs
        .iter()
        .map(Borrow::borrow)
        .find(|j: &&GangJob| j.metadata.name.as_deref() == Some(job_name.as_str()));
    let failed = |reason: String| Transition::AttemptFailed {
        trial: name.to_string(),
        attempt: attempts,
        reason,
    };
    match job {
        None => Some(failed(format!("the gang's Job {job_name} is gone"))),
        Some(j) => {
            // Since Kubernetes 1.31 a failing Job says FailureTarget at once and Failed only once
            // its pods have stopped: a pod on a dead node never does (it stays Terminating), so
            // the gang counts as failed from FailureTarget on (its pods hold the restart back
            // until they are gone, or given up for lost).
            let failure = j
                .condition_true("Failed")
                .or_else(|| j.condition_true("FailureTarget"));
            if let Some(reason) = failure {
                Some(failed(format!("Job {job_name} failed ({reason})")))
            } else if j.condition_true("Complete").is_some() {
                Some(match reached_of(name) {
                    Some(Reached::Finished(result)) => Transition::Succeeded {
                        trial: name.to_string(),
                        result,
                    },
                    Some(Reached::Rung(record)) => Transition::Paused {
                        trial: name.to_string(),
                        record,
                    },
                    None => failed(format!(
                        "Job {job_name} completed but the trial's result is not in the store (nor a rung record at its target)"
                    )),
                })
            } else if j.suspended() {
                // Waiting in its Kueue queue: no pods yet, nothing is unschedulable.
                None
            } else {
                // The gang's clock starts when its pods may: the Job's start time, which the Job
                // controller sets when the Job runs unsuspended (under Kueue, at admission,
                // however long it queued); its creation until then.
                let started = j
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .or(j.metadata.creation_timestamp.as_ref())
                    .map_or(now, |ts| ts.0.as_second().max(0) as u64);
                let pending: Vec<String> = pods
                    .iter()
                    .filter(|p| {
                        p.metadata.labels.as_ref().and_then(|l| l.get("job-name")) == Some(&job_name)
                            && unscheduled(p)
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                let waited = now.saturating_sub(started);
                (!pending.is_empty() && waited > gang_timeout).then(|| Transition::Unschedulable {
                    trial: name.to_string(),
                    pending,
                    waited,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(trial: &str, job: &str, phase: &str, deadline: Option<i64>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("{job}-0-x"),
                "labels": { names::LABEL_TRIAL: trial, "job-name": job },
            },
            "status": { "phase": phase },
        }))
        .unwrap();
        p.metadata.deletion_timestamp = deadline.map(|s| Time(Timestamp::from_second(s).unwrap()));
        p
    }

    /// Trial `t`, running its first attempt since 2026-01-01.
    fn running_trial() -> Trial {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "orchestra.dev/v1alpha1", "kind": "Trial",
            "metadata": { "name": "t", "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": serde_yaml::from_str::<serde_json::Value>(
                "variant: D4\nexperiment: e\ntrial: t\ndataset: synthetic://lesion\nmodel: { inputSize: 64 }\nsteps: 10\nstore: memory://x\n"
            ).unwrap(),
            "status": { "phase": "Running", "attempts": 1 },
        }))
        .unwrap()
    }

    #[test]
    fn a_live_pod_of_another_gang_of_the_trial_holds_it_back() {
        let now = 1_000;
        let current = Some("t-a2");
        assert!(of_earlier_gang(
            &pod("t", "t-a1", "Running", None),
            "t",
            current,
            now
        ));
        assert!(
            of_earlier_gang(&pod("t", "t-a1", "Running", Some(990)), "t", current, now),
            "terminating, within the grace"
        );
        assert!(
            !of_earlier_gang(&pod("t", "t-a1", "Running", Some(900)), "t", current, now),
            "its node stopped answering long ago"
        );
        assert!(!of_earlier_gang(
            &pod("t", "t-a1", "Failed", None),
            "t",
            current,
            now
        ));
        assert!(!of_earlier_gang(
            &pod("t", "t-a2", "Running", None),
            "t",
            current,
            now
        ));
        assert!(!of_earlier_gang(
            &pod("u", "u-a1", "Running", None),
            "t",
            current,
            now
        ));
        assert!(
            of_earlier_gang(&pod("t", "t-a2", "Running", None), "t", None, now),
            "a trial that no longer runs has no current gang"
        );
    }

    /// A real API server (1.31 and later) says FailureTarget while a failing Job's pods are
    /// still stopping, and Failed only once they have; a dead node's pod never stops.
    #[test]
    fn a_job_marked_failure_target_is_a_failed_attempt() {
        let trial = running_trial();
        let job: GangJob = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "t-a1" },
            "status": { "conditions": [
                { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded" }
            ] },
        }))
        .unwrap();
        let (observed, transitions) = observe(&[trial], &[job], &[] as &[Pod], 1_000, 600, &mut |_| None);
        assert_eq!(observed[0].phase, TrialPhase::AttemptFailed);
        assert!(
            matches!(&transitions[..], [Transition::AttemptFailed { reason, .. }] if reason.contains("BackoffLimitExceeded")),
            "{transitions:?}"
        );
    }

    /// Under Kueue a Job may wait in its queue far longer than the gang timeout; the timeout
    /// counts from its admission (the Job's start time), not from its creation.
    #[test]
    fn a_gang_admitted_late_by_kueue_is_not_unschedulable_at_once() {
        let trial = running_trial();
        let created = parse_time("2026-01-01T00:00:00Z").unwrap();
        let job = |suspend: bool, started: Option<&str>| -> GangJob {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "t-a1", "creationTimestamp": "2026-01-01T00:00:00Z" },
                "spec": { "suspend": suspend, "template": {} },
                "status": { "startTime": started },
            }))
            .unwrap()
        };
        let mut pending = pod("t", "t-a1", "Pending", None);
        pending.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
            serde_json::json!({ "type": "PodScheduled", "status": "False", "reason": "Unschedulable" }),
        )
        .unwrap()]);
        let unschedulable = |j: GangJob, pods: &[Pod], now: u64| {
            let (_, transitions) = observe(std::slice::from_ref(&trial), &[j], pods, now, 600, &mut |_| None);
            transitions
                .iter()
                .any(|t| matches!(t, Transition::Unschedulable { .. }))
        };
        let hour_later = created + 3_600;
        assert!(
            !unschedulable(job(true, None), &[], hour_later),
            "queued for an hour"
        );
        assert!(
            !unschedulable(
                job(false, Some("2026-01-01T00:59:50Z")),
                &[pending.clone()],
                hour_later
            ),
            "admitted 10 s ago"
        );
        assert!(
            unschedulable(
                job(false, Some("2026-01-01T00:10:00Z")),
                &[pending.clone()],
                hour_later
            ),
            "admitted 50 minutes ago and still not placed"
        );
        assert!(
            unschedulable(job(false, None), &[pending], hour_later),
            "no start time: counted from the Job's creation"
        );
    }
}
