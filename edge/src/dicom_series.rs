//! DICOM series as hospitals store scans: a folder of single-slice files of one series, read
//! with dicom-rs into the same `Volume` as a NIfTI file (voxels z, y, x; spacing; a RAS affine
//! as NIfTI's sform has it).
//!
//! Slices are ordered by Image Position Patient projected on the slice normal (the cross product
//! of Image Orientation Patient's two directions), never by file name; rescale slope and
//! intercept are applied. Every file is checked first: not DICOM, another series, another
//! orientation or slice size, a compressed transfer syntax (only native pixel data is read: no
//! image codecs are linked), missing or short pixel data, two slices at one position: each an
//! error naming the file. The voxel count is bounded before any pixel data is read.
//!
//! Geometry a careful reader refuses: a PixelSpacing that is not a positive number, orientation
//! directions that are zero or parallel, and slices that are not evenly spaced. Scanners round
//! positions, so each gap between neighbouring slices may differ from the series' median gap
//! by up to 5% (a missing slice is a gap of 100% more); beyond that the series is refused
//! naming the two slices, since stacking it as if uniform would displace everything past the
//! gap (no resampling onto a uniform grid is done for the user). Voxels must be finite numbers.

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::volume::{check_finite, Geometry, NonFinite, Volume};

/// Transfer syntaxes whose pixel data is stored as plain little-endian numbers.
const NATIVE: &[&str] = &["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: no DICOM files in the folder")]
    Empty { path: PathBuf },
    #[error("{path}: not a DICOM file: {reason}")]
    NotDicom { path: PathBuf, reason: String },
    #[error("{path}: attribute {attribute} is missing or unreadable: {reason}")]
    Attribute {
        path: PathBuf,
        attribute: &'static str,
        reason: String,
    },
    #[error("{path}: series {found} differs from {first}'s series {expected}: one series per folder")]
    MixedSeries {
        path: PathBuf,
        first: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: {what} differs from {first}'s")]
    Inconsistent {
        path: PathBuf,
        first: PathBuf,
        what: &'static str,
    },
    #[error("{path}: transfer syntax {uid} holds compressed pixel data; only native (uncompressed) pixel data is read")]
    Compressed { path: PathBuf, uid: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: pixel data is {found} bytes, {expected} expected for its rows, columns and bits")]
    PixelData {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("{path} and {other} lie at the same position along the slice normal")]
    SamePosition { path: PathBuf, other: PathBuf },
    #[error("{path}: the series has {voxels} voxels, above the limit of {max}")]
    TooLarge { path: PathBuf, voxels: u128, max: usize },
    #[error("{path}: {attribute} {found}: {reason}")]
    Geometry {
        path: PathBuf,
        attribute: &'static str,
        found: String,
        reason: String,
    },
    #[error(
        "{path}: slices are not evenly spaced: {first} and {second} are {gap:.3} mm apart, the \
         series' spacing is {median:.3} mm ({uneven} of {gaps} gaps differ by more than {tolerance}%; \
         a missing slice?)"
    )]
    UnevenSpacing {
        path: PathBuf,
        first: PathBuf,
        second: PathBuf,
        gap: f64,
        median: f64,
        uneven: usize,
        gaps: usize,
        tolerance: f64,
    },
    #[error("{path}: {problem}")]
    NonFinite { path: PathBuf, problem: NonFinite },
}

/// How far a gap between neighbouring slices may differ from the median gap, in percent.
pub const SPACING_TOLERANCE_PERCENT: f64 = 5.0;

/// One slice's header.
struct Slice {
    path: PathBuf,
    series: String,
    rows: usize,
    columns: usize,
    bits: u16,
    signed: bool,
    orientation: [f64; 6],
    position: [f64; 3],
    spacing: [f64; 2],
}

fn attribute_error(path: &Path, attribute: &'static str, reason: impl ToString) -> DicomError {
    DicomError::Attribute {
        path: path.to_path_buf(),
        attribute,
        reason: reason.to_string(),
    }
}

fn floats<const N: usize>(
    obj: &DefaultDicomObject,
    path: &Path,
    tag: Tag,
    attribute: &'static str,
) -> Result<[f64; N], DicomError> {
    let values = obj
        .element(tag)
        .map_err(|e| attribute_error(path, attribute, e))?
        .to_multi_float64()
        .map_err(|e| attribute_error(path, attribute, e))?;
    <[f64; N]>::try_from(values.as_slice())
        .ok()
        .filter(|v| v.iter().all(|x| x.is_finite()))
        .ok_or_else(|| {
            attribute_error(
                path,
                attribute,
                format!("{values:?}: expected {N} finite numbers"),
            )
        })
}

