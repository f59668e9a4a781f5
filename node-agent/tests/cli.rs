//! The agent's command line: a bad setting is one line naming what is wrong, before anything
//! is registered. (Its life on a real control plane is tested by the operator's end-to-end
//! tests, `operator/tests/cluster_e2e.rs`, which run every pod through it.)

use std::process::Command;

fn agent(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra-node-agent"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_kubeconfig_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let (ok, err) = agent(&[
        "--kubeconfig",
        missing.to_str().unwrap(),
        "--node-name",
        "n1",
        "--root",
        dir.path().to_str().unwrap(),
        "--image",
        "*=/bin",
    ]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("reading") && err.contains("nope.kubeconfig"),
        "{err}"
    );
}

#[test]
fn an_image_rule_without_a_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = agent(&[
        "--kubeconfig",
        "/dev/null",
        "--node-name",
        "n1",
        "--root",
        dir.path().to_str().unwrap(),
        "--image",
        "busybox",
    ]);
    assert!(!ok);
    assert!(err.contains("--image busybox: expected PATTERN=DIR"), "{err}");
}
