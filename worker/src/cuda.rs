//! CUDA for the same binary that trains on CPUs: Rust links with `--as-needed`, so the worker
//! depends on `libtorch_cpu.so` only, and libtorch's CUDA backend registers itself when
//! `libtorch_cuda.so` is loaded. It is opened here, once, when a trial asks for `device: cuda`.

use std::ffi::CString;
use std::sync::OnceLock;

/// Loads `libtorch_cuda.so` (from the embedded rpath or `LD_LIBRARY_PATH`) with global symbols.
pub fn load_libtorch_cuda() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let name = CString::new("libtorch_cuda.so").expect("no NUL");
            // SAFETY: dlopen with a valid C string; the handle is kept for the process's life.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a C string describing the last dlopen failure, or null.
                let reason = unsafe {
                    let e = libc::dlerror();
                    if e.is_null() {
                        "unknown error".to_string()
                    } else {
                        std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                    }
                };
                return Err(format!(
                    "device: cuda needs libtorch_cuda.so (libtorch's CUDA build, with the CUDA \
                     libraries it links) on LD_LIBRARY_PATH: {reason}"
                ));
            }
            Ok(())
        })
        .clone()
}

/// The libtorch device for a device kind; CUDA is loaded, and must see a device, when asked for.
pub fn device_for(kind: orchestra_api::DeviceKind) -> Result<tch::Device, String> {
    match kind {
        orchestra_api::DeviceKind::Cpu => Ok(tch::Device::Cpu),
        orchestra_api::DeviceKind::Cuda => {
            load_libtorch_cuda()?;
            if tch::Cuda::is_available() {
                Ok(tch::Device::Cuda(0))
            } else {
                Err("device: cuda was requested but libtorch sees no CUDA device".into())
            }
        }
    }
}

/// A `--device` argument: `cpu` or `cuda`.
pub fn parse_device(name: &str) -> Result<tch::Device, String> {
    match name {
        "cpu" => device_for(orchestra_api::DeviceKind::Cpu),
        "cuda" => device_for(orchestra_api::DeviceKind::Cuda),
        other => Err(format!("--device {other}: expected cpu or cuda")),
    }
}
