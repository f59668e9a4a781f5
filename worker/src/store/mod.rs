//! Checkpoints and tensors in object storage, on top of `orchestra-store`.

pub mod checkpoint;
mod safetensors_io;

pub use orchestra_store::{Store, StoreError};
pub use safetensors_io::{
    from_safetensors, from_safetensors_with_metadata, to_safetensors, to_safetensors_with_metadata,
};
