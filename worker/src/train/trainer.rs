//! One trial's training state and its alternating updates.
//!
//! Each step: one C+S update with D frozen (C, g, s minimise loss_seg + w_dis * loss_dis, plus
//! lambda * loss_cr for D4; q fits the code's statistics), then one D update with C and S
//! frozen (D maximises loss_dis on the same batch's detached prediction; weights clipped).
//! Every random draw of a step derives from (seed, step), so a run resumed from a checkpoint
//! repeats the uninterrupted run exactly on the CPU.

use orchestra_api::{DeviceKind, ParamCounts, RateScores, SegmentationScores, TrialSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use super::adam::Adam;
use super::metrics::dice_iou;
use super::schedule::{critic_weight, learning_rate};
use crate::data::{augment, batch, BatchSampler, Dataset, Sample};
use crate::nets::{rng, Group, Model, NetConfig};
use crate::store::checkpoint::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("trial {trial}: {reason}")]
    Setup { trial: String, reason: String },
    #[error("trial {trial}: checkpoint step {step} does not fit this model: {reason}")]
    Restore {
        trial: String,
        step: u64,
        reason: String,
    },
    #[error("trial {trial}: training diverged at step {step}: {what} is {value}")]
    Diverged {
        trial: String,
        step: u64,
        what: &'static str,
        value: f64,
    },
}

/// Losses of one step, streamed to `metrics.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss_seg: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_dis: Option<f64>,
    /// Expected bits per code bit under q (the rate estimate the bit model is fitted to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_rate: Option<f64>,
    /// The critic's objective (loss_dis on the detached prediction, which it maximises).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_critic: Option<f64>,
    pub lr: f64,
    pub w_dis: f64,
}

/// Scores on the validation split.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub scores: SegmentationScores,
    pub rate: Option<RateScores>,
}

pub struct Trainer {
    pub spec: TrialSpec,
    pub data: Dataset,
    pub model: Model,
    pub device: Device,
    main: Adam,
    bits: Option<Adam>,
    critic: Option<Adam>,
    sampler: BatchSampler,
    /// Steps completed.
    pub step: u64,
}

/// Mixes the trial seed with a step and a purpose into one 64-bit seed.
fn mix(seed: u64, step: u64, purpose: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The libtorch device a trial asks for.
pub fn device_for_spec(spec: &TrialSpec) -> Result<Device, TrainError> {
    device_for(spec.device).map_err(|reason| TrainError::Setup {
        trial: spec.trial.clone(),
        reason,
    })
}

fn device_for(kind: DeviceKind) -> Result<Device, String> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceKind::Cuda => {
            Err("device: cuda was requested but no CUDA device is available to libtorch".into())
        }
    }
}

impl Trainer {
    pub fn new(spec: TrialSpec, data: Dataset) -> Result<Trainer, TrainError> {
        let setup = |reason: String| TrainError::Setup {
            trial: spec.trial.clone(),
            reason,
        };
        let device = device_for_spec(&spec)?;
        if data.size != spec.model.input_size {
            return Err(setup(format!(
                "dataset images are {}px but model.input_size is {}",
                data.size, spec.model.input_size
            )));
        }
        if data.train.is_empty() || data.val.is_empty() {
            return Err(setup("dataset needs both training and validation images".into()));
        }
        let config = NetConfig::resolve(&spec.model, data.channels, data.classes);
        rng::reseed(mix(spec.seed, 0, 1));
        let model = Model::new(config, spec.variant, device);
        let h = &spec.hyper;
        let main_params: Vec<_> = [Group::Compressor, Group::Reconstructor, Group::Segmentor]
            .into_iter()
            .flat_map(|g| model.group_params(g))
            .collect();
        let main = Adam::new(main_params, h.beta1, h.beta2);
        let bits = spec
            .variant
            .has_compressor()
            .then(|| Adam::new(model.group_params(Group::BitModel), 0.9, 0.999));
        let critic = spec
            .variant
            .has_critic()
            .then(|| Adam::new(model.group_params(Group::Critic), h.beta1, h.beta2));
        let sampler = BatchSampler {
            n: data.train.len(),
            batch_size: h.batch_size as usize,
            seed: spec.seed,
        };
        Ok(Trainer {
            spec,
            data,
            model,
            device,
            main,
            bits,
            critic,
            sampler,
            step: 0,
        })
    }

    pub fn param_counts(&self) -> ParamCounts {
        ParamCounts {
            compressor: self.model.param_count(Group::Compressor),
            reconstructor: self.model.param_count(Group::Reconstructor),
            segmentor: self.model.param_count(Group::Segmentor),
            critic: self.model.param_count(Group::Critic),
            bit_model: self.model.param_count(Group::BitModel),
        }
    }

