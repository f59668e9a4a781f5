//! Mixed precision for the training step: libtorch's autocast on any device, through the small
//! shim in `cpp/autocast.cpp` (tch binds only the CUDA, fp16 entry points). Inside a region,
//! convolutions and matrix products run in the region's dtype on the region's device type,
//! with the weights cast once per region and cached; parameters, their gradients and the
//! optimizer state stay fp32.
//!
//! Autocast state is per thread in libtorch; a region is a guard that restores the previous
//! state (enabled and dtype) when dropped, so regions nest and a panic inside one leaves none
//! behind.

use std::os::raw::c_int;

use orchestra_api::Precision;
use tch::{Device, Kind};

extern "C" {
    fn orchestra_autocast_get(device_type: c_int, enabled: *mut c_int, dtype: *mut c_int) -> c_int;
    fn orchestra_autocast_set(device_type: c_int, enabled: c_int, dtype: c_int) -> c_int;
    fn orchestra_autocast_enter() -> c_int;
    fn orchestra_autocast_exit() -> c_int;
}

/// c10::DeviceType of a tch device (autocast exists for the CPU and CUDA here).
fn device_type(device: Device) -> Option<c_int> {
    match device {
        Device::Cpu => Some(0),
        Device::Cuda(_) => Some(1),
        _ => None,
    }
}

/// c10::ScalarType of the dtypes autocast computes in.
fn scalar_type(kind: Kind) -> c_int {
    match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        other => panic!("autocast computes in fp16, bf16 or fp32, not {other:?}"),
    }
}

/// An autocast region: enabled with a dtype, or explicitly disabled (a full-precision island
/// inside an enclosing region). Restores the previous state on drop.
pub struct Autocast {
    device_type: c_int,
    before: (c_int, c_int),
}

impl Autocast {
    /// Enters a region on `device` in `dtype` (`None`: autocast off inside it). Panics only for
    /// a device libtorch has no autocast for, which `Precision` never asks for.
    pub fn enter(device: Device, dtype: Option<Kind>) -> Autocast {
        let device_type = device_type(device).unwrap_or_else(|| panic!("no autocast on {device:?}"));
        let (mut enabled, mut before_dtype) = (0, 0);
        // SAFETY: plain C calls into libtorch with pointers to two local ints.
        unsafe {
            let got = orchestra_autocast_get(device_type, &mut enabled, &mut before_dtype);
            assert_eq!(got, 0, "libtorch refused to report autocast on {device:?}");
            let kind = scalar_type(dtype.unwrap_or(Kind::Float));
            let set = orchestra_autocast_set(device_type, c_int::from(dtype.is_some()), kind);
            assert_eq!(set, 0, "libtorch refused autocast to {dtype:?} on {device:?}");
            orchestra_autocast_enter();
        }
        Autocast {
            device_type,
            before: (enabled, before_dtype),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` read; the nesting count is libtorch's own.
        unsafe {
            orchestra_autocast_exit();
            orchestra_autocast_set(self.device_type, self.before.0, self.before.1);
        }
    }
}

/// Runs `f` in the arithmetic `precision` asks for on `device`.
pub fn with_precision<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    match precision {
        Precision::Fp32 => f(),
        Precision::Bf16 => {
            let _region = Autocast::enter(device, Some(Kind::BFloat16));
            f()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::Module, Tensor};

    #[test]
    fn regions_cast_convolutions_nest_and_restore() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root(), 3, 4, 3, Default::default());
        let x = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        assert_eq!(conv.forward(&x).kind(), Kind::Float);
        let (inside, island) = with_precision(Precision::Bf16, Device::Cpu, || {
            let inside = conv.forward(&x).kind();
            let island = {
                let _island = Autocast::enter(Device::Cpu, None);
                conv.forward(&x).kind()
            };
            // Back in the region after the island.
            assert_eq!(conv.forward(&x).kind(), Kind::BFloat16);
            (inside, island)
        });
        assert_eq!((inside, island), (Kind::BFloat16, Kind::Float));
        assert_eq!(conv.forward(&x).kind(), Kind::Float, "off again after the region");
        assert_eq!(vs.variables()["weight"].kind(), Kind::Float, "weights stay fp32");
        // A panic inside a region leaves autocast off.
        let r = std::panic::catch_unwind(|| {
            with_precision(Precision::Bf16, Device::Cpu, || panic!("inside"));
        });
        assert!(r.is_err());
        assert_eq!(conv.forward(&x).kind(), Kind::Float);
        assert_eq!(
            with_precision(Precision::Fp32, Device::Cpu, || conv.forward(&x).kind()),
            Kind::Float
        );
    }
}
