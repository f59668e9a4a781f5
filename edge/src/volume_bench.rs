//! `orchestra-edge bench-volume`: C over one whole scan on the edge, plane by plane on the
//! direct kernels, on each thread count asked for, timed per layer and set against this CPU's
//! measured FMA peak on the same threads; optionally the tiled unfold path (what CPUs without
//! the direct kernels run) on the same scan, for the speed-up and to check that both give the
//! same code.

use std::time::Instant;

use orchestra_codec::CodeShape;

use crate::fma_peak::{self, FmaPeak};
use crate::model_file::{EdgeError, EdgeModel};
use crate::plane_stream::LayerWork;
use crate::preparation::pad;
use crate::tiling::Tiling;
use crate::volume::Volume;
use crate::volume_encode::PreparedScan;

/// One timed run of C over the scan.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRun {
    /// "plane stream (direct kernels)" or "tiles (unfold)".
    pub path: String,
    pub threads: usize,
    /// C from the prepared scan to the code's bits (binarization included, entropy coding not).
    pub seconds: f64,
    pub flops: f64,
    pub gflops_per_second: f64,
    /// Of the FMA peak measured on as many threads.
    pub share_of_peak: f64,
    pub peak: Option<FmaPeak>,
    /// Per layer, plane stream only.
    pub layers: Vec<LayerWork>,
    /// Work spent on tile halos (recomputed borders) as a share of all work: 0 for the stream.
    pub halo_share: f64,
    /// Code bits that differ from the first run's.
    pub bits_differing_from_first: usize,
    /// The process's peak resident memory after this run (MB): a high-water mark over the
    /// whole process, so runs after a larger one repeat its value.
    pub peak_rss_mb: f64,
}

/// The whole benchmark.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBench {
    pub scan_sides: [usize; 3],
    /// The sides C runs on (prepared, padded to whole code cells and the patch).
    pub input_sides: [usize; 3],
    pub code_bits: usize,
    pub stream_bytes: usize,
    pub prepare_seconds: f64,
    pub runs: Vec<VolumeRun>,
}

/// The process's peak resident set (VmHWM) in MB, where /proc has it.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark on `scan` with each of `threads`; `tiles` adds the tiled unfold path on
/// the last thread count. `progress` gets a line per finished stage.
pub fn bench_volume(
    model: &EdgeModel,
    scan: Volume,
    threads: &[usize],
    tiles: bool,
    progress: impl Fn(&str),
) -> Result<VolumeBench, EdgeError> {
    let scan_sides = scan.geometry.sides;
    let started = Instant::now();
    let prepared = model.prepare_scan(scan)?;
    let (sides, input_sides) = (prepared.sides, prepared.input_sides);
    let prepare_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "prepared {scan_sides:?} -> {sides:?}, C runs on {input_sides:?} ({prepare_seconds:.2} s)"
    ));
    let input = Prepared {
        model,
        scan: &prepared,
    };
    let mut runs: Vec<VolumeRun> = Vec::new();
    let mut first_bits: Option<Vec<i8>> = None;
    let mut stream_bytes = 0;
    for &t in threads {
        let Some((mut run, shape, bits)) = input.streamed(t)? else {
            progress("the direct kernels do not cover this model on this CPU: no plane stream");
            break;
        };
        if stream_bytes == 0 {
            stream_bytes = model.codec.encode(&shape, &bits)?.len();
        }
        run.bits_differing_from_first = differing(&bits, &mut first_bits);
        progress(&format!(
            "plane stream, {t} thread(s): {:.2} s, {:.1} GFLOP/s ({:.0} % of the measured peak), peak RSS {:.0} MB",
            run.seconds,
            run.gflops_per_second,
            100.0 * run.share_of_peak,
            run.peak_rss_mb
        ));
        runs.push(run);
    }
    if tiles {
        let (mut run, bits) = input.tiled(threads.last().copied().unwrap_or(1))?;
        run.bits_differing_from_first = differing(&bits, &mut first_bits);
        progress(&format!(
            "tiles (unfold), {} thread(s): {:.2} s, {:.1} GFLOP/s, halo {:.0} % of the work",
            run.threads,
            run.seconds,
            run.gflops_per_second,
            100.0 * run.halo_share
        ));
        runs.push(run);
    }
    Ok(VolumeBench {
        scan_sides,
        input_sides,
        code_bits: first_bits.map_or(0, |b| b.len()),
        stream_bytes,
        prepare_seconds,
        runs,
    })
}

/// Bits that differ from the first run's (which this records when it is the first).
fn differing(bits: &[i8], first: &mut Option<Vec<i8>>) -> usize {
    match first {
        Some(f) => f.iter().zip(bits).filter(|(a, b)| a != b).count(),
        None => {
            *first = Some(bits.to_vec());
            0
        }
    }
}

/// A prepared scan and the model that codes it.
struct Prepared<'a> {
    model: &'a EdgeModel,
    scan: &'a PreparedScan,
}