    /// The (augmented) training batch of `step`.
    pub fn batch_for(&self, step: u64) -> (Tensor, Tensor) {
        let samples: Vec<&Sample> = self
            .sampler
            .indices(step)
            .into_iter()
            .map(|i| &self.data.train[i])
            .collect();
        let (images, labels) = batch(&samples, self.data.channels, self.data.size, self.device);
        if self.spec.hyper.augment {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.spec.seed, step, 2));
            augment(&images, &labels, &mut rng)
        } else {
            (images, labels)
        }
    }

    /// One C+S update followed by one D update.
    pub fn train_step(&mut self) -> Result<StepMetrics, TrainError> {
        let step = self.step;
        let h = self.spec.hyper.clone();
        rng::reseed(mix(self.spec.seed, step, 3));
        let (images, labels) = self.batch_for(step);
        let target = self.model.target(&labels);
        let lr = learning_rate(h.lr, h.lr_schedule, h.lr_min_ratio, step, self.spec.steps);
        let lr_factor = lr / h.lr;
        let w_dis = critic_weight(h.w_dis, h.dis_warmup_steps, step);

        // C+S update with D frozen: gradients flow through D into S, but D is not updated.
        self.model.set_trainable(Group::Critic, false);
        self.main.zero_grad();
        if let Some(b) = self.bits.as_mut() {
            b.zero_grad();
        }
        let fwd = self.model.forward(&images, true);
        let loss_seg = fwd.probs.mse_loss(&target, Reduction::Mean);
        // The objective's terms, summed once at the end.
        let mut terms = vec![loss_seg.shallow_clone()];
        let loss_dis = self
            .model
            .critic
            .as_ref()
            .map(|d| d.multi_scale_l1(&fwd.probs, &target, h.dis_reduction, true));
        if let Some(l) = &loss_dis {
            terms.push(l * w_dis);
        }
        let mut loss_rate = None;
        if let (Some(q), Some(x), Some(b)) = (&self.model.bit_model, &fwd.activations, &fwd.bits) {
            let b = b.detach();
            // q is fitted to the code in every compressing variant (so that every variant's
            // code can be entropy coded); only D4 pushes the rate gradient into C.
            let fit = q.expected_bits(&x.detach(), &b, false).mean(Kind::Float);
            loss_rate = Some(fit.double_value(&[]));
            terms.push(fit);
            if self.spec.variant.has_rate_loss() {
                terms.push(q.expected_bits(x, &b, true).mean(Kind::Float) * h.lambda_rate);
            }
        }
        let loss_seg_value = loss_seg.double_value(&[]);
        if !loss_seg_value.is_finite() {
            return Err(TrainError::Diverged {
                trial: self.spec.trial.clone(),
                step,
                what: "loss_seg",
                value: loss_seg_value,
            });
        }
        Tensor::stack(&terms, 0).sum(Kind::Float).backward();
        self.main.step(lr);
        if let Some(b) = self.bits.as_mut() {
            b.step(h.lr_bit_model * lr_factor);
        }
        self.model.set_trainable(Group::Critic, true);

        // D update with C and S frozen: the prediction is detached.
        let mut loss_critic = None;
        if let (Some(d), Some(opt)) = (&self.model.critic, self.critic.as_mut()) {
            opt.zero_grad();
            let l = d.multi_scale_l1(&fwd.probs.detach(), &target, h.dis_reduction, true);
            loss_critic = Some(l.double_value(&[]));
            (-l).backward();
            opt.step(h.lr_critic * lr_factor);
            // SegAN's clipping keeps the critic Lipschitz-bounded and training stable.
            tch::no_grad(|| {
                for (_, p) in opt.params() {
                    let _ = p.shallow_clone().clamp_(-h.d_clip, h.d_clip);
                }
            });
        }
        self.step += 1;
        Ok(StepMetrics {
            step: self.step,
            loss_seg: loss_seg_value,
            loss_dis: loss_dis.map(|l| l.double_value(&[])),
            loss_rate,
            loss_critic,
            lr,
            w_dis,
        })
    }

    /// Dice, IoU and the rate estimate on the validation split (inference mode: BatchNorm
    /// running statistics, deterministic binarization).
    pub fn evaluate(&self) -> Evaluation {
        evaluate(
            &self.model,
            &self.data.val,
            self.data.channels,
            self.data.size,
            self.device,
            self.spec.hyper.batch_size as usize,
        )
    }

    pub fn checkpoint(&self, elapsed_seconds: f64) -> Checkpoint {
        let mut optimizer = self.main.state("main");
        let mut optimizer_steps = vec![("main".to_string(), self.main.steps_taken())];
        for (name, opt) in [("bits", &self.bits), ("critic", &self.critic)] {
            if let Some(o) = opt {
                optimizer.extend(o.state(name));
                optimizer_steps.push((name.to_string(), o.steps_taken()));
            }
        }
        Checkpoint {
            step: self.step,
            weights: self.model.named_variables(),
            optimizer,
            optimizer_steps,
            elapsed_seconds,
        }
    }

    /// Continues from a checkpoint of the same trial.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<(), TrainError> {
        let err = |reason: String| TrainError::Restore {
            trial: self.spec.trial.clone(),
            step: ckpt.step,
            reason,
        };
        load_weights(&self.model, &ckpt.weights).map_err(err)?;
        let steps = |name: &str| {
            ckpt.optimizer_steps
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
        };
        for (name, opt) in [
            ("main", Some(&mut self.main)),
            ("bits", self.bits.as_mut()),
            ("critic", self.critic.as_mut()),
        ] {
            if let Some(o) = opt {
                let t = steps(name).ok_or_else(|| err(format!("no state for optimiser {name}")))?;
                o.load_state(name, &ckpt.optimizer, t).map_err(err)?;
            }
        }
        self.step = ckpt.step;
        Ok(())
    }
}

