//! Volume datasets for 3D trials: seeded synthetic hearts (`synthetic://heart3d?n=12&sides=16x64x64`)
//! and folders of NIfTI scans with their label maps (`file:///data/acdc?val=4`, the same folders in
//! object storage), loaded and checked up front like the image datasets.
//!
//! Each scan is normalised per modality (`intensity=mr`, the default: z-scored per volume;
//! `intensity=ct`: clipped to the 0.5-99.5 percentiles of the training foreground, then scaled;
//! `intensity=none`), optionally reduced by whole factors (`downsample=1x2x2`: block means for
//! scans, the block's centre voxel for labels) or resampled to a voxel spacing in mm
//! (`spacing=10x3x3`, z x y x x, as nnU-Net does: scans from different scanners then show a
//! structure at one size in voxels; see `orchestra_edge::resample`), and relabelled (`labelMap=0,1,1,2`: dataset class
//! c becomes the c-th entry). The validation split holds out whole patients (`val` counts
//! patients: ACDC's two frames of one patient are never split; `fold=k` holds out the k-th block of
//! `val` patients counting from the end, for disjoint validation sets, or with `folds=interleaved`
//! every n-th patient from the k-th, n the number of folds, so that folds mix datasets numbered by
//! group, as ACDC is by diagnosis). Validation volumes keep their
//! labels at the source resolution, so that Dice is scored on the scan as it was acquired.

use std::path::{Path, PathBuf};

