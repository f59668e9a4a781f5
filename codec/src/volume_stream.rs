//! The container a volume travels in from the edge to the cloud: the scan's geometry (sides,
//! how it was reduced before C, and the voxel-to-world affine) in front of the code's
//! bitstream, so that the cloud can write a label volume that lies on the scan in any viewer.
//! Every byte of it is counted in the rate.
//!
//! Layout (little-endian): `OVOL`, version (1 byte), sides z, y, x (3 x u32), the reduction,
//! affine rows (12 x f32), a CRC-8 over all of the above, then the code's bitstream (which has
//! its own header and check value). The reduction is what the version says:
//! - version 1: whole factors z, y, x (3 x u8); 69 bytes of geometry;
//! - version 2: the target spacing z, y, x in mm the scan was resampled to (3 x f32); 78 bytes.
//!   The resampled grid follows from the sides, the affine's spacing and the target, so the
//!   cloud derives it and checks the target against its model's.
//!
//! Reading checks the length, the magic, the version, the check value, every side, factor and
//! spacing (not zero, voxels within the caller's limit) and the affine (finite numbers) before
//! the code is looked at: a damaged geometry is refused with the byte it is at, never a label
//! volume on the wrong voxels.

use crate::check::crc8;

pub const MAGIC: [u8; 4] = *b"OVOL";
/// Version of the layout with whole reduction factors.
pub const VOLUME_VERSION: u8 = 1;
/// Version of the layout with a target spacing.
pub const RESAMPLED_VERSION: u8 = 2;
/// Bytes in front of the code's bitstream, whole factors.
pub const GEOMETRY_BYTES: usize = 4 + 1 + 12 + 3 + 48 + 1;
/// Bytes in front of the code's bitstream, a target spacing.
pub const RESAMPLED_GEOMETRY_BYTES: usize = 4 + 1 + 12 + 12 + 48 + 1;
/// The most geometry bytes any version has: what a reader adds to its code's bound.
pub const MAX_GEOMETRY_BYTES: usize = RESAMPLED_GEOMETRY_BYTES;

/// How a scan was brought to C's grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduction {
    /// Whole factors (z, y, x) the scan was reduced by (block means).
    Factor([u8; 3]),
    /// Voxel spacing (z, y, x, mm) the scan was resampled to.
    Spacing([f32; 3]),
}

/// Where a volume's voxels are and how it was reduced before coding.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeGeometry {
    /// Sides (z, y, x) of the scan as acquired.
    pub sides: [u32; 3],
    pub reduction: Reduction,
    /// Voxel (i, j, k) to world (x, y, z) in millimetres, the NIfTI sform's rows.
    pub affine: [[f32; 4]; 3],
}

impl VolumeGeometry {
    /// Voxels of the scan (three u32 sides can exceed a u64).
    pub fn voxels(&self) -> u128 {
        self.sides.iter().map(|&s| s as u128).product()
    }

