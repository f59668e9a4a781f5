//! The `orchestra-worker` command line, run as a user would.

mod common;

use std::process::Command;

use orchestra_api::Variant;

/// A Python with torch for the PyTorch side of the volume latency table: `ORCHESTRA_PYTORCH_PYTHON`,
/// or the reference environment `make bench` installs; `None` (with the reason printed) without
/// one. (`make setup`'s venv holds libtorch for tch, whose Python package lacks the CUDA
/// libraries it imports.)
fn pytorch_python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("ORCHESTRA_PYTORCH_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cache/orchestra/venv-pyref/bin/python"))
        })?;
    let works = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!(
            "no Python with torch at {} (set ORCHESTRA_PYTORCH_PYTHON, or run make bench once): PyTorch's side of the volume latency table is not checked",
            python.display()
        );
    }
    works.then_some(python)
}

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestra-worker"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the worker binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn train_eval_and_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let mut spec = common::tiny_spec(Variant::D4, &store, "cli");
    spec.steps = 4;
    let spec_path = dir.path().join("trial.yaml");
    std::fs::write(&spec_path, serde_yaml::to_string(&spec).unwrap()).unwrap();

    let (ok, stdout, stderr) = run(worker()
        .args(["train", "--progress-every-s", "0.000001", "--spec"])
        .arg(&spec_path));
    assert!(ok, "train failed: {stderr}");
    // Off a terminal: no colour codes, and a progress line per report instead of a bar.
    assert!(!stderr.contains('\x1b'), "colour codes in a log file: {stderr:?}");
    assert!(
        stderr.contains("cli step 4/4 (100%)") && stderr.contains("images/s"),
        "{stderr}"
    );
    assert!(
        stdout.contains("Dice") && stdout.contains("estimated"),
        "{stdout}"
    );
    let base = dir.path().join("store/tests/cli");
    let result: orchestra_api::TrialResult =
        serde_json::from_slice(&std::fs::read(base.join("result.json")).unwrap()).unwrap();
    assert_eq!((result.steps, result.variant), (4, Variant::D4));
    let metrics = std::fs::read_to_string(base.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("loss_seg")).count(), 4);
    assert_eq!(
        std::fs::read_to_string(base.join("latest")).unwrap(),
        "step-00000004"
    );
    assert!(base.join("step-00000004/weights.safetensors").exists());
    let progress: orchestra_api::TrialProgress =
        serde_json::from_slice(&std::fs::read(base.join("progress.json")).unwrap()).unwrap();
    assert_eq!((progress.step, progress.steps), (4, 4));
    assert_eq!(progress.eta_seconds, Some(0.0));

    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&spec_path));
    assert!(
        !ok && stderr.contains("--resume"),
        "a second run must not overwrite: {stderr}"
    );
    let (ok, stdout, stderr) = run(worker().args(["train", "--resume", "--spec"]).arg(&spec_path));
    assert!(
        ok && stdout.contains("Dice"),
        "resume of a finished trial: {stderr}"
    );

    let (ok, stdout, stderr) = run(worker().args(["eval", "--spec"]).arg(&spec_path));
    assert!(ok, "eval failed: {stderr}");
    let eval: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(eval["step"], 4);
    assert_eq!(
        eval["eval"]["scores"]["dice"].as_f64().unwrap(),
        result.scores.dice,
        "eval reproduces the result"
    );
}

#[test]
fn a_broken_spec_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::tiny_spec(Variant::D2, "memory://x", "broken");
    spec.hyper.batch_size = 0;
    spec.model.downsample = Some(6);
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&path));
    assert!(!ok);
    assert!(
        stderr.contains("bad.yaml")
            && stderr.contains("hyper.batchSize = 0")
            && stderr.contains("model.downsample = 6"),
        "{stderr}"
    );

    std::fs::write(&path, "experiment: x\ntrial: y\nvariant: D5\n").unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&path));
    assert!(!ok && stderr.contains("D5"), "{stderr}");
}

