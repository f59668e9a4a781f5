//! `hyper.codePretrainSteps`: before a compressing trial's own steps, C and g learn to rebuild
//! the image through the binary code (an autoencoder, pixel MSE, no rate term), so that the
//! code carries the image before s and the rate loss shape it, and g hands s an image-like map:
//! what a D1's segmentor, copied by `hyper.warmStart`, was trained to read.
//!
//! It runs on the trial's own optimiser for C, g and s (s gets no gradient, so Adam leaves it
//! exactly as it was), whose moments and step count are then forgotten: the trial's first step
//! is that of a fresh optimiser, as without pre-training. Batches are those of the trial's
//! first steps (the same sampler and augmentation), and every random draw derives from
//! (seed, step), so a run that is interrupted before its first checkpoint repeats it exactly.

use tch::Tensor;

use super::{mix, shard_purpose, MicroBatchStatistics, TrainError, Trainer};
use crate::dist::buckets::mean_scalars;
use crate::nets::rng;
use crate::train::autocast::with_precision;
use crate::train::reconstruction_loss::reconstruction_loss;

/// The seed purpose of the pre-training's binarization noise (apart from the steps' own).
const PRETRAIN_PURPOSE: u64 = 9;

/// Mean reconstruction loss (MSE, averaged over ranks) of the pre-training's first and last
/// tenth of steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainLosses {
    pub first: f64,
    pub last: f64,
}

impl Trainer {
    /// Trains C and g for `steps` autoencoder steps, before the trial's first step;
    /// `on_step(done, loss)` after each. Refused once the trial has trained, and for D1.
    pub fn pretrain_code(
        &mut self,
        steps: u64,
        on_step: &mut dyn FnMut(u64, f64),
    ) -> Result<PretrainLosses, TrainError> {
        let refuse = |reason: &str| TrainError::Setup {
            trial: self.spec.trial.clone(),
            reason: format!("code pre-training {reason}"),
        };
        if self.step > 0 {
            return Err(refuse("comes before the trial's first step"));
        }
        if self.model.reconstructor.is_none() {
            return Err(refuse("needs a compressing variant (D2-D4)"));
        }
        // A tenth of the steps, at least one (never more than `steps` when there are any).
        let tenth = (steps / 10).max(1);
        let (mut first, mut last) = (0.0, 0.0);
        for step in 0..steps {
            let loss = self.pretrain_step(step)?;
            if step < tenth {
                first += loss / tenth as f64;
            }
            if step >= steps.saturating_sub(tenth) {
                last += loss / tenth as f64;
            }
            on_step(step + 1, loss);
        }
        self.main.reset();
        Ok(PretrainLosses { first, last })
    }

    /// One autoencoder update of C and g over this rank's micro-batches, averaged over ranks;
    /// the loss, averaged over ranks.
    fn pretrain_step(&mut self, step: u64) -> Result<f64, TrainError> {
        let h = self.spec.hyper.clone();
        let micro = h.micro_batches.max(1) as usize;
        let first_shard = self.comm.rank() * micro;
        let g_out = self.model.config.g_out;
        self.main.zero_grad();
        let per_micro_stats = MicroBatchStatistics::begin(&self.model, micro);
        let mut sum = 0.0;
        for m in 0..micro {
            let shard = first_shard + m;
            per_micro_stats.restore();
            let (images, _) = self.shard_batch(step, shard);
            rng::reseed(mix(self.spec.seed, step, shard_purpose(PRETRAIN_PURPOSE, shard)));
            let rebuilt = with_precision(h.precision, self.device, || self.model.rebuild(&images, true))
                .expect("a compressing variant");
            let loss = reconstruction_loss(&rebuilt, &images, g_out);
            sum += loss.double_value(&[]);
            (loss / micro as f64).backward();
            per_micro_stats.collect();
        }
        per_micro_stats.finish();
        let grad = self.main.flat_grad().shallow_clone();
        self.average_flat(&[grad])?;
        self.main.step(h.lr);
        let buffers: Vec<Tensor> = self.model.buffers().into_iter().map(|(_, t)| t).collect();
        self.average(&buffers)?;
        let mean = mean_scalars(self.comm.as_mut(), &[sum / micro as f64]).map_err(|e| self.dist_error(e))?;
        if !mean[0].is_finite() {
            return Err(TrainError::Diverged {
                trial: self.spec.trial.clone(),
                step,
                what: "the code pre-training's reconstruction loss",
                value: mean[0],
            });
        }
        Ok(mean[0])
    }
}
