//! A folder of 3D scans and their label maps: which files pair up, whether each pair agrees
//! (sides and affine), the label map that turns a dataset's classes into an Experiment's, and
//! the validation split by patient.
//!
//! Layouts: `images/ID.nii[.gz]` with `labels/ID.nii[.gz]` (ACDC, nnU-Net style), or one
//! folder of `ID_image.nii.gz` with `ID_label.nii.gz` (MM-WHS). A scan may also be a folder
//! holding one DICOM series as a scanner exports it (`images/ID/` or `ID_image/`), read as the
//! edge reads it (`dicom_series`), so a series trains without conversion; its label map is
//! NIfTI (`labels/ID.nii.gz`, `ID_label.nii.gz`) and must sit on the series' voxels (sides and
//! RAS affine, as for NIfTI scans). A scan without its label map, or a label map without its
//! scan, is an error naming the file, never a silently smaller dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::scan::{read_scan, ScanError};
use crate::volume::{read_labels, LabelVolume, Volume, VolumeError};

/// One scan and its label map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumePair {
    pub id: String,
    pub image: PathBuf,
    pub labels: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeDatasetError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("{path}: {reason}")]
    Folder { path: PathBuf, reason: String },
    #[error("{path}: no {missing} for it (expected {expected})")]
    Unpaired {
        path: PathBuf,
        missing: &'static str,
        expected: PathBuf,
    },
    #[error("{labels} does not fit {image}: {what}")]
    Mismatch {
        image: PathBuf,
        labels: PathBuf,
        what: String,
    },
    #[error("{path}: voxel {index} has class {value}, which the label map does not name")]
    Unmapped { path: PathBuf, index: usize, value: u8 },
}

/// The NIfTI name's id: the file name without `.nii` or `.nii.gz`, if it is a NIfTI name.
fn nifti_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .filter(|id| !id.is_empty() && !id.starts_with('.'))
        .map(String::from)
}

/// A folder's name as an id, if it is not hidden (a DICOM series folder).
fn folder_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (path.is_dir() && !name.is_empty() && !name.starts_with('.')).then(|| name.to_string())
}

/// NIfTI files by id, and with `series` also the subfolders (DICOM series) by name.
fn scan_files(dir: &Path, series: bool) -> Result<BTreeMap<String, PathBuf>, VolumeDatasetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| VolumeDatasetError::Folder {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let id = nifti_id(&path).or_else(|| folder_id(&path).filter(|_| series));
        if let Some(id) = id {
            if let Some(other) = out.insert(id.clone(), path.clone()) {
                return Err(VolumeDatasetError::Folder {
                    path: path.clone(),
                    reason: format!("two scans with the id {id:?}: this and {}", other.display()),
                });
            }
        }
    }
    Ok(out)
}

/// Every pair of the folder, by id.
pub fn list_pairs(root: &Path) -> Result<Vec<VolumePair>, VolumeDatasetError> {
    let (images, labels) = (root.join("images"), root.join("labels"));
    let pairs = if images.is_dir() || labels.is_dir() {
        let (imgs, labs) = (scan_files(&images, true)?, scan_files(&labels, false)?);
        let mut pairs = Vec::new();
        for (id, image) in &imgs {
            let Some(l) = labs.get(id) else {
                return Err(VolumeDatasetError::Unpaired {
                    path: image.clone(),
                    missing: "label map",
                    expected: labels.join(format!("{id}.nii.gz")),
                });
            };
            pairs.push(VolumePair {
                id: id.clone(),
                image: image.clone(),
                labels: l.clone(),
            });
        }
        if let Some((id, l)) = labs.iter().find(|(id, _)| !imgs.contains_key(*id)) {
            return Err(VolumeDatasetError::Unpaired {
                path: l.clone(),
                missing: "scan",
                expected: images.join(format!("{id}.nii.gz")),
            });
        }
        pairs
    } else {
        let files = scan_files(root, true)?;
        let mut pairs = Vec::new();
        for (name, path) in &files {
            if path.is_dir() && !name.ends_with("_image") {
                continue;
            }
            if let Some(id) = name.strip_suffix("_image") {
                let Some(l) = files.get(&format!("{id}_label")).filter(|l| !l.is_dir()) else {
                    return Err(VolumeDatasetError::Unpaired {
                        path: path.clone(),
                        missing: "label map",
                        expected: root.join(format!("{id}_label.nii.gz")),
                    });
                };
                pairs.push(VolumePair {
                    id: id.to_string(),
                    image: path.clone(),
                    labels: l.clone(),
                });
            } else if let Some(id) = name.strip_suffix("_label").filter(|_| !path.is_dir()) {
                if !files.contains_key(&format!("{id}_image")) {
                    return Err(VolumeDatasetError::Unpaired {
                        path: path.clone(),
                        missing: "scan",
                        expected: root.join(format!("{id}_image.nii.gz")),
                    });
                }
            }
        }
        pairs
    };
    if pairs.is_empty() {
        return Err(VolumeDatasetError::Folder {
            path: root.to_path_buf(),
            reason: "no volumes: expected images/ID.nii.gz (or a DICOM series folder images/ID/) with labels/ID.nii.gz, \
                     or ID_image.nii.gz (or ID_image/) with ID_label.nii.gz"
                .into(),
        });
    }
    Ok(pairs)
}

