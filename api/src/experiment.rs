//! The Experiment: a sweep over variants and hyperparameters, run as Trials, ranked on a
//! leaderboard of bits per pixel against Dice.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Sampling};
use crate::model_source::ModelSource;
use crate::sweepable::{sweepable, Sweepable, SWEEPABLE};
use crate::training::{is_zero, DeviceKind, Hyper, ModelSpec, Variant};
use crate::trial_spec::TrialSpec;
use crate::validation::{Problem, Problems, ValidationError};

/// What to sweep and how to run it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "orchestra.dev",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    status = "ExperimentStatus",
    shortname = "oexp",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Done","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Winner","type":"string","jsonPath":".status.best.trial"}"#,
    printcolumn = r#"{"name":"Best Dice","type":"number","jsonPath":".status.best.dice"}"#,
    printcolumn = r#"{"name":"bpp","type":"number","jsonPath":".status.best.bpp"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// What the API server can check without the operator (kubectl apply refuses it, naming the
// field); `validate` checks the same and what CEL cannot say. `admission_cases.yaml` in the tests
// lists which is caught where.
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.store.matches('^(file:///|memory://|(s3|gs|az)://[^/])')", "fieldPath": ".store",
      "message": "must be a URI: file:///path, s3://bucket/prefix, gs://bucket, az://container or memory://" },
    { "rule": "self.dataset.contains('://')", "fieldPath": ".dataset",
      "message": "must be a dataset URI (synthetic://, file://, s3://)" },
    { "rule": "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus == 0 || (has(self.device) && self.device == 'cuda')",
      "fieldPath": ".device", "message": "resources.gpus > 0 needs device: cuda" },
    { "rule": "!has(self.resources) || !has(self.resources.trialsPerGpu) || self.resources.trialsPerGpu <= 1 || (has(self.device) && self.device == 'cuda' && has(self.resources.gpus) && self.resources.gpus == 1 && (!has(self.workersPerTrial) || self.workersPerTrial == 1))",
      "fieldPath": ".resources.trialsPerGpu",
      "message": "packing trials onto a GPU needs device: cuda, resources.gpus: 1 and workersPerTrial: 1" },
    { "rule": "!has(self.algorithm) || !has(self.algorithm.minSteps) || self.algorithm.minSteps < self.steps",
      "fieldPath": ".algorithm.minSteps", "message": "must be below spec.steps" }
]))]
pub struct ExperimentSpec {
    /// Dataset URI, split included (`?val=N`): see the worker's dataset URIs.
    pub dataset: String,
    pub model: ModelSpec,
    /// Variants to train (D1-D4), each once.
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub variants: Vec<Variant>,
    /// Hyperparameters shared by every trial; swept ones are overridden per trial.
    #[serde(default)]
    pub hyper: Hyper,
    /// The search space: parameter name to its values. Sweepable: lr, lrCritic, beta1,
    /// lrMinRatio, batchSize, wDis, disWarmupSteps, dClip, lambdaRate, rateWarmupSteps,
    /// codePretrainSteps, reconstructionWeight, distill.weight (with hyper.distill), lrBitModel,
    /// model.codeChannels, model.downsample, model.decoderWidth, model.encoderWidth (the integer
    /// ones, batchSize, disWarmupSteps, rateWarmupSteps, codePretrainSteps and the model's, by
    /// list or intRange). A parameter that no variant of the Experiment uses is refused, and every
    /// value must make a valid trial.
    #[serde(default)]
    pub search: BTreeMap<String, SearchSpace>,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Training steps per trial.
    #[schemars(range(min = 1))]
    pub steps: u64,
    /// Base seed; every trial gets the same seed so that variants compare on equal terms.
    #[serde(default)]
    pub seed: u64,
    /// Data-parallel workers per trial.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub workers_per_trial: u32,
    #[serde(default)]
    pub resources: Resources,
    /// Trials running at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub parallelism: u32,
    /// Upper bound on the number of trials (default: every candidate of the search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_trials: Option<u32>,
    /// Trials that may fail (after all their attempts) before the Experiment fails.
    #[serde(default)]
    pub max_failed_trials: u32,
    /// Attempts per trial, the first included; restarts resume from the latest checkpoint.
    #[serde(default = "three")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// Store URI for checkpoints and results (`file:///runs`, `s3://bucket/prefix`).
    pub store: String,
    #[serde(default)]
    pub objective: Objective,
    #[serde(default = "hundred")]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default)]
    pub device: DeviceKind,
    /// Kubernetes: the worker image (default: the operator's `--worker-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kubernetes: a Secret whose keys become the workers' environment (store credentials such
    /// as AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_secret: Option<String>,
    /// Kubernetes: node selector of the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes: tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Kubernetes: seconds a trial's gang may wait for all its pods to be scheduled before it
    /// is reported as unschedulable (in status and events).
    #[serde(default = "gang_timeout")]
    pub gang_timeout_seconds: u64,
    /// Delete the Experiment's objects in the store (checkpoints, results, leaderboard) when
    /// the Experiment is deleted. Off by default: results outlive the resource.
    #[serde(default)]
    pub cleanup_store: bool,
    /// Pause the Experiment: running gangs are stopped at once (each trial loses at most
    /// `checkpointEvery` steps; the attempt is not counted) and nothing new starts; `false`
    /// again resumes every trial from its latest checkpoint. Everything else is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Kubernetes: the Kueue LocalQueue of the trial gangs. Each gang's Job is created
    /// suspended with the `kueue.x-k8s.io/queue-name` label; Kueue admits it (unsuspends it)
    /// when the queue has quota. The operator never sets `suspend` on an existing Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub queue_name: Option<String>,
}

