//! The codec crate (stream format, context model, range coder, decoder checks), and the
//! deployable model files that pair it with the trained networks.

pub mod edge_compare;
pub mod edge_compare_volume;
pub mod model_code;
pub mod model_file;

pub use orchestra_codec::*;
