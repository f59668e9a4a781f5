//! A compressing trial's trained sources: the finished trial it starts from (`hyper.warmStart`)
//! and the one whose predictions it learns from (`hyper.distill`), each read from its store as
//! the trial that made it ran: its Experiment's spec, its swept values, its variant and its
//! latest checkpoint. What each cost to train is kept for the trial's result.

use orchestra_api::{ModelSource, TeacherCost, TrialSpec, Variant};
use orchestra_store::layout::{self, ExperimentKeys};
use tch::Device;

use crate::nets::Model;
use crate::store::checkpoint::TrialStore;
use crate::store::Store;

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {reason}")]
pub struct SourceError {
    pub source_name: String,
    pub reason: String,
}

/// A finished trial's model, loaded.
pub struct SourceModel {
    pub source: ModelSource,
    pub model: Model,
    pub cost: TeacherCost,
}

/// Loads every source a trial reads (none for D1), after the trial's own model is built (so
/// that building them draws nothing from the generator the trial's initial weights came from).
pub fn load_sources(
    spec: &TrialSpec,
    channels: usize,
    classes: usize,
    device: Device,
) -> Result<Vec<SourceModel>, SourceError> {
    spec.hyper
        .model_sources(spec.variant)
        .into_iter()
        .map(|source| load_source(spec, source, channels, classes, device))
        .collect()
}

fn load_source(
    spec: &TrialSpec,
    source: ModelSource,
    channels: usize,
    classes: usize,
    device: Device,
) -> Result<SourceModel, SourceError> {
    let (store_uri, experiment, trial) = source.locate(&spec.store, &spec.experiment);
    let setup = |reason: String| SourceError {
        source_name: source.to_string(),
        reason,
    };
    let store = Store::open(store_uri).map_err(|e| setup(e.to_string()))?;
    let ts = TrialStore::new(store, experiment, trial);
    let result = layout::read_result(&ts.store, &ts.keys)
        .map_err(|e| setup(e.to_string()))?
        .ok_or_else(|| {
            setup(format!(
                "trial {trial} has not finished (no result in {store_uri})"
            ))
        })?;
    let source_spec = source_spec(&ts, store_uri, (experiment, trial), result.variant).map_err(setup)?;
    let config = crate::nets::config::resolve(&source_spec.model, channels, classes);
    let ckpt = ts
        .load_latest()
        .map_err(|e| setup(e.to_string()))?
        .ok_or_else(|| setup(format!("trial {trial} has a result but no checkpoint")))?;
    let model = Model::new(config, result.variant, device);
    model.load_weights(&ckpt.weights).map_err(|e| {
        setup(format!(
            "its weights at step {} do not fit this dataset: {e}",
            ckpt.step
        ))
    })?;
    let cost = TeacherCost {
        source: source.to_string(),
        variant: result.variant,
        steps: result.steps,
        train_seconds: result.timings.train_seconds,
    };
    Ok(SourceModel { source, model, cost })
}

/// The spec a finished trial ran with: the one it stored beside its result, or for a trial
/// finished before trials stored theirs, its Experiment's spec and its swept values.
fn source_spec(
    ts: &TrialStore,
    store_uri: &str,
    (experiment, trial): (&str, &str),
    variant: Variant,
) -> Result<TrialSpec, String> {
    if let Some(text) = ts.store.get(&ts.keys.spec()).map_err(|e| e.to_string())? {
        return orchestra_api::parse_yaml(&String::from_utf8_lossy(&text), &ts.keys.spec())
            .map_err(|e| e.to_string());
    }
    let exp = layout::read_experiment(&ts.store, experiment)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "neither {} nor {} in {store_uri}: nothing says which model it is",
                ts.keys.spec(),
                ExperimentKeys::new(experiment).spec()
            )
        })?;
    let params = layout::read_params(&ts.store, &ts.keys).map_err(|e| e.to_string())?;
    Ok(exp.spec.trial_spec(trial, experiment, variant, &params))
}

/// What a warm start copied: tensors whose name and shape match, and those left as initialised.
#[derive(Debug, PartialEq)]
pub struct WarmStart {
    pub copied: usize,
    pub kept: Vec<String>,
}

/// Copies into `model` every tensor of `from` with the same name and shape (weights and
/// BatchNorm statistics); the rest keep their initial values.
pub fn warm_start(model: &Model, from: &Model) -> WarmStart {
    let source = from.named_variables();
    let mut report = WarmStart {
        copied: 0,
        kept: Vec::new(),
    };
    tch::no_grad(|| {
        for (name, var) in model.named_variables() {
            match source.iter().find(|(n, t)| *n == name && t.size() == var.size()) {
                Some((_, t)) => {
                    var.shallow_clone().copy_(t);
                    report.copied += 1;
                }
                None => report.kept.push(name),
            }
        }
    });
    report
}
