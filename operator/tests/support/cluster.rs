//! The real control plane for end-to-end tests: `scripts/cluster.sh up` (upstream etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler, built by `make setup`) with one
//! orchestra-node-agent whose pods are processes of this build's binaries. One cluster per test
//! binary, started by the first test that asks; its processes stop when the test binary exits
//! (the script's watchdog), and its folder (logs, audit log, each pod's log) stays under
//! `$CARGO_TARGET_DIR/e2e/` for the failing test to name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// Folder of this build's binaries (operator, worker, node agent).
    pub bin: PathBuf,
    /// The host's address on the pod network, when pods have their own network namespaces
    /// (else they share the host's loopback and this is None).
    pub pod_gateway: Option<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The folder of the upstream binaries `make k8s-tools` built (asked of the script once).
pub fn k8s_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo().join("scripts/k8s_tools.sh"))
            .arg("--print")
            .output()
            .expect("scripts/k8s_tools.sh runs");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A binary of this build, next to the operator's (cargo test --workspace builds them all).
pub fn our_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_orchestra-operator")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Folders of earlier runs' clusters older than `age` (their logs were for those runs).
fn prune_old(root: &Path, age: Duration) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|e| e > age);
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The test binary's cluster with one node, started on first use.
pub fn shared() -> &'static Cluster {
    shared_with(&Layout::default())
}

/// How a test binary's cluster is laid out.
pub struct Layout {
    pub nodes: usize,
    /// How long a node may miss heartbeats before it is NotReady (kube-controller-manager's
    /// --node-monitor-grace-period).
    pub node_grace: &'static str,
    /// Seconds pods stay on a NotReady or unreachable node before they are evicted.
    pub eviction_s: u64,
    /// Seconds between a node agent's Lease renewals.
    pub heartbeat_s: u64,
    /// The Kueue manager with its CRDs and webhooks (scripts/cluster_kueue.sh).
    pub kueue: bool,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            nodes: 1,
            node_grace: "40s",
            eviction_s: 300,
            heartbeat_s: 10,
            kueue: false,
        }
    }
}

/// The test binary's cluster laid out as `layout` says (the first call of the binary decides).
pub fn shared_with(layout: &Layout) -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let bin = our_binary("orchestra-node-agent").parent().unwrap().to_path_buf();
        our_binary("orchestra-worker");
        let k8s = k8s_bin();
        assert!(
            k8s.join("kube-apiserver").exists(),
            "{} is missing: run `make setup`, which builds the Kubernetes control plane from its Go modules",
            k8s.join("kube-apiserver").display()
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"));
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let test = std::env::current_exe()
            .ok()
            .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        prune_old(&target.join("e2e"), Duration::from_secs(2 * 86_400));
        let dir = target
            .join("e2e")
            .join(format!("{test}-{stamp}-{}", std::process::id()));
        let started = Instant::now();
        let out = Command::new(repo().join("scripts/cluster.sh"))
            .args(["up"])
            .arg(&dir)
            .env("CLUSTER_NODES", layout.nodes.to_string())
            .env("CLUSTER_NODE_GRACE", layout.node_grace)
            .env("CLUSTER_POD_EVICTION_S", layout.eviction_s.to_string())
            .env("CLUSTER_NODE_HEARTBEAT_S", layout.heartbeat_s.to_string())
            .env("CLUSTER_KUEUE", if layout.kueue { "1" } else { "0" })
            // What the scheduler counts (no isolation): room for the operator pods the chart and
            // manifests tests create (they wait for an image) beside the sweep's workers.
            .env("CLUSTER_NODE_CPU", "8")
            .env("CLUSTER_NODE_MEMORY", "16Gi")
            // Plain commands for the node agent's own checks.
            .env("CLUSTER_IMAGES", "*busybox*=/usr/bin")
            .env("CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("ORCHESTRA_BIN", &bin)
            .output()
            .expect("scripts/cluster.sh runs");
        assert!(
            out.status.success(),
            "the control plane did not start (logs in {}):\n{}",
            dir.join("logs").display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let pod_gateway = std::fs::read_to_string(dir.join("pod-gateway"))
            .ok()
            .map(|g| g.trim().to_string());
        eprintln!(
            "e2e: real control plane up in {:.0?} at {} (logs in {}); {}",
            started.elapsed(),
            dir.join("kubeconfig").display(),
            dir.join("logs").display(),
            match &pod_gateway {
                Some(g) => format!("pods on their own network, host at {g}"),
                None => format!(
                    "pod network off, pods share 127.0.0.1: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .find(|l| l.contains("pod network off"))
                        .unwrap_or("see the cluster's start log")
                ),
            }
        );
        let cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            bin,
            pod_gateway,
        };
        cluster.kubectl_ok(&[
            "apply",
            "--server-side",
            "-f",
            &repo().join("manifests/crds.yaml").display().to_string(),
        ]);
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
        cluster
    })
}

impl Cluster {
    /// The address of this machine that both its own processes and the pods reach (where a
    /// test's S3 server listens).
    pub fn host_address(&self) -> &str {
        self.pod_gateway.as_deref().unwrap_or("127.0.0.1")
    }

