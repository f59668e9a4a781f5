//! The codec's commands: export a trained model, compress an image on the edge, decode and
//! segment a bitstream in the cloud, fuzz the decoder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::{imageops::FilterType, GrayImage, Rgb, RgbImage};
use orchestra_worker::codec::fuzz::fuzz_decoder;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::data::{batch, synthetic, Sample, SyntheticKind};
use orchestra_worker::serve::client;
use tch::{Device, Tensor};

/// Class colours for label maps and overlays (background transparent in overlays).
const PALETTE: [[u8; 3]; 8] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
];

pub fn load_model(path: &Path) -> Result<CompressionModel> {
    Ok(CompressionModel::load(path, Device::Cpu)?)
}

/// Reads an image file as the model's input: resized to its size, grey or RGB as it expects.
pub fn read_image(model: &CompressionModel, path: &Path) -> Result<(Tensor, (u32, u32))> {
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let c = &model.model.config;
    let side = c.input_size as u32;
    let original = (img.width(), img.height());
    if original != (side, side) {
        eprintln!(
            "note: {} is {}x{}; the model takes {side}x{side}, resizing",
            path.display(),
            original.0,
            original.1
        );
    }
    let resized = img.resize_exact(side, side, FilterType::Triangle);
    let bytes = if c.in_channels == 3 {
        resized.to_rgb8().into_raw()
    } else {
        resized.to_luma8().into_raw()
    };
    let sample = Sample {
        image: bytes,
        mask: vec![0; (side * side) as usize],
    };
    Ok((
        batch(&[&sample], c.in_channels as usize, side, Device::Cpu).0,
        original,
    ))
}

/// Synthetic image `index` of `seed` at `size`, of the kind the model takes (RGB lesions or grey
/// nested structures), as a (1, C, size, size) tensor.
fn synthetic_image(m: &CompressionModel, size: u32, seed: u64, index: u64) -> Tensor {
    let channels = m.model.config.in_channels as usize;
    batch(
        &[&synthetic_sample(channels, size, seed, index)],
        channels,
        size,
        Device::Cpu,
    )
    .0
}

/// A synthetic image for a model of `channels` input channels: lesions in colour, nested
/// structures in grey.
pub fn synthetic_sample(channels: usize, size: u32, seed: u64, index: u64) -> Sample {
    let kind = if channels == 3 {
        SyntheticKind::Lesion
    } else {
        SyntheticKind::Nested
    };
    synthetic::generate(kind, size, seed, index)
}

