//! C's convolutions, 2D and 3D, computed directly where the CPU has AVX2 and FMA (or
//! AVX-512F): no unfolded matrix, no product through a general matrix library, no separate
//! pass for bias, BatchNorm and LeakyReLU.
//!
//! At 256x256 the unfold-and-product path spent 40 % of C's time on the stem (3 input
//! channels: a 27-wide matrix times an 8-wide one, too narrow for the matrix kernels, built
//! from 9-float copies) and a fifth on copying unfolded rows; over a 512 x 512 x 274 CT it ran
//! at 5 % of the CPU's FMA peak. Here every output value is a register that fused
//! multiply-adds accumulate straight from the (zero-padded) input:
//! - the stem reads planar input: 16 (AVX-512) or 8 output positions of a row per register,
//!   one register per output channel, one vector of inputs per tap and input channel, then
//!   an 8x8 transpose in registers into channels-last order;
//! - the other layers read channels-last features: a block of output positions times 16 or
//!   32 output channels, one broadcast input value per position, tap and input channel; for
//!   C's halvings (8, 16 or 32 input channels, stride 2) those are constants, so every read
//!   is a fixed offset from one pointer.
//!
//! A kernel computes one output plane from the input planes its kernel reaches in depth (one
//! for 2D), and writes its rows wherever the caller says: into the inside of the next layer's
//! padded plane, so that `plane_stream` runs a volume plane by plane with no copies between
//! layers. Where AVX2 is missing (or for a shape these kernels do not cover: output channels
//! not a multiple of 8, tanh heads) the general unfold-and-product path computes the layer;
//! the tests compare both with a direct loop. The sums are taken in another order than
//! libtorch's, so activations differ in the last bits (as between any two convolution
//! libraries): the edge-versus-libtorch comparisons count the code bits this flips.

use std::borrow::Cow;

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

/// The instruction set a kernel runs on, and for the other layers how many registers of
/// output channels (V) times how many output positions (P) one block accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Stem512,
    Stem2,
    /// AVX-512, V = 2, P = 8.
    Conv512x2,
    /// AVX-512, V = 1, P = 16.
    Conv512x1,
    /// AVX2, V = 2, P = 6.
    Conv2x2,
    /// AVX2, V = 1, P = 12.
    Conv2x1,
}

impl Kernel {
    /// The kernel for `layer` on this CPU, if one covers it.
    fn choose(layer: &Conv) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            if layer.is_stem() {
                return if has_avx512() {
                    Some(Kernel::Stem512)
                } else if has_avx2_fma() {
                    Some(Kernel::Stem2)
                } else {
                    None
                };
            }
            let cube = layer.kernel[0] == 1 || layer.kernel[0] == layer.kernel[2];
            let covered = cube
                && layer.kernel[1] == layer.kernel[2]
                && matches!(layer.after, After::BiasLeaky(_) | After::NormLeaky { .. });
            if !covered {
                return None;
            }
            let co = layer.c_out;
            if has_avx512() && co.is_multiple_of(32) {
                return Some(Kernel::Conv512x2);
            }
            if has_avx512() && co.is_multiple_of(16) {
                return Some(Kernel::Conv512x1);
            }
            if has_avx2_fma() && co.is_multiple_of(16) {
                return Some(Kernel::Conv2x2);
            }
            if has_avx2_fma() && co.is_multiple_of(8) {
                return Some(Kernel::Conv2x1);
            }
        }
        let _ = layer;
        None
    }

    /// Positions per block along a row (the extra zero columns a padded row needs so that a
    /// whole block reads in bounds, times the stride).
    fn positions(self) -> usize {
        match self {
            Kernel::Stem512 | Kernel::Conv512x1 => 16,
            Kernel::Stem2 => 8,
            Kernel::Conv512x2 => 8,
            Kernel::Conv2x2 => 6,
            Kernel::Conv2x1 => 12,
        }
    }
}

