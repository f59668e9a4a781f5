//! One trial's training state and its alternating updates.
//!
//! Each step: one C+S update with D frozen (C, g, s minimise loss_seg + w_dis * loss_dis, plus
//! lambda * loss_cr for D4, and the distillation and reconstruction terms where the trial
//! asks for them; q fits the code's statistics), then one D update with C and S
//! frozen (D maximises loss_dis on the same batch's detached prediction; weights clipped).
//! Every random draw of a step derives from (seed, step), so a run resumed from a checkpoint
//! repeats the uninterrupted run exactly on the CPU.

pub mod code_pretrain;

use orchestra_api::{DistillLoss, Hyper, ParamCounts, TeacherCost, TrialSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::adam::Adam;
use super::autocast::with_precision;
use super::model_sources::{load_sources, warm_start};
use super::reconstruction_loss::reconstruction_loss;
use super::schedule::{learning_rate, ramp};
use super::seg_loss::{distill_loss, seg_loss};
use crate::data::patches::{extract, PatchSampler};
use crate::data::{augment, batch, BatchSampler, Sample, TrainingData, VolumeSet};
use crate::dist::buckets::mean_scalars;
use crate::dist::{
    all_reduce_mean, all_reduce_mean_flat, Collective, DistError, SingleProcess, DEFAULT_BUCKET_BYTES,
};
use crate::eval::Evaluation;
use crate::nets::critic::Critic;
use crate::nets::{rng, Forward, Group, Model};
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
    #[error("trial {trial}: rank {rank}: {source}")]
    Collective {
        trial: String,
        rank: usize,
        source: DistError,
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
    /// The distillation term, unweighted (with hyper.distill; its loss says how it compares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_distill: Option<f64>,
    /// g's map against the image (pixel MSE), unweighted (with hyper.reconstructionWeight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_reconstruction: Option<f64>,
    pub lr: f64,
    pub w_dis: f64,
    /// The rate loss's weight at this step (D4; ramps up over rateWarmupSteps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_rate: Option<f64>,
}

pub struct Trainer {
    pub spec: TrialSpec,
    pub data: TrainingData,
    pub model: Model,
    pub device: Device,
    main: Adam,
    bits: Option<Adam>,
    critic: Option<Adam>,
    /// Draws each step's whole batch (batchSize x worldSize images); every rank takes its own
    /// slice, so an epoch is shared out between ranks without overlap.
    sampler: BatchSampler,
    comm: Box<dyn Collective>,
    bucket_bytes: usize,
    /// Seconds spent averaging gradients, statistics and losses over ranks.
    pub comm_seconds: f64,
    /// Steps completed.
    pub step: u64,
    /// The distillation teacher (with hyper.distill).
    teacher: Option<Teacher>,
    /// What the trials this one read weights from cost to train.
    pub teachers: Vec<TeacherCost>,
}

/// Mixes the trial seed with a step and a purpose into one 64-bit seed.
fn mix(seed: u64, step: u64, purpose: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The critic's multi-scale L1 between predictions and targets, in the step's arithmetic
/// (bf16: D's forward under autocast), as an fp32 scalar. Both updates, C+S and D, call it.
fn critic_loss(d: &Critic, probs: &Tensor, target: &Tensor, h: &Hyper, device: Device) -> Tensor {
    with_precision(h.precision, device, || {
        d.multi_scale_l1(probs, target, h.dis_reduction, true)
    })
    .to_kind(Kind::Float)
}

/// The seed purpose of a random draw for one shard (rank x micro-batch) of a step: shard 0
/// keeps the single-process purposes, so world size 1 trains exactly as before.
fn shard_purpose(purpose: u64, shard: usize) -> u64 {
    purpose + ((shard as u64) << 8)
}

/// The libtorch device a trial asks for.
pub fn device_for_spec(spec: &TrialSpec) -> Result<Device, TrainError> {
    crate::cuda::device_for(spec.device).map_err(|reason| TrainError::Setup {
        trial: spec.trial.clone(),
        reason,
    })
}

impl Trainer {
    /// A single-process trainer.
    pub fn new(spec: TrialSpec, data: impl Into<TrainingData>) -> Result<Trainer, TrainError> {
        Self::with_collective(spec, data, Box::new(SingleProcess), DEFAULT_BUCKET_BYTES)
    }

    /// A trainer that is one rank of a data-parallel trial: rank 0's initial weights are
    /// broadcast to all, and every update averages gradients over `comm`.
    pub fn with_collective(
        spec: TrialSpec,
        data: impl Into<TrainingData>,
        comm: Box<dyn Collective>,
        bucket_bytes: usize,
    ) -> Result<Trainer, TrainError> {
        let data = data.into();
        let device = device_for_spec(&spec)?;
        let n_train = check_setup(&spec, &data, comm.as_ref())?;
        let setup = |reason: String| TrainError::Setup {
            trial: spec.trial.clone(),
            reason,
        };
        let config = crate::nets::config::resolve(&spec.model, data.channels(), data.classes());
        if let Some(side) = config.sides.iter().find(|&&s| s < 1 << config.d_depth) {
            return Err(setup(format!(
                "an input side of {side} is too short for the critic's {} halvings (model.patch or model.depth)",
                config.d_depth
            )));
        }
        rng::reseed(mix(spec.seed, 0, 1));
        let model = Model::new(config, spec.variant, device);
        let (teacher, teachers) = read_sources(&spec, &data, &model, device)?;
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
            n: n_train,
            batch_size: h.batch_size as usize * comm.world_size(),
            seed: spec.seed,
        };
        let mut trainer = Trainer {
            spec,
            data,
            model,
            device,
            main,
            bits,
            critic,
            sampler,
            comm,
            bucket_bytes,
            comm_seconds: 0.0,
            step: 0,
            teacher,
            teachers,
        };
        trainer.broadcast_variables()?;
        Ok(trainer)
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    pub fn collectives(&mut self) -> &mut dyn Collective {
        self.comm.as_mut()
    }

    fn dist_error(&self, e: DistError) -> TrainError {
        TrainError::Collective {
            trial: self.spec.trial.clone(),
            rank: self.comm.rank(),
            source: e,
        }
    }

    /// Makes every rank's weights and statistics rank 0's (they are equal already when every
    /// rank initialises from the same seed; this makes it a guarantee).
    pub fn broadcast_variables(&mut self) -> Result<(), TrainError> {
        if !self.comm.communicates() {
            return Ok(());
        }
        let vars = self.model.named_variables();
        tch::no_grad(|| vars.iter().try_for_each(|(_, v)| self.comm.broadcast(v, 0)))
            .map_err(|e| self.dist_error(e))
    }

    /// Checks that every rank is at the same step (after a resume, say).
    pub fn agree_on_step(&mut self) -> Result<(), TrainError> {
        let step = self.step as f64;
        let mean = mean_scalars(self.comm.as_mut(), &[step]).map_err(|e| self.dist_error(e))?;
        if mean[0] != step {
            return Err(TrainError::Setup {
                trial: self.spec.trial.clone(),
                reason: format!(
                    "rank {} resumed at step {} but the ranks' mean step is {}: they read different checkpoints",
                    self.comm.rank(),
                    self.step,
                    mean[0]
                ),
            });
        }
        Ok(())
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

    /// The (augmented) images of one shard of `step`: shard `rank * microBatches + m` takes
    /// the shard-th slice of the step's whole batch.
    pub fn shard_batch(&self, step: u64, shard: usize) -> (Tensor, Tensor) {
        let per_shard = (self.spec.hyper.batch_size / self.spec.hyper.micro_batches.max(1)) as usize;
        let indices = self.sampler.indices(step);
        let mine = &indices[shard * per_shard..(shard + 1) * per_shard];
        let data = match &self.data {
            TrainingData::Images(d) => d,
            TrainingData::Volumes(v) => return self.patch_batch(v, step, shard, mine),
        };
        let samples: Vec<&Sample> = mine.iter().map(|&i| &data.train[i]).collect();
        let (images, labels) = batch(&samples, data.channels, data.size, self.device);
        if self.spec.hyper.augment {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.spec.seed, step, shard_purpose(2, shard)));
            augment(&images, &labels, &mut rng)
        } else {
            (images, labels)
        }
    }

    /// One random patch of each of the shard's volumes (N, 1, z, y, x) with its labels
    /// (N, z, y, x): corners, foreground centring and flips drawn from (seed, step, shard); a
    /// third of all patches, counted over the run, centred on a labelled voxel.
    fn patch_batch(
        &self,
        volumes: &VolumeSet,
        step: u64,
        shard: usize,
        indices: &[usize],
    ) -> (Tensor, Tensor) {
        let size: [usize; 3] = std::array::from_fn(|a| self.model.config.sides[a] as usize);
        let sampler = PatchSampler {
            flips: self.spec.hyper.augment,
            ..PatchSampler::new(size)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.spec.seed, step, shard_purpose(2, shard)));
        let first = step as usize * self.sampler.batch_size + shard * indices.len();
        let (mut voxels, mut labels) = (Vec::new(), Vec::new());
        for (j, &i) in indices.iter().enumerate() {
            let vol = &volumes.train[i];
            let patch = sampler.draw(first + j, &vol.foreground, &mut rng);
            let (v, l) = extract(&vol.voxels, &vol.labels, vol.sides, &patch, size, 0.0);
            voxels.extend(v);
            labels.extend(l);
        }
        let mut shape = vec![indices.len() as i64, 1];
        shape.extend(size.map(|s| s as i64));
        let images = Tensor::from_slice(&voxels)
            .view(shape.as_slice())
            .to_device(self.device);
        shape.remove(1);
        let labels = Tensor::from_slice(&labels)
            .view(shape.as_slice())
            .to_kind(Kind::Int64)
            .to_device(self.device);
        (images, labels)
    }

    /// Averages gradients over ranks (bucketed).
    fn average(&mut self, tensors: &[Tensor]) -> Result<(), TrainError> {
        let stats = all_reduce_mean(self.comm.as_mut(), tensors, self.bucket_bytes)
            .map_err(|e| self.dist_error(e))?;
        self.comm_seconds += stats.elapsed.as_secs_f64();
        Ok(())
    }

    /// Averages parameter groups' flat gradient buffers over ranks, in place.
    fn average_flat(&mut self, buffers: &[Tensor]) -> Result<(), TrainError> {
        let stats = all_reduce_mean_flat(self.comm.as_mut(), buffers, self.bucket_bytes)
            .map_err(|e| self.dist_error(e))?;
        self.comm_seconds += stats.elapsed.as_secs_f64();
        Ok(())
    }

    /// One C+S update followed by one D update, each over this rank's micro-batches and then
    /// averaged over ranks.
    pub fn train_step(&mut self) -> Result<StepMetrics, TrainError> {
        let at = self.step_settings();
        let (main_sums, kept) = self.update_compressor_and_segmentor(&at)?;
        let critic_sum = self.update_critic(&at, &kept)?;
        let [seg, dis, rate, distill, rebuilt] = main_sums;
        self.finish_step(&at, [seg, dis, rate, critic_sum, distill, rebuilt])
    }

    /// This step's learning rate, critic weight and micro-batch count.
    fn step_settings(&self) -> StepSettings {
        let h = &self.spec.hyper;
        let lr = learning_rate(h.lr, h.lr_schedule, h.lr_min_ratio, self.step, self.spec.steps);
        StepSettings {
            step: self.step,
            micro: h.micro_batches.max(1) as usize,
            lr,
            lr_factor: lr / h.lr,
            w_dis: ramp(h.w_dis, h.dis_warmup_steps, self.step),
            lambda_rate: ramp(h.lambda_rate, h.rate_warmup_steps, self.step),
        }
    }

    /// The C+S update with D frozen: gradients flow through D into S, but D is not updated.
    /// The sums over micro-batches of loss_seg, loss_dis, loss_rate, loss_distill and
    /// loss_reconstruction, and each micro-batch's detached predictions with their targets for
    /// the critic's update.
    fn update_compressor_and_segmentor(
        &mut self,
        at: &StepSettings,
    ) -> Result<([f64; 5], Predictions), TrainError> {
        let h = self.spec.hyper.clone();
        let (step, micro) = (at.step, at.micro);
        let first_shard = self.comm.rank() * micro;
        let mut sums = [0.0f64; 5];
        self.model.set_trainable(Group::Critic, false);
        self.main.zero_grad();
        if let Some(b) = self.bits.as_mut() {
            b.zero_grad();
        }
        let per_micro_stats = MicroBatchStatistics::begin(&self.model, micro);
        let mut kept = Vec::with_capacity(micro);
        for m in 0..micro {
            let shard = first_shard + m;
            per_micro_stats.restore();
            let (images, labels) = self.shard_batch(step, shard);
            rng::reseed(mix(self.spec.seed, step, shard_purpose(3, shard)));
            let target = self.model.target(&labels);
            // bf16: the networks' forward passes under autocast; the losses from fp32 copies of
            // their outputs (`to_kind` is the identity in fp32: the fp32 step is unchanged).
            let fwd = with_precision(h.precision, self.device, || self.model.forward(&images, true));
            let probs = fwd.probs.to_kind(Kind::Float);
            let loss_seg = seg_loss(h.seg_loss, &probs, &target);
            // The objective's terms, summed once at the end.
            let mut terms = vec![loss_seg.shallow_clone()];
            sums[0] += loss_seg.double_value(&[]);
            if let Some(d) = self.model.critic.as_ref() {
                let l = critic_loss(d, &probs, &target, &h, self.device);
                sums[1] += l.double_value(&[]);
                terms.push(l * at.w_dis);
            }
            if let Some(Teacher {
                model: teacher,
                weight,
                loss,
            }) = &self.teacher
            {
                let soft = tch::no_grad(|| {
                    with_precision(h.precision, self.device, || teacher.forward(&images, false).probs)
                })
                .to_kind(Kind::Float);
                let l = distill_loss(*loss, h.seg_loss, &probs, &soft);
                sums[3] += l.double_value(&[]);
                terms.push(l * *weight);
            }
            terms.extend(self.code_terms(at, &images, &fwd, &mut sums));
            (Tensor::stack(&terms, 0).sum(Kind::Float) / micro as f64).backward();
            per_micro_stats.collect();
            kept.push((probs.detach(), target));
        }
        per_micro_stats.finish();
        let mut grads = vec![self.main.flat_grad().shallow_clone()];
        if let Some(b) = &self.bits {
            grads.push(b.flat_grad().shallow_clone());
        }
        self.average_flat(&grads)?;
        self.main.step(at.lr);
        if let Some(b) = self.bits.as_mut() {
            b.step(h.lr_bit_model * at.lr_factor);
        }
        self.model.set_trainable(Group::Critic, true);
        Ok((sums, kept))
    }

    /// The objective's terms on the code (none for D1): q's fit to the bits, D4's rate loss and
    /// with hyper.reconstructionWeight g's map against the image; their values added to `sums`
    /// (loss_rate at 2, loss_reconstruction at 4).
    fn code_terms(
        &self,
        at: &StepSettings,
        images: &Tensor,
        fwd: &Forward,
        sums: &mut [f64; 5],
    ) -> Vec<Tensor> {
        let mut terms = Vec::new();
        if let (Some(q), Some(x), Some(b)) = (&self.model.bit_model, &fwd.activations, &fwd.bits) {
            // q and the rate loss in fp32 (a bit's cost is a small difference of logs).
            let (x, b) = (x.to_kind(Kind::Float), b.detach().to_kind(Kind::Float));
            // q is fitted to the code in every compressing variant (so that every variant's
            // code can be entropy coded); only D4 pushes the rate gradient into C.
            let fit = q.expected_bits(&x.detach(), &b, false).mean(Kind::Float);
            sums[2] += fit.double_value(&[]);
            terms.push(fit);
            if self.spec.variant.has_rate_loss() {
                terms.push(q.expected_bits(&x, &b, true).mean(Kind::Float) * at.lambda_rate);
            }
        }
        let weight = self.spec.hyper.reconstruction_weight;
        if let (true, Some(features)) = (weight > 0.0, &fwd.features) {
            let l = reconstruction_loss(features, images, self.model.config.g_out);
            sums[4] += l.double_value(&[]);
            terms.push(l * weight);
        }
        terms
    }

    /// The D update with C and S frozen (the predictions `kept` are detached); the sum of the
    /// critic's loss over micro-batches (0 without a critic).
    fn update_critic(&mut self, at: &StepSettings, kept: &Predictions) -> Result<f64, TrainError> {
        let h = &self.spec.hyper;
        let mut sum = 0.0;
        if let Some(opt) = self.critic.as_mut() {
            opt.zero_grad();
        }
        if let (Some(d), true) = (&self.model.critic, self.critic.is_some()) {
            let per_micro_stats = MicroBatchStatistics::begin(&self.model, at.micro);
            for (probs, target) in kept {
                per_micro_stats.restore();
                let l = critic_loss(d, probs, target, h, self.device);
                sum += l.double_value(&[]);
                (-l / at.micro as f64).backward();
                per_micro_stats.collect();
            }
            per_micro_stats.finish();
        }
        if let Some(grad) = self.critic.as_ref().map(|c| c.flat_grad().shallow_clone()) {
            self.average_flat(&[grad])?;
        }
        let (lr_critic, d_clip) = (self.spec.hyper.lr_critic, self.spec.hyper.d_clip);
        if let Some(opt) = self.critic.as_mut() {
            opt.step(lr_critic * at.lr_factor);
            // SegAN's clipping keeps the critic Lipschitz-bounded and training stable.
            opt.clamp(d_clip);
        }
        Ok(sum)
    }

    /// After both updates: the ranks' running statistics and losses averaged, the divergence
    /// check, the step counted. `sums` are loss_seg, loss_dis, loss_rate, loss_critic,
    /// loss_distill and loss_reconstruction summed over this rank's micro-batches.
    fn finish_step(&mut self, at: &StepSettings, sums: [f64; 6]) -> Result<StepMetrics, TrainError> {
        // Each rank normalised by its own batch statistics; the running statistics used at
        // evaluation are averaged so that every rank holds the same model.
        let buffers: Vec<Tensor> = self.model.buffers().into_iter().map(|(_, t)| t).collect();
        self.average(&buffers)?;
        let started = std::time::Instant::now();
        let local: Vec<f64> = sums.iter().map(|s| s / at.micro as f64).collect();
        let mean = mean_scalars(self.comm.as_mut(), &local).map_err(|e| self.dist_error(e))?;
        self.comm_seconds += started.elapsed().as_secs_f64();
        // Every rank sees the same mean, so all of them stop together on divergence.
        if !mean[0].is_finite() {
            return Err(TrainError::Diverged {
                trial: self.spec.trial.clone(),
                step: at.step,
                what: "loss_seg",
                value: mean[0],
            });
        }
        let has_code = self.model.bit_model.is_some();
        self.step += 1;
        Ok(StepMetrics {
            step: self.step,
            loss_seg: mean[0],
            loss_dis: self.model.critic.is_some().then_some(mean[1]),
            loss_rate: has_code.then_some(mean[2]),
            loss_critic: self.critic.is_some().then_some(mean[3]),
            loss_distill: self.teacher.is_some().then_some(mean[4]),
            loss_reconstruction: (has_code && self.spec.hyper.reconstruction_weight > 0.0).then_some(mean[5]),
            lr: at.lr,
            w_dis: at.w_dis,
            lambda_rate: self.spec.variant.has_rate_loss().then_some(at.lambda_rate),
        })
    }

    /// Dice, IoU and the rate estimate on the validation split (inference mode: BatchNorm
    /// running statistics, deterministic binarization).
    pub fn evaluate(&self) -> Evaluation {
        match &self.data {
            TrainingData::Images(d) => crate::eval::evaluate_images(
                &self.model,
                &d.val,
                d.channels,
                d.size,
                self.device,
                self.spec.hyper.batch_size as usize,
            ),
            TrainingData::Volumes(v) => crate::eval::evaluate_volumes(
                &self.model,
                &v.val,
                &v.preprocessing,
                self.device,
                self.spec.hyper.batch_size as usize,
            ),
        }
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
        self.model.load_weights(&ckpt.weights).map_err(err)?;
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

/// What a trainer cannot start without: data of the model's kind and size, both splits, as many
/// ranks as the spec says. The training split's size.
fn check_setup(spec: &TrialSpec, data: &TrainingData, comm: &dyn Collective) -> Result<usize, TrainError> {
    let setup = |reason: String| TrainError::Setup {
        trial: spec.trial.clone(),
        reason,
    };
    match data {
        TrainingData::Images(d) if d.size != spec.model.input_size || spec.model.dims != 2 => {
            return Err(setup(format!(
                "dataset images are {}px (2D) but the model is {}D with inputSize {}",
                d.size, spec.model.dims, spec.model.input_size
            )));
        }
        TrainingData::Volumes(_) if spec.model.dims != 3 => {
            return Err(setup("the dataset holds volumes but model.dims is not 3".into()));
        }
        _ => {}
    }
    let (n_train, n_val) = data.counts();
    if n_train == 0 || n_val == 0 {
        return Err(setup("dataset needs both training and validation images".into()));
    }
    if comm.world_size() != spec.world_size as usize {
        return Err(setup(format!(
            "worldSize is {} but the {} backend has {} rank(s)",
            spec.world_size,
            comm.backend(),
            comm.world_size()
        )));
    }
    Ok(n_train)
}

/// A distillation teacher (evaluated in inference mode, never trained) and the weight of its
/// term in the C+S objective.
struct Teacher {
    model: Model,
    weight: f64,
    loss: DistillLoss,
}

/// The trial's sources (hyper.warmStart, hyper.distill), loaded: the warm start's weights
/// copied into `model`, the teacher returned with its term's weight, and what each cost.
fn read_sources(
    spec: &TrialSpec,
    data: &TrainingData,
    model: &Model,
    device: Device,
) -> Result<(Option<Teacher>, Vec<TeacherCost>), TrainError> {
    let sources =
        load_sources(spec, data.channels(), data.classes(), device).map_err(|e| TrainError::Setup {
            trial: spec.trial.clone(),
            reason: e.to_string(),
        })?;
    let named = |text: &str| {
        let wanted = orchestra_api::ModelSource::parse(text).ok();
        sources.iter().position(|s| Some(&s.source) == wanted.as_ref())
    };
    if let Some(i) = spec.hyper.warm_start.as_deref().and_then(named) {
        let report = warm_start(model, &sources[i].model);
        tracing::info!(
            trial = %spec.trial, source = %sources[i].source, copied = report.copied,
            kept = report.kept.len(), "warm start: tensors with a matching name and shape copied"
        );
        if report.copied == 0 {
            return Err(TrainError::Setup {
                trial: spec.trial.clone(),
                reason: format!("warm start {}: no tensor matches this model", sources[i].source),
            });
        }
    }
    let teacher_index = spec
        .hyper
        .distill
        .as_ref()
        .and_then(|d| Some((named(&d.from)?, d)));
    if let Some((i, d)) = teacher_index {
        tracing::info!(
            trial = %spec.trial, teacher = %sources[i].source, weight = d.weight, loss = ?d.loss,
            steps = sources[i].cost.steps, "distilling from the teacher's predictions"
        );
    }
    let teachers = sources.iter().map(|s| s.cost.clone()).collect();
    let teacher = teacher_index.map(|(i, d)| Teacher {
        model: sources.into_iter().nth(i).expect("index of a source").model,
        weight: d.weight,
        loss: d.loss,
    });
    Ok((teacher, teachers))
}

/// Each micro-batch's detached predictions with their targets: what the critic's update sees.
type Predictions = Vec<(Tensor, Tensor)>;

/// What one training step runs with, from the schedules at its step.
struct StepSettings {
    step: u64,
    micro: usize,
    lr: f64,
    /// lr over the base learning rate: the bit model's and the critic's rates follow it.
    lr_factor: f64,
    w_dis: f64,
    lambda_rate: f64,
}

/// BatchNorm running statistics under micro-batches: each micro-batch starts from the same
/// statistics and the results are averaged, which is what data-parallel ranks do (each updates
/// its own copy, then the copies are averaged). The momentum update is affine, so the average
/// equals the average over ranks exactly. With one micro-batch this does nothing.
struct MicroBatchStatistics {
    buffers: Vec<Tensor>,
    start: Vec<Tensor>,
    sum: Vec<Tensor>,
    micro: usize,
}

impl MicroBatchStatistics {
    fn begin(model: &Model, micro: usize) -> MicroBatchStatistics {
        let buffers: Vec<Tensor> = if micro > 1 {
            model.buffers().into_iter().map(|(_, t)| t).collect()
        } else {
            Vec::new()
        };
        let start = buffers.iter().map(|t| t.copy()).collect();
        let sum = buffers.iter().map(|t| t.zeros_like()).collect();
        MicroBatchStatistics {
            buffers,
            start,
            sum,
            micro,
        }
    }

    fn restore(&self) {
        tch::no_grad(|| {
            for (b, s) in self.buffers.iter().zip(&self.start) {
                b.shallow_clone().copy_(s);
            }
        });
    }

    fn collect(&self) {
        tch::no_grad(|| {
            for (b, s) in self.buffers.iter().zip(&self.sum) {
                let _ = s.shallow_clone().f_add_(b).expect("same shape");
            }
        });
    }

    fn finish(&self) {
        tch::no_grad(|| {
            for (b, s) in self.buffers.iter().zip(&self.sum) {
                b.shallow_clone().copy_(&(s / self.micro as f64));
            }
        });
    }
}
