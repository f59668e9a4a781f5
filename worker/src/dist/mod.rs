//! Collectives for data-parallel training: one trait for what the trainer needs (all-reduce of
//! flat float buffers, broadcast of initial weights, barrier, rank and world size) and its
//! implementations: a single process, MPI on CPUs (feature `mpi`, processes from `mpirun`),
//! plain TCP on CPUs for gangs started without mpirun (Kubernetes), and NCCL on GPUs (feature
//! `nccl`, library loaded at run time). TCP and NCCL meet through `MASTER_ADDR`/`MASTER_PORT`.
//!
//! Every operation of a multi-rank backend runs under a watchdog: a rank that dies or hangs
//! makes the others fail within the timeout with a message naming the rank, instead of waiting
//! forever inside MPI or NCCL.

pub mod buckets;
pub mod env;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;
pub mod single;
pub mod tcp;
pub mod watchdog;
pub mod watched;

use std::time::Duration;

use tch::{Device, Tensor};

pub use buckets::{all_reduce_mean, all_reduce_mean_flat, DEFAULT_BUCKET_BYTES};
pub use env::RendezvousEnv;
pub use single::SingleProcess;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("rendezvous: environment variable {var} = {value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("rendezvous at {addr}: {reason}")]
    Rendezvous { addr: String, reason: String },
    #[error("collective backend {backend} is not in this build: rebuild orchestra-worker with `--features {backend}`")]
    NotBuilt { backend: &'static str },
    #[error("{backend}: {reason}")]
    Backend { backend: &'static str, reason: String },
    #[error("{op}: tensor is {what}; collectives take contiguous {expected} tensors")]
    Tensor {
        op: &'static str,
        what: String,
        expected: &'static str,
    },
}

/// The communication a data-parallel trainer needs. Every rank calls the same operations in
/// the same order with tensors of the same shapes.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Backend name for logs and results.
    fn backend(&self) -> &'static str;
    /// Sums `t` (contiguous, float or double, on this backend's device) over all ranks, in place.
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError>;
    /// Overwrites `t` (contiguous, any kind) with rank `root`'s copy.
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<(), DistError>;
    /// Waits for every rank; `timeout` replaces the usual one (ranks waiting for rank 0 to
    /// evaluate or checkpoint wait longer than ranks waiting for a gradient).
    fn barrier(&mut self, timeout: Option<Duration>) -> Result<(), DistError>;
    /// Whether operations do anything. False only for the single-process backend: MPI or NCCL
    /// at world size 1 still run every collective, so that path is exercised as it is.
    fn communicates(&self) -> bool {
        true
    }
    /// Where this backend's tensors live.
    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// Command-line options of the collectives, shared by `train` and `bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct DistArgs {
    /// Collectives backend.
    #[arg(long = "dist", value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Seconds a rank waits for one collective operation before it exits, naming the ranks
    /// it waited for.
    #[arg(long, default_value_t = 300)]
    pub collective_timeout: u64,
    /// Seconds the other ranks wait while rank 0 evaluates or writes a checkpoint.
    #[arg(long, default_value_t = 3600)]
    pub io_timeout: u64,
    /// Gradient bucket size in MiB.
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mib: f64,
}

impl DistArgs {
    pub fn options(&self) -> DistOptions {
        DistOptions {
            backend: self.backend,
            timeout: Duration::from_secs(self.collective_timeout.max(1)),
            io_timeout: Duration::from_secs(self.io_timeout.max(1)),
        }
    }

    pub fn bucket_bytes(&self) -> usize {
        ((self.bucket_mib.max(0.0) * (1 << 20) as f64) as usize).max(1)
    }
}

/// Which collectives backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `mpi` when started by mpirun, `nccl` (CUDA) or `tcp` (CPU) when WORLD_SIZE is set,
    /// else a single process.
    Auto,
    Single,
    Mpi,
    Tcp,
    Nccl,
}