/// Affines agree when every entry is within this (millimetres; rounding in other writers).
const AFFINE_TOLERANCE: f32 = 1e-3;

/// Reads a pair and checks that the labels fit the scan; `label_map[c]` is the class the
/// Experiment gives to the dataset's class `c` (a class beyond the map is an error naming the
/// voxel).
pub fn read_pair(
    pair: &VolumePair,
    max_voxels: usize,
    label_map: Option<&[u8]>,
) -> Result<(Volume, LabelVolume), VolumeDatasetError> {
    let image = read_scan(&pair.image, max_voxels)?;
    let mut labels = read_labels(&pair.labels, max_voxels)?;
    let mismatch = |what: String| VolumeDatasetError::Mismatch {
        image: pair.image.clone(),
        labels: pair.labels.clone(),
        what,
    };
    let (g, h) = (&image.geometry, &labels.geometry);
    if g.sides != h.sides {
        return Err(mismatch(format!(
            "sides {:?} against the scan's {:?}",
            h.sides, g.sides
        )));
    }
    let off = g
        .affine
        .iter()
        .flatten()
        .zip(h.affine.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if off > AFFINE_TOLERANCE || off.is_nan() {
        return Err(mismatch(format!(
            "affines differ by up to {off} (labels {:?}, scan {:?})",
            h.affine, g.affine
        )));
    }
    if let Some(map) = label_map {
        for (index, v) in labels.labels.iter_mut().enumerate() {
            *v = *map.get(*v as usize).ok_or(VolumeDatasetError::Unmapped {
                path: pair.labels.clone(),
                index,
                value: *v,
            })?;
        }
    }
    Ok((image, labels))
}

/// The patient a volume belongs to: the id without a trailing `_frameNN` (ACDC's two frames of
/// one patient), else the id itself.
pub fn patient_of(id: &str) -> &str {
    match id.rsplit_once("_frame") {
        Some((patient, frame)) if !frame.is_empty() && frame.bytes().all(|b| b.is_ascii_digit()) => patient,
        _ => id,
    }
}

/// The patients the pairs come from, sorted, each once (a patient's frames share it).
pub fn patients(pairs: &[VolumePair]) -> Vec<&str> {
    let mut patients: Vec<&str> = pairs.iter().map(|p| patient_of(&p.id)).collect();
    patients.sort();
    patients.dedup();
    patients
}

/// How patients are dealt into validation folds of `val_patients` each; both count the patients
/// in sorted order from the end, and both make `patients / val_patients` disjoint folds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FoldLayout {
    /// Consecutive patients: fold 0 the last `val_patients`, fold 1 the ones before them, ...
    #[default]
    Blocks,
    /// Every n-th patient, n the number of folds: fold k holds out the k-th, (k + n)-th, ...
    /// from the end. Where ids are numbered by group (ACDC numbers its patients by diagnosis,
    /// 20 to a group), blocks hold out mostly one group and interleaved folds every group.
    Interleaved,
}

/// How many disjoint validation folds of `val_patients` each `patients` make (both layouts; the
/// patients left over after the last fold are never held out). Callers bound a fold index by it.
pub fn fold_count(patients: usize, val_patients: usize) -> usize {
    patients / val_patients.max(1)
}

