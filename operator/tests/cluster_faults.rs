//! Faults on the real control plane (upstream kube-apiserver, etcd, kube-controller-manager and
//! kube-scheduler, with a node agent; see `cluster_e2e.rs`): a rank's pod deleted, the operator
//! SIGKILLed, two replicas under leader election with the leader killed, the API server and
//! then etcd restarted, and an Experiment suspended and resumed, each in the middle of training.
//!
//! A fault disturbs the whole cluster (a restarted API server fails every other test's
//! requests), so the tests here take turns. Beside each, an observer lists the gangs every half
//! second and notes any moment when a trial had two gangs alive; the API server's audit log
//! says which Jobs were made and which replica wrote.

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use orchestra_store::layout::TrialKeys;
use serde_json::Value;
use support::cluster::{self, free_address, http_get, wait_for_experiment, Cluster, Layout, Operator};
use support::gang_watch::GangWatch;
use support::local_gang::{metrics_lines, read_text, run_local_ranks};
use support::s3::S3;

static TURN: Mutex<()> = Mutex::new(());

/// The shared cluster, this test's turn on it held. Two nodes (one may die), which renew their
/// Leases every 2 s, are NotReady after 20 s without one, and whose pods are evicted 10 s later.
fn turn() -> (&'static Cluster, MutexGuard<'static, ()>) {
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let layout = Layout {
        nodes: 2,
        node_grace: "20s",
        eviction_s: 10,
        heartbeat_s: 2,
        kueue: false,
    };
    (cluster::shared_with(&layout), guard)
}

