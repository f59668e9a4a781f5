//! The codec's commands: export a trained model, compress an image on the edge, decode and
//! segment a bitstream in the cloud, fuzz the decoder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::{imageops::FilterType, GrayImage, Rgb, RgbImage};
use orchestra_worker::codec::fuzz::fuzz_decoder;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::data::{batch, synthetic, Sample, SyntheticKind};
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

/// What one stream may announce, in place of the model's defaults (codes of images up to four
/// times its input size per side): checked on the header before anything is allocated.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LimitFlags {
    /// Largest code side a stream may announce (the image side divided by C's downsampling).
    #[arg(long)]
    pub max_code_side: Option<usize>,
    /// Largest number of code positions (the product of the sides) a stream may announce.
    #[arg(long)]
    pub max_code_positions: Option<usize>,
}

impl LimitFlags {
    /// The model with these limits on its decoder.
    pub fn apply(&self, mut m: CompressionModel) -> Result<CompressionModel> {
        let limits = m
            .codec
            .limits
            .clone()
            .with_overrides(self.max_code_side, self.max_code_positions)
            .map_err(|e| anyhow::anyhow!("--max-code-side/--max-code-positions: {e}"))?;
        m.codec = m.codec.with_limits(limits);
        Ok(m)
    }
}

/// A stream file, refused unread when it is longer than any stream the decoder accepts.
fn read_stream(m: &CompressionModel, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    // A volume stream carries the scan's geometry in front of its code.
    let max = m.codec.max_stream_bytes() + orchestra_codec::volume_stream::MAX_GEOMETRY_BYTES;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > max {
        bail!(
            "{}: longer than {max} bytes, the longest stream this decoder accepts ({})",
            path.display(),
            m.codec.limits
        );
    }
    Ok(bytes)
}