fn unsigned(
    obj: &DefaultDicomObject,
    path: &Path,
    tag: Tag,
    attribute: &'static str,
) -> Result<u16, DicomError> {
    obj.element(tag)
        .map_err(|e| attribute_error(path, attribute, e))?
        .to_int::<u16>()
        .map_err(|e| attribute_error(path, attribute, e))
}

/// An optional number with its default (rescale slope 1, intercept 0).
fn number_or(
    obj: &DefaultDicomObject,
    path: &Path,
    tag: Tag,
    attribute: &'static str,
    default: f64,
) -> Result<f64, DicomError> {
    match obj
        .element_opt(tag)
        .map_err(|e| attribute_error(path, attribute, e))?
    {
        None => Ok(default),
        Some(e) => e
            .to_float64()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| attribute_error(path, attribute, "not a finite number")),
    }
}

fn header(path: &Path) -> Result<Slice, DicomError> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| DicomError::NotDicom {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if !NATIVE.contains(&uid.as_str()) {
        return Err(DicomError::Compressed {
            path: path.to_path_buf(),
            uid,
        });
    }
    let samples = unsigned(&obj, path, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?;
    if samples != 1 {
        return Err(DicomError::Unsupported {
            path: path.to_path_buf(),
            what: format!("{samples} samples per pixel (colour)"),
        });
    }
    let bits = unsigned(&obj, path, tags::BITS_ALLOCATED, "BitsAllocated")?;
    if bits != 8 && bits != 16 {
        return Err(DicomError::Unsupported {
            path: path.to_path_buf(),
            what: format!("{bits} bits allocated per pixel"),
        });
    }
    Ok(Slice {
        path: path.to_path_buf(),
        series: obj
            .element(tags::SERIES_INSTANCE_UID)
            .map_err(|e| attribute_error(path, "SeriesInstanceUID", e))?
            .to_str()
            .map_err(|e| attribute_error(path, "SeriesInstanceUID", e))?
            .trim_end_matches('\0')
            .to_string(),
        rows: unsigned(&obj, path, tags::ROWS, "Rows")? as usize,
        columns: unsigned(&obj, path, tags::COLUMNS, "Columns")? as usize,
        bits,
        signed: unsigned(&obj, path, tags::PIXEL_REPRESENTATION, "PixelRepresentation")? == 1,
        orientation: floats(
            &obj,
            path,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
        )?,
        position: floats(&obj, path, tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient")?,
        spacing: floats(&obj, path, tags::PIXEL_SPACING, "PixelSpacing")?,
    })
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

/// The files of the series in `dir`, in name order (hidden files left out); at least one.
fn series_files(dir: &Path) -> Result<Vec<PathBuf>, DicomError> {
    let io = |e: std::io::Error| DicomError::Io {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DicomError::Empty {
            path: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Every slice of one series, with the first slice's rows, columns, pixel format, orientation
/// and pixel spacing.
fn check_consistent(slices: &[Slice]) -> Result<(), DicomError> {
    let first = &slices[0];
    for s in &slices[1..] {
        let differs = |what| DicomError::Inconsistent {
            path: s.path.clone(),
            first: first.path.clone(),
            what,
        };
        if s.series != first.series {
            return Err(DicomError::MixedSeries {
                path: s.path.clone(),
                first: first.path.clone(),
                found: s.series.clone(),
                expected: first.series.clone(),
            });
        }
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(differs("rows and columns"));
        }
        if (s.bits, s.signed) != (first.bits, first.signed) {
            return Err(differs("the pixel format"));
        }
        if s.orientation
            .iter()
            .zip(&first.orientation)
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(differs("ImageOrientationPatient"));
        }
        if s.spacing
            .iter()
            .zip(&first.spacing)
            .any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(differs("PixelSpacing"));
        }
    }
    Ok(())
}

/// Voxel (i = column, j = row, k = slice) to patient (LPS) millimetres, then to NIfTI's RAS,
/// from the sorted slices' positions; and the step between slices (the normal for one slice).
fn series_affine(
    slices: &[Slice],
    [row_dir, col_dir]: [[f64; 3]; 2],
    normal: [f64; 3],
    spacing: [f64; 2],
) -> ([[f32; 4]; 3], [f64; 3]) {
    let n = slices.len();
    let p0 = slices[0].position;
    let step = if n > 1 {
        let last = slices[n - 1].position;
        [0, 1, 2].map(|a| (last[a] - p0[a]) / (n - 1) as f64)
    } else {
        normal
    };
    let (dr, dc) = (spacing[0], spacing[1]);
    let lps = [0, 1, 2].map(|a| [row_dir[a] * dc, col_dir[a] * dr, step[a], p0[a]]);
    let affine = [0, 1, 2].map(|a| {
        let sign = if a < 2 { -1.0 } else { 1.0 };
        lps[a].map(|v| (sign * v) as f32)
    });
    (affine, step)
}

/// Reads the series in folder `dir` (every file in it must belong to the series).
pub fn read_series(dir: &Path, max_voxels: usize) -> Result<Volume, DicomError> {
    let files = series_files(dir)?;
    let mut slices = files.iter().map(|p| header(p)).collect::<Result<Vec<_>, _>>()?;
    check_consistent(&slices)?;
    let first = &slices[0];
    let (rows, columns) = (first.rows, first.columns);
    let (orientation, spacing) = (first.orientation, first.spacing);
    let first_path = first.path.clone();
    let geometry_error = |attribute, found: String, reason: &str| DicomError::Geometry {
        path: first_path.clone(),
        attribute,
        found,
        reason: reason.into(),
    };
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(geometry_error(
            "PixelSpacing",
            format!("{spacing:?}"),
            "the row and column spacings must be positive numbers of mm",
        ));
    }
    let voxels = rows as u128 * columns as u128 * slices.len() as u128;
    if voxels > max_voxels as u128 {
        return Err(DicomError::TooLarge {
            path: dir.to_path_buf(),
            voxels,
            max: max_voxels,
        });
    }
    let o = orientation;
    let (row_dir, col_dir) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let normal = cross(row_dir, col_dir);
    let norm = dot(normal, normal).sqrt();
    if norm.is_nan()
        || norm <= 1e-3
        || [row_dir, col_dir]
            .iter()
            .any(|d| (dot(*d, *d).sqrt() - 1.0).abs() > 1e-2)
    {
        return Err(geometry_error(
            "ImageOrientationPatient",
            format!("{orientation:?}"),
            "the row and column directions must be unit vectors at a right angle",
        ));
    }
    let normal = normal.map(|v| v / norm);
    slices.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
    for pair in slices.windows(2) {
        if (dot(pair[1].position, normal) - dot(pair[0].position, normal)).abs() < 1e-4 {
            return Err(DicomError::SamePosition {
                path: pair[1].path.clone(),
                other: pair[0].path.clone(),
            });
        }
    }
    check_even_spacing(dir, &slices, normal)?;
    let mut values = Vec::with_capacity(voxels as usize);
    for s in &slices {
        read_pixels(s, &mut values)?;
    }
    check_finite(&values, [slices.len(), rows, columns]).map_err(|problem| DicomError::NonFinite {
        path: dir.to_path_buf(),
        problem,
    })?;
    let n = slices.len();
    let (affine, step) = series_affine(&slices, [row_dir, col_dir], normal, spacing);
    let (dr, dc) = (spacing[0], spacing[1]);
    // What the cloud will be sent must place voxels (the same rule its reader applies).
    if let Some(p) = orchestra_codec::affine::affine_problem(&affine) {
        return Err(geometry_error("the series' affine", p.found, p.reason));
    }
    Ok(Volume {
        geometry: Geometry {
            sides: [n, rows, columns],
            spacing: [dot(step, step).sqrt() as f32, dr as f32, dc as f32],
            affine,
        },
        voxels: values,
    })
}

/// Refuses a series whose neighbouring slices (sorted along `normal`, a unit vector) are not
/// evenly spaced within the tolerance, naming the worst gap's two files.
fn check_even_spacing(dir: &Path, slices: &[Slice], normal: [f64; 3]) -> Result<(), DicomError> {
    if slices.len() < 3 {
        return Ok(());
    }
    let gaps: Vec<f64> = slices
        .windows(2)
        .map(|p| dot(p[1].position, normal) - dot(p[0].position, normal))
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let off = |g: f64| (g - median).abs() / median * 100.0;
    let uneven = gaps
        .iter()
        .filter(|g| off(**g) > SPACING_TOLERANCE_PERCENT)
        .count();
    if uneven == 0 {
        return Ok(());
    }
    let (worst, gap) = gaps
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| off(a.1).total_cmp(&off(b.1)))
        .expect("gaps");
    Err(DicomError::UnevenSpacing {
        path: dir.to_path_buf(),
        first: slices[worst].path.clone(),
        second: slices[worst + 1].path.clone(),
        gap,
        median,
        uneven,
        gaps: gaps.len(),
        tolerance: SPACING_TOLERANCE_PERCENT,
    })
}

/// Appends one slice's rescaled values, row by row.
fn read_pixels(s: &Slice, out: &mut Vec<f32>) -> Result<(), DicomError> {
    let obj = OpenFileOptions::new()
        .open_file(&s.path)
        .map_err(|e| DicomError::NotDicom {
            path: s.path.clone(),
            reason: e.to_string(),
        })?;
    let slope = number_or(&obj, &s.path, tags::RESCALE_SLOPE, "RescaleSlope", 1.0)?;
    let intercept = number_or(&obj, &s.path, tags::RESCALE_INTERCEPT, "RescaleIntercept", 0.0)?;
    let bytes = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| attribute_error(&s.path, "PixelData", e))?
        .to_bytes()
        .map_err(|e| attribute_error(&s.path, "PixelData", e))?;
    let width = s.bits as usize / 8;
    let expected = s.rows * s.columns * width;
    // Odd lengths are padded to even in DICOM; anything shorter is damage.
    if bytes.len() < expected || bytes.len() > expected + 1 {
        return Err(DicomError::PixelData {
            path: s.path.clone(),
            found: bytes.len(),
            expected,
        });
    }
    let value = |b: &[u8]| -> f64 {
        match (width, s.signed) {
            (1, false) => b[0] as f64,
            (1, true) => b[0] as i8 as f64,
            (_, false) => u16::from_le_bytes([b[0], b[1]]) as f64,
            (_, true) => i16::from_le_bytes([b[0], b[1]]) as f64,
        }
    };
    out.extend(
        bytes[..expected]
            .chunks_exact(width)
            .map(|b| (value(b) * slope + intercept) as f32),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    use super::*;

    const ROWS: usize = 4;
    const COLUMNS: usize = 5;

    /// Slice k of a series: pixel (y, x) holds 100 k + 10 y + x before rescaling.
    fn write_slice(path: &Path, series: &str, k: usize, z: f64, pixel_data: bool) {
        write_slice_with(path, series, k, z, pixel_data, &[]);
    }

    /// The same with some attributes replaced (tag, value as DICOM text).
    fn write_slice_with(
        path: &Path,
        series: &str,
        k: usize,
        z: f64,
        pixel_data: bool,
        replaced: &[(Tag, &str)],
    ) {
        let values: Vec<u16> = (0..ROWS * COLUMNS)
            .map(|i| (100 * k + 10 * (i / COLUMNS) + i % COLUMNS) as u16)
            .collect();
        let sop = format!("1.2.826.0.1.3680043.2.1125.{k}");
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(ROWS as u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(COLUMNS as u16)),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, "2"),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                format!("-100\\-80\\{z}").as_str(),
            ),
            DataElement::new(tags::PIXEL_SPACING, VR::DS, "0.8\\0.7"),
        ]);
        for (tag, value) in replaced {
            obj.put(DataElement::new(*tag, VR::DS, *value));
        }
        if pixel_data {
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(values.into()),
            ));
        }
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid(uids::MR_IMAGE_STORAGE)
                    .media_storage_sop_instance_uid(sop.as_str())
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
            )
            .unwrap();
        file.write_to_file(path).unwrap();
    }

    #[test]
    fn a_series_is_read_in_position_order_rescaled_with_its_affine() {
        let dir = tempfile::tempdir().unwrap();
        // File names in the reverse of the anatomical order: position decides, not names.
        for k in 0..3 {
            write_slice(
                &dir.path().join(format!("IM{}", 9 - k)),
                "1.2.3",
                k,
                37.5 + 2.5 * k as f64,
                true,
            );
        }
        let v = read_series(dir.path(), 1 << 20).unwrap();
        assert_eq!(v.geometry.sides, [3, ROWS, COLUMNS]);
        assert_eq!(v.geometry.spacing, [2.5, 0.8, 0.7]);
        for k in 0..3 {
            for y in 0..ROWS {
                for x in 0..COLUMNS {
                    let raw = (100 * k + 10 * y + x) as f32;
                    assert_eq!(v.voxels[(k * ROWS + y) * COLUMNS + x], raw * 2.0 - 1024.0);
                }
            }
        }
        // LPS (i along x, j along y, k along z) turned to RAS: x and y negated.
        assert_eq!(
            v.geometry.affine,
            [
                [-0.7, 0.0, 0.0, 100.0],
                [0.0, -0.8, 0.0, 80.0],
                [0.0, 0.0, 2.5, 37.5]
            ]
        );
    }

    #[test]
    fn bad_series_are_refused_naming_the_file() {
        let check = |setup: &dyn Fn(&Path), needle: &str| {
            let dir = tempfile::tempdir().unwrap();
            write_slice(&dir.path().join("a"), "1.2.3", 0, 0.0, true);
            setup(dir.path());
            let e = read_series(dir.path(), 1 << 20).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        };
        check(
            &|d| write_slice(&d.join("b"), "1.2.4", 1, 2.0, true),
            "differs from",
        );
        check(
            &|d| write_slice(&d.join("b"), "1.2.3", 1, 2.0, false),
            "b: attribute PixelData",
        );
        check(
            &|d| std::fs::write(d.join("notes.txt"), "x").unwrap(),
            "notes.txt: not a DICOM file",
        );
        check(
            &|d| write_slice(&d.join("b"), "1.2.3", 1, 0.0, true),
            "same position",
        );
        let dir = tempfile::tempdir().unwrap();
        write_slice(&dir.path().join("a"), "1.2.3", 0, 0.0, true);
        assert!(matches!(
            read_series(dir.path(), 10),
            Err(DicomError::TooLarge { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_series(empty.path(), 10),
            Err(DicomError::Empty { .. })
        ));
    }

    /// A series of slices at positions `zs` along z, with attributes replaced in every slice.
    fn series_at(zs: &[f64], replaced: &[(Tag, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (k, z) in zs.iter().enumerate() {
            write_slice_with(&dir.path().join(format!("IM{k}")), "1.2.3", k, *z, true, replaced);
        }
        dir
    }

    #[test]
    fn slices_must_be_evenly_spaced_within_the_tolerance() {
        // Positions rounded by the scanner: gaps of 2.5, 2.54 and 2.46 mm (1.6% off) pass, and
        // the spacing is the mean.
        let jitter = series_at(&[0.0, 2.5, 5.04, 7.5], &[]);
        let v = read_series(jitter.path(), 1 << 20).unwrap();
        assert_eq!(v.geometry.spacing[0], 2.5);
        // A missing slice: one gap of 5 mm among 2.5 mm ones. Stacked as uniform, everything past
        // it would be displaced; refused naming the two slices around the gap.
        let missing = series_at(&[0.0, 2.5, 5.0, 10.0, 12.5], &[]);
        let e = read_series(missing.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                DicomError::UnevenSpacing {
                    uneven: 1,
                    gaps: 4,
                    ..
                }
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("IM2")
                && text.contains("IM3")
                && text.contains("5.000 mm apart")
                && text.contains("2.500 mm"),
            "{text}"
        );
        // 8% off is beyond the tolerance.
        let drift = series_at(&[0.0, 2.5, 5.0, 7.7], &[]);
        assert!(matches!(
            read_series(drift.path(), 1 << 20),
            Err(DicomError::UnevenSpacing { .. })
        ));
    }

    #[test]
    fn impossible_geometry_and_non_finite_voxels_are_refused() {
        let zero = series_at(&[0.0, 2.5], &[(tags::PIXEL_SPACING, "0\\0.7")]);
        let e = read_series(zero.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("IM0: PixelSpacing [0.0, 0.7]"), "{e}");
        let parallel = series_at(
            &[0.0, 2.5],
            &[(tags::IMAGE_ORIENTATION_PATIENT, "1\\0\\0\\1\\0\\0")],
        );
        let e = read_series(parallel.path(), 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("ImageOrientationPatient") && e.contains("right angle"),
            "{e}"
        );
        // A rescale slope that overflows f32: voxels of infinity, counted and the first located.
        let huge = series_at(&[0.0, 2.5], &[(tags::RESCALE_SLOPE, "1e39")]);
        let e = read_series(huge.path(), 1 << 20).unwrap_err();
        match &e {
            DicomError::NonFinite { problem, .. } => {
                // Slice 0's pixel (0, 0) is 0 and its value -1024; the first infinite one is (0, 0, 1).
                assert_eq!(problem.first, [0, 0, 1], "{e}");
                assert_eq!(problem.count, 2 * ROWS * COLUMNS - 1, "{e}");
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("not finite numbers"), "{e}");
    }
}
