//! The networks' own random numbers: weight initialisation and stochastic binarization.
//!
//! libtorch has one global generator per device, shared by every thread of the process; two
//! trainers in one process (parallel tests, a benchmark harness) would interleave their draws
//! and lose reproducibility. These draws come from a thread-local ChaCha generator instead,
//! reseeded by the trainer from (seed, step), so a step's randomness depends on nothing else.
//!
//! On an accelerator the numbers are made where they are used: the generator gives one 64-bit
//! key per draw and the device hashes (key, element index) into uniform numbers with integer
//! kernels (SplitMix64's finaliser), so nothing is drawn on the host and copied over. The
//! numbers still follow (seed, step, shard) alone, so a resumed run equals an uninterrupted one
//! on the same kind of device; the CPU keeps its ChaCha stream (its results are unchanged),
//! so a CPU run and a GPU run draw different numbers.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

thread_local! {
    static RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(0));
}

/// Restarts this thread's generator from `seed`.
pub fn reseed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
}

/// A CPU float tensor of `shape` drawn uniformly from [lo, hi).
pub fn uniform(shape: &[i64], lo: f64, hi: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n).map(|_| r.random_range(lo as f32..hi as f32)).collect()
    });
    Tensor::from_slice(&values).view(shape).to_kind(Kind::Float)
}

/// Uniform [0, 1) numbers shaped and placed like `like`: from the host's generator on the CPU,
/// hashed on the device elsewhere.
pub fn uniform_like(like: &Tensor) -> Tensor {
    match like.device() {
        Device::Cpu => uniform(&like.size(), 0.0, 1.0),
        device => {
            let key = RNG.with(|r| r.borrow_mut().random::<u64>());
            hashed_uniform(&like.size(), key, device)
        }
    }
}

/// `x >> k` as an unsigned 64-bit shift, on int64 tensors (whose `>>` extends the sign).
fn shift_right(x: &Tensor, k: i64) -> Tensor {
    x.bitwise_right_shift_tensor_scalar(k)
        .bitwise_and(((1u64 << (64 - k)) - 1) as i64)
}

/// Uniform [0, 1) floats of `shape` on `device`: SplitMix64 of (key + index x golden ratio),
/// its top 24 bits over 2^24. Integer arithmetic wraps the same way on every device, so the
/// same key gives the same numbers wherever it runs.
pub fn hashed_uniform(shape: &[i64], key: u64, device: Device) -> Tensor {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    const M1: u64 = 0xBF58_476D_1CE4_E5B9;
    const M2: u64 = 0x94D0_49BB_1331_11EB;
    let n: i64 = shape.iter().product();
    let index = Tensor::arange(n, (Kind::Int64, device));
    let mut z = index * (GOLDEN as i64) + (key as i64);
    z = z.bitwise_xor_tensor(&shift_right(&z, 30)) * (M1 as i64);
    z = z.bitwise_xor_tensor(&shift_right(&z, 27)) * (M2 as i64);
    z = z.bitwise_xor_tensor(&shift_right(&z, 31));
    (shift_right(&z, 40).to_kind(Kind::Float) / (1u64 << 24) as f64).view(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's finaliser in plain u64 arithmetic, the reference for the tensor version.
    fn splitmix(key: u64, index: u64) -> f32 {
        let mut z = index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(key);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    #[test]
    fn hashed_numbers_are_splitmix_and_uniform() {
        let key = 0xDEAD_BEEF_0123_4567;
        let t = hashed_uniform(&[40, 250], key, Device::Cpu);
        assert_eq!(t.size(), vec![40, 250]);
        let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, splitmix(key, i as u64), "element {i}");
        }
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        // Ten equal bins of 10,000 draws: a chi-square far below the 0.1 % point (27.9, 9 dof).
        let mut bins = [0f64; 10];
        for x in &v {
            bins[(x * 10.0) as usize] += 1.0;
        }
        let chi: f64 = bins.iter().map(|b| (b - 1000.0).powi(2) / 1000.0).sum();
        assert!(chi < 27.9, "chi-square {chi}: {bins:?}");
        // Another key, other numbers; the same key, the same ones.
        let other: Vec<f32> = Vec::try_from(hashed_uniform(&[10_000], key + 1, Device::Cpu)).unwrap();
        assert!(other.iter().zip(&v).filter(|(a, b)| a == b).count() < 10);
        let again: Vec<f32> = Vec::try_from(hashed_uniform(&[10_000], key, Device::Cpu)).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn the_cpu_keeps_its_host_stream() {
        reseed(9);
        let a: Vec<f32> =
            Vec::try_from(uniform_like(&Tensor::zeros([100], (Kind::Float, Device::Cpu)))).unwrap();
        reseed(9);
        let b: Vec<f32> = Vec::try_from(uniform(&[100], 0.0, 1.0)).unwrap();
        assert_eq!(a, b);
    }
}
