//! C's 2D convolutions computed directly where the CPU has AVX2 and FMA: no unfolded matrix,
//! no product through a general matrix library, no separate pass for bias, BatchNorm and
//! LeakyReLU.
//!
//! At 256x256 the unfold-and-product path spent 40 % of C's time on the stem (3 input
//! channels: a 27-wide matrix times an 8-wide one, too narrow for the matrix kernels, built
//! from 9-float copies) and a fifth on copying unfolded rows. Here every output value is a
//! register that fused multiply-adds accumulate straight from the (zero-padded) input:
//! - the stem reads the image's planes: 8 output positions of a row per register, one
//!   register per output channel, one vector of inputs per tap and input channel;
//! - the other layers read channels-last features: a block of output positions times 8 or 16
//!   output channels, one broadcast input value per position, tap and input channel.
//!
//! The results are channels-last, as the next layer reads them. Where AVX2 is missing (or for
//! a shape these kernels do not cover: 3D, output channels not a multiple of 8, tanh heads)
//! the general unfold-and-product path computes the layer; the tests compare both with a
//! direct loop. The sums are taken in another order than libtorch's, so activations differ
//! in the last bits (as between any two convolution libraries): the edge-versus-libtorch
//! comparison counts the code bits this flips.

use crate::layers::{After, ChannelsLast, Conv, Planes};

/// Zeroed buffers from a per-thread pool: a fresh allocation of megabytes is a fresh mapping
/// whose pages the kernel faults in and clears on first touch, which cost C a third of its
/// time at 256x256 (pages returned at every free and taken again at the next layer). Buffers
/// given back with `recycle` are reused instead.
pub mod scratch {
    use std::cell::RefCell;

    /// Buffers kept per thread: C holds at most an input, an output and a padded copy at once.
    const KEPT: usize = 6;

    thread_local! {
        static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer of `len` zeros.
    pub fn zeroed(len: usize) -> Vec<f32> {
        let reused = POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let best = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= len)
                .min_by_key(|&i| pool[i].capacity());
            best.map(|i| pool.swap_remove(i))
        });
        match reused {
            Some(mut v) => {
                v.clear();
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// Gives a buffer back for reuse on this thread.
    pub fn recycle(v: Vec<f32>) {
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEPT {
                pool.push(v);
            } else if let Some(smallest) = (0..pool.len()).min_by_key(|&i| pool[i].capacity()) {
                if pool[smallest].capacity() < v.capacity() {
                    pool[smallest] = v;
                }
            }
        });
    }
}

/// Output channels per block of the stem (one register of positions each).
const STEM_BLOCK: usize = 8;

/// The stem (3x3, stride 1, bias, LeakyReLU) of an image's planes; `None` without AVX2/FMA.
pub fn stem(stem: &Conv, x: &Planes) -> Option<ChannelsLast> {
    if !(stem.is_image_stem() && x.sides[0] == 1) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return Some(unsafe { avx512::stem(stem, x) });
        }
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return Some(unsafe { avx2::stem(stem, x) });
        }
    }
    None
}

/// A 2D layer with LeakyReLU (after a bias or BatchNorm) on channels-last features, when its
/// output channels are a multiple of a register's width; `None` otherwise or without AVX2/FMA.
pub fn conv(layer: &Conv, x: &ChannelsLast) -> Option<ChannelsLast> {
    let covered = layer.kernel[0] == 1
        && x.sides[0] == 1
        && matches!(layer.after, After::BiasLeaky(_) | After::NormLeaky { .. });
    if !covered {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let co = layer.c_out;
        // SAFETY (each call): the CPU has the instruction set, checked in the same condition.
        if has_avx512() && co.is_multiple_of(32) {
            return Some(unsafe { avx512::conv::<2, 8>(layer, x) });
        }
        if has_avx512() && co.is_multiple_of(16) {
            return Some(unsafe { avx512::conv::<1, 16>(layer, x) });
        }
        if has_avx2_fma() && co.is_multiple_of(16) {
            return Some(unsafe { avx2::conv::<2, 6>(layer, x) });
        }
        if has_avx2_fma() && co.is_multiple_of(8) {
            return Some(unsafe { avx2::conv::<1, 12>(layer, x) });
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// AVX-512F, unless `ORCHESTRA_EDGE_NO_AVX512` is set (to measure the AVX2 kernels, which
/// gateways without AVX-512 run, on a machine that has it).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("ORCHESTRA_EDGE_NO_AVX512").is_none()
    })
}

