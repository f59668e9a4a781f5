//! Real bitstreams: the binary code of C, entropy coded with the same learned bit model q that
//! training used for its rate estimate, behind a 2-byte header and a 1-byte check value.
//!
//! Coding: constriction's range coder with 16-bit words (`Small`), one binary symbol per code
//! bit with its context's probability, quantised once to 12-bit integers so that encoder and
//! decoder use identical numbers on any machine. The coder's sealing words are then trimmed:
//! the encoder keeps the shortest byte string that still decodes to the same bits when the
//! decoder pads it with zeros, so no padding is sent.
//!
//! Integrity: a CRC-8 check value over header and payload (one byte, counted in every bpp
//! reported) catches every damaged byte and, with probability 255/256, any other damage or
//! truncation before any decoding work; then the decoder re-encodes what it decoded and rejects
//! a stream that is not the unique shortest encoding of its bits (extended or padded streams).
//!
//! Work is bounded before anything is allocated: a header may announce another code shape, but
//! never one above the decoder's `Limits` (by default four times the model's own sides).

pub mod affine;
mod check;
mod context;
pub mod deploy;
mod format;
pub mod fuzz;
pub mod net_config;
pub mod volume_stream;

pub use check::crc8;

use constriction::stream::model::SmallContiguousCategoricalEntropyModel;
use constriction::stream::queue::{SmallRangeDecoder, SmallRangeEncoder};
use constriction::stream::{Decode, Encode};

pub use context::{context, CodeShape};
pub use format::{Header, MAX_SIDE, VERSION};

/// Contexts per code channel: four neighbours, each absent, -1 or +1 (3^4). The worker's
/// bit model q has one probability per (channel, context) and checks that it agrees.
pub const CONTEXTS: i64 = 81;

/// Fixed-point precision of the coder's probabilities (constriction's `Small` models).
pub const PRECISION: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("bitstream truncated: {what} missing at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("bitstream version {found} is not supported (this decoder reads version {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("bitstream sets unknown flags {flags:#06b}")]
    UnknownFlags { flags: u8 },
    #[error("bitstream was made by another model (tag {found:#04x}, this model is {expected:#04x})")]
    WrongModel { expected: u8, found: u8 },
    #[error("bitstream shape at byte {offset}: {reason}")]
    BadShape { offset: usize, reason: String },
    #[error("bitstream payload is {bytes} bytes, more than the {max} bytes any {bits}-bit code needs")]
    TooLarge { bytes: usize, max: usize, bits: usize },
    #[error("bitstream payload is corrupt, truncated or extended: {reason}")]
    Corrupt { reason: &'static str },
    #[error("bitstream check value at byte {offset} is {stored:#04x}, its contents give {computed:#04x}: the stream is damaged or truncated")]
    CheckFailed { offset: usize, stored: u8, computed: u8 },
    #[error("bitstream announces a code of sides {sides:?} ({positions} positions), above this decoder's limit ({limits})")]
    OverLimit {
        sides: Vec<usize>,
        positions: usize,
        limits: Limits,
    },
    #[error("bits to encode: {0}")]
    BadBits(String),
    #[error("entropy coder: {0}")]
    Coder(String),
}

/// The largest code a decoder accepts, checked on the header before any allocation or decoding
/// work: per spatial side, and in positions (the product of the sides; the code has one bit
/// per position and channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_side: usize,
    pub max_positions: usize,
}

impl Limits {
    /// Codes of images up to `factor` times the model's input size per side.
    pub fn scaled(default_shape: &CodeShape, factor: usize) -> Limits {
        let longest = default_shape.sides.iter().copied().max().unwrap_or(1);
        let area: usize = default_shape.sides.iter().product();
        Limits {
            max_side: longest.saturating_mul(factor).min(MAX_SIDE),
            max_positions: area.saturating_mul(factor.saturating_pow(default_shape.sides.len() as u32)),
        }
    }

    /// Codes of whole volumes of up to `max_voxels` voxels (sides up to 1024) at downsampling
    /// factor `f`: a volume is coded in one piece, far beyond the training patch.
    pub fn volumes(f: usize, max_voxels: usize) -> Limits {
        let f = f.max(1);
        Limits {
            max_side: (1024 / f).clamp(1, MAX_SIDE),
            max_positions: (max_voxels / f.pow(3)).max(1),
        }
    }

    /// These limits with the ones an operator gave (a service's or a command's flags) in place
    /// of the defaults; a side above the format's own maximum is refused.
    pub fn with_overrides(
        self,
        max_side: Option<usize>,
        max_positions: Option<usize>,
    ) -> Result<Limits, String> {
        let limits = Limits {
            max_side: max_side.unwrap_or(self.max_side),
            max_positions: max_positions.unwrap_or(self.max_positions),
        };
        if limits.max_side == 0 || limits.max_side > MAX_SIDE {
            return Err(format!("max side {} is not in 1..={MAX_SIDE}", limits.max_side));
        }
        if limits.max_positions == 0 {
            return Err("max positions must be at least 1".into());
        }
        Ok(limits)
    }

    fn admits(&self, sides: &[usize]) -> bool {
        sides.iter().all(|&s| s <= self.max_side) && positions(sides).is_some_and(|p| p <= self.max_positions)
    }
}

/// Positions of a code with these spatial sides (their product), if it fits in a `usize`.
fn positions(sides: &[usize]) -> Option<usize> {
    sides.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s))
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at most {} per side and {} positions",
            self.max_side, self.max_positions
        )
    }
}

