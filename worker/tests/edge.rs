//! The edge's C (orchestra-edge, pure Rust) against the worker's (libtorch): the same code bits
//! but for ties at the threshold, streams the cloud decodes, the same label maps; in 2D on a
//! trained model and in 3D on a freshly built one. Damaged model files are refused by name.

mod common;

use std::collections::HashMap;

use orchestra_api::{ModelSpec, Preset, Variant};
use orchestra_edge::compressor::{binarize, Planes};
use orchestra_edge::{EdgeError, EdgeModel};
use orchestra_worker::codec::edge_compare::compare;
use orchestra_worker::codec::model_code::code_rows;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::data::{Dataset, Sample};
use orchestra_worker::nets::Model;
use orchestra_worker::store::{from_safetensors_with_metadata, to_safetensors_with_metadata};
use orchestra_worker::train::Trainer;
use tch::{Device, Kind, Tensor};

/// A model file's tensors by name.
type Named = Vec<(String, Tensor)>;

fn trained_model_file(dir: &std::path::Path) -> (std::path::PathBuf, Dataset) {
    let mut spec = common::tiny_spec(Variant::D4, "memory://edge", "edge");
    spec.steps = 20;
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    let mut t = Trainer::new(spec, data.clone()).unwrap();
    for _ in 0..20 {
        t.train_step().unwrap();
    }
    let path = dir.join("model.safetensors");
    CompressionModel::save(&t.model, &path).unwrap();
    (path, data)
}

#[test]
fn edge_codes_are_libtorch_codes_and_decode_in_the_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = trained_model_file(dir.path());
    let cloud = CompressionModel::load(&path, Device::Cpu).unwrap();
    let edge = EdgeModel::load(&path).unwrap();
    assert_eq!(
        edge.codec.tag, cloud.codec.tag,
        "both sides derive the same model tag"
    );
    let samples: Vec<&Sample> = data.val.iter().collect();
    let r = compare(&cloud, &edge, &samples).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.images, data.val.len());
    assert_eq!(
        r.edge_streams_decoded, r.images,
        "every edge stream decodes in the cloud"
    );
    // Rounding between the two implementations is tiny next to the activations' range...
    assert!(r.max_activation_difference < 1e-3, "{r:?}");
    // ... and a bit may only differ where libtorch's activation was within it of the threshold.
    assert!(r.bits_differing <= r.bits_within_rounding, "{r:?}");
    assert!(r.max_margin_of_differing <= r.max_activation_difference, "{r:?}");
    if r.bits_differing == 0 {
        assert_eq!(r.streams_identical, r.images);
        assert_eq!(r.label_pixels_differing, 0);
        assert_eq!(r.dice_edge, r.dice_libtorch);
    }
}

