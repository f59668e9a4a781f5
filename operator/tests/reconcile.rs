//! Reconcile scenarios against a mock API server (`tower-test`), checking the exact requests:
//! a new Experiment, a trial finishing, a failed worker, the failure budget spent, deletion,
//! an invalid Experiment, and the finalizer on a fresh Experiment; and a chaos scenario: a whole
//! Experiment under injected conflicts, errors and slow answers, with an operator restart.
//!
//! These pin the exact requests and the faults a real API server cannot be made to produce on
//! demand; the scenarios that have a counterpart on the real control plane
//! (`cluster_e2e.rs`) name it.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kube::runtime::controller::Action;
use orchestra_api::Experiment;
use orchestra_operator::k8s::context::{Context, Error};
use orchestra_operator::k8s::reconcile::reconcile;
use serde_json::{json, Value};
use support::fake_api::{FakeApi, Recorded};
use support::fake_operator;

const NOW: u64 = 1_800_000_000;
const NS: &str = "lab";
const EXP: &str = "/apis/orchestra.dev/v1alpha1/namespaces/lab/experiments/sweep";
const TRIALS: &str = "/apis/orchestra.dev/v1alpha1/namespaces/lab/trials";
const JOBS: &str = "/apis/batch/v1/namespaces/lab/jobs";
const PODS: &str = "/api/v1/namespaces/lab/pods";
const CMS: &str = "/api/v1/namespaces/lab/configmaps";
const SVCS: &str = "/api/v1/namespaces/lab/services";

fn experiment_json(store: &str, extra: Value) -> Value {
    let mut spec = json!({
        "dataset": "synthetic://lesion?n=64&size=64",
        "model": {"inputSize": 64},
        "variants": ["D2", "D4"],
        "steps": 20,
        "parallelism": 2,
        "maxAttempts": 2,
        "maxFailedTrials": 0,
        "store": store,
        "resources": {"cpu": "2", "memory": "4Gi"},
        "nodeSelector": {"pool": "cpu"},
        "storeSecret": "s3-credentials",
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    json!({
        "apiVersion": "orchestra.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "sweep", "namespace": NS, "uid": "exp-uid", "generation": 1,
                     "finalizers": ["orchestra.dev/cleanup"]},
        "spec": spec,
    })
}

struct Scenario {
    fake: FakeApi,
    store_dir: tempfile::TempDir,
    restart_backoff: u64,
    /// The most trials one look records or starts.
    per_look: usize,
    /// The operator's clock, seconds since the Unix epoch.
    now: Arc<AtomicU64>,
}

impl Scenario {
    fn new() -> Scenario {
        Scenario {
            fake: FakeApi::default(),
            store_dir: tempfile::tempdir().unwrap(),
            restart_backoff: 10,
            per_look: usize::MAX,
            now: Arc::new(AtomicU64::new(NOW)),
        }
    }

    fn store(&self) -> String {
        format!("file://{}", self.store_dir.path().display())
    }

    fn experiment(&self, extra: Value) -> Experiment {
        let v = experiment_json(&self.store(), extra);
        self.fake.put(EXP, v.clone());
        serde_json::from_value(v).unwrap()
    }

    async fn reconcile(&self, exp: Experiment) -> Result<Action, Error> {
        let operator = self.start_operator();
        let out = operator.reconcile(exp).await;
        operator.stop();
        out
    }

    /// An operator process: its client, event recorder and clock, on this scenario's API server.
    fn start_operator(&self) -> Operator {
        let (ctx, server) = fake_operator::start(
            &self.fake,
            NS,
            self.now.clone(),
            self.restart_backoff,
            1,
            self.per_look,
        );
        Operator { ctx, server }
    }

    /// A trial as the operator created it, Running its first attempt, with its Job.
    fn running_trial(&self, name: &str, variant: &str, job_condition: Option<(&str, &str)>) {
        let exp: Experiment = serde_json::from_value(experiment_json(&self.store(), json!({}))).unwrap();
        let spec = exp
            .spec
            .trial_spec(name, "sweep", variant.parse().unwrap(), &Default::default());
        let labels = json!({"orchestra.dev/experiment": "sweep", "orchestra.dev/trial": name,
                            "app.kubernetes.io/managed-by": "orchestra-operator"});
        self.fake.put(
            &format!("{TRIALS}/{name}"),
            json!({"apiVersion": "orchestra.dev/v1alpha1", "kind": "Trial",
                   "metadata": {"name": name, "namespace": NS, "uid": format!("{name}-uid"), "labels": labels},
                   "spec": spec,
                   "status": {"phase": "Running", "attempts": 1, "startedAt": "2027-01-15T08:00:00Z"}}),
        );
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": format!("{name}-a1"), "namespace": NS, "labels": labels,
                                "creationTimestamp": "2027-01-15T08:00:00Z"},
                   "spec": {"template": {"spec": {"containers": []}}}, "status": {}});
        if let Some((kind, reason)) = job_condition {
            job["status"]["conditions"] = json!([{"type": kind, "status": "True", "reason": reason,
                                                  "message": "from the scenario"}]);
        }
        self.fake.put(&format!("{JOBS}/{name}-a1"), job);
    }

    fn write_result(&self, trial: &str, dice: f64, bpp: f64) {
        let (uri, trial) = (self.store(), trial.to_string());
        // The blocking store runs its own runtime: off the test's async one.
        std::thread::spawn(move || write_result(&uri, &trial, dice, bpp))
            .join()
            .unwrap();
    }
}

struct Operator {
    ctx: Arc<Context>,
    server: tokio::task::JoinHandle<()>,
}

impl Operator {
    async fn reconcile(&self, exp: Experiment) -> Result<Action, Error> {
        reconcile(Arc::new(exp), self.ctx.clone()).await
    }

    fn stop(self) {
        self.server.abort();
    }
}