fn gang_timeout() -> u64 {
    600
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn hundred() -> u64 {
    100
}

/// Values one parameter takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum SearchSpace {
    /// Exactly these values.
    List { values: Vec<f64> },
    /// Uniform in [min, max]; grid search takes `points` evenly spaced values.
    Uniform {
        min: f64,
        max: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        points: Option<u32>,
    },
    /// Log-uniform in [min, max] (both > 0); grid search takes `points` log-spaced values.
    LogUniform {
        min: f64,
        max: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        points: Option<u32>,
    },
    /// Integers min, min + step, ... up to max inclusive.
    IntRange {
        min: i64,
        max: i64,
        #[serde(default = "int_step")]
        step: i64,
    },
}

fn int_step() -> i64 {
    1
}

impl SearchSpace {
    /// How many values grid search takes from the space, counted without listing them (None
    /// for a malformed integer range, which validation reports on its own).
    pub fn grid_len(&self) -> Option<u64> {
        match self {
            SearchSpace::List { values } => Some(values.len() as u64),
            SearchSpace::Uniform { points, .. } | SearchSpace::LogUniform { points, .. } => {
                Some(points.unwrap_or(1).max(1) as u64)
            }
            SearchSpace::IntRange { min, max, step } => {
                (min <= max && *step >= 1).then(|| (max.abs_diff(*min) / *step as u64).saturating_add(1))
            }
        }
    }
}

/// The most candidates one variant of an Experiment may run (its space's size, or `maxTrials`
/// when that is smaller): the candidates taken are kept in memory, by the operator too, so a
/// sweep of billions of trials is refused at validation. A larger space under a small
/// `maxTrials` is fine: candidates are generated as they are taken.
pub const MAX_CANDIDATES_PER_VARIANT: u64 = 100_000;

impl JsonSchema for SearchSpace {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SearchSpace".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Values of one parameter: {type: list, values}, {type: uniform, min, max, points?}, {type: logUniform, min, max, points?} or {type: intRange, min, max, step?}.",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": { "type": "string", "enum": ["list", "uniform", "logUniform", "intRange"] },
                "values": { "type": "array", "items": { "type": "number" } },
                "min": { "type": "number" },
                "max": { "type": "number" },
                "points": { "type": "integer", "minimum": 0 },
                "step": { "type": "integer" }
            }
        })
    }
}

