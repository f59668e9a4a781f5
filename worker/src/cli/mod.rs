//! The `orchestra-worker` binary's commands, each in its own module (main.rs only routes): a
//! trial's commands (train, eval, export, info), the codec commands, the service, the
//! rate-accuracy comparison, volumes, and the benchmarks. They use the library; nothing in the
//! library uses them.

pub mod bench;
pub mod bench_allreduce;
pub mod bench_latency;
pub mod bench_latency_volume;
pub mod codec;
pub mod rate_accuracy;
pub mod serve;
pub mod trial;
pub mod volume;