fn write_result(uri: &str, trial: &str, dice: f64, bpp: f64) {
    {
        let store = orchestra_store::Store::open(uri).unwrap();
        let result = json!({"experiment": "sweep", "trial": trial, "variant": "D4", "steps": 20,
            "scores": {"dice": dice, "iou": 0.8, "dicePerClass": [dice], "iouPerClass": [0.8], "images": 8},
            "rate": {"codeBits": 48, "bitsPerPixelRaw": 0.0117, "bppEstimate": bpp * 0.8, "bpp": bpp,
                     "bppNoHeader": bpp * 0.7, "meanStreamBytes": 4.0, "roundTripFailures": 0},
            "sourceBitsPerPixel": 24.0,
            "params": {"compressor": 1, "reconstructor": 1, "segmentor": 1, "critic": 1, "bitModel": 1},
            "timings": {"trainSeconds": 1.0, "trainImagesPerSecond": 10.0, "evalSeconds": 0.1},
            "hyper": {}});
        store
            .put(
                &format!("sweep/{trial}/result.json"),
                serde_json::to_vec(&result).unwrap(),
            )
            .unwrap();
        store
            .put(&format!("sweep/{trial}/params.json"), b"{}".to_vec())
            .unwrap();
    }
}

/// The worker container's arguments of a Job.
fn args_of(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The condition of `kind` in an Experiment status.
fn condition(status: &Value, kind: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
        .clone()
}

fn env_of(job: &Value) -> std::collections::BTreeMap<String, Value> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// On the real control plane: `cluster_e2e.rs`, `a_sweep_trains_through_real_jobs_and_deletion_leaves_nothing_behind`.
#[tokio::test]
async fn a_new_experiment_creates_trials_and_their_gangs() {
    let s = Scenario::new();
    let exp = s.experiment(json!({}));
    let action = s.reconcile(exp).await.unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(30)));
    let expected = [
        format!("GET {TRIALS}"),
        format!("GET {JOBS}"),
        format!("GET {PODS}"),
        format!("POST {TRIALS}"),
        format!("PATCH {CMS}/sweep-d2-000-spec"),
        format!("PATCH {JOBS}/sweep-d2-000-a1"),
        format!("PATCH {TRIALS}/sweep-d2-000/status"),
        format!("POST {TRIALS}"),
        format!("PATCH {CMS}/sweep-d4-000-spec"),
        format!("PATCH {JOBS}/sweep-d4-000-a1"),
        format!("PATCH {TRIALS}/sweep-d4-000/status"),
        format!("PATCH {CMS}/sweep-leaderboard"),
        format!("PATCH {EXP}/status"),
    ];
    assert_eq!(s.fake.lines(), expected);
    // Every list is filtered by the experiment's label; every apply is forced by our manager.
    for r in s.fake.log() {
        if r.method == "GET" {
            assert!(
                r.target
                    .contains("labelSelector=orchestra.dev%2Fexperiment%3Dsweep"),
                "{}",
                r.target
            );
        }
        if r.method == "PATCH" && !r.target.contains("/events/") {
            assert!(
                r.target.contains("fieldManager=orchestra-operator") && r.target.contains("force=true"),
                "{}",
                r.target
            );
        }
    }

    let trial = s.fake.body_of(&format!("POST {TRIALS}"));
    assert_eq!(trial["metadata"]["ownerReferences"][0]["kind"], "Experiment");
    assert_eq!(trial["metadata"]["ownerReferences"][0]["uid"], "exp-uid");
    assert_eq!(trial["spec"]["trial"], "sweep-d2-000");

    let job = s.fake.body_of(&format!("PATCH {JOBS}/sweep-d4-000-a1"));
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "Trial");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["subdomain"], "sweep-d4-000");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["nodeSelector"]["pool"], "cpu");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "orchestra-worker:test");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["resources"]["limits"]["cpu"], "2");
    assert!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "s3-credentials");
    let args = args_of(&job);
    assert!(
        args.windows(2)
            .any(|w| w == ["--spec", "/etc/orchestra/trial.yaml"]),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "--resume"));
    let env = env_of(&job);
    assert_eq!(env["MASTER_ADDR"]["value"], "sweep-d4-000-a1-0.sweep-d4-000");
    assert_eq!(env["MASTER_PORT"]["value"], "29500");
    assert_eq!(env["WORLD_SIZE"]["value"], "1");
    assert_eq!(
        env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // A single worker needs no Service: it is rank 0 and meets itself on 127.0.0.1.
    assert!(s.fake.log().iter().all(|r| !r.target.starts_with(SVCS)));
    let cm = s.fake.body_of(&format!("PATCH {CMS}/sweep-d4-000-spec"));
    assert!(cm["data"]["trial.yaml"].as_str().unwrap().contains("variant: D4"));

    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["progress"], "0/2");
    assert_eq!(status["trialsRunning"], 2);
    let created = condition(&status, "Created");
    assert_eq!(created["status"], "True");
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert_eq!(events, ["TrialStarted", "TrialStarted"]);
    // The submitted Experiment and each trial's parameters are in the store for the leaderboard.
    assert!(s.store_dir.path().join("sweep/experiment.yaml").exists());
    assert!(s.store_dir.path().join("sweep/sweep-d4-000/params.json").exists());
}

