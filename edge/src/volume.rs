//! NIfTI-1 volumes (`.nii`, `.nii.gz`) as the edge and the worker read them: scans as f32
//! voxels, label maps as class bytes, with the voxel spacing and the affine kept.
//!
//! The header is read and checked before anything is allocated for the voxels: a file that
//! announces more voxels than the caller's limit, a fourth dimension, a data type that is not
//! a plain number, or no NIfTI magic is refused with a typed error naming the file. A truncated
//! or corrupt gzip stream is an error too, never a volume with zeros at the end.
//!
//! What is tolerated and what is refused, as nibabel and ITK choose: the affine is the sform's
//! when the file marks one (sform_code > 0) and it can place voxels, else the qform's (the
//! quaternion, pixdim and qoffset) when marked and usable, else the pixdim diagonal when neither
//! is marked; a marked sform that cannot place voxels (all zeros, singular, not finite) with no
//! usable qform, a marked qform that cannot, or a pixdim that is not a positive number where
//! it is the geometry, is refused naming the field. Voxels must be finite numbers: a scan with
//! NaN or infinite voxels is refused with their count and the first one's position (the code
//! of such a scan collapses and the cloud would segment garbage).
//!
//! Voxels are in the file's own order, x fastest, then y, then z: `sides` is (z, y, x), the
//! (depth, height, width) order C and the codec use for volumes.

use std::path::{Path, PathBuf};

use nifti::{NiftiHeader, NiftiObject, NiftiType, ReaderOptions};

/// Voxels a volume may have unless the caller says otherwise: a 512 x 512 x 1024 CT.
pub const DEFAULT_MAX_VOXELS: usize = 512 * 512 * 1024;

/// The furthest the voxels may start in a file (the header, then extensions: 16 MiB of them).
const MAX_VOXEL_OFFSET: f32 = (352 + (16 << 20)) as f32;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: not a NIfTI-1 volume: {reason}")]
    NotNifti { path: PathBuf, reason: String },
    #[error("{path}: the file ends early or its compressed stream is damaged: {reason}")]
    Truncated { path: PathBuf, reason: String },
    #[error("{path}: dimensions {dims:?}: {reason}")]
    Dimensions {
        path: PathBuf,
        dims: Vec<u16>,
        reason: &'static str,
    },
    #[error("{path}: announces {voxels} voxels, above the limit of {max}")]
    TooLarge { path: PathBuf, voxels: u128, max: usize },
    #[error("{path}: data type {datatype} is not a plain integer or real type")]
    DataType { path: PathBuf, datatype: i16 },
    #[error("{path}: not a label map: voxel {index} is {value}, not a class index in 0..=255")]
    NotLabels { path: PathBuf, index: usize, value: f64 },
    #[error("{path}: {field} {found}: {reason}")]
    Geometry {
        path: PathBuf,
        field: &'static str,
        found: String,
        reason: String,
    },
    #[error("{path}: {0}", .problem)]
    NonFinite { path: PathBuf, problem: NonFinite },
}

/// Voxels that are not finite numbers: how many, and the first in (z, y, x) order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "{count} voxels are not finite numbers (NaN or infinite); the first is {value} at (z, y, x) = {first:?}"
)]
pub struct NonFinite {
    pub count: usize,
    pub first: [usize; 3],
    pub value: f32,
}

/// Every voxel must be a finite number: a scan is refused, never coded, with a NaN or an
/// infinity in it.
pub fn check_finite(voxels: &[f32], sides: [usize; 3]) -> Result<(), NonFinite> {
    let mut bad = voxels.iter().enumerate().filter(|(_, v)| !v.is_finite());
    let Some((i, &value)) = bad.next() else {
        return Ok(());
    };
    let (plane, row) = ((sides[1] * sides[2]).max(1), sides[2].max(1));
    Err(NonFinite {
        count: 1 + bad.count(),
        first: [i / plane, (i % plane) / row, i % row],
        value,
    })
}

/// A 3D volume's geometry: sides (z, y, x), voxel spacing (z, y, x) and the voxel-to-world
/// affine (rows of the sform, or the pixdim diagonal when the file has no sform).
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pub sides: [usize; 3],
    pub spacing: [f32; 3],
    pub affine: [[f32; 4]; 3],
}