/// Resources of one worker pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (Kubernetes quantity, e.g. "2" or "500m").
    pub cpu: String,
    /// Memory (Kubernetes quantity, e.g. "4Gi").
    pub memory: String,
    /// NVIDIA GPUs per worker.
    #[serde(default)]
    pub gpus: u32,
    /// Trials packed onto one GPU as separate processes (small trials use a fraction of a large
    /// GPU). The local runner pins up to this many single-worker trials to each GPU it sees; on
    /// Kubernetes each trial pod requests one unit of `gpuResource`, which a cluster shares by
    /// exposing each GPU as this many units (the NVIDIA device plugin's time-slicing or MPS
    /// sharing). Default 1: a GPU per worker.
    #[serde(default = "one_trial", skip_serializing_if = "is_one_trial")]
    #[schemars(range(min = 1, max = MAX_TRIALS_PER_GPU))]
    pub trials_per_gpu: u32,
    /// The extended resource a worker's GPUs are requested as. Default `nvidia.com/gpu`; with
    /// `trialsPerGpu` above 1, the shared resource the cluster's device plugin advertises (e.g.
    /// `nvidia.com/gpu.shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_resource: Option<String>,
}

/// The API server's check of an Experiment's name, a rule on the resource's root (the only place
/// CEL sees `metadata.name`): trial names `<experiment>-<variant>-<nnn>` must fit in 63
/// characters, as `validate` says.
pub fn root_validations() -> serde_json::Value {
    serde_json::json!([{
        "rule": "self.metadata.name.size() <= 50",
        "message": "metadata.name must be at most 50 characters (trial names <name>-<variant>-<nnn> fit in 63)"
    }])
}

/// Most trials one GPU is shared by.
pub const MAX_TRIALS_PER_GPU: u32 = 16;

fn one_trial() -> u32 {
    1
}

fn is_one_trial(n: &u32) -> bool {
    *n == 1
}

impl Resources {
    /// The extended resource name GPUs are requested as.
    pub fn gpu_resource_name(&self) -> &str {
        self.gpu_resource.as_deref().unwrap_or("nvidia.com/gpu")
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: "2".into(),
            memory: "4Gi".into(),
            gpus: 0,
            trials_per_gpu: 1,
            gpu_resource: None,
        }
    }
}

/// What "better" means: the Pareto front of bpp (down) and Dice (up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!has(self.bppBudget) || self.bppBudget > 0.0", "fieldPath": ".bppBudget", "message": "must be a positive number" },
    { "rule": "!has(self.referenceBpp) || self.referenceBpp > 0.0", "fieldPath": ".referenceBpp", "message": "must be a positive number" },
    { "rule": "!has(self.mode) || self.mode != 'budget' || has(self.bppBudget)", "fieldPath": ".mode", "message": "budget needs spec.objective.bppBudget" }
]))]
pub struct Objective {
    /// The winner is the best Dice at or below this many bits per pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpp_budget: Option<f64>,
    /// Reference bpp of the hypervolume: the front's area between 0 and this rate.
    #[serde(default = "reference_bpp")]
    pub reference_bpp: f64,
    /// What early stopping ranks trials by at a rung (asha, hyperband, medianStop): `pareto`
    /// (non-dominated sorting over bpp and Dice, ties by hypervolume contribution) or `budget`
    /// (best Dice at or below `bppBudget`). Default: budget when a budget is given, else pareto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ObjectiveMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ObjectiveMode {
    /// The whole bpp/Dice front: promote by non-dominated rank, then hypervolume contribution.
    Pareto,
    /// One number: Dice at or below `bppBudget`; above it, the lower the bpp the better.
    Budget,
}

impl Objective {
    pub fn effective_mode(&self) -> ObjectiveMode {
        self.mode.unwrap_or(if self.bpp_budget.is_some() {
            ObjectiveMode::Budget
        } else {
            ObjectiveMode::Pareto
        })
    }
}

fn reference_bpp() -> f64 {
    0.1
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            bpp_budget: None,
            reference_bpp: reference_bpp(),
            mode: None,
        }
    }
}

/// Lifecycle of an Experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum ExperimentPhase {
    #[default]
    Pending,
    Running,
    /// `spec.suspend` is set: no gang runs, the trials wait to resume.
    Suspended,
    Succeeded,
    Failed,
}

