//! A decoder fuzzer (images' streams and volume streams): generated inputs of four kinds (random bytes, a valid header with random
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
    /// Volume streams with a valid check value whose geometry is impossible by construction (a
    /// zero side or factor, a spacing that is not a positive number, a singular affine), and
    /// how many of them the reader accepted (must stay 0: no chance involved).
    pub impossible: u64,
    pub accepted_impossible: u64,
    pub first_accepted_impossible: Option<Vec<u8>>,
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
            let k = rng.random_range(0..valid.len());
            mutate(rng, &valid[k], 2)
        }
    }
}

/// A copy of `original` with one bit flipped, cut short, one byte added, or one byte from
/// `replace_from` on replaced; and whether it differs.
fn mutate(rng: &mut ChaCha8Rng, original: &[u8], replace_from: usize) -> (Vec<u8>, bool) {
    let mut v = original.to_vec();
    match rng.random_range(0..4) {
        0 if !v.is_empty() => {
            let i = rng.random_range(0..v.len());
            v[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !v.is_empty() => v.truncate(rng.random_range(0..v.len())),
        2 => v.push(rng.random()),
        _ if v.len() > replace_from => {
            let i = rng.random_range(replace_from..v.len());
            v[i] = rng.random();
        }
        _ => {}
    }
    let damaged = v != original;
    (v, damaged)
}

/// How one input ended.
enum Outcome {
    Decoded,
    Rejected,
    /// A panic, or an encoder-side error from the decoder: a bug either way.
    Bug,
}

impl FuzzReport {
    fn count(&mut self, bytes: Vec<u8>, damaged: bool, outcome: Outcome) {
        self.inputs += 1;
        self.mutated += damaged as u64;
        match outcome {
            Outcome::Decoded if damaged => {
                self.accepted_damaged += 1;
                self.first_accepted_damaged.get_or_insert(bytes);
            }
            Outcome::Decoded => self.decoded += 1,
            Outcome::Bug => {
                self.panics += 1;
                self.first_panic.get_or_insert(bytes);
            }
            Outcome::Rejected => self.rejected += 1,
        }
    }
}

fn outcome_of<T>(result: std::thread::Result<Result<T, CodecError>>) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Decoded,
        Ok(Err(CodecError::BadBits(_) | CodecError::Coder(_))) | Err(_) => Outcome::Bug,
        Ok(Err(_)) => Outcome::Rejected,
    }
}

/// Decodes `count` generated inputs; `valid` are well-formed streams of `codec` to mutate.
pub fn fuzz_decoder(codec: &Codec, valid: &[Vec<u8>], count: u64, seed: u64) -> FuzzReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = FuzzReport::default();
    for _ in 0..count {
        let (bytes, damaged) = input(&mut rng, codec, valid);
        let outcome = outcome_of(catch_unwind(AssertUnwindSafe(|| codec.decode(&bytes))));
        report.count(bytes, damaged, outcome);
    }
    report
}

/// The volume stream reader and then the code's decoder on generated volume streams: random
/// bytes behind the magic, geometries with a valid check value announcing random (often huge)
/// sides and factors, code inputs as `fuzz_decoder` makes them behind a valid geometry, and
/// mutations of the `valid` volume streams. `max_voxels` is the reader's bound.
pub fn fuzz_volume_streams(
    codec: &Codec,
    valid: &[Vec<u8>],
    count: u64,
    seed: u64,
    max_voxels: u64,
) -> FuzzReport {
    use crate::volume_stream::{unwrap, wrap, Reduction, VolumeGeometry, MAGIC};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = FuzzReport::default();
    let codes: Vec<Vec<u8>> = valid
        .iter()
        .filter_map(|v| unwrap(v, u64::MAX).ok().map(|(_, code)| code.to_vec()))
        .collect();
    for _ in 0..count {
        let (bytes, damaged) = match rng.random_range(0..4) {
            0 => {
                let mut v = MAGIC.to_vec();
                let len = rng.random_range(0..96);
                v.extend((0..len).map(|_| rng.random::<u8>()));
                (v, false)
            }
            1 => {
                let side = |rng: &mut ChaCha8Rng| match rng.random_range(0..3) {
                    0 => rng.random_range(0..=64),
                    1 => rng.random_range(0..=4096),
                    _ => rng.random(),
                };
                let reduction = if rng.random_bool(0.5) {
                    Reduction::Factor([rng.random_range(0..3), rng.random_range(0..3), rng.random()])
                } else {
                    let spacing = |rng: &mut ChaCha8Rng| match rng.random_range(0..3) {
                        0 => rng.random_range(0.0..12.0),
                        1 => -rng.random::<f32>(),
                        _ => f32::from_bits(rng.random()),
                    };
                    Reduction::Spacing([spacing(&mut rng), spacing(&mut rng), spacing(&mut rng)])
                };
                let (affine, singular) = random_affine(&mut rng);
                let geometry = VolumeGeometry {
                    sides: [side(&mut rng), side(&mut rng), side(&mut rng)],
                    reduction,
                    affine,
                };
                let impossible = singular
                    || geometry.sides.contains(&0)
                    || match geometry.reduction {
                        Reduction::Factor(f) => f.contains(&0),
                        Reduction::Spacing(s) => s.iter().any(|v| !(v.is_finite() && *v > 0.0)),
                    };
                let (code, _) = input(&mut rng, codec, &codes);
                let bytes = wrap(&geometry, &code);
                if impossible {
                    report.impossible += 1;
                    if catch_unwind(AssertUnwindSafe(|| unwrap(&bytes, max_voxels).is_ok())).unwrap_or(false)
                    {
                        report.accepted_impossible += 1;
                        report.first_accepted_impossible.get_or_insert(bytes.clone());
                    }
                }
                (bytes, false)
            }
            _ => {
                let k = rng.random_range(0..valid.len());
                mutate(&mut rng, &valid[k], 0)
            }
        };
        let result = catch_unwind(AssertUnwindSafe(|| match unwrap(&bytes, max_voxels) {
            Err(_) => Err(CodecError::Corrupt {
                reason: "volume geometry",
            }),
            Ok((_, code)) => codec.decode(code),
        }));
        report.count(bytes, damaged, outcome_of(result));
    }
    report
}