impl Geometry {
    pub fn voxels(&self) -> usize {
        self.sides.iter().product()
    }

    /// The spacing a scan is resampled from: the affine's, not `spacing`, because the affine is
    /// what the cloud receives, and both ends must derive the same resampled grid to the bit
    /// (a DICOM series' spacing and its affine's columns can differ in the last bit).
    pub fn affine_spacing(&self) -> [f32; 3] {
        spacing_of(&self.affine)
    }
}

/// Voxel spacing (z, y, x) of an affine: the lengths of its columns (i = x, j = y, k = z).
pub fn spacing_of(affine: &[[f32; 4]; 3]) -> [f32; 3] {
    let column = |j: usize| (0..3).map(|i| (affine[i][j] as f64).powi(2)).sum::<f64>().sqrt() as f32;
    [column(2), column(1), column(0)]
}

/// A scan: f32 voxels with the file's scaling (scl_slope, scl_inter) applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub geometry: Geometry,
    pub voxels: Vec<f32>,
}

/// A label map: one class index per voxel.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelVolume {
    pub geometry: Geometry,
    pub labels: Vec<u8>,
}

/// A NIfTI file name (`.nii`, `.nii.gz`) rather than an image's.
pub fn is_nifti(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Reads a scan.
pub fn read_volume(path: &Path, max_voxels: usize) -> Result<Volume, VolumeError> {
    let raw = read_raw(path, max_voxels)?;
    let voxels: Vec<f32> = raw.values().map(|v| v as f32).collect();
    check_finite(&voxels, raw.geometry.sides).map_err(|problem| VolumeError::NonFinite {
        path: path.to_path_buf(),
        problem,
    })?;
    Ok(Volume {
        geometry: raw.geometry,
        voxels,
    })
}

/// Reads a label map: every voxel must be a whole number in 0..=255.
pub fn read_labels(path: &Path, max_voxels: usize) -> Result<LabelVolume, VolumeError> {
    let raw = read_raw(path, max_voxels)?;
    let mut labels = Vec::with_capacity(raw.geometry.voxels());
    for (index, value) in raw.values().enumerate() {
        if !(0.0..=255.0).contains(&value) || value.fract() != 0.0 {
            return Err(VolumeError::NotLabels {
                path: path.to_path_buf(),
                index,
                value,
            });
        }
        labels.push(value as u8);
    }
    Ok(LabelVolume {
        geometry: raw.geometry,
        labels,
    })
}

/// A volume's voxel bytes as stored, with what it takes to read them.
struct Raw {
    geometry: Geometry,
    datatype: NiftiType,
    width: usize,
    bytes: Vec<u8>,
    little: bool,
    slope: f64,
    inter: f64,
}

impl Raw {
    /// The voxels' values, scaled, in file order (every NIfTI number type fits an f64).
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.bytes[..self.geometry.voxels() * self.width]
            .chunks_exact(self.width)
            .map(|b| decode(self.datatype, b, self.little) * self.slope + self.inter)
    }
}

/// The geometry the header announces, checked against `max_voxels` before any voxel is read.
fn geometry(path: &Path, header: &NiftiHeader, max_voxels: usize) -> Result<Geometry, VolumeError> {
    let dims = header.dim.to_vec();
    let bad = |reason| VolumeError::Dimensions {
        path: path.to_path_buf(),
        dims: dims.clone(),
        reason,
    };
    let rank = header.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(bad("dim[0] (the rank) must be 1..7"));
    }
    let extents = &header.dim[1..=rank];
    if extents.contains(&0) {
        return Err(bad("a dimension is 0"));
    }
    // A 4D file with one time point is a volume; more is a series, not one scan.
    if extents.iter().skip(3).any(|&d| d > 1) {
        return Err(bad(
            "more than three dimensions (a time series): one 3D volume expected",
        ));
    }
    let side = |i: usize| extents.get(i).copied().unwrap_or(1) as usize;
    let voxels: u128 = extents.iter().map(|&d| d as u128).product();
    if voxels > max_voxels as u128 {
        return Err(VolumeError::TooLarge {
            path: path.to_path_buf(),
            voxels,
            max: max_voxels,
        });
    }
    let affine = affine_of(path, header)?;
    // pixdim's voxel sizes, or the affine's where pixdim has none.
    let from_affine = spacing_of(&affine);
    let spacing = |i: usize| {
        let s = header.pixdim[i + 1].abs();
        if s.is_finite() && s > 0.0 {
            s
        } else {
            from_affine[2 - i]
        }
    };
    Ok(Geometry {
        sides: [side(2), side(1), side(0)],
        spacing: [spacing(2), spacing(1), spacing(0)],
        affine,
    })
}

