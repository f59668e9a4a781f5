//! A decoder fuzzer: generated inputs of four kinds (random bytes, a valid header with random
//! payloads, crafted headers announcing large shapes, and mutations of valid streams: flipped
//! bits, truncations, extensions, replaced bytes) must each give either bits or a typed error,
//! never a panic. A mutated stream that decodes is a wrong answer, not a success: it is counted
//! apart (`accepted_damaged`), since the check value lets one through with probability at most
//! 1/256. Used by the tests (thousands of inputs) and by `orchestra-worker fuzz-decoder`
//! (millions).

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Codec, CodecError, Header, VERSION};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FuzzReport {
    pub inputs: u64,
    pub decoded: u64,
    pub rejected: u64,
    /// Inputs that made the decoder panic (must stay 0), with the first one kept.
    pub panics: u64,
    pub first_panic: Option<Vec<u8>>,
    /// Mutated valid streams (other bytes than the original) that decoded without an error.
    pub mutated: u64,
    pub accepted_damaged: u64,
    pub first_accepted_damaged: Option<Vec<u8>>,
}

/// One generated input, and whether it is a damaged copy of a valid stream.
fn input(rng: &mut ChaCha8Rng, codec: &Codec, valid: &[Vec<u8>]) -> (Vec<u8>, bool) {
    match rng.random_range(0..4) {
        0 => {
            let len = rng.random_range(0..64);
            ((0..len).map(|_| rng.random()).collect(), false)
        }
        1 => {
            let mut v = vec![(VERSION << 4) | rng.random_range(0..2u8), codec.tag];
            let len = rng.random_range(0..48);
            v.extend((0..len).map(|_| rng.random::<u8>()));
            (v, false)
        }
        2 => {
            // A crafted header: the shape flag and sides of up to 3 varint bytes each, large
            // ones likely, then a short payload.
            let sides = (0..codec.default_shape.sides.len())
                .map(|_| {
                    let side: u32 = match rng.random_range(0..3) {
                        0 => rng.random_range(1..=64),
                        1 => rng.random_range(1..=4096),
                        _ => rng.random_range(0..(1 << 21)),
                    };
                    side as usize
                })
                .collect();
            let mut v = Vec::new();
            Header {
                tag: codec.tag,
                sides: Some(sides),
            }
            .write(&mut v);
            let len = rng.random_range(0..8);
            v.extend((0..len).map(|_| rng.random::<u8>()));
            (v, false)
        }
        _ => {
            let original = &valid[rng.random_range(0..valid.len())];
            let mut v = original.clone();
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
            let damaged = v != *original;
            (v, damaged)
        }
    }
}

/// Decodes `count` generated inputs; `valid` are well-formed streams of `codec` to mutate.
pub fn fuzz_decoder(codec: &Codec, valid: &[Vec<u8>], count: u64, seed: u64) -> FuzzReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = FuzzReport::default();
    for _ in 0..count {
        let (bytes, damaged) = input(&mut rng, codec, valid);
        report.inputs += 1;
        report.mutated += damaged as u64;
        match catch_unwind(AssertUnwindSafe(|| codec.decode(&bytes))) {
            Ok(Ok(_)) if damaged => {
                report.accepted_damaged += 1;
                report.first_accepted_damaged.get_or_insert(bytes);
            }
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
