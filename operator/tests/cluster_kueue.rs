//! Kueue, for real: the upstream Kueue manager (sigs.k8s.io/kueue, built from its Go module by
//! `make setup`) with its CRDs and webhooks served by the real API server
//! (scripts/cluster_kueue.sh), in front of the operator. A ClusterQueue whose quota holds two
//! single-worker trials, a LocalQueue, and an Experiment that asks for six at once: the operator
//! makes each gang's Job suspended in the queue, Kueue admits two at a time.
//!
//! An observer lists the Experiment's Jobs and Kueue's Workloads every second: never more than
//! two gangs admitted (unsuspended and not finished), and no Job suspended again once admitted.
//! The API server's audit log says who wrote to the Jobs: the operator only made and deleted
//! them, Kueue unsuspended them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::cluster::{self, run_experiment, Cluster, Layout, Operator};
use support::poller::{Poller, Sampler};
use support::s3::S3;

fn cluster() -> &'static Cluster {
    cluster::shared_with(&Layout {
        kueue: true,
        ..Layout::default()
    })
}

/// What the cluster's admin makes: one flavor and a ClusterQueue admitting two gangs of one
/// 1-CPU 1-GiB worker at a time.
const CLUSTER_QUEUE: &str = "apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: { name: orchestra-cpu }
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: { name: orchestra }
spec:
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: [cpu, memory]
    flavors:
    - name: orchestra-cpu
      resources:
      - { name: cpu, nominalQuota: 2 }
      - { name: memory, nominalQuota: 2Gi }
";

/// Six single-worker trials, all asked for at once, through the chart's LocalQueue.
fn experiment(name: &str) -> String {
    format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  dataset: synthetic://lesion?n=24&size=32&seed=5&val=4
  model: {{ inputSize: 32, downsample: 8 }}
  variants: [D4]
  hyper: {{ batchSize: 2 }}
  search:
    lambdaRate: {{ type: list, values: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5] }}
  algorithm: {{ type: grid }}
  steps: 24
  checkpointEvery: 8
  workersPerTrial: 1
  resources: {{ cpu: \"1\", memory: 1Gi }}
  parallelism: 6
  queueName: orchestra-trials
  store: s3://{name}/{name}
  storeSecret: orchestra-store
  objective: {{ bppBudget: 0.5 }}
"
    )
}

/// What the observer saw of the queue.
#[derive(Debug, Default)]
struct Queueing {
    samples: usize,
    /// The most gangs admitted at one moment (Jobs unsuspended and not finished).
    most_admitted: usize,
    /// The most Jobs waiting suspended in the queue at one moment.
    most_waiting: usize,
    /// Jobs seen unsuspended and later suspended again (an admitted gang taken back).
    suspended_again: BTreeSet<String>,
    /// Jobs seen unsuspended.
    admitted: BTreeSet<String>,
    /// One line per moment with more than two gangs admitted.
    over_quota: Vec<String>,
    /// Seconds from the first sample to each Job's first sample admitted, and to its first
    /// sample finished.
    admitted_at: BTreeMap<String, f64>,
    finished_at: BTreeMap<String, f64>,
}

fn finished(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    })
}