#[test]
fn edge_codes_of_volumes_are_libtorch_codes() {
    orchestra_worker::nets::rng::reseed(3);
    let spec = ModelSpec {
        downsample: Some(8),
        ..ModelSpec::new(Preset::Small, 32, 3)
    };
    let model = Model::new(
        orchestra_worker::nets::config::resolve(&spec, 1, 3),
        Variant::D4,
        Device::Cpu,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume.safetensors");
    CompressionModel::save(&model, &path).unwrap();
    let edge = EdgeModel::load(&path).unwrap();
    assert_eq!(edge.dims, 3);
    let voxels: Vec<f32> = (0..32 * 32 * 32)
        .map(|i| ((i * 7919) % 251) as f32 / 250.0)
        .collect();
    let x = Tensor::from_slice(&voxels).view([1, 1, 32, 32, 32]);
    let (torch_act, torch_bits) = tch::no_grad(|| model.encode(&x, false)).unwrap();
    let planes = Planes {
        channels: 1,
        sides: [32, 32, 32],
        data: voxels,
    };
    let edge_act = edge.activations(&planes).unwrap();
    assert_eq!(edge_act.sides, [4, 4, 4]);
    let a: Vec<f32> = Vec::try_from(torch_act.flatten(0, -1).to_kind(Kind::Float)).unwrap();
    let rounding = a
        .iter()
        .zip(&edge_act.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(rounding < 1e-4, "activations differ by {rounding}");
    let torch_bits = code_rows(&torch_bits).remove(0);
    for (i, (t, e)) in torch_bits.iter().zip(binarize(&edge_act)).enumerate() {
        assert!(
            *t == e || a[i].abs() <= rounding,
            "bit {i}: {t} vs {e}, activation {}",
            a[i]
        );
    }
    // The volume's stream decodes with the cloud's coder (the same table and tag).
    let cloud = CompressionModel::new(model).unwrap();
    let stream = edge.encode(&planes).unwrap();
    assert!(cloud.codec.decode(&stream).is_ok());
}

#[test]
fn damaged_model_files_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trained_model_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();

    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = EdgeModel::load(&cut).unwrap_err();
    assert!(matches!(e, EdgeError::Format { .. }), "{e}");
    assert!(e.to_string().contains("cut.safetensors"), "{e}");

    let (tensors, meta) = from_safetensors_with_metadata(&bytes).unwrap();
    let rewrite = |name: &str, f: &dyn Fn(&mut Named), meta: HashMap<String, String>| {
        let mut t = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        f(&mut t);
        let p = dir.path().join(name);
        std::fs::write(&p, to_safetensors_with_metadata(&t, Some(meta)).unwrap()).unwrap();
        EdgeModel::load(&p).unwrap_err().to_string()
    };
    let e = rewrite(
        "no-bias.safetensors",
        &|t| t.retain(|(n, _)| n != "c.head.bias"),
        meta.clone(),
    );
    assert!(e.contains("c.head.bias") && e.contains("missing"), "{e}");
    let e = rewrite(
        "wide.safetensors",
        &|t| {
            for (n, v) in t.iter_mut() {
                if n == "c.down1.conv.weight" {
                    *v = Tensor::zeros([32, 17, 4, 4], (Kind::Float, Device::Cpu));
                }
            }
        },
        meta.clone(),
    );
    assert!(e.contains("c.down1.conv.weight") && e.contains("shape"), "{e}");
    let mut no_config = meta.clone();
    no_config.remove("orchestra.config");
    let e = rewrite("no-config.safetensors", &|_| {}, no_config);
    assert!(e.contains("orchestra.config"), "{e}");
}

/// `orchestra-edge segment-remote` given a scan: the edge codes it, the service segments the
/// volume stream, and the label volume lands on the scan's own sides and affine, equal to what
/// the cloud's model segments from the same stream locally.
#[test]
fn the_edge_sends_a_scan_and_writes_its_label_volume() {
    use orchestra_edge::nifti_write::write_volume;
    use orchestra_edge::preparation::{Normalisation, VolumePreprocessing};
    use orchestra_edge::volume::{read_labels, Geometry, Volume, DEFAULT_MAX_VOXELS};
    use orchestra_worker::serve::{start, BatchOptions, ServeConfig};
    use std::time::Duration;

    orchestra_worker::nets::rng::reseed(4);
    let spec = ModelSpec {
        downsample: Some(8),
        patch: Some(vec![16, 32, 32]),
        ..ModelSpec::new(Preset::Small, 32, 3)
    };
    let model = Model::new(
        orchestra_worker::nets::config::resolve(&spec, 1, 3),
        Variant::D4,
        Device::Cpu,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume.safetensors");
    let prep = VolumePreprocessing {
        intensity: Normalisation::Mr,
        factor: [1, 1, 1],
        spacing: None,
    };
    CompressionModel::save_with(&model, Some(&prep), &path).unwrap();
    // An oblique scan, as an MR's affine is.
    let sides = [12, 40, 36];
    let scan = Volume {
        geometry: Geometry {
            sides,
            spacing: [2.0, 1.0, 1.0],
            affine: [
                [-1.0, 0.0, 0.3, 20.0],
                [0.0, -1.0, 0.1, 30.0],
                [0.0, 0.0, 1.97, -40.0],
            ],
        },
        voxels: (0..sides.iter().product::<usize>())
            .map(|i| ((i * 7919) % 251) as f32)
            .collect(),
    };
    let scan_path = dir.path().join("scan.nii.gz");
    write_volume(&scan_path, &scan).unwrap();
    let scan = orchestra_edge::volume::read_volume(&scan_path, DEFAULT_MAX_VOXELS).unwrap();

    let cloud = CompressionModel::load(&path, Device::Cpu).unwrap();
    let edge = EdgeModel::load(&path).unwrap();
    let sent = edge.encode_volume(scan.clone()).unwrap();
    let (geometry, code) =
        orchestra_codec::volume_stream::unwrap(&sent.bytes, DEFAULT_MAX_VOXELS as u64).unwrap();
    let (shape, bits) = cloud.codec.decode(code).unwrap();
    let expected = cloud.segment_volume(&geometry, &shape, &bits).unwrap();

    let token = "test-token-0123456789abcdef";
    let config = ServeConfig {
        tls: None,
        tokens: vec![token.into()],
        max_body_bytes: 1 << 20,
        concurrency: 2,
        timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        batch: BatchOptions::default(),
    };
    let server = start(cloud, "127.0.0.1:0".parse().unwrap(), config).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    // Beside the worker's: `cargo test --workspace` builds every binary of the workspace.
    let edge_bin =
        std::path::Path::new(env!("CARGO_BIN_EXE_orchestra-worker")).with_file_name("orchestra-edge");
    assert!(
        edge_bin.exists(),
        "{} is missing: build the workspace",
        edge_bin.display()
    );
    let segment = |out: &std::path::Path| {
        std::process::Command::new(&edge_bin)
            .arg("segment-remote")
            .args(["--server", &format!("http://{}", server.addr)])
            .arg("--model")
            .arg(&path)
            .arg("--token-file")
            .arg(&token_file)
            .arg(&scan_path)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("labels.nii.gz");
    let run = segment(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("label volume 12 x 40 x 36"), "{stdout}");
    let labels = read_labels(&out, DEFAULT_MAX_VOXELS).unwrap();
    assert_eq!(labels.geometry.sides, sides);
    assert_eq!(
        labels.geometry.affine, scan.geometry.affine,
        "on the scan's own affine"
    );
    assert!(
        labels.labels == expected,
        "the label volume is the cloud model's segmentation"
    );
    // A PNG name for a label volume is refused before anything is sent.
    let png = segment(&dir.path().join("labels.png"));
    assert!(!png.status.success());
    assert!(String::from_utf8_lossy(&png.stderr).contains("name the output .nii.gz"));
    server.shutdown();
}
