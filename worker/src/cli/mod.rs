//! The `orchestra-worker` binary's commands beyond training, each in its own module: the codec
//! commands (export is in main), and the benchmarks. They use the library; nothing in the
//! library uses them.

pub mod bench;
pub mod bench_allreduce;
pub mod bench_latency;
pub mod bench_latency_volume;
pub mod codec;
pub mod volume;
