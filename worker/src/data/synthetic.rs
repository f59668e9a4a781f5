//! Seeded synthetic data that looks like the task, for tests, demos and benchmarks.
//!
//! `Lesion`: dermoscopy-like RGB images: textured skin, one or two irregular lesion blobs with
//! soft borders and colour variation, hair-like strokes and sensor noise; binary masks.
//! `Nested`: MR-like grey images with a myocardium-like ring (class 1) around a blood pool
//! (class 2), plus distractor structures; 3-class masks.
//! Every image depends only on (seed, index): same seed, same data, in any order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Sample;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntheticKind {
    Lesion,
    Nested,
}

impl SyntheticKind {
    pub fn channels(self) -> usize {
        match self {
            SyntheticKind::Lesion => 3,
            SyntheticKind::Nested => 1,
        }
    }

    pub fn classes(self) -> usize {
        match self {
            SyntheticKind::Lesion => 2,
            SyntheticKind::Nested => 3,
        }
    }
}

/// Generates image `index` of the synthetic set `seed`.
pub fn generate(kind: SyntheticKind, size: u32, seed: u64, index: u64) -> Sample {
    // SplitMix-style mixing so that neighbouring (seed, index) pairs give unrelated streams.
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_add(0x632B_E59B_D9B4_E019),
    );
    match kind {
        SyntheticKind::Lesion => lesion(&mut rng, size as usize),
        SyntheticKind::Nested => nested(&mut rng, size as usize),
    }
}

