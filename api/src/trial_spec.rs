//! The trial spec: everything one training run needs, handed to every worker of a trial
//! (a mounted ConfigMap on Kubernetes, a file locally).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{Problems, ValidationError};

/// The paper's four training variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum Variant {
    /// S + D: segmentation of the raw image, no compression.
    D1,
    /// C + S: compression and segmentation, no critic.
    D2,
    /// C + S + D.
    D3,
    /// C + S + D + rate loss.
    D4,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::D1, Variant::D2, Variant::D3, Variant::D4];

    /// Whether the compressor C (and the reconstruction layers g) take part.
    pub fn has_compressor(self) -> bool {
        !matches!(self, Variant::D1)
    }

    /// Whether the critic D takes part (adversarial multi-scale L1 loss).
    pub fn has_critic(self) -> bool {
        !matches!(self, Variant::D2)
    }

    /// Whether the rate loss pushes gradients into C.
    pub fn has_rate_loss(self) -> bool {
        matches!(self, Variant::D4)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "D1" => Ok(Variant::D1),
            "D2" => Ok(Variant::D2),
            "D3" => Ok(Variant::D3),
            "D4" => Ok(Variant::D4),
            _ => Err(format!("unknown variant {s:?}: expected one of D1, D2, D3, D4")),
        }
    }
}

/// Network size presets: `paper` is SegAN's full width (for GPUs), `small` fits CPUs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Small,
    Paper,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "small" => Ok(Preset::Small),
            "paper" => Ok(Preset::Paper),
            _ => Err(format!("unknown preset {s:?}: expected small or paper")),
        }
    }
}

/// How the critic's multi-scale L1 loss is reduced over its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DisReduction {
    /// Mean of the per-layer mean absolute differences: every scale weighs the same (default).
    #[default]
    PerLayer,
    /// One mean over all concatenated features, as SegAN's code does: large early layers dominate.
    Concatenated,
}

/// The segmentation loss of s's probabilities against the labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SegLoss {
    /// Mean squared error over every pixel and class, as SegAN trains (default).
    #[default]
    Mse,
    /// Cross-entropy plus soft Dice of the foreground classes, per sample, as nnU-Net trains
    /// its 3D U-Net: small structures (a thin right ventricle) weigh as much as large ones.
    DiceCe,
}

/// Arithmetic of the training step's forward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32 (default).
    #[default]
    Fp32,
    /// The forward passes of C, g, s and D under bf16 autocast (convolutions and matrix
    /// products in bf16; reductions, normalisation statistics and the losses in fp32); master
    /// weights, gradients and optimizer state stay fp32, and the bit model q and the rate loss
    /// run in fp32. Evaluation and export stay fp32: that is what the edge runs.
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The name specs and command lines use.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision {s:?}: expected fp32 or bf16")),
        }
    }
}

/// Learning-rate schedule over the training steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from `lr` to `lr * lrMinRatio` over the run.
    #[default]
    Cosine,
    /// Multiply by 0.5 at 50% and 75% of the run (SegAN-style step decay).
    Step,
}

/// Compute device for the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// Which network to build and at what size. `None` fields take the preset's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelSpec {
    #[serde(default)]
    pub preset: Preset,
    /// Side of the square (cubic in 3D) network input, in pixels.
    pub input_size: u32,
    /// 2 for images, 3 for volumes.
    #[serde(default = "default_dims")]
    pub dims: u32,
    /// Spatial downsampling factor f of C: the code is K x H/f x W/f bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsample: Option<u32>,
    /// Code channels K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_channels: Option<u32>,
    /// Base width of the segmentor and the critic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Number of scales of the segmentor and the critic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Volumes only: the training patch's sides (z, y, x), e.g. `[16, 64, 64]` for cardiac MR's
    /// few thick slices; each a multiple of C's downsampling factor. Default: an
    /// `inputSize` cube. Whole volumes are evaluated by sliding this window over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Vec<u32>>,
}

/// C's downsampling factor f when `model.downsample` is not set (both presets).
pub const DEFAULT_DOWNSAMPLE: u32 = 16;

fn default_dims() -> u32 {
    2
}

/// Optimisation and loss hyperparameters; every field has a default that trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Hyper {
    /// Images per step on each worker (a step's whole batch is batchSize x worldSize).
    pub batch_size: u32,
    /// Splits each worker's batch into this many equal micro-batches whose gradients are
    /// averaged before the update: the memory of a smaller batch, the update of the whole one.
    /// BatchNorm normalises each micro-batch by its own statistics, as each worker of a
    /// data-parallel trial does, so one worker with batch 2B in 2 micro-batches takes exactly
    /// the steps of two workers with batch B.
    pub micro_batches: u32,
    /// Adam learning rate of C, g, s and the bit model.
    pub lr: f64,
    /// Adam learning rate of the critic D.
    pub lr_critic: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub lr_schedule: LrSchedule,
    pub lr_min_ratio: f64,
    /// Weight of the critic's multi-scale L1 loss in the C+S objective.
    pub w_dis: f64,
    /// Steps over which w_dis ramps linearly from 0 (the adversarial term alone is unstable).
    pub dis_warmup_steps: u64,
    pub dis_reduction: DisReduction,
    /// The segmentation loss.
    pub seg_loss: SegLoss,
    /// Weight lambda of the rate loss (D4 only), in units of bits per code bit.
    pub lambda_rate: f64,
    /// The critic's weights are clipped to [-d_clip, d_clip] after every update (SegAN).
    pub d_clip: f64,
    /// Learning rate of the bit-probability model q.
    pub lr_bit_model: f64,
    /// Random flips and crops of the training images.
    pub augment: bool,
    /// Arithmetic of the forward passes: `fp32` (default) or `bf16` autocast.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            batch_size: 8,
            micro_batches: 1,
            lr: 2e-3,
            lr_critic: 2e-3,
            beta1: 0.5,
            beta2: 0.999,
            lr_schedule: LrSchedule::Cosine,
            lr_min_ratio: 0.05,
            w_dis: 0.5,
            dis_warmup_steps: 50,
            dis_reduction: DisReduction::PerLayer,
            seg_loss: SegLoss::Mse,
            lambda_rate: 0.05,
            d_clip: 0.05,
            lr_bit_model: 5e-2,
            augment: true,
            precision: Precision::Fp32,
        }
    }
}

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
                p.push(field, uri, crate::experiment::credentials_refused(reason));
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

