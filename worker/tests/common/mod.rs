//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use orchestra_api::{Hyper, ModelSpec, Preset, TrialSpec, Variant};
use orchestra_worker::data::Dataset;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, Trainer};

/// A small, fast trial on synthetic data: 64px images, the small preset.
pub fn tiny_spec(variant: Variant, store: &str, trial: &str) -> TrialSpec {
    TrialSpec {
        experiment: "tests".into(),
        trial: trial.into(),
        variant,
        dataset: "synthetic://lesion?n=72&size=64&seed=11&val=16".into(),
        // 4 x 8 x 8 = 256 bits at 64px: enough for the blobs to show in a few dozen steps.
        model: ModelSpec {
            downsample: Some(8),
            code_channels: Some(4),
            ..ModelSpec::new(Preset::Small, 64, 2)
        },
        hyper: Hyper {
            batch_size: 8,
            dis_warmup_steps: 2,
            ..Hyper::default()
        },
        steps: 8,
        seed: 5,
        world_size: 1,
        store: store.into(),
        checkpoint_every: 4,
        keep_checkpoints: 2,
        eval_every: 0,
        device: Default::default(),
    }
}

/// A single-process trainer for `spec`, its dataset opened.
pub fn trainer(spec: TrialSpec) -> Trainer {
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    Trainer::new(spec, data).unwrap()
}

/// Every variable of the trainer's model (weights and BatchNorm statistics), copied.
pub fn snapshot(t: &Trainer) -> std::collections::BTreeMap<String, tch::Tensor> {
    t.model
        .named_variables()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect()
}

/// Runs `spec` for `after` steps and stops (an interruption), then resumes it to the end; the
/// finished trial's result.
pub fn interrupted_then_resumed(spec: &TrialSpec, after: u64) -> orchestra_api::TrialResult {
    let stop = RunOptions {
        stop_after: Some(after),
        ..Default::default()
    };
    match run_trial(spec, &stop).unwrap() {
        Outcome::Paused { step, .. } => assert_eq!(step, after, "paused elsewhere"),
        Outcome::Finished(_) => panic!("finished instead of stopping after {after} steps"),
    }
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    match run_trial(spec, &resume).unwrap() {
        Outcome::Finished(r) => *r,
        Outcome::Paused { step, .. } => panic!("the resumed run paused at step {step}"),
    }
}

/// `../shared/data` beside the repository (or ORCHESTRA_SHARED_DATA), if present.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("ORCHESTRA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../shared/data"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent; tests on real data are skipped",
            dir.display()
        );
        None
    }
}

/// The crate's folder, as cargo says when it runs the test: the path compiled in would be the
/// one of whichever checkout last built this binary in a shared target folder.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// Trains `t` in rounds of `every` steps until `reached` holds, at most `budget` steps, and
/// returns the metrics of every step it took. What a few dozen steps learn depends on the CPU
/// kernels libtorch dispatches to (AVX-512, AVX2, the plain ones) and on the thread count, so a
/// test whose precondition is "the model learned something" states that condition and trains
/// until it holds, instead of trusting a step count that happened to suffice on one machine.
pub fn train_until(
    t: &mut orchestra_worker::train::Trainer,
    budget: usize,
    every: usize,
    condition: &str,
    mut reached: impl FnMut(
        &mut orchestra_worker::train::Trainer,
        &[orchestra_worker::train::StepMetrics],
    ) -> bool,
) -> Vec<orchestra_worker::train::StepMetrics> {
    let mut steps = Vec::new();
    while steps.len() < budget {
        for _ in 0..every.min(budget - steps.len()) {
            steps.push(t.train_step().unwrap());
        }
        if reached(t, &steps) {
            eprintln!("fixture: {condition} after {} steps", steps.len());
            return steps;
        }
    }
    panic!(
        "fixture: {condition} not reached within {budget} steps (ATEN_CPU_CAPABILITY={:?}, {} threads)",
        std::env::var("ATEN_CPU_CAPABILITY").ok(),
        tch::get_num_threads()
    );
}