/// Smooth random field in [-1, 1]: bilinear value noise over a few octaves.
fn value_noise(rng: &mut ChaCha8Rng, size: usize, base_cells: usize, octaves: usize) -> Vec<f32> {
    let mut out = vec![0f32; size * size];
    let mut amplitude = 1.0f32;
    let mut total = 0.0f32;
    for o in 0..octaves {
        let cells = base_cells << o;
        let grid: Vec<f32> = (0..(cells + 1) * (cells + 1))
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let scale = cells as f32 / size as f32;
        for y in 0..size {
            let gy = y as f32 * scale;
            let (y0, fy) = (gy.floor() as usize, gy.fract());
            for x in 0..size {
                let gx = x as f32 * scale;
                let (x0, fx) = (gx.floor() as usize, gx.fract());
                let at = |yy: usize, xx: usize| grid[yy * (cells + 1) + xx];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
                let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
                out[y * size + x] += amplitude * (top * (1.0 - fy) + bottom * fy);
            }
        }
        total += amplitude;
        amplitude *= 0.5;
    }
    out.iter_mut().for_each(|v| *v /= total);
    out
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: enough for pixel noise, and keeps the dependency list short.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// An irregular closed shape: radius as a function of angle, a sum of low harmonics.
struct Blob {
    cx: f32,
    cy: f32,
    radius: f32,
    harmonics: Vec<(f32, f32, f32)>, // (order, amplitude, phase)
    squash: f32,
    rotation: f32,
}

impl Blob {
    fn random(rng: &mut ChaCha8Rng, size: f32, r_lo: f32, r_hi: f32, wobble: f32) -> Blob {
        let radius = size * rng.random_range(r_lo..r_hi);
        let margin = radius * 1.1;
        let lo = margin.min(size / 2.0 - 1.0);
        let hi = (size - margin).max(lo + 1.0);
        Blob {
            cx: rng.random_range(lo..hi),
            cy: rng.random_range(lo..hi),
            radius,
            harmonics: (2..=6)
                .map(|k| {
                    let amp = rng.random_range(0.0..wobble) / k as f32 * 2.0;
                    (k as f32, amp, rng.random_range(0.0..std::f32::consts::TAU))
                })
                .collect(),
            squash: rng.random_range(0.7..1.0),
            rotation: rng.random_range(0.0..std::f32::consts::PI),
        }
    }

    /// Signed distance-like value: positive inside, in pixels (approximately).
    fn inside(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (s, c) = self.rotation.sin_cos();
        let (u, v) = (dx * c + dy * s, (-dx * s + dy * c) / self.squash);
        let d = (u * u + v * v).sqrt();
        let theta = v.atan2(u);
        let r = self.radius
            * (1.0
                + self
                    .harmonics
                    .iter()
                    .map(|(k, a, p)| a * (k * theta + p).cos())
                    .sum::<f32>());
        r - d
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Hairs over a skin image: dark quadratic Bezier strokes, anti-aliased by distance to sampled
/// points.
fn paint_hairs(rng: &mut ChaCha8Rng, img: &mut [[f32; 3]], size: usize) {
    let s = size as f32;
    let hairs = rng.random_range(0..=5);
    for _ in 0..hairs {
        let p: Vec<(f32, f32)> = (0..3)
            .map(|_| {
                (
                    rng.random_range(-0.1 * s..1.1 * s),
                    rng.random_range(-0.1 * s..1.1 * s),
                )
            })
            .collect();
        let width = rng.random_range(0.4f32..1.2) * s / 128.0;
        let tone = rng.random_range(30.0f32..80.0);
        let samples = (4.0 * s) as usize;
        for k in 0..=samples {
            let t = k as f32 / samples as f32;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            let hx = a * p[0].0 + b * p[1].0 + c * p[2].0;
            let hy = a * p[0].1 + b * p[1].1 + c * p[2].1;
            let reach = (width * 2.0).ceil() as i32 + 1;
            for yy in (hy as i32 - reach)..=(hy as i32 + reach) {
                for xx in (hx as i32 - reach)..=(hx as i32 + reach) {
                    if yy < 0 || xx < 0 || yy >= size as i32 || xx >= size as i32 {
                        continue;
                    }
                    let d = ((xx as f32 + 0.5 - hx).powi(2) + (yy as f32 + 0.5 - hy).powi(2)).sqrt();
                    let alpha = (1.0 - d / (width + 0.5)).clamp(0.0, 1.0) * 0.8;
                    let i = yy as usize * size + xx as usize;
                    for v in img[i].iter_mut() {
                        *v = v.min(*v * (1.0 - alpha) + tone * alpha);
                    }
                }
            }
        }
    }
}

fn lesion(rng: &mut ChaCha8Rng, size: usize) -> Sample {
    let s = size as f32;
    // Skin: a warm base colour, low-frequency shading and fine pore texture.
    let base_r = rng.random_range(175.0f32..235.0);
    let skin = [
        base_r,
        base_r * rng.random_range(0.68..0.84),
        base_r * rng.random_range(0.55..0.74),
    ];
    let shading = value_noise(rng, size, 2, 3);
    let pores = value_noise(rng, size, (size / 8).max(2), 2);
    let mut img = vec![[0f32; 3]; size * size];
    for (i, px) in img.iter_mut().enumerate() {
        let f = 1.0 + 0.08 * shading[i] + 0.035 * pores[i];
        *px = [skin[0] * f, skin[1] * f, skin[2] * f];
    }

    // Lesions: darker, browner, mottled inside, soft at the border.
    let mut mask = vec![0u8; size * size];
    let count = if rng.random_bool(0.3) { 2 } else { 1 };
    for _ in 0..count {
        let blob = Blob::random(rng, s, 0.1, 0.28, 0.22);
        let dark = rng.random_range(70.0f32..150.0);
        let colour = [
            dark,
            dark * rng.random_range(0.5..0.7),
            dark * rng.random_range(0.4..0.6),
        ];
        let mottle = value_noise(rng, size, 4, 2);
        let softness = blob.radius * rng.random_range(0.04..0.12);
        for y in 0..size {
            for x in 0..size {
                let i = y * size + x;
                let inside = blob.inside(x as f32 + 0.5, y as f32 + 0.5);
                if inside > 0.0 {
                    mask[i] = 1;
                }
                let alpha = sigmoid(inside / softness) * (0.85 + 0.15 * mottle[i]);
                let shade = 1.0 + 0.25 * mottle[i];
                for c in 0..3 {
                    img[i][c] = img[i][c] * (1.0 - alpha) + colour[c] * shade * alpha;
                }
            }
        }
    }

    paint_hairs(rng, &mut img, size);

    let sigma = rng.random_range(2.0f32..6.0);
    let mut image = Vec::with_capacity(size * size * 3);
    for px in &img {
        for v in px {
            image.push((v + sigma * gaussian(rng)).round().clamp(0.0, 255.0) as u8);
        }
    }
    Sample { image, mask }
}

fn nested(rng: &mut ChaCha8Rng, size: usize) -> Sample {
    let s = size as f32;
    let background = value_noise(rng, size, 3, 3);
    let mut img: Vec<f32> = background.iter().map(|v| 45.0 + 25.0 * v).collect();

    // Distractors: bright blobs that are not labelled (other organs, fat).
    for _ in 0..rng.random_range(1..=3) {
        let blob = Blob::random(rng, s, 0.05, 0.14, 0.2);
        let tone = rng.random_range(110.0f32..190.0);
        for y in 0..size {
            for x in 0..size {
                let a = sigmoid(blob.inside(x as f32 + 0.5, y as f32 + 0.5) / 1.5);
                let i = y * size + x;
                img[i] = img[i] * (1.0 - a) + tone * a;
            }
        }
    }

    // The heart-like structure: an outer wall (class 1) around a bright pool (class 2).
    let outer = Blob::random(rng, s, 0.18, 0.3, 0.12);
    let wall = outer.radius * rng.random_range(0.25..0.4);
    let wall_tone = rng.random_range(80.0f32..110.0);
    let pool_tone = rng.random_range(170.0f32..230.0);
    let texture = value_noise(rng, size, 6, 2);
    let mut mask = vec![0u8; size * size];
    for y in 0..size {
        for x in 0..size {
            let i = y * size + x;
            let d = outer.inside(x as f32 + 0.5, y as f32 + 0.5);
            let a_outer = sigmoid(d / 1.2);
            let a_pool = sigmoid((d - wall) / 1.2);
            img[i] = img[i] * (1.0 - a_outer) + wall_tone * (1.0 + 0.1 * texture[i]) * a_outer;
            img[i] = img[i] * (1.0 - a_pool) + pool_tone * (1.0 + 0.08 * texture[i]) * a_pool;
            mask[i] = if d > wall {
                2
            } else if d > 0.0 {
                1
            } else {
                0
            };
        }
    }
    let sigma = rng.random_range(3.0f32..8.0);
    let image = img
        .iter()
        .map(|v| (v + sigma * gaussian(rng)).round().clamp(0.0, 255.0) as u8)
        .collect();
    Sample { image, mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_different_seed_different_data() {
        let a = generate(SyntheticKind::Lesion, 64, 7, 3);
        let b = generate(SyntheticKind::Lesion, 64, 7, 3);
        let c = generate(SyntheticKind::Lesion, 64, 8, 3);
        assert_eq!(a.image, b.image);
        assert_eq!(a.mask, b.mask);
        assert_ne!(a.image, c.image);
    }

    #[test]
    fn lesion_masks_are_binary_and_non_trivial() {
        for i in 0..20 {
            let s = generate(SyntheticKind::Lesion, 64, 1, i);
            assert_eq!(s.image.len(), 64 * 64 * 3);
            let fg = s.mask.iter().filter(|&&m| m == 1).count();
            assert!(s.mask.iter().all(|&m| m <= 1));
            assert!(
                fg > 40 && fg < 64 * 64 * 3 / 4,
                "image {i}: {fg} foreground pixels"
            );
        }
    }

    #[test]
    fn lesions_are_darker_than_skin() {
        let s = generate(SyntheticKind::Lesion, 96, 2, 0);
        let mean = |want: u8| {
            let (sum, n) = s
                .mask
                .iter()
                .enumerate()
                .filter(|(_, &m)| m == want)
                .fold((0f64, 0usize), |(sum, n), (i, _)| {
                    (sum + s.image[i * 3] as f64, n + 1)
                });
            sum / n as f64
        };
        assert!(mean(1) + 30.0 < mean(0), "{} vs {}", mean(1), mean(0));
    }

    #[test]
    fn nested_has_all_three_classes() {
        for i in 0..10 {
            let s = generate(SyntheticKind::Nested, 64, 5, i);
            assert_eq!(s.image.len(), 64 * 64);
            for class in 0..3u8 {
                assert!(s.mask.contains(&class), "image {i} lacks class {class}");
            }
        }
    }
}
