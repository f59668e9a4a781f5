//! NCCL on GPUs through cudarc's bindings, with libnccl loaded at run time (the build needs no
//! CUDA). Rank 0 creates the NCCL unique id and hands it out through the rendezvous store.
//! Operations run on the legacy default CUDA stream, which libtorch also uses unless told
//! otherwise, so they are ordered with the training step's kernels; each is followed by a
//! device synchronisation so that the watchdog bounds the GPU-side wait too.

use std::time::Duration;

use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use super::rendezvous::Client;
use super::{check_contiguous, Collective, DistError, RendezvousEnv};

pub struct NcclCollective {
    comm: sys::ncclComm_t,
    rank: usize,
    size: usize,
    device: i64,
}

fn err(reason: impl Into<String>) -> DistError {
    DistError::Backend {
        backend: "nccl",
        reason: reason.into(),
    }
}

fn nccl(what: &str, e: result::NcclError) -> DistError {
    err(format!("{what} failed: {:?}", e.0))
}

impl NcclCollective {
    pub fn init(
        env: &RendezvousEnv,
        client: &Client,
        device: Device,
        timeout: Duration,
    ) -> Result<NcclCollective, DistError> {
        let Device::Cuda(index) = device else {
            return Err(err(format!(
                "NCCL needs a CUDA device, the trial runs on {device:?}"
            )));
        };
        // SAFETY: only probes whether the shared library can be opened.
        if !unsafe { sys::is_culib_present() } {
            return Err(err(
                "libnccl could not be loaded: put the folder holding libnccl.so on LD_LIBRARY_PATH \
                 (cudarc looks for libnccl.so; a lone libnccl.so.2 needs a libnccl.so link beside it)",
            ));
        }
        check_one_nccl()?;
        let id = if env.rank == 0 {
            let id = result::get_uniqueid().map_err(|e| nccl("ncclGetUniqueId", e))?;
            let bytes: Vec<u8> = id.internal.iter().map(|c| *c as u8).collect();
            client.set("nccl-unique-id", &bytes)?;
            id
        } else {
            let bytes = client.get("nccl-unique-id", timeout)?.ok_or_else(|| {
                err(format!(
                    "rank 0 did not publish the NCCL unique id within {timeout:?}"
                ))
            })?;
            if bytes.len() != 128 {
                return Err(err(format!(
                    "the NCCL unique id from rank 0 has {} bytes, not 128",
                    bytes.len()
                )));
            }
            let mut id = sys::ncclUniqueId { internal: [0; 128] };
            for (dst, src) in id.internal.iter_mut().zip(&bytes) {
                *dst = *src as _;
            }
            id
        };
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` receives a communicator; CUDA is initialised by libtorch on `device`.
        unsafe { result::comm_init_rank(&mut comm, env.world_size as i32, id, env.rank as i32) }
            .map_err(|e| nccl("ncclCommInitRank", e))?;
        Ok(NcclCollective {
            comm,
            rank: env.rank,
            size: env.world_size,
            device: index as i64,
        })
    }

    fn cuda_ptr(&self, op: &'static str, t: &Tensor) -> Result<*mut std::ffi::c_void, DistError> {
        check_contiguous(op, t, "CUDA")?;
        if t.device() != Device::Cuda(self.device as usize) {
            return Err(DistError::Tensor {
                op,
                what: format!("on {:?}", t.device()),
                expected: "CUDA",
            });
        }
        Ok(t.data_ptr())
    }

    fn sync(&self) {
        tch::Cuda::synchronize(self.device);
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn device(&self) -> Device {
        Device::Cuda(self.device as usize)
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError> {
        let ptr = self.cuda_ptr("all-reduce", t)?;
        let kind = match t.kind() {
            Kind::Float => sys::ncclDataType_t::ncclFloat32,
            Kind::Double => sys::ncclDataType_t::ncclFloat64,
            k => {
                return Err(DistError::Tensor {
                    op: "all-reduce",
                    what: format!("{k:?}"),
                    expected: "float or double",
                })
            }
        };
        // SAFETY: in-place all-reduce of a live contiguous device buffer of numel elements.
        unsafe {
            result::all_reduce(
                ptr,
                ptr,
                t.numel(),
                kind,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                std::ptr::null_mut(),
            )
        }
        .map_err(|e| nccl("ncclAllReduce", e))?;
        self.sync();
        Ok(())
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<(), DistError> {
        let ptr = self.cuda_ptr("broadcast", t)?;
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        // SAFETY: in-place broadcast of a live contiguous device buffer, as bytes.
        unsafe {
            result::broadcast(
                ptr,
                ptr,
                bytes,
                sys::ncclDataType_t::ncclUint8,
                root as i32,
                self.comm,
                std::ptr::null_mut(),
            )
        }
        .map_err(|e| nccl("ncclBroadcast", e))?;
        self.sync();
        Ok(())
    }
    fn barrier(&mut self, _: Option<Duration>) -> Result<(), DistError> {
        // NCCL has no barrier: an all-reduce of one float is one.
        let t = Tensor::zeros([1], (Kind::Float, Device::Cuda(self.device as usize)));
        self.all_reduce_sum(&t)
    }
}

/// The file that defines `symbol` at `addr`.
fn defining_file(addr: *const std::ffi::c_void) -> Option<std::path::PathBuf> {
    if addr.is_null() {
        return None;
    }
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr fills `info` for any address; dli_fname is a C string owned by the loader.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    std::fs::canonicalize(name.to_string_lossy().as_ref()).ok()
}

/// libtorch_cuda loads its own libnccl with global symbols; a second, different libnccl opened
/// by cudarc would have its internals bound to the first one's and fail with "corrupted comm
/// object". Both must be the same file.
fn check_one_nccl() -> Result<(), DistError> {
    let name = c"ncclGetUniqueId";
    // SAFETY: dlsym on the global scope with a valid C string.
    let global = defining_file(unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) });
    // SAFETY: the library is present (checked before); looking up a symbol does not call it.
    let ours = unsafe {
        sys::culib()
            .get::<*const std::ffi::c_void>(b"ncclGetUniqueId\0")
            .ok()
            .and_then(|f| defining_file(*f))
    };
    match (global, ours) {
        (Some(g), Some(o)) if g != o => Err(err(format!(
            "two different NCCL libraries are loaded: {} (libtorch's) and {} (libnccl.so on \
             LD_LIBRARY_PATH); point libnccl.so at libtorch's",
            g.display(),
            o.display()
        ))),
        _ => Ok(()),
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: the communicator is not used after this.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}
