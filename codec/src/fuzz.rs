//! A decoder fuzzer: generated inputs of three kinds (random bytes, a valid header with random
//! payloads, and mutations of valid streams) must each give either bits or a typed error,
//! never a panic. Used by the tests (thousands of inputs) and by `orchestra-worker fuzz-decoder`
//! (millions).

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Codec, CodecError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FuzzReport {
    pub inputs: u64,
    pub decoded: u64,
    pub rejected: u64,
    /// Inputs that made the decoder panic (must stay 0), with the first one kept.
    pub panics: u64,
    pub first_panic: Option<Vec<u8>>,
}

fn input(rng: &mut ChaCha8Rng, codec: &Codec, valid: &[Vec<u8>]) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => {
            let len = rng.random_range(0..64);
            (0..len).map(|_| rng.random()).collect()
        }
        1 => {
            let mut v = vec![0x10 | rng.random_range(0..2u8), codec.tag];
            let len = rng.random_range(0..48);
            v.extend((0..len).map(|_| rng.random::<u8>()));
            v
        }
        _ => {
            let mut v = valid[rng.random_range(0..valid.len())].clone();
            match rng.random_range(0..4) {
                0 if !v.is_empty() => {
                    let i = rng.random_range(0..v.len());
                    v[i] ^= 1 << rng.random_range(0..8);
                }
                1 if !v.is_empty() => v.truncate(rng.random_range(0..v.len())),
                2 => v.push(rng.random()),
                _ if v.len() > 2 => {
                    let i = rng.random_range(2..v.len());
                    v[i] = rng.random();
                }
                _ => {}
            }
            v
        }
    }
}

/// Decodes `count` generated inputs; `valid` are well-formed streams of `codec` to mutate.
pub fn fuzz_decoder(codec: &Codec, valid: &[Vec<u8>], count: u64, seed: u64) -> FuzzReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = FuzzReport::default();
    for _ in 0..count {
        let bytes = input(&mut rng, codec, valid);
        report.inputs += 1;
        match catch_unwind(AssertUnwindSafe(|| codec.decode(&bytes))) {
            Ok(Ok(_)) => report.decoded += 1,
            Ok(Err(CodecError::BadBits(_) | CodecError::Coder(_))) | Err(_) => {
                // Encoder-side errors from the decoder mean a bug, like a panic.
                report.panics += 1;
                report.first_panic.get_or_insert(bytes);
            }
            Ok(Err(_)) => report.rejected += 1,
        }
    }
    report
}