/// How one input plane of a layer is laid out for its direct kernel: zero-padded by `pad`
/// on every side (and `extra` more zero columns on the right), planar (the stem: `channels`
/// planes of `rows` x `cols`) or channels-last (every other layer: `rows` x `cols` positions
/// of `channels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlaneLayout {
    pub(crate) channels: usize,
    pub(crate) pad: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) planar: bool,
}

impl PlaneLayout {
    pub(crate) fn len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Where a producer writes this plane's content: row `y` (of the unpadded plane) at
    /// `(first_row + y) * stride + first_col`, channels-last.
    pub(crate) fn rows_at(&self) -> RowsAt {
        debug_assert!(
            !self.planar,
            "a planar plane is filled from the input, not by a layer"
        );
        RowsAt {
            first_row: self.pad,
            first_col: self.pad * self.channels,
            stride: self.cols * self.channels,
        }
    }

    /// `data` (channel-major planes of `[h, w]`, or channels-last when not planar) copied
    /// into a zeroed padded plane.
    fn fill(&self, data: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
        let mut padded = scratch::zeroed(self.len());
        let p = self.pad;
        if self.planar {
            for (c, plane) in data.chunks_exact(h * w).enumerate() {
                for (y, row) in plane.chunks_exact(w).enumerate() {
                    padded[(c * self.rows + y + p) * self.cols + p..][..w].copy_from_slice(row);
                }
            }
        } else {
            let ch = self.channels;
            for (y, row) in data.chunks_exact(w * ch).enumerate() {
                padded[((y + p) * self.cols + p) * ch..][..w * ch].copy_from_slice(row);
            }
        }
        padded
    }
}

/// Where a layer writes its output rows (channels-last): output row `oy` starts at
/// `(first_row + oy) * stride + first_col`, so that a layer can write straight into the
/// inside of the next layer's padded plane, or into a bare plane (all offsets 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowsAt {
    pub(crate) first_row: usize,
    pub(crate) first_col: usize,
    pub(crate) stride: usize,
}

impl RowsAt {
    /// Rows of `len` values one after another.
    pub(crate) fn bare(len: usize) -> RowsAt {
        RowsAt {
            first_row: 0,
            first_col: 0,
            stride: len,
        }
    }
}

