//! Data-parallel training under `mpirun` (feature `mpi`; Open MPI installed by `make setup`)
//! and over plain TCP (ranks started with the rendezvous variables, as on Kubernetes): two
//! ranks equal one process with twice the batch, a killed rank fails the trial cleanly and a
//! restart resumes from the checkpoint on S3 to the uninterrupted result, and a hung rank is
//! named by the others within the timeout.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tiny_spec;
use orchestra_api::{TrialSpec, Variant};
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use tch::{Kind, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_orchestra-worker");

/// The reason MPI tests are ignored (counted as such, with this reason) in a build without MPI.
/// `make test` enables the feature where `make setup` installed Open MPI.
macro_rules! needs_mpi {
    ($item:item) => {
        #[cfg_attr(
            not(feature = "mpi"),
            ignore = "orchestra-worker built without the `mpi` feature (Open MPI absent; make setup installs it)"
        )]
        $item
    };
}

/// In a build with MPI, mpirun must be there: its absence is a broken setup, not a skip.
fn require_mpirun() {
    if let Err(e) = Command::new("mpirun").arg("--version").output() {
        panic!("built with the `mpi` feature but mpirun cannot run ({e}); install Open MPI (make setup)");
    }
}

fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &ranks.to_string(), "--oversubscribe"])
        // Open MPI refuses root (CI containers) unless told; one thread per rank on 2 cores.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("ORCHESTRA_THREADS", "1")
        .arg(BIN)
        .args(args);
    c
}

