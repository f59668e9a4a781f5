//! `encode` and `segment` for volumes: a scan (NIfTI, or a DICOM series folder) in, one volume
//! stream out (the scan's geometry, then the code's bitstream); a volume stream in, a NIfTI
//! label volume out with the scan's sides and affine, so that it lies on the scan in ITK-SNAP,
//! 3D Slicer or nibabel.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use orchestra_codec::volume_stream::{unwrap, wrap};
use orchestra_edge::nifti_write::write_labels;
pub use orchestra_edge::scan::is_scan;
use orchestra_edge::scan::read_scan;
use orchestra_edge::tiling::Tiling;
use orchestra_edge::volume::{spacing_of, Geometry, LabelVolume, DEFAULT_MAX_VOXELS};
use orchestra_worker::codec::model_code::{code_rows, code_shape};
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::eval::tiled_volume::encode_volume;
use orchestra_worker::eval::volumes::scan_tensor;
use tch::Device;

/// Windows per call of s.
const WINDOW_BATCH: usize = 4;

/// Edge side: a scan (NIfTI file or DICOM series folder) -> a volume stream.
pub fn encode(m: &CompressionModel, scan_path: &Path, out: &Path) -> Result<()> {
    let prep = m.preparation()?;
    let scan = read_scan(scan_path, DEFAULT_MAX_VOXELS)?;
    let source = scan.geometry.sides;
    let geometry = prep.stream_geometry(&scan.geometry);
    let started = Instant::now();
    let (sides, voxels) = prep.prepare(scan.voxels, source, scan.geometry.affine_spacing());
    let x = scan_tensor(&m.model, &voxels, sides, Device::Cpu);
    let (_, bits) = encode_volume(&m.model, &x, Tiling::default()).context("the model has no compressor")?;
    let stream = m.codec.encode(&code_shape(&bits), &code_rows(&bits)[0])?;
    let bytes = wrap(&geometry, &stream);
    let elapsed = started.elapsed();
    write_atomically(out, &bytes)?;
    let voxels = source.iter().product::<usize>() as f64;
    println!(
        "{}: {} bytes ({} geometry + {} code, header and check value included) for {source:?} voxels = {:.5} bpp ({:.5} without the geometry) in {:.0} ms",
        out.display(),
        bytes.len(),
        geometry.encoded_len(),
        stream.len(),
        8.0 * bytes.len() as f64 / voxels,
        8.0 * stream.len() as f64 / voxels,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Cloud side: a volume stream -> a NIfTI label volume on the scan's voxels.
pub fn segment(m: &CompressionModel, bytes: &[u8], stream_path: &Path, out: &Path) -> Result<()> {
    let (geometry, code_stream) =
        unwrap(bytes, DEFAULT_MAX_VOXELS as u64).with_context(|| format!("{}", stream_path.display()))?;
    let (shape, bits) = m
        .codec
        .decode(code_stream)
        .with_context(|| format!("{}: the code after the geometry", stream_path.display()))?;
    let started = Instant::now();
    let labels = m
        .segment_volume(&geometry, &shape, &bits)
        .with_context(|| format!("{}", stream_path.display()))?;
    let source = geometry.sides.map(|s| s as usize);
    let volume = LabelVolume {
        geometry: Geometry {
            sides: source,
            spacing: spacing_of(&geometry.affine),
            affine: geometry.affine,
        },
        labels,
    };
    write_labels(out, &volume)?;
    let counts: Vec<usize> = (0..m.model.config.classes as u8)
        .map(|c| volume.labels.iter().filter(|&&l| l == c).count())
        .collect();
    println!(
        "{}: label volume {source:?} in {:.0} ms; voxels per class {counts:?}",
        out.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Rate against accuracy on whole held-out volumes: JPEG-2000 per slice and H.264 over the
/// slices, decoded and segmented by the D1 model, beside the learned models' real streams.
pub fn rate_accuracy(
    d1_spec: &orchestra_api::TrialSpec,
    models: &[orchestra_api::TrialSpec],
    j2k_rates: &[f64],
    h264_qps: &[u8],
    out: &Path,
) -> Result<()> {
    use orchestra_worker::baselines::rate_accuracy::{report, table};
    use orchestra_worker::baselines::volume_rate::{volume_codec_curve, volume_learned_point, VolumeCodec};
    use orchestra_worker::data::TrainingData;

    let (d1, _, data) = super::trial::load_checkpoint(d1_spec, None)?;
    let TrainingData::Volumes(set) = data else {
        bail!("{}: not a volume dataset", d1_spec.dataset);
    };
    let settings: Vec<VolumeCodec> = j2k_rates
        .iter()
        .map(|&b| VolumeCodec::Jpeg2000Slices(b))
        .chain(h264_qps.iter().map(|&q| VolumeCodec::H264Sequence(q)))
        .collect();
    let bar =
        indicatif::ProgressBar::new((settings.len() + models.len()) as u64).with_message("rate-accuracy");
    let mut baselines = Vec::new();
    for s in &settings {
        baselines.extend(
            volume_codec_curve(
                &d1,
                &set.val,
                &set.preprocessing,
                std::slice::from_ref(s),
                WINDOW_BATCH,
            )
            .map_err(anyhow::Error::msg)?,
        );
        bar.inc(1);
    }
    let mut learned = Vec::new();
    for spec in models {
        if spec.dataset != d1_spec.dataset {
            bail!("{}: its dataset differs from the D1 model's", spec.trial);
        }
        let (model, _, _) = super::trial::load_checkpoint(spec, None)?;
        let point = volume_learned_point(&spec.trial, &model, &set.val, &set.preprocessing)
            .map_err(anyhow::Error::msg)?;
        learned.push((point, spec.variant));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut all = baselines.clone();
    all.extend(learned.iter().map(|(p, _)| p.clone()));
    let text = table(&all);
    print!("{text}");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("rate-accuracy.md"), &text)?;
    std::fs::write(out.join("rate-accuracy.json"), serde_json::to_vec_pretty(&all)?)?;
    let plot = report("held-out volumes", &learned, &baselines);
    let (svg, png) = orchestra_report::figure::write_figure(&plot, &out.join("rate-accuracy"))
        .map_err(anyhow::Error::msg)?;
    println!("plot: {} and {}", png.display(), svg.display());
    Ok(())
}

/// Writes seeded synthetic cardiac volumes and their labels (`orchestra-worker synth-volumes`).
pub fn synth_volumes(out: &Path, count: usize, sides: &[usize], spacing: &[f32], seed: u64) -> Result<()> {
    use orchestra_edge::nifti_write::{write_labels, write_volume};
    use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
    let ([z, y, x], [sz, sy, sx]) = match (sides, spacing) {
        (&[z, y, x], &[sz, sy, sx]) => ([z, y, x], [sz, sy, sx]),
        _ => bail!("--sides and --spacing take three values each, z,y,x"),
    };
    let (sides, spacing) = ([z, y, x], [sz, sy, sx]);
    let voxels = sides.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    match voxels {
        Some(v) if v > 0 && v <= orchestra_edge::volume::DEFAULT_MAX_VOXELS => {}
        _ => bail!(
            "--sides {sides:?}: between 1 and {} voxels",
            orchestra_edge::volume::DEFAULT_MAX_VOXELS
        ),
    }
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--spacing {spacing:?}: positive millimetres");
    }
    for sub in ["images", "labels"] {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("cannot create {}", out.join(sub).display()))?;
    }
    for i in 0..count {
        let h = Heart3d {
            spacing,
            ..Heart3d::new(sides, seed.wrapping_add(i as u64))
        };
        let (scan, labels) = heart3d(&h);
        let name = format!("heart{i:03}.nii.gz");
        write_volume(&out.join("images").join(&name), &scan)?;
        write_labels(&out.join("labels").join(&name), &labels)?;
    }
    println!("{count} volumes of {sides:?} voxels in {}", out.display());
    Ok(())
}