#[test]
fn info_prints_parameters_and_flops() {
    let (ok, stdout, stderr) = run(worker().args(["info", "--preset", "paper", "--size", "128"]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("192 bits") && stdout.contains("C (compressor): 1,428,259 parameters"),
        "{stdout}"
    );
    let (ok, stdout, _) = run(worker().args(["info", "--variant", "D1", "--layers"]));
    assert!(
        ok && stdout.contains("s.down0.conv") && !stdout.contains("compressor"),
        "{stdout}"
    );
}

#[test]
fn export_encode_segment_and_the_latency_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let mut specs = Vec::new();
    for variant in [Variant::D1, Variant::D4] {
        let mut spec = common::tiny_spec(
            variant,
            &store,
            &format!("latency-{}", variant.to_string().to_lowercase()),
        );
        spec.steps = 4;
        let path = dir.path().join(format!("{variant}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&spec).unwrap()).unwrap();
        let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&path));
        assert!(ok, "train {variant}: {stderr}");
        specs.push(path);
    }
    let model = dir.path().join("model.safetensors");
    let (ok, _, stderr) = run(worker()
        .args(["export", "--spec"])
        .arg(&specs[1])
        .arg("-o")
        .arg(&model));
    assert!(ok, "export: {stderr}");

    // Edge to cloud through files: an image, its bitstream, its label map and overlay.
    let sample =
        orchestra_worker::data::synthetic::generate(orchestra_worker::data::SyntheticKind::Lesion, 64, 3, 0);
    let image = dir.path().join("scan.png");
    image::RgbImage::from_raw(64, 64, sample.image)
        .unwrap()
        .save(&image)
        .unwrap();
    let stream = dir.path().join("scan.orc");
    let (ok, stdout, stderr) = run(worker()
        .args(["encode", "--model"])
        .arg(&model)
        .arg(&image)
        .arg("-o")
        .arg(&stream));
    assert!(ok && stdout.contains("bpp"), "encode: {stderr}");
    let bytes = std::fs::read(&stream).unwrap();
    assert!(!bytes.is_empty() && bytes.len() < 64, "{} bytes", bytes.len());
    let (labels, overlay) = (dir.path().join("labels.png"), dir.path().join("overlay.png"));
    let (ok, _, stderr) = run(worker()
        .args(["segment", "--model"])
        .arg(&model)
        .arg(&stream)
        .arg("-o")
        .arg(&labels)
        .arg("--image")
        .arg(&image)
        .arg("--overlay")
        .arg(&overlay));
    assert!(ok, "segment: {stderr}");
    assert_eq!(
        image::GenericImageView::dimensions(&image::open(&labels).unwrap()),
        (64, 64)
    );
    assert_eq!(
        image::GenericImageView::dimensions(&image::open(&overlay).unwrap()),
        (64, 64)
    );

    let out = dir.path().join("latency.json");
    let (ok, stdout, stderr) = run(worker()
        .args([
            "bench-latency",
            "--size",
            "64",
            "--images",
            "2",
            "--gpu",
            "off",
            "--model",
        ])
        .arg(&model)
        .arg("--d1")
        .arg(&specs[0])
        .arg("--out")
        .arg(&out));
    assert!(ok, "bench-latency: {stderr}");
    assert!(
        stdout.contains("| method |") && stdout.contains("transmission @ 23 MB/s"),
        "{stdout}"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods.len(), 5, "{methods:?}");
    for (row, prefix) in rows
        .iter()
        .zip(["Raw image", "JPEG,", "JPEG-2000", "H.264", "Orchestra"])
    {
        let name = row["method"].as_str().unwrap();
        assert!(name.starts_with(prefix), "{name} should start with {prefix}");
        let f = |k: &str| row[k].as_f64().unwrap();
        assert!((f("bpp") - 8.0 * f("bytes") / 4096.0).abs() < 1e-9, "{row}");
        let parts = f("compress_ms") + f("transmission_ms") + f("decode_ms") + f("segment_cpu_ms");
        assert!((f("total_cpu_ms") - parts).abs() < 1e-9, "{row}");
        assert!(
            f("segment_cpu_ms") > 0.0 && row["segment_gpu_ms"].is_null(),
            "{row}"
        );
    }
    assert_eq!(rows[0]["bytes"].as_f64(), Some(3.0 * 4096.0), "raw RGB bytes");
    let orchestra = &rows[4];
    assert!(orchestra["bytes"].as_f64().unwrap() < rows[3]["bytes"].as_f64().unwrap());
    assert!(orchestra["compress_ms"].as_f64().unwrap() > 0.0);
    assert!(dir.path().join("latency.md").exists());

    let (ok, _, stderr) = run(worker()
        .args(["bench-latency", "--size", "60", "--gpu", "off", "--model"])
        .arg(&model));
    assert!(!ok && stderr.contains("--size 60"), "{stderr}");
}

