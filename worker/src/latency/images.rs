//! The paper's Table 2: where the time goes between a scan on the edge and its label map in
//! the cloud, per method. Bytes sent, their transmission at a stated link speed, compression on
//! one CPU core (the edge device), decoding on one CPU core, reconstruction and segmentation on
//! one CPU core and, when there is one, on a GPU; and the totals.
//!
//! Orchestra sends C's entropy-coded code and the cloud runs entropy decoding and g + s. A
//! standard codec sends its file and the cloud decodes it and segments the image with D1; the
//! raw image is the row with no compression at all. Every stage is timed per image and averaged
//! after a few warm-up images (first calls allocate and, on a GPU, pick kernels).

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Tensor};

use crate::baselines::rate_accuracy::CodecSetting;
use crate::codec::model_code::{code_rows, code_shape};
use crate::codec::model_file::CompressionModel;
use crate::data::{batch, Sample};
use crate::nets::Model;

/// Images run through every stage before timing starts.
pub const WARM_UP: usize = 3;

/// One method's row.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub method: String,
    pub setting: String,
    pub size: u32,
    pub images: usize,
    /// Mean bytes sent per image (the whole file or bitstream, headers included).
    pub bytes: f64,
    pub bpp: f64,
    pub link_mb_per_s: f64,
    pub transmission_ms: f64,
    /// Edge, one CPU core: pixels to bytes.
    pub compress_ms: f64,
    /// Cloud, one CPU core: bytes to the code (entropy decoding) or to the image (the codec).
    pub decode_ms: f64,
    /// Cloud, one CPU core: g + s on the code, or D1 on the decoded image, to the label map.
    pub segment_cpu_ms: f64,
    /// The same on the GPU, label map copied back included; `None` without a GPU.
    pub segment_gpu_ms: Option<f64>,
    pub total_cpu_ms: f64,
    pub total_gpu_ms: Option<f64>,
}

/// Per-image measurements of the stages, before averaging.
#[derive(Default)]
struct Stages {
    bytes: Vec<f64>,
    compress: Vec<f64>,
    decode: Vec<f64>,
    segment_cpu: Vec<f64>,
    segment_gpu: Vec<f64>,
}

