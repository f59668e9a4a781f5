//! `orchestra-worker bench-allreduce`: all-reduce throughput of the collectives backend for a
//! range of bucket sizes (run it under `mpirun -n 2` for MPI; with the rendezvous variables
//! for NCCL). Rank 0 prints the table and writes JSON and Markdown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use orchestra_worker::dist::{self, DistArgs};
use serde::Serialize;
use tch::{Kind, Tensor};

#[derive(clap::Args)]
pub struct AllReduceArgs {
    /// Bucket sizes in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])]
    sizes_mib: Vec<f64>,
    /// Timed all-reduces per size (after 2 warm-up ones).
    #[arg(long, default_value_t = 10)]
    iters: u32,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "bench-results/allreduce.json")]
    out: PathBuf,
    #[command(flatten)]
    dist: DistArgs,
}

#[derive(Serialize)]
struct Row {
    backend: String,
    ranks: usize,
    mib: f64,
    iters: u32,
    ms: f64,
    /// Bytes of the buffer per second.
    algorithm_gb_per_s: f64,
    /// The algorithm bandwidth times 2 (n - 1) / n: what each link carries in a ring.
    bus_gb_per_s: f64,
}

pub fn run(args: AllReduceArgs) -> Result<()> {
    let device = orchestra_worker::cuda::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let mut comm = dist::connect(&args.dist.options(), device)?;
    if !comm.communicates() {
        bail!("bench-allreduce needs a communicating backend: run it under mpirun, or with --dist nccl and the rendezvous variables");
    }
    let n = comm.world_size();
    let mut rows = Vec::new();
    for &mib in &args.sizes_mib {
        let elems = ((mib * (1 << 20) as f64) / 4.0) as i64;
        let t = Tensor::ones([elems], (Kind::Float, device));
        for _ in 0..2 {
            comm.all_reduce_sum(&t)?;
        }
        comm.barrier(Some(Duration::from_secs(600)))?;
        let started = Instant::now();
        for _ in 0..args.iters {
            comm.all_reduce_sum(&t)?;
        }
        let s = started.elapsed().as_secs_f64() / args.iters as f64;
        let bytes = elems as f64 * 4.0;
        let alg = bytes / s / 1e9;
        rows.push(Row {
            backend: comm.backend().to_string(),
            ranks: n,
            mib,
            iters: args.iters,
            ms: 1000.0 * s,
            algorithm_gb_per_s: alg,
            bus_gb_per_s: alg * 2.0 * (n as f64 - 1.0) / n as f64,
        });
    }
    if comm.rank() != 0 {
        return Ok(());
    }
    let mut table = String::from(
        "| backend | ranks | MiB | ms | algorithm GB/s | bus GB/s |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        table += &format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            r.backend, r.ranks, r.mib, r.ms, r.algorithm_gb_per_s, r.bus_gb_per_s
        );
    }
    print!("{table}");
    super::bench::write_results(&args.out, &rows, &table)?;
    Ok(())
}