/// The voxel-to-world affine by the rules in the module's comment.
fn affine_of(path: &Path, header: &NiftiHeader) -> Result<[[f32; 4]; 3], VolumeError> {
    use orchestra_codec::affine::affine_problem;
    let refused = |field, found: String, reason: String| VolumeError::Geometry {
        path: path.to_path_buf(),
        field,
        found,
        reason,
    };
    let sform = [header.srow_x, header.srow_y, header.srow_z];
    let qform = qform_affine(header);
    let sform_problem = (header.sform_code > 0).then(|| affine_problem(&sform));
    let qform_problem = (header.qform_code > 0).then(|| affine_problem(&qform));
    match (sform_problem, qform_problem) {
        (Some(None), _) => Ok(sform),
        (_, Some(None)) => {
            if header.sform_code > 0 {
                tracing::warn!(path = %path.display(), "the sform cannot place voxels; using the qform, as nibabel and ITK do");
            }
            Ok(qform)
        }
        (Some(Some(p)), _) => Err(refused(
            "srow_x/y/z (the sform)",
            p.found,
            format!("{}, and there is no usable qform to fall back on", p.reason),
        )),
        (None, Some(Some(p))) => Err(refused(
            "quatern_b/c/d, pixdim and qoffset (the qform)",
            p.found,
            p.reason.to_string(),
        )),
        (None, None) => {
            let mut diagonal = [[0.0; 4]; 3];
            for (i, row) in diagonal.iter_mut().enumerate() {
                let s = header.pixdim[i + 1];
                if !(s.is_finite() && s.abs() as f64 >= orchestra_codec::affine::MIN_SPACING_MM) {
                    return Err(refused(
                        ["pixdim[1]", "pixdim[2]", "pixdim[3]"][i],
                        s.to_string(),
                        "a voxel size must be a non-zero number of mm (the file has neither sform nor qform)"
                            .into(),
                    ));
                }
                row[i] = s.abs();
            }
            Ok(diagonal)
        }
    }
}

/// The qform's affine (NIfTI-1: rotation from the quaternion (b, c, d), voxel sizes from
/// pixdim[1..=3], the third axis flipped when pixdim[0] (qfac) is negative, then the offset).
fn qform_affine(h: &NiftiHeader) -> [[f32; 4]; 3] {
    let r = orchestra_codec::affine::quaternion_rotation(
        h.quatern_b as f64,
        h.quatern_c as f64,
        h.quatern_d as f64,
    );
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let scale = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64 * qfac];
    let offset = [h.quatern_x, h.quatern_y, h.quatern_z];
    [0, 1, 2].map(|i| {
        [
            (r[i][0] * scale[0]) as f32,
            (r[i][1] * scale[1]) as f32,
            (r[i][2] * scale[2]) as f32,
            offset[i],
        ]
    })
}

