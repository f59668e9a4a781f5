//! A volume written as a DICOM series, one file per slice, as a scanner exports it (native
//! explicit-VR little-endian 16-bit pixel data with a rescale slope and intercept): synthetic
//! DICOM datasets for tests and demos, read back by `dicom_series` onto the same voxels.
//!
//! The geometry is the reader's, inverted: NIfTI's RAS affine turned to DICOM's LPS, the first
//! two columns' directions as Image Orientation Patient and their lengths as Pixel Spacing,
//! slice k at the origin plus k times the third column. Voxels are quantised to 65,536 levels
//! between the volume's minimum and maximum (the stored values times the slope plus the
//! intercept give them back to within half a level).

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::volume::Volume;

/// Writes `volume` into `dir` (created if missing) as `IM00000`, `IM00001`, ... of one
/// series; `series` is its Series Instance UID (digits and dots).
pub fn write_series(dir: &Path, volume: &Volume, series: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let [depth, rows, columns] = volume.geometry.sides;
    let (rows16, columns16) = match (u16::try_from(rows), u16::try_from(columns)) {
        (Ok(r), Ok(c)) => (r, c),
        _ => {
            return Err(std::io::Error::other(format!(
                "{rows} x {columns} slices do not fit DICOM's 16-bit sides"
            )))
        }
    };
    let a = volume.geometry.affine;
    // RAS -> LPS: negate x and y.
    let lps = |col: usize| [-(a[0][col] as f64), -(a[1][col] as f64), a[2][col] as f64];
    let length = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let (x, y, z, origin) = (lps(0), lps(1), lps(2), lps(3));
    let (dx, dy) = (length(x), length(y));
    if dx == 0.0 || dy == 0.0 {
        return Err(std::io::Error::other("the affine has a zero in-plane axis"));
    }
    let text = |v: &[f64]| v.iter().map(|f| format!("{f:.6}")).collect::<Vec<_>>().join("\\");
    let orientation = text(&[x[0] / dx, x[1] / dx, x[2] / dx, y[0] / dy, y[1] / dy, y[2] / dy]);
    let spacing = text(&[dy, dx]);
    let (lo, hi) = volume
        .voxels
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo as f64, hi as f64)
    } else {
        (0.0, 0.0)
    };
    let slope: f64 = format!("{:.8e}", if hi > lo { (hi - lo) / 65535.0 } else { 1.0 })
        .parse()
        .expect("a formatted float parses");
    let plane = rows * columns;
    for k in 0..depth {
        let position = text(&[0, 1, 2].map(|i| origin[i] + k as f64 * z[i]));
        let values: Vec<u16> = volume.voxels[k * plane..(k + 1) * plane]
            .iter()
            .map(|&v| ((v as f64 - lo) / slope).round().clamp(0.0, 65535.0) as u16)
            .collect();
        let sop = format!("{series}.{}", k + 1);
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
            DataElement::new(tags::MODALITY, VR::CS, "MR"),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series),
            DataElement::new(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string().as_str()),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(columns16)),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, format!("{slope:.8e}").as_str()),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, format!("{lo:.6}").as_str()),
            DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, orientation.as_str()),
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, position.as_str()),
            DataElement::new(tags::PIXEL_SPACING, VR::DS, spacing.as_str()),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into())),
        ]);
        let path = dir.join(format!("IM{k:05}"));
        obj.with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::MR_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop.as_str())
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?
        .write_to_file(&path)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_series::read_series;
    use crate::synthetic_volume::{heart3d, Heart3d};

    /// A synthetic heart written as a series reads back on the same voxels: sides, spacing and
    /// affine equal, intensities within half a quantisation level.
    #[test]
    fn a_written_series_reads_back_on_the_same_voxels() {
        let dir = tempfile::tempdir().unwrap();
        let (mut scan, _) = heart3d(&Heart3d::new([5, 12, 10], 3));
        scan.geometry.affine[0][3] = 12.5;
        scan.geometry.affine[2][3] = -40.0;
        write_series(dir.path(), &scan, "1.2.826.0.1.3680043.2.1125.77").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            5,
            "a file per slice"
        );
        let back = read_series(dir.path(), 1 << 20).unwrap();
        assert_eq!(back.geometry.sides, scan.geometry.sides);
        for (r, w) in back
            .geometry
            .affine
            .iter()
            .flatten()
            .zip(scan.geometry.affine.iter().flatten())
        {
            assert!(
                (r - w).abs() < 1e-5,
                "{:?} vs {:?}",
                back.geometry.affine,
                scan.geometry.affine
            );
        }
        let (lo, hi) = scan
            .voxels
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let level = (hi - lo) / 65535.0;
        for (i, (r, w)) in back.voxels.iter().zip(&scan.voxels).enumerate() {
            assert!(
                (r - w).abs() <= 0.5 * level + 1e-4 * w.abs().max(1.0),
                "voxel {i}: {r} vs {w}"
            );
        }
    }
}