impl Prepared<'_> {
    /// The plane stream on `threads` threads, timed; `None` where it does not cover the model.
    #[allow(clippy::type_complexity)]
    fn streamed(&self, threads: usize) -> Result<Option<(VolumeRun, CodeShape, Vec<i8>)>, EdgeError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        let peak = fma_peak::measure(threads, 3);
        let started = Instant::now();
        let Some(streamed) = pool.install(|| {
            self.model
                .code_streamed(&self.scan.voxels, self.scan.sides, self.scan.input_sides)
        }) else {
            return Ok(None);
        };
        let (shape, bits, layers) = streamed?;
        let seconds = started.elapsed().as_secs_f64();
        let flops: f64 = layers.iter().map(|l| l.flops).sum();
        let run = run(
            "plane stream (direct kernels)",
            threads,
            seconds,
            flops,
            peak,
            layers,
            0.0,
        );
        Ok(Some((run, shape, bits)))
    }

    /// The tiled unfold path on `threads` threads, timed, with its halo's share of the work.
    fn tiled(&self, threads: usize) -> Result<(VolumeRun, Vec<i8>), EdgeError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        let f = self.model.downsample();
        let PreparedScan {
            voxels,
            sides,
            input_sides,
        } = self.scan;
        let planes = crate::layers::Planes {
            channels: 1,
            sides: *input_sides,
            data: pad(voxels, *sides, *input_sides),
        };
        let tile = Tiling::default()
            .tile_cells(*input_sides, f)
            .unwrap_or(input_sides.map(|s| s / f));
        let started = Instant::now();
        let (_, bits) = pool.install(|| self.model.code_tiled_unfolded(&planes, tile))?;
        let seconds = started.elapsed().as_secs_f64();
        let work = self.model.tiled_work(*input_sides, tile);
        let peak = fma_peak::measure(threads, 3);
        let halo = 1.0 - work.kept / work.total;
        Ok((
            run(
                "tiles (unfold)",
                threads,
                seconds,
                work.total,
                peak,
                Vec::new(),
                halo,
            ),
            bits,
        ))
    }
}

/// One run's row, its rates computed and the process's peak memory read now.
fn run(
    path: &str,
    threads: usize,
    seconds: f64,
    flops: f64,
    peak: Option<FmaPeak>,
    layers: Vec<LayerWork>,
    halo_share: f64,
) -> VolumeRun {
    let rate = flops / seconds / 1e9;
    VolumeRun {
        path: path.into(),
        threads,
        seconds,
        flops,
        gflops_per_second: rate,
        share_of_peak: peak.as_ref().map_or(0.0, |p| rate / p.gflops_per_second),
        peak,
        layers,
        halo_share,
        bits_differing_from_first: 0,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The benchmark as a Markdown table.
pub fn table(b: &VolumeBench) -> String {
    let mut s = format!(
        "C over a {} x {} x {} scan (runs on {} x {} x {}): {} code bits, {} bytes coded\n\n",
        b.scan_sides[0],
        b.scan_sides[1],
        b.scan_sides[2],
        b.input_sides[0],
        b.input_sides[1],
        b.input_sides[2],
        b.code_bits,
        b.stream_bytes
    );
    s += "| path | threads | seconds | GFLOP/s | measured peak GFLOP/s | share of peak | halo share | bits differing | peak RSS MB |\n";
    s += "|---|---|---|---|---|---|---|---|---|\n";
    for r in &b.runs {
        s += &format!(
            "| {} | {} | {:.2} | {:.1} | {} | {:.0} % | {:.0} % | {} | {:.0} |\n",
            r.path,
            r.threads,
            r.seconds,
            r.gflops_per_second,
            r.peak.as_ref().map_or("-".into(), |p| format!(
                "{:.1} ({})",
                p.gflops_per_second, p.instructions
            )),
            100.0 * r.share_of_peak,
            100.0 * r.halo_share,
            r.bits_differing_from_first,
            r.peak_rss_mb
        );
    }
    for r in b.runs.iter().filter(|r| !r.layers.is_empty()) {
        s += &format!("\nper layer, plane stream, {} thread(s):\n\n", r.threads);
        s += "| layer | C in -> out | stride | GFLOP | seconds | GFLOP/s | share of peak |\n|---|---|---|---|---|---|---|\n";
        let peak = r.peak.as_ref().map_or(0.0, |p| p.gflops_per_second);
        for l in &r.layers {
            let share = if peak > 0.0 {
                l.gflops_per_second() / peak
            } else {
                0.0
            };
            s += &format!(
                "| {}x{}x{} | {} -> {} | {} | {:.1} | {:.3} | {:.1} | {:.0} % |\n",
                l.kernel[0],
                l.kernel[1],
                l.kernel[2],
                l.c_in,
                l.c_out,
                l.stride,
                l.flops / 1e9,
                l.seconds,
                l.gflops_per_second(),
                100.0 * share
            );
        }
    }
    s
}