/// An Experiment long enough to be interrupted: `steps` steps of `workers`-rank trials,
/// checkpoints every 10, two attempts per trial, its store the bucket `name`.
fn experiment(name: &str, variants: &str, steps: u64, workers: u32, parallelism: u32) -> String {
    format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: {{ inputSize: 64, downsample: 8 }}
  variants: [{variants}]
  hyper: {{ batchSize: 4 }}
  steps: {steps}
  checkpointEvery: 10
  workersPerTrial: {workers}
  resources: {{ cpu: \"1\", memory: 1Gi }}
  parallelism: {parallelism}
  maxAttempts: 2
  store: s3://{name}/{name}
  storeSecret: orchestra-store
  objective: {{ bppBudget: 0.5 }}
"
    )
}

/// One test's stage: namespace `faults-<name>` with the store's bucket `<name>`, an operator
/// watching it, the observer on Experiment `<name>`, and that Experiment applied from `yaml`.
struct Scene {
    ns: String,
    s3: S3,
    operator: Operator,
    watch: GangWatch,
}

impl Scene {
    fn start(c: &'static Cluster, name: &str, yaml: &str) -> Scene {
        let ns = c.namespace(&format!("faults-{name}"));
        let s3 = S3::start(c, &ns, name);
        let operator = Operator::start(c, &ns, &s3.creds());
        let watch = GangWatch::watch(c, &ns, name);
        let applied = c.apply(&ns, yaml);
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        Scene {
            ns,
            s3,
            operator,
            watch,
        }
    }
}

/// The step of a trial's latest checkpoint in the store, if it has one.
fn latest_step(s3: &S3, uri: &str, experiment: &str, trial: &str) -> Option<u64> {
    let (_serial, store) = s3.store(uri);
    let pointer = store.get(&TrialKeys::new(experiment, trial).latest()).ok()??;
    TrialKeys::parse_checkpoint_dir(&String::from_utf8_lossy(&pointer))
}

/// Whether the trial's `result.json` is in the store (the store's guard is held only meanwhile).
fn has_result(s3: &S3, experiment: &str, trial: &str) -> bool {
    let (_serial, store) = s3.store(&format!("s3://{experiment}/{experiment}"));
    store
        .get(&TrialKeys::new(experiment, trial).result())
        .is_ok_and(|r| r.is_some())
}

fn trial_names(c: &Cluster, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .items(ns, "trials")
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Waits until every trial of the Experiment has a checkpoint at step 10 or later (and the
/// Experiment has all `count` of its trials); their names.
fn wait_for_checkpoints(c: &Cluster, s3: &S3, ns: &str, experiment: &str, count: usize) -> Vec<String> {
    let uri = format!("s3://{experiment}/{experiment}");
    c.wait_for(
        &format!("{count} trials of {experiment} with a checkpoint"),
        Duration::from_secs(300),
        || {
            let trials = trial_names(c, ns);
            let ready = trials.len() == count
                && trials
                    .iter()
                    .all(|t| latest_step(s3, &uri, experiment, t).is_some_and(|s| s >= 10));
            ready.then_some(trials)
        },
    )
}

/// The logs of the pods of Job `job` on the nodes, concatenated (a node agent keeps each pod's
/// folder, named `<ns>_<pod>_<uid>`, after the pod is gone).
fn gang_logs(c: &Cluster, ns: &str, job: &str) -> String {
    let mut text = String::new();
    let prefix = format!("{ns}_{job}-");
    let mut dirs: Vec<_> = std::fs::read_dir(c.dir.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|node| std::fs::read_dir(node.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    for d in dirs {
        for log in std::fs::read_dir(d.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            text.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
        }
    }
    text
}

/// The Jobs the audit log shows made (created, or applied into being) in `ns`, in order.
fn jobs_made(c: &Cluster, ns: &str) -> Vec<String> {
    c.audited_writes(ns)
        .iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "jobs"
                && e["objectRef"]["subresource"].is_null()
                && e["responseStatus"]["code"] == 201
        })
        .map(|e| e["objectRef"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn status_of(c: &Cluster, ns: &str, trial: &str) -> Value {
    c.get_json(ns, &format!("trial/{trial}"))["status"].clone()
}

/// Every trial succeeded after `attempts` gangs, its metrics one line per step (and one per
/// evaluation), none repeated.
fn assert_each_trained_once(c: &Cluster, s3: &S3, ns: &str, experiment: &str, steps: u64, attempts: u64) {
    let (_serial, store) = s3.store(&format!("s3://{experiment}/{experiment}"));
    for trial in trial_names(c, ns) {
        let status = status_of(c, ns, &trial);
        assert_eq!(status["phase"], "Succeeded", "{trial}: {status}");
        assert_eq!(status["attempts"], attempts, "{trial}: {status}");
        let keys = TrialKeys::new(experiment, &trial);
        let lines = metrics_lines(&read_text(&store, &keys.metrics()));
        let trained: Vec<u64> = lines
            .iter()
            .filter(|l| l.get("loss_seg").is_some())
            .map(|l| l["step"].as_u64().unwrap())
            .collect();
        assert_eq!(
            trained,
            (1..=steps).collect::<Vec<_>>(),
            "{trial}: one metrics line per step, in order"
        );
        assert!(store.get(&keys.result()).unwrap().is_some(), "{trial}: no result");
    }
}

/// Every trial of the Experiment trained once by one gang: no moment with two gangs of a trial,
/// one Job made per trial (`-a1`), each trial finished on its first attempt.
fn assert_one_gang_each(c: &Cluster, s3: &S3, ns: &str, experiment: &str, watch: GangWatch, why: &str) {
    let seen = watch.finish();
    assert!(seen.overlaps.is_empty(), "{:?}", seen.overlaps);
    assert_each_trained_once(c, s3, ns, experiment, 60, 1);
    let mut made = jobs_made(c, ns);
    made.sort();
    let expected: Vec<String> = trial_names(c, ns).iter().map(|t| format!("{t}-a1")).collect();
    assert_eq!(made, expected, "{why}");
}

/// Real-cluster counterpart of `reconcile.rs`'s
/// `a_failed_worker_restarts_the_whole_gang_from_its_checkpoint`: rank 1's
/// pod is deleted mid-training; the Job fails (backoffLimit 0), the operator restarts the whole
/// gang as attempt 2 once the first gang's pods are gone, the new gang resumes from the latest
/// checkpoint, and the trial's metrics equal, line for line, those of the same trial run
/// without interruption as two local ranks.
#[test]
fn a_deleted_rank_restarts_the_whole_gang_from_its_checkpoint() {
    let (c, _turn) = turn();
    if c.pod_gateway.is_none() {
        eprintln!(
            "SKIPPED: the cluster has no pod network (it needs root and iproute2), so a gang of \
             two ranks cannot rendezvous"
        );
        return;
    }
    let Scene {
        ns,
        s3,
        operator,
        watch,
    } = Scene::start(c, "rank", &experiment("rank", "D4", 120, 2, 1));
    let trial = wait_for_checkpoints(c, &s3, &ns, "rank", 1).remove(0);
    let at = latest_step(&s3, "s3://rank/rank", "rank", &trial).unwrap();
    let rank1 = c.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "pods",
        "-l",
        &format!("job-name={trial}-a1,batch.kubernetes.io/job-completion-index=1"),
        "-o",
        "name",
    ]);
    let rank1 = rank1.trim();
    assert!(!rank1.is_empty(), "rank 1's pod is not there");
    c.kubectl_ok(&["-n", &ns, "delete", rank1, "--wait=false"]);
    eprintln!("deleted {rank1} with the latest checkpoint at step {at}");

    let status = wait_for_experiment(c, &ns, "rank", &operator, Duration::from_secs(600));
    let seen = watch.finish();
    assert_eq!(status["trialsSucceeded"], 1, "{status}");
    assert!(
        seen.overlaps.is_empty(),
        "two gangs of a trial alive at once: {:?}",
        seen.overlaps
    );
    assert_each_trained_once(c, &s3, &ns, "rank", 120, 2);
    let finished = status_of(c, &ns, &trial);
    assert!(
        finished["message"]
            .as_str()
            .is_some_and(|m| m.contains("finished 120 steps")),
        "{finished}"
    );
    assert_eq!(
        jobs_made(c, &ns),
        [format!("{trial}-a1"), format!("{trial}-a2")],
        "one Job per gang"
    );
    let second = gang_logs(c, &ns, &format!("{trial}-a2"));
    assert!(
        second.contains("resumed from checkpoint"),
        "the second gang did not resume: {second}"
    );

    // The same trial, never interrupted, as two local ranks: the same metrics, line for line.
    let spec_yaml = c.get_json(&ns, &format!("configmap/{trial}-spec"))["data"]["trial.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let spec: orchestra_api::TrialSpec = serde_yaml::from_str(&spec_yaml).unwrap();
    let local = tempfile::tempdir().unwrap();
    let local_store = run_local_ranks(&spec, 2, local.path());
    let keys = TrialKeys::new("rank", &trial);
    let restarted = {
        let (_serial, store) = s3.store("s3://rank/rank");
        read_text(&store, &keys.metrics())
    };
    let uninterrupted = read_text(&local_store, &keys.metrics());
    assert_eq!(
        metrics_lines(&restarted),
        metrics_lines(&uninterrupted),
        "the restarted gang's metrics differ from an uninterrupted run's"
    );
    eprintln!(
        "rank 1 deleted after step {at}: gang restarted once, {} metrics lines equal to an uninterrupted run's ({} samples, no overlap)",
        metrics_lines(&restarted).len(),
        seen.samples
    );
    drop(operator);
}

/// Real-cluster counterpart of `reconcile.rs`'s idempotence scenarios: the operator is SIGKILLed
/// while gangs train; a new one takes over from what the cluster and the store hold. No trial
/// gets a second Job, none is restarted, and every one finishes once.
#[test]
fn a_killed_operator_is_replaced_and_no_gang_is_made_twice() {
    let (c, _turn) = turn();
    let Scene {
        ns,
        s3,
        operator: mut first,
        watch,
    } = Scene::start(c, "kill", &experiment("kill", "D1, D2, D4", 60, 1, 2));
    let running = wait_for_checkpoints(c, &s3, &ns, "kill", 2);
    first.kill();
    eprintln!("operator SIGKILLed while {running:?} train");
    std::thread::sleep(Duration::from_secs(2));
    let second = Operator::start(c, &ns, &s3.creds());
    let status = wait_for_experiment(c, &ns, "kill", &second, Duration::from_secs(600));
    assert_eq!(status["trialsSucceeded"], 3, "{status}");
    assert_one_gang_each(
        c,
        &s3,
        &ns,
        "kill",
        watch,
        "one Job per trial, whichever operator made it",
    );
}

/// Real-cluster counterpart of `leader.rs`: two replicas with `--leader-election` on a Lease in
/// the API server. The follower writes nothing while the leader lives (the audit log names each
/// request's replica by its User-Agent); SIGKILL the leader and the follower takes the Lease once
/// it expires and carries the Experiment to its end.
#[test]
fn the_follower_writes_nothing_until_the_leader_dies_then_finishes_the_experiment() {
    let (c, _turn) = turn();
    let ns = c.namespace("faults-leader");
    let s3 = S3::start(c, &ns, "leader");
    let dashboards = [free_address(), free_address()];
    let replica = |identity: &str, dashboard: &str| {
        Operator::start_named(
            c,
            &ns,
            &s3.creds(),
            &format!("operator-{ns}-{identity}"),
            &[
                "--leader-election",
                "--lease-namespace",
                &ns,
                "--identity",
                identity,
                "--dashboard-addr",
                dashboard,
            ],
        )
    };
    let holder = || {
        c.kubectl(&[
            "-n",
            &ns,
            "get",
            "lease",
            "orchestra-operator-leader",
            "-o",
            "json",
        ])
        .status
        .success()
        .then(|| c.get_json(&ns, "lease/orchestra-operator-leader")["spec"]["holderIdentity"].clone())
    };
    let mut a = replica("replica-a", &dashboards[0]);
    c.wait_for("replica-a to lead", Duration::from_secs(60), || {
        (holder()? == "replica-a").then_some(())
    });
    let mut b = replica("replica-b", &dashboards[1]);
    assert!(c
        .apply(&ns, &experiment("leader", "D1, D4", 60, 1, 1))
        .status
        .success());
    wait_for_checkpoints(c, &s3, &ns, "leader", 1);
    assert!(b.running(), "the follower exited: see {}", b.log.display());
    // Both replicas serve the dashboard (a Service sends readers to either): the follower over
    // watches of its own, which see the leader's work.
    let page = format!("/ns/{ns}/experiments/leader/");
    for d in &dashboards {
        c.wait_for(
            "each replica's dashboard to show the Experiment running",
            Duration::from_secs(60),
            || {
                let p = http_get(d, &page).ok()?;
                (p.contains("Running</span></h1>") && p.contains("trials/leader-d1-000/")).then_some(())
            },
        );
    }
    let written_by = |identity: &str| -> Vec<Value> {
        c.audited_writes(&ns)
            .into_iter()
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|ua| ua.ends_with(&format!("({identity})")))
            })
            .collect()
    };
    assert!(
        !written_by("replica-a").is_empty(),
        "the leader's writes are not in the audit log under its User-Agent"
    );
    assert_eq!(written_by("replica-b"), Vec::<Value>::new(), "the follower wrote");

    a.kill();
    let killed = Instant::now();
    c.wait_for("replica-b to take the lease", Duration::from_secs(60), || {
        (holder()? == "replica-b").then_some(())
    });
    let takeover = killed.elapsed();
    // The Lease lasts 15 s and is renewed every 5 s: the follower takes it within one renewal
    // period of its expiry (and some slack for a loaded machine).
    assert!(
        takeover < Duration::from_secs(15 + 5 + 15),
        "the follower took {takeover:?} to lead"
    );
    let status = wait_for_experiment(c, &ns, "leader", &b, Duration::from_secs(600));
    assert_eq!(status["trialsSucceeded"], 2, "{status}");
    // The new leader serves on the same socket, now over its controller's caches.
    c.wait_for(
        "the new leader's dashboard to show the end",
        Duration::from_secs(30),
        || {
            http_get(&dashboards[1], &page)
                .ok()?
                .contains("Succeeded</span></h1>")
                .then_some(())
        },
    );
    let after: Vec<String> = written_by("replica-b")
        .iter()
        .map(|e| format!("{} {}", e["verb"], e["objectRef"]["resource"]))
        .collect();
    assert!(
        after.iter().any(|w| w.contains("jobs")),
        "the new leader started no gang: {after:?}"
    );
    assert_each_trained_once(c, &s3, &ns, "leader", 60, 1);
    eprintln!(
        "leader killed; the follower led after {takeover:.1?} and wrote {} times",
        after.len()
    );
}

/// The API server, then etcd, restarted while gangs train: the operator's watches and the node
/// agent's come back, nothing is lost or made twice, and the Experiment finishes.
#[test]
fn the_api_server_and_etcd_restart_under_a_running_experiment() {
    let (c, _turn) = turn();
    let Scene {
        ns,
        s3,
        operator,
        watch,
    } = Scene::start(c, "restart", &experiment("restart", "D1, D2, D4", 60, 1, 2));
    let running = wait_for_checkpoints(c, &s3, &ns, "restart", 2);
    // The gangs finish while the API server is away (the hard case: the node agents' last
    // reports and the Jobs' completions wait for it, and the operator learns of them only as its
    // watches come back).
    c.fault("stop", "kube-apiserver");
    c.wait_for(
        "the running trials' results while the API server is away",
        Duration::from_secs(120),
        || {
            running
                .iter()
                .all(|t| has_result(&s3, "restart", t))
                .then_some(())
        },
    );
    c.fault("restart", "kube-apiserver");
    eprintln!("kube-apiserver back after {running:?} finished");
    // Work goes on between the two faults: the finished trials are seen as such, promptly (the
    // watches back off on their own errors, not on each other's).
    c.wait_for(
        "a trial to finish after the restart",
        Duration::from_secs(90),
        || {
            c.items(&ns, "trials")
                .iter()
                .any(|t| t["status"]["phase"] == "Succeeded")
                .then_some(())
        },
    );
    c.fault("restart", "etcd");
    eprintln!("etcd restarted");
    let status = wait_for_experiment(c, &ns, "restart", &operator, Duration::from_secs(600));
    assert_eq!(status["trialsSucceeded"], 3, "{status}");
    assert_one_gang_each(
        c,
        &s3,
        &ns,
        "restart",
        watch,
        "one Job per trial across both restarts",
    );
}

/// Real-cluster counterpart of `reconcile.rs`'s
/// `suspend_stops_the_gangs_and_resume_restarts_them_from_their_checkpoints`: `spec.suspend`
/// true deletes the gangs and gives their attempts back; false starts the same trials again,
/// each resuming from its checkpoint, never beside its suspended gang.
#[test]
fn suspend_and_resume_on_the_real_api_continue_from_the_checkpoints() {
    let (c, _turn) = turn();
    let Scene {
        ns,
        s3,
        operator,
        watch,
    } = Scene::start(c, "suspend", &experiment("suspend", "D1, D4", 60, 1, 2));
    let trials = wait_for_checkpoints(c, &s3, &ns, "suspend", 2);
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "experiment",
        "suspend",
        "--type",
        "merge",
        "-p",
        "{\"spec\":{\"suspend\":true}}",
    ]);
    c.wait_for(
        "the Experiment to be suspended with no gang left",
        Duration::from_secs(120),
        || {
            let exp = c.get_json(&ns, "experiment/suspend");
            let jobs = c.items(&ns, "jobs");
            let live_pods = c
                .items(&ns, "pods")
                .into_iter()
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
                .count();
            (exp["status"]["phase"] == "Suspended" && jobs.is_empty() && live_pods == 0).then_some(())
        },
    );
    let uri = "s3://suspend/suspend";
    let mut at = Vec::new();
    for t in &trials {
        let status = status_of(c, &ns, t);
        assert_eq!(
            (status["phase"].as_str(), status["attempts"].as_u64()),
            (Some("Pending"), Some(0)),
            "{t}: the attempt is given back: {status}"
        );
        at.push(latest_step(&s3, uri, "suspend", t).unwrap());
    }
    c.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "experiment",
        "suspend",
        "--type",
        "merge",
        "-p",
        "{\"spec\":{\"suspend\":false}}",
    ]);
    let status = wait_for_experiment(c, &ns, "suspend", &operator, Duration::from_secs(600));
    let seen = watch.finish();
    assert_eq!(status["trialsSucceeded"], 2, "{status}");
    assert!(seen.overlaps.is_empty(), "{:?}", seen.overlaps);
    assert_each_trained_once(c, &s3, &ns, "suspend", 60, 1);
    let made = jobs_made(c, &ns);
    for (t, step) in trials.iter().zip(&at) {
        let job = format!("{t}-a1");
        assert_eq!(
            made.iter().filter(|j| **j == job).count(),
            2,
            "{job} made once before the suspension and once after: {made:?}"
        );
        let logs = gang_logs(c, &ns, &job);
        assert!(
            logs.contains("resumed from checkpoint"),
            "{t} did not resume from its checkpoint at step {step}: {logs}"
        );
    }
    eprintln!("suspended at checkpoints {at:?}; both trials resumed from them and finished");
}

