//! The `orchestra-worker` command line, run as a user would.

mod common;

use std::process::Command;

use orchestra_api::Variant;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestra-worker"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the worker binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn train_eval_and_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let mut spec = common::tiny_spec(Variant::D4, &store, "cli");
    spec.steps = 4;
    let spec_path = dir.path().join("trial.yaml");
    std::fs::write(&spec_path, serde_yaml::to_string(&spec).unwrap()).unwrap();

    let (ok, stdout, stderr) = run(worker().args(["train", "--spec"]).arg(&spec_path));
    assert!(ok, "train failed: {stderr}");
    assert!(
        stdout.contains("Dice") && stdout.contains("estimated"),
        "{stdout}"
    );
    let base = dir.path().join("store/tests/cli");
    let result: orchestra_api::TrialResult =
        serde_json::from_slice(&std::fs::read(base.join("result.json")).unwrap()).unwrap();
    assert_eq!((result.steps, result.variant), (4, Variant::D4));
    let metrics = std::fs::read_to_string(base.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("loss_seg")).count(), 4);
    assert_eq!(
        std::fs::read_to_string(base.join("latest")).unwrap(),
        "step-00000004"
    );
    assert!(base.join("step-00000004/weights.safetensors").exists());

    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&spec_path));
    assert!(
        !ok && stderr.contains("--resume"),
        "a second run must not overwrite: {stderr}"
    );
    let (ok, stdout, stderr) = run(worker().args(["train", "--resume", "--spec"]).arg(&spec_path));
    assert!(
        ok && stdout.contains("Dice"),
        "resume of a finished trial: {stderr}"
    );

    let (ok, stdout, stderr) = run(worker().args(["eval", "--spec"]).arg(&spec_path));
    assert!(ok, "eval failed: {stderr}");
    let eval: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(eval["step"], 4);
    assert_eq!(
        eval["eval"]["scores"]["dice"].as_f64().unwrap(),
        result.scores.dice,
        "eval reproduces the result"
    );
}

#[test]
fn a_broken_spec_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::tiny_spec(Variant::D2, "memory://x", "broken");
    spec.hyper.batch_size = 0;
    spec.model.downsample = Some(6);
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&path));
    assert!(!ok);
    assert!(
        stderr.contains("bad.yaml")
            && stderr.contains("hyper.batchSize = 0")
            && stderr.contains("model.downsample = 6"),
        "{stderr}"
    );

    std::fs::write(&path, "experiment: x\ntrial: y\nvariant: D5\n").unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&path));
    assert!(!ok && stderr.contains("D5"), "{stderr}");
}

#[test]
fn info_prints_parameters_and_flops() {
    let (ok, stdout, stderr) = run(worker().args(["info", "--preset", "paper", "--size", "128"]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("192 bits") && stdout.contains("C (compressor): 1,428,259 parameters"),
        "{stdout}"
    );
    let (ok, stdout, _) = run(worker().args(["info", "--variant", "D1", "--layers"]));
    assert!(
        ok && stdout.contains("s.down0.conv") && !stdout.contains("compressor"),
        "{stdout}"
    );
}
