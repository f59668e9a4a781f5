//! `bench-latency`: the paper's Table 2 for Orchestra's codec beside the standard codecs and
//! the raw image, on synthetic images of the model's kind.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use orchestra_api::{DeviceKind, Variant};
use orchestra_worker::baselines::rate_accuracy::CodecSetting;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::latency::images::{codec_row, orchestra_row, table};
use tch::Device;

use super::codec::synthetic_sample;

/// Whether to time the cloud side on a GPU too.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum GpuColumn {
    /// When libtorch sees a CUDA device.
    Auto,
    /// Always; an error without a GPU.
    On,
    Off,
}

#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Orchestra's exported model (`orchestra-worker export`).
    #[arg(long)]
    model: PathBuf,
    /// Trial spec of a trained D1 model: segments the standard codecs' decoded images. Without
    /// it only Orchestra's row is measured.
    #[arg(long)]
    d1: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    size: u32,
    #[arg(long, default_value_t = 50)]
    images: u64,
    /// Link speed for the transmission time (the paper: 300 MB in 13 s).
    #[arg(long, default_value_t = 23.0)]
    link_mb_per_s: f64,
    #[arg(long, default_value_t = 10)]
    jpeg_quality: u8,
    /// JPEG-2000 target rate in bits per pixel.
    #[arg(long, default_value_t = 0.15)]
    j2k_bpp: f64,
    /// H.264 intra quantiser.
    #[arg(long, default_value_t = 42)]
    h264_qp: u8,
    #[arg(long, value_enum, default_value_t = GpuColumn::Auto)]
    gpu: GpuColumn,
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn gpu_device(column: GpuColumn) -> Result<Option<Device>> {
    let found = orchestra_worker::cuda::device_for(DeviceKind::Cuda);
    match (column, found) {
        (GpuColumn::Off, _) => Ok(None),
        (_, Ok(d)) => Ok(Some(d)),
        (GpuColumn::Auto, Err(reason)) => {
            eprintln!("no GPU column: {reason}");
            Ok(None)
        }
        (GpuColumn::On, Err(reason)) => bail!("--gpu on: {reason}"),
    }
}

pub fn run(args: LatencyArgs) -> Result<()> {
    // The edge is one core; the cloud's CPU column is timed on one core as well.
    tch::set_num_threads(1);
    let gpu = gpu_device(args.gpu)?;
    let m = CompressionModel::load(&args.model, Device::Cpu)?;
    let c = &m.model.config;
    let multiple = 1i64 << c.s_depth.max(c.downsample.trailing_zeros() as i64);
    if args.size as i64 % multiple != 0 {
        bail!(
            "--size {}: must be a multiple of {multiple} for this model",
            args.size
        );
    }
    let m_gpu = gpu.map(|d| CompressionModel::load(&args.model, d)).transpose()?;
    let channels = c.in_channels as usize;
    let samples: Vec<_> = (0..args.images)
        .map(|i| synthetic_sample(channels, args.size, 5, i))
        .collect();
    let link = args.link_mb_per_s;
    eprintln!(
        "timing {} synthetic {}x{} images per method, one CPU core{}",
        samples.len(),
        args.size,
        args.size,
        if gpu.is_some() { ", and the GPU" } else { "" }
    );
    let mut rows = Vec::new();
    if let Some(path) = &args.d1 {
        let spec = super::trial::read_spec(path)?;
        if spec.variant != Variant::D1 {
            bail!("--d1 {}: variant {}, expected D1", path.display(), spec.variant);
        }
        let (d1, _, _) = super::trial::load_checkpoint(&spec, None)?;
        if d1.config.in_channels as usize != channels {
            bail!(
                "--d1 {}: takes {} channels, the model {channels}",
                path.display(),
                d1.config.in_channels
            );
        }
        let d1_gpu = gpu
            .map(|device| d1.copy_to(device))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let settings = [
            None,
            Some(CodecSetting::Jpeg(args.jpeg_quality)),
            Some(CodecSetting::Jpeg2000(args.j2k_bpp)),
            Some(CodecSetting::H264(args.h264_qp)),
        ];
        for setting in settings {
            let row = codec_row(setting, &d1, d1_gpu.as_ref(), &samples, args.size, link)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("timing {setting:?}"))?;
            rows.push(row);
        }
    } else {
        eprintln!("no --d1 model: the standard codecs' rows are skipped");
    }
    rows.push(orchestra_row(&m, m_gpu.as_ref(), &samples, args.size, link).map_err(anyhow::Error::msg)?);
    let text = table(&rows);
    print!("{text}");
    println!(
        "(mean per image over {} synthetic images after {} warm-up images; compression and decoding on one CPU core)",
        samples.len(),
        orchestra_worker::latency::images::WARM_UP
    );
    if let Some(path) = &args.out {
        super::bench::write_results(path, &rows, &text)?;
    }
    Ok(())
}