/// Reads an image file as the model's input: resized to its size, grey or RGB as it expects
/// (the edge's preparation, so both encoders see the same pixels).
pub fn read_image(model: &CompressionModel, path: &Path) -> Result<(Tensor, (u32, u32))> {
    let img = orchestra_edge::input::read_image(path)?;
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
    let sample = Sample {
        image: orchestra_edge::input::model_bytes(&img, side, c.in_channels as usize),
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
    if super::volume::is_scan(image) {
        return super::volume::encode(&m, image, out);
    }
    let (x, _) = read_image(&m, image)?;
    let started = Instant::now();
    let stream = m.encode(&x)?.remove(0);
    let elapsed = started.elapsed();
    std::fs::write(out, &stream).with_context(|| format!("cannot write {}", out.display()))?;
    let size = m.codec.describe(&stream, m.model.config.pixels() as usize)?;
    println!(
        "{}: {size} in {:.2} ms",
        out.display(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

pub fn decode(model: &Path, stream: &Path, limits: &LimitFlags) -> Result<()> {
    let m = limits.apply(load_model(model)?)?;
    let bytes = read_stream(&m, stream)?;
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

pub fn segment(
    model: &Path,
    stream: &Path,
    out: &Path,
    overlay: Option<(&Path, &Path)>,
    limits: &LimitFlags,
) -> Result<()> {
    let m = limits.apply(load_model(model)?)?;
    let bytes = read_stream(&m, stream)?;
    if orchestra_codec::volume_stream::is_volume_stream(&bytes) {
        if overlay.is_some() {
            bail!("--overlay draws on 2D images; open the label volume over its scan in a viewer instead");
        }
        return super::volume::segment(&m, &bytes, stream, out);
    }
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

/// Median of a handful of timings in milliseconds.
fn median_ms(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median encoding time (C, binarization, entropy coding) of one image at `side`, libtorch and
/// edge alternating so that both see the same machine state.
fn encode_latency(
    cloud: &CompressionModel,
    edge: &orchestra_edge::EdgeModel,
    side: u32,
    rounds: usize,
) -> Result<(f64, f64)> {
    let channels = cloud.model.config.in_channels as usize;
    let sample = synthetic_sample(channels, side, 3, 0);
    let x_torch = batch(&[&sample], channels, side, Device::Cpu).0;
    let x_edge = orchestra_edge::input::to_planes(&sample.image, channels, side as usize)
        .map_err(anyhow::Error::msg)?;
    let (mut torch, mut edge_times) = (Vec::new(), Vec::new());
    for round in 0..rounds + 3 {
        let t = Instant::now();
        cloud.encode(&x_torch)?;
        let torch_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        edge.encode(&x_edge)?;
        let edge_ms = t.elapsed().as_secs_f64() * 1e3;
        // The first rounds warm caches and allocators.
        if round >= 3 {
            torch.push(torch_ms);
            edge_times.push(edge_ms);
        }
    }
    Ok((median_ms(torch), median_ms(edge_times)))
}

/// `compare-edge-volume`: the edge's C against libtorch's on whole scans, one line each.
pub fn compare_edge_volume(model: &Path, scans: &[PathBuf], out: Option<&Path>) -> Result<()> {
    use orchestra_edge::scan::read_scan;
    use orchestra_edge::volume::DEFAULT_MAX_VOXELS;
    let cloud = load_model(model)?;
    let edge = orchestra_edge::EdgeModel::load(model)?;
    let mut rows = Vec::new();
    for path in scans {
        let scan =
            read_scan(path, DEFAULT_MAX_VOXELS).with_context(|| format!("reading {}", path.display()))?;
        let r = orchestra_worker::codec::edge_compare_volume::compare_volume(&cloud, &edge, scan)
            .with_context(|| format!("comparing on {}", path.display()))?;
        println!(
            "{}: C on {:?}, {} code bits: {} differ; largest |activation| of a differing bit {:.2e}, \
             largest activation difference {:.2e} ({} bits within it of the threshold); streams {}; \
             C took {:.2} s (libtorch, tiled) and {:.2} s (edge, plane stream)",
            path.display(),
            r.sides,
            r.code_bits,
            r.bits_differing,
            r.max_margin_of_differing,
            r.max_activation_difference,
            r.bits_within_rounding,
            if r.streams_identical {
                "identical"
            } else {
                "differ"
            },
            r.libtorch_seconds,
            r.edge_seconds
        );
        rows.push(serde_json::json!({"scan": path.display().to_string(), "comparison": r}));
    }
    if let Some(path) = out {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn compare_edge(model: &Path, dataset: &str, limit: Option<usize>, out: Option<&Path>) -> Result<()> {
    let cloud = load_model(model)?;
    let edge = orchestra_edge::EdgeModel::load(model)?;
    let side = cloud.model.config.input_size as u32;
    let data = orchestra_worker::data::Dataset::open(dataset, side)?;
    let n = limit.unwrap_or(usize::MAX).min(data.val.len());
    let samples: Vec<&Sample> = data.val.iter().take(n).collect();
    eprintln!("comparing the edge's C with libtorch's on {n} held-out images of {dataset}");
    let started = Instant::now();
    let r = orchestra_worker::codec::edge_compare::compare(&cloud, &edge, &samples)?;
    println!(
        "{} images, {} code bits: {} differ ({:.4} %); largest |activation| of a differing bit {:.2e}, \
         largest activation difference {:.2e} ({} bits within it of the threshold)",
        r.images,
        r.code_bits,
        r.bits_differing,
        100.0 * r.bits_differing as f64 / r.code_bits.max(1) as f64,
        r.max_margin_of_differing,
        r.max_activation_difference,
        r.bits_within_rounding
    );
    println!(
        "streams: {} of {} byte-identical, {} of the edge's decoded in the cloud; Dice {:.4} (libtorch) vs {:.4} (edge), {} label pixels differ",
        r.streams_identical, r.images, r.edge_streams_decoded, r.dice_libtorch, r.dice_edge, r.label_pixels_differing
    );
    let mut latency = Vec::new();
    for s in [side, 256] {
        let (torch_ms, edge_ms) = encode_latency(&cloud, &edge, s, 30)?;
        println!("encode one {s}x{s} image: libtorch {torch_ms:.2} ms, edge {edge_ms:.2} ms (medians of 30, alternating)");
        latency.push(serde_json::json!({"side": s, "libtorchMs": torch_ms, "edgeMs": edge_ms}));
    }
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
    if let Some(path) = out {
        let json = serde_json::json!({
            "model": model.display().to_string(),
            "dataset": dataset,
            "torchThreads": tch::get_num_threads(),
            "comparison": r,
            "encodeLatency": latency,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("written: {}", path.display());
    }
    if r.edge_streams_decoded != r.images {
        bail!(
            "{} of the edge's streams did not decode to its bits in the cloud",
            r.images - r.edge_streams_decoded
        );
    }
    Ok(())
}

pub fn samples(dataset: &str, size: u32, count: usize, out: &Path) -> Result<()> {
    let data = orchestra_worker::data::Dataset::open(dataset, size)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (i, s) in data.val.iter().take(count).enumerate() {
        let path = out.join(format!("{i:04}.png"));
        let saved = if data.channels == 3 {
            RgbImage::from_raw(size, size, s.image.clone()).map(|img| img.save(&path))
        } else {
            GrayImage::from_raw(size, size, s.image.clone()).map(|img| img.save(&path))
        };
        saved
            .context("a sample's bytes match its size")?
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "{} held-out images of {dataset} written to {}",
        count.min(data.val.len()),
        out.display()
    );
    Ok(())
}
