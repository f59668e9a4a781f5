//! Dataset errors: each names the file (or URI parameter) that is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset URI {uri:?}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("dataset folder {0}: no such folder")]
    MissingFolder(PathBuf),
    #[error("dataset folder {0}: no images found")]
    Empty(PathBuf),
    #[error("image {image}: its mask {mask} is missing")]
    MissingMask { image: PathBuf, mask: PathBuf },
    #[error("{path}: cannot read image: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{mask}: mask is {mask_w}x{mask_h} but its image {image} is {image_w}x{image_h}")]
    SizeMismatch {
        image: PathBuf,
        mask: PathBuf,
        image_w: u32,
        image_h: u32,
        mask_w: u32,
        mask_h: u32,
    },
    #[error("{mask}: value {value} at pixel ({x}, {y}) is not a valid label ({expected})")]
    BadLabel {
        mask: PathBuf,
        value: u8,
        x: u32,
        y: u32,
        expected: String,
    },
    #[error("{path}: image has {found} channels but the dataset's first image has {expected}")]
    ChannelMismatch {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("dataset {uri:?}: {reason}")]
    Split { uri: String, reason: String },
    #[error("dataset {uri:?}: {reason}")]
    Remote { uri: String, reason: String },
}
