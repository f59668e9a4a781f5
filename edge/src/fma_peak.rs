//! This CPU's measured peak of fused multiply-adds, the yardstick for the direct kernels:
//! every edge timing is given as GFLOP/s and as a share of this, not only as seconds.
//!
//! Each thread runs chains of register-only FMAs, more independent chains than the FMA units'
//! latency times their count (so the units, not the dependencies, set the pace), for the
//! widest instruction set the direct kernels use here (AVX-512F, else AVX2+FMA). One thread per
//! core asked for, all started together; the result is the total FLOP (2 per lane per FMA)
//! over the slowest thread's time, the best of a few rounds.

use std::time::Instant;

/// A measured peak.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FmaPeak {
    /// "avx512f" or "avx2+fma".
    pub instructions: &'static str,
    pub threads: usize,
    pub gflops_per_second: f64,
}

/// Independent accumulators per thread: two FMA units of 4 cycles' latency need 8 in flight;
/// 12 leaves room and fits AVX2's 16 registers.
const CHAINS: usize = 12;
/// FMAs per chain per round: about 0.2-0.4 s per thread at 3 GHz.
const STEPS: usize = 100_000_000;

/// The peak over `threads` threads, best of `rounds`; `None` where the CPU has neither
/// AVX-512F nor AVX2 with FMA (the direct kernels do not run there either).
pub fn measure(threads: usize, rounds: usize) -> Option<FmaPeak> {
    measure_steps(threads, rounds, STEPS)
}

fn measure_steps(threads: usize, rounds: usize, steps: usize) -> Option<FmaPeak> {
    #[cfg(target_arch = "x86_64")]
    {
        let (instructions, lanes, run): (&'static str, usize, fn(usize) -> f32) =
            if crate::direct::has_avx512() {
                // SAFETY (the closure): the CPU has AVX-512F, checked here.
                ("avx512f", 16, |n| unsafe { avx512::chains(n) })
            } else if crate::direct::has_avx2_fma() {
                // SAFETY (the closure): the CPU has AVX2 and FMA, checked here.
                ("avx2+fma", 8, |n| unsafe { avx2::chains(n) })
            } else {
                return None;
            };
        let threads = threads.max(1);
        let mut best = 0f64;
        for _ in 0..rounds.max(1) {
            let start = std::sync::Barrier::new(threads);
            let seconds = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            let t = Instant::now();
                            std::hint::black_box(run(steps));
                            t.elapsed().as_secs_f64()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("an FMA loop does not panic"))
                    .fold(0f64, f64::max)
            });
            let flops = (threads * steps * CHAINS * lanes * 2) as f64;
            best = best.max(flops / seconds / 1e9);
        }
        Some(FmaPeak {
            instructions,
            threads,
            gflops_per_second: best,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, rounds, steps);
        None
    }
}

macro_rules! chains {
    ($isa:ident, $features:literal, $reg:ty, $set1:ident, $fmadd:ident, $add:ident, $cvt:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $isa {
            use std::arch::x86_64::*;

            use super::CHAINS;

            /// `steps` FMAs on each of CHAINS independent registers; their sum's first lane,
            /// so that nothing is optimised away.
            ///
            /// # Safety
            /// The CPU has these instructions.
            #[target_feature(enable = $features)]
            pub unsafe fn chains(steps: usize) -> f32 {
                let mut acc: [$reg; CHAINS] = std::array::from_fn(|i| $set1(i as f32 * 1e-3));
                let (a, b) = ($set1(0.999_999), $set1(1e-7));
                for _ in 0..steps {
                    for r in acc.iter_mut() {
                        *r = $fmadd(*r, a, b);
                    }
                }
                let sum = acc.iter().fold($set1(0.0), |s, r| $add(s, *r));
                $cvt(sum)
            }
        }
    };
}

chains!(
    avx512,
    "avx512f",
    __m512,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_cvtss_f32
);
chains!(
    avx2,
    "avx2,fma",
    __m256,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_cvtss_f32
);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The widest instruction set the direct kernels use is the one measured, and the chains
    /// compute what they should (so the loop was not optimised away into another count).
    #[test]
    fn the_peak_is_measured_on_the_kernels_instructions() {
        let Some(peak) = measure_steps(2, 1, 10_000) else {
            assert!(!crate::direct::has_avx2_fma(), "a CPU with FMA gets a peak");
            return;
        };
        let expected = if crate::direct::has_avx512() {
            "avx512f"
        } else {
            "avx2+fma"
        };
        assert_eq!((peak.instructions, peak.threads), (expected, 2));
        assert!(peak.gflops_per_second > 0.0 && peak.gflops_per_second.is_finite());
        // One chain from x0: x <- 0.999999 x + 1e-7, n times; the sum of the 12 chains' first lanes.
        let n = 1000;
        let want: f32 = (0..CHAINS)
            .map(|i| (0..n).fold(i as f32 * 1e-3, |x, _| x.mul_add(0.999_999, 1e-7)))
            .sum();
        // SAFETY: the CPU has the instructions, checked by `measure_steps` above.
        let got = unsafe {
            if crate::direct::has_avx512() {
                avx512::chains(n)
            } else {
                avx2::chains(n)
            }
        };
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
