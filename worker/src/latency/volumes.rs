//! The paper's Table 2 at volume scale: one whole scan (a 512 x 512 x N CT) from the edge to
//! its label volume in the cloud. Orchestra's row: the edge's pure-Rust C (tiled) and entropy
//! coder on one core and on every core, the stream's transmission at a stated link speed,
//! entropy decoding, then g (tiled) and s's sliding window over the whole scan, on the CPU and,
//! with one, on a GPU. The raw row sends the scan as the scanner stores it (16 bits a voxel)
//! and segments it with a D1 model over the same sliding window.
//!
//! A scan takes minutes, not milliseconds, so each stage is timed once on the whole scan (no
//! warm-up round; the first tile or window pays for allocation). The edge's threads are
//! checked, not assumed: each edge timing reports the CPU time the process used over it
//! divided by the wall time, the cores it actually kept busy.

use std::time::Instant;

use serde::Serialize;
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::codec::model_file::CompressionModel;
use crate::data::volumes::SOURCE_BITS_PER_VOXEL;
use crate::eval::volumes::{scan_tensor, segment_features, CloudPass, CloudProfile};
use crate::nets::layers::{trace, LayerInfo};
use crate::nets::Model;
use orchestra_api::Precision;
use orchestra_codec::volume_stream::{unwrap, VolumeGeometry};
use orchestra_codec::CodeShape;
use orchestra_edge::preparation::VolumePreprocessing;
use orchestra_edge::volume::{Volume, DEFAULT_MAX_VOXELS};
use orchestra_edge::volume_encode::VolumeStream;
use orchestra_edge::EdgeModel;

/// One method's row for one scan; times in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeLatencyRow {
    pub method: String,
    /// z, y, x as acquired.
    pub sides: [usize; 3],
    pub voxels: usize,
    /// Bytes sent (a volume stream: geometry, code header, check value and code).
    pub bytes: usize,
    pub bpp: f64,
    pub link_mb_per_s: f64,
    pub transmission_s: f64,
    /// The edge on one core and on every core (`edge_cores`), with the cores each kept busy.
    pub compress_one_core_s: Option<f64>,
    pub compress_one_core_busy: Option<f64>,
    pub compress_all_cores_s: Option<f64>,
    pub compress_all_cores_busy: Option<f64>,
    pub edge_cores: usize,
    /// Cloud: entropy decoding (geometry and code checked), CPU.
    pub decode_s: f64,
    /// Cloud: g + s's sliding window to the label volume at the source sides, on
    /// `cloud_threads` CPU threads in `cloud_precision`, and on the GPU when there is one.
    pub segment_cpu_s: f64,
    pub cloud_threads: i32,
    pub cloud_precision: String,
    /// The CPU's g and s apart (g: 0 for the raw scan), the windows s ran on, and each one's
    /// work (the layers' FLOPs over the code and over every window) per second.
    pub g_cpu_s: f64,
    pub s_cpu_s: f64,
    pub windows: usize,
    pub g_gflop: f64,
    pub s_gflop: f64,
    pub g_gflop_per_s: Option<f64>,
    pub s_gflop_per_s: f64,
    pub segment_gpu_s: Option<f64>,
    /// Edge on one core, transmission, decoding and segmentation on the CPU (on the GPU).
    pub total_cpu_s: f64,
    pub total_gpu_s: Option<f64>,
}

/// The edge's two timings (seconds, and the cores each kept busy).
#[derive(Clone, Copy, Debug)]
pub struct EdgeTimings {
    pub one_core: (f64, f64),
    pub all_cores: (f64, f64),
    pub cores: usize,
}

/// A row's measurements; the row derives its rate, transmission and totals from them.
#[derive(Clone, Debug)]
pub struct Measured {
    pub method: String,
    pub sides: [usize; 3],
    pub bytes: usize,
    pub edge: Option<EdgeTimings>,
    pub decode_s: f64,
    pub cloud: CloudWork,
    pub segment_gpu_s: Option<f64>,
}

