//! MPI on CPUs (Open MPI through the `mpi` crate); processes are started by `mpirun`, which
//! also gives each its rank.

use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use tch::{Kind, Tensor};

use super::rendezvous::{self, Client};
use super::{Collective, DistError};

pub struct MpiCollective {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

fn err(reason: impl Into<String>) -> DistError {
    DistError::Backend {
        backend: "mpi",
        reason: reason.into(),
    }
}

impl MpiCollective {
    pub fn init() -> Result<MpiCollective, DistError> {
        let universe = mpi::initialize().ok_or_else(|| err("MPI is already initialised in this process"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiCollective {
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// A rendezvous store for progress reports: rank 0 serves on any free port and broadcasts
    /// its address over MPI (mpirun sets no MASTER_ADDR).
    pub fn rendezvous(&mut self, timeout: Duration) -> Result<Client, DistError> {
        let mut addr = [0u8; 256];
        if self.rank == 0 {
            let port = rendezvous::serve("0.0.0.0:0")?;
            let host = hostname();
            let text = format!("{host}:{port}");
            addr[..text.len().min(256)].copy_from_slice(&text.as_bytes()[..text.len().min(256)]);
        }
        self.world.process_at_rank(0).broadcast_into(&mut addr[..]);
        let end = addr.iter().position(|b| *b == 0).unwrap_or(addr.len());
        let text = String::from_utf8_lossy(&addr[..end]).to_string();
        let client = Client::connect(&text, timeout)?;
        rendezvous::check_in(&client, self.rank, self.size, timeout)?;
        Ok(client)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).to_string()
    } else {
        "127.0.0.1".into()
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError> {
        let (ptr, _) = super::cpu_memory("all-reduce", t)?;
        match t.kind() {
            Kind::Float => {
                // SAFETY: a contiguous CPU float tensor holds numel f32 values at ptr, alive and
                // not otherwise accessed while `t` is borrowed here.
                let values: &mut [f32] =
                    unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, t.numel()) };
                let send = values.to_vec();
                self.world
                    .all_reduce_into(&send[..], values, SystemOperation::sum());
            }
            Kind::Double => {
                // SAFETY: as above, for f64.
                let values: &mut [f64] =
                    unsafe { std::slice::from_raw_parts_mut(ptr as *mut f64, t.numel()) };
                let send = values.to_vec();
                self.world
                    .all_reduce_into(&send[..], values, SystemOperation::sum());
            }
            k => {
                return Err(DistError::Tensor {
                    op: "all-reduce",
                    what: format!("{k:?}"),
                    expected: "float or double",
                })
            }
        }
        Ok(())
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<(), DistError> {
        let (ptr, len) = super::cpu_memory("broadcast", t)?;
        // SAFETY: the tensor's `len` bytes, alive and not otherwise accessed meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        self.world.process_at_rank(root as i32).broadcast_into(bytes);
        Ok(())
    }
    fn barrier(&mut self, _: Option<Duration>) -> Result<(), DistError> {
        self.world.barrier();
        Ok(())
    }
}
