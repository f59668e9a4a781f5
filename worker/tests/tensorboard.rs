//! TensorBoard reads what a trial wrote: its own reader (the `tensorboard` package's
//! `EventAccumulator`, installed by `make setup`) finds every step's losses and every
//! evaluation's scores in the trial's folder, equal to `metrics.jsonl`'s, across a run stopped
//! at a checkpoint and resumed (two event files, read as one run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tiny_spec;
use orchestra_api::Variant;
use orchestra_worker::train::{run_trial, Outcome, RunOptions};
use serde_json::Value;

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}))
"#;

/// The setup's Python, if it has the `tensorboard` package.
fn python_with_tensorboard() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// Each (step, value) of `tag` as TensorBoard read it.
fn series(read: &Value, tag: &str) -> Vec<(u64, f64)> {
    read[tag]
        .as_array()
        .unwrap_or_else(|| panic!("TensorBoard found no {tag}: {read}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// Equal as the float32 an event holds.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn tensorboard_reads_every_step_and_evaluation_a_trial_wrote() {
    let Some(python) = python_with_tensorboard() else {
        eprintln!("SKIPPED: .venv has no tensorboard package (make setup installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tiny_spec(Variant::D4, &format!("file://{}", dir.path().display()), "tb");
    spec.eval_every = 4;
    let paused = RunOptions {
        stop_after: Some(5),
        ..Default::default()
    };
    assert!(matches!(
        run_trial(&spec, &paused).unwrap(),
        Outcome::Paused { step: 5, .. }
    ));
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    assert!(matches!(run_trial(&spec, &resume).unwrap(), Outcome::Finished(_)));

    let trial = dir.path().join("tests/tb");
    let files: Vec<String> = std::fs::read_dir(&trial)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(files.len(), 2, "one event file per run: {files:?}");

    let out = Command::new(python)
        .args(["-c", READER])
        .arg(&trial)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();

    let lines: Vec<Value> = std::fs::read_to_string(trial.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|l| Some((l["step"].as_u64()?, l.get("loss_seg")?.as_f64()?)))
        .collect();
    let evals: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|l| Some((l["step"].as_u64()?, l.get("eval")?["scores"]["dice"].as_f64()?)))
        .collect();
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(evals.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 8]);

    for (tag, want) in [("loss/seg", &steps), ("eval/dice", &evals)] {
        let got = series(&read, tag);
        assert_eq!(got.len(), want.len(), "{tag}: {got:?} against {want:?}");
        for ((gs, gv), (ws, wv)) in got.iter().zip(want.iter()) {
            assert!(
                gs == ws && same(*gv, *wv),
                "{tag}: ({gs}, {gv}) against ({ws}, {wv})"
            );
        }
    }
    let bpp = series(&read, "eval/bpp");
    assert_eq!(bpp.iter().map(|p| p.0).collect::<Vec<_>>(), vec![4, 8]);
    assert!(bpp.iter().all(|p| p.1 > 0.0 && p.1 < 1.0), "{bpp:?}");
    let speed = series(&read, "train/images_per_second");
    assert!(speed.len() == 8 && speed.iter().all(|p| p.1 > 0.0), "{speed:?}");
}