impl Stages {
    fn row(self, method: &str, setting: String, side: u32, link_mb_per_s: f64) -> LatencyRow {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let bytes = mean(&self.bytes);
        let transmission_ms = bytes / (link_mb_per_s * 1e6) * 1e3;
        let (compress_ms, decode_ms) = (mean(&self.compress), mean(&self.decode));
        let segment_cpu_ms = mean(&self.segment_cpu);
        let segment_gpu_ms = (!self.segment_gpu.is_empty()).then(|| mean(&self.segment_gpu));
        let edge_and_link = compress_ms + transmission_ms + decode_ms;
        LatencyRow {
            method: method.into(),
            setting,
            size: side,
            images: self.bytes.len(),
            bytes,
            bpp: 8.0 * bytes / (side as f64 * side as f64),
            link_mb_per_s,
            transmission_ms,
            compress_ms,
            decode_ms,
            segment_cpu_ms,
            segment_gpu_ms,
            total_cpu_ms: edge_and_link + segment_cpu_ms,
            total_gpu_ms: segment_gpu_ms.map(|g| edge_and_link + g),
        }
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs `measure` on `WARM_UP` images (results dropped), then on each image.
fn timed(
    samples: &[Sample],
    mut measure: impl FnMut(&Sample, &mut Stages) -> Result<(), String>,
) -> Result<Stages, String> {
    let first = samples.first().ok_or("no images to time")?;
    for _ in 0..WARM_UP {
        measure(first, &mut Stages::default())?;
    }
    let mut stages = Stages::default();
    for s in samples {
        measure(s, &mut stages)?;
    }
    Ok(stages)
}

/// Labels of a segmentor's output, on the CPU (where the service writes them out).
fn labels_on_cpu(model: &Model, probs: &Tensor) -> Tensor {
    model.labels(probs).to_device(Device::Cpu)
}

/// Orchestra: C + entropy coding on the edge, entropy decoding and g + s in the cloud. `gpu` is
/// the same model on a GPU, for the GPU column.
pub fn orchestra_row(
    cpu: &CompressionModel,
    gpu: Option<&CompressionModel>,
    samples: &[Sample],
    side: u32,
    link_mb_per_s: f64,
) -> Result<LatencyRow, String> {
    let channels = cpu.model.config.in_channels as usize;
    let mut code_bits = 0;
    let stages = timed(samples, |s, st| {
        let t = Instant::now();
        let image = batch(&[s], channels, side, Device::Cpu).0;
        let (_, bits) =
            tch::no_grad(|| cpu.model.encode(&image, false)).ok_or("the model has no compressor")?;
        let shape = code_shape(&bits);
        let row = code_rows(&bits).remove(0);
        let stream = cpu.codec.encode(&shape, &row).map_err(|e| e.to_string())?;
        st.compress.push(ms_since(t));
        st.bytes.push(stream.len() as f64);
        code_bits = shape.bits();

        let t = Instant::now();
        let (shape, bits) = cpu.codec.decode(&stream).map_err(|e| e.to_string())?;
        st.decode.push(ms_since(t));

        let t = Instant::now();
        let labels = cpu.segment_code(&shape, &bits);
        st.segment_cpu.push(ms_since(t));
        if let Some(g) = gpu {
            let t = Instant::now();
            // segment_code moves the code to the model's device; the copy back waits for it.
            let on_gpu = g.segment_code(&shape, &bits).to_device(Device::Cpu);
            st.segment_gpu.push(ms_since(t));
            debug_assert_eq!(on_gpu.size(), labels.size());
        }
        Ok(())
    })?;
    Ok(stages.row(
        "Orchestra (C + context-model range coding, g + s)",
        format!("{code_bits} code bits"),
        side,
        link_mb_per_s,
    ))
}

/// A standard codec (or the raw image with `None`): its encoder on the edge, its decoder and D1
/// in the cloud. `d1_gpu` is the same D1 on a GPU, for the GPU column.
pub fn codec_row(
    setting: Option<CodecSetting>,
    d1: &Model,
    d1_gpu: Option<&Model>,
    samples: &[Sample],
    side: u32,
    link_mb_per_s: f64,
) -> Result<LatencyRow, String> {
    let channels = d1.config.in_channels as usize;
    let stages = timed(samples, |s, st| {
        let t = Instant::now();
        let file = match setting {
            Some(codec) => codec.encode(&s.image, side, channels)?,
            None => s.image.clone(),
        };
        st.compress
            .push(if setting.is_some() { ms_since(t) } else { 0.0 });
        st.bytes.push(file.len() as f64);

        let t = Instant::now();
        let pixels = match setting {
            Some(codec) => codec.decode(&file, channels)?,
            None => file,
        };
        st.decode.push(if setting.is_some() { ms_since(t) } else { 0.0 });
        let decoded = Sample {
            image: pixels,
            mask: vec![0; (side * side) as usize],
        };

        for (model, times) in [(Some(d1), &mut st.segment_cpu), (d1_gpu, &mut st.segment_gpu)] {
            let Some(model) = model else { continue };
            let t = Instant::now();
            let image = batch(&[&decoded], channels, side, Device::Cpu)
                .0
                .to_device(model.vs.device());
            let probs = tch::no_grad(|| model.forward(&image, false).probs);
            let _labels = labels_on_cpu(model, &probs);
            times.push(ms_since(t));
        }
        Ok(())
    })?;
    let (method, label) = match setting {
        Some(c) => (c.method(), c.label()),
        None => (
            "Raw image (no compression)",
            format!("{channels} x 8 bits per pixel"),
        ),
    };
    Ok(stages.row(&format!("{method}, D1 segments"), label, side, link_mb_per_s))
}

/// The rows as a Markdown table, times in milliseconds.
pub fn table(rows: &[LatencyRow]) -> String {
    let gpu = rows.iter().any(|r| r.segment_gpu_ms.is_some());
    let link = rows.first().map_or(0.0, |r| r.link_mb_per_s);
    let header = [
        "method",
        "setting",
        "size",
        "bytes sent",
        "bpp",
        &format!("transmission @ {link} MB/s"),
        "compression (1 core)",
        "decoding (1 core)",
        "reconstruction + segmentation (1 core)",
        "total (CPU)",
    ]
    .map(String::from)
    .to_vec();
    let gpu_columns = |segment: String, total: String| {
        if gpu {
            [Some(segment), Some(total)]
        } else {
            [None, None]
        }
    };
    let header = super::markdown::with_gpu(
        header,
        gpu_columns("reconstruction + segmentation (GPU)".into(), "total (GPU)".into()),
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let cells = vec![
                r.method.clone(),
                r.setting.clone(),
                format!("{}x{}", r.size, r.size),
                format!("{:.1}", r.bytes),
                format!("{:.5}", r.bpp),
                format!("{:.4}", r.transmission_ms),
                format!("{:.3}", r.compress_ms),
                format!("{:.3}", r.decode_ms),
                format!("{:.3}", r.segment_cpu_ms),
                format!("{:.3}", r.total_cpu_ms),
            ];
            super::markdown::with_gpu(cells, gpu_columns(opt(r.segment_gpu_ms), opt(r.total_gpu_ms)))
        })
        .collect();
    super::markdown::table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(bytes: f64, gpu: bool) -> Stages {
        Stages {
            bytes: vec![bytes, bytes],
            compress: vec![1.0, 3.0],
            decode: vec![0.5, 0.5],
            segment_cpu: vec![10.0, 20.0],
            segment_gpu: if gpu { vec![1.0, 2.0] } else { vec![] },
        }
    }

    #[test]
    fn rows_average_the_stages_and_add_up() {
        // 23 MB/s: 23,000 bytes take 1 ms.
        let r = stages(23_000.0, true).row("m", "s".into(), 128, 23.0);
        assert_eq!(r.images, 2);
        assert!((r.transmission_ms - 1.0).abs() < 1e-12);
        assert!((r.bpp - 8.0 * 23_000.0 / 16384.0).abs() < 1e-12);
        assert_eq!((r.compress_ms, r.decode_ms, r.segment_cpu_ms), (2.0, 0.5, 15.0));
        assert!((r.total_cpu_ms - 18.5).abs() < 1e-12);
        assert_eq!(r.segment_gpu_ms, Some(1.5));
        assert!((r.total_gpu_ms.unwrap() - 5.0).abs() < 1e-12);
    }

    #[test]
    fn the_table_has_a_gpu_column_only_when_a_row_was_timed_on_one() {
        let cpu_only = table(&[stages(10.0, false).row("a", "x".into(), 64, 23.0)]);
        assert!(!cpu_only.contains("(GPU)"));
        let header_cells = cpu_only.lines().next().unwrap().matches('|').count();
        assert_eq!(
            cpu_only.lines().nth(1).unwrap().matches('|').count(),
            header_cells
        );
        assert_eq!(
            cpu_only.lines().nth(2).unwrap().matches('|').count(),
            header_cells
        );

        let mixed = table(&[
            stages(10.0, true).row("a", "x".into(), 64, 23.0),
            stages(10.0, false).row("b", "y".into(), 64, 23.0),
        ]);
        assert!(mixed.contains("reconstruction + segmentation (GPU)"));
        let cells: Vec<usize> = mixed.lines().map(|l| l.matches('|').count()).collect();
        assert!(cells.iter().all(|&c| c == cells[0]), "{mixed}");
        assert!(mixed.lines().nth(3).unwrap().contains("| - |"), "{mixed}");
    }
}