/// Options of a multi-rank backend.
#[derive(Clone, Debug)]
pub struct DistOptions {
    pub backend: Backend,
    /// Longest wait for one collective operation before the rank gives up.
    pub timeout: Duration,
    /// Longest wait of the other ranks while rank 0 evaluates or writes a checkpoint.
    pub io_timeout: Duration,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            backend: Backend::Auto,
            timeout: Duration::from_secs(300),
            io_timeout: Duration::from_secs(3600),
        }
    }
}

/// Whether this process was started by Open MPI's `mpirun`.
pub fn started_by_mpirun() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMIX_RANK").is_some()
}

/// Opens the collectives for a trainer on `device`.
pub fn connect(opts: &DistOptions, device: Device) -> Result<Box<dyn Collective>, DistError> {
    let backend = match opts.backend {
        Backend::Auto if started_by_mpirun() => Backend::Mpi,
        Backend::Auto if device.is_cuda() && std::env::var_os("WORLD_SIZE").is_some() => Backend::Nccl,
        Backend::Auto if std::env::var_os("WORLD_SIZE").is_some() => Backend::Tcp,
        Backend::Auto => Backend::Single,
        b => b,
    };
    match backend {
        Backend::Single | Backend::Auto => Ok(Box::new(SingleProcess)),
        Backend::Mpi => connect_mpi(opts),
        Backend::Tcp => {
            let env = RendezvousEnv::from_env()?;
            let client = rendezvous::join(&env, opts.timeout)?;
            let comm = tcp::TcpCollective::init(&env, opts.timeout)?;
            watched::Watched::around(Box::new(comm), opts.timeout, Some(client))
        }
        Backend::Nccl => connect_nccl(opts, device),
    }
}

#[cfg(feature = "mpi")]
fn connect_mpi(opts: &DistOptions) -> Result<Box<dyn Collective>, DistError> {
    let mut comm = mpi::MpiCollective::init()?;
    if comm.world_size() == 1 {
        return Ok(Box::new(comm));
    }
    let client = comm.rendezvous(opts.timeout)?;
    watched::Watched::around(Box::new(comm), opts.timeout, Some(client))
}

#[cfg(not(feature = "mpi"))]
fn connect_mpi(_: &DistOptions) -> Result<Box<dyn Collective>, DistError> {
    Err(DistError::NotBuilt { backend: "mpi" })
}

#[cfg(feature = "nccl")]
fn connect_nccl(opts: &DistOptions, device: Device) -> Result<Box<dyn Collective>, DistError> {
    let env = RendezvousEnv::from_env()?;
    let client = rendezvous::join(&env, opts.timeout)?;
    let comm = nccl::NcclCollective::init(&env, &client, device, opts.timeout)?;
    watched::Watched::around(Box::new(comm), opts.timeout, Some(client))
}

#[cfg(not(feature = "nccl"))]
fn connect_nccl(_: &DistOptions, _: Device) -> Result<Box<dyn Collective>, DistError> {
    Err(DistError::NotBuilt { backend: "nccl" })
}

/// Checks that `t` can be handed to a backend as raw memory.
pub(crate) fn check_contiguous(
    op: &'static str,
    t: &Tensor,
    expected: &'static str,
) -> Result<(), DistError> {
    if !t.is_contiguous() {
        return Err(DistError::Tensor {
            op,
            what: format!("non-contiguous {:?}", t.size()),
            expected,
        });
    }
    Ok(())
}

/// The address and byte length of a contiguous CPU tensor's data (for CPU backends).
pub(crate) fn cpu_memory(op: &'static str, t: &Tensor) -> Result<(*mut u8, usize), DistError> {
    check_contiguous(op, t, "CPU")?;
    if t.device() != Device::Cpu {
        return Err(DistError::Tensor {
            op,
            what: format!("on {:?}", t.device()),
            expected: "CPU",
        });
    }
    Ok((t.data_ptr() as *mut u8, t.numel() * t.kind().elt_size_in_bytes()))
}
