//! Datasets: addressed by URI, loaded and checked up front, split deterministically, and served
//! as augmented tensor batches whose order depends only on (seed, step).

mod batches;
mod error;
mod folder;
pub mod patches;
pub mod remote;
pub mod synthetic;
mod uri;

pub use batches::{augment, batch, epoch_permutation, BatchSampler};
pub use error::DataError;
pub use folder::Layout;
pub use synthetic::SyntheticKind;
pub use uri::DatasetUri;

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
