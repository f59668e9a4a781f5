//! The paper's networks: C (compressor), binarization, q (bit model), g (feature
//! reconstruction), s (SegAN's segmentor for images, an nnU-Net-style 3D U-Net for volumes) and
//! D (SegAN critic), each built from an `nn::Path` and run through `ModuleT` with a `train`
//! flag, for 2D and 3D alike.

pub mod binarize;
pub mod bit_model;
pub mod compressor;
pub mod config;
pub mod critic;
pub mod layers;
pub mod model;
pub mod reconstructor;
pub mod rng;
pub mod segmentor;
pub mod unet;

pub use config::NetConfig;
pub use layers::Spatial;
pub use model::{Forward, Group, Model};