/// A leaderboard entry as shown in status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestTrial {
    pub trial: String,
    pub variant: Variant,
    pub dice: f64,
    pub bpp: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    pub phase: ExperimentPhase,
    /// "finished/total", for `kubectl get`.
    #[serde(default)]
    pub progress: String,
    #[serde(default)]
    pub trials_total: u32,
    #[serde(default)]
    pub trials_succeeded: u32,
    #[serde(default)]
    pub trials_failed: u32,
    #[serde(default)]
    pub trials_running: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestTrial>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pareto_front: Vec<BestTrial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervolume: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The best entries of the leaderboard (by Dice within the bpp budget), at most five.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<BestTrial>,
    /// ConfigMap holding the leaderboard as Markdown and JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderboard_config_map: Option<String>,
    /// Created, Running, Succeeded, Failed, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Trials stopped: early by the search (at a rung), or because the Experiment failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trials_stopped: u32,
    /// With early stopping: per rung, how many trials reached it and how many wait there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungOccupancy>,
}

/// One rung of the search as the Experiment's status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RungOccupancy {
    pub step: u64,
    /// Trials that reached the rung (and wrote their scores there).
    pub reached: u32,
    /// Trials paused there, waiting for a promotion.
    pub waiting: u32,
}

/// The most values of one swept parameter that validation sets on a trial to check.
const MAX_CHECKED_VALUES: usize = 1000;

impl ExperimentSpec {
    /// Parses an Experiment resource (YAML or JSON) and validates its spec.
    pub fn parse_resource(text: &str, origin: &str) -> Result<Experiment, ValidationError> {
        let exp: Experiment = crate::validation::parse_yaml(text, origin)?;
        let name = exp.metadata.name.clone().unwrap_or_default();
        exp.spec.validate(&name, origin)?;
        Ok(exp)
    }

