//! `orchestra run` end to end on a tiny synthetic sweep: real worker processes, a leaderboard,
//! a second run that trains nothing, and a run killed mid-way that continues.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn orchestra() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra"));
    cmd.args(["run", "--restart-backoff", "1"]);
    cmd
}

fn worker() -> PathBuf {
    let w = Path::new(env!("CARGO_BIN_EXE_orchestra")).with_file_name("orchestra-worker");
    assert!(
        w.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        w.display()
    );
    w
}

fn experiment(dir: &Path, name: &str, steps: u32, checkpoint_every: u32) -> PathBuf {
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: {{ inputSize: 64, downsample: 8 }}
  variants: [D2, D4]
  hyper: {{ batchSize: 4 }}
  search: {{ lambdaRate: {{ type: list, values: [0.05, 1.0] }} }}
  steps: {steps}
  checkpointEvery: {checkpoint_every}
  parallelism: 2
  store: file://{}/store
  objective: {{ bppBudget: 0.1 }}
",
        dir.display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(file: &Path, workdir: &Path) -> Output {
    orchestra()
        .args(["--progress-every", "0.5"])
        .arg(file)
        .arg("--workdir")
        .arg(workdir)
        .arg("--worker")
        .arg(worker())
        .output()
        .unwrap()
}

/// The run's stdout, after checking that it succeeded.
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn log_sizes(workdir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(workdir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_sweep_runs_ranks_and_is_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path(), "mini", 6, 3);
    let workdir = dir.path().join("work");
    let out = run(&file, &workdir);
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("Leaderboard: mini") && stdout.contains("Succeeded (3 of 3 trials succeeded)"),
        "{stdout}"
    );

    let lb: serde_json::Value =
        serde_json::from_slice(&std::fs::read(workdir.join("leaderboard.json")).unwrap()).unwrap();
    let trials: Vec<&str> = lb["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["trial"].as_str().unwrap())
        .collect();
    assert_eq!(trials.len(), 3);
    for t in ["mini-d2-000", "mini-d4-000", "mini-d4-001"] {
        assert!(trials.contains(&t), "{t} missing from {trials:?}");
    }
    assert!(!lb["front"].as_array().unwrap().is_empty());
    assert!(
        lb["winner"].is_string(),
        "every trial is under the 0.1 bpp budget"
    );
    let d4: Vec<&serde_json::Value> = lb["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["variant"] == "D4")
        .collect();
    assert!(d4.iter().all(|e| e["params"]["lambdaRate"].is_number()));
    for f in ["leaderboard.md", "leaderboard.svg", "leaderboard.png"] {
        assert!(workdir.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    assert!(
        dir.path().join("store/mini/leaderboard.png").exists(),
        "published to the store too"
    );
    let png = std::fs::read(workdir.join("leaderboard.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The same command again: everything is finished, nothing trains.
    let before = log_sizes(&workdir);
    let out = run(&file, &workdir);
    assert!(out.status.success());
    assert_eq!(
        log_sizes(&workdir),
        before,
        "a finished sweep started workers again"
    );

    // `orchestra leaderboard` reads the same results from the folder and from the store.
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["leaderboard"])
        .arg(&workdir)
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mini-d4-001"));
    let store = format!("file://{}/store", dir.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_orchestra"))
        .args(["leaderboard", &store, "--out"])
        .arg(dir.path().join("lb"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("lb/leaderboard.svg").exists());
}

#[test]
fn a_killed_run_continues_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path(), "killed", 30, 5);
    let workdir = dir.path().join("work");
    let mut child = orchestra()
        .arg(&file)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--worker")
        .arg(worker())
        .spawn()
        .unwrap();
    // Wait for a first checkpoint of some trial, then kill the runner outright.
    let started = Instant::now();
    let store = dir.path().join("store/killed");
    loop {
        let any_checkpoint = ["killed-d2-000", "killed-d4-000"]
            .iter()
            .any(|t| store.join(t).join("latest").exists());
        if any_checkpoint {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let out = run(&file, &workdir);
    let stdout = succeeded(&out);
    assert!(stdout.contains("Succeeded (3 of 3 trials succeeded)"), "{stdout}");
    // Off a terminal there are no bars: running trials are reported in lines instead.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" step ") && l.contains("images/s") && l.contains("eta")),
        "no progress line:\n{stdout}"
    );
    assert!(
        !stdout.contains('\x1b') && !out.stderr.contains(&0x1b),
        "colour codes off a terminal"
    );
    // Each trial's metrics hold every step exactly once: resumed trials continued, not restarted.
    for t in ["killed-d2-000", "killed-d4-000", "killed-d4-001"] {
        let metrics = std::fs::read_to_string(store.join(t).join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("loss_seg").is_some())
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=30).collect::<Vec<_>>(), "{t}");
    }
    let resumed = ["killed-d2-000", "killed-d4-000"].iter().any(|t| {
        std::fs::read_to_string(workdir.join("logs").join(format!("{t}.log")))
            .unwrap()
            .contains("resumed from checkpoint")
    });
    assert!(resumed, "no trial resumed from its checkpoint");
}

#[test]
fn ctrl_c_stops_cleanly_and_the_same_command_continues() {
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path(), "interrupted", 30, 5);
    let workdir = dir.path().join("work");
    let child = orchestra()
        .arg(&file)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--worker")
        .arg(worker())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let store = dir.path().join("store/interrupted");
    let started = Instant::now();
    while !["interrupted-d2-000", "interrupted-d4-000"]
        .iter()
        .any(|t| store.join(t).join("latest").exists())
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C at a terminal: SIGINT to the runner's whole process group.
    // SAFETY: kill(2) on the process group of our own child.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("run the same command again"));
    let state = std::fs::read_to_string(workdir.join("state.json")).unwrap();
    assert!(
        !state.contains("\"Running\""),
        "interrupted trials are recorded as pending: {state}"
    );

    let stdout = succeeded(&run(&file, &workdir));
    assert!(stdout.contains("Succeeded (3 of 3 trials succeeded)"), "{stdout}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workdir.join("state.json")).unwrap()).unwrap();
    for (name, t) in state["trials"].as_object().unwrap() {
        assert_eq!(t["attempts"], 1, "{name}: the interruption spent no attempt");
    }
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "run with the operator's `mpi` feature where Open MPI and an MPI worker are built (make test does)"
)]
fn a_data_parallel_trial_runs_as_an_mpi_gang() {
    if let Err(e) = Command::new("mpirun").arg("--version").output() {
        panic!("the `mpi` feature is on but mpirun cannot run ({e}); install Open MPI (make setup)");
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = Command::new(worker())
        .args([
            "bench-allreduce",
            "--dist",
            "mpi",
            "--sizes-mib",
            "1",
            "--iters",
            "1",
            "--out",
        ])
        .arg(dir.path().join("probe.json"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&probe.stderr).contains("not in this build"),
        "the operator's `mpi` feature is on but orchestra-worker was built without MPI: \
         build both with it (ORCHESTRA_FEATURES in scripts/env.sh)"
    );
    let text = std::fs::read_to_string(experiment(dir.path(), "gang", 4, 2))
        .unwrap()
        .replace("variants: [D2, D4]", "variants: [D4]\n  workersPerTrial: 2")
        .replace("search: { lambdaRate: { type: list, values: [0.05, 1.0] } }", "");
    let file = dir.path().join("gang.yaml");
    std::fs::write(&file, text).unwrap();
    let out = run(&file, &dir.path().join("work"));
    let stdout = succeeded(&out);
    assert!(stdout.contains("gang-d4"), "{stdout}");
    let result: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("store/gang/gang-d4-000/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["timings"]["worldSize"], 2, "{result}");
}

/// Pareto ASHA with the local runner, killed outright (kill -9) while a promoted trial trains
/// to its next rung: the same command finishes the search, every candidate ran as one trial,
/// each trial's steps were trained exactly once (promotions and the resumed one continued from
/// their checkpoints), and the trials stopped early are on the leaderboard with their step.
#[test]
fn an_asha_sweep_killed_during_a_promotion_finishes_with_every_trial_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: asha }}
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: {{ inputSize: 64, downsample: 8 }}
  variants: [D4]
  hyper: {{ batchSize: 4 }}
  search: {{ lambdaRate: {{ type: list, values: [0.02, 0.1, 0.5, 2.0] }} }}
  algorithm: {{ type: asha, sampler: grid, seed: 2, eta: 2, minSteps: 6 }}
  steps: 24
  checkpointEvery: 4
  parallelism: 2
  store: file://{}/store
  objective: {{ mode: pareto, referenceBpp: 0.1 }}
",
        dir.path().display()
    );
    let file = dir.path().join("asha.yaml");
    std::fs::write(&file, text).unwrap();
    let workdir = dir.path().join("work");
    let mut child = orchestra()
        .arg(&file)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--worker")
        .arg(worker())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a promoted trial is running, then kill the runner outright.
    let started = Instant::now();
    loop {
        let state: serde_json::Value = std::fs::read(workdir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let promoted_running = state["trials"].as_object().is_some_and(|ts| {
            ts.values()
                .any(|t| t["phase"] == "Running" && t["promotions"].as_u64() > Some(0))
        });
        if promoted_running {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no promotion started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let stdout = succeeded(&run(&file, &workdir));
    assert!(stdout.contains("experiment asha: Succeeded"), "{stdout}");
    let store = dir.path().join("store/asha");
    let trials: Vec<String> = (0..4).map(|i| format!("asha-d4-{i:03}")).collect();
    let mut stopped = 0;
    for t in &trials {
        let rungs: Vec<u64> = std::fs::read_dir(store.join(t).join("rungs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_prefix("step-")?.strip_suffix(".json")?.parse().ok())
            .collect();
        let reached = *rungs.iter().max().unwrap();
        let metrics = std::fs::read_to_string(store.join(t).join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("loss_seg").is_some())
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=reached).collect::<Vec<_>>(), "{t}: every step once");
        if store.join(t).join("stopped.json").exists() {
            stopped += 1;
            assert!(reached < 24, "{t} stopped after the last rung");
        } else {
            assert_eq!(reached, 24, "{t} neither finished nor stopped");
            assert!(store.join(t).join("result.json").exists());
        }
    }
    assert!((1..4).contains(&stopped), "{stopped} trials stopped early");
    let board = std::fs::read_to_string(workdir.join("leaderboard.md")).unwrap();
    assert!(
        board.contains(&format!("Stopped early by the search ({stopped})")),
        "{board}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(workdir.join("state.json")).unwrap()).unwrap();
    let names: Vec<&String> = state["trials"].as_object().unwrap().keys().collect();
    assert_eq!(names, trials.iter().collect::<Vec<_>>(), "every candidate once");
}

/// `trialsPerGpu: 2` on a machine showing two GPUs (CUDA_VISIBLE_DEVICES=7,9): each trial's
/// worker sees exactly one of them, never more than two trials share one at a time, and both
/// are used. This machine has no GPU, so the worker is a wrapper that records what it was given
/// and trains the same trial on the CPU.
#[test]
fn packed_trials_are_pinned_two_to_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("gpus.log");
    let wrapper = dir.path().join("worker.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
# Log the GPU this trial was given, then train it on the CPU (spec path follows --spec).
spec=''; prev=''
for a in \"$@\"; do [ \"$prev\" = --spec ] && spec=\"$a\"; prev=\"$a\"; done
cpu=\"$spec.cpu.yaml\"
sed 's/^device: cuda/device: cpu/' \"$spec\" > \"$cpu\"
echo \"start $CUDA_VISIBLE_DEVICES $(date +%s%N) $(basename \"$spec\")\" >> {ledger}
for a in \"$@\"; do [ \"$a\" = \"$spec\" ] && a=\"$cpu\"; set -- \"$@\" \"$a\"; shift; done
\"{worker}\" \"$@\"; rc=$?
echo \"end $CUDA_VISIBLE_DEVICES $(date +%s%N) $(basename \"$spec\")\" >> {ledger}
exit $rc
",
            ledger = ledger.display(),
            worker = worker().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: packed }}
spec:
  dataset: synthetic://lesion?n=40&size=64&seed=3&val=8
  model: {{ inputSize: 64, downsample: 8 }}
  variants: [D4]
  hyper: {{ batchSize: 4 }}
  search: {{ lambdaRate: {{ type: list, values: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0] }} }}
  steps: 4
  parallelism: 8
  device: cuda
  resources: {{ cpu: '1', memory: 1Gi, gpus: 1, trialsPerGpu: 2 }}
  store: file://{}/store
",
        dir.path().display()
    );
    let file = dir.path().join("packed.yaml");
    std::fs::write(&file, text).unwrap();
    let workdir = dir.path().join("work");
    let out = orchestra()
        .args(["--progress-every", "0.5", "--jobs", "8"])
        .arg(&file)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--worker")
        .arg(&wrapper)
        .env("CUDA_VISIBLE_DEVICES", "7,9")
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("6 of 6 trials succeeded"), "{stdout}");
    let events: Vec<(bool, String, u128)> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0] == "start", f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(events.len(), 12, "a start and an end per trial: {events:?}");
    let mut ordered = events.clone();
    ordered.sort_by_key(|e| (e.2, e.0));
    for gpu in ["7", "9"] {
        assert!(
            events.iter().any(|e| e.1 == gpu),
            "GPU {gpu} never used: {events:?}"
        );
        let mut running = 0i32;
        for (start, g, _) in &ordered {
            if g == gpu {
                running += if *start { 1 } else { -1 };
                assert!(running <= 2, "three trials on GPU {gpu} at once: {ordered:?}");
            }
        }
    }
    assert!(events.iter().all(|e| e.1 == "7" || e.1 == "9"), "{events:?}");
}