/// Runs `row` on every output row of `out` (rows of `len` floats): in parallel on rayon's
/// threads, or on this thread alone when the pool has one (handing the rows to a single
/// worker on another core would only move the layer's data between caches: 30 % slower).
fn for_each_row(out: &mut [f32], len: usize, row: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    if rayon::current_num_threads() == 1 {
        out.chunks_mut(len).enumerate().for_each(|(i, r)| row(i, r));
    } else {
        out.par_chunks_mut(len).enumerate().for_each(|(i, r)| row(i, r));
    }
}

/// Per output channel: what multiplies the sum and what is added after (bias: 1 and the bias;
/// BatchNorm: its scale and shift), padded with zeros to whole registers.
fn scale_shift(after: &After, c_out: usize) -> (Vec<f32>, Vec<f32>) {
    let padded = c_out.div_ceil(STEM_BLOCK) * STEM_BLOCK;
    let (mut scale, mut shift) = (vec![0f32; padded], vec![0f32; padded]);
    match after {
        After::BiasLeaky(bias) | After::BiasTanh(bias) => {
            scale[..c_out].fill(1.0);
            shift[..c_out].copy_from_slice(bias);
        }
        After::NormLeaky { scale: s, shift: t } => {
            scale[..c_out].copy_from_slice(s);
            shift[..c_out].copy_from_slice(t);
        }
    }
    (scale, shift)
}

/// `x` with `pad` zeros around each plane (channels-last when `channels_last`, else planar),
/// and `extra` more zero columns on the right so that whole register blocks read in bounds.
fn zero_padded(
    data: &[f32],
    channels: usize,
    [h, w]: [usize; 2],
    pad: usize,
    extra: usize,
    channels_last: bool,
) -> (Vec<f32>, usize, usize) {
    let (ph, pw) = (h + 2 * pad, w + 2 * pad + extra);
    let mut padded = scratch::zeroed(channels * ph * pw);
    if channels_last {
        for (y, row) in data.chunks_exact(w * channels).enumerate() {
            padded[((y + pad) * pw + pad) * channels..][..w * channels].copy_from_slice(row);
        }
    } else {
        for (c, plane) in data.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                padded[(c * ph + y + pad) * pw + pad..][..w].copy_from_slice(row);
            }
        }
    }
    (padded, ph, pw)
}