/// One layer ready for its direct kernel on this CPU: the kernel, the weights in the order it
/// reads them, the per-channel scale and shift.
#[derive(Debug)]
pub(crate) struct DirectLayer<'a> {
    kernel: Kernel,
    ci: usize,
    co: usize,
    /// Kernel extent along depth (1 for 2D) and in-plane.
    kd: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// The stem: [block][c][dz][tap][o in block], zero beyond C_out; the other layers read
    /// the layer's own (tap, c, o) order, borrowed (no copy per input).
    weights: Cow<'a, [f32]>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl<'a> DirectLayer<'a> {
    /// `None` where no direct kernel covers `layer` on this CPU.
    pub(crate) fn new(layer: &'a Conv) -> Option<DirectLayer<'a>> {
        Some(DirectLayer::with(layer, Kernel::choose(layer)?))
    }

    /// `layer` on the given kernel (which must cover it and run on this CPU).
    fn with(layer: &'a Conv, kernel: Kernel) -> DirectLayer<'a> {
        let (ci, co) = (layer.c_in, layer.c_out);
        let kd = layer.kernel[0];
        let weights = if matches!(kernel, Kernel::Stem512 | Kernel::Stem2) {
            let blocks = co.div_ceil(STEM_BLOCK);
            let taps = kd * 9;
            let mut w = vec![0f32; blocks * ci * taps * STEM_BLOCK];
            for o in 0..co {
                for c in 0..ci {
                    for t in 0..taps {
                        w[(((o / STEM_BLOCK) * ci + c) * taps + t) * STEM_BLOCK + o % STEM_BLOCK] =
                            layer.right[(t * ci + c) * co + o];
                    }
                }
            }
            Cow::Owned(w)
        } else {
            Cow::Borrowed(&layer.right[..])
        };
        let (scale, shift) = scale_shift(&layer.after, co);
        DirectLayer {
            kernel,
            ci,
            co,
            kd,
            k: layer.kernel[2],
            stride: layer.stride,
            pad: layer.padding,
            weights,
            scale,
            shift,
        }
    }

    /// Input planes one output plane reads (the kernel's depth).
    #[cfg(test)]
    pub(crate) fn depth(&self) -> usize {
        self.kd
    }

    /// The padded layout of an input plane of `[h, w]`.
    pub(crate) fn layout(&self, [h, w]: [usize; 2]) -> PlaneLayout {
        let planar = matches!(self.kernel, Kernel::Stem512 | Kernel::Stem2);
        PlaneLayout {
            channels: self.ci,
            pad: self.pad,
            rows: h + 2 * self.pad,
            cols: w + 2 * self.pad + self.kernel.positions() * self.stride,
            planar,
        }
    }

    /// Output sides of a plane of `[h, w]`.
    pub(crate) fn out_sides(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        [h, w].map(|s| (s + 2 * self.pad - self.k) / self.stride + 1)
    }

    /// One output plane from the `depth()` input planes it reads (laid out as `layout(in_sides)`;
    /// a zero plane where the input's depth padding is), written at `at` in `out`.
    pub(crate) fn plane(&self, inputs: &[&[f32]], in_sides: [usize; 2], out: &mut [f32], at: RowsAt) {
        assert_eq!(inputs.len(), self.kd, "one input plane per kernel plane");
        let layout = self.layout(in_sides);
        assert!(
            inputs.iter().all(|p| p.len() >= layout.len()),
            "input planes of the layout"
        );
        let [oh, ow] = self.out_sides(in_sides);
        assert!(
            oh == 0 || (at.first_row + oh - 1) * at.stride + at.first_col + ow * self.co <= out.len(),
            "output rows inside the buffer"
        );
        let plan = Plan {
            layer: self,
            layout,
            in_sides,
            out_sides: [oh, ow],
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY (each call): `Kernel::choose` picked the kernel only where the CPU has its
        // instructions; the asserts above bound every read and write the kernels make.
        unsafe {
            match self.kernel {
                Kernel::Stem512 => avx512::stem(&plan, inputs, out, at),
                Kernel::Stem2 => avx2::stem(&plan, inputs, out, at),
                Kernel::Conv512x2 => avx512::conv::<2, 8>(&plan, inputs, out, at),
                Kernel::Conv512x1 => avx512::conv::<1, 16>(&plan, inputs, out, at),
                Kernel::Conv2x2 => avx2::conv::<2, 6>(&plan, inputs, out, at),
                Kernel::Conv2x1 => avx2::conv::<1, 12>(&plan, inputs, out, at),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no direct kernel is chosen off x86-64: {plan:?}");
    }

    /// A whole 2D input (depth 1) through this layer: padded, then one plane.
    fn image(&self, data: &[f32], [h, w]: [usize; 2]) -> ChannelsLast {
        let layout = self.layout([h, w]);
        let padded = layout.fill(data, [h, w]);
        let [oh, ow] = self.out_sides([h, w]);
        let mut out = scratch::zeroed(oh * ow * self.co);
        self.plane(&[&padded], [h, w], &mut out, RowsAt::bare(ow * self.co));
        scratch::recycle(padded);
        ChannelsLast {
            channels: self.co,
            sides: [1, oh, ow],
            data: out,
        }
    }
}

/// What every row of one output plane reads.
#[derive(Debug)]
struct Plan<'a> {
    layer: &'a DirectLayer<'a>,
    layout: PlaneLayout,
    in_sides: [usize; 2],
    out_sides: [usize; 2],
}

/// The stem (3x3, stride 1, bias, LeakyReLU) of an image's planes; `None` where no direct
/// kernel covers it on this CPU.
pub fn stem(stem: &Conv, x: &Planes) -> Option<ChannelsLast> {
    if !(stem.is_stem() && stem.kernel[0] == 1 && x.sides[0] == 1) {
        return None;
    }
    let [_, h, w] = x.sides;
    Some(DirectLayer::new(stem)?.image(&x.data, [h, w]))
}

/// A 2D layer with LeakyReLU (after a bias or BatchNorm) on channels-last features, when its
/// output channels are a multiple of a register's width; `None` otherwise or without AVX2/FMA.
pub fn conv(layer: &Conv, x: &ChannelsLast) -> Option<ChannelsLast> {
    if layer.is_stem() || layer.kernel[0] != 1 || x.sides[0] != 1 {
        return None;
    }
    let [_, h, w] = x.sides;
    Some(DirectLayer::new(layer)?.image(&x.data, [h, w]))
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// AVX-512F, unless `ORCHESTRA_EDGE_NO_AVX512` is set (to measure the AVX2 kernels, which
/// gateways without AVX-512 run, on a machine that has it).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("ORCHESTRA_EDGE_NO_AVX512").is_none()
    })
}

/// Runs `row` on every output row (`rows` of `len` floats placed at `at` in `out`): in
/// parallel on rayon's threads, or on this thread alone when the pool has one (handing the
/// rows to a single worker on another core would only move the layer's data between caches:
/// 30 % slower).
fn for_each_row(
    out: &mut [f32],
    at: RowsAt,
    rows: usize,
    len: usize,
    row: impl Fn(usize, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    if rows == 0 {
        return;
    }
    let start = at.first_row * at.stride;
    let span = &mut out[start..start + (rows - 1) * at.stride + at.first_col + len];
    let one = |(i, r): (usize, &mut [f32])| row(i, &mut r[at.first_col..at.first_col + len]);
    if rayon::current_num_threads() == 1 {
        span.chunks_mut(at.stride).enumerate().for_each(one);
    } else {
        span.par_chunks_mut(at.stride).enumerate().for_each(one);
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

/// The kernels for one instruction set: its register type, width and intrinsics. One body for
/// AVX2 (8 f32s per register, 16 registers) and AVX-512 (16 per register, 32 registers).
macro_rules! kernels {
    ($isa:ident, $features:literal, $reg:ty, $lanes:literal, $zero:ident, $set1:ident, $loadu:ident,
     $storeu:ident, $fmadd:ident, $add:ident, $mul:ident, $max:ident, $transpose:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $isa {
            use std::arch::x86_64::*;

            use super::{for_each_row, Plan, RowsAt, STEM_BLOCK};
            use crate::layers::LEAKY_SLOPE;

            /// f32s per register.
            const LANES: usize = $lanes;

            /// scale * v + shift, then LeakyReLU, in f32 as the unfold path computes it.
            #[inline(always)]
            unsafe fn finish(v: $reg, scale: $reg, shift: $reg) -> $reg {
                let y = $add($mul(v, scale), shift);
                $max(y, $mul(y, $set1(LEAKY_SLOPE)))
            }

            /// Registers of LANES output positions, one per output channel of a block of
            /// STEM_BLOCK, accumulated over the taps of every input plane.
            ///
            /// # Safety
            /// The CPU has these instructions; the planes and `out` hold what `plan` says.
            #[target_feature(enable = $features)]
            pub unsafe fn stem(plan: &Plan, inputs: &[&[f32]], out: &mut [f32], at: RowsAt) {
                let [oh, ow] = plan.out_sides;
                for_each_row(out, at, oh, ow * plan.layer.co, |y, row| {
                    // SAFETY: `stem` runs only where the CPU has these instructions.
                    unsafe { stem_row(plan, inputs, y, row) }
                });
            }

            /// Output row `y` of the stem (channels-last) from the padded planes.
            #[target_feature(enable = $features)]
            unsafe fn stem_row(plan: &Plan, inputs: &[&[f32]], y: usize, out: &mut [f32]) {
                let l = plan.layer;
                let (ci, co, kd) = (l.ci, l.co, l.kd);
                let (ph, pw) = (plan.layout.rows, plan.layout.cols);
                let w = plan.in_sides[1];
                let mut tile = [0f32; STEM_BLOCK * LANES];
                for x0 in (0..w).step_by(LANES) {
                    for b in 0..co.div_ceil(STEM_BLOCK) {
                        let mut acc = [$zero(); STEM_BLOCK];
                        for (dz, plane) in inputs.iter().enumerate() {
                            for c in 0..ci {
                                for dy in 0..3 {
                                    let row = &plane[(c * ph + y + dy) * pw + x0..][..LANES + 2];
                                    for dx in 0..3 {
                                        // SAFETY: row holds LANES + 2 floats and dx <= 2.
                                        let v = $loadu(row.as_ptr().add(dx));
                                        let t = ((b * ci + c) * kd + dz) * 9 + dy * 3 + dx;
                                        let wt = &l.weights[t * STEM_BLOCK..][..STEM_BLOCK];
                                        for (a, &k) in acc.iter_mut().zip(wt) {
                                            *a = $fmadd($set1(k), v, *a);
                                        }
                                    }
                                }
                            }
                        }
                        // acc[o] holds output channel b * STEM_BLOCK + o at LANES positions:
                        // transposed in registers into channels-last order where the block is
                        // whole, else through a tile.
                        let whole = x0 + LANES <= w && (b + 1) * STEM_BLOCK <= co;
                        if whole {
                            let mut v = [$zero(); STEM_BLOCK];
                            for (o, (r, a)) in v.iter_mut().zip(&acc).enumerate() {
                                let ch = b * STEM_BLOCK + o;
                                *r = finish(*a, $set1(l.scale[ch]), $set1(l.shift[ch]));
                            }
                            let dst = &mut out[x0 * co + b * STEM_BLOCK..][..(LANES - 1) * co + STEM_BLOCK];
                            // SAFETY: dst holds STEM_BLOCK floats from q * co for every q < LANES.
                            super::$transpose(&v, dst.as_mut_ptr(), co);
                            continue;
                        }
                        for (o, a) in acc.iter().enumerate() {
                            let ch = b * STEM_BLOCK + o;
                            let v = finish(*a, $set1(l.scale[ch]), $set1(l.shift[ch]));
                            // SAFETY: tile holds LANES floats from o * LANES.
                            $storeu(tile.as_mut_ptr().add(o * LANES), v);
                        }
                        let channels = STEM_BLOCK.min(co - b * STEM_BLOCK);
                        for q in 0..LANES.min(w - x0) {
                            let pixel = &mut out[(x0 + q) * co + b * STEM_BLOCK..][..channels];
                            for (o, p) in pixel.iter_mut().enumerate() {
                                *p = tile[o * LANES + q];
                            }
                        }
                    }
                }
            }

            /// V registers of output channels times P output positions per block: P * V
            /// accumulators, V weight registers and a broadcast within the register file.
            ///
            /// # Safety
            /// The CPU has these instructions; the planes and `out` hold what `plan` says.
            #[target_feature(enable = $features)]
            pub unsafe fn conv<const V: usize, const P: usize>(
                plan: &Plan,
                inputs: &[&[f32]],
                out: &mut [f32],
                at: RowsAt,
            ) {
                let [oh, ow] = plan.out_sides;
                // C's halvings' channel counts and stride as constants: every input read is
                // then a constant offset from one pointer (no address registers spilled),
                // and the loop over channels unrolls.
                let row: unsafe fn(&Plan, &[&[f32]], usize, &mut [f32]) =
                    match (plan.layer.ci, plan.layer.stride) {
                        (8, 2) => conv_row::<V, P, 8, 2>,
                        (16, 2) => conv_row::<V, P, 16, 2>,
                        (32, 2) => conv_row::<V, P, 32, 2>,
                        _ => conv_row::<V, P, 0, 0>,
                    };
                for_each_row(out, at, oh, ow * plan.layer.co, |oy, out_row| {
                    // SAFETY: `conv` runs only where the CPU has these instructions.
                    unsafe { row(plan, inputs, oy, out_row) }
                });
            }

            /// Output row `oy` of a layer (channels-last) from the padded channels-last planes.
            ///
            /// CI and S, where not 0, are the layer's input channels and stride.
            #[target_feature(enable = $features)]
            unsafe fn conv_row<const V: usize, const P: usize, const CI: usize, const S: usize>(
                plan: &Plan,
                inputs: &[&[f32]],
                oy: usize,
                out: &mut [f32],
            ) {
                let l = plan.layer;
                let ci = if CI > 0 { CI } else { l.ci };
                let s = if S > 0 { S } else { l.stride };
                let (co, k) = (l.co, l.k);
                let pw = plan.layout.cols;
                let ow = plan.out_sides[1];
                let block = V * LANES;
                let step = s * ci;
                for ox0 in (0..ow).step_by(P) {
                    let positions = P.min(ow - ox0);
                    for ob in (0..co).step_by(block) {
                        let mut acc = [[$zero(); V]; P];
                        for (dz, plane) in inputs.iter().enumerate() {
                            for dy in 0..k {
                                for dx in 0..k {
                                    let t = (dz * k + dy) * k + dx;
                                    // Input of position q at this tap: base + q * s * ci,
                                    // channels on.
                                    let base = ((oy * s + dy) * pw + ox0 * s + dx) * ci;
                                    let inputs = &plane[base..base + (P - 1) * step + ci];
                                    let tap = &l.weights[t * ci * co..(t + 1) * ci * co];
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
                        }
                        for (q, a) in acc.iter().enumerate().take(positions) {
                            let dst = &mut out[(ox0 + q) * co + ob..][..block];
                            for (j, r) in a.iter().enumerate() {
                                // SAFETY: scale and shift hold LANES floats from ob + j * LANES,
                                // dst from j * LANES.
                                let v = finish(
                                    *r,
                                    $loadu(l.scale.as_ptr().add(ob + j * LANES)),
                                    $loadu(l.shift.as_ptr().add(ob + j * LANES)),
                                );
                                $storeu(dst.as_mut_ptr().add(j * LANES), v);
                            }
                        }
                    }
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
    _mm256_max_ps,
    channels_last_256
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
    _mm512_max_ps,
    channels_last_512
);

/// Eight registers of 8 positions each (one register per channel) stored channels-last: the
/// 8 channels of position q at `out + q * stride`. An 8x8 transpose in registers (pairs of
/// channels, then quadruples, then halves), in place of 64 scalar moves.
///
/// # Safety
/// The CPU has AVX2; `out` is valid for 8 floats at every `q * stride`, q < 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channels_last_256(v: &[std::arch::x86_64::__m256; 8], out: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    // Within each 128-bit half: [a0 b0 a1 b1], [a2 b2 a3 b3] for channel pairs.
    let p: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * (i / 2)], v[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // q[r][g]: channels 4g..4g+4 of positions r (low half) and 4 + r (high half).
    let quad = |lo: __m256, hi: __m256, high: bool| {
        let (l, h) = (_mm256_castps_pd(lo), _mm256_castps_pd(hi));
        _mm256_castpd_ps(if high {
            _mm256_unpackhi_pd(l, h)
        } else {
            _mm256_unpacklo_pd(l, h)
        })
    };
    for r in 0..4 {
        let (pair, high) = (r / 2, r % 2 == 1);
        let g0 = quad(p[pair], p[2 + pair], high);
        let g1 = quad(p[4 + pair], p[6 + pair], high);
        _mm256_storeu_ps(out.add(r * stride), _mm256_permute2f128_ps(g0, g1, 0x20));
        _mm256_storeu_ps(out.add((4 + r) * stride), _mm256_permute2f128_ps(g0, g1, 0x31));
    }
}

/// Eight registers of 16 positions each (one register per channel) stored channels-last, as
/// `channels_last_256` with 16 positions: the same pairs and quadruples within each 128-bit
/// lane, then the lanes of the two quadruples of channels put side by side.
///
/// # Safety
/// The CPU has AVX-512F; `out` is valid for 8 floats at every `q * stride`, q < 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channels_last_512(v: &[std::arch::x86_64::__m512; 8], out: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    let p: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * (i / 2)], v[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let quad = |lo: __m512, hi: __m512, high: bool| {
        let (l, h) = (_mm512_castps_pd(lo), _mm512_castps_pd(hi));
        _mm512_castpd_ps(if high {
            _mm512_unpackhi_pd(l, h)
        } else {
            _mm512_unpacklo_pd(l, h)
        })
    };
    for r in 0..4 {
        let (pair, high) = (r / 2, r % 2 == 1);
        // Lane l of g0 (g1): channels 0-3 (4-7) of position 4l + r.
        let g0 = quad(p[pair], p[2 + pair], high);
        let g1 = quad(p[4 + pair], p[6 + pair], high);
        // [g0 l0, g0 l1, g1 l0, g1 l1] -> [g0 l0, g1 l0, g0 l1, g1 l1]: positions r and 4 + r.
        let front = _mm512_shuffle_f32x4::<0b01_00_01_00>(g0, g1);
        let low = _mm512_shuffle_f32x4::<0b11_01_10_00>(front, front);
        // [g0 l2, g0 l3, g1 l2, g1 l3] -> [g0 l2, g1 l2, g0 l3, g1 l3]: positions 8 + r, 12 + r.
        let back = _mm512_shuffle_f32x4::<0b11_10_11_10>(g0, g1);
        let high_lanes = _mm512_shuffle_f32x4::<0b11_01_10_00>(back, back);
        for (k, reg) in [(0, low), (2, high_lanes)] {
            let halves = _mm512_castps_pd(reg);
            _mm256_storeu_ps(out.add((4 * k + r) * stride), _mm512_castps512_ps256(reg));
            _mm256_storeu_ps(
                out.add((4 * (k + 1) + r) * stride),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(halves)),
            );
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod tests {
    use super::*;
    use crate::layers::Conv;

    pub(crate) fn planes(channels: usize, sides: [usize; 3], seed: usize) -> Planes {
        let n = channels * sides.iter().product::<usize>();
        Planes {
            channels,
            sides,
            data: (0..n)
                .map(|i| (((i + seed) * 37 % 23) as f32 - 11.0) / 9.0)
                .collect(),
        }
    }

    pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 13 % 17) as f32 - 8.0) / 10.0)
            .collect()
    }

    pub(crate) fn close(got: &ChannelsLast, want: &ChannelsLast, what: &str) {
        assert_eq!((got.channels, got.sides), (want.channels, want.sides), "{what}");
        for (i, (g, e)) in got.data.iter().zip(&want.data).enumerate() {
            assert!(
                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{what}: value {i}: {g} vs {e}"
            );
        }
    }

    /// A halving (4^d, stride 2, BatchNorm away from the identity, LeakyReLU).
    pub(crate) fn halving(ci: usize, co: usize, dims: usize) -> Conv {
        let norm = [
            values(co, 1),
            values(co, 2),
            values(co, 3),
            values(co, 4).iter().map(|v| v.abs() + 0.5).collect(),
        ];
        let taps = if dims == 3 { 64 } else { 16 };
        Conv::halving(
            values(co * ci * taps, ci),
            ci,
            dims,
            [&norm[0], &norm[1], &norm[2], &norm[3]],
        )
        .unwrap()
    }

    /// The kernels this CPU runs that cover `layer`.
    fn kernels_for(layer: &Conv) -> Vec<Kernel> {
        let (avx2, avx512) = (has_avx2_fma(), has_avx512());
        let co = layer.c_out;
        if layer.is_stem() {
            return [(Kernel::Stem2, avx2), (Kernel::Stem512, avx512)]
                .into_iter()
                .filter_map(|(k, ok)| ok.then_some(k))
                .collect();
        }
        [
            (Kernel::Conv2x1, avx2 && co.is_multiple_of(8)),
            (Kernel::Conv2x2, avx2 && co.is_multiple_of(16)),
            (Kernel::Conv512x1, avx512 && co.is_multiple_of(16)),
            (Kernel::Conv512x2, avx512 && co.is_multiple_of(32)),
        ]
        .into_iter()
        .filter_map(|(k, ok)| ok.then_some(k))
        .collect()
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
            let kernels = kernels_for(&stem);
            assert!(!kernels.is_empty());
            for kernel in kernels {
                let got = DirectLayer::with(&stem, kernel).image(&x.data, [side[1], side[2]]);
                close(&got, &want, &format!("{kernel:?} stem {ci}->{co}"));
            }
        }
        for (ci, co, side) in [(8, 16, [1, 14, 18]), (16, 32, [1, 10, 6]), (5, 8, [1, 7, 9])] {
            let x = ChannelsLast::from_planes(&planes(ci, side, co));
            let layer = halving(ci, co, 2);
            let want = layer.forward(&x).unwrap();
            for kernel in kernels_for(&layer) {
                let got = DirectLayer::with(&layer, kernel).image(&x.data, [side[1], side[2]]);
                close(&got, &want, &format!("{kernel:?} {ci}->{co} {side:?}"));
            }
            assert!(
                want.data.iter().any(|&v| v < 0.0),
                "{ci}->{co}: LeakyReLU's negative side untested"
            );
        }
    }

    /// A 3D layer's output plane from the input planes it reads (zero planes beyond the depth),
    /// written into the inside of a padded plane, equals that plane of the unfold path, for
    /// every kernel this CPU runs; the padding around stays zero.
    #[test]
    fn direct_kernels_compute_3d_planes_into_padded_rows() {
        if !has_avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2/FMA, the direct kernels never run here");
            return;
        }
        let stem = Conv::stem(values(12 * 27, 5), values(12, 3), 1, 3).unwrap();
        let layers = [
            (stem, 1, [5, 9, 19]),
            (halving(8, 16, 3), 8, [6, 10, 14]),
            (halving(16, 32, 3), 16, [4, 6, 6]),
        ];
        for (layer, ci, sides) in layers {
            let x = planes(ci, sides, 7);
            let want = layer.forward(&ChannelsLast::from_planes(&x)).unwrap();
            let (_, s, p) = layer.axis(0);
            let [d, h, w] = sides;
            let [_, oh, ow] = want.sides;
            let plane = h * w;
            for kernel in kernels_for(&layer) {
                let direct = DirectLayer::with(&layer, kernel);
                let layout = direct.layout([h, w]);
                let input: Vec<Vec<f32>> = (0..d)
                    .map(|z| {
                        let data: Vec<f32> = if layout.planar {
                            (0..ci)
                                .flat_map(|c| x.data[(c * d + z) * plane..][..plane].to_vec())
                                .collect()
                        } else {
                            ChannelsLast::from_planes(&x).data[z * plane * ci..][..plane * ci].to_vec()
                        };
                        layout.fill(&data, [h, w])
                    })
                    .collect();
                let zero = vec![0f32; layout.len()];
                // The next layer's padded layout: 1 around, 3 extra columns.
                let next = PlaneLayout {
                    channels: layer.c_out,
                    pad: 1,
                    rows: oh + 2,
                    cols: ow + 5,
                    planar: false,
                };
                for oz in 0..want.sides[0] {
                    let reads: Vec<&[f32]> = (0..direct.depth())
                        .map(|dz| match (oz * s + dz).checked_sub(p).filter(|&z| z < d) {
                            Some(z) => &input[z][..],
                            None => &zero[..],
                        })
                        .collect();
                    let mut out = vec![0f32; next.len()];
                    direct.plane(&reads, [h, w], &mut out, next.rows_at());
                    let co = layer.c_out;
                    for y in 0..next.rows {
                        for xx in 0..next.cols {
                            let got = &out[(y * next.cols + xx) * co..][..co];
                            let inside = (1..=oh).contains(&y) && (1..=ow).contains(&xx);
                            if !inside {
                                assert!(got.iter().all(|&v| v == 0.0), "{kernel:?}: padding written");
                                continue;
                            }
                            let at = ((oz * oh + y - 1) * ow + xx - 1) * co;
                            for (o, g) in got.iter().enumerate() {
                                let e = want.data[at + o];
                                assert!(
                                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                    "{kernel:?} {sides:?}: plane {oz} ({y}, {xx}) channel {o}: {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