impl ModelSpec {
    /// A preset at an input size, with no overrides.
    pub fn new(preset: Preset, input_size: u32, dims: u32) -> ModelSpec {
        ModelSpec {
            preset,
            input_size,
            dims,
            downsample: None,
            code_channels: None,
            width: None,
            depth: None,
            patch: None,
        }
    }

    /// The spatial sides of one network input: the patch (volumes) or `inputSize` along each
    /// axis.
    pub fn sides(&self) -> Vec<u32> {
        match &self.patch {
            Some(p) if self.dims == 3 => p.clone(),
            _ => vec![self.input_size; self.dims.clamp(2, 3) as usize],
        }
    }

    fn check(&self, p: &mut Problems) {
        if self.dims != 2 && self.dims != 3 {
            p.push("model.dims", self.dims, "must be 2 or 3");
        }
        if let Some(f) = self.downsample {
            if !f.is_power_of_two() || f < 2 {
                p.push("model.downsample", f, "must be a power of two, at least 2");
            } else if !self.input_size.is_multiple_of(f) {
                p.push(
                    "model.downsample",
                    f,
                    format!("must divide model.inputSize ({})", self.input_size),
                );
            }
        }
        if self.input_size < 16 || self.input_size > 4096 {
            p.push("model.inputSize", self.input_size, "must be in 16..=4096");
        }
        if let Some(patch) = &self.patch {
            let f = self.downsample.unwrap_or(DEFAULT_DOWNSAMPLE);
            let shown = format!("{patch:?}");
            if self.dims != 3 {
                p.push("model.patch", &shown, "applies to volumes only (model.dims: 3)");
            } else if patch.len() != 3 {
                p.push("model.patch", &shown, "must have three sides (z, y, x)");
            } else if let Some(side) = patch
                .iter()
                .find(|&&s| !(f..=1024).contains(&s) || !s.is_multiple_of(f))
            {
                p.push(
                    "model.patch",
                    &shown,
                    format!("side {side} must be a multiple of C's downsampling factor {f}, at most 1024"),
                );
            }
        }
        if self.code_channels == Some(0) {
            p.push("model.codeChannels", 0, "must be at least 1");
        }
        if self.width == Some(0) {
            p.push("model.width", 0, "must be at least 1");
        }
        if let Some(d) = self.depth {
            if d == 0 || (1u64 << d.min(31)) > self.input_size as u64 {
                p.push(
                    "model.depth",
                    d,
                    format!(
                        "must be at least 1 and 2^depth must not exceed model.inputSize ({})",
                        self.input_size
                    ),
                );
            }
        }
    }
}

impl Hyper {
    fn check(&self, p: &mut Problems) {
        if self.batch_size == 0 {
            p.push("hyper.batchSize", self.batch_size, "must be at least 1");
        }
        if self.micro_batches == 0 || !self.batch_size.is_multiple_of(self.micro_batches) {
            p.push(
                "hyper.microBatches",
                self.micro_batches,
                format!(
                    "must divide hyper.batchSize = {} into equal parts",
                    self.batch_size
                ),
            );
        }
        for (name, v) in [
            ("hyper.lr", self.lr),
            ("hyper.lrCritic", self.lr_critic),
            ("hyper.lrBitModel", self.lr_bit_model),
        ] {
            if !(v.is_finite() && v > 0.0) {
                p.push(name, v, "must be a positive number");
            }
        }
        for (name, v) in [("hyper.beta1", self.beta1), ("hyper.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                p.push(name, v, "must be in [0, 1)");
            }
        }
        if !(0.0..=1.0).contains(&self.lr_min_ratio) {
            p.push("hyper.lrMinRatio", self.lr_min_ratio, "must be in [0, 1]");
        }
        for (name, v) in [("hyper.wDis", self.w_dis), ("hyper.lambdaRate", self.lambda_rate)] {
            if !(v.is_finite() && v >= 0.0) {
                p.push(name, v, "must be a finite number >= 0");
            }
        }
        if !(self.d_clip.is_finite() && self.d_clip > 0.0) {
            p.push("hyper.dClip", self.d_clip, "must be a positive number");
        }
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
    pub result: Option<crate::trial_result::TrialResult>,
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
    pub rungs: Vec<crate::trial_result::RungScore>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