/// Synthetic volumes written as a folder the volume dataset reads: every scan paired with its
/// label map, both agreeing in sides and affine, with the three classes.
#[test]
fn synthetic_volumes_make_a_readable_volume_folder() {
    use orchestra_edge::volume::DEFAULT_MAX_VOXELS;
    use orchestra_edge::volume_dataset::{list_pairs, read_pair};
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run(worker()
        .args([
            "synth-volumes",
            "--count",
            "3",
            "--sides",
            "6,32,40",
            "--seed",
            "9",
            "--out",
        ])
        .arg(dir.path()));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 volumes"), "{stdout}");
    let pairs = list_pairs(dir.path()).unwrap();
    assert_eq!(pairs.len(), 3);
    for p in &pairs {
        let (scan, labels) = read_pair(p, DEFAULT_MAX_VOXELS, None).unwrap();
        assert_eq!(scan.geometry.sides, [6, 32, 40]);
        assert_eq!(scan.geometry.spacing, [2.5, 1.0, 1.0]);
        for class in 0..3u8 {
            assert!(labels.labels.contains(&class), "{}: class {class} missing", p.id);
        }
    }
    let (ok, _, stderr) = run(worker()
        .args(["synth-volumes", "--sides", "0,32,40", "--out"])
        .arg(dir.path()));
    assert!(!ok && stderr.contains("--sides"), "{stderr}");
}

/// A D4 volume trial (3 steps) on four synthetic hearts written as NIfTI, prepared as
/// `preparation` says (`downsample=...` or `spacing=...`), exported: (spec, its file, the
/// model file).
/// Trains and exports a small 3D D4 on four synthetic hearts (images/ + labels/), the scans
/// written as NIfTI files or, with `dicom`, as DICOM series folders.
fn train_volume_model(
    dir: &std::path::Path,
    preparation: &str,
    dicom: bool,
) -> (orchestra_api::TrialSpec, std::path::PathBuf, std::path::PathBuf) {
    use orchestra_api::{ModelSpec, Preset};
    use orchestra_edge::nifti_write::{write_labels, write_volume};
    use orchestra_edge::synthetic_volume::{heart3d, Heart3d};

    let data = dir.join("hearts");
    for sub in ["images", "labels"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    for i in 0..4u64 {
        let (scan, labels) = heart3d(&Heart3d::new([16, 48, 48], 20 + i));
        if dicom {
            let series = format!("1.2.826.0.1.3680043.2.1125.{}", 100 + i);
            orchestra_edge::dicom_write::write_series(&data.join(format!("images/heart{i}")), &scan, &series)
                .unwrap();
        } else {
            write_volume(&data.join(format!("images/heart{i}.nii.gz")), &scan).unwrap();
        }
        write_labels(&data.join(format!("labels/heart{i}.nii.gz")), &labels).unwrap();
    }
    let store = format!("file://{}/store", dir.display());
    let mut spec = common::tiny_spec(Variant::D4, &store, "volume-cli");
    spec.dataset = format!("file://{}?val=1&{preparation}", data.display());
    spec.model = ModelSpec {
        downsample: Some(8),
        patch: Some(vec![16, 16, 16]),
        ..ModelSpec::new(Preset::Small, 16, 3)
    };
    spec.hyper.batch_size = 2;
    spec.steps = 3;
    let spec_path = dir.join("trial.yaml");
    std::fs::write(&spec_path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&spec_path));
    assert!(ok, "{stderr}");
    let model_path = dir.join("model.safetensors");
    let (ok, _, stderr) = run(worker()
        .args(["export", "--spec"])
        .arg(&spec_path)
        .arg("-o")
        .arg(&model_path));
    assert!(ok, "{stderr}");
    (spec, spec_path, model_path)
}