fn write_spec(dir: &Path, spec: &TrialSpec) -> String {
    let path = dir.join(format!("{}.yaml", spec.trial));
    std::fs::write(&path, serde_yaml::to_string(spec).unwrap()).unwrap();
    path.display().to_string()
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn train_alone(spec_path: &str) {
    let out = Command::new(BIN)
        .args(["train", "--spec", spec_path, "--no-progress", "--dist", "single"])
        .env("ORCHESTRA_THREADS", "1")
        .output()
        .unwrap();
    check(out, &format!("train {spec_path}"));
}

fn final_weights(store: &str, trial: &str) -> BTreeMap<String, Tensor> {
    let ts = TrialStore::new(Store::open(store).unwrap(), "tests", trial);
    ts.load_latest().unwrap().unwrap().weights.into_iter().collect()
}

/// The largest absolute difference per network group (c, g, q, s, d), over weights and
/// BatchNorm statistics.
fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> BTreeMap<String, f64> {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut out = BTreeMap::new();
    for (name, t) in a {
        let d = (t - &b[name]).abs().max().to_kind(Kind::Double).double_value(&[]);
        let group = name.split('.').next().unwrap().to_string();
        let e = out.entry(group).or_insert(0.0f64);
        *e = e.max(d);
    }
    out
}

/// Trains "two-ranks" with `launch` (2 ranks of batch 4) and, in single processes, batch 8
/// in 2 micro-batches and batch 8 normalised as one; checks the first equals the second and
/// differs from the third.
fn check_two_ranks_equal_micro_batches(launch: impl FnOnce(&Path, &str)) {
    check_two_ranks_equal_micro_batches_of(|spec| spec, launch);
}

/// The same for the spec `shape` makes of the tiny D4 one (a 3D trial, say).
fn check_two_ranks_equal_micro_batches_of(
    shape: impl FnOnce(TrialSpec) -> TrialSpec,
    launch: impl FnOnce(&Path, &str),
) {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let base = shape(TrialSpec {
        steps: 3,
        checkpoint_every: 0,
        ..tiny_spec(Variant::D4, &store, "")
    });
    let ranks = TrialSpec {
        trial: "two-ranks".into(),
        world_size: 2,
        hyper: orchestra_api::Hyper {
            batch_size: 4,
            ..base.hyper.clone()
        },
        ..base.clone()
    };
    // One process, batch 8 in 2 micro-batches: each micro-batch is normalised by its own
    // statistics, as each rank is (BatchNorm is per rank, not synchronised).
    let micro = TrialSpec {
        trial: "one-process".into(),
        hyper: orchestra_api::Hyper {
            batch_size: 8,
            micro_batches: 2,
            ..base.hyper.clone()
        },
        ..base.clone()
    };
    // The control: batch 8 normalised as one batch differs, so the comparison can fail.
    let whole = TrialSpec {
        trial: "whole-batch-norm".into(),
        hyper: orchestra_api::Hyper {
            batch_size: 8,
            ..base.hyper.clone()
        },
        ..base.clone()
    };
    launch(dir.path(), &write_spec(dir.path(), &ranks));
    train_alone(&write_spec(dir.path(), &micro));
    train_alone(&write_spec(dir.path(), &whole));

    let a = final_weights(&store, "two-ranks");
    let same = max_diff(&a, &final_weights(&store, "one-process"));
    eprintln!("2 ranks vs 1 process in 2 micro-batches, max |difference| per group: {same:?}");
    for g in ["c", "g", "q", "s", "d"] {
        assert!(same.contains_key(g), "group {g} missing from {same:?}");
    }
    for (group, d) in &same {
        assert!(*d < 1e-5, "group {group} differs by {d} after 3 steps");
    }
    let control = max_diff(&a, &final_weights(&store, "whole-batch-norm"));
    eprintln!("2 ranks vs 1 process with whole-batch BatchNorm: {control:?}");
    assert!(
        control["s"] > 1e-4,
        "per-rank BatchNorm should differ from whole-batch BatchNorm: {control:?}"
    );
}

/// Ranks started as the operator's Indexed Job starts them: the rendezvous variables.
fn launch_tcp(spec: &str) {
    let port = orchestra_worker::dist::tcp::free_master_port_for_tests();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new(BIN)
                .args(["train", "--spec", spec, "--no-progress", "--dist", "tcp"])
                .env("ORCHESTRA_THREADS", "1")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("WORLD_SIZE", "2")
                .env("RANK", rank.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        check(child.wait_with_output().unwrap(), &format!("tcp rank {rank}"));
    }
}

needs_mpi! {
#[test]
fn two_mpi_ranks_train_like_one_process_with_twice_the_batch() {
    require_mpirun();
    check_two_ranks_equal_micro_batches(|_, spec| {
        let out = mpirun(2, &["train", "--spec", spec, "--no-progress", "--dist", "mpi"])
            .output()
            .unwrap();
        check(out, "mpirun -n 2 train");
    });
}
}

#[test]
fn two_tcp_ranks_without_mpirun_train_like_one_process_with_twice_the_batch() {
    check_two_ranks_equal_micro_batches(|_, spec| launch_tcp(spec));
}

/// A 3D trial (patches of synthetic hearts, the 3D U-Net) shares its patches out between ranks
/// exactly as micro-batches of one process do.
#[test]
fn two_tcp_ranks_train_a_3d_trial_like_one_process_with_twice_the_batch() {
    check_two_ranks_equal_micro_batches_of(
        |spec| TrialSpec {
            dataset: "synthetic://heart3d?n=10&sides=16x40x40&seed=3&val=2".into(),
            model: orchestra_api::ModelSpec {
                downsample: Some(8),
                code_channels: Some(4),
                patch: Some(vec![16, 32, 32]),
                ..orchestra_api::ModelSpec::new(orchestra_api::Preset::Small, 32, 3)
            },
            ..spec
        },
        |_, spec| launch_tcp(spec),
    );
}

/// The code pre-training (`hyper.codePretrainSteps`) averages its gradients and BatchNorm
/// statistics over ranks as the trial's steps do.
#[test]
fn two_tcp_ranks_pre_train_the_code_like_one_process_with_twice_the_batch() {
    check_two_ranks_equal_micro_batches_of(
        |mut spec| {
            spec.hyper.code_pretrain_steps = 4;
            spec
        },
        |_, spec| launch_tcp(spec),
    );
}

/// The pid of the process started by `parent` (mpirun) that has `OMPI_COMM_WORLD_RANK=rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let is_rank = env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4 (after the parenthesised command name) is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if is_rank && ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("mpirun did not exit within {limit:?} after a rank died");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of a failed run's stderr that say what happened.
fn excerpt(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| l.contains("error") || l.contains("rank 1") || l.contains("signal"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

needs_mpi! {
#[test]
fn a_killed_rank_fails_the_trial_and_the_restart_resumes_from_s3() {
    require_mpirun();
    use orchestra_store::moto::{create_bucket, point_at, start_moto, SERIAL};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "gangs");
    point_at(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let spec = |trial: &str| TrialSpec {
        world_size: 2,
        steps: 40,
        checkpoint_every: 4,
        hyper: orchestra_api::Hyper {
            batch_size: 4,
            dis_warmup_steps: 2,
            ..Default::default()
        },
        ..tiny_spec(Variant::D2, "s3://gangs/runs", trial)
    };
    let args = |path: &str| -> Vec<String> {
        [
            "train",
            "--spec",
            path,
            "--no-progress",
            "--dist",
            "mpi",
            "--collective-timeout",
            "20",
        ]
        .map(String::from)
        .to_vec()
    };

    // The uninterrupted twin.
    let twin = write_spec(dir.path(), &spec("uninterrupted"));
    check(
        mpirun(2, &as_str(&args(&twin))).output().unwrap(),
        "uninterrupted run",
    );

    // The victim: rank 1 is killed once the first checkpoint is in the store.
    let victim = write_spec(dir.path(), &spec("killed"));
    let mut run = mpirun(2, &as_str(&args(&victim)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ts = TrialStore::new(Store::open("s3://gangs/runs").unwrap(), "tests", "killed");
    let started = Instant::now();
    while ts.latest_step().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(run.id(), 1).expect("rank 1 is running");
    // SAFETY: plain kill(2) of a child process of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let status = wait_with_timeout(&mut run, Duration::from_secs(60));
    let stderr = stderr_of(run);
    eprintln!("after SIGKILL of rank 1:\n{}", excerpt(&stderr));
    assert!(!status.success(), "the gang must fail when a rank dies");
    assert!(stderr.contains("rank 1"), "the failure names rank 1:\n{stderr}");
    let at = ts.latest_step().unwrap().expect("a checkpoint survived");
    assert!(at < 40, "killed at step {at}, before the end");
    assert!(ts.store.get(&ts.keys.result()).unwrap().is_none());

    // Restarted as a whole gang, it resumes from the checkpoint and ends where the twin did.
    let mut again = args(&victim);
    again.push("--resume".into());
    check(mpirun(2, &as_str(&again)).output().unwrap(), "resumed run");
    let read = |trial: &str| -> orchestra_api::TrialResult {
        let ts = TrialStore::new(Store::open("s3://gangs/runs").unwrap(), "tests", trial);
        serde_json::from_slice(&ts.store.get(&ts.keys.result()).unwrap().unwrap()).unwrap()
    };
    let (resumed, straight) = (read("killed"), read("uninterrupted"));
    assert_eq!(resumed.steps, 40);
    assert_eq!(resumed.scores, straight.scores);
    assert_eq!(resumed.rate, straight.rate);
    // Every line, but the evaluations' training seconds (wall-clock, different in every run).
    let losses = |trial: &str| -> Vec<serde_json::Value> {
        let ts = TrialStore::new(Store::open("s3://gangs/runs").unwrap(), "tests", trial);
        String::from_utf8(ts.store.get(&ts.keys.metrics()).unwrap().unwrap().to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().map(|o| o.remove("trainSeconds"));
                v
            })
            .collect()
    };
    assert_eq!(
        losses("killed"),
        losses("uninterrupted"),
        "every step's losses repeat exactly"
    );
    drop(moto);
}
}

needs_mpi! {
#[test]
fn a_hung_rank_is_named_within_the_timeout() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let spec = TrialSpec {
        world_size: 2,
        steps: 200,
        checkpoint_every: 0,
        hyper: orchestra_api::Hyper {
            batch_size: 4,
            ..Default::default()
        },
        ..tiny_spec(Variant::D1, &format!("file://{}", dir.path().display()), "hang")
    };
    let path = write_spec(dir.path(), &spec);
    let mut run = mpirun(
        2,
        &[
            "train",
            "--spec",
            &path,
            "--no-progress",
            "--dist",
            "mpi",
            "--collective-timeout",
            "3",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Let it train, then freeze rank 1 (SIGSTOP: alive but silent, the worst case).
    std::thread::sleep(Duration::from_secs(3));
    let pid = rank_pid(run.id(), 1).expect("rank 1 is running");
    // SAFETY: plain kill(2) of a child process of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let started = Instant::now();
    let status = wait_with_timeout(&mut run, Duration::from_secs(60));
    let waited = started.elapsed();
    // SAFETY: as above; lets a stopped process that mpirun signalled terminate.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let stderr = stderr_of(run);
    eprintln!("after SIGSTOP of rank 1 ({waited:?}):\n{}", excerpt(&stderr));
    assert!(!status.success());
    assert!(
        stderr.contains("rank 0:") && stderr.contains("waiting for rank 1"),
        "rank 0 names rank 1 after {waited:?}:\n{stderr}"
    );
}
}