/// The kernels for one instruction set: its register type, width and intrinsics. One body for
/// AVX2 (8 f32s per register, 16 registers) and AVX-512 (16 per register, 32 registers).
macro_rules! kernels {
    ($isa:ident, $features:literal, $reg:ty, $lanes:literal, $zero:ident, $set1:ident, $loadu:ident,
     $storeu:ident, $fmadd:ident, $add:ident, $mul:ident, $max:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $isa {
            use std::arch::x86_64::*;

            use super::{for_each_row, scale_shift, scratch, zero_padded, STEM_BLOCK};
            use crate::layers::{ChannelsLast, Conv, Planes, LEAKY_SLOPE};

            /// f32s per register.
            const LANES: usize = $lanes;

            /// scale * v + shift, then LeakyReLU, in f32 as the unfold path computes it.
            #[inline(always)]
            unsafe fn finish(v: $reg, scale: $reg, shift: $reg) -> $reg {
                let y = $add($mul(v, scale), shift);
                $max(y, $mul(y, $set1(LEAKY_SLOPE)))
            }

            /// Registers of LANES output positions, one per output channel of a block of
            /// STEM_BLOCK, accumulated over the 3x3 taps of every input plane.
            #[target_feature(enable = $features)]
            pub unsafe fn stem(stem: &Conv, x: &Planes) -> ChannelsLast {
                let [_, h, w] = x.sides;
                let (ci, co) = (stem.c_in, stem.c_out);
                let blocks = co.div_ceil(STEM_BLOCK);
                // The weights as [block][c][tap][o in block], zero beyond C_out.
                let mut weights = vec![0f32; blocks * ci * 9 * STEM_BLOCK];
                for o in 0..co {
                    for c in 0..ci {
                        for t in 0..9 {
                            weights[(((o / STEM_BLOCK) * ci + c) * 9 + t) * STEM_BLOCK + o % STEM_BLOCK] =
                                stem.right[(t * ci + c) * co + o];
                        }
                    }
                }
                let (scale, shift) = scale_shift(&stem.after, co);
                let (padded, ph, pw) = zero_padded(&x.data, ci, [h, w], 1, LANES, false);
                let mut out = scratch::zeroed(h * w * co);
                let plan = StemPlan {
                    ci,
                    co,
                    w,
                    ph,
                    pw,
                    weights: &weights,
                    scale: &scale,
                    shift: &shift,
                };
                for_each_row(&mut out, w * co, |y, row| {
                    // SAFETY: `stem` runs only where the CPU has these instructions.
                    unsafe { stem_row(&plan, &padded, y, row) }
                });
                scratch::recycle(padded);
                ChannelsLast {
                    channels: co,
                    sides: x.sides,
                    data: out,
                }
            }

            /// What every row of the stem reads.
            struct StemPlan<'a> {
                ci: usize,
                co: usize,
                w: usize,
                ph: usize,
                pw: usize,
                weights: &'a [f32],
                scale: &'a [f32],
                shift: &'a [f32],
            }

            /// Output row `y` of the stem (channels-last) from the padded planes.
            #[target_feature(enable = $features)]
            unsafe fn stem_row(plan: &StemPlan, padded: &[f32], y: usize, out: &mut [f32]) {
                let StemPlan {
                    ci,
                    co,
                    w,
                    ph,
                    pw,
                    weights,
                    scale,
                    shift,
                } = *plan;
                let mut tile = [0f32; STEM_BLOCK * LANES];
                for x0 in (0..w).step_by(LANES) {
                    for b in 0..co.div_ceil(STEM_BLOCK) {
                        let mut acc = [$zero(); STEM_BLOCK];
                        for c in 0..ci {
                            for dy in 0..3 {
                                let row = &padded[(c * ph + y + dy) * pw + x0..][..LANES + 2];
                                for dx in 0..3 {
                                    // SAFETY: row holds LANES + 2 floats and dx <= 2.
                                    let v = $loadu(row.as_ptr().add(dx));
                                    let wt = &weights[((b * ci + c) * 9 + dy * 3 + dx) * STEM_BLOCK..]
                                        [..STEM_BLOCK];
                                    for (a, &k) in acc.iter_mut().zip(wt) {
                                        *a = $fmadd($set1(k), v, *a);
                                    }
                                }
                            }
                        }
                        // acc[o] holds output channel b * STEM_BLOCK + o at LANES positions:
                        // through a tile into channels-last order.
                        for (o, a) in acc.iter().enumerate() {
                            let ch = b * STEM_BLOCK + o;
                            let v = finish(*a, $set1(scale[ch]), $set1(shift[ch]));
                            // SAFETY: tile holds LANES floats from o * LANES.
                            $storeu(tile.as_mut_ptr().add(o * LANES), v);
                        }
                        let channels = STEM_BLOCK.min(co - b * STEM_BLOCK);
                        for l in 0..LANES.min(w - x0) {
                            let pixel = &mut out[(x0 + l) * co + b * STEM_BLOCK..][..channels];
                            for (o, p) in pixel.iter_mut().enumerate() {
                                *p = tile[o * LANES + l];
                            }
                        }
                    }
                }
            }

            /// What every row of a layer reads.
            struct ConvPlan<'a> {
                ci: usize,
                co: usize,
                k: usize,
                s: usize,
                ow: usize,
                pw: usize,
                weights: &'a [f32],
                scale: &'a [f32],
                shift: &'a [f32],
            }

            /// Output row `oy` of a layer (channels-last) from the padded channels-last input.
            #[target_feature(enable = $features)]
            unsafe fn conv_row<const V: usize, const P: usize>(
                plan: &ConvPlan,
                padded: &[f32],
                oy: usize,
                out: &mut [f32],
            ) {
                let ConvPlan {
                    ci,
                    co,
                    k,
                    s,
                    ow,
                    pw,
                    weights,
                    scale,
                    shift,
                } = *plan;
                let block = V * LANES;
                let step = s * ci;
                for ox0 in (0..ow).step_by(P) {
                    let positions = P.min(ow - ox0);
                    for ob in (0..co).step_by(block) {
                        let mut acc = [[$zero(); V]; P];
                        for dy in 0..k {
                            for dx in 0..k {
                                let t = dy * k + dx;
                                // Input of position q at this tap: base + q * s * ci, channels on.
                                let base = ((oy * s + dy) * pw + ox0 * s + dx) * ci;
                                let inputs = &padded[base..base + (P - 1) * step + ci];
                                let tap = &weights[t * ci * co..(t + 1) * ci * co];
                                for c in 0..ci {
                                    let mut wv = [$zero(); V];
                                    for (j, r) in wv.iter_mut().enumerate() {
                                        // SAFETY: c * co + ob + (j + 1) * LANES <= ci * co.
                                        *r = $loadu(tap.as_ptr().add(c * co + ob + j * LANES));
                                    }
                                    for (q, a) in acc.iter_mut().enumerate() {
                                        // SAFETY: q * step + c < (P - 1) * step + ci.
                                        let xb = $set1(*inputs.get_unchecked(q * step + c));
                                        for (r, &wj) in a.iter_mut().zip(&wv) {
                                            *r = $fmadd(xb, wj, *r);
                                        }
                                    }
                                }
                            }
                        }
                        for (q, a) in acc.iter().enumerate().take(positions) {
                            let dst = &mut out[(ox0 + q) * co + ob..][..block];
                            for (j, r) in a.iter().enumerate() {
                                // SAFETY: scale and shift hold LANES floats from ob + j * LANES,
                                // dst from j * LANES.
                                let v = finish(
                                    *r,
                                    $loadu(scale.as_ptr().add(ob + j * LANES)),
                                    $loadu(shift.as_ptr().add(ob + j * LANES)),
                                );
                                $storeu(dst.as_mut_ptr().add(j * LANES), v);
                            }
                        }
                    }
                }
            }

            /// V registers of output channels times P output positions per block: P * V
            /// accumulators, V weight registers and a broadcast within the register file.
            #[target_feature(enable = $features)]
            pub unsafe fn conv<const V: usize, const P: usize>(
                layer: &Conv,
                x: &ChannelsLast,
            ) -> ChannelsLast {
                let [_, h, w] = x.sides;
                let (ci, co, k, s) = (layer.c_in, layer.c_out, layer.kernel[2], layer.stride);
                let out_sides = layer.out_sides(x.sides);
                let [_, oh, ow] = out_sides;
                let (scale, shift) = scale_shift(&layer.after, co);
                let (padded, _, pw) = zero_padded(&x.data, ci, [h, w], layer.padding, P * s, true);
                let mut out = scratch::zeroed(oh * ow * co);
                let plan = ConvPlan {
                    ci,
                    co,
                    k,
                    s,
                    ow,
                    pw,
                    weights: &layer.right,
                    scale: &scale,
                    shift: &shift,
                };
                for_each_row(&mut out, ow * co, |oy, row| {
                    // SAFETY: `conv` runs only where the CPU has these instructions.
                    unsafe { conv_row::<V, P>(&plan, &padded, oy, row) }
                });
                scratch::recycle(padded);
                ChannelsLast {
                    channels: co,
                    sides: out_sides,
                    data: out,
                }
            }
        }
    };
}