/// `encode` writes `scan` (as a NIfTI file) into a volume stream, `segment` turns that into a
/// label volume; both must succeed: (scan file, stream file, encode's stdout, the labels).
fn encode_and_segment(
    dir: &std::path::Path,
    model_path: &std::path::Path,
    scan: &orchestra_edge::volume::Volume,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    String,
    orchestra_edge::volume::LabelVolume,
) {
    use orchestra_edge::nifti_write::write_volume;
    use orchestra_edge::volume::{read_labels, DEFAULT_MAX_VOXELS};
    let scan_path = dir.join("scan.nii.gz");
    write_volume(&scan_path, scan).unwrap();
    // `orchestra-worker <command> --model <model> <input> -o <output>`, which must succeed.
    let with_model = |command: &str, input: &std::path::Path, output: &std::path::Path| {
        let (ok, stdout, stderr) = run(worker()
            .arg(command)
            .arg("--model")
            .arg(model_path)
            .arg(input)
            .arg("-o")
            .arg(output));
        assert!(ok, "{command}: {stdout}{stderr}");
        stdout
    };
    let stream_path = dir.join("scan.ovol");
    let encoded = with_model("encode", &scan_path, &stream_path);
    let labels_path = dir.join("labels.nii.gz");
    with_model("segment", &stream_path, &labels_path);
    let written = read_labels(&labels_path, DEFAULT_MAX_VOXELS).unwrap();
    (scan_path, stream_path, encoded, written)
}

