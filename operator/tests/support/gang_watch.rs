//! An observer beside an end-to-end test (`poller`): every half second it lists an Experiment's
//! Jobs and pods and notes each moment when a trial had more than one gang alive (two live Jobs, or
//! live pods of two Jobs: two gangs of one trial would both write its checkpoints).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orchestra_operator::k8s::observe::{parse_time, LOST_POD_GRACE};
use serde_json::Value;

use super::cluster::Cluster;
use super::poller::{Poller, Sampler};

/// Lists the Experiment's Jobs and pods every half second until finished.
pub type GangWatch = Poller<Observed>;

impl GangWatch {
    pub fn watch(c: &'static Cluster, ns: &str, experiment: &str) -> GangWatch {
        Poller::start(c, ns, experiment, "jobs,pods", Duration::from_millis(500))
    }
}

/// What the observer saw.
#[derive(Debug, Default)]
pub struct Observed {
    pub samples: usize,
    /// One line per sample where a trial had two gangs alive.
    pub overlaps: Vec<String>,
    /// Every Job name seen, per trial.
    pub jobs: BTreeMap<String, BTreeSet<String>>,
}

fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v["metadata"]["labels"][key].as_str()
}

fn finished_job(j: &Value) -> bool {
    j["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    })
}

/// A pod whose process may still run: not finished, and not given up for lost (past its
/// deletion deadline by the operator's grace: its node stopped answering; where a test kills a
/// node, its processes died with it).
fn live_pod(p: &Value, now: u64) -> bool {
    let lost = p["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(parse_time)
        .is_some_and(|deadline| deadline + LOST_POD_GRACE <= now);
    !lost && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

impl Sampler for Observed {
    fn sample(&mut self, items: &[Value], _: f64) {
        self.samples += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut live_jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut live_gangs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in items {
            let Some(trial) = label(item, "orchestra.dev/trial") else {
                continue;
            };
            let name = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
            match item["kind"].as_str() {
                Some("Job") => {
                    self.jobs.entry(trial.into()).or_default().insert(name.clone());
                    if !finished_job(item) && item["metadata"]["deletionTimestamp"].is_null() {
                        live_jobs.entry(trial.into()).or_default().push(name);
                    }
                }
                Some("Pod") if live_pod(item, now) => {
                    let job = label(item, "job-name").unwrap_or_default().to_string();
                    live_gangs.entry(trial.into()).or_default().insert(job);
                }
                _ => {}
            }
        }
        for (trial, jobs) in live_jobs.iter().filter(|(_, j)| j.len() > 1) {
            self.overlaps
                .push(format!("sample {}: {trial} has live Jobs {jobs:?}", self.samples));
        }
        for (trial, gangs) in live_gangs.iter().filter(|(_, g)| g.len() > 1) {
            self.overlaps.push(format!(
                "sample {}: {trial} has live pods of {gangs:?}",
                self.samples
            ));
        }
    }
}