/// The node lifecycle controller, for real: the node running a gang dies (its agent and the
/// pod's processes SIGKILLed, so no heartbeat comes); kube-controller-manager marks it NotReady
/// and evicts its pods; the Job fails, and once the lost pod is past its deletion deadline the
/// operator restarts the gang, which kube-scheduler places on the other node, resuming from the
/// checkpoint.
#[test]
fn a_dead_nodes_gang_is_evicted_and_restarted_on_the_other_node() {
    let (c, _turn) = turn();
    let Scene {
        ns,
        s3,
        operator,
        watch,
    } = Scene::start(c, "node", &experiment("node", "D4", 60, 1, 1));
    let trial = wait_for_checkpoints(c, &s3, &ns, "node", 1).remove(0);
    let pods = c.items(&ns, "pods");
    let dead = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == format!("{trial}-a1"))
        .and_then(|p| p["spec"]["nodeName"].as_str())
        .expect("the gang's pod is placed")
        .to_string();
    let died = Instant::now();
    c.fault("stop", &dead);
    c.wait_for(
        &format!("{dead} to be NotReady"),
        Duration::from_secs(120),
        || {
            let node: Value =
                serde_json::from_str(&c.kubectl_ok(&["get", &format!("node/{dead}"), "-o", "json"])).unwrap();
            let ready = node["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())?;
            (ready["status"] != "True").then_some(())
        },
    );
    let not_ready = died.elapsed();
    let status = wait_for_experiment(c, &ns, "node", &operator, Duration::from_secs(600));
    let finished = died.elapsed();
    let seen = watch.finish();
    // The dead node comes back for the tests after this one (its agent confirms the lost pods'
    // deletion, as a kubelet does on its return).
    c.fault("restart", &dead);
    assert_eq!(status["trialsSucceeded"], 1, "{status}");
    assert!(seen.overlaps.is_empty(), "{:?}", seen.overlaps);
    assert_each_trained_once(c, &s3, &ns, "node", 60, 2);
    let evicted_by: Vec<String> = c
        .audited_writes(&ns)
        .iter()
        .filter(|e| {
            e["verb"] == "delete"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{trial}-a1-")))
        })
        .map(|e| e["user"]["username"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        evicted_by
            .iter()
            .any(|u| u.starts_with("system:serviceaccount:kube-system:")),
        "the gang's pod was not evicted by the control plane: deleted by {evicted_by:?}"
    );
    let second = c
        .items(&ns, "pods")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == format!("{trial}-a2"))
        .expect("the second gang's pod");
    assert_ne!(
        second["spec"]["nodeName"],
        dead.as_str(),
        "restarted on the dead node"
    );
    assert!(gang_logs(c, &ns, &format!("{trial}-a2")).contains("resumed from checkpoint"));
    eprintln!(
        "{dead} died: NotReady after {not_ready:.0?}, the gang evicted by {evicted_by:?} and the trial finished on {} after {finished:.0?}",
        second["spec"]["nodeName"]
    );
}