/// A voxel-to-world affine, and whether it is singular by construction: a scaled rotation
/// (what scanners write) or one of the impossible kinds files have been seen to carry (all
/// zeros, a zero axis, two parallel axes).
fn random_affine(rng: &mut ChaCha8Rng) -> ([[f32; 4]; 3], bool) {
    let offset = |rng: &mut ChaCha8Rng| rng.random_range(-300.0..300.0f32);
    let kind = rng.random_range(0..5);
    if kind == 0 {
        return ([[0.0; 4]; 3], true);
    }
    // A rotation from a random unit quaternion (a >= 0, as a qform stores it), times spacings
    // of 0.2..12 mm.
    let q = [0; 4].map(|_| rng.random_range(-1.0..1.0f64));
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-3) * q[0].signum();
    let r = crate::affine::quaternion_rotation(q[1] / n, q[2] / n, q[3] / n);
    let s = [0; 3].map(|_| rng.random_range(0.2..12.0f64));
    let mut m = [0; 3].map(|i| [r[i][0] * s[0], r[i][1] * s[1], r[i][2] * s[2], offset(rng) as f64]);
    let singular = match kind {
        1 => {
            let axis = rng.random_range(0..3);
            m.iter_mut().for_each(|row| row[axis] = 0.0);
            true
        }
        2 => {
            let (from, to) = (rng.random_range(0..3), rng.random_range(0..3));
            if from != to {
                let scale = rng.random_range(0.5..2.0);
                m.iter_mut().for_each(|row| row[to] = row[from] * scale);
            }
            from != to
        }
        _ => false,
    };
    (m.map(|row| row.map(|v| v as f32)), singular)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume_stream::{wrap, Reduction, VolumeGeometry};
    use crate::{quantize, CodeShape, CONTEXTS};

    #[test]
    fn volume_streams_never_panic_and_damage_is_refused() {
        let p: Vec<f64> = (0..2 * CONTEXTS as usize)
            .map(|i| 0.2 + 0.6 * ((i % 3) as f64 / 2.0))
            .collect();
        let codec = Codec::new(
            quantize(&p),
            0x33,
            CodeShape {
                channels: 2,
                sides: vec![2, 4, 4],
            },
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let valid: Vec<Vec<u8>> = (0..8)
            .map(|k| {
                let shape = CodeShape {
                    channels: 2,
                    sides: vec![1 + k % 3, 4, 3 + k],
                };
                let n = 2 * shape.sides.iter().product::<usize>();
                let bits: Vec<i8> = (0..n)
                    .map(|_| if rng.random_bool(0.3) { 1 } else { -1 })
                    .collect();
                let geometry = VolumeGeometry {
                    sides: [10 + k as u32, 64, 80],
                    reduction: if k % 2 == 0 {
                        Reduction::Factor([1, 2, 2])
                    } else {
                        Reduction::Spacing([10.0, 3.0, 2.5])
                    },
                    affine: [
                        [1.5, 0.0, 0.0, -90.0],
                        [0.0, 1.5, 0.0, 20.0],
                        [0.0, 0.0, 10.0, k as f32],
                    ],
                };
                wrap(&geometry, &codec.encode(&shape, &bits).unwrap())
            })
            .collect();
        let report = fuzz_volume_streams(&codec, &valid, 20_000, 2, 512 * 512 * 1024);
        eprintln!("volume stream fuzz: {report:?}");
        assert!(report.decoded > 0, "some generated inputs are valid: {report:?}");
        assert_eq!(report.panics, 0, "first: {:02x?}", report.first_panic);
        assert!(report.rejected > 5_000 && report.mutated > 5_000, "{report:?}");
        assert!(report.impossible > 1_000, "{report:?}");
        assert_eq!(
            report.accepted_impossible, 0,
            "impossible geometries accepted; first: {:02x?}",
            report.first_accepted_impossible
        );
        // Damage passes both check values (the geometry's and the code's) at most by chance.
        assert!(
            report.accepted_damaged * 128 <= report.mutated,
            "{} of {} damaged volume streams accepted; first: {:02x?}",
            report.accepted_damaged,
            report.mutated,
            report.first_accepted_damaged
        );
    }
}