    /// Bytes of this geometry in front of the code.
    pub fn encoded_len(&self) -> usize {
        match self.reduction {
            Reduction::Factor(_) => GEOMETRY_BYTES,
            Reduction::Spacing(_) => RESAMPLED_GEOMETRY_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VolumeStreamError {
    #[error("volume stream is {len} bytes, shorter than its {need}-byte geometry")]
    Truncated { len: usize, need: usize },
    #[error("not a volume stream: bytes 0-3 are {found:02x?}, expected \"OVOL\"")]
    Magic { found: [u8; 4] },
    #[error("volume stream version {found} at byte 4 is not supported (this reader reads {VOLUME_VERSION} and {RESAMPLED_VERSION})")]
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
    let mut out = Vec::with_capacity(geometry.encoded_len() + code_stream.len());
    out.extend_from_slice(&MAGIC);
    match geometry.reduction {
        Reduction::Factor(_) => out.push(VOLUME_VERSION),
        Reduction::Spacing(_) => out.push(RESAMPLED_VERSION),
    }
    for s in geometry.sides {
        out.extend_from_slice(&s.to_le_bytes());
    }
    match geometry.reduction {
        Reduction::Factor(f) => out.extend_from_slice(&f),
        Reduction::Spacing(s) => s.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
    }
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
    let geometry_bytes = checked_geometry_len(bytes)?;
    let sides = read_sides(bytes, max_voxels)?;
    let (reduction, affine_at) = read_reduction(bytes, geometry_bytes)?;
    let affine = read_affine(bytes, affine_at)?;
    Ok((
        VolumeGeometry {
            sides,
            reduction,
            affine,
        },
        &bytes[geometry_bytes..],
    ))
}

fn u32_at(bytes: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"))
}

fn f32_at(bytes: &[u8], o: usize) -> f32 {
    f32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"))
}

/// The magic, the version, the length its version needs and the geometry's check value; the
/// geometry's length (check value included).
fn checked_geometry_len(bytes: &[u8]) -> Result<usize, VolumeStreamError> {
    if bytes.len() < 4 || !is_volume_stream(bytes) {
        let mut found = [0u8; 4];
        for (f, b) in found.iter_mut().zip(bytes) {
            *f = *b;
        }
        return Err(VolumeStreamError::Magic { found });
    }
    let geometry_bytes = match bytes.get(4) {
        Some(&VOLUME_VERSION) => GEOMETRY_BYTES,
        Some(&RESAMPLED_VERSION) => RESAMPLED_GEOMETRY_BYTES,
        Some(&found) => return Err(VolumeStreamError::Version { found }),
        None => {
            return Err(VolumeStreamError::Truncated {
                len: bytes.len(),
                need: GEOMETRY_BYTES,
            })
        }
    };
    if bytes.len() < geometry_bytes {
        return Err(VolumeStreamError::Truncated {
            len: bytes.len(),
            need: geometry_bytes,
        });
    }
    let check_at = geometry_bytes - 1;
    let computed = crc8([&bytes[..check_at]]);
    if bytes[check_at] != computed {
        return Err(VolumeStreamError::Check {
            offset: check_at,
            stored: bytes[check_at],
            computed,
        });
    }
    Ok(geometry_bytes)
}

/// The scan's sides (z, y, x), each at least 1, their product at most `max_voxels`.
fn read_sides(bytes: &[u8], max_voxels: u64) -> Result<[u32; 3], VolumeStreamError> {
    let mut sides = [0u32; 3];
    for (a, side) in sides.iter_mut().enumerate() {
        let offset = 5 + 4 * a;
        *side = u32_at(bytes, offset);
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
    Ok(sides)
}

/// How the scan was reduced before C: whole factors (version 1) or a target spacing (the
/// resampled version); and where the affine starts.
fn read_reduction(bytes: &[u8], geometry_bytes: usize) -> Result<(Reduction, usize), VolumeStreamError> {
    if geometry_bytes == GEOMETRY_BYTES {
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
        Ok((Reduction::Factor(factor), 20))
    } else {
        let mut spacing = [0f32; 3];
        for (a, s) in spacing.iter_mut().enumerate() {
            let offset = 17 + 4 * a;
            *s = f32_at(bytes, offset);
            if !(s.is_finite() && *s > 0.0) {
                return Err(VolumeStreamError::Field {
                    field: ["spacing z", "spacing y", "spacing x"][a],
                    offset,
                    value: s.to_string(),
                    reason: "a target spacing must be a positive number of mm",
                });
            }
        }
        Ok((Reduction::Spacing(spacing), 29))
    }
}

/// The scan's affine (3 x 4, finite), which must place voxels (the edge readers' rule).
fn read_affine(bytes: &[u8], affine_at: usize) -> Result<[[f32; 4]; 3], VolumeStreamError> {
    let mut affine = [[0f32; 4]; 3];
    for (k, v) in affine.iter_mut().flatten().enumerate() {
        let offset = affine_at + 4 * k;
        *v = f32_at(bytes, offset);
        if !v.is_finite() {
            return Err(VolumeStreamError::Field {
                field: "affine",
                offset,
                value: v.to_string(),
                reason: "must be a finite number",
            });
        }
    }
    // The same rule the edge's readers apply: a singular or zero-spacing affine places no voxel.
    if let Some(p) = crate::affine::affine_problem(&affine) {
        return Err(VolumeStreamError::Field {
            field: "affine",
            offset: affine_at,
            value: p.found,
            reason: p.reason,
        });
    }
    Ok(affine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> VolumeGeometry {
        VolumeGeometry {
            sides: [10, 216, 256],
            reduction: Reduction::Factor([1, 2, 2]),
            affine: [
                [-1.5, 0.0, 0.0, 90.0],
                [0.0, 1.5, 0.0, -120.5],
                [0.0, 0.0, 10.0, 33.0],
            ],
        }
    }

    fn resampled() -> VolumeGeometry {
        VolumeGeometry {
            reduction: Reduction::Spacing([10.0, 3.0, 3.0]),
            ..geometry()
        }
    }

    #[test]
    fn round_trip_and_every_damaged_geometry_byte_is_refused() {
        let code = [7u8, 8, 9];
        for (geometry, len) in [
            (geometry(), GEOMETRY_BYTES),
            (resampled(), RESAMPLED_GEOMETRY_BYTES),
        ] {
            let stream = wrap(&geometry, &code);
            assert_eq!(stream.len(), len + 3);
            assert_eq!(geometry.encoded_len(), len);
            let (g, rest) = unwrap(&stream, u64::MAX).unwrap();
            assert_eq!((g, rest), (geometry.clone(), &code[..]));
            for i in 0..len {
                for bit in [0x01u8, 0x80] {
                    let mut bad = stream.clone();
                    bad[i] ^= bit;
                    assert!(
                        unwrap(&bad, u64::MAX).is_err(),
                        "{geometry:?}: byte {i} bit {bit:#x} accepted"
                    );
                }
            }
            for cut in 0..len {
                assert!(unwrap(&stream[..cut], u64::MAX).is_err(), "{cut} bytes accepted");
            }
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
            reduction: Reduction::Factor([1, 0, 2]),
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
        let negative = VolumeGeometry {
            reduction: Reduction::Spacing([10.0, -3.0, 3.0]),
            ..geometry()
        };
        let e = unwrap(&wrap(&negative, &[]), u64::MAX).unwrap_err().to_string();
        assert!(e.contains("spacing y at byte 21"), "{e}");
        let nan = VolumeGeometry {
            affine: [[0.0; 4], [0.0, f32::INFINITY, 0.0, 0.0], [0.0; 4]],
            ..resampled()
        };
        let e = unwrap(&wrap(&nan, &[]), u64::MAX).unwrap_err().to_string();
        assert!(e.contains("affine at byte 49"), "{e}");
        // Finite but impossible: all zeros (a file with no geometry), and two parallel axes.
        for (affine, needle) in [
            ([[0.0; 4]; 3], "zero spacing"),
            (
                [[1.0, 2.0, 0.0, 5.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, 5.0]],
                "do not span 3D",
            ),
        ] {
            let bad = VolumeGeometry { affine, ..geometry() };
            let e = unwrap(&wrap(&bad, &[]), u64::MAX).unwrap_err().to_string();
            assert!(e.contains("affine at byte 20") && e.contains(needle), "{e}");
        }
        let e = unwrap(b"\x89PNG....", u64::MAX).unwrap_err().to_string();
        assert!(e.contains("not a volume stream"), "{e}");
    }
}