/// Resampling to a target spacing end to end: the trial's scans are resampled to 2.5 x 1.6 x
/// 1.6 mm (training and validation, with the validation labels kept at the source resolution
/// for Dice); a scan at another spacing with a rotated affine is encoded into a version-2 volume
/// stream (78 bytes of geometry), by the worker and by the edge into the same bytes, and
/// segmented back onto its own voxels with the in-process pipeline's labels; a stream that says
/// it was reduced otherwise is refused by name.
#[test]
fn volumes_resampled_to_a_target_spacing_code_and_come_back_on_the_scan() {
    use orchestra_codec::volume_stream::{unwrap, wrap, Reduction};
    use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
    use orchestra_edge::volume::{read_volume, DEFAULT_MAX_VOXELS};
    use orchestra_worker::codec::model_file::CompressionModel;
    use orchestra_worker::data::VolumeSet;
    use orchestra_worker::eval::volumes::predict_volume;

    let dir = tempfile::tempdir().unwrap();
    let (spec, _, model_path) = train_volume_model(dir.path(), "spacing=2.5x1.6x1.6", false);
    // The hearts are 16 x 48 x 48 at 2.5 x 1 x 1 mm: 16 x 30 x 30 at the target.
    let set = VolumeSet::open(&spec.dataset).unwrap();
    assert_eq!(set.preprocessing.spacing, Some([2.5, 1.6, 1.6]));
    assert_eq!(
        (set.train[0].sides, set.val[0].sides),
        ([16, 30, 30], [16, 30, 30])
    );
    assert_eq!(
        set.val[0].truth().0,
        [16, 48, 48],
        "Dice is scored on the source voxels"
    );

    // A scan at 3 x 0.85 x 1.25 mm, turned 30 degrees about z.
    let mut h = Heart3d::new([13, 41, 50], 99);
    h.spacing = [3.0, 0.85, 1.25];
    let (mut scan, _) = heart3d(&h);
    let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
    scan.geometry.affine = [
        [1.25 * c, -0.85 * s, 0.0, 80.5],
        [1.25 * s, 0.85 * c, 0.0, -40.0],
        [0.0, 0.0, 3.0, 12.25],
    ];
    let (scan_path, stream_path, stdout, written) = encode_and_segment(dir.path(), &model_path, &scan);
    assert!(stdout.contains("78 geometry"), "{stdout}");
    assert_eq!(written.geometry.sides, [13, 41, 50]);
    assert_eq!(written.geometry.affine, scan.geometry.affine);

    // The pipeline in one process: resampled to 16 x 22 x 39, segmented, brought back.
    let read = read_volume(&scan_path, DEFAULT_MAX_VOXELS).unwrap();
    let m = CompressionModel::load(&model_path, tch::Device::Cpu).unwrap();
    let prep = m.volume.clone().expect("the export carries the scan preparation");
    assert_eq!((prep.factor, prep.spacing), ([1, 1, 1], Some([2.5, 1.6, 1.6])));
    let (sides, voxels) = prep.prepare(
        read.voxels.clone(),
        read.geometry.sides,
        read.geometry.affine_spacing(),
    );
    assert_eq!(sides, [16, 22, 39]);
    let p = predict_volume(&m.model, Some(&m.codec), &voxels, sides, tch::Device::Cpu, 4);
    assert_eq!(
        written.labels,
        prep.restore_labels(&p.labels, sides, [13, 41, 50])
    );
    let stream = std::fs::read(&stream_path).unwrap();
    assert_eq!(stream.len(), 78 + p.stream.as_ref().unwrap().len());
    let edge = orchestra_edge::EdgeModel::load(&model_path).unwrap();
    assert_eq!(
        edge.encode_volume(read).unwrap().bytes,
        stream,
        "edge and worker agree"
    );

    // The edge's C plane by plane against libtorch's, through the command: a bit may differ
    // only where libtorch's activation is within the two implementations' rounding of 0.
    let report = dir.path().join("compare.json");
    let (ok, stdout, stderr) = run(worker()
        .arg("compare-edge-volume")
        .arg("--model")
        .arg(&model_path)
        .arg(&scan_path)
        .arg("--out")
        .arg(&report));
    assert!(ok, "compare-edge-volume: {stdout}{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let c = &rows[0]["comparison"];
    let count = |field: &str| c[field].as_u64().unwrap_or_else(|| panic!("{field} in {c}"));
    assert!(count("codeBits") > 0, "{c}");
    assert!(count("bitsDiffering") <= count("bitsWithinRounding"), "{c}");
    assert!(stdout.contains("code bits"), "{stdout}");

    // The edge's benchmark: the same code on one and two threads and on the tiled unfold path,
    // its work counted, its stream the size of the one sent.
    let bench = orchestra_edge::volume_bench::bench_volume(
        &edge,
        orchestra_edge::volume::read_volume(&scan_path, DEFAULT_MAX_VOXELS).unwrap(),
        &[1, 2],
        true,
        |_| {},
    )
    .unwrap();
    let tiles = bench.runs.last().unwrap();
    assert_eq!(tiles.path, "tiles (unfold)");
    assert!(
        bench.runs.len() == 3 || !cfg!(target_arch = "x86_64"),
        "two plane-stream runs and the tiles: {:?}",
        bench.runs
    );
    for r in &bench.runs {
        assert_eq!(
            r.bits_differing_from_first, 0,
            "{} on {} threads",
            r.path, r.threads
        );
        assert!(r.flops > 0.0 && r.seconds > 0.0);
    }
    if bench.runs.len() == 3 {
        let (_, code) = orchestra_codec::volume_stream::unwrap(&stream, DEFAULT_MAX_VOXELS as u64).unwrap();
        assert_eq!(bench.stream_bytes, code.len(), "the code's stream");
        assert_eq!(bench.runs[0].flops, tiles.flops, "one tile: the same work");
    }

    // The same code behind a geometry that says whole factors: refused, naming both.
    let (mut geometry, code) = unwrap(&stream, u64::MAX).unwrap();
    geometry.reduction = Reduction::Factor([1, 1, 1]);
    let relabelled = dir.path().join("factor.ovol");
    std::fs::write(&relabelled, wrap(&geometry, code)).unwrap();
    let (ok, stdout, stderr) = run(worker()
        .arg("segment")
        .arg("--model")
        .arg(&model_path)
        .arg(&relabelled)
        .arg("-o")
        .arg(dir.path().join("never.nii.gz")));
    assert!(
        !ok && stderr.contains("reduced by whole factors [1, 1, 1]")
            && stderr.contains("takes scans resampled to [2.5, 1.6, 1.6] mm"),
        "{stdout}{stderr}"
    );
}

/// Volumes on the command line: a 3D trial on a folder of NIfTI scans (reduced in-plane),
/// exported with its scan preparation; `encode` turns a scan with an oblique affine into one
/// volume stream, `segment` turns that into a NIfTI label volume with the scan's sides and affine
/// whose labels are the in-process pipeline's; damaged geometry and a scan for an image model
/// are refused by name.
#[test]
fn volumes_encode_to_one_stream_and_segment_to_nifti_on_the_scan() {
    use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
    use orchestra_edge::volume::{read_labels, DEFAULT_MAX_VOXELS};
    use orchestra_worker::codec::model_file::CompressionModel;
    use orchestra_worker::data::volumes::expand_labels;
    use orchestra_worker::eval::volumes::predict_volume;

    let dir = tempfile::tempdir().unwrap();
    let (spec, spec_path, model_path) = train_volume_model(dir.path(), "downsample=1x2x2", false);

    // A scan of other sides (not multiples of f) with an oblique, shifted affine.
    let (mut scan, mut truth) = heart3d(&Heart3d::new([13, 41, 50], 99));
    scan.geometry.affine = [
        [0.0, -1.2, 0.3, 80.5],
        [1.1, 0.0, 0.0, -40.0],
        [0.0, 0.2, 3.0, 12.25],
    ];
    truth.geometry = scan.geometry.clone();
    let (scan_path, stream_path, stdout, written) = encode_and_segment(dir.path(), &model_path, &scan);
    assert!(
        stdout.contains("bpp") && stdout.contains("69 geometry"),
        "{stdout}"
    );
    assert_eq!(written.geometry.sides, [13, 41, 50]);
    assert_eq!(
        written.geometry.affine, scan.geometry.affine,
        "on the scan's voxels"
    );

    // The same labels as the pipeline run in one process on the exported model.
    let m = CompressionModel::load(&model_path, tch::Device::Cpu).unwrap();
    let prep = m.volume.clone().expect("the export carries the scan preparation");
    assert_eq!(prep.factor, [1, 2, 2]);
    let (sides, voxels) = prep.prepare(
        scan.voxels.clone(),
        scan.geometry.sides,
        scan.geometry.affine_spacing(),
    );
    let p = predict_volume(&m.model, Some(&m.codec), &voxels, sides, tch::Device::Cpu, 4);
    assert_eq!(
        written.labels,
        expand_labels(&p.labels, sides, [13, 41, 50], [1, 2, 2])
    );
    let stream = std::fs::read(&stream_path).unwrap();
    assert_eq!(
        stream.len(),
        69 + p.stream.as_ref().unwrap().len(),
        "the geometry, then the code"
    );
    // The edge (pure Rust C) prepares, pads and codes the scan into the same bytes.
    let edge = orchestra_edge::EdgeModel::load(&model_path).unwrap();
    let read = orchestra_edge::volume::read_volume(&scan_path, DEFAULT_MAX_VOXELS).unwrap();
    assert_eq!(
        edge.encode_volume(read).unwrap().bytes,
        stream,
        "edge and worker agree"
    );

    // The service answers a volume stream with the same label volume, as NIfTI or RLE JSON.
    {
        use orchestra_worker::serve::{start, BatchOptions, ServeConfig};
        let token = "volume-token-0123456789abcdef";
        let server = start(
            CompressionModel::load(&model_path, tch::Device::Cpu).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            ServeConfig {
                tls: None,
                tokens: vec![token.into()],
                max_body_bytes: 1 << 20,
                concurrency: 2,
                timeout: std::time::Duration::from_secs(60),
                header_timeout: std::time::Duration::from_secs(10),
                batch: BatchOptions::default(),
            },
        )
        .unwrap();
        let url = format!("http://{}/v1/segment", server.addr);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let post = |accept: &str, body: &[u8]| {
            let mut r = agent
                .post(&url)
                .header("accept", accept)
                .header("content-type", "application/octet-stream")
                .header("authorization", &format!("Bearer {token}"))
                .send(body)
                .unwrap();
            (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
        };
        let (status, nifti) = post("application/gzip", &stream);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&nifti));
        let answered = dir.path().join("answer.nii.gz");
        std::fs::write(&answered, &nifti).unwrap();
        let answer = read_labels(&answered, DEFAULT_MAX_VOXELS).unwrap();
        assert_eq!(answer, written, "the service's label volume is segment's");
        let (status, body) = post("application/json", &stream);
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["shape"], serde_json::json!([13, 41, 50]));
        let counted: u64 = json["rle"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[1].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 13 * 41 * 50);
        let mut bad = stream.clone();
        bad[20] ^= 0x01;
        let (status, body) = post("application/gzip", &bad);
        assert!(
            status == 400 && String::from_utf8_lossy(&body).contains("geometry is damaged"),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        server.shutdown();
    }

    // Table 1 on volumes: the codecs' decoded volumes segmented by a D1 model, beside D4.
    let mut d1 = spec.clone();
    d1.variant = Variant::D1;
    d1.trial = "volume-cli-d1".into();
    let d1_path = dir.path().join("d1.yaml");
    std::fs::write(&d1_path, serde_yaml::to_string(&d1).unwrap()).unwrap();
    let (ok, _, stderr) = run(worker().args(["train", "--spec"]).arg(&d1_path));
    assert!(ok, "{stderr}");
    let table_dir = dir.path().join("table");
    let (ok, stdout, stderr) = run(worker()
        .args(["rate-accuracy", "--j2k-rates", "0.5", "--h264-qps", "40", "--d1"])
        .arg(&d1_path)
        .arg("--models")
        .arg(&spec_path)
        .arg("--out")
        .arg(&table_dir));
    assert!(ok, "{stderr}");
    for row in [
        "JPEG-2000 per slice",
        "H.264 over slices (inter)",
        "volume-cli (D4)",
    ] {
        assert!(stdout.contains(row), "{row}: {stdout}");
    }
    assert!(table_dir.join("rate-accuracy.png").is_file());

    // Table 2 for the whole scan: the edge's stream is encode's, the labels are segment's;
    // PyTorch eager's g + s beside it where a Python with torch is at hand.
    let latency = dir.path().join("latency.json");
    let bench_labels = dir.path().join("bench-labels.nii.gz");
    let truth_path = dir.path().join("truth.nii.gz");
    orchestra_edge::nifti_write::write_labels(&truth_path, &truth).unwrap();
    let mut bench = worker();
    bench
        .args([
            "bench-latency-volume",
            "--gpu",
            "off",
            "--precisions",
            "fp32",
            "--model",
        ])
        .arg(&model_path)
        .arg("--scan")
        .arg(&scan_path)
        .arg("--truth")
        .arg(&truth_path)
        .arg("--d1")
        .arg(&d1_path)
        .arg("--write-labels")
        .arg(&bench_labels)
        .arg("--out")
        .arg(&latency);
    let python = pytorch_python();
    if let Some(python) = &python {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/pytorch_sliding_window.py"
        );
        bench.args(["--pytorch", script, "--python"]).arg(python);
    }
    let (ok, stdout, stderr) = run(&mut bench);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| Orchestra D4 | 13 x 41 x 50 |"), "{stdout}");
    assert!(
        stderr.contains("edge, 1 core") && stderr.contains("cores busy"),
        "{stderr}"
    );
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&latency).unwrap()).unwrap();
    let rows = &results["rows"];
    assert_eq!(rows[0]["bytes"], stream.len(), "the stream encode wrote");
    assert_eq!(rows[0]["cloud_precision"], "fp32");
    assert!(rows[0]["s_gflop"].as_f64().unwrap() > 0.0 && rows[0]["g_gflop"].as_f64().unwrap() > 0.0);
    let runs = results["cloud_side_by_side"].as_array().unwrap();
    let dice = runs[0]["dice_vs_truth"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&dice), "{dice}");
    match python {
        // Orchestra, then PyTorch as nnU-Net runs it and in Orchestra's layout: the same
        // windows, and the same labels up to voxels within rounding of a tie.
        Some(_) => {
            assert_eq!(runs.len(), 3, "{runs:?}");
            for r in &runs[1..] {
                assert!(r["framework"].as_str().unwrap().starts_with("pytorch"), "{r}");
                assert_eq!(r["windows"], runs[0]["windows"]);
                let unlike = r["voxels_unlike_first"].as_u64().unwrap();
                assert!(
                    unlike * 1000 <= 13 * 41 * 50,
                    "{unlike} voxels labelled otherwise: {r}"
                );
            }
        }
        None => assert_eq!(runs.len(), 1),
    }
    assert_eq!(rows[1]["method"], "raw scan, D1");
    assert_eq!(rows[1]["g_gflop"], 0.0, "no g for the raw scan");
    assert_eq!(rows[1]["bytes"], 13 * 41 * 50 * 2, "16 bits a voxel");
    let bench_volume = read_labels(&bench_labels, DEFAULT_MAX_VOXELS).unwrap();
    assert!(bench_volume.labels == written.labels, "segment's labels");
    assert_eq!(bench_volume.geometry.affine, written.geometry.affine);

    // Damage in the geometry or the code is refused, naming the part.
    for (at, needle) in [
        (30, "geometry is damaged"),
        (stream.len() - 1, "the code after the geometry"),
    ] {
        let mut bad = stream.clone();
        bad[at] ^= 0x04;
        let bad_path = dir.path().join("bad.ovol");
        std::fs::write(&bad_path, &bad).unwrap();
        let (ok, _, stderr) = run(worker()
            .arg("segment")
            .arg("--model")
            .arg(&model_path)
            .arg(&bad_path)
            .arg("-o")
            .arg(dir.path().join("bad.nii.gz")));
        assert!(!ok && stderr.contains(needle), "byte {at}: {stderr}");
    }
}