    /// Checks every rule, reporting all problems at once with `spec.`-rooted field paths.
    pub fn validate(&self, name: &str, origin: &str) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        let name_ok = check_experiment_name(&mut p, name);
        self.check_counts(&mut p);
        check_store(&mut p, &self.store);
        if let Some(queue) = &self.queue_name {
            // A LocalQueue's name, which Kueue matches against the Job's label.
            crate::trial_spec::check_name(&mut p, "spec.queueName", queue);
        }
        // Credentials in the store or dataset URI are refused by the trial's own rules (below).
        if !self.dataset.contains("://") {
            p.push(
                "spec.dataset",
                &self.dataset,
                "must be a dataset URI (synthetic://, file://, s3://)",
            );
        }
        if let Some(b) = self.objective.bpp_budget {
            if !(b.is_finite() && b > 0.0) {
                p.push("spec.objective.bppBudget", b, "must be a positive number");
            }
        }
        if !(self.objective.reference_bpp.is_finite() && self.objective.reference_bpp > 0.0) {
            p.push(
                "spec.objective.referenceBpp",
                self.objective.reference_bpp,
                "must be a positive number",
            );
        }
        self.check_resources(&mut p);
        self.algorithm.check(&mut p, self.steps);
        if self.objective.mode == Some(ObjectiveMode::Budget) && self.objective.bpp_budget.is_none() {
            p.push("spec.objective.mode", "budget", "needs spec.objective.bppBudget");
        }
        self.check_candidate_count(&mut p);
        self.check_search(&mut p, origin);
        if name_ok {
            self.check_model_sources(&mut p, name);
        }
        self.check_base_trial(&mut p, if name_ok { name } else { "x" }, origin);
        p.into_result(origin)
    }

    /// Counts: variants (at least one, none twice), steps, parallelism, workers, attempts,
    /// the trial cap.
    fn check_counts(&self, p: &mut Problems) {
        if self.variants.is_empty() {
            p.push("spec.variants", "[]", "must name at least one of D1, D2, D3, D4");
        }
        let mut seen = Vec::new();
        for v in &self.variants {
            if seen.contains(v) {
                p.push("spec.variants", v, "is listed twice");
            }
            seen.push(*v);
        }
        if self.steps == 0 {
            p.push("spec.steps", 0, "must be at least 1");
        }
        if self.parallelism < 1 {
            p.push("spec.parallelism", self.parallelism, "must be at least 1");
        }
        if self.workers_per_trial < 1 {
            p.push(
                "spec.workersPerTrial",
                self.workers_per_trial,
                "must be at least 1",
            );
        }
        if self.max_attempts < 1 {
            p.push("spec.maxAttempts", self.max_attempts, "must be at least 1");
        }
        if self.max_trials == Some(0) {
            p.push("spec.maxTrials", 0, "must be at least 1 when given");
        }
    }

    /// Resources: GPUs need CUDA, packing rules, the extended resource's name.
    fn check_resources(&self, p: &mut Problems) {
        if self.resources.gpus > 0 && self.device != DeviceKind::Cuda {
            p.push("spec.device", "cpu", "resources.gpus > 0 needs device: cuda");
        }
        let packed = self.resources.trials_per_gpu;
        if !(1..=MAX_TRIALS_PER_GPU).contains(&packed) {
            p.push(
                "spec.resources.trialsPerGpu",
                packed,
                format!("must be 1..={MAX_TRIALS_PER_GPU}"),
            );
        } else if packed > 1 {
            if self.device != DeviceKind::Cuda || self.resources.gpus != 1 {
                p.push(
                    "spec.resources.trialsPerGpu",
                    packed,
                    "packing trials onto a GPU needs device: cuda and resources.gpus: 1",
                );
            }
            if self.workers_per_trial != 1 {
                p.push(
                    "spec.resources.trialsPerGpu",
                    packed,
                    "packs single-worker trials: NCCL ranks of one trial need a GPU each (workersPerTrial: 1)",
                );
            }
        }
        if let Some(name) = &self.resources.gpu_resource {
            // An extended resource name: a domain-prefixed name (vendor.example/name).
            let ok = name.split_once('/').is_some_and(|(domain, n)| {
                domain.contains('.')
                    && !n.is_empty()
                    && n.len() <= 63
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
            });
            if !ok {
                p.push(
                    "spec.resources.gpuResource",
                    name,
                    "must be an extended resource name like nvidia.com/gpu.shared",
                );
            }
        }
    }

    /// Each searched parameter: known, affecting a listed variant, its space valid for the
    /// algorithm, and its values valid as trials.
    fn check_search(&self, p: &mut Problems, origin: &str) {
        for (param, space) in &self.search {
            let field = format!("spec.search.{param}");
            let Some(swept) = sweepable(param) else {
                let known: Vec<&str> = SWEEPABLE.iter().map(|s| s.name).collect();
                p.push(
                    &field,
                    param,
                    format!("unknown parameter; sweepable: {}", known.join(", ")),
                );
                continue;
            };
            if param == "distill.weight" && self.hyper.distill.is_none() {
                p.push(&field, param, "needs hyper.distill (the teacher to distil from)");
                continue;
            }
            let Some(&variant) = self.variants.iter().find(|v| swept.affects(**v)) else {
                p.push(&field, param, "affects none of spec.variants");
                continue;
            };
            if check_space(p, &field, swept, space, &self.algorithm) {
                self.check_swept_values(p, &field, swept, space, variant, origin);
            }
        }
    }

    /// A source in this Experiment must be one of its D1 trials: D1 reads no source, so no
    /// trial waits for one that waits for it.
    fn check_model_sources(&self, p: &mut Problems, name: &str) {
        let fields = [("hyper.warmStart", self.hyper.warm_start.as_ref())];
        let teacher = [("hyper.distill.from", self.hyper.distill.as_ref().map(|d| &d.from))];
        for (field, text) in fields.into_iter().chain(teacher) {
            let Some(trial) = text.and_then(|t| ModelSource::parse(t).ok()) else {
                continue;
            };
            let Some(trial) = trial.same_experiment_trial() else {
                continue;
            };
            let index = trial.strip_prefix(&format!("{name}-d1-"));
            let numbered = index.is_some_and(|i| i.len() >= 3 && i.bytes().all(|b| b.is_ascii_digit()));
            if !numbered || !self.variants.contains(&Variant::D1) {
                p.push(
                    &format!("spec.{field}"),
                    text.map_or("", |t| t.as_str()),
                    format!("must name a D1 trial of this Experiment (trial:{name}-d1-000, with D1 in spec.variants)"),
                );
            }
        }
    }

    /// The base trial must itself be valid: one is checked, named like the real ones, its
    /// problems reported at the Experiment's fields. A compressing variant's when there is
    /// one: a D1 trial drops the warm start and the teacher, which must be checked too.
    fn check_base_trial(&self, p: &mut Problems, name: &str, origin: &str) {
        let variant = self.variants.iter().copied().find(|v| v.has_compressor());
        let probe = self.trial_spec(
            &format!("{name}-d1-000"),
            name,
            variant.or(self.variants.first().copied()).unwrap_or(Variant::D4),
            &BTreeMap::new(),
        );
        if let Err(e) = probe.validate(origin) {
            for prob in e.problems {
                // Trial fields map onto the Experiment's.
                let field = match prob.field.as_str() {
                    "worldSize" => "spec.workersPerTrial".to_string(),
                    "keepCheckpoints" => continue,
                    "experiment" | "trial" => continue,
                    other => format!("spec.{other}"),
                };
                p.push(&field, prob.value, prob.reason);
            }
        }
    }

    /// Candidates per variant, counted from the space's sizes (never listed) and bounded.
    fn check_candidate_count(&self, p: &mut Problems) {
        for &variant in &self.variants {
            let grid = self
                .search
                .iter()
                .filter(|(param, _)| crate::sweepable::affects(param, variant))
                .filter_map(|(_, space)| space.grid_len())
                .fold(1u64, u64::saturating_mul);
            let count = self.algorithm.candidate_count(grid);
            let count = count.min(self.max_trials.map_or(u64::MAX, u64::from));
            if count > MAX_CANDIDATES_PER_VARIANT {
                let (field, how) = match self.algorithm.sampling() {
                    Sampling::Grid { .. } => ("spec.search", "take fewer points or values"),
                    _ => ("spec.algorithm.samples", "draw fewer samples"),
                };
                p.push(
                    field,
                    count,
                    format!(
                        "gives {count} candidates for {variant}, above the limit of {MAX_CANDIDATES_PER_VARIANT}: {how}"
                    ),
                );
                return;
            }
        }
    }

    /// Every value a search would give `swept` (both ends of a continuous range, every value
    /// of a list or an integer range, at most `MAX_CHECKED_VALUES`) must make a valid trial of
    /// `variant`: the trial's own rules decide, so there is no second copy of them here. Only
    /// problems the base trial does not have are the swept value's.
    fn check_swept_values(
        &self,
        p: &mut Problems,
        field: &str,
        swept: &Sweepable,
        space: &SearchSpace,
        variant: Variant,
        origin: &str,
    ) {
        let values: Vec<f64> = match space {
            SearchSpace::List { values } => values.clone(),
            SearchSpace::Uniform { min, max, .. } | SearchSpace::LogUniform { min, max, .. } => {
                vec![*min, *max]
            }
            SearchSpace::IntRange { min, max, step } => (0..MAX_CHECKED_VALUES as i64)
                .map(|k| min.saturating_add(k.saturating_mul(*step)))
                .take_while(|v| v <= max)
                .map(|v| v as f64)
                .collect(),
        };
        let problems_of = |params: &BTreeMap<String, f64>| -> Vec<Problem> {
            self.trial_spec("probe-d1-000", "probe", variant, params)
                .validate(origin)
                .err()
                .map_or_else(Vec::new, |e| e.problems)
        };
        let base = problems_of(&BTreeMap::new());
        for v in values.into_iter().take(MAX_CHECKED_VALUES) {
            if v > swept.max {
                p.push(
                    field,
                    v,
                    format!("is above the largest value the field holds ({})", swept.max),
                );
                continue;
            }
            let params = BTreeMap::from([(swept.name.to_string(), v)]);
            for prob in problems_of(&params).into_iter().filter(|q| !base.contains(q)) {
                p.push(
                    field,
                    v,
                    format!("gives an invalid trial: {} {}", prob.field, prob.reason),
                );
            }
        }
    }

    /// The trial spec of one candidate: the base spec with `params` applied.
    pub fn trial_spec(
        &self,
        trial: &str,
        experiment: &str,
        variant: Variant,
        params: &BTreeMap<String, f64>,
    ) -> TrialSpec {
        let (mut model, mut hyper) = (self.model.clone(), self.hyper.clone());
        // Validation has rejected unknown parameters: every name here is in SWEEPABLE.
        for (s, value) in params.iter().filter_map(|(n, v)| Some((sweepable(n)?, *v))) {
            s.set(&mut model, &mut hyper, value);
        }
        if !variant.has_compressor() {
            // D1 learns from nobody: its spec and result must not say it does (the
            // Experiment's warm start and teacher are for the compressing variants).
            (hyper.warm_start, hyper.distill) = (None, None);
        }
        TrialSpec {
            experiment: experiment.to_string(),
            trial: trial.to_string(),
            variant,
            dataset: self.dataset.clone(),
            model,
            hyper,
            steps: self.steps,
            seed: self.seed,
            world_size: self.workers_per_trial,
            store: self.store.clone(),
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: 3,
            eval_every: self.eval_every,
            device: self.device,
        }
    }
}

