//! Orchestra's worker: everything that touches tensors. Datasets (`data`), the paper's networks
//! (`nets`), training of the variants D1-D4 (`train`), evaluation of images and volumes (`eval`),
//! the latency tables (`latency`), checkpoints in object storage (`store`) and the network
//! summaries behind `orchestra-worker info` (`info`).

pub mod baselines;
pub mod codec;
pub mod cuda;
pub mod data;
pub mod dist;
pub mod eval;
pub mod info;
pub mod latency;
pub mod nets;
pub mod serve;
pub mod store;
pub mod train;
