//! The bitstream's header. At 0.01 bpp a 128x128 image is under 200 bits, so every header byte
//! shows in the rate: the common case costs 2 bytes, plus 1 for the check value.
//!
//! ```text
//! byte 0   version (high 4 bits, now 2) | flags (low 4 bits; bit 0: shape follows)
//! byte 1   model tag: 8 bits of a hash of the encoder's weights and bit model
//! [shape]  only with flag bit 0: one LEB128 varint per spatial side of the code
//! check    CRC-8 of every other byte of the stream (header and payload): see check.rs
//! payload  the range-coded bits (constriction, 16-bit words, trailing bytes trimmed)
//! ```
//!
//! Version 1 had no check value: any prefix of a valid stream was itself a valid stream.

use super::CodecError;

pub const VERSION: u8 = 2;
pub const FLAG_SHAPE: u8 = 0b0001;
const KNOWN_FLAGS: u8 = FLAG_SHAPE;
/// Largest code side a header may announce: bounds what a decoder allocates.
pub const MAX_SIDE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Spatial sides of the code when they differ from the model's default.
    pub sides: Option<Vec<usize>>,
}

impl Header {
    pub fn write(&self, out: &mut Vec<u8>) {
        let flags = if self.sides.is_some() { FLAG_SHAPE } else { 0 };
        out.push((VERSION << 4) | flags);
        out.push(self.tag);
        for &side in self.sides.iter().flatten() {
            let mut v = side as u64;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
    }

    /// Parses the header of `bytes` for a code with `dims` spatial sides; returns it and the
    /// payload's offset.
    pub fn read(bytes: &[u8], dims: usize) -> Result<(Header, usize), CodecError> {
        let first = *bytes.first().ok_or(CodecError::Truncated {
            what: "header",
            offset: 0,
        })?;
        let version = first >> 4;
        if version != VERSION {
            return Err(CodecError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let flags = first & 0x0f;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(CodecError::UnknownFlags { flags });
        }
        let tag = *bytes.get(1).ok_or(CodecError::Truncated {
            what: "model tag",
            offset: 1,
        })?;
        let mut offset = 2;
        let sides = if flags & FLAG_SHAPE != 0 {
            let mut sides = Vec::with_capacity(dims);
            for _ in 0..dims {
                let mut value: u64 = 0;
                let mut shift = 0;
                loop {
                    let byte = *bytes.get(offset).ok_or(CodecError::Truncated {
                        what: "shape",
                        offset,
                    })?;
                    offset += 1;
                    if shift >= 21 {
                        return Err(CodecError::BadShape {
                            offset,
                            reason: "side varint longer than 3 bytes".into(),
                        });
                    }
                    value |= ((byte & 0x7f) as u64) << shift;
                    shift += 7;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
                if value == 0 || value as usize > MAX_SIDE {
                    return Err(CodecError::BadShape {
                        offset,
                        reason: format!("side {value} not in 1..={MAX_SIDE}"),
                    });
                }
                sides.push(value as usize);
            }
            Some(sides)
        } else {
            None
        };
        Ok((Header { tag, sides }, offset))
    }
}