/// A dataset whose scans are DICOM series folders (as a scanner exports them) trains and
/// exports without conversion, and the worker reads it onto the voxels of the same scans as
/// NIfTI files: the same ids, sides and labels, intensities within the series' quantisation.
#[test]
fn dicom_series_folders_train_without_conversion() {
    use orchestra_edge::nifti_write::{write_labels, write_volume};
    use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
    use orchestra_worker::data::volumes::VolumeSet;

    let dir = tempfile::tempdir().unwrap();
    let (_, _, model_path) = train_volume_model(dir.path(), "downsample=1x2x2", true);
    let edge = orchestra_edge::EdgeModel::load(&model_path).unwrap();
    assert_eq!(edge.dims, 3);

    let nifti = dir.path().join("hearts-nifti");
    for i in 0..4u64 {
        let (scan, labels) = heart3d(&Heart3d::new([16, 48, 48], 20 + i));
        for sub in ["images", "labels"] {
            std::fs::create_dir_all(nifti.join(sub)).unwrap();
        }
        write_volume(&nifti.join(format!("images/heart{i}.nii.gz")), &scan).unwrap();
        write_labels(&nifti.join(format!("labels/heart{i}.nii.gz")), &labels).unwrap();
    }
    let open = |root: &std::path::Path| VolumeSet::open(&format!("file://{}?val=1", root.display())).unwrap();
    let (from_dicom, from_nifti) = (open(&dir.path().join("hearts")), open(&nifti));
    assert_eq!(from_dicom.classes, from_nifti.classes);
    let all = |s: &VolumeSet| {
        s.train
            .iter()
            .chain(&s.val)
            .map(|v| (v.id.clone(), v.sides))
            .collect::<Vec<_>>()
    };
    assert_eq!(all(&from_dicom), all(&from_nifti));
    for (d, n) in from_dicom
        .train
        .iter()
        .chain(&from_dicom.val)
        .zip(from_nifti.train.iter().chain(&from_nifti.val))
    {
        assert_eq!(d.labels, n.labels, "{}", d.id);
        let off = d
            .voxels
            .iter()
            .zip(&n.voxels)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(off < 1e-3, "{}: normalised intensities differ by {off}", d.id);
    }
}
