//! Names and labels of the objects the operator creates, in one place: the reconciler, the
//! watches and the tests agree on them.

use std::collections::BTreeMap;

pub const GROUP: &str = "orchestra.dev";
pub const FINALIZER: &str = "orchestra.dev/cleanup";
pub const MANAGER: &str = "orchestra-operator";
pub const LABEL_EXPERIMENT: &str = "orchestra.dev/experiment";
pub const LABEL_TRIAL: &str = "orchestra.dev/trial";
pub const LABEL_ATTEMPT: &str = "orchestra.dev/attempt";
/// The label that puts a Job into a Kueue LocalQueue.
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Port of rank 0's rendezvous store (MASTER_PORT).
pub const RENDEZVOUS_PORT: i32 = 29500;
/// The worker's TCP collectives listen on MASTER_PORT + 1.
pub const COLLECTIVES_PORT: i32 = RENDEZVOUS_PORT + 1;
/// The ports of a gang's pods, named: the Service and the container declare the same.
pub const GANG_PORTS: [(&str, i32); 2] = [("rendezvous", RENDEZVOUS_PORT), ("collectives", COLLECTIVES_PORT)];
/// Where the trial spec is mounted in worker pods.
pub const SPEC_DIR: &str = "/etc/orchestra";

pub fn spec_config_map(trial: &str) -> String {
    format!("{trial}-spec")
}

/// The headless Service of a trial's gang (the pods' DNS subdomain).
pub fn service(trial: &str) -> String {
    trial.to_string()
}

pub fn job(trial: &str, attempt: u32) -> String {
    format!("{trial}-a{attempt}")
}

pub fn leaderboard_config_map(experiment: &str) -> String {
    format!("{experiment}-leaderboard")
}

/// Rank 0's address: pod `<job>-0` under the trial's headless Service.
pub fn master_addr(trial: &str, attempt: u32) -> String {
    format!("{}-0.{}", job(trial, attempt), service(trial))
}

pub fn experiment_selector(experiment: &str) -> String {
    format!("{LABEL_EXPERIMENT}={experiment}")
}

pub fn labels(experiment: &str, trial: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_EXPERIMENT.to_string(), experiment.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string()),
        ("app.kubernetes.io/part-of".to_string(), "orchestra".to_string()),
    ]);
    if let Some(t) = trial {
        l.insert(LABEL_TRIAL.to_string(), t.to_string());
    }
    l
}