kernels!(
    avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    _mm256_max_ps
);
kernels!(
    avx512,
    "avx512f",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_max_ps
);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::layers::Conv;

    fn planes(channels: usize, sides: [usize; 3], seed: usize) -> Planes {
        let n = channels * sides.iter().product::<usize>();
        Planes {
            channels,
            sides,
            data: (0..n)
                .map(|i| (((i + seed) * 37 % 23) as f32 - 11.0) / 9.0)
                .collect(),
        }
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 13 % 17) as f32 - 8.0) / 10.0)
            .collect()
    }

    fn close(got: &ChannelsLast, want: &ChannelsLast, what: &str) {
        assert_eq!((got.channels, got.sides), (want.channels, want.sides), "{what}");
        for (i, (g, e)) in got.data.iter().zip(&want.data).enumerate() {
            assert!(
                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{what}: value {i}: {g} vs {e}"
            );
        }
    }

    /// Every kernel each CPU here can run (AVX2, and AVX-512 where present) against the
    /// unfold-and-product path, on widths that are not whole register blocks.
    #[test]
    fn direct_kernels_equal_the_unfold_path() {
        if !has_avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2/FMA, the direct kernels never run here");
            return;
        }
        for (ci, co, side) in [(3, 8, [1, 13, 11]), (3, 12, [1, 9, 21]), (1, 16, [1, 8, 8])] {
            let x = planes(ci, side, co);
            let stem = Conv::stem(values(co * ci * 9, ci), values(co, 3), ci, 2).unwrap();
            let want = stem.forward(&ChannelsLast::from_planes(&x)).unwrap();
            // SAFETY (each call): the CPU has the instruction set, checked before.
            close(
                &unsafe { avx2::stem(&stem, &x) },
                &want,
                &format!("avx2 stem {ci}->{co}"),
            );
            if has_avx512() {
                close(
                    &unsafe { avx512::stem(&stem, &x) },
                    &want,
                    &format!("avx512 stem {ci}->{co}"),
                );
            }
        }
        for (ci, co, side) in [(8, 16, [1, 14, 18]), (16, 32, [1, 10, 6]), (5, 8, [1, 7, 9])] {
            let x = ChannelsLast::from_planes(&planes(ci, side, co));
            let norm = [
                values(co, 1),
                values(co, 2),
                values(co, 3),
                values(co, 4).iter().map(|v| v.abs() + 0.5).collect(),
            ];
            let layer = Conv::halving(
                values(co * ci * 16, ci),
                ci,
                2,
                [&norm[0], &norm[1], &norm[2], &norm[3]],
            )
            .unwrap();
            let want = layer.forward(&x).unwrap();
            let what = format!("{ci}->{co} {side:?}");
            unsafe {
                close(
                    &avx2::conv::<1, 12>(&layer, &x),
                    &want,
                    &format!("avx2 x1 {what}"),
                );
                if co.is_multiple_of(16) {
                    close(&avx2::conv::<2, 6>(&layer, &x), &want, &format!("avx2 x2 {what}"));
                }
                if has_avx512() && co.is_multiple_of(16) {
                    close(
                        &avx512::conv::<1, 16>(&layer, &x),
                        &want,
                        &format!("avx512 x1 {what}"),
                    );
                }
                if has_avx512() && co.is_multiple_of(32) {
                    close(
                        &avx512::conv::<2, 8>(&layer, &x),
                        &want,
                        &format!("avx512 x2 {what}"),
                    );
                }
            }
            assert!(
                want.data.iter().any(|&v| v < 0.0),
                "{what}: LeakyReLU's negative side untested"
            );
        }
    }
}