/// The cloud's pass on the CPU: its precision, where its time went and its work.
#[derive(Clone, Copy, Debug)]
pub struct CloudWork {
    pub precision: Precision,
    pub profile: CloudProfile,
    pub g_gflop: f64,
    pub s_gflop: f64,
}

impl CloudWork {
    pub fn seconds(&self) -> f64 {
        self.profile.g_s + self.profile.s_s
    }
}

impl VolumeLatencyRow {
    pub fn new(m: Measured, link_mb_per_s: f64) -> VolumeLatencyRow {
        let voxels: usize = m.sides.iter().product();
        let transmission_s = m.bytes as f64 / (link_mb_per_s * 1e6);
        let edge_and_link = m.edge.map_or(0.0, |e| e.one_core.0) + transmission_s + m.decode_s;
        let (cloud, profile) = (m.cloud, m.cloud.profile);
        VolumeLatencyRow {
            method: m.method,
            sides: m.sides,
            voxels,
            bytes: m.bytes,
            bpp: 8.0 * m.bytes as f64 / voxels as f64,
            link_mb_per_s,
            transmission_s,
            compress_one_core_s: m.edge.map(|e| e.one_core.0),
            compress_one_core_busy: m.edge.map(|e| e.one_core.1),
            compress_all_cores_s: m.edge.map(|e| e.all_cores.0),
            compress_all_cores_busy: m.edge.map(|e| e.all_cores.1),
            edge_cores: m.edge.map_or(0, |e| e.cores),
            decode_s: m.decode_s,
            segment_cpu_s: cloud.seconds(),
            cloud_threads: tch::get_num_threads(),
            cloud_precision: cloud.precision.name().into(),
            g_cpu_s: profile.g_s,
            s_cpu_s: profile.s_s,
            windows: profile.windows,
            g_gflop: cloud.g_gflop,
            s_gflop: cloud.s_gflop,
            g_gflop_per_s: (cloud.g_gflop > 0.0).then(|| cloud.g_gflop / profile.g_s.max(1e-9)),
            s_gflop_per_s: cloud.s_gflop / profile.s_s.max(1e-9),
            segment_gpu_s: m.segment_gpu_s,
            total_cpu_s: edge_and_link + cloud.seconds(),
            total_gpu_s: m.segment_gpu_s.map(|g| edge_and_link + g),
        }
    }
}

/// This process's CPU time (user + system) in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `f` once: its result, wall seconds and the cores it kept busy (CPU time over wall time).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let out = f();
    let secs = wall.elapsed().as_secs_f64();
    (out, secs, (cpu_seconds() - cpu) / secs.max(1e-9))
}

/// The edge's encoding of `scan` on a pool of `threads` threads.
pub fn edge_encode(
    edge: &EdgeModel,
    scan: &Volume,
    threads: usize,
) -> Result<(VolumeStream, f64, f64), String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    // The copy the encoder consumes is made before the clock starts.
    let scan = scan.clone();
    let (stream, secs, busy) = timed(|| pool.install(|| edge.encode_volume(scan)));
    Ok((stream.map_err(|e| e.to_string())?, secs, busy))
}

/// The edge's part of Orchestra's rows: the scan coded on one core and on every core (the same
/// stream both times), then entropy decoded in the cloud.
pub struct EdgeRun {
    pub bytes: usize,
    pub edge: EdgeTimings,
    pub decode_s: f64,
    pub geometry: VolumeGeometry,
    pub shape: CodeShape,
    pub bits: Vec<i8>,
}

