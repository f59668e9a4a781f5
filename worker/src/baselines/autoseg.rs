//! Auto/Seg, the paper's two-stage baseline: an autoencoder with exactly C's code (K x H/f x
//! W/f binary code, the same compressor and stochastic binarization), trained for pixel MSE
//! alone; its reconstructions are segmented by the D1 segmentor, which never saw them. The
//! decoder is g's architecture with one output channel per image channel and a sigmoid. Its
//! rate is the raw code length plus the same 2-byte header and 1-byte check value as our streams: an upper bound (the
//! code is not entropy coded), stated as such in its setting.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Reduction, Tensor};

use super::rate_accuracy::segment_scores;
use super::rate_point::RatePoint;
use crate::data::{augment, batch, BatchSampler, Sample};
use crate::nets::binarize::binarize;
use crate::nets::compressor::Compressor;
use crate::nets::reconstructor::Reconstructor;
use crate::nets::{rng, Model, NetConfig};
use crate::train::adam::Adam;

pub struct AutoEncoder {
    pub vs: nn::VarStore,
    pub config: NetConfig,
    compressor: Compressor,
    decoder: Reconstructor,
}

impl AutoEncoder {
    /// An autoencoder with the code of `config` (C's preset), on `device`.
    pub fn new(config: &NetConfig, device: Device, seed: u64) -> AutoEncoder {
        rng::reseed(seed);
        let vs = nn::VarStore::new(device);
        let mut decoder_config = config.clone();
        decoder_config.g_out = config.in_channels;
        let compressor = Compressor::new(vs.root() / "c", config);
        let decoder = Reconstructor::new(vs.root() / "decoder", &decoder_config);
        AutoEncoder {
            vs,
            config: config.clone(),
            compressor,
            decoder,
        }
    }

    /// Images in [0, 1] -> their reconstructions through the binary code.
    pub fn reconstruct(&self, images: &Tensor, train: bool) -> Tensor {
        let code = binarize(&self.compressor.forward_t(images, train), train);
        self.decoder.forward_t(&code, train).sigmoid()
    }

    /// Trains for pixel MSE; returns the mean loss of the first and of the last tenth of the
    /// steps (the caller can check that it learned).
    pub fn train(&self, samples: &[Sample], steps: u64, batch_size: usize, lr: f64, seed: u64) -> (f64, f64) {
        let params: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| !crate::nets::model::is_buffer(n))
            .collect();
        let mut adam = Adam::new(params, 0.9, 0.999);
        let sampler = BatchSampler {
            n: samples.len(),
            batch_size,
            seed,
        };
        let device = self.vs.device();
        let (channels, side) = self.shape();
        let tenth = (steps / 10).max(1);
        let (mut first, mut last) = (0.0, 0.0);
        for step in 0..steps {
            let chosen: Vec<&Sample> = sampler.indices(step).into_iter().map(|i| &samples[i]).collect();
            let (images, labels) = batch(&chosen, channels, side, device);
            let mut r = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (images, _) = augment(&images, &labels, &mut r);
            rng::reseed(seed.wrapping_add(step));
            adam.zero_grad();
            let loss = self.reconstruct(&images, true).mse_loss(&images, Reduction::Mean);
            loss.backward();
            adam.step(lr);
            let v = loss.double_value(&[]);
            if step < tenth {
                first += v / tenth as f64;
            }
            if step >= steps - tenth {
                last += v / tenth as f64;
            }
        }
        (first, last)
    }

    /// Image channels and side the autoencoder takes.
    fn shape(&self) -> (usize, u32) {
        (self.config.in_channels as usize, self.config.input_size as u32)
    }

    /// The reconstructions of `samples` as 8-bit images (inference: deterministic bits).
    pub fn reconstructions(&self, samples: &[Sample]) -> Vec<Sample> {
        let device = self.vs.device();
        let (channels, side) = self.shape();
        let mut out = Vec::with_capacity(samples.len());
        tch::no_grad(|| {
            for chunk in samples.chunks(16) {
                let refs: Vec<&Sample> = chunk.iter().collect();
                let (images, _) = batch(&refs, channels, side, device);
                let rec = (self.reconstruct(&images, false) * 255.0)
                    .round()
                    .clamp(0.0, 255.0)
                    .to_kind(Kind::Uint8)
                    .permute([0, 2, 3, 1])
                    .contiguous()
                    .to_device(Device::Cpu);
                for (i, s) in chunk.iter().enumerate() {
                    out.push(Sample {
                        image: Vec::<u8>::try_from(rec.get(i as i64).reshape([-1])).expect("u8 pixels"),
                        mask: s.mask.clone(),
                    });
                }
            }
        });
        out
    }
}

/// Auto/Seg on held-out images: the reconstructions segmented by the D1 model.
pub fn autoseg_point(d1: &Model, ae: &AutoEncoder, samples: &[Sample]) -> RatePoint {
    let (channels, side) = ae.shape();
    let decoded = ae.reconstructions(samples);
    let scores = segment_scores(d1, &decoded, channels, side);
    // Every image's code is the same length: one image's bits over its pixels.
    let bits = ae.config.code_bits() as f64 + 24.0;
    let setting = format!(
        "{} raw code bits + 2-byte header + check value",
        ae.config.code_bits()
    );
    let pixels = side as f64 * side as f64;
    RatePoint::codec("Auto/Seg", setting, bits, pixels, scores, samples.len())
}
