//! Datasets: addressed by URI, loaded and checked up front, split deterministically, and served
//! as augmented tensor batches whose order depends only on (seed, step).

mod batches;
mod error;
mod folder;
pub mod patches;
pub mod remote;
pub mod synthetic;
mod uri;
pub mod volumes;

pub use batches::{augment, batch, epoch_permutation, BatchSampler};
pub use error::DataError;
pub use folder::Layout;
pub use synthetic::SyntheticKind;
pub use uri::DatasetUri;
pub use volumes::{VolumeSample, VolumeSet};

/// What a trial trains on: images (2D trials) or volumes (3D trials, `model.dims: 3`).
#[derive(Clone, Debug)]
pub enum TrainingData {
    Images(Dataset),
    Volumes(VolumeSet),
}

impl From<Dataset> for TrainingData {
    fn from(d: Dataset) -> TrainingData {
        TrainingData::Images(d)
    }
}

impl From<VolumeSet> for TrainingData {
    fn from(v: VolumeSet) -> TrainingData {
        TrainingData::Volumes(v)
    }
}

impl TrainingData {
    /// Opens the dataset a model needs: volumes for 3D models, images resized to the input
    /// size otherwise.
    pub fn open(uri: &str, model: &orchestra_api::ModelSpec) -> Result<TrainingData, DataError> {
        Ok(if model.dims == 3 {
            TrainingData::Volumes(VolumeSet::open(uri)?)
        } else {
            TrainingData::Images(Dataset::open(uri, model.input_size)?)
        })
    }

    pub fn channels(&self) -> usize {
        match self {
            TrainingData::Images(d) => d.channels,
            TrainingData::Volumes(_) => 1,
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            TrainingData::Images(d) => d.classes,
            TrainingData::Volumes(v) => v.classes,
        }
    }

    /// Training and validation images (or volumes).
    pub fn counts(&self) -> (usize, usize) {
        match self {
            TrainingData::Images(d) => (d.train.len(), d.val.len()),
            TrainingData::Volumes(v) => (v.train.len(), v.val.len()),
        }
    }

    /// Bits per pixel (voxel) of the uncompressed source: 8 per image channel, 16 per voxel.
    pub fn source_bits_per_pixel(&self) -> f64 {
        match self {
            TrainingData::Images(d) => 8.0 * d.channels as f64,
            TrainingData::Volumes(_) => volumes::SOURCE_BITS_PER_VOXEL,
        }
    }

    /// The image dataset, for the tools that work on images only.
    pub fn images(&self) -> Option<&Dataset> {
        match self {
            TrainingData::Images(d) => Some(d),
            TrainingData::Volumes(_) => None,
        }
    }
}

/// One image and its label map at the dataset's size, as bytes: the image interleaved
/// (height, width, channels), the mask one class index per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub image: Vec<u8>,
    pub mask: Vec<u8>,
}

/// A loaded, checked dataset split into training and validation images.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    /// Image channels: 3 (RGB) or 1 (grey).
    pub channels: usize,
    /// Classes including background (2 for binary segmentation).
    pub classes: usize,
    /// Side of every (square) image.
    pub size: u32,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
}

impl Dataset {
    /// Opens the dataset at `uri`, resized to `size` x `size`.
    pub fn open(uri: &str, size: u32) -> Result<Dataset, DataError> {
        match DatasetUri::parse(uri)? {
            DatasetUri::Synthetic {
                kind,
                n,
                size: native,
                seed,
                val,
            } => {
                let mut samples: Vec<Sample> = (0..n as u64)
                    .map(|i| synthetic::generate(kind, native, seed, i))
                    .collect();
                if native != size {
                    samples = samples
                        .into_iter()
                        .map(|s| batches::resize(&s, native, size, kind.channels()))
                        .collect();
                }
                let val_samples = samples.split_off(n - val);
                Ok(Dataset {
                    name: uri.to_string(),
                    channels: kind.channels(),
                    classes: kind.classes(),
                    size,
                    train: samples,
                    val: val_samples,
                })
            }
            DatasetUri::Folder {
                path,
                val,
                classes,
                limit,
            } => folder::load(&path, size, val, classes, limit, uri),
            DatasetUri::Remote {
                store,
                val,
                classes,
                limit,
            } => {
                let local = remote::mirror(&store, uri)?;
                folder::load(&local, size, val, classes, limit, uri)
            }
        }
    }
}