impl EdgeRun {
    pub fn measure(
        edge: &EdgeModel,
        cloud: &CompressionModel,
        scan: &Volume,
        report: impl Fn(&str),
    ) -> Result<EdgeRun, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (stream, one_s, one_busy) = edge_encode(edge, scan, 1)?;
        report(&format!(
            "edge, 1 core: {one_s:.2} s ({one_busy:.2} cores busy), {} bytes",
            stream.bytes.len()
        ));
        let (all_stream, all_s, all_busy) = edge_encode(edge, scan, cores)?;
        report(&format!(
            "edge, {cores} cores: {all_s:.2} s ({all_busy:.2} cores busy)"
        ));
        if all_stream.bytes != stream.bytes {
            return Err("the edge's stream depends on its thread count".into());
        }
        let decode = || {
            let (geometry, code) =
                unwrap(&stream.bytes, DEFAULT_MAX_VOXELS as u64).map_err(|e| e.to_string())?;
            let (shape, bits) = cloud.codec.decode(code).map_err(|e| e.to_string())?;
            Ok::<_, String>((geometry, shape, bits))
        };
        let (decoded, decode_s, _) = timed(decode);
        let (geometry, shape, bits) = decoded?;
        report(&format!("cloud, entropy decoding: {:.3} s", decode_s));
        Ok(EdgeRun {
            bytes: stream.bytes.len(),
            edge: EdgeTimings {
                one_core: (one_s, one_busy),
                all_cores: (all_s, all_busy),
                cores,
            },
            decode_s,
            geometry,
            shape,
            bits,
        })
    }
}

/// Orchestra's row for one cloud pass over the edge's decoded code: g + s on the CPU in the
/// pass's precision (and on the GPU when there is one). Returns the row and the CPU's label
/// volume (source sides).
pub fn orchestra_row(
    cloud: &CompressionModel,
    cloud_gpu: Option<&CompressionModel>,
    run: &EdgeRun,
    pass: CloudPass,
    link_mb_per_s: f64,
    report: impl Fn(&str),
) -> Result<(VolumeLatencyRow, Vec<u8>), String> {
    let (labels, profile) = cloud
        .segment_volume_with(&run.geometry, &run.shape, &run.bits, pass)
        .map_err(|e| e.to_string())?;
    let (g_gflop, s_gflop) = cloud_gflop(&cloud.model, &run.shape.sides, profile.windows);
    report(&format!(
        "cloud, {} on {} CPU threads: g {:.1} s ({:.0} GFLOP/s), s over {} windows {:.1} s ({:.0} GFLOP/s)",
        pass.precision.name(),
        tch::get_num_threads(),
        profile.g_s,
        g_gflop / profile.g_s.max(1e-9),
        profile.windows,
        profile.s_s,
        s_gflop / profile.s_s.max(1e-9)
    ));
    let segment_gpu_s = match cloud_gpu {
        Some(gpu) => {
            // The labels come back to the host, so the timing waits for the device.
            let (labels_gpu, secs, _) =
                timed(|| gpu.segment_volume_with(&run.geometry, &run.shape, &run.bits, pass));
            labels_gpu.map_err(|e| e.to_string())?;
            report(&format!("cloud, g + sliding-window s on the GPU: {secs:.2} s"));
            Some(secs)
        }
        None => None,
    };
    let row = Measured {
        method: format!("Orchestra {}", cloud.model.variant),
        sides: run.geometry.sides.map(|s| s as usize),
        bytes: run.bytes,
        edge: Some(run.edge),
        decode_s: run.decode_s,
        cloud: CloudWork {
            precision: pass.precision,
            profile,
            g_gflop,
            s_gflop,
        },
        segment_gpu_s,
    };
    Ok((VolumeLatencyRow::new(row, link_mb_per_s), labels))
}

