//! The trial spec: everything one training run needs, handed to every worker of a trial
//! (a mounted ConfigMap on Kubernetes, a file locally).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::training::{is_zero, DeviceKind, Hyper, ModelSpec, Variant};
use crate::trial_result::{RungScore, TrialResult};
use crate::validation::{Problems, ValidationError};

/// One trial: a variant, its hyperparameters, its data, its budget and where it writes.
/// Also the spec of the `Trial` resource the operator creates for each candidate.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "orchestra.dev",
    version = "v1alpha1",
    kind = "Trial",
    namespaced,
    status = "TrialStatus",
    shortname = "otrial",
    printcolumn = r#"{"name":"Variant","type":"string","jsonPath":".spec.variant"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Attempts","type":"integer","jsonPath":".status.attempts"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.lastCheckpointStep"}"#,
    printcolumn = r#"{"name":"Target","type":"integer","jsonPath":".status.targetStep"}"#,
    printcolumn = r#"{"name":"bpp","type":"number","jsonPath":".status.bpp"}"#,
    printcolumn = r#"{"name":"Dice","type":"number","jsonPath":".status.dice"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrialSpec {
    /// Experiment name: the first component of the store layout.
    pub experiment: String,
    /// Trial name, unique within the experiment.
    pub trial: String,
    pub variant: Variant,
    /// Dataset URI: `synthetic://lesion?n=512&size=128&seed=7`, `file:///data/isic2017/train`.
    pub dataset: String,
    pub model: ModelSpec,
    #[serde(default)]
    pub hyper: Hyper,
    /// Training steps (one C+S update and one D update each).
    pub steps: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_world_size")]
    pub world_size: u32,
    /// Store URI prefix for checkpoints, metrics and results: `file:///runs`, `memory://`.
    pub store: String,
    /// Steps between checkpoints (0: only at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept; older ones are deleted once a newer one is complete.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: u32,
    /// Steps between evaluations on the validation split (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default)]
    pub device: DeviceKind,
}

fn default_world_size() -> u32 {
    1
}
fn default_checkpoint_every() -> u64 {
    100
}
fn default_keep_checkpoints() -> u32 {
    3
}

impl TrialSpec {
    /// Parses a trial spec from YAML (JSON is YAML too), naming the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<TrialSpec, ValidationError> {
        let spec: TrialSpec = crate::validation::parse_yaml(text, origin)?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Checks every rule the worker relies on, reporting all problems at once.
    pub fn validate(&self, origin: &str) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "experiment", &self.experiment);
        check_name(&mut p, "trial", &self.trial);
        if self.dataset.trim().is_empty() {
            p.push("dataset", &self.dataset, "must be a dataset URI");
        }
        if self.store.trim().is_empty() {
            p.push("store", &self.store, "must be a store URI such as file:///runs");
        }
        for (field, uri) in [("store", &self.store), ("dataset", &self.dataset)] {
            if let Some(reason) = crate::uri_credentials(uri) {
                p.push(field, uri, crate::redact::credentials_refused(reason));
            }
        }
        if self.steps == 0 {
            p.push("steps", self.steps, "must be at least 1");
        }
        if self.world_size == 0 {
            p.push("worldSize", self.world_size, "must be at least 1");
        }
        if self.keep_checkpoints == 0 {
            p.push("keepCheckpoints", self.keep_checkpoints, "must be at least 1");
        }
        self.model.check(&mut p);
        self.hyper.check(&mut p);
        p.into_result(origin)
    }
}

pub(crate) fn check_name(p: &mut Problems, field: &str, value: &str) {
    // Names become object-store path components and Kubernetes names: DNS-1123 labels.
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        p.push(
            field,
            value,
            "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
        );
    }
}

/// Lifecycle of a trial, as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum TrialPhase {
    /// Created, its workers not started yet.
    #[default]
    Pending,
    /// Workers started (or starting).
    Running,
    /// The latest attempt failed; the planner restarts it or gives up.
    AttemptFailed,
    /// Reached its step target, a rung below `steps`, and wrote its rung record there: the
    /// search promotes it (it continues from that checkpoint) or stops it early.
    Paused,
    /// `result.json` is in the store.
    Succeeded,
    /// Out of attempts.
    Failed,
    /// Stopped because the Experiment ended, or early by the search at a rung (its status
    /// says which, and the step it reached).
    Stopped,
}

impl TrialPhase {
    /// Whether the trial will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TrialPhase::Succeeded | TrialPhase::Failed | TrialPhase::Stopped
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrialStatus {
    pub phase: TrialPhase,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// RFC 3339 times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_step: Option<u64>,
    /// Headline figures, for `kubectl get trials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dice: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TrialResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The step the latest gang trains to: a rung of the search, or `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_step: Option<u64>,
    /// Gangs started by a promotion (they do not count as attempts).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub promotions: u32,
    /// The rungs of the search the trial reached, lowest first, each with its scores there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungScore>,
}
