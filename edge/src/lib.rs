//! Orchestra's edge: what runs on the hospital side, with no libtorch and no Python.
//!
//! C (the compressor) runs in pure Rust on candle's CPU backend from the deployable model file
//! the worker exports; the entropy coder is the shared `orchestra-codec`. The code it produces
//! is the code the worker's libtorch C produces, but for activations that land on the
//! binarization threshold (`orchestra-worker compare-edge` counts them on real data). The
//! client sends bitstreams to the segmentation service and load-tests it.

pub mod client;
pub mod compressor;
pub mod dicom_series;
pub mod dicom_write;
mod direct;
pub mod fma_peak;
pub mod input;
pub mod intensity;
pub mod layers;
pub mod model_file;
pub mod nifti_write;
pub mod plane_stream;
pub mod preparation;
pub mod resample;
pub mod scan;
pub mod synthetic_volume;
pub mod tiling;
pub mod volume;
pub mod volume_bench;
pub mod volume_dataset;
pub mod volume_encode;

pub use candle_core;
pub use model_file::{EdgeError, EdgeModel};