/// On the real control plane: `cluster_e2e.rs`, `a_sweep_trains_through_real_jobs_and_deletion_leaves_nothing_behind`.
#[tokio::test]
async fn a_finished_trial_is_recorded_and_ranked() {
    let s = Scenario::new();
    let exp = s.experiment(json!({}));
    s.running_trial("sweep-d2-000", "D2", None);
    s.running_trial("sweep-d4-000", "D4", Some(("Complete", "CompletionsReached")));
    s.write_result("sweep-d4-000", 0.91, 0.0042);
    s.reconcile(exp).await.unwrap();
    assert_eq!(
        s.fake.lines(),
        [
            format!("GET {TRIALS}"),
            format!("GET {JOBS}"),
            format!("GET {PODS}"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("PATCH {CMS}/sweep-leaderboard"),
            format!("PATCH {EXP}/status"),
        ]
    );
    let t = s.fake.body_of(&format!("PATCH {TRIALS}/sweep-d4-000/status"))["status"].clone();
    assert_eq!(t["phase"], "Succeeded");
    assert_eq!(t["dice"], 0.91);
    assert_eq!(t["bpp"], 0.0042);
    assert_eq!(t["result"]["trial"], "sweep-d4-000");
    let cm = s.fake.body_of(&format!("PATCH {CMS}/sweep-leaderboard"));
    assert!(cm["data"]["leaderboard.md"]
        .as_str()
        .unwrap()
        .contains("sweep-d4-000"));
    let lb: Value = serde_json::from_str(cm["data"]["leaderboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(lb["entries"][0]["trial"], "sweep-d4-000");
    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(status["best"]["trial"], "sweep-d4-000");
    assert_eq!(status["progress"], "1/2");
    assert_eq!(status["top"][0]["dice"], 0.91);
    // The plot is drawn aside (the look does not wait for it): it arrives.
    let plot = s.store_dir.path().join("sweep/leaderboard.png");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !plot.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(plot.exists(), "the plot is in the store");
    // One event per finished trial, on the Experiment.
    let events = s.fake.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "TrialSucceeded");
}

/// A look starts at most `per_look` trials and looks again at once for the rest; it records at
/// most `per_look` finished gangs, and plans nothing until every transition it saw is recorded.
#[tokio::test]
async fn a_look_bounds_its_writes_and_comes_back_at_once_for_the_rest() {
    let mut s = Scenario::new();
    s.per_look = 1;
    let exp = s.experiment(json!({}));
    let posts = |s: &Scenario| s.fake.lines().iter().filter(|l| l.starts_with("POST ")).count();
    let first = s.reconcile(exp.clone()).await.unwrap();
    assert_eq!(first, Action::requeue(std::time::Duration::ZERO), "more to start");
    assert_eq!(posts(&s), 1, "one trial created: {:?}", s.fake.lines());
    let second = s.reconcile(exp).await.unwrap();
    assert_eq!(second, Action::requeue(std::time::Duration::from_secs(30)));
    assert_eq!(posts(&s), 2, "the other trial in the next look");

    let s = {
        let mut s = Scenario::new();
        s.per_look = 1;
        s
    };
    let exp = s.experiment(json!({}));
    for (trial, variant) in [("sweep-d2-000", "D2"), ("sweep-d4-000", "D4")] {
        s.running_trial(trial, variant, Some(("Complete", "CompletionsReached")));
        s.write_result(trial, 0.9, 0.004);
    }
    let first = s.reconcile(exp.clone()).await.unwrap();
    assert_eq!(
        first,
        Action::requeue(std::time::Duration::ZERO),
        "more to record"
    );
    let lines = s.fake.lines();
    let recorded = |lines: &[String]| lines.iter().filter(|l| l.ends_with("-000/status")).count();
    assert_eq!(recorded(&lines), 1, "{lines:?}");
    assert!(
        !lines.contains(&format!("PATCH {EXP}/status")),
        "no plan and no status on half the news: {lines:?}"
    );
}

/// At scale an Experiment is looked at every time one of its pods changes: a look that changes
/// nothing writes nothing (the leaderboard ConfigMap and the status are written when they change).
#[tokio::test]
async fn a_look_that_changes_nothing_writes_nothing() {
    let s = Scenario::new();
    let exp = s.experiment(json!({}));
    let operator = s.start_operator();
    operator.reconcile(exp).await.unwrap();
    let first = s.fake.lines().len();
    assert!(s.fake.lines().contains(&format!("PATCH {EXP}/status")));
    // The Experiment as the API server now holds it (its status written), looked at again.
    let seen: Experiment = serde_json::from_value(s.fake.get(EXP).unwrap()).unwrap();
    assert!(seen.status.is_some());
    operator.reconcile(seen).await.unwrap();
    operator.stop();
    let second: Vec<String> = s.fake.lines().split_off(first);
    assert_eq!(
        second,
        [
            format!("GET {TRIALS}"),
            format!("GET {JOBS}"),
            format!("GET {PODS}"),
        ],
        "the trials run, nothing changed: only the three lists"
    );
}

/// The store layout's "finished" rule holds here too: a result of an earlier, shorter target
/// (20 steps) does not finish a trial whose Experiment now asks for 40.
#[tokio::test]
async fn a_result_short_of_the_step_target_does_not_finish_the_trial() {
    let s = Scenario::new();
    let exp = s.experiment(json!({"steps": 40}));
    s.running_trial("sweep-d4-000", "D4", Some(("Complete", "CompletionsReached")));
    s.write_result("sweep-d4-000", 0.91, 0.0042);
    s.reconcile(exp).await.unwrap();
    let t = s.fake.body_of(&format!("PATCH {TRIALS}/sweep-d4-000/status"))["status"].clone();
    assert_eq!(t["phase"], "AttemptFailed", "{t}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .contains("result is not in the store"),
        "{t}"
    );
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert!(!events.contains(&"TrialSucceeded".to_string()), "{events:?}");
}

#[tokio::test]
async fn a_failed_worker_restarts_the_whole_gang_from_its_checkpoint() {
    let mut s = Scenario::new();
    s.restart_backoff = 0;
    let exp = s.experiment(json!({}));
    s.running_trial("sweep-d2-000", "D2", None);
    s.running_trial("sweep-d4-000", "D4", Some(("Failed", "BackoffLimitExceeded")));
    s.reconcile(exp).await.unwrap();
    assert_eq!(
        s.fake.lines(),
        [
            format!("GET {TRIALS}"),
            format!("GET {JOBS}"),
            format!("GET {PODS}"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("DELETE {JOBS}/sweep-d4-000-a1"),
            format!("PATCH {CMS}/sweep-d4-000-spec"),
            format!("DELETE {JOBS}/sweep-d4-000-a1"),
            format!("PATCH {JOBS}/sweep-d4-000-a2"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("PATCH {CMS}/sweep-leaderboard"),
            format!("PATCH {EXP}/status"),
        ]
    );
    let deletes: Vec<_> = s
        .fake
        .log()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(
        deletes[0].body["propagationPolicy"], "Background",
        "the gang's pods go with the Job"
    );
    let job = s.fake.body_of(&format!("PATCH {JOBS}/sweep-d4-000-a2"));
    assert_eq!(
        env_of(&job)["MASTER_ADDR"]["value"],
        "sweep-d4-000-a2-0.sweep-d4-000"
    );
    assert!(args_of(&job).contains(&"--resume".to_string()));
    let last = s
        .fake
        .log()
        .into_iter()
        .rfind(|r| r.line() == format!("PATCH {TRIALS}/sweep-d4-000/status"))
        .unwrap();
    assert_eq!(last.body["status"]["phase"], "Running");
    assert_eq!(last.body["status"]["attempts"], 2);
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert_eq!(events, ["AttemptFailed", "TrialRestarted"]);
}

#[tokio::test]
async fn a_spent_failure_budget_fails_the_experiment_and_stops_the_gangs() {
    let s = Scenario::new();
    let exp = s.experiment(json!({"maxAttempts": 1}));
    s.running_trial("sweep-d2-000", "D2", None);
    s.running_trial("sweep-d4-000", "D4", Some(("Failed", "BackoffLimitExceeded")));
    let action = s.reconcile(exp).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        s.fake.lines(),
        [
            format!("GET {TRIALS}"),
            format!("GET {JOBS}"),
            format!("GET {PODS}"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("DELETE {JOBS}/sweep-d4-000-a1"),
            format!("DELETE {JOBS}/sweep-d4-000-a1"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("DELETE {JOBS}/sweep-d2-000-a1"),
            format!("PATCH {TRIALS}/sweep-d2-000/status"),
            format!("PATCH {CMS}/sweep-leaderboard"),
            format!("PATCH {EXP}/status"),
        ]
    );
    assert!(
        s.fake.get(&format!("{JOBS}/sweep-d2-000-a1")).is_none(),
        "the running gang is gone"
    );
    let stopped = s.fake.body_of(&format!("PATCH {TRIALS}/sweep-d2-000/status"));
    assert_eq!(stopped["status"]["phase"], "Stopped");
    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(status["phase"], "Failed");
    let failed = condition(&status, "Failed");
    assert_eq!(
        (failed["status"].as_str(), failed["reason"].as_str()),
        (Some("True"), Some("FailureBudgetSpent"))
    );
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert_eq!(events, ["AttemptFailed", "TrialFailed", "TrialStopped", "Failed"]);
}

/// On the real control plane: `cluster_e2e.rs`, `a_sweep_trains_through_real_jobs_and_deletion_leaves_nothing_behind`.
#[tokio::test]
async fn deletion_removes_the_gangs_and_if_asked_the_stored_results() {
    let s = Scenario::new();
    let mut v = experiment_json(&s.store(), json!({"cleanupStore": true}));
    v["metadata"]["deletionTimestamp"] = json!("2027-01-15T09:00:00Z");
    s.fake.put(EXP, v.clone());
    s.running_trial("sweep-d4-000", "D4", None);
    s.write_result("sweep-d2-000", 0.9, 0.01);
    let uri = s.store();
    std::thread::spawn(move || {
        let other = orchestra_store::Store::open(&uri).unwrap();
        other
            .put("another-experiment/x/result.json", b"{}".to_vec())
            .unwrap();
    })
    .join()
    .unwrap();
    s.reconcile(serde_json::from_value(v).unwrap()).await.unwrap();
    assert_eq!(
        s.fake.lines(),
        [
            format!("DELETE {JOBS}"),
            format!("DELETE {PODS}"),
            format!("PATCH {EXP}")
        ]
    );
    let log = s.fake.log();
    assert!(log[0]
        .target
        .contains("labelSelector=orchestra.dev%2Fexperiment%3Dsweep"));
    assert!(s.fake.get(&format!("{JOBS}/sweep-d4-000-a1")).is_none());
    let finalizers = s.fake.get(EXP).unwrap()["metadata"]["finalizers"].clone();
    assert_eq!(finalizers, json!([]), "the finalizer is removed last");
    assert!(!s.store_dir.path().join("sweep/sweep-d2-000/result.json").exists());
    assert!(s
        .store_dir
        .path()
        .join("another-experiment/x/result.json")
        .exists());
}

#[tokio::test]
async fn an_invalid_experiment_gets_a_condition_and_nothing_else() {
    let s = Scenario::new();
    let exp = s.experiment(json!({"steps": 0, "variants": []}));
    let action = s.reconcile(exp).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(s.fake.lines(), [format!("PATCH {EXP}/status")]);
    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(status["phase"], "Failed");
    let failed = condition(&status, "Failed");
    assert_eq!(failed["reason"], "InvalidSpec");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("spec.steps") && message.contains("spec.variants"),
        "{message}"
    );
    assert_eq!(s.fake.events()[0].0, "InvalidSpec");

    // What a cluster cannot run is rejected the same way.
    let s = Scenario::new();
    let exp = s.experiment(json!({"store": "memory://runs"}));
    s.reconcile(exp).await.unwrap();
    assert_eq!(s.fake.lines(), [format!("PATCH {EXP}/status")]);
    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("memory stores live in one process"),
        "{status}"
    );

    // Specs that used to crash-loop the operator or fail every trial: a 4-billion-point grid,
    // swept values no trial can take, credentials in the store URI. Each is marked invalid in
    // one status write, and the operator goes on with the next.
    let cases = [
        (
            json!({"search": {"lambdaRate": {"type": "uniform", "min": 0.1, "max": 1.0, "points": 4_000_000_000u64}}}),
            "above the limit",
        ),
        (
            json!({"search": {"disWarmupSteps": {"type": "intRange", "min": i64::MIN, "max": i64::MAX}}}),
            "above the limit",
        ),
        (
            json!({"search": {"batchSize": {"type": "list", "values": [0, -4, 1e12]}}}),
            "spec.search.batchSize",
        ),
        (
            json!({"algorithm": {"type": "random", "seed": 1, "samples": u32::MAX}, "search": {"lr": {"type": "uniform", "min": 0.001, "max": 0.01}}}),
            "spec.algorithm.samples",
        ),
        (
            json!({"store": "s3://AKIDKEY:SECRETVALUE@bucket/runs"}),
            "storeSecret",
        ),
    ];
    for (extra, words) in cases {
        let s = Scenario::new();
        let exp = s.experiment(extra.clone());
        let action = s.reconcile(exp).await.unwrap();
        assert_eq!(action, Action::await_change(), "{extra}");
        assert_eq!(s.fake.lines(), [format!("PATCH {EXP}/status")], "{extra}");
        let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
        assert_eq!(condition(&status, "Failed")["reason"], "InvalidSpec", "{extra}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(words), "{extra}: {message}");
        let everything = format!("{:?}", s.fake.log());
        assert!(
            !everything.contains("SECRETVALUE"),
            "a secret reached the API server"
        );
    }
}

#[tokio::test]
async fn cpu_gangs_use_tcp_collectives() {
    let s = Scenario::new();
    let exp = s.experiment(json!({"workersPerTrial": 2, "variants": ["D4"], "parallelism": 1}));
    s.reconcile(exp).await.unwrap();
    let job = s.fake.body_of(&format!("PATCH {JOBS}/sweep-d4-000-a1"));
    assert_eq!(job["spec"]["completions"], 2);
    let args = args_of(&job);
    assert!(args.windows(2).any(|w| w == ["--dist", "tcp"]), "{args:?}");
    let svc = s.fake.body_of(&format!("PATCH {SVCS}/sweep-d4-000"));
    assert_eq!(svc["spec"]["ports"][1]["port"], 29501);
}

#[tokio::test]
async fn a_fresh_experiment_first_gets_the_finalizer() {
    let s = Scenario::new();
    let mut v = experiment_json(&s.store(), json!({}));
    v["metadata"].as_object_mut().unwrap().remove("finalizers");
    s.fake.put(EXP, v.clone());
    s.reconcile(serde_json::from_value(v).unwrap()).await.unwrap();
    assert_eq!(s.fake.lines(), [format!("PATCH {EXP}")]);
    assert_eq!(
        s.fake.get(EXP).unwrap()["metadata"]["finalizers"],
        json!(["orchestra.dev/cleanup"])
    );
}

#[tokio::test]
async fn gpu_experiments_ask_for_gpus_and_use_nccl_gangs() {
    let s = Scenario::new();
    let exp = s.experiment(json!({
        "device": "cuda", "workersPerTrial": 4, "variants": ["D4"], "parallelism": 1,
        "resources": {"cpu": "8", "memory": "32Gi", "gpus": 1},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    }));
    s.reconcile(exp).await.unwrap();
    let job = s.fake.body_of(&format!("PATCH {JOBS}/sweep-d4-000-a1"));
    assert_eq!(
        (
            job["spec"]["completions"].as_i64(),
            job["spec"]["parallelism"].as_i64()
        ),
        (Some(4), Some(4))
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    let c = &pod["containers"][0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], "1");
    let args = args_of(&job);
    assert!(args.windows(2).any(|w| w == ["--dist", "nccl"]), "{args:?}");
    assert_eq!(env_of(&job)["WORLD_SIZE"]["value"], "4");
}

/// `trialsPerGpu: 2` with the cluster's shared GPU resource: every trial pod asks for one unit
/// of `nvidia.com/gpu.shared` (a device plugin that time-slices or MPS-shares each GPU as two
/// units packs two trials per GPU), never for a whole `nvidia.com/gpu`.
#[tokio::test]
async fn packed_trials_ask_for_a_shared_gpu_unit() {
    let s = Scenario::new();
    let exp = s.experiment(json!({
        "device": "cuda", "variants": ["D2", "D4"], "parallelism": 2,
        "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1, "trialsPerGpu": 2,
                      "gpuResource": "nvidia.com/gpu.shared"}
    }));
    s.reconcile(exp).await.unwrap();
    for trial in ["sweep-d2-000", "sweep-d4-000"] {
        let job = s.fake.body_of(&format!("PATCH {JOBS}/{trial}-a1"));
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        for side in ["limits", "requests"] {
            assert_eq!(
                c["resources"][side]["nvidia.com/gpu.shared"], "1",
                "{trial} {side}"
            );
            assert!(
                c["resources"][side].get("nvidia.com/gpu").is_none(),
                "{trial} {side}"
            );
        }
        assert_eq!(c["resources"]["requests"]["memory"], "8Gi");
    }
}

#[tokio::test]
async fn suspend_stops_the_gangs_and_resume_restarts_them_from_their_checkpoints() {
    let s = Scenario::new();
    let exp = s.experiment(json!({"suspend": true}));
    s.running_trial("sweep-d2-000", "D2", None);
    s.running_trial("sweep-d4-000", "D4", None);
    let action = s.reconcile(exp).await.unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "nothing to do until the spec changes"
    );
    for trial in ["sweep-d2-000", "sweep-d4-000"] {
        assert!(
            s.fake.get(&format!("{JOBS}/{trial}-a1")).is_none(),
            "{trial}'s gang runs on"
        );
        let status = s.fake.get(&format!("{TRIALS}/{trial}")).unwrap()["status"].clone();
        assert_eq!(
            (status["phase"].as_str(), status["attempts"].as_u64()),
            (Some("Pending"), Some(0)),
            "{trial}: the attempt is given back"
        );
    }
    assert!(
        !s.fake
            .lines()
            .iter()
            .any(|l| l.starts_with(&format!("PATCH {JOBS}"))),
        "no gang starts while suspended"
    );
    let status = s.fake.get(EXP).unwrap()["status"].clone();
    assert_eq!(status["phase"], "Suspended");
    assert_eq!(condition(&status, "Suspended")["status"], "True");
    assert_eq!(condition(&status, "Running")["status"], "False");
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert_eq!(events, ["TrialSuspended", "TrialSuspended", "Suspended"]);

    // spec.suspend: false again: the same trials start their first attempt again, resuming
    // from their checkpoints (the workers always run with --resume).
    let mut v = s.fake.get(EXP).unwrap();
    v["spec"]["suspend"] = json!(false);
    s.fake.put(EXP, v.clone());
    let before = s.fake.log().len();
    s.reconcile(serde_json::from_value(v).unwrap()).await.unwrap();
    for trial in ["sweep-d2-000", "sweep-d4-000"] {
        let job = s
            .fake
            .get(&format!("{JOBS}/{trial}-a1"))
            .expect("the gang is back");
        assert!(args_of(&job).contains(&"--resume".to_string()));
        let status = s.fake.get(&format!("{TRIALS}/{trial}")).unwrap()["status"].clone();
        assert_eq!(
            (status["phase"].as_str(), status["attempts"].as_u64()),
            (Some("Running"), Some(1))
        );
    }
    assert_eq!(s.fake.get(EXP).unwrap()["status"]["phase"], "Running");
    let resumed: Vec<String> = s.fake.log()[before..]
        .iter()
        .filter(|r| r.target.contains("/events") && r.method == "POST")
        .map(|r| r.body["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(resumed.contains(&"Resumed".to_string()), "{resumed:?}");
}

#[tokio::test]
async fn under_kueue_gangs_are_created_suspended_in_their_queue_and_never_resuspended() {
    let mut s = Scenario::new();
    s.restart_backoff = 0;
    let exp = s.experiment(json!({"queueName": "team-a", "variants": ["D4"]}));
    s.reconcile(exp.clone()).await.unwrap();
    let job_path = format!("{JOBS}/sweep-d4-000-a1");
    assert!(
        s.fake.lines().contains(&format!("POST {JOBS}")),
        "created, not applied: {:?}",
        s.fake.lines()
    );
    let job = s.fake.get(&job_path).unwrap();
    assert_eq!(job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"], "team-a");
    assert_eq!(job["spec"]["suspend"], true, "waits in its queue until admitted");

    // Kueue admits it; a start carried out again (a lost answer: the Trial still Pending)
    // must not suspend the admitted gang.
    let mut admitted = job.clone();
    admitted["spec"]["suspend"] = json!(false);
    s.fake.put(&job_path, admitted);
    let mut trial = s.fake.get(&format!("{TRIALS}/sweep-d4-000")).unwrap();
    trial["status"]["phase"] = json!("Pending");
    trial["status"]["attempts"] = json!(0);
    s.fake.put(&format!("{TRIALS}/sweep-d4-000"), trial);
    s.reconcile(exp.clone()).await.unwrap();
    assert_eq!(
        s.fake.get(&job_path).unwrap()["spec"]["suspend"],
        false,
        "the operator flipped Kueue's admission"
    );
    assert!(
        !s.fake.lines().iter().any(|l| l == &format!("PATCH {job_path}")),
        "{:?}",
        s.fake.lines()
    );

    // A whole-gang restart keeps the queue.
    let mut failed = s.fake.get(&job_path).unwrap();
    failed["status"]["conditions"] =
        json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]);
    s.fake.put(&job_path, failed);
    s.reconcile(exp).await.unwrap();
    let second = s.fake.get(&format!("{JOBS}/sweep-d4-000-a2")).expect("attempt 2");
    assert_eq!(
        second["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
        "team-a"
    );
    assert_eq!(second["spec"]["suspend"], true);
}

/// Where the chaos scenario's world is.
#[derive(Debug, PartialEq)]
enum Stage {
    /// Waiting for both trials' gangs.
    Starting,
    /// d2's first gang failed; waiting for its second.
    Restarting,
    /// Every gang finished with a result; waiting for the Experiment to succeed.
    Finishing,
    /// The Experiment was deleted; waiting for the gangs to go and the finalizer to be removed.
    Deleting,
}

const TRIAL_PHASES: [&str; 6] = [
    "Pending",
    "Running",
    "AttemptFailed",
    "Succeeded",
    "Failed",
    "Stopped",
];

/// The invariants after every reconcile: at most one live gang per trial and no more gangs than
/// attempts; every status written (and carried out) is a phase the planner knows, with attempts
/// within the budget, and finished trials or Experiments never come back.
fn check_chaos_invariants(fake: &FakeApi, max_attempts: usize, context: &str) {
    let jobs: Vec<Value> = {
        let st = fake.0.lock().unwrap();
        st.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{JOBS}/")))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut live: std::collections::BTreeMap<String, usize> = Default::default();
    for job in &jobs {
        let trial = job["metadata"]["labels"]["orchestra.dev/trial"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let ended = job["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" || c["type"] == "Failed")
        });
        if !ended {
            *live.entry(trial).or_default() += 1;
        }
    }
    for (trial, n) in &live {
        assert!(*n <= 1, "{context}: {n} live gangs for {trial}");
    }
    let done: Vec<Recorded> = fake
        .log()
        .into_iter()
        .filter(|r| (200..300).contains(&r.code))
        .collect();
    let mut gangs: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut last_phase: std::collections::BTreeMap<String, String> = Default::default();
    for r in &done {
        let line = r.line();
        if let Some(job) = line.strip_prefix(&format!("PATCH {JOBS}/")) {
            let trial = job.rsplit_once("-a").map_or(job, |(t, _)| t).to_string();
            gangs.entry(trial).or_default().insert(job.to_string());
        }
        let Some(phase) = r.body["status"]["phase"].as_str() else {
            continue;
        };
        let object = line.trim_end_matches("/status").to_string();
        if line.starts_with(&format!("PATCH {TRIALS}/")) {
            assert!(TRIAL_PHASES.contains(&phase), "{context}: trial phase {phase}");
            let attempts = r.body["status"]["attempts"].as_u64().unwrap_or(0) as usize;
            assert!(
                attempts <= max_attempts,
                "{context}: {attempts} attempts in {line}"
            );
        } else if line == format!("PATCH {EXP}/status") {
            assert!(
                ["Running", "Succeeded"].contains(&phase),
                "{context}: experiment {phase}"
            );
        }
        if let Some(before) = last_phase.get(&object) {
            let finished = ["Succeeded", "Failed"].contains(&before.as_str());
            assert!(
                !finished || before == phase,
                "{context}: {object} went from {before} to {phase}"
            );
        }
        last_phase.insert(object, phase.to_string());
    }
    for (trial, names) in &gangs {
        assert!(
            names.len() <= max_attempts,
            "{context}: gangs {names:?} for {trial}"
        );
    }
}

/// Marks a Job finished with `kind` (Complete or Failed), as the Job controller would.
fn finish_job(fake: &FakeApi, name: &str, kind: &str) {
    let path = format!("{JOBS}/{name}");
    if let Some(mut job) = fake.get(&path) {
        job["status"]["conditions"] = json!([{"type": kind, "status": "True", "reason": "Scenario"}]);
        fake.put(&path, job);
    }
}

fn job_names(fake: &FakeApi) -> Vec<String> {
    let st = fake.0.lock().unwrap();
    st.objects
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{JOBS}/")).map(String::from))
        .collect()
}

async fn chaos_run(seed: u64) {
    let mut s = Scenario::new();
    s.restart_backoff = 20;
    let max_attempts = 3;
    s.experiment(json!({"maxAttempts": max_attempts}));
    s.fake.inject_faults(seed, 300);
    let mut operator = Some(s.start_operator());
    let mut stage = Stage::Starting;
    for round in 1..=400 {
        let context = format!("seed {seed}, round {round}, {stage:?}");
        if round == 8 {
            // The operator restarts mid-way: a new client, recorder and everything in memory.
            operator.take().unwrap().stop();
            operator = Some(s.start_operator());
        }
        s.now.fetch_add(7, Ordering::SeqCst);
        let exp: Experiment = serde_json::from_value(s.fake.get(EXP).unwrap()).unwrap();
        // An error is requeued by the controller's error_policy: the next round is the retry.
        let _ = operator.as_ref().unwrap().reconcile(exp).await;
        check_chaos_invariants(&s.fake, max_attempts as usize, &context);
        let jobs = job_names(&s.fake);
        match stage {
            Stage::Starting
                if jobs.contains(&"sweep-d2-000-a1".into())
                    && jobs.iter().any(|j| j.starts_with("sweep-d4-000")) =>
            {
                finish_job(&s.fake, "sweep-d2-000-a1", "Failed");
                stage = Stage::Restarting;
            }
            Stage::Restarting
                if jobs
                    .iter()
                    .any(|j| j.starts_with("sweep-d2-000-a") && j != "sweep-d2-000-a1") =>
            {
                for job in &jobs {
                    let trial = job.rsplit_once("-a").unwrap().0.to_string();
                    s.write_result(&trial, 0.9, 0.01);
                    finish_job(&s.fake, job, "Complete");
                }
                stage = Stage::Finishing;
            }
            Stage::Finishing if s.fake.get(EXP).unwrap()["status"]["phase"] == "Succeeded" => {
                let mut v = s.fake.get(EXP).unwrap();
                v["metadata"]["deletionTimestamp"] = json!("2027-01-15T09:00:00Z");
                s.fake.put(EXP, v);
                stage = Stage::Deleting;
            }
            Stage::Deleting
                if jobs.is_empty() && s.fake.get(EXP).unwrap()["metadata"]["finalizers"] == json!([]) =>
            {
                let faults = s
                    .fake
                    .log()
                    .iter()
                    .filter(|r| r.code >= 400 && r.code != 404)
                    .count();
                eprintln!(
                    "seed {seed}: converged in {round} rounds, {} requests, {faults} failed",
                    s.fake.log().len()
                );
                operator.take().unwrap().stop();
                return;
            }
            _ => {}
        }
    }
    panic!("seed {seed}: no convergence in 400 rounds, stuck at {stage:?}");
}

#[tokio::test]
async fn chaos_conflicts_errors_slow_answers_and_a_restart_still_converge() {
    for seed in 1..=8 {
        chaos_run(seed).await;
    }
}

fn write_rung(uri: &str, trial: &str, step: u64, dice: f64, bpp: f64) {
    let store = orchestra_store::Store::open(uri).unwrap();
    let record = json!({"step": step,
        "scores": {"dice": dice, "iou": 0.8, "dicePerClass": [dice], "iouPerClass": [0.8], "images": 8},
        "rate": {"codeBits": 48, "bitsPerPixelRaw": 0.0117, "bppEstimate": bpp * 0.8, "bpp": bpp,
                 "bppNoHeader": bpp * 0.7, "meanStreamBytes": 4.0, "roundTripFailures": 0},
        "sourceBitsPerPixel": 24.0});
    let key = orchestra_store::layout::TrialKeys::new("sweep", trial).rung(step);
    store.put(&key, serde_json::to_vec(&record).unwrap()).unwrap();
    store
        .put(&format!("sweep/{trial}/params.json"), b"{}".to_vec())
        .unwrap();
}

/// Pareto ASHA on the cluster: two trials reach their first rung (10 of 20 steps); the one on
/// the front goes on from its checkpoint as a new gang (the old Job deleted first, never two
/// gangs for one trial, and not counted as an attempt), the dominated one waits; once the
/// promoted trial finishes, nothing else can arrive, and the waiting one is stopped early,
/// recorded in the store and listed on the leaderboard with the step it reached.
#[tokio::test]
async fn asha_promotes_the_front_from_its_checkpoint_and_stops_the_rest() {
    let s = Scenario::new();
    let algorithm = json!({"variants": ["D4"], "search": {"lambdaRate": {"type": "list", "values": [0.1, 0.2]}},
        "algorithm": {"type": "asha", "sampler": "grid", "seed": 1, "eta": 2, "minSteps": 10},
        "objective": {"mode": "pareto", "referenceBpp": 0.02}});
    let exp = s.experiment(algorithm.clone());
    for (trial, dice, bpp) in [("sweep-d4-000", 0.9, 0.004), ("sweep-d4-001", 0.7, 0.005)] {
        s.running_trial(trial, "D4", Some(("Complete", "CompletionsReached")));
        let path = format!("{TRIALS}/{trial}");
        let mut t = s.fake.get(&path).unwrap();
        t["status"]["targetStep"] = json!(10);
        s.fake.put(&path, t);
        let uri = s.store();
        let trial = trial.to_string();
        std::thread::spawn(move || write_rung(&uri, &trial, 10, dice, bpp))
            .join()
            .unwrap();
    }
    s.reconcile(exp.clone()).await.unwrap();
    assert_eq!(
        s.fake.lines(),
        [
            format!("GET {TRIALS}"),
            format!("GET {JOBS}"),
            format!("GET {PODS}"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("PATCH {TRIALS}/sweep-d4-001/status"),
            format!("PATCH {CMS}/sweep-d4-000-spec"),
            format!("DELETE {JOBS}/sweep-d4-000-a1"),
            format!("PATCH {JOBS}/sweep-d4-000-a2"),
            format!("PATCH {TRIALS}/sweep-d4-000/status"),
            format!("PATCH {CMS}/sweep-leaderboard"),
            format!("PATCH {EXP}/status"),
        ]
    );
    let paused = s.fake.body_of(&format!("PATCH {TRIALS}/sweep-d4-001/status"))["status"].clone();
    assert_eq!(paused["phase"], "Paused", "{paused}");
    assert_eq!(paused["rungs"], json!([{"step": 10, "bpp": 0.005, "dice": 0.7}]));
    let job = s.fake.body_of(&format!("PATCH {JOBS}/sweep-d4-000-a2"));
    let args = args_of(&job);
    assert!(args.contains(&"--resume".to_string()), "{args:?}");
    assert!(
        !args.contains(&"--until".to_string()),
        "the last rung is the full run: {args:?}"
    );
    let promoted = s
        .fake
        .log()
        .into_iter()
        .rfind(|r| r.line() == format!("PATCH {TRIALS}/sweep-d4-000/status"))
        .unwrap()
        .body["status"]
        .clone();
    assert_eq!(
        (
            &promoted["phase"],
            &promoted["attempts"],
            &promoted["promotions"],
            &promoted["targetStep"]
        ),
        (&json!("Running"), &json!(2), &json!(1), &json!(20)),
        "{promoted}"
    );
    assert_eq!(
        promoted["rungs"],
        json!([{"step": 10, "bpp": 0.004, "dice": 0.9}]),
        "the rung just reached is kept"
    );
    let events: Vec<String> = s.fake.events().into_iter().map(|(r, _)| r).collect();
    assert_eq!(events, ["TrialReachedRung", "TrialReachedRung", "TrialPromoted"]);
    let status = s.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(
        status["rungs"],
        json!([{"step": 10, "reached": 2, "waiting": 1}]),
        "{status}"
    );

    // The promoted gang finishes: the waiting trial can no longer be promoted and stops early.
    let s2 = Scenario {
        fake: FakeApi::default(),
        store_dir: s.store_dir,
        restart_backoff: 10,
        per_look: usize::MAX,
        now: s.now.clone(),
    };
    let exp = s2.experiment(algorithm);
    for (trial, status) in [("sweep-d4-000", promoted), ("sweep-d4-001", paused)] {
        s2.running_trial(trial, "D4", Some(("Complete", "CompletionsReached")));
        let path = format!("{TRIALS}/{trial}");
        let mut t = s2.fake.get(&path).unwrap();
        t["status"] = status;
        s2.fake.put(&path, t);
    }
    let mut job = s2.fake.get(&format!("{JOBS}/sweep-d4-000-a1")).unwrap();
    job["metadata"]["name"] = json!("sweep-d4-000-a2");
    s2.fake.put(&format!("{JOBS}/sweep-d4-000-a2"), job);
    s2.write_result("sweep-d4-000", 0.92, 0.0041);
    s2.reconcile(exp).await.unwrap();
    let stopped = s2.fake.body_of(&format!("PATCH {TRIALS}/sweep-d4-001/status"))["status"].clone();
    assert_eq!(stopped["phase"], "Stopped", "{stopped}");
    assert!(
        stopped["message"]
            .as_str()
            .unwrap()
            .contains("stopped early at step 10"),
        "{stopped}"
    );
    let status = s2.fake.body_of(&format!("PATCH {EXP}/status"))["status"].clone();
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(
        (&status["trialsSucceeded"], &status["trialsStopped"]),
        (&json!(1), &json!(1)),
        "{status}"
    );
    let events: Vec<String> = s2.fake.events().into_iter().map(|(r, _)| r).collect();
    assert!(
        events.contains(&"TrialSucceeded".into()) && events.contains(&"TrialStoppedEarly".into()),
        "{events:?}"
    );
    let board = s2.fake.body_of(&format!("PATCH {CMS}/sweep-leaderboard"));
    let md = board["data"]["leaderboard.md"].as_str().unwrap();
    assert!(
        md.contains("Stopped early by the search (1)") && md.contains("| sweep-d4-001 | D4 | 10 |"),
        "{md}"
    );
}