/// The work of the cloud's networks in GFLOP (a multiply-add counts 2): g over a code of
/// `cells` (0 without g: no halo counted, the work a whole pass does) and s over `windows`
/// windows, from the layers' own FLOP counts on one code cell and one window.
pub fn cloud_gflop(model: &Model, cells: &[usize], windows: usize) -> (f64, f64) {
    let _guard = tch::no_grad_guard();
    let c = &model.config;
    let device = model.vs.device();
    let flops = |layers: Vec<LayerInfo>| layers.iter().map(|l| l.flops as f64).sum::<f64>();
    let g = model.reconstructor.as_ref().map_or(0.0, |g| {
        let one_cell = Tensor::zeros([1, c.code_channels, 1, 1, 1], (Kind::Float, device));
        let (_, layers) = trace(|| g.forward_t(&one_cell, false));
        flops(layers) * cells.iter().product::<usize>() as f64
    });
    let s_in = if model.reconstructor.is_some() {
        c.g_out
    } else {
        c.in_channels
    };
    let mut shape = vec![1, s_in];
    shape.extend(&c.sides);
    let window = Tensor::zeros(shape.as_slice(), (Kind::Float, device));
    let (_, layers) = trace(|| model.segmentor.forward_t(&window, false));
    (g / 1e9, flops(layers) * windows as f64 / 1e9)
}

/// The scan sent as stored (16 bits a voxel) and segmented by D1 (prepared as it was trained)
/// over the same sliding window. Returns the row and the label volume (source sides).
pub fn raw_row(
    d1: &Model,
    d1_gpu: Option<&Model>,
    prep: &VolumePreprocessing,
    scan: &Volume,
    pass: CloudPass,
    link_mb_per_s: f64,
    report: impl Fn(&str),
) -> Result<(VolumeLatencyRow, Vec<u8>), String> {
    let source = scan.geometry.sides;
    let voxels: usize = source.iter().product();
    let bytes = (voxels as f64 * SOURCE_BITS_PER_VOXEL / 8.0) as usize;
    let segment = |model: &Model| {
        let (sides, prepared) = prep.prepare(scan.voxels.clone(), source, scan.geometry.affine_spacing());
        let x = scan_tensor(model, &prepared, sides, model.vs.device());
        // The labels come back to the host, so the timing waits for the device.
        let (labels, profile) = segment_features(model, &x, sides, pass);
        (prep.restore_labels(&labels, sides, source), profile)
    };
    let ((labels, profile), secs, _) = timed(|| segment(d1));
    // The cloud prepares the raw scan for D1 (intensity window, resampling): counted with s.
    let profile = CloudProfile { s_s: secs, ..profile };
    let (_, s_gflop) = cloud_gflop(d1, &[], profile.windows);
    report(&format!(
        "cloud, D1's sliding-window s, {} on {} CPU threads: {:.1} s over {} windows ({:.0} GFLOP/s)",
        pass.precision.name(),
        tch::get_num_threads(),
        profile.s_s,
        profile.windows,
        s_gflop / profile.s_s.max(1e-9)
    ));
    let segment_gpu_s = d1_gpu.map(|g| timed(|| segment(g)).1);
    let row = Measured {
        method: "raw scan, D1".into(),
        sides: source,
        bytes,
        edge: None,
        decode_s: 0.0,
        cloud: CloudWork {
            precision: pass.precision,
            profile,
            g_gflop: 0.0,
            s_gflop,
        },
        segment_gpu_s,
    };
    Ok((VolumeLatencyRow::new(row, link_mb_per_s), labels))
}