/// Default decoder limits: codes of images up to this many times the model's input size per side.
pub const DEFAULT_LIMIT_FACTOR: usize = 4;

/// The entropy coder of one trained bit model.
#[derive(Clone, Debug)]
pub struct Codec {
    /// One binary entropy model per (channel, context), [channel * CONTEXTS + context], built
    /// once from q(+1 | channel, context) quantised to 12-bit integers in 1..=4095.
    models: Vec<SmallContiguousCategoricalEntropyModel>,
    pub tag: u8,
    /// The code shape of the model's input size; other shapes are announced in the header.
    pub default_shape: CodeShape,
    /// What the decoder accepts.
    pub limits: Limits,
}

/// Quantises probabilities of +1 to the coder's fixed point, never 0 or 1.
pub fn quantize(p_plus: &[f64]) -> Vec<u16> {
    let total = (1u32 << PRECISION) as f64;
    p_plus
        .iter()
        .map(|&p| (p * total).round().clamp(1.0, total - 1.0) as u16)
        .collect()
}

impl Codec {
    pub fn new(table: Vec<u16>, tag: u8, default_shape: CodeShape) -> Result<Codec, CodecError> {
        let expected = default_shape.channels * CONTEXTS as usize;
        let max = (1u16 << PRECISION) - 1;
        if table.len() != expected || table.iter().any(|&p| p == 0 || p > max) {
            return Err(CodecError::Coder(format!(
                "probability table needs {expected} entries in 1..={max}, got {}",
                table.len()
            )));
        }
        let models = table
            .iter()
            .map(|&p_plus| {
                let p_minus = (1u16 << PRECISION) - p_plus;
                SmallContiguousCategoricalEntropyModel::from_nonzero_fixed_point_probabilities(
                    [p_minus, p_plus],
                    false,
                )
                .expect("both probabilities are nonzero and sum to 2^12")
            })
            .collect();
        Ok(Codec {
            models,
            tag,
            limits: Limits::scaled(&default_shape, DEFAULT_LIMIT_FACTOR),
            default_shape,
        })
    }

    /// The same codec with other decoder limits (a service sized for larger scans, say).
    pub fn with_limits(mut self, limits: Limits) -> Codec {
        self.limits = limits;
        self
    }

    fn model(&self, k: usize, ctx: usize) -> &SmallContiguousCategoricalEntropyModel {
        &self.models[k * CONTEXTS as usize + ctx]
    }

