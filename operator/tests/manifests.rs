//! What ships besides the code: the CRDs equal `crdgen`'s output, the examples are valid
//! Experiments a cluster can run, the RBAC grants what the reconciler does (and no more), and
//! the operator binary explains a missing cluster or missing CRDs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use orchestra_api::ExperimentSpec;
use orchestra_operator::k8s::reconcile::cluster_problems;

fn repo(path: &str) -> PathBuf {
    manifest_dir().join("..").join(path)
}

#[test]
fn committed_crds_equal_crdgen_output() {
    let committed = std::fs::read_to_string(repo("manifests/crds.yaml")).unwrap();
    let generated = orchestra_operator::k8s::crds_yaml();
    assert!(
        committed == generated,
        "manifests/crds.yaml is stale: run `cargo run -p orchestra-operator --bin crdgen > manifests/crds.yaml`"
    );
    let chart = std::fs::read_to_string(repo("charts/orchestra/crds/crds.yaml")).unwrap();
    assert!(
        chart == generated,
        "charts/orchestra/crds/crds.yaml is stale: copy manifests/crds.yaml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_crdgen")).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), generated);
}

#[test]
fn example_experiments_are_valid_and_runnable_on_a_cluster() {
    for name in ["quickstart-cpu.yaml", "isic2017-gpu.yaml", "cardiac-3d-gpu.yaml"] {
        let path = repo(&format!("manifests/examples/{name}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let exp = ExperimentSpec::parse_resource(&text, &path.display().to_string()).unwrap();
        assert_eq!(cluster_problems(&exp), None, "{name}");
    }
}

#[test]
fn rbac_grants_exactly_what_the_reconciler_uses() {
    let text = std::fs::read_to_string(repo("manifests/rbac.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if v["kind"] != "ClusterRole" && v["kind"] != "Role" {
            continue;
        }
        for rule in v["rules"].as_sequence().unwrap() {
            for g in rule["apiGroups"].as_sequence().unwrap() {
                for r in rule["resources"].as_sequence().unwrap() {
                    for verb in rule["verbs"].as_sequence().unwrap() {
                        granted.insert(format!(
                            "{}/{} {}",
                            g.as_str().unwrap(),
                            r.as_str().unwrap(),
                            verb.as_str().unwrap()
                        ));
                    }
                }
            }
        }
    }
    let needed = [
        "orchestra.dev/experiments get",
        "orchestra.dev/experiments list",
        "orchestra.dev/experiments watch",
        "orchestra.dev/experiments patch",
        "orchestra.dev/experiments/status patch",
        "orchestra.dev/trials list",
        "orchestra.dev/trials watch",
        "orchestra.dev/trials create",
        "orchestra.dev/trials get",
        "orchestra.dev/trials/status patch",
        "batch/jobs list",
        "batch/jobs watch",
        "batch/jobs patch",
        "batch/jobs create",
        "batch/jobs delete",
        "batch/jobs deletecollection",
        "/pods list",
        "/pods watch",
        "/pods deletecollection",
        "/services patch",
        "/services list",
        "/services watch",
        "/configmaps patch",
        "events.k8s.io/events create",
        "events.k8s.io/events patch",
        "events.k8s.io/events list",
        "coordination.k8s.io/leases get",
        "coordination.k8s.io/leases create",
        "coordination.k8s.io/leases update",
    ];
    for n in needed {
        assert!(granted.contains(n), "rbac.yaml lacks {n}");
    }
    for g in &granted {
        assert!(!g.contains('*'), "no wildcards: {g}");
        assert!(!g.contains("secrets"), "the operator never reads Secrets: {g}");
    }
}

use serde::Deserialize;

fn kubeconfig(dir: &std::path::Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

fn operator(kubeconfig: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra-operator"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_operator_explains_a_missing_cluster_or_missing_crds() {
    let dir = tempfile::tempdir().unwrap();
    let err = operator(&dir.path().join("absent"));
    assert!(err.contains("no Kubernetes cluster reachable"), "{err}");

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = operator(&kubeconfig(dir.path(), &format!("http://127.0.0.1:{closed}")));
    assert!(err.contains("cannot reach the Kubernetes API server"), "{err}");

    // An API server that knows no Experiments.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let err = operator(&kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}")));
    assert!(err.contains("the Experiment CRD is not installed"), "{err}");
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    use orchestra_operator::k8s::metrics::Metrics;
    let metrics = std::sync::Arc::new(Metrics::default());
    metrics.failed("kube");
    metrics.set_trials("sweep", &[("Running", 2)]);
    drop(metrics.start());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, orchestra_operator::k8s::server::router(metrics))
            .await
            .unwrap();
    });
    let get = move |path: &'static str| {
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .join()
        .unwrap()
    };
    let health = tokio::task::spawn_blocking(move || get("/healthz"))
        .await
        .unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let text = tokio::task::spawn_blocking(move || get("/metrics"))
        .await
        .unwrap();
    for needle in [
        "orchestra_operator_reconciles_total 1",
        "orchestra_operator_reconcile_failures_total{reason=\"kube\"} 1",
        "orchestra_operator_trials{experiment=\"sweep\",phase=\"Running\"} 2",
        "orchestra_operator_reconcile_duration_seconds_count 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

/// The crate's folder, as cargo says when it runs the test: the path compiled in would be the
/// one of whichever checkout last built this binary in a shared target folder.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
