//! What a trial trains and how: the variant (D1-D4), the model's sizes, the hyperparameters
//! and the device. Shared by the trial spec, the Experiment that sweeps them and the result
//! that records them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model_source::ModelSource;
use crate::validation::Problems;

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
    /// Width of g (D2-D4's feature reconstruction from the code) at full resolution; it doubles
    /// towards the code up to 4 times this, as in both presets. D1 has no g and ignores it,
    /// so a D4 can be widened here and still warm-start its s from a D1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = "MAX_DECODER_WIDTH"))]
    pub decoder_width: Option<u32>,
    /// Width of C (D2-D4's compressor, the network that runs on the edge) at full resolution;
    /// it doubles at each halving up to 4 times this, as in the small preset. More width
    /// costs the edge device compute (per voxel, about the square of it) and not bits: the
    /// code's size is `codeChannels` and `downsample`. D1 has no C and ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = "MAX_ENCODER_WIDTH"))]
    pub encoder_width: Option<u32>,
    /// Volumes only: the training patch's sides (z, y, x), e.g. `[16, 64, 64]` for cardiac MR's
    /// few thick slices; each a multiple of C's downsampling factor. Default: an
    /// `inputSize` cube. Whole volumes are evaluated by sliding this window over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Vec<u32>>,
}

/// C's downsampling factor f when `model.downsample` is not set (both presets).
pub const DEFAULT_DOWNSAMPLE: u32 = 16;

/// The widest `model.encoderWidth`: C is then 1,024 channels wide at the code, more than four
/// times the paper preset's widest C (224).
pub const MAX_ENCODER_WIDTH: u32 = 256;

/// The widest `model.decoderWidth`: g is then 1,024 channels wide at the code, four times the
/// paper preset's widest g.
pub const MAX_DECODER_WIDTH: u32 = 256;

fn default_dims() -> u32 {
    2
}

/// Distillation from a teacher's predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Distill {
    /// The teacher: `trial:<name>` for a trial of this Experiment (run first, typically its D1),
    /// or `<store URI>/<experiment>/<trial>`. Its latest checkpoint is read; its steps and
    /// training seconds count in the trial's cost.
    pub from: String,
    /// Weight of the distillation term (see `loss`), added to the segmentation loss.
    #[serde(default = "default_distill_weight")]
    pub weight: f64,
    /// How the student's class probabilities are compared with the teacher's.
    #[serde(default)]
    pub loss: DistillLoss,
}

/// The distillation term's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DistillLoss {
    /// Mean squared difference of the probabilities over every pixel and class (default).
    #[default]
    Mse,
    /// The trial's segmentation loss (`hyper.segLoss`) with the teacher's probabilities in place
    /// of the labels, so that weight 1 weighs the teacher as much as the labels. With
    /// `segLoss: diceCe` on volumes that are mostly background the squared difference is about
    /// a hundredth of the label loss (0.005 against 0.4 on ACDC), and a weight of 1 does little.
    SegLoss,
}

fn default_distill_weight() -> f64 {
    1.0
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
    /// Steps over which lambdaRate ramps linearly from 0 (D4): the code learns to carry the
    /// segmentation before the rate term squeezes it.
    pub rate_warmup_steps: u64,
    /// Compressing variants (D2-D4) first train C and g alone for this many steps as an
    /// autoencoder: pixel MSE between g's output and the image (its mean over channels when g
    /// has one output channel and the image more) through the binary code, no rate term, Adam
    /// at `lr`. The code then carries the image before s and the rate loss shape it, and g hands
    /// s an image-like map (what a D1's s, copied by `warmStart`, was trained on). Counted in
    /// the trial's cost beside its steps. A run resumed from a checkpoint does not repeat it;
    /// D1 trials ignore it.
    #[serde(skip_serializing_if = "is_zero")]
    pub code_pretrain_steps: u64,
    /// Compressing variants (D2-D4) keep the code pre-training's objective during their own
    /// steps: C and g also minimise this weight times the same pixel MSE between g's map and the
    /// image, so that g's map stays image-like for a segmentor warm-started from a D1 instead
    /// of drifting to whatever s learns to read. 0 (default): no such term. D1 trials ignore it.
    #[serde(skip_serializing_if = "is_zero")]
    pub reconstruction_weight: f64,
    /// Compressing variants (D2-D4) start from a finished trial's weights instead of random
    /// ones: every tensor whose name and shape match (from a D1, its segmentor and critic but
    /// for s's first layer, which reads the image's channels). `trial:<name>` for a trial of
    /// this Experiment (run first), or `<store URI>/<experiment>/<trial>`. D1 trials ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<String>,
    /// Compressing variants (D2-D4) learn from a finished trial's predictions as well as from
    /// the labels (knowledge distillation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<Distill>,
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

/// A field at its type's zero (0, 0.0): serde leaves such optional knobs out of what it writes.
pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
            rate_warmup_steps: 0,
            code_pretrain_steps: 0,
            reconstruction_weight: 0.0,
            warm_start: None,
            distill: None,
            d_clip: 0.05,
            lr_bit_model: 5e-2,
            augment: true,
            precision: Precision::Fp32,
        }
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
            decoder_width: None,
            encoder_width: None,
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

    pub(crate) fn check(&self, p: &mut Problems) {
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
        // g's and C's widths: each doubles towards the code up to 4 times the value.
        for (field, width, max, net) in [
            ("model.decoderWidth", self.decoder_width, MAX_DECODER_WIDTH, "g"),
            ("model.encoderWidth", self.encoder_width, MAX_ENCODER_WIDTH, "C"),
        ] {
            if let Some(w) = width.filter(|w| !(1..=max).contains(w)) {
                p.push(
                    field,
                    w,
                    format!("must be 1 to {max} ({net} reaches 4 times this at the code)"),
                );
            }
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
    /// The finished trials a trial of `variant` reads weights from (its warm start and its
    /// teacher, once each): none for D1, which trains from scratch (it is the usual teacher).
    /// Sources that do not parse are left out (validation reports them).
    pub fn model_sources(&self, variant: Variant) -> Vec<ModelSource> {
        if !variant.has_compressor() {
            return Vec::new();
        }
        let mut sources: Vec<ModelSource> = Vec::new();
        let named = self.warm_start.iter().chain(self.distill.iter().map(|d| &d.from));
        for s in named.filter_map(|t| ModelSource::parse(t).ok()) {
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        sources
    }

    pub(crate) fn check(&self, p: &mut Problems) {
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
        for (name, v) in [
            ("hyper.wDis", self.w_dis),
            ("hyper.lambdaRate", self.lambda_rate),
            ("hyper.reconstructionWeight", self.reconstruction_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                p.push(name, v, "must be a finite number >= 0");
            }
        }
        if let Some(w) = &self.warm_start {
            if let Err(reason) = ModelSource::parse(w) {
                p.push("hyper.warmStart", w, reason);
            }
        }
        if let Some(d) = &self.distill {
            if let Err(reason) = ModelSource::parse(&d.from) {
                p.push("hyper.distill.from", &d.from, reason);
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                p.push("hyper.distill.weight", d.weight, "must be a finite number >= 0");
            }
        }
        if !(self.d_clip.is_finite() && self.d_clip > 0.0) {
            p.push("hyper.dClip", self.d_clip, "must be a positive number");
        }
    }
}