fn io_error(path: &Path, e: std::io::Error) -> VolumeError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            VolumeError::Truncated {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        _ => VolumeError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

fn nifti_error(path: &Path, e: nifti::NiftiError) -> VolumeError {
    match e {
        nifti::NiftiError::Io(io) => io_error(path, io),
        e @ nifti::NiftiError::IncompatibleLength(..) => VolumeError::Truncated {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        other => VolumeError::NotNifti {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// The header checked, then the voxel bytes.
fn read_raw(path: &Path, max_voxels: usize) -> Result<Raw, VolumeError> {
    let header = NiftiHeader::from_file(path).map_err(|e| nifti_error(path, e))?;
    let geometry = geometry(path, &header, max_voxels)?;
    // The reader keeps whatever lies between the header and the voxels (extensions) in
    // memory: an offset far beyond any real extension is refused before it is read.
    let offset = header.vox_offset;
    if !(offset.is_finite() && (0.0..=MAX_VOXEL_OFFSET).contains(&offset)) {
        return Err(VolumeError::NotNifti {
            path: path.to_path_buf(),
            reason: format!("voxel offset {offset} is not in 0..={MAX_VOXEL_OFFSET}"),
        });
    }
    let refused = || VolumeError::DataType {
        path: path.to_path_buf(),
        datatype: header.datatype,
    };
    let datatype = header.data_type().map_err(|_| refused())?;
    let width = match datatype {
        NiftiType::Uint8 | NiftiType::Int8 => 1,
        NiftiType::Int16 | NiftiType::Uint16 => 2,
        NiftiType::Int32 | NiftiType::Uint32 | NiftiType::Float32 => 4,
        NiftiType::Int64 | NiftiType::Uint64 | NiftiType::Float64 => 8,
        _ => return Err(refused()),
    };
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| nifti_error(path, e))?;
    let bytes = object.into_volume().into_raw_data();
    let expected = geometry.voxels() * width;
    if bytes.len() < expected {
        return Err(VolumeError::Truncated {
            path: path.to_path_buf(),
            reason: format!("{} voxel bytes, the header announces {expected}", bytes.len()),
        });
    }
    let (slope, inter) = match (header.scl_slope as f64, header.scl_inter as f64) {
        (s, i) if s != 0.0 && s.is_finite() && i.is_finite() => (s, i),
        _ => (1.0, 0.0),
    };
    Ok(Raw {
        geometry,
        datatype,
        width,
        bytes,
        little: header.endianness == nifti::Endianness::Little,
        slope,
        inter,
    })
}

/// One voxel's value from its bytes.
fn decode(datatype: NiftiType, b: &[u8], little: bool) -> f64 {
    macro_rules! num {
        ($t:ty) => {{
            let bytes = b.try_into().expect("a voxel's width");
            (if little {
                <$t>::from_le_bytes(bytes)
            } else {
                <$t>::from_be_bytes(bytes)
            }) as f64
        }};
    }
    match datatype {
        NiftiType::Uint8 => b[0] as f64,
        NiftiType::Int8 => b[0] as i8 as f64,
        NiftiType::Int16 => num!(i16),
        NiftiType::Uint16 => num!(u16),
        NiftiType::Int32 => num!(i32),
        NiftiType::Uint32 => num!(u32),
        NiftiType::Float32 => num!(f32),
        NiftiType::Int64 => num!(i64),
        NiftiType::Uint64 => num!(u64),
        NiftiType::Float64 => num!(f64),
        _ => unreachable!("refused before reading"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A NIfTI-1 single file (little-endian): the 348-byte header, 4 bytes of no extension,
    /// then the voxel bytes.
    fn nifti_file(dims: &[u16], datatype: i16, bitpix: i16, slope: f32, voxels: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        h[0..4].copy_from_slice(&348i32.to_le_bytes());
        let mut dim = [1u16; 8];
        dim[0] = dims.len() as u16;
        dim[1..=dims.len()].copy_from_slice(dims);
        for (i, d) in dim.iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[70..72].copy_from_slice(&datatype.to_le_bytes());
        h[72..74].copy_from_slice(&bitpix.to_le_bytes());
        for (i, p) in [1.0f32, 0.8, 0.9, 2.5].iter().enumerate() {
            h[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_le_bytes());
        }
        h[108..112].copy_from_slice(&352f32.to_le_bytes());
        h[112..116].copy_from_slice(&slope.to_le_bytes());
        h[116..120].copy_from_slice(&1f32.to_le_bytes());
        h[344..348].copy_from_slice(b"n+1\0");
        h.extend_from_slice(voxels);
        h
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn volumes_round_trip_with_geometry_and_scaling() {
        let dir = tempfile::tempdir().unwrap();
        // x = 4, y = 3, z = 2: voxel (z, y, x) holds z * 100 + y * 10 + x, stored x fastest.
        let values: Vec<u8> = (0..2)
            .flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| (z * 100 + y * 10 + x) as u8)))
            .collect();
        let file = nifti_file(&[4, 3, 2], 2, 8, 2.0, &values);
        for (name, bytes) in [("a.nii", file.clone()), ("a.nii.gz", gz(&file))] {
            let v = read_volume(&write(dir.path(), name, &bytes), DEFAULT_MAX_VOXELS).unwrap();
            assert_eq!(v.geometry.sides, [2, 3, 4], "{name}");
            assert_eq!(v.geometry.spacing, [2.5, 0.9, 0.8], "{name}");
            // Scaled: 2 * stored + 1; voxel (1, 2, 3) is stored 123.
            assert_eq!(v.voxels[(3 + 2) * 4 + 3], 247.0, "{name}");
            assert_eq!(v.voxels.len(), 24);
        }
        let floats: Vec<u8> = [0.25f32, -1.5, 3.0, 7.75]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let v = read_volume(
            &write(dir.path(), "f.nii", &nifti_file(&[2, 2, 1], 16, 32, 0.0, &floats)),
            100,
        )
        .unwrap();
        assert_eq!(v.voxels, [0.25, -1.5, 3.0, 7.75], "slope 0 means unscaled");
    }

    #[test]
    fn labels_must_be_class_indices() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            dir.path(),
            "l.nii",
            &nifti_file(&[3, 1, 1], 2, 8, 0.0, &[0, 3, 7]),
        );
        assert_eq!(read_labels(&ok, 10).unwrap().labels, [0, 3, 7]);
        for (name, values) in [
            ("half", [0.0f32, 1.5]),
            ("big", [2.0f32, 300.0]),
            ("neg", [-1.0f32, 0.0]),
        ] {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = write(
                dir.path(),
                &format!("{name}.nii"),
                &nifti_file(&[2, 1, 1], 16, 32, 0.0, &bytes),
            );
            let err = read_labels(&path, 10).unwrap_err();
            assert!(matches!(err, VolumeError::NotLabels { .. }), "{name}: {err}");
            assert!(err.to_string().contains(&format!("{name}.nii")), "{err}");
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = nifti_file(&[8, 8, 8], 2, 8, 0.0, &[7; 512]);
        // Voxels announced 3 GB into a 864-byte file: extensions the reader would hold.
        let mut far_offset = file.clone();
        far_offset[108..112].copy_from_slice(&3e9f32.to_le_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            // 30000^3 voxels announced by a 352-byte file: refused before any allocation.
            (
                "huge.nii",
                nifti_file(&[30000, 30000, 30000], 2, 8, 0.0, &[]),
                "TooLarge",
            ),
            (
                "series.nii",
                nifti_file(&[4, 4, 4, 3], 2, 8, 0.0, &[0; 192]),
                "Dimensions",
            ),
            ("zero.nii", nifti_file(&[4, 0, 4], 2, 8, 0.0, &[]), "Dimensions"),
            (
                "complex.nii",
                nifti_file(&[2, 2, 2], 32, 64, 0.0, &[0; 64]),
                "DataType",
            ),
            ("short.nii", file[..600].to_vec(), "Truncated"),
            (
                "cut.nii.gz",
                gz(&file)[..gz(&file).len() / 2].to_vec(),
                "Truncated",
            ),
            (
                "image.nii",
                b"\x89PNG\r\n\x1a\n this is not a volume at all, only some bytes".repeat(10),
                "NotNifti",
            ),
            ("offset.nii", far_offset, "NotNifti"),
        ];
        for (name, bytes, kind) in cases {
            let path = write(dir.path(), name, &bytes);
            let err = read_volume(&path, 1 << 20).unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{name}: {err:?}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err = read_volume(&dir.path().join("absent.nii.gz"), 10).unwrap_err();
        assert!(matches!(err, VolumeError::Io { .. }), "{err:?}");
    }

    /// Damaged headers (random bytes of the first 352 replaced) give a volume or a typed error,
    /// never a panic, and never more voxels than the limit.
    #[test]
    fn damaged_headers_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u8> = (0..512).map(|i| i as u8).collect();
        let file = nifti_file(&[8, 8, 8], 2, 8, 0.0, &values);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let path = dir.path().join("damaged.nii");
        let (mut read, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut bytes = file.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 352) as usize;
                bytes[at] = next() as u8;
            }
            std::fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(|| read_volume(&path, 4096));
            match outcome.unwrap_or_else(|_| panic!("panicked on header {:?}", &bytes[..352])) {
                Ok(v) => {
                    // Whatever is accepted is a volume the cloud can place and code: a damaged
                    // header that yields impossible geometry or non-finite voxels is a failure.
                    assert!(v.voxels.len() <= 4096);
                    let g = &v.geometry;
                    assert_eq!(
                        orchestra_codec::affine::affine_problem(&g.affine),
                        None,
                        "accepted an impossible affine {:?} from header {:?}",
                        g.affine,
                        &bytes[..352]
                    );
                    assert!(g.spacing.iter().all(|s| s.is_finite() && *s > 0.0), "{g:?}");
                    assert!(
                        v.voxels.iter().all(|x| x.is_finite()),
                        "non-finite voxels accepted"
                    );
                    read += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
    }

    /// Sets a little-endian f32 at `at` and i16 codes in a header made by `nifti_file`.
    fn put_f32(h: &mut [u8], at: usize, values: &[f32]) {
        for (i, v) in values.iter().enumerate() {
            h[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    const QFORM_CODE: usize = 252;
    const SFORM_CODE: usize = 254;
    const QUATERN_B: usize = 256;
    const SROW_X: usize = 280;

    #[test]
    fn non_finite_voxels_are_counted_and_located() {
        let dir = tempfile::tempdir().unwrap();
        // x = 3, y = 2, z = 2; voxel (z, y, x) = (1, 0, 2) is the first NaN, then an infinity.
        let mut values = [1.0f32; 12];
        values[6 + 2] = f32::NAN;
        values[11] = f32::NEG_INFINITY;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = write(
            dir.path(),
            "nan.nii",
            &nifti_file(&[3, 2, 2], 16, 32, 0.0, &bytes),
        );
        match read_volume(&path, 100).unwrap_err() {
            VolumeError::NonFinite { path: p, problem } => {
                assert_eq!(p, path);
                assert_eq!((problem.count, problem.first), (2, [1, 0, 2]));
                assert!(problem.value.is_nan());
            }
            other => panic!("{other}"),
        }
        // A scale that overflows f32 makes infinities of finite stored numbers.
        let mut h = nifti_file(&[2, 1, 1], 16, 32, 3e38, &[0, 0, 0, 0, 0, 0, 0, 64]);
        put_f32(&mut h, 116, &[0.0]);
        let path = write(dir.path(), "overflow.nii", &h);
        let e = read_volume(&path, 100).unwrap_err().to_string();
        assert!(
            e.contains("overflow.nii: 1 voxels are not finite") && e.contains("(z, y, x) = [0, 0, 1]"),
            "{e}"
        );
    }

    #[test]
    fn the_sform_then_the_qform_then_pixdim_decide_the_affine() {
        let dir = tempfile::tempdir().unwrap();
        let base = nifti_file(&[2, 2, 2], 2, 8, 0.0, &[0; 8]);
        let read = |name: &str, h: &[u8]| read_volume(&write(dir.path(), name, h), 100);
        // Neither marked: the pixdim diagonal.
        assert_eq!(
            read("plain.nii", &base).unwrap().geometry.affine,
            [[0.8, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0]]
        );
        // A marked sform of zeros (a converter that wrote none) and no qform: refused.
        let mut zeros = base.clone();
        zeros[SFORM_CODE..SFORM_CODE + 2].copy_from_slice(&1i16.to_le_bytes());
        let e = read("zeros.nii", &zeros).unwrap_err().to_string();
        assert!(
            e.contains("zeros.nii: srow_x/y/z (the sform)") && e.contains("no usable qform"),
            "{e}"
        );
        // The same with a qform: 180 degrees about z (b = c = 0, d = 1), offsets; the qform is used.
        let mut with_q = zeros.clone();
        with_q[QFORM_CODE..QFORM_CODE + 2].copy_from_slice(&1i16.to_le_bytes());
        put_f32(&mut with_q, QUATERN_B, &[0.0, 0.0, 1.0, 10.0, 20.0, 30.0]);
        assert_eq!(
            read("qform.nii", &with_q).unwrap().geometry.affine,
            [
                [-0.8, 0.0, 0.0, 10.0],
                [0.0, -0.9, 0.0, 20.0],
                [0.0, 0.0, 2.5, 30.0]
            ]
        );
        // qfac (pixdim[0]) = -1 flips the third axis.
        let mut flipped = with_q.clone();
        put_f32(&mut flipped, 76, &[-1.0]);
        assert_eq!(read("qfac.nii", &flipped).unwrap().geometry.affine[2][2], -2.5);
        // A usable sform wins over the qform.
        let mut with_s = with_q.clone();
        put_f32(
            &mut with_s,
            SROW_X,
            &[1.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 2.0, 0.0, 0.0, 3.0, 3.0],
        );
        let g = read("sform.nii", &with_s).unwrap().geometry;
        assert_eq!(
            g.affine,
            [[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 3.0, 3.0]]
        );
        // Neither marked and a zero voxel size: refused naming pixdim.
        let mut flat = base.clone();
        put_f32(&mut flat, 84, &[0.0]);
        let e = read("flat.nii", &flat).unwrap_err().to_string();
        assert!(e.contains("flat.nii: pixdim[2] 0"), "{e}");
    }

    /// The real volumes of ../shared/data when it is there.
    #[test]
    fn acdc_and_mmwhs_volumes_read_with_their_labels() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        let acdc = data.join("acdc");
        if !acdc.exists() {
            eprintln!("skipped: {} is absent", acdc.display());
            return;
        }
        for case in ["patient001_frame01", "patient068_frame02"] {
            let image = read_volume(&acdc.join(format!("images/{case}.nii.gz")), DEFAULT_MAX_VOXELS).unwrap();
            let labels =
                read_labels(&acdc.join(format!("labels/{case}.nii.gz")), DEFAULT_MAX_VOXELS).unwrap();
            assert_eq!(image.geometry.sides, labels.geometry.sides, "{case}");
            let [d, h, w] = image.geometry.sides;
            assert!(
                (6..=17).contains(&d) && (154..=288).contains(&h) && (154..=288).contains(&w),
                "{case}: {:?}",
                image.geometry.sides
            );
            assert!(
                image.voxels.iter().all(|v| (0.0..=1.0).contains(v)),
                "{case}: intensities in [0, 1]"
            );
            assert!(labels.labels.iter().all(|&l| l <= 3), "{case}: classes 0-3");
            assert!(
                (1..=3).all(|c| labels.labels.contains(&c)),
                "{case}: RV, myocardium and LV present"
            );
        }
        let ct = data.join("mmwhs_ct");
        let image = read_volume(&ct.join("ct_train_1010_image.nii.gz"), DEFAULT_MAX_VOXELS).unwrap();
        assert_eq!(image.geometry.sides, [274, 512, 512]);
        let labels = read_labels(&ct.join("ct_train_1010_label.nii.gz"), DEFAULT_MAX_VOXELS).unwrap();
        assert!(labels.labels.iter().all(|&l| l <= 7) && (1..=7).all(|c| labels.labels.contains(&c)));
        let window =
            crate::intensity::foreground_window(&[(&image.voxels, &labels.labels)], 0.5, 99.5).unwrap();
        let crate::intensity::Intensity::Ct { low, high } = window else {
            unreachable!("a CT window")
        };
        assert!(0.0 <= low && low < high && high <= 255.0, "{low} {high}");
        let err = read_volume(&ct.join("ct_train_1010_image.nii.gz"), 1_000_000).unwrap_err();
        assert!(
            matches!(
                err,
                VolumeError::TooLarge {
                    voxels: 71_827_456,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