    /// Range-codes `bits` (coding order, values -1/+1), then terminates optimally: the shortest
    /// byte string that the zero-padding decoder still decodes to `bits`.
    fn encode_payload(&self, shape: &CodeShape, bits: &[i8]) -> Result<Vec<u8>, CodecError> {
        let plane = shape.bits() / shape.channels;
        let mut enc = SmallRangeEncoder::new();
        for i in 0..bits.len() {
            let model = self.model(i / plane, context(shape, bits, i));
            enc.encode_symbol((bits[i] > 0) as usize, model)
                .map_err(|e| CodecError::Coder(format!("{e:?}")))?;
        }
        let words = enc
            .into_compressed()
            .map_err(|e| CodecError::Coder(format!("{e:?}")))?;
        let full: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        // The zero-padded values that decode to `bits` form an interval containing `full`. For a
        // length L, the only L-byte strings that can fall inside it are full[..L] and
        // full[..L] + 1 (rounded up). Validity is monotone in L (appending a zero byte changes
        // nothing), so binary search finds the shortest.
        let candidate = |len: usize| -> Option<Vec<u8>> {
            let prefix = full[..len].to_vec();
            if self.decodes_to(shape, &prefix, bits) {
                return Some(prefix);
            }
            let mut up = prefix;
            for byte in up.iter_mut().rev() {
                let (v, carry) = byte.overflowing_add(1);
                *byte = v;
                if !carry {
                    return self.decodes_to(shape, &up, bits).then_some(up);
                }
            }
            None
        };
        let (mut lo, mut hi) = (0usize, full.len());
        let mut best = full.clone();
        while lo < hi {
            let mid = (lo + hi) / 2;
            match candidate(mid) {
                Some(c) => {
                    best = c;
                    hi = mid;
                }
                None => lo = mid + 1,
            }
        }
        Ok(best)
    }

    fn decodes_to(&self, shape: &CodeShape, payload: &[u8], bits: &[i8]) -> bool {
        matches!(self.decode_payload(shape, payload), Ok(decoded) if decoded == bits)
    }

    fn decode_payload(&self, shape: &CodeShape, payload: &[u8]) -> Result<Vec<i8>, CodecError> {
        // Zero padding: whole words, plus two more than the decoder's initial read needs.
        let mut words: Vec<u16> = payload
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        words.extend([0, 0]);
        let invalid = || CodecError::Corrupt {
            reason: "the range decoder left its valid interval",
        };
        let mut dec = SmallRangeDecoder::from_compressed(words).map_err(|_| invalid())?;
        let n = shape.bits();
        let plane = n / shape.channels;
        let mut bits = Vec::with_capacity(n);
        for i in 0..n {
            let model = self.model(i / plane, context(shape, &bits, i));
            let symbol = dec.decode_symbol(model).map_err(|_| invalid())?;
            bits.push(if symbol == 1 { 1 } else { -1 });
        }
        Ok(bits)
    }

    /// The longest stream this decoder can accept: the largest header, the check value and the
    /// payload of the largest code its limits admit at the worst probability cost. Readers of
    /// stream files and request bodies stop here before reading the rest.
    pub fn max_stream_bytes(&self) -> usize {
        let header = 2 + 3 * self.default_shape.sides.len();
        let bits = self
            .limits
            .max_positions
            .saturating_mul(self.default_shape.channels);
        header + 1 + bits.saturating_mul(PRECISION as usize).div_ceil(8) + 4
    }

    /// Header plus payload for a code of `shape` (bits in coding order, -1/+1).
    pub fn encode(&self, shape: &CodeShape, bits: &[i8]) -> Result<Vec<u8>, CodecError> {
        if shape.channels != self.default_shape.channels
            || shape.sides.len() != self.default_shape.sides.len()
        {
            return Err(CodecError::BadBits(format!(
                "shape {shape:?} does not fit this model"
            )));
        }
        if bits.len() != shape.bits() || bits.iter().any(|&b| b != 1 && b != -1) {
            return Err(CodecError::BadBits(format!(
                "expected {} values of -1 or +1",
                shape.bits()
            )));
        }
        let header = Header {
            tag: self.tag,
            sides: (shape.sides != self.default_shape.sides).then(|| shape.sides.clone()),
        };
        let mut out = Vec::new();
        header.write(&mut out);
        let payload = self.encode_payload(shape, bits)?;
        out.push(crc8([out.as_slice(), payload.as_slice()]));
        out.extend(payload);
        Ok(out)
    }

