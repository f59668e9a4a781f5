//! The container a volume travels in from the edge to the cloud: the scan's geometry (sides,
//! the whole factors it was reduced by before C, and the voxel-to-world affine) in front of the
//! code's bitstream, so that the cloud can write a label volume that lies on the scan in any
//! viewer. Every byte of it is counted in the rate.
//!
//! Layout (little-endian): `OVOL`, version (1 byte), sides z, y, x (3 x u32), factors (3 x u8),
//! affine rows (12 x f32), a CRC-8 over all of the above, then the code's bitstream (which has
//! its own header and check value). 69 bytes of geometry.
//!
//! Reading checks the length, the magic, the version, the check value, every side and factor
//! (not zero, voxels within the caller's limit) and the affine (finite numbers) before the code
//! is looked at: a damaged geometry is refused with the byte it is at, never a label volume on
//! the wrong voxels.

use crate::check::crc8;

pub const MAGIC: [u8; 4] = *b"OVOL";
pub const VOLUME_VERSION: u8 = 1;
/// Bytes in front of the code's bitstream.
pub const GEOMETRY_BYTES: usize = 4 + 1 + 12 + 3 + 48 + 1;

/// Where a volume's voxels are and how it was reduced before coding.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeGeometry {
    /// Sides (z, y, x) of the scan as acquired.
    pub sides: [u32; 3],
    /// Whole factors (z, y, x) the scan was reduced by before C.
    pub factor: [u8; 3],
    /// Voxel (i, j, k) to world (x, y, z) in millimetres, the NIfTI sform's rows.
    pub affine: [[f32; 4]; 3],
}

