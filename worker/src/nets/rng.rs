//! The networks' own random numbers: weight initialisation and stochastic binarization.
//!
//! libtorch has one global generator per device, shared by every thread of the process; two
//! trainers in one process (parallel tests, a benchmark harness) would interleave their draws
//! and lose reproducibility. These draws come from a thread-local ChaCha generator instead,
//! reseeded by the trainer from (seed, step), so a step's randomness depends on nothing else.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

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

/// Uniform [0, 1) numbers shaped and placed like `like`.
pub fn uniform_like(like: &Tensor) -> Tensor {
    uniform(&like.size(), 0.0, 1.0).to_device(like.device())
}
