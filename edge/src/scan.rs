//! A scan as the edge finds it on disk: a NIfTI file (`.nii`, `.nii.gz`) or a folder holding one
//! DICOM series.

use std::path::Path;

use crate::dicom_series::{read_series, DicomError};
use crate::volume::{is_nifti, read_volume, Volume, VolumeError};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Nifti(#[from] VolumeError),
    #[error(transparent)]
    Dicom(#[from] DicomError),
}

/// Whether `path` names a scan (a NIfTI file or a folder) rather than an image.
pub fn is_scan(path: &Path) -> bool {
    is_nifti(path) || path.is_dir()
}

/// Reads a NIfTI file, or the DICOM series in a folder.
pub fn read_scan(path: &Path, max_voxels: usize) -> Result<Volume, ScanError> {
    Ok(if path.is_dir() {
        read_series(path, max_voxels)?
    } else {
        read_volume(path, max_voxels)?
    })
}
