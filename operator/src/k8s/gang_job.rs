//! A gang's Job as the reconciler reads it: its metadata, whether it is suspended, when it
//! started and its conditions, and nothing else. The watch and the lists decode the API
//! server's Jobs straight into it (the fields it has no place for are skipped while parsing),
//! so the pod template, the selector and the counters are never held at all.
//!
//! Why a type of its own: k8s-openapi's `Job` holds its spec inline, and a `JobSpec` holds a
//! whole `PodTemplateSpec`, so every `Job` costs 2.6 kB before a single string, even with its
//! spec stripped; the operator keeps every finished trial's Job in its cache until the
//! Experiment goes (measured with heaptrack at 3,000 trials: the caches were two thirds of the
//! heap, docs/results/2026-12-03-cluster-scale.md). This one is some 420 bytes.

use std::borrow::Cow;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct GangJob {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<GangJobSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GangJobStatus>,
}

/// Of a Job's spec: whether it is suspended (waiting in its Kueue queue).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct GangJobSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Of a Job's status: when its pods could first start, and its conditions.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GangJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<JobCondition>>,
}

impl GangJob {
    /// The condition `kind` when it is true: its reason, and its message after a colon.
    pub fn condition_true(&self, kind: &str) -> Option<String> {
        self.status.as_ref()?.conditions.as_ref()?.iter().find_map(|c| {
            (c.type_ == kind && c.status == "True").then(|| {
                let reason = c.reason.clone().unwrap_or_default();
                match &c.message {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason,
                }
            })
        })
    }

    pub fn suspended(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.suspend) == Some(true)
    }
}

/// What this process wrote (the API server's answer, a whole `Job`), as the cache holds it.
impl From<Job> for GangJob {
    fn from(j: Job) -> GangJob {
        GangJob {
            metadata: j.metadata,
            spec: j.spec.map(|s| GangJobSpec { suspend: s.suspend }),
            status: j.status.map(|s| GangJobStatus {
                start_time: s.start_time,
                conditions: s.conditions,
            }),
        }
    }
}

/// The same API resource as `Job` (batch/v1 jobs): only the Rust type differs.
impl kube::Resource for GangJob {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Job as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Job as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Job as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Job as kube::Resource>::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Job as the API server sends it.
    fn served() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "t-a1", "namespace": "ns", "resourceVersion": "42",
                "labels": {"orchestra.dev/trial": "t"}},
            "spec": {"parallelism": 2, "completions": 2, "completionMode": "Indexed", "suspend": true,
                "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "worker", "image": "orchestra-worker:latest"}]}}},
            "status": {"startTime": "2026-12-03T09:59:01Z", "active": 2, "ready": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}]}
        })
    }

    #[test]
    fn decoded_from_a_served_job_as_from_the_job_type_and_named_as_jobs() {
        let direct: GangJob = serde_json::from_value(served()).unwrap();
        let via: GangJob = serde_json::from_value::<Job>(served()).unwrap().into();
        assert_eq!(direct, via);
        assert!(direct.suspended());
        assert_eq!(
            direct.condition_true("Failed").as_deref(),
            Some("BackoffLimitExceeded: Job has reached the specified backoff limit")
        );
        assert_eq!(direct.condition_true("Complete"), None);
        assert!(direct.status.as_ref().unwrap().start_time.is_some());
        use kube::Resource;
        assert_eq!(GangJob::url_path(&(), Some("ns")), Job::url_path(&(), Some("ns")));
        assert_eq!(GangJob::api_version(&()), "batch/v1");
        assert_eq!(GangJob::kind(&()), "Job");
    }
}