/// Copies saved tensors into the model's variables; every variable must be present with the
/// same shape, and nothing else may be.
pub fn load_weights(model: &Model, saved: &[(String, Tensor)]) -> Result<(), String> {
    let vars = model.named_variables();
    if let Some((extra, _)) = saved.iter().find(|(n, _)| !vars.iter().any(|(v, _)| v == n)) {
        return Err(format!("unexpected tensor {extra} (another variant or preset?)"));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let (_, src) = saved
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("missing tensor {name}"))?;
            if src.size() != var.size() {
                return Err(format!(
                    "{name}: saved shape {:?}, model has {:?}",
                    src.size(),
                    var.size()
                ));
            }
            var.shallow_clone().copy_(&src.to_device(var.device()));
        }
        Ok(())
    })
}

/// Evaluates `model` on `samples` in batches.
pub fn evaluate(
    model: &Model,
    samples: &[Sample],
    channels: usize,
    size: u32,
    device: Device,
    batch_size: usize,
) -> Evaluation {
    let classes = model.config.classes;
    let mut dice_rows = Vec::new();
    let mut iou_rows = Vec::new();
    let mut code_bits = Vec::new();
    let codec = crate::codec::model_file::codec_for(model);
    let (mut stream_bytes, mut header_bytes, mut failures) = (Vec::new(), 0usize, 0u32);
    tch::no_grad(|| {
        for chunk in samples.chunks(batch_size.max(1)) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            let (images, labels) = batch(&refs, channels, size, device);
            let fwd = model.forward(&images, false);
            let pred = model.labels(&fwd.probs);
            let (d, i) = dice_iou(&pred, &labels, classes);
            dice_rows.push(d);
            iou_rows.push(i);
            if let (Some(q), Some(bits)) = (&model.bit_model, &fwd.bits) {
                code_bits.push(q.code_length(bits));
            }
            // Real bitstreams of every evaluation image, each decoded again to check the round trip.
            if let (Some(codec), Some(bits)) = (&codec, &fwd.bits) {
                let shape = crate::codec::model_file::code_shape(bits);
                for row in crate::codec::model_file::code_rows(bits) {
                    match codec.encode(&shape, &row) {
                        Ok(stream) => {
                            if codec.decode(&stream).map(|(_, back)| back != row).unwrap_or(true) {
                                failures += 1;
                            }
                            header_bytes += codec.header_len(&stream).unwrap_or(0);
                            stream_bytes.push(stream.len());
                        }
                        Err(_) => failures += 1,
                    }
                }
            }
        }
    });
    let dice = Tensor::cat(&dice_rows, 0).to_kind(Kind::Double);
    let iou = Tensor::cat(&iou_rows, 0).to_kind(Kind::Double);
    let per_class =
        |t: &Tensor| -> Vec<f64> { Vec::try_from(t.mean_dim(0, false, Kind::Double)).unwrap_or_default() };
    let scores = SegmentationScores {
        dice: dice.mean(Kind::Double).double_value(&[]),
        iou: iou.mean(Kind::Double).double_value(&[]),
        dice_per_class: per_class(&dice),
        iou_per_class: per_class(&iou),
        images: samples.len(),
    };
    let rate = (!code_bits.is_empty()).then(|| {
        let c = &model.config;
        let estimate = Tensor::cat(&code_bits, 0).mean(Kind::Double).double_value(&[]);
        let pixels = c.pixels() as f64;
        let streams = stream_bytes.len().max(1) as f64;
        let total: usize = stream_bytes.iter().sum();
        let measured = !stream_bytes.is_empty();
        RateScores {
            code_bits: c.code_bits() as u64,
            bits_per_pixel_raw: c.code_bits() as f64 / pixels,
            bpp_estimate: estimate / pixels,
            bpp: measured.then(|| 8.0 * total as f64 / streams / pixels),
            bpp_no_header: measured.then(|| 8.0 * (total - header_bytes) as f64 / streams / pixels),
            mean_stream_bytes: measured.then(|| total as f64 / streams),
            round_trip_failures: failures,
        }
    });
    Evaluation { scores, rate }
}
