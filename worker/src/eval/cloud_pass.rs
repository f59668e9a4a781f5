//! How the cloud runs g and s over a whole volume, and where its time goes. The arithmetic is
//! fp32, or bf16 autocast for g's and s's convolutions (the CPU runs them on its bf16 dot
//! products where it has them); scores are accumulated in fp32 either
//! way, and the labels are the arg max of the accumulated scores.

use orchestra_api::Precision;

/// Options of one cloud pass.
#[derive(Clone, Copy, Debug)]
pub struct CloudPass {
    /// Windows per call of s.
    pub window_batch: usize,
    pub precision: Precision,
}

impl CloudPass {
    /// fp32 with `window_batch` windows per call of s.
    pub fn fp32(window_batch: usize) -> CloudPass {
        CloudPass {
            window_batch,
            precision: Precision::Fp32,
        }
    }
}

/// Whether this CPU has bf16 dot products: AVX-512 BF16 (every x86 CPU with AMX tiles has it
/// too; AMX's own detection is not stable Rust yet).
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Seconds spent in g (the feature volume from the code) and in s's sliding window (windows,
/// accumulation and arg max), and the windows s ran on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CloudProfile {
    pub g_s: f64,
    pub s_s: f64,
    pub windows: usize,
}
