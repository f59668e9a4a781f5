//! Writing label maps (and scans) as NIfTI-1 (`.nii`, or `.nii.gz` by the name), with the source scan's
//! geometry: the voxel-to-world affine as the sform (and the spacing in pixdim), so that the
//! label volume opens aligned with its image in ITK-SNAP, 3D Slicer or nibabel. The file is
//! written beside its final name and renamed into place: it is visible only once complete.

use std::io::Write;
use std::path::Path;

use crate::volume::{Geometry, LabelVolume, Volume, VolumeError};

const HEADER: usize = 348;
/// The header, then four bytes saying "no extension".
const VOX_OFFSET: usize = HEADER + 4;
const DT_UINT8: i16 = 2;
const DT_FLOAT32: i16 = 16;
/// sform_code 2: aligned to another file's space (the scan the labels were computed from).
const SFORM_ALIGNED: i16 = 2;
/// xyzt_units: millimetres.
const UNITS_MM: u8 = 2;

/// The 352 bytes before the voxels: `datatype` of `bitpix` bits, `cal_max` the largest value.
fn header(g: &Geometry, datatype: i16, bitpix: i16, cal_max: f32) -> Vec<u8> {
    let mut h = vec![0u8; VOX_OFFSET];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(HEADER as i32).to_le_bytes());
    put(38, b"r");
    // dim: rank 3, then x, y, z (sides are z, y, x).
    let dims = [
        3i16,
        g.sides[2] as i16,
        g.sides[1] as i16,
        g.sides[0] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dims.iter().enumerate() {
        put(40 + 2 * i, &d.to_le_bytes());
    }
    put(70, &datatype.to_le_bytes());
    put(72, &bitpix.to_le_bytes());
    // pixdim[0] is qfac (1: right-handed), then the spacing along x, y, z.
    let pixdim = [
        1.0f32,
        g.spacing[2],
        g.spacing[1],
        g.spacing[0],
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(76 + 4 * i, &p.to_le_bytes());
    }
    put(108, &(VOX_OFFSET as f32).to_le_bytes());
    // Class indices as they are: slope 1, intercept 0.
    put(112, &1f32.to_le_bytes());
    put(123, &[UNITS_MM]);
    put(124, &cal_max.to_le_bytes());
    put(148, b"orchestra");
    put(254, &SFORM_ALIGNED.to_le_bytes());
    for (row, at) in g.affine.iter().zip([280, 296, 312]) {
        for (i, v) in row.iter().enumerate() {
            put(at + 4 * i, &v.to_le_bytes());
        }
    }
    put(344, b"n+1\0");
    h
}

/// Writes `labels` to `path` (class indices as bytes), gzipped when the name ends in `.gz`.
pub fn write_labels(path: &Path, labels: &LabelVolume) -> Result<(), VolumeError> {
    let g = &labels.geometry;
    check(path, g, labels.labels.len(), "labels")?;
    let max = labels.labels.iter().copied().max().unwrap_or(0);
    let mut bytes = header(g, DT_UINT8, 8, max as f32);
    bytes.extend_from_slice(&labels.labels);
    write_file(path, &bytes)
}

/// `labels` as a gzipped NIfTI-1 file in memory (`.nii.gz` bytes), for answers over a network;
/// `name` names it in errors.
pub fn labels_nii_gz(labels: &LabelVolume, name: &str) -> Result<Vec<u8>, VolumeError> {
    let g = &labels.geometry;
    check(Path::new(name), g, labels.labels.len(), "labels")?;
    let max = labels.labels.iter().copied().max().unwrap_or(0);
    let mut bytes = header(g, DT_UINT8, 8, max as f32);
    bytes.extend_from_slice(&labels.labels);
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&bytes)
        .and_then(|_| z.finish())
        .map_err(|e| VolumeError::Io {
            path: name.into(),
            reason: e.to_string(),
        })
}

/// Writes a scan to `path` as 32-bit floats, gzipped when the name ends in `.gz`.
pub fn write_volume(path: &Path, volume: &Volume) -> Result<(), VolumeError> {
    let g = &volume.geometry;
    check(path, g, volume.voxels.len(), "voxels")?;
    let max = volume.voxels.iter().copied().fold(0.0f32, f32::max);
    let mut bytes = header(g, DT_FLOAT32, 32, max);
    bytes.reserve(4 * volume.voxels.len());
    for v in &volume.voxels {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_file(path, &bytes)
}

fn check(path: &Path, g: &Geometry, count: usize, what: &str) -> Result<(), VolumeError> {
    let io = |reason: String| VolumeError::Io {
        path: path.to_path_buf(),
        reason,
    };
    if count != g.voxels() {
        return Err(io(format!(
            "{count} {what} for sides {:?} ({} voxels)",
            g.sides,
            g.voxels()
        )));
    }
    if g.sides.iter().any(|&s| s == 0 || s > i16::MAX as usize) {
        return Err(io(format!(
            "sides {:?}: NIfTI-1 holds 1..=32767 per dimension",
            g.sides
        )));
    }
    Ok(())
}

/// Writes the file beside its name, then renames it into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), VolumeError> {
    let io = |reason: String| VolumeError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.partial"));
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        if gzip {
            let mut z = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            z.write_all(bytes)?;
            z.finish()?.sync_all()?;
        } else {
            let mut f = file;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{read_labels, DEFAULT_MAX_VOXELS};

    fn labels() -> LabelVolume {
        let sides = [3, 4, 5];
        LabelVolume {
            geometry: Geometry {
                sides,
                spacing: [2.5, 0.8, 0.9],
                // Oblique, flipped and shifted, as scanner affines are.
                affine: [
                    [-0.9, 0.0, 0.1, 120.5],
                    [0.0, 0.8, 0.0, -97.25],
                    [0.05, 0.0, 2.5, -33.0],
                ],
            },
            labels: (0..60).map(|i| (i * 7 % 4) as u8).collect(),
        }
    }

    /// Written, then read back by the reader (the nifti crate's parser): the same labels in the
    /// same order, the same sides, spacing and affine; gzipped or not.
    #[test]
    fn a_label_map_reads_back_with_its_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let want = labels();
        for name in ["labels.nii.gz", "labels.nii"] {
            let path = dir.path().join(name);
            write_labels(&path, &want).unwrap();
            let back = read_labels(&path, DEFAULT_MAX_VOXELS).unwrap();
            assert_eq!(back, want, "{name}");
        }
        let raw = std::fs::read(dir.path().join("labels.nii")).unwrap();
        assert_eq!(raw.len(), VOX_OFFSET + 60);
        assert_eq!(&raw[344..348], b"n+1\0");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    }

    #[test]
    fn a_scan_reads_back_as_the_same_floats() {
        let dir = tempfile::tempdir().unwrap();
        let l = labels();
        let scan = Volume {
            geometry: l.geometry.clone(),
            voxels: (0..60).map(|i| (i as f32 * 0.37).sin() * 100.0).collect(),
        };
        let path = dir.path().join("scan.nii.gz");
        write_volume(&path, &scan).unwrap();
        assert_eq!(
            crate::volume::read_volume(&path, DEFAULT_MAX_VOXELS).unwrap(),
            scan
        );
    }

    #[test]
    fn a_label_count_that_does_not_fit_the_sides_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = labels();
        bad.labels.pop();
        let path = dir.path().join("bad.nii.gz");
        let err = write_labels(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("bad.nii.gz") && err.contains("59 labels"), "{err}");
        assert!(!path.exists());
    }
}