impl Sampler for Queueing {
    fn sample(&mut self, jobs: &[Value], at: f64) {
        self.samples += 1;
        let (mut admitted, mut waiting) = (Vec::new(), 0);
        for job in jobs {
            let name = job["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let suspended = job["spec"]["suspend"].as_bool().unwrap_or(false);
            if suspended {
                if self.admitted.contains(&name) {
                    self.suspended_again.insert(name);
                } else if !finished(job) {
                    waiting += 1;
                }
            } else {
                self.admitted.insert(name.clone());
                self.admitted_at.entry(name.clone()).or_insert(at);
                if finished(job) {
                    self.finished_at.entry(name.clone()).or_insert(at);
                }
                if !finished(job) && job["metadata"]["deletionTimestamp"].is_null() {
                    admitted.push(name);
                }
            }
        }
        if admitted.len() > 2 {
            self.over_quota
                .push(format!("sample {}: admitted {admitted:?}", self.samples));
        }
        self.most_admitted = self.most_admitted.max(admitted.len());
        self.most_waiting = self.most_waiting.max(waiting);
    }
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

#[test]
fn kueue_admits_two_gangs_at_a_time_and_every_trial_finishes() {
    let c = cluster();
    let ns = c.namespace("kueue");
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], Some(CLUSTER_QUEUE));
    assert!(
        applied.status.success(),
        "Kueue refused the ClusterQueue: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // The LocalQueue as the chart makes it (kueue.localQueue in its values).
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/orchestra");
    let local_queue = c.helm(&[
        "template",
        "orchestra",
        &chart.display().to_string(),
        "--namespace",
        &ns,
        "--show-only",
        "templates/localqueue.yaml",
        "--set",
        "kueue.localQueue.create=true",
        "--set",
        "kueue.localQueue.clusterQueue=orchestra",
    ]);
    let applied = c.kubectl_stdin(&["-n", &ns, "apply", "-f", "-"], Some(&local_queue));
    assert!(
        applied.status.success(),
        "Kueue refused the chart's LocalQueue: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    c.wait_for(
        "ClusterQueue orchestra to be active",
        Duration::from_secs(60),
        || condition_true(&c.get_json("", "clusterqueue/orchestra"), "Active").then_some(()),
    );
    let s3 = S3::start(c, &ns, "queued");
    let operator = Operator::start(c, &ns, &s3.creds());
    // Every second, the Experiment's Jobs.
    let watch: Poller<Queueing> = Poller::start(c, &ns, "queued", "jobs", Duration::from_secs(1));
    let status = run_experiment(
        c,
        &ns,
        &experiment("queued"),
        "queued",
        &operator,
        Duration::from_secs(900),
    );
    let seen = watch.finish();
    eprintln!("kueue: {seen:?}");
    for (job, at) in &seen.admitted_at {
        eprintln!(
            "kueue: {job} admitted at {at:.0} s, finished by {} s",
            seen.finished_at
                .get(job)
                .map_or("-".into(), |f| format!("{f:.0}"))
        );
    }

    // Every trial finished, once.
    let trials = c.items(&ns, "trials");
    assert_eq!(trials.len(), 6, "{status}");
    for t in &trials {
        assert_eq!(t["status"]["phase"], "Succeeded", "{}", t["status"]);
        assert_eq!(t["status"]["attempts"], 1, "{}", t["status"]);
    }

    // Kueue held the queue: two gangs at a time, the others waiting suspended, none taken back.
    assert!(seen.samples >= 6, "the observer saw too little: {seen:?}");
    assert!(
        seen.over_quota.is_empty(),
        "more than the quota admitted: {:?}",
        seen.over_quota
    );
    assert_eq!(
        seen.most_admitted, 2,
        "the quota of two was never used in full: {seen:?}"
    );
    assert!(
        seen.most_waiting >= 2,
        "no gang ever waited in the queue: {seen:?}"
    );
    assert!(
        seen.suspended_again.is_empty(),
        "admitted Jobs suspended again: {seen:?}"
    );

    // Kueue's Workloads show each gang's admission to the ClusterQueue, and its end.
    let jobs = c.items(&ns, "jobs");
    assert_eq!(jobs.len(), 6);
    let workloads = c.items(&ns, "workloads.kueue.x-k8s.io");
    let mut owned: BTreeMap<String, &Value> = BTreeMap::new();
    for w in &workloads {
        for owner in w["metadata"]["ownerReferences"].as_array().into_iter().flatten() {
            if owner["kind"] == "Job" {
                owned.insert(owner["name"].as_str().unwrap_or_default().to_string(), w);
            }
        }
    }
    for job in &jobs {
        let name = job["metadata"]["name"].as_str().unwrap();
        let w = owned
            .get(name)
            .unwrap_or_else(|| panic!("no Workload for Job {name}: {workloads:?}"));
        assert_eq!(
            w["status"]["admission"]["clusterQueue"], "orchestra",
            "{}",
            w["status"]
        );
        assert!(
            condition_true(w, "Admitted") || condition_true(w, "Finished"),
            "{}",
            w["status"]
        );
        assert!(
            condition_true(w, "Finished"),
            "Workload of {name} not finished: {}",
            w["status"]
        );
    }

    // Who wrote to the Jobs: the operator made them (and changed none after), Kueue unsuspended
    // each of them.
    let writes = c.audited_writes(&ns);
    let job_writes = |agent: &str| -> BTreeMap<String, usize> {
        let mut by_verb = BTreeMap::new();
        for w in writes.iter().filter(|w| {
            w["objectRef"]["resource"] == "jobs"
                && w["objectRef"]["subresource"].is_null()
                && w["userAgent"].as_str().unwrap_or_default().starts_with(agent)
        }) {
            *by_verb
                .entry(w["verb"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
        by_verb
    };
    let operator_writes = job_writes("orchestra-operator");
    assert_eq!(operator_writes.get("create"), Some(&6), "{operator_writes:?}");
    assert!(
        operator_writes.keys().all(|v| v == "create"),
        "the operator changed a Job after making it: {operator_writes:?}"
    );
    let kueue_writes = job_writes("kueue");
    let kueue_changes: usize = ["update", "patch"]
        .iter()
        .filter_map(|v| kueue_writes.get(*v))
        .sum();
    assert!(
        kueue_changes >= 6,
        "Kueue did not unsuspend each Job: {kueue_writes:?}"
    );
}
