//! The operator on the real Kubernetes control plane (upstream kube-apiserver, etcd,
//! kube-controller-manager and kube-scheduler, built from their Go modules by `make setup`), with
//! one node whose pods are processes (orchestra-node-agent): the manifests, the examples and the
//! Helm chart as a platform team installs them, and a sweep that trains for real through Jobs
//! that kube-scheduler places and the Job controller completes, then is deleted without a trace.
//!
//! The mock API server of `reconcile.rs` keeps what a real server cannot be made to do on demand
//! (injected 409s and 500s); each of its scenarios that has a counterpart here names it.

#[path = "../../api/tests/admission/mod.rs"]
mod admission;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestra_store::layout::TrialKeys;
use serde_json::Value;
use support::cluster::{self, free_address, http_get as get, run_experiment, Cluster, Operator};
use support::local_gang::{metrics_lines, read_text, run_local_ranks};
use support::s3::S3;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Names of the objects of `kinds` in `ns` (or cluster-wide with "") that carry `selector`.
fn names(c: &Cluster, ns: &str, kinds: &str, selector: &str) -> Vec<String> {
    let mut args = vec!["get", kinds, "-l", selector, "-o", "name"];
    if ns.is_empty() {
        args.push("--all-namespaces");
    } else {
        args.extend(["-n", ns]);
    }
    let mut v: Vec<String> = c.kubectl_ok(&args).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn manifests_examples_and_the_helm_chart_install_on_a_real_api_server() {
    let c = cluster::shared();
    let chart = repo().join("charts/orchestra").display().to_string();

    // The chart: lint, every rendered object accepted by the real server, installed, and gone
    // again after uninstall (the CRDs stay, as Helm keeps a chart's crds/ by design).
    c.helm(&["lint", &chart]);
    let rendered = c.helm(&["template", "orchestra", &chart, "--namespace", "e2e-helm"]);
    c.kubectl_ok(&["create", "namespace", "e2e-helm"]);
    let dry = c.kubectl_stdin(
        &["-n", "e2e-helm", "apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
    assert!(
        dry.status.success(),
        "the real API server refused the chart's objects: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    c.helm(&["install", "orchestra", &chart, "--namespace", "e2e-helm"]);
    let installed = names(
        c,
        "",
        "deployments,services,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings",
        "app.kubernetes.io/managed-by=Helm",
    );
    for want in [
        "deployment.apps/orchestra-operator",
        "service/orchestra-operator",
        "service/orchestra-dashboard",
        "serviceaccount/orchestra-operator",
    ] {
        assert!(
            installed.iter().any(|n| n == want),
            "{want} not installed: {installed:?}"
        );
    }
    assert!(
        installed
            .iter()
            .any(|n| n.starts_with("clusterrole.rbac.authorization.k8s.io/")),
        "{installed:?}"
    );
    // The dashboard: a Service by default, an Ingress only when asked for, and then one the
    // real server accepts.
    assert!(!rendered.contains("kind: Ingress"), "no Ingress by default");
    let exposed = c.helm(&[
        "template",
        "orchestra",
        &chart,
        "--namespace",
        "e2e-helm",
        "--set",
        "dashboard.ingress.enabled=true,dashboard.ingress.className=nginx",
    ]);
    assert!(exposed.contains("kind: Ingress"), "{exposed}");
    let dry = c.kubectl_stdin(
        &["-n", "e2e-helm", "apply", "--dry-run=server", "-f", "-"],
        Some(&exposed),
    );
    assert!(
        dry.status.success(),
        "the real API server refused the Ingress: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    c.helm(&["uninstall", "orchestra", "--namespace", "e2e-helm", "--wait"]);
    let left = names(
        c,
        "",
        "deployments,services,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,configmaps,secrets",
        "app.kubernetes.io/managed-by=Helm",
    );
    assert!(left.is_empty(), "helm uninstall left {left:?}");
    let helm_secrets = c.kubectl_ok(&[
        "-n",
        "e2e-helm",
        "get",
        "secrets",
        "-l",
        "owner=helm",
        "-o",
        "name",
    ]);
    assert!(
        helm_secrets.trim().is_empty(),
        "release records left: {helm_secrets}"
    );

    // The plain manifests, then every example Experiment in a namespace nobody reconciles: each
    // object valid for the real server (schemas, defaults, RBAC rules).
    for file in ["manifests/rbac.yaml", "manifests/operator.yaml"] {
        c.kubectl_ok(&["apply", "-f", &repo().join(file).display().to_string()]);
    }
    let deployment = c.get_json("orchestra-system", "deployment/orchestra-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    c.kubectl_ok(&["create", "namespace", "e2e-examples"]);
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    for file in &examples {
        c.kubectl_ok(&["-n", "e2e-examples", "apply", "-f", &file.display().to_string()]);
    }
    let applied = c.items("e2e-examples", "experiments");
    assert_eq!(applied.len(), examples.len(), "{applied:?}");
    // The operator's own manifests go again, so that the other tests' operators are the only ones.
    for file in ["manifests/operator.yaml", "manifests/rbac.yaml"] {
        c.kubectl_ok(&[
            "delete",
            "--wait=false",
            "-f",
            &repo().join(file).display().to_string(),
        ]);
    }
}

const SWEEP: &str = "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: { name: quick }
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: { inputSize: 64, downsample: 8 }
  variants: [D1, D2, D3, D4]
  hyper: { batchSize: 4 }
  steps: 12
  checkpointEvery: 6
  workersPerTrial: 1
  resources: { cpu: \"1\", memory: 1Gi }
  parallelism: 2
  maxAttempts: 2
  store: s3://runs/quick
  storeSecret: orchestra-store
  cleanupStore: true
  objective: { bppBudget: 0.5 }
";

/// Real-cluster counterpart of `reconcile.rs`'s `a_new_experiment_creates_trials_and_their_gangs`,
/// `a_finished_trial_is_recorded_and_ranked` and `deletion_removes_the_gangs_and_if_asked_the_stored_results`.
#[test]
fn a_sweep_trains_through_real_jobs_and_deletion_leaves_nothing_behind() {
    let c = cluster::shared();
    let ns = c.namespace("e2e-sweep");
    let s3 = S3::start(c, &ns, "runs");
    let dashboard = free_address();
    let operator = Operator::start_named(
        c,
        &ns,
        &s3.creds(),
        &format!("operator-{ns}"),
        &["--dashboard-addr", &dashboard],
    );
    let before = c.wait_for("the dashboard to answer", Duration::from_secs(60), || {
        get(&dashboard, "/api/version").ok()
    });
    let status = run_experiment(c, &ns, SWEEP, "quick", &operator, Duration::from_secs(900));
    assert_eq!(status["trialsSucceeded"], 4, "{status}");

    // Every trial's gang was a Job that the Job controller completed, its pods placed by
    // kube-scheduler on the node, run there and finished.
    let trials = c.items(&ns, "trials");
    assert_eq!(trials.len(), 4);
    for t in &trials {
        assert_eq!(t["status"]["phase"], "Succeeded", "{}", t["status"]);
    }
    let jobs = c.items(&ns, "jobs");
    assert!(jobs.len() >= 4, "{} jobs", jobs.len());
    let complete = |j: &Value| {
        j["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        })
    };
    let trials_complete: std::collections::BTreeSet<String> = jobs
        .iter()
        .filter(|j| complete(j))
        .map(|j| {
            j["metadata"]["labels"]["orchestra.dev/trial"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        trials_complete.len(),
        4,
        "a completed Job per trial: {trials_complete:?}"
    );
    let pods = c.items(&ns, "pods");
    assert!(!pods.is_empty());
    for p in &pods {
        assert_eq!(
            p["spec"]["nodeName"], "orchestra-node-1",
            "{}",
            p["metadata"]["name"]
        );
    }
    assert!(
        pods.iter().any(|p| p["status"]["phase"] == "Succeeded"),
        "finished pods: {:?}",
        pods.iter().map(|p| &p["status"]["phase"]).collect::<Vec<_>>()
    );

    // The results in the store (checkpoints and results written by the workers through S3).
    {
        let (_serial, store) = s3.store("s3://runs/quick");
        for t in &trials {
            let keys = TrialKeys::new("quick", t["metadata"]["name"].as_str().unwrap());
            for key in [keys.result(), keys.latest()] {
                assert!(store.get(&key).unwrap().is_some(), "{key} is not in the store");
            }
        }
    }

    // What a user reads: the leaderboard ConfigMap, events, and kubectl's printer columns.
    let board = c.get_json(&ns, "configmap/quick-leaderboard");
    let md = board["data"]["leaderboard.md"].as_str().unwrap();
    for t in &trials {
        assert!(md.contains(t["metadata"]["name"].as_str().unwrap()), "{md}");
    }
    let events = c.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Experiment",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&events).unwrap();
    assert!(
        events["items"].as_array().is_some_and(|e| !e.is_empty()),
        "no events on the Experiment"
    );
    let table = c.kubectl_ok(&["-n", &ns, "get", "experiments"]);
    let winner = status["best"]["trial"]
        .as_str()
        .expect("a winner under the budget");
    assert!(
        table.contains("WINNER") && table.contains(winner) && table.contains("Succeeded"),
        "{table}"
    );
    let trial_table = c.kubectl_ok(&["-n", &ns, "get", "trials"]);
    for t in &trials {
        assert!(
            trial_table.contains(t["metadata"]["name"].as_str().unwrap()),
            "{trial_table}"
        );
    }

    the_dashboard_shows_the_cluster(&dashboard, &ns, &before, &trials);

    // Deletion: the finalizer cleans the store, the garbage collector the owned objects.
    c.kubectl_ok(&["-n", &ns, "delete", "experiment", "quick", "--wait=false"]);
    c.wait_for(
        "the Experiment and everything it owned to go",
        Duration::from_secs(120),
        || {
            let left = names(
                c,
                &ns,
                "experiments,trials,jobs,services,configmaps,pods",
                "orchestra.dev/experiment=quick",
            );
            let exp_left = c
                .kubectl(&["-n", &ns, "get", "experiment", "quick"])
                .status
                .success();
            (left.is_empty() && !exp_left).then_some(())
        },
    );
    let pods_left = c.items(&ns, "pods");
    assert!(pods_left.is_empty(), "pods left: {pods_left:?}");
    let stored = s3.store("s3://runs/quick").1.list("").unwrap();
    assert!(stored.is_empty(), "cleanupStore left {stored:?}");
    drop(operator);
}

/// The operator's dashboard (`--dashboard-addr`) after the sweep: phases, attempts, scores and
/// events from the cluster, checkpoints and the model from the store (S3, with the operator's
/// credentials), and a version that moved while the sweep ran (what an open page polls).
fn the_dashboard_shows_the_cluster(addr: &str, ns: &str, before: &str, trials: &[Value]) {
    let after = get(addr, "/api/version").unwrap();
    assert_ne!(before, after, "the version moved while the sweep ran");
    let list = get(addr, "/").unwrap();
    assert!(
        list.contains(">quick</a>") && list.contains("Succeeded") && list.contains("4/4"),
        "{list}"
    );
    let page = get(addr, &format!("/ns/{ns}/experiments/quick/")).unwrap();
    for t in trials {
        let name = t["metadata"]["name"].as_str().unwrap();
        let dice = t["status"]["result"]["scores"]["dice"].as_f64().unwrap();
        let row = page
            .split("<tr")
            .find(|r| r.contains(&format!("trials/{name}/")))
            .unwrap_or_else(|| panic!("no row for {name}"));
        assert!(row.contains(&format!("{dice:.4}")), "{name}: Dice {dice}: {row}");
    }
    assert!(page.contains("id=\"conditions\""), "the Experiment's conditions");
    assert!(page.contains("TrialStarted"), "the Experiment's events: {page}");
    assert!(!page.contains("What is wrong"), "{page}");
    // Every trial's own history: its start and its end, each trial's events kept apart from
    // the others' with the same reason (the Trial is each event's related object).
    for t in trials {
        let name = t["metadata"]["name"].as_str().unwrap();
        let trial = get(addr, &format!("/ns/{ns}/experiments/quick/trials/{name}/")).unwrap();
        assert!(
            trial.contains("Attempts and restarts")
                && trial.contains(&format!("TrialStarted: {name}: 1 worker(s)"))
                && trial.contains(&format!("TrialSucceeded: {name}: Dice")),
            "{name}'s history from its events: {trial}"
        );
    }
    let name = trials[0]["metadata"]["name"].as_str().unwrap();
    let trial = get(addr, &format!("/ns/{ns}/experiments/quick/trials/{name}/")).unwrap();
    assert!(
        trial.contains("<th scope=\"row\">12</th>"),
        "the last checkpoint: {trial}"
    );
    assert!(!trial.contains("What is wrong"), "{trial}");
    let model = ureq::get(&format!(
        "http://{addr}/ns/{ns}/experiments/quick/trials/{name}/model"
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_vec()
    .unwrap();
    assert!(model.len() > 1000, "the model file: {} bytes", model.len());
}

const GANG: &str = "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: { name: gang }
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: { inputSize: 64, downsample: 8 }
  variants: [D4]
  hyper: { batchSize: 4 }
  steps: 6
  checkpointEvery: 3
  workersPerTrial: 2
  resources: { cpu: \"1\", memory: 1Gi }
  parallelism: 1
  maxAttempts: 1
  store: s3://gang/gang
  storeSecret: orchestra-store
  objective: { bppBudget: 0.5 }
";

/// Real-cluster counterpart of `reconcile.rs`'s gang scenarios and of the worker's
/// `two_tcp_ranks_without_mpirun_train_like_one_process_with_twice_the_batch`: a 2-rank gang,
/// each rank a pod with its own network namespace and address, rank 1 finding rank 0 by the
/// headless Service's name (`MASTER_ADDR`, resolved by CoreDNS from the EndpointSlice), trains
/// through the TCP collective and logs the same metrics, step by step, and the same scores as
/// the same trial run locally as two TCP ranks on loopback.
#[test]
fn a_two_rank_tcp_gang_rendezvous_by_name_and_trains_like_the_local_run() {
    let c = cluster::shared();
    if c.pod_gateway.is_none() {
        eprintln!(
            "SKIPPED: the cluster has no pod network (it needs root and iproute2: see the \
             cluster's start line above), so the ranks of a gang cannot have addresses of their own"
        );
        return;
    }
    let ns = c.namespace("e2e-gang");
    let s3 = S3::start(c, &ns, "gang");
    let operator = Operator::start(c, &ns, &s3.creds());
    run_experiment(c, &ns, GANG, "gang", &operator, Duration::from_secs(600));
    let trials = c.items(&ns, "trials");
    assert_eq!(trials.len(), 1);
    let trial = trials[0]["metadata"]["name"].as_str().unwrap().to_string();

    // Two pods, two addresses on the pod network, rank 0's the one its Service name resolves to.
    let pods = c.items(&ns, "pods");
    assert_eq!(pods.len(), 2, "one pod per rank");
    let ips: std::collections::BTreeSet<&str> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap_or_default())
        .collect();
    let subnet = c.host_address().rsplit_once('.').unwrap().0.to_string();
    assert_eq!(ips.len(), 2, "each rank its own address: {ips:?}");
    assert!(
        ips.iter().all(|ip| ip.starts_with(&subnet)),
        "{ips:?} not on {subnet}.0/24"
    );
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded", "{}", p["metadata"]["name"]);
    }
    // Rank 1 asked the cluster DNS for rank 0 by name, from its own address, and got an answer.
    let dns_log = std::fs::read_to_string(c.logs().join("coredns.log")).unwrap();
    let answered = dns_log.lines().any(|l| {
        l.contains(&format!("\"A IN {trial}-a"))
            && l.contains(&format!("-0.{trial}.{ns}.svc.cluster.local."))
            && l.contains("NOERROR")
            && ips.iter().any(|ip| l.contains(&format!("{ip}:")))
    });
    assert!(
        answered,
        "no answered query for rank 0's name in the CoreDNS log:\n{dns_log}"
    );

    // The same trial (the spec the operator gave the pods) as two local TCP ranks on loopback.
    let spec_yaml = c.get_json(&ns, &format!("configmap/{trial}-spec"))["data"]["trial.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let spec: orchestra_api::TrialSpec = serde_yaml::from_str(&spec_yaml).unwrap();
    assert_eq!(spec.world_size, 2);
    let local = tempfile::tempdir().unwrap();
    let local_store = run_local_ranks(&spec, 2, local.path());

    let keys = TrialKeys::new(&spec.experiment, &trial);
    let (in_cluster, cluster_result) = {
        let (_serial, store) = s3.store("s3://gang/gang");
        (
            read_text(&store, &keys.metrics()),
            read_text(&store, &keys.result()),
        )
    };
    let on_loopback = read_text(&local_store, &keys.metrics());
    let (a, b) = (metrics_lines(&in_cluster), metrics_lines(&on_loopback));
    let steps = a.iter().filter(|l| l.get("loss_seg").is_some()).count();
    assert_eq!(steps, 6, "a metrics line per step: {in_cluster}");
    assert_eq!(
        a, b,
        "the gang in the cluster and the local ranks logged different metrics"
    );
    let scores = |text: &str| -> (Value, Value) {
        let r: Value = serde_json::from_str(text).unwrap();
        (r["scores"].clone(), r["rate"].clone())
    };
    let local_result = read_text(&local_store, &keys.result());
    assert_eq!(scores(&cluster_result), scores(&local_result));
    eprintln!(
        "2-rank gang on the pod network ({ips:?}) and on loopback: {} identical metrics lines, scores {}",
        a.len(),
        scores(&cluster_result).0
    );
    drop(operator);
}

/// The pod's folder on the node (volumes and logs).
fn pod_dir(c: &Cluster, ns: &str, pod: &Value) -> PathBuf {
    c.dir.join("nodes/orchestra-node-1").join(format!(
        "{ns}_{}_{}",
        pod["metadata"]["name"].as_str().unwrap(),
        pod["metadata"]["uid"].as_str().unwrap()
    ))
}

fn pod_yaml(name: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{ name: {name} }}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  automountServiceAccountToken: false
  containers:
  - name: c
    image: docker.io/library/busybox:e2e
    command: {command}
{extra}"
    )
}

/// What the node agent does for the kubelet's part, seen through the real API server: volumes,
/// variables, exit codes, unknown images, and deletion with a grace period.
#[test]
fn the_node_agent_runs_pods_as_a_kubelet_would() {
    let c = cluster::shared();
    let ns = c.namespace("e2e-agent");
    c.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "cfg",
        "--from-literal=key=from-configmap",
    ]);
    c.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=token=s3cret",
    ]);
    let volumes = "    volumeMounts:
    - { name: cfg, mountPath: /etc/cfg }
    - { name: info, mountPath: /etc/info }
  volumes:
  - { name: cfg, configMap: { name: cfg } }
  - name: info
    downwardAPI: { items: [{ path: name, fieldRef: { fieldPath: metadata.name } }] }
";
    let env = "    env:
    - { name: SECRET, valueFrom: { secretKeyRef: { name: sec, key: token } } }
    - { name: POD, valueFrom: { fieldRef: { fieldPath: metadata.name } } }
    - { name: GREETING, value: \"hello $(POD)\" }
";
    // The ServiceAccount admission plugin wants the namespace's default account to exist.
    c.wait_for(
        "the namespace's default service account",
        Duration::from_secs(30),
        || {
            c.kubectl(&["-n", &ns, "get", "serviceaccount", "default"])
                .status
                .success()
                .then_some(())
        },
    );
    // The token volume the ServiceAccount admission plugin adds (automount on): a TokenRequest
    // of the node's, bound to the pod.
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token_pod = pod_yaml("token", &format!("[cat, {sa_dir}/namespace, {sa_dir}/token]"), "")
        .replace("  automountServiceAccountToken: false\n", "");
    for yaml in [
        token_pod,
        pod_yaml("files", "[cat, /etc/cfg/key, /etc/info/name]", volumes),
        pod_yaml("vars", "[printenv, SECRET, GREETING]", env),
        pod_yaml("fails", "[\"false\"]", ""),
        pod_yaml("sleeps", "[sleep, \"600\"]", ""),
        pod_yaml("unknown", "[nginx]", "").replace("docker.io/library/busybox:e2e", "nginx:1"),
    ] {
        let out = c.apply(&ns, &yaml);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let phase_of = |name: &str| {
        c.get_json(&ns, &format!("pod/{name}"))["status"]["phase"]
            .as_str()
            .map(str::to_string)
    };
    let finished = |name: &str| {
        c.wait_for(&format!("pod {name} to finish"), Duration::from_secs(60), || {
            let p = c.get_json(&ns, &format!("pod/{name}"));
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
        })
    };
    let files = finished("files");
    assert_eq!(files["status"]["phase"], "Succeeded");
    let log = std::fs::read_to_string(pod_dir(c, &ns, &files).join("logs/c.log")).unwrap();
    assert_eq!(log, "from-configmapfiles");
    let token = finished("token");
    let log = std::fs::read_to_string(pod_dir(c, &ns, &token).join("logs/c.log")).unwrap();
    assert!(
        log.starts_with(&format!("{ns}eyJ")),
        "namespace, then a JWT: {log}"
    );
    let vars = finished("vars");
    let log = std::fs::read_to_string(pod_dir(c, &ns, &vars).join("logs/c.log")).unwrap();
    assert_eq!(log, "s3cret\nhello vars\n");
    let fails = finished("fails");
    assert_eq!(fails["status"]["phase"], "Failed");
    let term = &fails["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 1, "{term}");
    assert_eq!(term["reason"], "Error");

    let waiting = c.wait_for(
        "pod unknown to wait for its image",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&ns, "pod/unknown");
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "ErrImagePull").then_some(w)
        },
    );
    assert!(
        waiting["message"].as_str().unwrap().contains("nginx:1"),
        "{waiting}"
    );
    assert_eq!(phase_of("unknown").as_deref(), Some("Pending"));

    // Deleted while running: SIGTERM (sleep dies of it), the pod is gone for good, and so is its process.
    let running = c.wait_for("pod sleeps to run", Duration::from_secs(30), || {
        let p = c.get_json(&ns, "pod/sleeps");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let pid: i32 = running["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("process://")
        .parse()
        .unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the pod's process {pid} runs");
    c.kubectl_ok(&["-n", &ns, "delete", "pod", "sleeps", "--wait=false"]);
    c.wait_for("pod sleeps to go", Duration::from_secs(30), || {
        (!c.kubectl(&["-n", &ns, "get", "pod", "sleeps"]).status.success()).then_some(())
    });
    // SAFETY: as above.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "process {pid} outlived its pod");
    c.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The shared table of invalid Experiments (`api/tests/admission/cases.yaml`) against the real
/// API server: what the CRD can say (schema bounds and CEL rules generated from the Rust types)
/// is refused at apply with a message naming the field; what only the operator can say is
/// stored (and then refused by the operator's validation, which `api/tests/admission_cases.rs`
/// checks for every case).
#[test]
fn the_api_server_refuses_invalid_experiments_naming_the_field() {
    let c = cluster::shared();
    let ns = c.namespace("e2e-admission");
    let base = admission::base().to_string();
    let out = c.kubectl_stdin(&["-n", &ns, "apply", "--dry-run=server", "-f", "-"], Some(&base));
    assert!(
        out.status.success(),
        "the base is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wrong = Vec::new();
    for case in admission::cases() {
        let out = c.kubectl_stdin(
            &["-n", &ns, "apply", "--dry-run=server", "-f", "-"],
            Some(&case.experiment.to_string()),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let as_expected = match case.caught.as_str() {
            "server" => !out.status.success() && err.contains(&case.field),
            _ => out.status.success(),
        };
        if !as_expected {
            wrong.push(format!(
                "{} (caught: {}, field {}): {}",
                case.name,
                case.caught,
                case.field,
                if out.status.success() {
                    "accepted".into()
                } else {
                    err
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