fn check_store(p: &mut Problems, store: &str) {
    let Some((scheme, rest)) = store.split_once("://") else {
        p.push(
            "spec.store",
            store,
            "must be a URI: file:///path, s3://bucket/prefix, gs://, az://, memory://",
        );
        return;
    };
    match scheme {
        "file" if !rest.starts_with('/') => p.push(
            "spec.store",
            store,
            "file:// needs an absolute path (file:///runs)",
        ),
        "s3" | "gs" | "az" if rest.is_empty() => p.push("spec.store", store, "needs a bucket name"),
        "file" | "s3" | "gs" | "az" | "memory" => {}
        _ => p.push(
            "spec.store",
            store,
            "unsupported scheme: the worker reaches file://, s3://, gs://, az:// and memory://",
        ),
    }
}

/// Checks a search space's own form; true when it is well formed (its values can be checked).
fn check_space(
    p: &mut Problems,
    field: &str,
    swept: &Sweepable,
    space: &SearchSpace,
    algorithm: &Algorithm,
) -> bool {
    let before = p.len();
    let grid = matches!(algorithm.sampling(), Sampling::Grid { .. });
    match space {
        SearchSpace::List { values } => {
            if values.is_empty() {
                p.push(&format!("{field}.values"), "[]", "must hold at least one value");
            }
            for v in values {
                if !v.is_finite() {
                    p.push(&format!("{field}.values"), v, "must be finite");
                } else if swept.integer && v.fract() != 0.0 {
                    p.push(&format!("{field}.values"), v, "must be a whole number");
                }
            }
        }
        SearchSpace::Uniform { min, max, points } | SearchSpace::LogUniform { min, max, points } => {
            let log = matches!(space, SearchSpace::LogUniform { .. });
            if !(min.is_finite() && max.is_finite() && min <= max) {
                p.push(
                    &format!("{field}.min"),
                    min,
                    format!("must be finite and not above max ({max})"),
                );
            }
            if log && *min <= 0.0 {
                p.push(&format!("{field}.min"), min, "must be above 0 for logUniform");
            }
            if swept.integer {
                p.push(field, swept.name, "is an integer parameter: use list or intRange");
            }
            if grid && points.unwrap_or(0) < 1 {
                p.push(
                    &format!("{field}.points"),
                    "unset",
                    "grid search needs points >= 1 for a continuous range",
                );
            }
        }
        SearchSpace::IntRange { min, max, step } => {
            if min > max {
                p.push(
                    &format!("{field}.min"),
                    min,
                    format!("must not be above max ({max})"),
                );
            }
            if *step < 1 {
                p.push(&format!("{field}.step"), step, "must be at least 1");
            }
            if !swept.integer && (*min as f64) < 0.0 {
                p.push(&format!("{field}.min"), min, "must not be negative");
            }
        }
    }
    p.len() == before
}

/// An Experiment's name: trial names are `<experiment>-<variant>-<nnn>`, so it must leave room
/// within 63 characters. Whether it is valid.
fn check_experiment_name(p: &mut Problems, name: &str) -> bool {
    let name_ok = !name.is_empty()
        && name.len() <= 50
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !name_ok {
        p.push(
            "metadata.name",
            name,
            "must be 1-50 lowercase letters, digits or '-'",
        );
    }
    name_ok
}