impl VolumeGeometry {
    /// Voxels of the scan (three u32 sides can exceed a u64).
    pub fn voxels(&self) -> u128 {
        self.sides.iter().map(|&s| s as u128).product()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VolumeStreamError {
    #[error("volume stream is {len} bytes, shorter than its {GEOMETRY_BYTES}-byte geometry")]
    Truncated { len: usize },
    #[error("not a volume stream: bytes 0-3 are {found:02x?}, expected \"OVOL\"")]
    Magic { found: [u8; 4] },
    #[error("volume stream version {found} at byte 4 is not supported (this reader reads {VOLUME_VERSION})")]
    Version { found: u8 },
    #[error("volume stream geometry check value at byte {offset} is {stored:#04x}, its contents give {computed:#04x}: the geometry is damaged")]
    Check { offset: usize, stored: u8, computed: u8 },
    #[error("volume stream field {field} at byte {offset} is {value}: {reason}")]
    Field {
        field: &'static str,
        offset: usize,
        value: String,
        reason: &'static str,
    },
    #[error("volume stream announces {voxels} voxels (sides {sides:?}), above the limit of {max}")]
    TooLarge { sides: [u32; 3], voxels: u128, max: u64 },
}

/// The geometry followed by the code's bitstream.
pub fn wrap(geometry: &VolumeGeometry, code_stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GEOMETRY_BYTES + code_stream.len());
    out.extend_from_slice(&MAGIC);
    out.push(VOLUME_VERSION);
    for s in geometry.sides {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(&geometry.factor);
    for v in geometry.affine.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(crc8([out.as_slice()]));
    out.extend_from_slice(code_stream);
    out
}

/// Whether `bytes` start like a volume stream (the magic only; `unwrap` checks the rest).
pub fn is_volume_stream(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// The geometry and the code's bitstream of a volume stream, every field checked; `max_voxels`
/// bounds the scan the cloud will allocate a label volume for.
pub fn unwrap(bytes: &[u8], max_voxels: u64) -> Result<(VolumeGeometry, &[u8]), VolumeStreamError> {
    if bytes.len() < 4 || !is_volume_stream(bytes) {
        let mut found = [0u8; 4];
        for (f, b) in found.iter_mut().zip(bytes) {
            *f = *b;
        }
        return Err(VolumeStreamError::Magic { found });
    }
    if bytes.len() < GEOMETRY_BYTES {
        return Err(VolumeStreamError::Truncated { len: bytes.len() });
    }
    if bytes[4] != VOLUME_VERSION {
        return Err(VolumeStreamError::Version { found: bytes[4] });
    }
    let check_at = GEOMETRY_BYTES - 1;
    let computed = crc8([&bytes[..check_at]]);
    if bytes[check_at] != computed {
        return Err(VolumeStreamError::Check {
            offset: check_at,
            stored: bytes[check_at],
            computed,
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let f32_at = |o: usize| f32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let mut sides = [0u32; 3];
    for (a, side) in sides.iter_mut().enumerate() {
        let offset = 5 + 4 * a;
        *side = u32_at(offset);
        if *side == 0 {
            return Err(VolumeStreamError::Field {
                field: ["side z", "side y", "side x"][a],
                offset,
                value: "0".into(),
                reason: "a side must be at least 1",
            });
        }
    }
    // In u128: three u32 sides can exceed a u64 (the fuzzer found that).
    let voxels: u128 = sides.iter().map(|&s| s as u128).product();
    if voxels > max_voxels as u128 {
        return Err(VolumeStreamError::TooLarge {
            sides,
            voxels,
            max: max_voxels,
        });
    }
    let mut factor = [0u8; 3];
    for (a, f) in factor.iter_mut().enumerate() {
        let offset = 17 + a;
        *f = bytes[offset];
        if *f == 0 {
            return Err(VolumeStreamError::Field {
                field: ["factor z", "factor y", "factor x"][a],
                offset,
                value: "0".into(),
                reason: "a reduction factor must be at least 1",
            });
        }
    }
    let mut affine = [[0f32; 4]; 3];
    for (k, v) in affine.iter_mut().flatten().enumerate() {
        let offset = 20 + 4 * k;
        *v = f32_at(offset);
        if !v.is_finite() {
            return Err(VolumeStreamError::Field {
                field: "affine",
                offset,
                value: v.to_string(),
                reason: "must be a finite number",
            });
        }
    }
    Ok((
        VolumeGeometry {
            sides,
            factor,
            affine,
        },
        &bytes[GEOMETRY_BYTES..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> VolumeGeometry {
        VolumeGeometry {
            sides: [10, 216, 256],
            factor: [1, 2, 2],
            affine: [
                [-1.5, 0.0, 0.0, 90.0],
                [0.0, 1.5, 0.0, -120.5],
                [0.0, 0.0, 10.0, 33.0],
            ],
        }
    }

    #[test]
    fn round_trip_and_every_damaged_geometry_byte_is_refused() {
        let code = [7u8, 8, 9];
        let stream = wrap(&geometry(), &code);
        assert_eq!(stream.len(), GEOMETRY_BYTES + 3);
        let (g, rest) = unwrap(&stream, u64::MAX).unwrap();
        assert_eq!((g, rest), (geometry(), &code[..]));
        for i in 0..GEOMETRY_BYTES {
            for bit in [0x01u8, 0x80] {
                let mut bad = stream.clone();
                bad[i] ^= bit;
                assert!(unwrap(&bad, u64::MAX).is_err(), "byte {i} bit {bit:#x} accepted");
            }
        }
        for len in 0..GEOMETRY_BYTES {
            assert!(unwrap(&stream[..len], u64::MAX).is_err(), "{len} bytes accepted");
        }
    }

    #[test]
    fn fields_and_limits_are_named() {
        let big = VolumeGeometry {
            sides: [1000, 1000, 1000],
            ..geometry()
        };
        match unwrap(&wrap(&big, &[]), 512 * 512 * 1024) {
            Err(VolumeStreamError::TooLarge { voxels, .. }) => assert_eq!(voxels, 1_000_000_000),
            other => panic!("{other:?}"),
        }
        let zero = VolumeGeometry {
            factor: [1, 0, 2],
            ..geometry()
        };
        let e = unwrap(&wrap(&zero, &[]), u64::MAX).unwrap_err().to_string();
        assert!(e.contains("factor y at byte 18"), "{e}");
        let nan = VolumeGeometry {
            affine: [[f32::NAN, 0.0, 0.0, 0.0], [0.0; 4], [0.0; 4]],
            ..geometry()
        };
        let e = unwrap(&wrap(&nan, &[]), u64::MAX).unwrap_err().to_string();
        assert!(e.contains("affine at byte 20"), "{e}");
        let e = unwrap(b"\x89PNG....", u64::MAX).unwrap_err().to_string();
        assert!(e.contains("not a volume stream"), "{e}");
    }
}