    /// Parses and decodes a stream, checking everything; returns the code shape and its bits.
    pub fn decode(&self, stream: &[u8]) -> Result<(CodeShape, Vec<i8>), CodecError> {
        let dims = self.default_shape.sides.len();
        let (header, offset) = Header::read(stream, dims)?;
        if header.tag != self.tag {
            return Err(CodecError::WrongModel {
                expected: self.tag,
                found: header.tag,
            });
        }
        let shape = CodeShape {
            channels: self.default_shape.channels,
            sides: header.sides.unwrap_or_else(|| self.default_shape.sides.clone()),
        };
        if !self.limits.admits(&shape.sides) {
            return Err(CodecError::OverLimit {
                positions: positions(&shape.sides).unwrap_or(usize::MAX),
                sides: shape.sides,
                limits: self.limits.clone(),
            });
        }
        let stored = *stream.get(offset).ok_or(CodecError::Truncated {
            what: "check value",
            offset,
        })?;
        let payload = &stream[offset + 1..];
        // Even at the largest probability cost (12 bits per bit) a code needs no more than this.
        let max = (shape.bits() * PRECISION as usize).div_ceil(8) + 4;
        if payload.len() > max {
            return Err(CodecError::TooLarge {
                bytes: payload.len(),
                max,
                bits: shape.bits(),
            });
        }
        let computed = crc8([&stream[..offset], payload]);
        if computed != stored {
            return Err(CodecError::CheckFailed {
                offset,
                stored,
                computed,
            });
        }
        let bits = self.decode_payload(&shape, payload)?;
        if self.encode_payload(&shape, &bits)? != payload {
            return Err(CodecError::Corrupt {
                reason: "not the encoding of the bits it decodes to",
            });
        }
        Ok((shape, bits))
    }

    /// Bytes before the payload (header and check value), for reporting bpp with and without
    /// them.
    pub fn header_len(&self, stream: &[u8]) -> Result<usize, CodecError> {
        Header::read(stream, self.default_shape.sides.len()).map(|(_, offset)| offset + 1)
    }

    /// A stream's size as every command reports it: "N bytes (H header and check value) =
    /// B bpp (B' without them)" for an input of `pixels` pixels (voxels).
    pub fn describe(&self, stream: &[u8], pixels: usize) -> Result<String, CodecError> {
        let header = self.header_len(stream)?;
        let bpp = |bytes: usize| 8.0 * bytes as f64 / pixels.max(1) as f64;
        Ok(format!(
            "{} bytes ({header} header and check value) = {:.5} bpp ({:.5} without them)",
            stream.len(),
            bpp(stream.len()),
            bpp(stream.len() - header)
        ))
    }
}