/// Splits pairs into training and validation by patient, so that no patient is in both: fold
/// `fold` of `val_patients` patients, dealt as `layout` says, goes to validation with all their
/// volumes. Disjoint folds are disjoint validation sets (patient-wise cross-validation); a fold
/// past the last (`fold >= fold_count(..)`) holds out fewer or nobody (callers bound it).
pub fn split_by_patient(
    pairs: &[VolumePair],
    val_patients: usize,
    fold: usize,
    layout: FoldLayout,
) -> (Vec<VolumePair>, Vec<VolumePair>) {
    let all = patients(pairs);
    let from_end = all.iter().rev().copied();
    let held: Vec<&str> = match layout {
        FoldLayout::Blocks => from_end
            .skip(fold.saturating_mul(val_patients))
            .take(val_patients)
            .collect(),
        FoldLayout::Interleaved => {
            let folds = fold_count(all.len(), val_patients).max(1);
            from_end.skip(fold).step_by(folds).take(val_patients).collect()
        }
    };
    pairs
        .iter()
        .cloned()
        .partition(|p| !held.contains(&patient_of(&p.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nifti_write::write_labels;
    use crate::volume::{Geometry, DEFAULT_MAX_VOXELS};

    fn volume(sides: [usize; 3], shift: f32, values: impl Fn(usize) -> u8) -> LabelVolume {
        LabelVolume {
            geometry: Geometry {
                sides,
                spacing: [2.0, 1.0, 1.0],
                affine: [[1.0, 0.0, 0.0, shift], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
            },
            labels: (0..sides.iter().product()).map(values).collect(),
        }
    }

    #[test]
    fn pairs_of_both_layouts_and_every_unpaired_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["images", "labels"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        for id in ["patient001_frame01", "patient001_frame02", "patient002_frame01"] {
            let v = volume([2, 3, 4], 0.0, |i| (i % 3) as u8);
            write_labels(&root.join("images").join(format!("{id}.nii.gz")), &v).unwrap();
            write_labels(&root.join("labels").join(format!("{id}.nii.gz")), &v).unwrap();
        }
        let pairs = list_pairs(root).unwrap();
        assert_eq!(pairs.len(), 3);
        let (train, val) = split_by_patient(&pairs, 1, 0, FoldLayout::Blocks);
        let ids = |v: &[VolumePair]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&val), ["patient002_frame01"], "the last patient is held out");
        assert_eq!(
            ids(&train),
            ["patient001_frame01", "patient001_frame02"],
            "with all its frames"
        );
        // A scan without labels is named.
        let v = volume([2, 3, 4], 0.0, |_| 0);
        write_labels(&root.join("images/patient003_frame01.nii.gz"), &v).unwrap();
        let err = list_pairs(root).unwrap_err().to_string();
        assert!(
            err.contains("patient003_frame01.nii.gz") && err.contains("no label map"),
            "{err}"
        );

        let flat = tempfile::tempdir().unwrap();
        write_labels(&flat.path().join("ct_1010_image.nii.gz"), &v).unwrap();
        write_labels(&flat.path().join("ct_1010_label.nii.gz"), &v).unwrap();
        let pairs = list_pairs(flat.path()).unwrap();
        assert_eq!(pairs[0].id, "ct_1010");
        write_labels(&flat.path().join("ct_1011_label.nii.gz"), &v).unwrap();
        let err = list_pairs(flat.path()).unwrap_err().to_string();
        assert!(
            err.contains("ct_1011_label.nii.gz") && err.contains("no scan"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(list_pairs(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no volumes"));
    }

    #[test]
    fn labels_that_do_not_fit_their_scan_or_the_label_map_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: &LabelVolume| {
            let p = dir.path().join(name);
            write_labels(&p, v).unwrap();
            p
        };
        let image = write("a_image.nii.gz", &volume([2, 3, 4], 0.0, |i| i as u8));
        let pair = |labels: PathBuf| VolumePair {
            id: "a".into(),
            image: image.clone(),
            labels,
        };
        let other_sides = write("b.nii.gz", &volume([2, 4, 3], 0.0, |_| 1));
        let err = read_pair(&pair(other_sides), DEFAULT_MAX_VOXELS, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.nii.gz") && err.contains("sides [2, 4, 3]"),
            "{err}"
        );
        let moved = write("c.nii.gz", &volume([2, 3, 4], 5.0, |_| 1));
        let err = read_pair(&pair(moved), DEFAULT_MAX_VOXELS, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.nii.gz") && err.contains("affines differ by up to 5"),
            "{err}"
        );
        // MM-WHS-like classes 0..7 mapped onto two; a class beyond the map is named.
        let good = write("d.nii.gz", &volume([2, 3, 4], 0.0, |i| (i % 8) as u8));
        let map = [0u8, 1, 1, 2, 2, 2, 0, 0];
        let (_, labels) = read_pair(&pair(good.clone()), DEFAULT_MAX_VOXELS, Some(&map)).unwrap();
        assert_eq!(&labels.labels[..8], &[0, 1, 1, 2, 2, 2, 0, 0]);
        let err = read_pair(&pair(good), DEFAULT_MAX_VOXELS, Some(&map[..5]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.nii.gz") && err.contains("voxel 5 has class 5"),
            "{err}"
        );
    }

    /// DICOM series folders as scans, in both layouts, beside NIfTI ones: paired by folder name,
    /// read as series, their NIfTI label maps checked against the series' voxels.
    #[test]
    fn dicom_series_folders_pair_with_nifti_labels() {
        use crate::dicom_write::write_series;
        use crate::synthetic_volume::{heart3d, Heart3d};

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("labels")).unwrap();
        let (scan, labels) = heart3d(&Heart3d::new([4, 10, 12], 5));
        write_series(&root.join("images/case01"), &scan, "1.2.826.0.1.3680043.2.1125.1").unwrap();
        write_labels(&root.join("labels/case01.nii.gz"), &labels).unwrap();
        write_labels(&root.join("images/case02.nii.gz"), &labels).unwrap();
        write_labels(&root.join("labels/case02.nii.gz"), &labels).unwrap();
        let pairs = list_pairs(root).unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(pairs[0].image.is_dir() && pairs[0].id == "case01");
        let (image, read_labels) = read_pair(&pairs[0], DEFAULT_MAX_VOXELS, None).unwrap();
        assert_eq!(image.geometry.sides, [4, 10, 12]);
        assert_eq!(read_labels.labels, labels.labels);
        // A label map off the series' voxels is refused naming both.
        let mut moved = labels.clone();
        moved.geometry.affine[1][3] = 3.0;
        write_labels(&root.join("labels/case01.nii.gz"), &moved).unwrap();
        let err = read_pair(&pairs[0], DEFAULT_MAX_VOXELS, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("case01.nii.gz") && err.contains("images/case01") && err.contains("affines differ"),
            "{err}"
        );
        // A series without its label map is named.
        write_series(&root.join("images/case03"), &scan, "1.2.826.0.1.3680043.2.1125.3").unwrap();
        let err = list_pairs(root).unwrap_err().to_string();
        assert!(
            err.contains("images/case03") && err.contains("no label map"),
            "{err}"
        );

        // The flat layout: ID_image/ with ID_label.nii.gz; other folders are not scans.
        let flat = tempfile::tempdir().unwrap();
        write_series(
            &flat.path().join("ct_2000_image"),
            &scan,
            "1.2.826.0.1.3680043.2.1125.4",
        )
        .unwrap();
        write_labels(&flat.path().join("ct_2000_label.nii.gz"), &labels).unwrap();
        std::fs::create_dir(flat.path().join("notes")).unwrap();
        let pairs = list_pairs(flat.path()).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].id, "ct_2000");
        assert!(read_pair(&pairs[0], DEFAULT_MAX_VOXELS, None).is_ok());
        // A file that is not DICOM inside a series folder is named.
        std::fs::write(flat.path().join("ct_2000_image/README"), "not a slice").unwrap();
        let err = read_pair(&pairs[0], DEFAULT_MAX_VOXELS, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("README"), "{err}");
    }

    /// The real ACDC folder: 40 volumes of 20 patients, every pair agreeing, and a split by
    /// patient that never puts one frame of a patient on each side.
    #[test]
    fn acdc_pairs_agree_and_split_by_patient() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/acdc");
        if !root.exists() {
            eprintln!("skipped: {} is absent", root.display());
            return;
        }
        let pairs = list_pairs(&root).unwrap();
        assert_eq!(pairs.len(), 40);
        for p in pairs.iter().take(4) {
            let (image, labels) = read_pair(p, DEFAULT_MAX_VOXELS, None).unwrap();
            assert_eq!(image.geometry.sides, labels.geometry.sides, "{}", p.id);
            assert!(labels.labels.iter().all(|&c| c <= 3));
        }
        let (train, val) = split_by_patient(&pairs, 4, 0, FoldLayout::Blocks);
        assert_eq!((train.len(), val.len()), (32, 8));
        for v in &val {
            assert!(
                train.iter().all(|t| patient_of(&t.id) != patient_of(&v.id)),
                "{}",
                v.id
            );
        }
        // The next fold holds out the four patients before them: disjoint validation sets.
        let (train1, val1) = split_by_patient(&pairs, 4, 1, FoldLayout::Blocks);
        assert_eq!((train1.len(), val1.len()), (32, 8));
        let patients = |v: &[VolumePair]| {
            let mut p: Vec<String> = v.iter().map(|p| patient_of(&p.id).to_string()).collect();
            p.dedup();
            p
        };
        assert_eq!(
            patients(&val),
            ["patient064", "patient065", "patient066", "patient068"]
        );
        assert_eq!(
            patients(&val1),
            ["patient039", "patient045", "patient052", "patient059"]
        );
        assert!(val.iter().all(|v| train1.iter().any(|t| t.id == v.id)));
        // Interleaved folds take every fifth patient from the end: ACDC's ids run by diagnosis
        // (001-020 dilated, 021-040 hypertrophic, 041-060 infarction, 061-080 normal), so
        // every fold holds out a normal heart, and the dilated ones are spread over all five.
        let (_, first) = split_by_patient(&pairs, 4, 0, FoldLayout::Interleaved);
        assert_eq!(
            patients(&first),
            ["patient011", "patient028", "patient052", "patient068"]
        );
        for k in 0..5 {
            let (_, val) = split_by_patient(&pairs, 4, k, FoldLayout::Interleaved);
            let ids: Vec<u32> = patients(&val).iter().map(|p| p[7..].parse().unwrap()).collect();
            assert!(ids.iter().any(|&i| i <= 20), "fold {k}: {ids:?}");
            assert!(ids.iter().any(|&i| i > 60) || k == 4, "fold {k}: {ids:?}");
        }
    }

    /// Pairs of `n` patients with two frames each, named like ACDC's (no files behind them).
    fn named_pairs(n: usize) -> Vec<VolumePair> {
        (1..=n)
            .flat_map(|p| {
                (1..=2).map(move |f| {
                    let id = format!("patient{p:03}_frame{f:02}");
                    VolumePair {
                        image: PathBuf::from(format!("images/{id}.nii.gz")),
                        labels: PathBuf::from(format!("labels/{id}.nii.gz")),
                        id,
                    }
                })
            })
            .collect()
    }

    /// Both layouts deal 22 patients into 5 disjoint folds of 4 that hold out every frame of a
    /// patient together; blocks take neighbours, interleaved folds every fifth from the end;
    /// the 2 patients left over (22 = 5 x 4 + 2) are never held out, in either layout.
    #[test]
    fn both_fold_layouts_make_disjoint_folds_of_whole_patients() {
        let pairs = named_pairs(22);
        let number = |v: &[VolumePair]| -> Vec<usize> {
            let mut n: Vec<usize> = patients(v).iter().map(|p| p[7..].parse().unwrap()).collect();
            n.sort();
            n
        };
        assert_eq!(fold_count(22, 4), 5);
        for layout in [FoldLayout::Blocks, FoldLayout::Interleaved] {
            let mut seen = Vec::new();
            for k in 0..fold_count(22, 4) {
                let (train, val) = split_by_patient(&pairs, 4, k, layout);
                assert_eq!((train.len(), val.len()), (36, 8), "{layout:?} fold {k}");
                let held = number(&val);
                assert!(
                    number(&train).iter().all(|p| !held.contains(p)),
                    "{layout:?} fold {k}"
                );
                seen.extend(held);
            }
            seen.sort();
            assert_eq!(seen, (3..=22).collect::<Vec<_>>(), "{layout:?}");
        }
        let fold = |k, layout| number(&split_by_patient(&pairs, 4, k, layout).1);
        assert_eq!(fold(0, FoldLayout::Blocks), [19, 20, 21, 22]);
        assert_eq!(fold(1, FoldLayout::Blocks), [15, 16, 17, 18]);
        assert_eq!(fold(0, FoldLayout::Interleaved), [7, 12, 17, 22]);
        assert_eq!(fold(4, FoldLayout::Interleaved), [3, 8, 13, 18]);
    }
}