use orchestra_edge::intensity::{foreground_window, Intensity};
pub use orchestra_edge::preparation::{
    block_centre, block_mean, expand_labels, reduced_sides, Normalisation, VolumePreprocessing,
    TARGET_SPACING_MM,
};
use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
use orchestra_edge::volume::{LabelVolume, Volume, DEFAULT_MAX_VOXELS};
use orchestra_edge::volume_dataset::{
    fold_count, list_pairs, read_pair, split_by_patient, FoldLayout, VolumePair,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::error::DataError;
use super::patches::ForegroundLocations;
use super::uri::Query;

/// Bits per voxel of a scan as the scanner stores it (DICOM MR and CT: 12-16 bits in 16-bit
/// words), the uncompressed rate a volume's bpp is compared with.
pub const SOURCE_BITS_PER_VOXEL: f64 = 16.0;

/// One scan and its labels at training resolution.
#[derive(Clone, Debug)]
pub struct VolumeSample {
    pub id: String,
    /// Sides (z, y, x) after downsampling.
    pub sides: [usize; 3],
    /// Normalised intensities, z-major.
    pub voxels: Vec<f32>,
    pub labels: Vec<u8>,
    /// Where the labelled voxels are, for foreground-centred patches.
    pub foreground: ForegroundLocations,
    /// The labels at the source resolution (sides, labels) when downsampled.
    pub source_labels: Option<([usize; 3], Vec<u8>)>,
}

impl VolumeSample {
    /// The labels and sides Dice is scored against: the source's.
    pub fn truth(&self) -> ([usize; 3], &[u8]) {
        match &self.source_labels {
            Some((sides, labels)) => (*sides, labels),
            None => (self.sides, &self.labels),
        }
    }

    /// Voxels of the scan as acquired, the denominator of a volume's bpp.
    pub fn source_voxels(&self) -> usize {
        self.truth().0.iter().product()
    }
}

/// A loaded, checked volume dataset.
#[derive(Clone, Debug)]
pub struct VolumeSet {
    pub name: String,
    /// Classes including background.
    pub classes: usize,
    /// How every scan was prepared (its `factor`: the whole factors the scans were reduced by).
    pub preprocessing: VolumePreprocessing,
    pub train: Vec<VolumeSample>,
    pub val: Vec<VolumeSample>,
}

/// What a volume URI asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeUri {
    Synthetic {
        n: usize,
        sides: [usize; 3],
        seed: u64,
        val: usize,
    },
    Folder {
        /// A local folder, or a store URI (`s3://bucket/prefix`) mirrored first.
        location: String,
        /// Validation patients.
        val: Option<usize>,
        /// Which fold of `val` patients is held out (0: the last ones), and how patients are
        /// dealt into folds (`folds=blocks`, the default, or `folds=interleaved`).
        fold: usize,
        layout: FoldLayout,
        classes: Option<usize>,
        limit: Option<usize>,
        factor: [usize; 3],
        /// Target voxel spacing (z, y, x, mm); exclusive with `factor`.
        spacing: Option<[f32; 3]>,
        intensity: IntensityChoice,
        label_map: Option<Vec<u8>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntensityChoice {
    Mr,
    Ct,
    None,
}

/// `16x64x64` as (z, y, x).
fn three(text: &str) -> Option<[usize; 3]> {
    let v: Vec<usize> = text.split('x').map(|s| s.parse().ok()).collect::<Option<_>>()?;
    <[usize; 3]>::try_from(v).ok()
}

impl VolumeUri {
    pub fn parse(uri: &str) -> Result<VolumeUri, DataError> {
        let mut q = Query::parse(uri)?;
        let parsed = match q.scheme.as_str() {
            "synthetic" => VolumeUri::synthetic(&mut q)?,
            "file" | "s3" | "gs" | "az" => VolumeUri::folder(&mut q)?,
            other => {
                return Err(q.bad(format!(
                    "unsupported scheme {other:?} for volumes: expected synthetic://heart3d, file://, s3://, gs:// or az://"
                )))
            }
        };
        q.finish()?;
        Ok(parsed)
    }

    /// `synthetic://heart3d?n=&seed=&val=&sides=`.
    fn synthetic(q: &mut Query) -> Result<VolumeUri, DataError> {
        if q.body != "heart3d" {
            return Err(q.bad(format!(
                "unknown synthetic volume dataset {:?}: expected heart3d",
                q.body
            )));
        }
        let n = q.number("n")?.unwrap_or(12) as usize;
        let seed = q.number("seed")?.unwrap_or(7);
        let val = q.number("val")?.unwrap_or((n / 6).max(1) as u64) as usize;
        let sides = sides_of(q, "sides", [16, 64, 64], 8)?;
        if !(2..=4096).contains(&n) || val == 0 || val >= n {
            return Err(q.bad(format!(
                "n={n} and val={val}: need 2..=4096 volumes and 1..n validation ones"
            )));
        }
        Ok(VolumeUri::Synthetic { n, sides, seed, val })
    }

    /// A folder of volumes (`file://`, `s3://`, `gs://`, `az://`) and how to prepare them.
    fn folder(q: &mut Query) -> Result<VolumeUri, DataError> {
        if q.scheme == "file" && !q.body.starts_with('/') {
            return Err(q.bad("file URIs need an absolute path: file:///data/...".into()));
        }
        let val = q.number("val")?.map(|v| v as usize);
        let fold = q.number("fold")?.unwrap_or(0) as usize;
        let layout = match q.text("folds").as_deref() {
            None | Some("blocks") => FoldLayout::Blocks,
            Some("interleaved") => FoldLayout::Interleaved,
            Some(other) => return Err(q.bad(format!("folds={other:?}: expected blocks or interleaved"))),
        };
        let classes = q.number("classes")?.map(|v| v as usize);
        let limit = q.number("limit")?.map(|v| v as usize);
        let factor = sides_of(q, "downsample", [1, 1, 1], 1)?;
        if factor.iter().any(|&f| f > 8) {
            return Err(q.bad(format!("downsample={factor:?}: factors must be 1..=8")));
        }
        let spacing = match q.text("spacing") {
            None => None,
            Some(t) => {
                let (lo, hi) = TARGET_SPACING_MM;
                let v: Option<Vec<f32>> = t.split('x').map(|s| s.parse().ok()).collect();
                match v.and_then(|v| <[f32; 3]>::try_from(v).ok()) {
                    Some(s) if s.iter().all(|v| (lo..=hi).contains(v)) => Some(s),
                    _ => {
                        return Err(q.bad(format!(
                            "spacing={t:?} must be three voxel spacings in mm like 10x1.5x1.5 (z x y x x), each in {lo}..={hi}"
                        )))
                    }
                }
            }
        };
        if spacing.is_some() && factor != [1, 1, 1] {
            return Err(q.bad(
                "downsample and spacing both given: reduce by whole factors or resample to a spacing, not both".into(),
            ));
        }
        let intensity = match q.text("intensity").as_deref() {
            None | Some("mr") => IntensityChoice::Mr,
            Some("ct") => IntensityChoice::Ct,
            Some("none") => IntensityChoice::None,
            Some(other) => return Err(q.bad(format!("intensity={other:?}: expected mr, ct or none"))),
        };
        let label_map = match q.text("labelMap") {
            None => None,
            Some(t) => Some(
                t.split(',')
                    .map(|c| c.parse::<u8>().ok())
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| {
                        q.bad(format!(
                            "labelMap={t:?} must be class numbers 0-255 separated by commas"
                        ))
                    })?,
            ),
        };
        if classes.is_some_and(|c| !(2..=256).contains(&c)) {
            return Err(q.bad("classes must be in 2..=256 (background included)".into()));
        }
        let location = if q.scheme == "file" {
            q.body.clone()
        } else {
            format!("{}://{}", q.scheme, q.body.trim_end_matches('/'))
        };
        Ok(VolumeUri::Folder {
            location,
            val,
            fold,
            layout,
            classes,
            limit,
            factor,
            spacing,
            intensity,
            label_map,
        })
    }
}

/// Query parameter `name`: three sides like 16x64x64, each in `min..=1024`.
fn sides_of(q: &mut Query, name: &str, default: [usize; 3], min: usize) -> Result<[usize; 3], DataError> {
    match q.text(name) {
        None => Ok(default),
        Some(t) => match three(&t) {
            Some(s) if s.iter().all(|&v| (min..=1024).contains(&v)) => Ok(s),
            _ => Err(q.bad(format!(
                "{name}={t:?} must be three sides like 16x64x64, each in {min}..=1024"
            ))),
        },
    }
}

impl VolumeSet {
    pub fn open(uri: &str) -> Result<VolumeSet, DataError> {
        match VolumeUri::parse(uri)? {
            VolumeUri::Synthetic { n, sides, seed, val } => {
                let preprocessing = VolumePreprocessing {
                    intensity: Normalisation::Mr,
                    factor: [1, 1, 1],
                    spacing: None,
                };
                let mut all: Vec<VolumeSample> = (0..n as u64)
                    .map(|i| {
                        let (scan, labels) = heart3d(&Heart3d::new(sides, seed.wrapping_add(i)));
                        sample(
                            format!("heart{i:04}"),
                            sides,
                            scan.geometry.affine_spacing(),
                            scan.voxels,
                            labels.labels,
                            &preprocessing,
                            false,
                        )
                    })
                    .collect();
                let val_samples = all.split_off(n - val);
                Ok(VolumeSet {
                    name: uri.to_string(),
                    classes: 3,
                    preprocessing,
                    train: all,
                    val: val_samples,
                })
            }
            VolumeUri::Folder {
                location,
                val,
                fold,
                layout,
                classes,
                limit,
                factor,
                spacing,
                intensity,
                label_map,
            } => {
                let root = if location.contains("://") {
                    super::remote::mirror(&location, uri)?
                } else {
                    PathBuf::from(&location)
                };
                load_folder(
                    &root,
                    uri,
                    (val, fold, layout),
                    classes,
                    limit,
                    (factor, spacing),
                    intensity,
                    label_map.as_deref(),
                )
            }
        }
    }
}

/// Reads, checks, normalises and splits a folder of volumes.
#[allow(clippy::too_many_arguments)]
fn load_folder(
    root: &Path,
    uri: &str,
    (val, fold, layout): (Option<usize>, usize, FoldLayout),
    classes: Option<usize>,
    limit: Option<usize>,
    (factor, spacing): ([usize; 3], Option<[f32; 3]>),
    intensity: IntensityChoice,
    label_map: Option<&[u8]>,
) -> Result<VolumeSet, DataError> {
    let volume_error = |e: orchestra_edge::volume_dataset::VolumeDatasetError| DataError::Split {
        uri: orchestra_api::redact(uri),
        reason: e.to_string(),
    };
    if !root.is_dir() {
        return Err(DataError::MissingFolder(root.to_path_buf()));
    }
    let mut pairs = list_pairs(root).map_err(volume_error)?;
    if let Some(limit) = limit {
        pairs.truncate(limit);
    }
    if pairs.is_empty() {
        return Err(DataError::Empty(root.to_path_buf()));
    }
    let (train_pairs, val_pairs) = split_folder(&pairs, uri, val, (fold, layout))?;
    let read = |p: &VolumePair| read_pair(p, DEFAULT_MAX_VOXELS, label_map).map_err(volume_error);
    let mut train_raw = Vec::with_capacity(train_pairs.len());
    for p in &train_pairs {
        train_raw.push((p.id.clone(), read(p)?));
    }
    let mut val_raw = Vec::with_capacity(val_pairs.len());
    for p in &val_pairs {
        val_raw.push((p.id.clone(), read(p)?));
    }
    let classes = class_count(&train_raw, &val_raw, classes).map_err(|reason| DataError::Split {
        uri: orchestra_api::redact(uri),
        reason,
    })?;
    let intensity = normalisation(intensity, &train_raw).map_err(|reason| DataError::Split {
        uri: orchestra_api::redact(uri),
        reason,
    })?;
    let preprocessing = VolumePreprocessing {
        intensity,
        factor,
        spacing,
    };
    let finish = |raw: Vec<(String, (Volume, LabelVolume))>, keep_source: bool| {
        raw.into_iter()
            .map(|(id, (scan, labels))| {
                sample(
                    id,
                    scan.geometry.sides,
                    scan.geometry.affine_spacing(),
                    scan.voxels,
                    labels.labels,
                    &preprocessing,
                    keep_source,
                )
            })
            .collect::<Vec<_>>()
    };
    let (train, val) = (finish(train_raw, false), finish(val_raw, true));
    Ok(VolumeSet {
        name: uri.to_string(),
        classes,
        preprocessing,
        train,
        val,
    })
}

/// Splits a folder's pairs by patient: `val` patients (a fifth by default) in fold `fold`,
/// dealt by `layout` counting from the end, are held out; a split that leaves nobody to train
/// on, or a fold past the last, is an error naming the numbers.
fn split_folder(
    pairs: &[VolumePair],
    uri: &str,
    val: Option<usize>,
    (fold, layout): (usize, FoldLayout),
) -> Result<(Vec<VolumePair>, Vec<VolumePair>), DataError> {
    let patients = orchestra_edge::volume_dataset::patients(pairs).len();
    let val_patients = val.unwrap_or((patients / 5).max(1));
    if val_patients == 0 || val_patients >= patients {
        return Err(DataError::Split {
            uri: orchestra_api::redact(uri),
            reason: format!("val={val_patients} patients leaves none to train on out of {patients}"),
        });
    }
    let folds = fold_count(patients, val_patients);
    if fold >= folds {
        return Err(DataError::Split {
            uri: orchestra_api::redact(uri),
            reason: format!(
                "fold={fold}: {patients} patients make {folds} folds of val={val_patients} (fold 0 to {})",
                folds - 1
            ),
        });
    }
    Ok(split_by_patient(pairs, val_patients, fold, layout))
}

type RawVolumes = [(String, (Volume, LabelVolume))];

/// The class count: the one stated, which must cover the highest class in any label map, or
/// that class plus one (at least two, background included).
fn class_count(train: &RawVolumes, val: &RawVolumes, stated: Option<usize>) -> Result<usize, String> {
    let highest = train
        .iter()
        .chain(val)
        .map(|(id, (_, l))| (id, l.labels.iter().copied().max().unwrap_or(0)))
        .max_by_key(|(_, m)| *m)
        .map(|(id, m)| (id.clone(), m))
        .unwrap_or_default();
    let classes = stated.unwrap_or(highest.1 as usize + 1).max(2);
    if highest.1 as usize >= classes {
        return Err(format!(
            "volume {} has class {} but classes={classes}",
            highest.0, highest.1
        ));
    }
    Ok(classes)
}

/// The intensity normalisation asked for; CT's window from the training volumes' foreground
/// (0.5 to 99.5 percentiles).
fn normalisation(choice: IntensityChoice, train: &RawVolumes) -> Result<Normalisation, String> {
    Ok(match choice {
        IntensityChoice::Mr => Normalisation::Mr,
        IntensityChoice::None => Normalisation::None,
        IntensityChoice::Ct => {
            let views: Vec<(&[f32], &[u8])> = train
                .iter()
                .map(|(_, (v, l))| (v.voxels.as_slice(), l.labels.as_slice()))
                .collect();
            match foreground_window(&views, 0.5, 99.5) {
                Ok(Intensity::Ct { low, high }) => Normalisation::Ct { low, high },
                Ok(Intensity::Mr) => Normalisation::Mr,
                Err(e) => return Err(format!("CT window from the training volumes: {e}")),
            }
        }
    })
}

/// A sample at training resolution from a scan and its labels at the source resolution.
fn sample(
    id: String,
    sides: [usize; 3],
    spacing: [f32; 3],
    voxels: Vec<f32>,
    labels: Vec<u8>,
    preprocessing: &VolumePreprocessing,
    keep_source: bool,
) -> VolumeSample {
    let (small_sides, small_voxels) = preprocessing.prepare(voxels, sides, spacing);
    let (small_labels, source_labels) = if small_sides == sides {
        (labels, None)
    } else {
        let small = preprocessing.prepare_labels(&labels, sides, spacing).1;
        (small, keep_source.then_some((sides, labels)))
    };
    // Seeded by the id so that a volume's patch centres do not depend on load order.
    let seed = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    let foreground =
        ForegroundLocations::new(small_sides, &small_labels, &mut ChaCha8Rng::seed_from_u64(seed));
    VolumeSample {
        id,
        sides: small_sides,
        voxels: small_voxels,
        labels: small_labels,
        foreground,
        source_labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_volume_uris_and_names_what_is_wrong() {
        assert_eq!(
            VolumeUri::parse("synthetic://heart3d?n=6&sides=16x32x48&val=2").unwrap(),
            VolumeUri::Synthetic {
                n: 6,
                sides: [16, 32, 48],
                seed: 7,
                val: 2
            }
        );
        match VolumeUri::parse("file:///data/acdc?val=4&downsample=1x2x2&labelMap=0,1,1,2").unwrap() {
            VolumeUri::Folder {
                location,
                val,
                fold,
                factor,
                label_map,
                intensity,
                ..
            } => {
                assert_eq!(location, "/data/acdc");
                assert_eq!(
                    (val, factor, intensity),
                    (Some(4), [1, 2, 2], IntensityChoice::Mr)
                );
                assert_eq!(label_map, Some(vec![0, 1, 1, 2]));
                assert_eq!(fold, 0);
            }
            other => panic!("{other:?}"),
        }
        match VolumeUri::parse("file:///data/acdc?val=4&fold=2").unwrap() {
            VolumeUri::Folder {
                val, fold, layout, ..
            } => assert_eq!((val, fold, layout), (Some(4), 2, FoldLayout::Blocks)),
            other => panic!("{other:?}"),
        }
        match VolumeUri::parse("file:///data/acdc?val=4&fold=3&folds=interleaved").unwrap() {
            VolumeUri::Folder { fold, layout, .. } => {
                assert_eq!((fold, layout), (3, FoldLayout::Interleaved))
            }
            other => panic!("{other:?}"),
        }
        match VolumeUri::parse("file:///data/acdc?spacing=10x1.5x1.25").unwrap() {
            VolumeUri::Folder { factor, spacing, .. } => {
                assert_eq!((factor, spacing), ([1, 1, 1], Some([10.0, 1.5, 1.25])))
            }
            other => panic!("{other:?}"),
        }
        for (uri, needle) in [
            ("synthetic://lesion", "expected heart3d"),
            ("synthetic://heart3d?sides=16x64", "three sides"),
            ("synthetic://heart3d?n=4&val=4", "validation"),
            ("file:///d?downsample=1x9x2", "factors must be 1..=8"),
            ("file:///d?intensity=pet", "expected mr, ct or none"),
            (
                "file:///d?folds=random",
                "folds=\"random\": expected blocks or interleaved",
            ),
            ("file:///d?labelMap=0,x", "labelMap"),
            ("file:///d?slices=3", "unknown parameter \"slices\""),
            ("file:///d?spacing=10x1.5", "three voxel spacings"),
            ("file:///d?spacing=10x0x1", "three voxel spacings"),
            ("file:///d?spacing=10000x1x1", "each in 0.05..=50"),
            ("file:///d?spacing=10x2x2&downsample=1x2x2", "not both"),
        ] {
            let e = VolumeUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
        }
    }
}