/// 8-bit FNV-1a fold of bytes: the model tag.
pub fn tag_of(bytes: impl IntoIterator<Item = u8>) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn codec(channels: usize, sides: Vec<usize>, skew: f64) -> Codec {
        // A table that favours repeating the left neighbour, as trained models do.
        let p: Vec<f64> = (0..channels * CONTEXTS as usize)
            .map(|i| match (i % CONTEXTS as usize) % 3 {
                0 => 1.0 - skew,
                2 => skew,
                _ => 0.5,
            })
            .collect();
        Codec::new(quantize(&p), 0x5a, CodeShape { channels, sides }).unwrap()
    }

    fn random_bits(n: usize, seed: u64, p_repeat: f64) -> Vec<i8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut bits = Vec::with_capacity(n);
        for i in 0..n {
            let b = if i > 0 && rng.random_bool(p_repeat) {
                bits[i - 1]
            } else if rng.random_bool(0.5) {
                1
            } else {
                -1
            };
            bits.push(b);
        }
        bits
    }

    #[test]
    fn round_trips_exactly_and_compresses_predictable_codes() {
        let c = codec(3, vec![8, 8], 0.9);
        for seed in 0..50 {
            let bits = random_bits(192, seed, 0.8);
            let shape = c.default_shape.clone();
            let stream = c.encode(&shape, &bits).unwrap();
            assert_eq!(stream[0], 0x20, "version 2, no flags");
            let (s, back) = c.decode(&stream).unwrap();
            assert_eq!((s, back), (shape, bits));
            assert!(
                stream.len() < 3 + 24,
                "predictable codes compress: {} bytes",
                stream.len()
            );
        }
    }

    #[test]
    fn other_shapes_are_announced_in_the_header() {
        let c = codec(2, vec![8, 8], 0.8).with_limits(Limits {
            max_side: 300,
            max_positions: 1200,
        });
        let shape = CodeShape {
            channels: 2,
            sides: vec![4, 300],
        };
        let bits = random_bits(shape.bits(), 1, 0.5);
        let stream = c.encode(&shape, &bits).unwrap();
        assert_eq!(stream[0], 0x21);
        assert_eq!(&stream[2..5], &[4, 0xac, 0x02], "LEB128 of 4 and 300");
        assert_eq!(
            stream[5],
            crc8([&stream[..5], &stream[6..]]),
            "the check value follows"
        );
        assert_eq!(c.decode(&stream).unwrap(), (shape, bits));
    }

    #[test]
    fn corrupt_streams_get_typed_errors() {
        let c = codec(3, vec![8, 8], 0.9);
        let bits = random_bits(192, 3, 0.7);
        let stream = c.encode(&c.default_shape, &bits).unwrap();
        assert_eq!(
            c.decode(&[]),
            Err(CodecError::Truncated {
                what: "header",
                offset: 0
            })
        );
        assert_eq!(
            c.decode(&[0x20]),
            Err(CodecError::Truncated {
                what: "model tag",
                offset: 1
            })
        );
        assert!(matches!(
            c.decode(&[0x10, 0x5a, 0x00]),
            Err(CodecError::UnsupportedVersion { found: 1, .. })
        ));
        assert!(matches!(
            c.decode(&[0x22, 0x5a]),
            Err(CodecError::UnknownFlags { flags: 2 })
        ));
        assert!(matches!(
            c.decode(&[0x20, 0x00]),
            Err(CodecError::WrongModel { found: 0, .. })
        ));
        assert!(matches!(
            c.decode(&[0x21, 0x5a, 0x80]),
            Err(CodecError::Truncated { what: "shape", .. })
        ));
        assert!(matches!(
            c.decode(&[0x21, 0x5a, 0x00, 0x01]),
            Err(CodecError::BadShape { .. })
        ));
        assert!(matches!(
            c.decode(&[0x21, 0x5a, 0xff, 0xff, 0xff, 0x01, 1]),
            Err(CodecError::BadShape { .. })
        ));
        assert_eq!(
            c.decode(&[0x20, 0x5a]),
            Err(CodecError::Truncated {
                what: "check value",
                offset: 2
            }),
            "a header alone is not a stream"
        );
        let mut long = stream.clone();
        long.extend(std::iter::repeat_n(0xab, 400));
        assert!(matches!(c.decode(&long), Err(CodecError::TooLarge { .. })));
        let mut extended = stream.clone();
        extended.push(0x01);
        assert!(matches!(c.decode(&extended), Err(CodecError::CheckFailed { .. })));
        // A stream whose check value is recomputed after an extension still is not canonical.
        extended[2] = crc8([&extended[..2], &extended[3..]]);
        assert!(matches!(c.decode(&extended), Err(CodecError::Corrupt { .. })));
    }

    /// The damage the check value is for: every flipped bit of many streams is rejected (a CRC
    /// catches every single-bit error), and truncations are rejected but for the 1 in 256 whose
    /// check value collides and whose shorter payload is itself a canonical encoding.
    #[test]
    fn flipped_bits_and_truncations_are_rejected() {
        let c = codec(3, vec![8, 8], 0.9);
        let (mut flips, mut truncations, mut passed) = (0, 0, 0);
        for seed in 0..40 {
            let bits = random_bits(192, seed, 0.7);
            let stream = c.encode(&c.default_shape, &bits).unwrap();
            for i in 0..stream.len() {
                for bit in 0..8 {
                    let mut s = stream.clone();
                    s[i] ^= 1 << bit;
                    assert!(
                        c.decode(&s).is_err(),
                        "seed {seed}: bit {bit} of byte {i} flipped"
                    );
                    flips += 1;
                }
            }
            for len in 0..stream.len() {
                if let Ok((_, decoded)) = c.decode(&stream[..len]) {
                    assert_ne!(decoded, bits, "a shorter stream cannot hold the same code");
                    passed += 1;
                }
                truncations += 1;
            }
        }
        eprintln!("rejected {flips} single-bit flips; {passed} of {truncations} truncations passed");
        assert!(truncations > 500);
        // Expected about truncations / 256; the bound leaves room for chance (p < 1e-6).
        assert!(
            passed * 64 <= truncations,
            "{passed} of {truncations} truncations passed"
        );
    }

    #[test]
    fn limits_given_by_an_operator_replace_the_defaults_and_bound_the_stream_length() {
        let c = codec(2, vec![8, 8], 0.6);
        let limits = c.limits.clone().with_overrides(Some(16), None).unwrap();
        assert_eq!((limits.max_side, limits.max_positions), (16, 1024));
        assert!(c.limits.clone().with_overrides(Some(0), None).is_err());
        assert!(c.limits.clone().with_overrides(Some(MAX_SIDE + 1), None).is_err());
        assert!(c.limits.clone().with_overrides(None, Some(0)).is_err());
        let c = c.with_limits(limits);
        // Streams of the largest admitted code, of regular, alternating and random bits, are
        // within the bound readers use to refuse a file or body unread.
        let shape = CodeShape {
            channels: 2,
            sides: vec![16, 16],
        };
        for p in [0.999, 0.001, 0.5] {
            let bits = random_bits(shape.bits(), 9, p);
            let stream = c.encode(&shape, &bits).unwrap();
            assert!(
                stream.len() <= c.max_stream_bytes(),
                "{} > {}",
                stream.len(),
                c.max_stream_bytes()
            );
            assert_eq!(c.decode(&stream).unwrap().1, bits);
        }
        let over = CodeShape {
            channels: 2,
            sides: vec![8, 17],
        };
        let stream = c.encode(&over, &random_bits(over.bits(), 2, 0.5)).unwrap();
        assert!(matches!(c.decode(&stream), Err(CodecError::OverLimit { .. })));
    }

    #[test]
    fn announced_shapes_above_the_limits_are_refused_before_decoding() {
        let c = codec(3, vec![8, 8], 0.9);
        assert_eq!(
            c.limits,
            Limits {
                max_side: 32,
                max_positions: 1024
            },
            "four times the model's sides"
        );
        // 4096 x 4096 code positions announced by a 6-byte stream: refused at once.
        let huge = [0x21, 0x5a, 0x80, 0x20, 0x80, 0x20, 0x00];
        let err = c.decode(&huge).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::OverLimit {
                    positions: 16_777_216,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("at most 32 per side"), "{err}");
        let wide = CodeShape {
            channels: 3,
            sides: vec![8, 40],
        };
        let wide_bits = random_bits(wide.bits(), 4, 0.7);
        let err = c.decode(&c.encode(&wide, &wide_bits).unwrap()).unwrap_err();
        assert!(
            matches!(err, CodecError::OverLimit { positions: 320, .. }),
            "{err:?}"
        );
        // Within the side limit but not the area.
        let shape = CodeShape {
            channels: 3,
            sides: vec![32, 32],
        };
        let bits = random_bits(shape.bits(), 5, 0.7);
        let stream = c.encode(&shape, &bits).unwrap();
        assert_eq!(c.decode(&stream).unwrap(), (shape.clone(), bits.clone()));
        let small = c.clone().with_limits(Limits {
            max_side: 64,
            max_positions: 1000,
        });
        assert!(matches!(
            small.decode(&stream),
            Err(CodecError::OverLimit { positions: 1024, .. })
        ));
        let roomy = c.clone().with_limits(Limits {
            max_side: 64,
            max_positions: 64 * 64,
        });
        assert_eq!(roomy.decode(&stream).unwrap(), (shape, bits));
    }

    #[test]
    fn the_model_tag_depends_on_every_byte() {
        assert_ne!(tag_of([1u8, 2, 3]), tag_of([1u8, 2, 4]));
        assert_eq!(tag_of([9u8; 10]), tag_of([9u8; 10]));
    }
}
