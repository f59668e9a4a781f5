//! `encode` and `segment` for volumes: a NIfTI scan in, one volume stream out (the scan's
//! geometry, then the code's bitstream); a volume stream in, a NIfTI label volume out with the
//! scan's sides and affine, so that it lies on the scan in ITK-SNAP, 3D Slicer or nibabel.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use orchestra_codec::volume_stream::{unwrap, wrap, VolumeGeometry, GEOMETRY_BYTES};
use orchestra_edge::nifti_write::write_labels;
pub use orchestra_edge::volume::is_nifti;
use orchestra_edge::volume::{read_volume, Geometry, LabelVolume, DEFAULT_MAX_VOXELS};
use orchestra_worker::codec::model_file::{code_rows, code_shape, CompressionModel};
use orchestra_worker::data::volumes::{expand_labels, reduced_sides, VolumePreprocessing};
use orchestra_worker::train::volume_eval::{padded_sides, scan_tensor, segment_code};
use tch::{Device, Kind, Tensor};

/// Windows per call of s.
const WINDOW_BATCH: usize = 4;

fn preparation(m: &CompressionModel) -> Result<&VolumePreprocessing> {
    m.volume.as_ref().context(
        "the model file has no scan preparation (not a volume model, or exported before volumes were supported): export it again from its 3D trial",
    )
}

/// Edge side: a NIfTI scan -> a volume stream.
pub fn encode(m: &CompressionModel, scan_path: &Path, out: &Path) -> Result<()> {
    let prep = preparation(m)?;
    let scan = read_volume(scan_path, DEFAULT_MAX_VOXELS)?;
    let source = scan.geometry.sides;
    let started = Instant::now();
    let (sides, voxels) = prep.prepare(scan.voxels, source);
    let x = scan_tensor(&m.model, &voxels, sides, Device::Cpu);
    let (_, bits) = tch::no_grad(|| m.model.encode(&x, false)).context("the model has no compressor")?;
    let stream = m.codec.encode(&code_shape(&bits), &code_rows(&bits)[0])?;
    let geometry = VolumeGeometry {
        sides: source.map(|s| s as u32),
        factor: prep.factor.map(|f| f as u8),
        affine: scan.geometry.affine,
    };
    let bytes = wrap(&geometry, &stream);
    let elapsed = started.elapsed();
    write_atomically(out, &bytes)?;
    let voxels = source.iter().product::<usize>() as f64;
    println!(
        "{}: {} bytes ({GEOMETRY_BYTES} geometry + {} code, header and check value included) for {source:?} voxels = {:.5} bpp ({:.5} without the geometry) in {:.0} ms",
        out.display(),
        bytes.len(),
        stream.len(),
        8.0 * bytes.len() as f64 / voxels,
        8.0 * stream.len() as f64 / voxels,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Cloud side: a volume stream -> a NIfTI label volume on the scan's voxels.
pub fn segment(m: &CompressionModel, bytes: &[u8], stream_path: &Path, out: &Path) -> Result<()> {
    let prep = preparation(m)?;
    let (geometry, code_stream) =
        unwrap(bytes, DEFAULT_MAX_VOXELS as u64).with_context(|| format!("{}", stream_path.display()))?;
    let factor = geometry.factor.map(usize::from);
    if factor != prep.factor {
        bail!(
            "{}: the scan was reduced by {factor:?} but this model takes scans reduced by {:?}",
            stream_path.display(),
            prep.factor
        );
    }
    let (shape, bits) = m
        .codec
        .decode(code_stream)
        .with_context(|| format!("{}: the code after the geometry", stream_path.display()))?;
    let source = geometry.sides.map(|s| s as usize);
    let sides = reduced_sides(source, factor);
    let f = m.model.config.downsample as usize;
    let expected: Vec<usize> = padded_sides(&m.model, sides).iter().map(|s| s / f).collect();
    if shape.sides != expected {
        bail!(
            "{}: the code's sides {:?} do not fit a scan of {source:?} voxels (this model codes it as {expected:?})",
            stream_path.display(),
            shape.sides
        );
    }
    let started = Instant::now();
    let mut dims = vec![1, shape.channels as i64];
    dims.extend(shape.sides.iter().map(|&s| s as i64));
    let code = Tensor::from_slice(&bits)
        .to_kind(Kind::Float)
        .view(dims.as_slice())
        .to_device(m.model.vs.device());
    let labels = segment_code(&m.model, &code, sides, WINDOW_BATCH);
    let labels = expand_labels(&labels, sides, source, factor);
    let column = |j: usize| {
        (0..3)
            .map(|i| (geometry.affine[i][j] as f64).powi(2))
            .sum::<f64>()
            .sqrt() as f32
    };
    let volume = LabelVolume {
        geometry: Geometry {
            sides: source,
            // (z, y, x) spacing from the affine's columns (i = x, j = y, k = z).
            spacing: [column(2), column(1), column(0)],
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