/// The rows as a Markdown table (seconds; g and s also in GFLOP/s).
pub fn table(rows: &[VolumeLatencyRow]) -> String {
    let gpu = rows.iter().any(|r| r.segment_gpu_s.is_some());
    let link = rows.first().map_or(0.0, |r| r.link_mb_per_s);
    let cores = rows.iter().map(|r| r.edge_cores).max().unwrap_or(0);
    let threads = rows.first().map_or(0, |r| r.cloud_threads);
    let header = vec![
        "method".to_string(),
        "scan (z x y x x)".into(),
        "bytes sent".into(),
        "bpp".into(),
        format!("transmission @ {link} MB/s"),
        "edge compression, 1 core".into(),
        format!("edge compression, {cores} cores"),
        "entropy decoding".into(),
        "cloud precision".into(),
        "g, CPU".into(),
        "s (sliding window), CPU".into(),
        format!("g + s, CPU ({threads} threads)"),
        "total, CPU".into(),
    ];
    let gpu_columns = |segment: String, total: String| {
        if gpu {
            [Some(segment), Some(total)]
        } else {
            [None, None]
        }
    };
    let header = super::markdown::with_gpu(header, gpu_columns("g + s, GPU".into(), "total, GPU".into()));
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
    let with_rate =
        |s: f64, rate: Option<f64>| rate.map_or("-".to_string(), |r| format!("{s:.1} s, {r:.0} GFLOP/s"));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let [z, y, x] = r.sides;
            let cells = vec![
                r.method.clone(),
                format!("{z} x {y} x {x}"),
                r.bytes.to_string(),
                format!("{:.5}", r.bpp),
                secs(Some(r.transmission_s)),
                secs(r.compress_one_core_s),
                secs(r.compress_all_cores_s),
                if r.compress_one_core_s.is_some() {
                    format!("{:.3} s", r.decode_s)
                } else {
                    "-".into()
                },
                r.cloud_precision.clone(),
                with_rate(r.g_cpu_s, r.g_gflop_per_s),
                format!(
                    "{}, {} windows",
                    with_rate(r.s_cpu_s, Some(r.s_gflop_per_s)),
                    r.windows
                ),
                secs(Some(r.segment_cpu_s)),
                secs(Some(r.total_cpu_s)),
            ];
            super::markdown::with_gpu(cells, gpu_columns(secs(r.segment_gpu_s), secs(r.total_gpu_s)))
        })
        .collect();
    super::markdown::table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(gpu: Option<f64>) -> VolumeLatencyRow {
        let measured = Measured {
            method: "Orchestra D4".into(),
            sides: [274, 512, 512],
            bytes: 23_000,
            edge: Some(EdgeTimings {
                one_core: (10.0, 1.0),
                all_cores: (6.0, 1.9),
                cores: 2,
            }),
            decode_s: 0.5,
            cloud: CloudWork {
                precision: Precision::Bf16,
                profile: CloudProfile {
                    g_s: 20.0,
                    s_s: 80.0,
                    windows: 3825,
                },
                g_gflop: 400.0,
                s_gflop: 16_000.0,
            },
            segment_gpu_s: gpu,
        };
        VolumeLatencyRow::new(measured, 23.0)
    }

    #[test]
    fn totals_take_the_one_core_edge_and_each_cloud_device() {
        let r = row(Some(2.0));
        // 23 kB at 23 MB/s: 1 ms on the link; the rate is the stream's bits over the voxels.
        assert!((r.transmission_s - 0.001).abs() < 1e-12);
        assert!((r.bpp - 8.0 * 23_000.0 / (274.0 * 512.0 * 512.0)).abs() < 1e-12);
        assert!((r.total_cpu_s - 110.501).abs() < 1e-9);
        assert!((r.total_gpu_s.unwrap() - 12.501).abs() < 1e-9);
        // g + s is the CPU's segmentation; each runs at its work over its own time.
        assert!((r.segment_cpu_s - 100.0).abs() < 1e-12);
        assert_eq!((r.g_gflop_per_s, r.s_gflop_per_s), (Some(20.0), 200.0));
        assert_eq!(row(None).total_gpu_s, None);
    }

    #[test]
    fn the_table_has_a_gpu_column_only_with_a_gpu() {
        let without = table(&[row(None)]);
        assert!(!without.contains("GPU"), "{without}");
        assert!(
            without.contains("| Orchestra D4 | 274 x 512 x 512 | 23000 |"),
            "{without}"
        );
        assert!(
            without.contains("| bf16 | 20.0 s, 20 GFLOP/s | 80.0 s, 200 GFLOP/s, 3825 windows | 100.00 s |"),
            "{without}"
        );
        let with = table(&[row(Some(2.0))]);
        assert!(
            with.contains("g + s, GPU") && with.contains("| 12.50 s |"),
            "{with}"
        );
        for line in with.lines() {
            assert_eq!(line.matches('|').count(), 16, "{line}");
        }
    }
}