    /// Runs helm (built with the control plane) against this cluster, with its caches in the
    /// cluster's folder; its stdout, or the test fails with what helm said.
    pub fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(k8s_bin().join("helm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        // No request waits for ever: one caught in a restart of etcd fails instead, and the
        // caller's loop or assertion says what it was waiting for.
        let mut child = Command::new(k8s_bin().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=90s")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// kubectl's stdout, after checking that it succeeded.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, ns: &str, yaml: &str) -> Output {
        self.kubectl_stdin(&["-n", ns, "apply", "-f", "-"], Some(yaml))
    }

    pub fn get_json(&self, ns: &str, what: &str) -> Value {
        serde_json::from_str(&self.kubectl_ok(&["-n", ns, "get", what, "-o", "json"])).unwrap()
    }

    /// The items of a list (`kubectl get KIND -o json`), or none.
    pub fn items(&self, ns: &str, what: &str) -> Vec<Value> {
        self.get_json(ns, what)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A fresh namespace for one test.
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl_ok(&["create", "namespace", name]);
        name.to_string()
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `scripts/cluster.sh restart|stop DIR NAME`: one process of the cluster (etcd,
    /// kube-apiserver, orchestra-node-1, ...) stopped, and for `restart` started again and
    /// waited for.
    pub fn fault(&self, what: &str, process: &str) {
        let out = Command::new(repo().join("scripts/cluster.sh"))
            .arg(what)
            .arg(&self.dir)
            .arg(process)
            .output()
            .expect("scripts/cluster.sh runs");
        assert!(
            out.status.success(),
            "cluster.sh {what} {process}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The API server's audit records (ResponseComplete) of requests that changed something in
    /// namespace `ns`: each with its verb, objectRef, user and userAgent.
    pub fn audited_writes(&self, ns: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.logs().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["objectRef"]["namespace"] == ns
                    && matches!(
                        e["verb"].as_str(),
                        Some("create" | "update" | "patch" | "delete" | "deletecollection")
                    )
            })
            .collect()
    }

    /// Polls `check` every half second until it returns Some, or fails naming `what` and the logs.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what} (cluster logs in {}, pods' logs under {})",
                self.logs().display(),
                self.dir.join("nodes").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `orchestra-operator` as a process beside the cluster, watching one namespace; stopped when
/// dropped. Its log is `<cluster>/logs/operator-<ns>.log`.
pub struct Operator {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(cluster: &Cluster, ns: &str, env: &[(&str, String)]) -> Operator {
        Operator::start_named(cluster, ns, env, &format!("operator-{ns}"), &[])
    }

    /// A replica with more arguments (`--leader-election`, `--identity`), logging to
    /// `<cluster>/logs/<name>.log` (appended to: a replica started again keeps one log).
    pub fn start_named(
        cluster: &Cluster,
        ns: &str,
        env: &[(&str, String)],
        name: &str,
        args: &[&str],
    ) -> Operator {
        let log = cluster.logs().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_orchestra-operator"))
            .args(["--namespace", ns, "--restart-backoff", "1"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--worker-image", "ghcr.io/orchestra-dev/orchestra-worker:e2e"])
            .args(args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("orchestra-operator starts");
        Operator { child, log }
    }

    /// SIGKILL, as the kernel's OOM killer or a lost node would: no cleanup of any kind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs (a replica that lost its lease exits).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies the Experiment `yaml` (named `name`) and waits for it to succeed; its status. A
/// failed Experiment fails the test at once, naming the operator's and the pods' logs.
pub fn run_experiment(
    c: &Cluster,
    ns: &str,
    yaml: &str,
    name: &str,
    operator: &Operator,
    timeout: Duration,
) -> Value {
    let applied = c.apply(ns, yaml);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_for_experiment(c, ns, name, operator, timeout)
}

/// Waits for the Experiment `name` to succeed; its status. A moment when the API server does not
/// answer (a fault under test) is waited through.
pub fn wait_for_experiment(
    c: &Cluster,
    ns: &str,
    name: &str,
    operator: &Operator,
    timeout: Duration,
) -> Value {
    c.wait_for(&format!("Experiment {name} to finish"), timeout, || {
        let out = c.kubectl(&["-n", ns, "get", &format!("experiment/{name}"), "-o", "json"]);
        let exp: Value = serde_json::from_slice(&out.stdout).ok()?;
        let phase = exp["status"]["phase"].as_str().unwrap_or_default().to_string();
        assert_ne!(
            phase,
            "Failed",
            "the Experiment failed: {} (operator log {}, pods' logs under {})",
            exp["status"],
            operator.log.display(),
            c.dir.join("nodes").display()
        );
        (phase == "Succeeded").then(|| exp["status"].clone())
    })
}

/// A loopback address no one listens on now (for a server the test starts).
pub fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The body of `http://{addr}{path}`; an error for a refused connection or a status >= 400.
pub fn http_get(addr: &str, path: &str) -> Result<String, ureq::Error> {
    ureq::get(&format!("http://{addr}{path}"))
        .call()?
        .body_mut()
        .read_to_string()
}