pub fn encode(model: &Path, image: &Path, out: &Path) -> Result<()> {
    let m = load_model(model)?;
    let (x, _) = read_image(&m, image)?;
    let started = Instant::now();
    let stream = m.encode(&x)?.remove(0);
    let elapsed = started.elapsed();
    std::fs::write(out, &stream).with_context(|| format!("cannot write {}", out.display()))?;
    let pixels = m.model.config.pixels() as f64;
    let header = m.codec.header_len(&stream)?;
    println!(
        "{}: {} bytes ({} header and check value) = {:.5} bpp ({:.5} without them) in {:.2} ms",
        out.display(),
        stream.len(),
        header,
        8.0 * stream.len() as f64 / pixels,
        8.0 * (stream.len() - header) as f64 / pixels,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

pub fn decode(model: &Path, stream: &Path) -> Result<()> {
    let m = load_model(model)?;
    let bytes = std::fs::read(stream).with_context(|| format!("cannot read {}", stream.display()))?;
    let (shape, bits) = m
        .codec
        .decode(&bytes)
        .with_context(|| format!("cannot decode {}", stream.display()))?;
    let text: String = bits.iter().map(|&b| if b > 0 { '1' } else { '0' }).collect();
    println!(
        "{}",
        serde_json::json!({"channels": shape.channels, "sides": shape.sides, "bits": text})
    );
    Ok(())
}

fn label_png(labels: &Tensor) -> Result<GrayImage> {
    let (h, w) = labels.size2().context("segment gives a 2D label map")?;
    let values: Vec<i64> = Vec::try_from(labels.flatten(0, -1))?;
    Ok(
        GrayImage::from_raw(w as u32, h as u32, values.iter().map(|&v| v as u8).collect())
            .expect("sized buffer"),
    )
}

pub fn segment(model: &Path, stream: &Path, out: &Path, overlay: Option<(&Path, &Path)>) -> Result<()> {
    let m = load_model(model)?;
    let bytes = std::fs::read(stream).with_context(|| format!("cannot read {}", stream.display()))?;
    let started = Instant::now();
    let labels = m
        .segment(&bytes)
        .with_context(|| format!("cannot decode {}", stream.display()))?;
    let elapsed = started.elapsed();
    let map = label_png(&labels)?;
    map.save(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: label map {}x{} (class index per pixel) in {:.2} ms",
        out.display(),
        map.width(),
        map.height(),
        elapsed.as_secs_f64() * 1e3
    );
    if let Some((image, path)) = overlay {
        let base = image::open(image).with_context(|| format!("cannot read image {}", image.display()))?;
        let base = base
            .resize_exact(map.width(), map.height(), FilterType::Triangle)
            .to_rgb8();
        let blended = RgbImage::from_fn(map.width(), map.height(), |x, y| {
            let class = map.get_pixel(x, y).0[0] as usize;
            let p = base.get_pixel(x, y).0;
            if class == 0 {
                Rgb(p)
            } else {
                let c = PALETTE[class % PALETTE.len()];
                Rgb([0, 1, 2].map(|i| ((p[i] as u16 + c[i] as u16 * 2) / 3) as u8))
            }
        });
        blended
            .save(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}: overlay", path.display());
    }
    Ok(())
}

pub fn fuzz(model: &Path, images: &[PathBuf], synthetic: u64, inputs: u64, seed: u64) -> Result<()> {
    let m = load_model(model)?;
    if images.is_empty() && synthetic == 0 {
        bail!("give at least one image (or --synthetic N) whose bitstream the fuzzer can mutate");
    }
    let mut valid = Vec::new();
    for img in images {
        let (x, _) = read_image(&m, img)?;
        valid.extend(m.encode(&x)?);
    }
    let side = m.model.config.input_size as u32;
    for i in 0..synthetic {
        valid.extend(m.encode(&synthetic_image(&m, side, seed, i))?);
    }
    let started = Instant::now();
    let report = fuzz_decoder(&m.codec, &valid, inputs, seed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzzed the decoder with {} inputs in {secs:.1}s ({:.0}/s): {} decoded, {} rejected with a typed error, {} panics; \
         {} of {} damaged streams accepted (the check value lets through at most 1 in 256)",
        report.inputs,
        report.inputs as f64 / secs,
        report.decoded,
        report.rejected,
        report.panics,
        report.accepted_damaged,
        report.mutated
    );
    if report.panics > 0 {
        bail!("the decoder panicked; first input: {:02x?}", report.first_panic);
    }
    // Far above 1/256 means the check is not doing its job (the bound leaves room for chance).
    if report.accepted_damaged as f64 > 16.0 + report.mutated as f64 / 128.0 {
        bail!(
            "{} of {} damaged streams were accepted; first: {:02x?}",
            report.accepted_damaged,
            report.mutated,
            report.first_accepted_damaged
        );
    }
    Ok(())
}

/// Where the service is and how to reach it: shared by the client commands.
#[derive(clap::Args)]
pub struct RemoteArgs {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub model: PathBuf,
    /// A file whose first line is the bearer token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Trust only this CA certificate (PEM), e.g. the service's self-signed one.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

impl RemoteArgs {
    /// The model, the token and an agent that trusts what `--ca-cert` says.
    fn connect(&self) -> Result<(CompressionModel, String, ureq::Agent)> {
        let m = load_model(&self.model)?;
        let token = read_token(&self.token_file)?;
        let agent = client::agent(self.ca_cert.as_deref(), std::time::Duration::from_secs(30))?;
        Ok((m, token, agent))
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .with_context(|| format!("{} holds no token", path.display()))
}

pub fn segment_remote(remote: &RemoteArgs, image: &Path, out: &Path) -> Result<()> {
    let (m, token, agent) = remote.connect()?;
    let server = remote.server.as_str();
    let (x, _) = read_image(&m, image)?;
    let started = Instant::now();
    let stream = m.encode(&x)?.remove(0);
    let encode_ms = started.elapsed().as_secs_f64() * 1e3;
    let remote = client::segment_remote(&agent, server, &token, &stream)?;
    std::fs::write(out, &remote.png).with_context(|| format!("cannot write {}", out.display()))?;
    let round_trip = remote.round_trip.as_secs_f64() * 1e3;
    println!("{}: label map from {server}", out.display());
    println!(
        "  sent {} bytes ({:.5} bpp)",
        stream.len(),
        8.0 * stream.len() as f64 / m.model.config.pixels() as f64
    );
    println!("  encode (C + entropy coding) {encode_ms:.2} ms");
    match remote.server_ms {
        Some(s) => println!(
            "  service (decode + g + s + PNG) {s:.2} ms, network and TLS {:.2} ms, round trip {round_trip:.2} ms",
            round_trip - s
        ),
        None => println!("  round trip {round_trip:.2} ms"),
    }
    Ok(())
}

pub fn load_test(remote: &RemoteArgs, requests: usize, concurrency: usize) -> Result<()> {
    let (m, token, agent) = remote.connect()?;
    let server = remote.server.as_str();
    let side = m.model.config.input_size as u32;
    let mut streams = Vec::new();
    for i in 0..16 {
        streams.extend(m.encode(&synthetic_image(&m, side, 1, i))?);
    }
    let report = client::load_test(&agent, server, &token, &streams, requests, concurrency);
    println!(
        "{} requests, {} at a time: {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed",
        report.requests,
        report.concurrency,
        report.requests_per_second,
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        report.failed
    );
    println!("{}", serde_json::to_string(&report)?);
    if report.failed > 0 {
        bail!(
            "{} requests failed; the first: {}",
            report.failed,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
