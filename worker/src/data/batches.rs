//! Turning samples into tensors: the per-epoch shuffle, batching and augmentation.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::Sample;

/// A deterministic shuffle of `n` indices for `epoch`: the epoch is part of the seed, so any
/// step's batch can be recomputed after a restart without replaying earlier steps.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    idx.shuffle(&mut rng);
    idx
}

/// Which training images make up each step's batch. Epochs drop their last partial batch.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    pub n: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl BatchSampler {
    pub fn batches_per_epoch(&self) -> usize {
        (self.n / self.batch_size).max(1)
    }

    /// Indices of the images of `step`.
    pub fn indices(&self, step: u64) -> Vec<usize> {
        let per_epoch = self.batches_per_epoch() as u64;
        let (epoch, within) = (step / per_epoch, (step % per_epoch) as usize);
        let perm = epoch_permutation(self.n, self.seed, epoch);
        (0..self.batch_size)
            // With fewer images than a batch, wrap around: tiny datasets still train.
            .map(|k| perm[(within * self.batch_size + k) % self.n])
            .collect()
    }
}

/// Stacks samples into an image tensor (N, C, H, W) in [0, 1] and a label tensor (N, H, W) of
/// class indices (int64).
pub fn batch(samples: &[&Sample], channels: usize, size: u32, device: Device) -> (Tensor, Tensor) {
    let s = size as i64;
    let mut image_bytes = Vec::with_capacity(samples.len() * channels * (s * s) as usize);
    let mut mask_bytes = Vec::with_capacity(samples.len() * (s * s) as usize);
    for sample in samples {
        image_bytes.extend_from_slice(&sample.image);
        mask_bytes.extend_from_slice(&sample.mask);
    }
    let n = samples.len() as i64;
    let images = Tensor::from_slice(&image_bytes)
        .view([n, s, s, channels as i64])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .to_device(device)
        / 255.0;
    let masks = Tensor::from_slice(&mask_bytes)
        .view([n, s, s])
        .to_kind(Kind::Int64)
        .to_device(device);
    (images, masks)
}

/// Random horizontal and vertical flips and a random crop of 80-100% of the side, resized back
/// (bilinear for images, nearest for labels). Draws only from `rng`.
pub fn augment(images: &Tensor, masks: &Tensor, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
    let (n, _, h, w) = images.size4().expect("images are (N, C, H, W)");
    let mut out_i = Vec::with_capacity(n as usize);
    let mut out_m = Vec::with_capacity(n as usize);
    for k in 0..n {
        let mut img = images.narrow(0, k, 1);
        let mut msk = masks.narrow(0, k, 1).unsqueeze(1).to_kind(Kind::Float);
        if rng.random_bool(0.5) {
            img = img.flip([3]);
            msk = msk.flip([3]);
        }
        if rng.random_bool(0.5) {
            img = img.flip([2]);
            msk = msk.flip([2]);
        }
        let scale: f64 = rng.random_range(0.8..=1.0);
        let (ch, cw) = (
            (h as f64 * scale).round() as i64,
            (w as f64 * scale).round() as i64,
        );
        if ch < h || cw < w {
            let (y0, x0) = (rng.random_range(0..=h - ch), rng.random_range(0..=w - cw));
            img = img
                .narrow(2, y0, ch)
                .narrow(3, x0, cw)
                .upsample_bilinear2d([h, w], false, None, None);
            msk = msk
                .narrow(2, y0, ch)
                .narrow(3, x0, cw)
                .upsample_nearest2d([h, w], None, None);
        }
        out_i.push(img);
        out_m.push(msk.squeeze_dim(1).to_kind(Kind::Int64));
    }
    (Tensor::cat(&out_i, 0), Tensor::cat(&out_m, 0))
}

/// Resizes a sample's image (bilinear) and mask (nearest) from `from` to `to` pixels square.
pub(super) fn resize(sample: &Sample, from: u32, to: u32, channels: usize) -> Sample {
    let colour = if channels == 3 {
        image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(from, from, sample.image.clone()).expect("sized buffer"),
        )
    } else {
        image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(from, from, sample.image.clone()).expect("sized buffer"),
        )
    };
    let resized = colour.resize_exact(to, to, image::imageops::FilterType::Triangle);
    let image = if channels == 3 {
        resized.to_rgb8().into_raw()
    } else {
        resized.to_luma8().into_raw()
    };
    let mask = image::GrayImage::from_raw(from, from, sample.mask.clone()).expect("sized buffer");
    let mask = image::imageops::resize(&mask, to, to, image::imageops::FilterType::Nearest).into_raw();
    Sample { image, mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_covers_each_epoch_once_and_is_reproducible() {
        let s = BatchSampler {
            n: 10,
            batch_size: 5,
            seed: 3,
        };
        let mut seen: Vec<usize> = s.indices(0).into_iter().chain(s.indices(1)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(s.indices(7), s.indices(7));
        assert_ne!(s.indices(0), s.indices(2), "epochs are reshuffled");
    }

    #[test]
    fn batch_and_augment_keep_shapes_and_labels() {
        let sample = super::super::synthetic::generate(super::super::SyntheticKind::Nested, 32, 1, 0);
        let (img, msk) = batch(&[&sample, &sample], 1, 32, Device::Cpu);
        assert_eq!(img.size(), [2, 1, 32, 32]);
        assert_eq!(msk.size(), [2, 32, 32]);
        assert!(img.max().double_value(&[]) <= 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (ai, am) = augment(&img, &msk, &mut rng);
        assert_eq!(ai.size(), img.size());
        assert_eq!(am.size(), msk.size());
        let labels: Vec<i64> = Vec::try_from(am.flatten(0, -1).unique_dim(0, true, false, false).0).unwrap();
        assert!(labels.iter().all(|l| (0..3).contains(l)));
    }
}
