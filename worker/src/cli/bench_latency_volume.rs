//! `bench-latency-volume`: the paper's Table 2 for one whole scan (a 512 x 512 x N CT): the
//! edge's compression on one core and on every core, transmission, entropy decoding and the
//! cloud's g + sliding-window s, beside the raw scan segmented by D1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use orchestra_api::{Precision, Variant};
use orchestra_edge::nifti_write::write_labels;
use orchestra_edge::scan::read_scan;
use orchestra_edge::volume::{read_labels, LabelVolume, Volume, DEFAULT_MAX_VOXELS};
use orchestra_edge::EdgeModel;
use orchestra_worker::codec::model_file::{CompressionModel, VOLUME_WINDOW_BATCH};
use orchestra_worker::data::TrainingData;
use orchestra_worker::eval::cloud_pass::cpu_has_bf16;
use orchestra_worker::eval::volumes::CloudPass;
use orchestra_worker::latency::pytorch_cloud::{DecodedCode, PytorchScript};
use orchestra_worker::latency::side_by_side::{self, CloudRun};
use orchestra_worker::latency::volumes::{orchestra_row, raw_row, table, EdgeRun, VolumeLatencyRow};
use tch::Device;

use super::bench_latency::{gpu_device, GpuColumn};

#[derive(clap::Args)]
pub struct VolumeLatencyArgs {
    /// Orchestra's exported volume model (`orchestra-worker export` of a 3D D2-D4 trial).
    #[arg(long)]
    model: PathBuf,
    /// The scan: a `.nii(.gz)` file or a DICOM series folder.
    #[arg(long)]
    scan: PathBuf,
    /// Trial spec of a trained 3D D1 model, for the raw scan's row. Without it only
    /// Orchestra's row is measured.
    #[arg(long)]
    d1: Option<PathBuf>,
    /// Link speed for the transmission time (the paper: 300 MB in 13 s).
    #[arg(long, default_value_t = 23.0)]
    link_mb_per_s: f64,
    #[arg(long, value_enum, default_value_t = GpuColumn::Auto)]
    gpu: GpuColumn,
    /// Write Orchestra's label volume here (`.nii.gz`, the scan's sides and affine; the first
    /// precision's).
    #[arg(long)]
    write_labels: Option<PathBuf>,
    /// The cloud's precisions, one Orchestra row each (default: fp32, and bf16 where this CPU
    /// has bf16 dot products).
    #[arg(long, value_delimiter = ',')]
    precisions: Vec<Precision>,
    /// PyTorch eager's g + sliding-window s side by side, in each precision, on the same code:
    /// `scripts/pytorch_sliding_window.py`, run by `--python`.
    #[arg(long)]
    pytorch: Option<PathBuf>,
    /// A Python with torch (the one `make setup` installs: .venv/bin/python).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// The scan's ground-truth label volume: each cloud run's mean Dice against it.
    #[arg(long)]
    truth: Option<PathBuf>,
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: VolumeLatencyArgs) -> Result<()> {
    let report = |line: &str| eprintln!("  {line}");
    let gpu = gpu_device(args.gpu)?;
    let edge = EdgeModel::load(&args.model)?;
    let cloud = CompressionModel::load(&args.model, Device::Cpu)?;
    let cloud_gpu = gpu.map(|d| CompressionModel::load(&args.model, d)).transpose()?;
    let started = std::time::Instant::now();
    let scan = read_scan(&args.scan, DEFAULT_MAX_VOXELS)
        .with_context(|| format!("reading {}", args.scan.display()))?;
    let truth = args
        .truth
        .as_ref()
        .map(|path| read_truth(path, &scan))
        .transpose()?;
    let [z, y, x] = scan.geometry.sides;
    eprintln!(
        "{}: {z} x {y} x {x} voxels read in {:.1} s (not counted below: the scanner has it in memory)",
        args.scan.display(),
        started.elapsed().as_secs_f64()
    );
    let precisions = if args.precisions.is_empty() {
        let mut p = vec![Precision::Fp32];
        p.extend(cpu_has_bf16().then_some(Precision::Bf16));
        p
    } else {
        args.precisions.clone()
    };
    eprintln!("Orchestra ({}):", cloud.model.variant);
    let edge_run = EdgeRun::measure(&edge, &cloud, &scan, report).map_err(anyhow::Error::msg)?;
    let cloud_gpu = cloud_gpu.as_ref();
    let (mut rows, mut runs) = orchestra_rows(&args, (&cloud, cloud_gpu), &edge_run, &scan, &precisions)?;
    match &args.d1 {
        Some(path) => rows.push(d1_row(path, gpu, &scan, &precisions, args.link_mb_per_s)?),
        None => eprintln!("no --d1 model: the raw scan's row is skipped"),
    }
    let text = table(&rows);
    print!("{text}");
    println!("(one whole scan per stage, timed once; the scan's reading from disk is not counted)");
    side_by_side::compare(
        &mut runs,
        truth.as_deref().map(|t| (t, cloud.model.config.classes)),
    );
    let comparison = side_by_side::table(&runs);
    println!("\nthe cloud's g + s side by side, on the same code:\n{comparison}");
    if let Some(path) = &args.out {
        let results = serde_json::json!({ "rows": rows, "cloud_side_by_side": runs });
        super::bench::write_results(path, &results, &format!("{text}\n{comparison}"))?;
    }
    Ok(())
}

/// Orchestra's row in each precision, with its cloud run and PyTorch's beside it (with
/// `--pytorch`); the first precision's labels written where `--write-labels` says.
fn orchestra_rows(
    args: &VolumeLatencyArgs,
    (cloud, cloud_gpu): (&CompressionModel, Option<&CompressionModel>),
    edge_run: &EdgeRun,
    scan: &Volume,
    precisions: &[Precision],
) -> Result<(Vec<VolumeLatencyRow>, Vec<CloudRun>)> {
    let (mut rows, mut runs) = (Vec::new(), Vec::new());
    let report = |line: &str| eprintln!("  {line}");
    for (i, &precision) in precisions.iter().enumerate() {
        let pass = CloudPass {
            window_batch: VOLUME_WINDOW_BATCH,
            precision,
        };
        let (row, labels) = orchestra_row(cloud, cloud_gpu, edge_run, pass, args.link_mb_per_s, report)
            .map_err(anyhow::Error::msg)?;
        if let (0, Some(path)) = (i, &args.write_labels) {
            let geometry = scan.geometry.clone();
            write_labels(
                path,
                &LabelVolume {
                    geometry,
                    labels: labels.clone(),
                },
            )?;
            eprintln!("  label volume written to {}", path.display());
        }
        runs.push(CloudRun {
            framework: format!("Orchestra (tch {})", tch_version()),
            precision: precision.name().into(),
            g_s: row.g_cpu_s,
            s_s: row.s_cpu_s,
            windows: row.windows,
            gflop: row.g_gflop + row.s_gflop,
            labels,
            voxels_unlike_first: 0,
            dice_vs_truth: None,
        });
        if let Some(script) = &args.pytorch {
            // nnU-Net's way in every precision; in fp32 also Orchestra's layout, to show what
            // of the difference is the layout.
            let layouts: &[&str] = match precision {
                Precision::Fp32 => &["nnunet", "channels-last"],
                Precision::Bf16 => &["nnunet"],
            };
            for layout in layouts {
                runs.push(pytorch_run(args, script, cloud, edge_run, (pass, layout), &row)?);
            }
        }
        rows.push(row);
    }
    Ok((rows, runs))
}

/// The scan's ground truth, on its grid.
fn read_truth(path: &Path, scan: &Volume) -> Result<Vec<u8>> {
    let truth =
        read_labels(path, DEFAULT_MAX_VOXELS).with_context(|| format!("reading {}", path.display()))?;
    if truth.geometry.sides != scan.geometry.sides {
        bail!(
            "--truth {}: sides {:?}, the scan's are {:?}",
            path.display(),
            truth.geometry.sides,
            scan.geometry.sides
        );
    }
    Ok(truth.labels)
}

/// The libtorch version tch runs on (the venv's torch).
fn tch_version() -> String {
    std::env::var("LIBTORCH")
        .ok()
        .and_then(|dir| {
            let dist = std::fs::read_dir(Path::new(&dir).parent()?).ok()?;
            dist.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find_map(|n| Some(n.strip_prefix("torch-")?.strip_suffix(".dist-info")?.to_string()))
        })
        .unwrap_or_else(|| "libtorch".into())
}

/// PyTorch eager's g + s on the same code, in the same precision and window batch.
fn pytorch_run(
    args: &VolumeLatencyArgs,
    script: &Path,
    cloud: &CompressionModel,
    run: &EdgeRun,
    (pass, layout): (CloudPass, &str),
    ours: &VolumeLatencyRow,
) -> Result<CloudRun> {
    let (source, prepared) = cloud.volume_sides(&run.geometry)?;
    let code = DecodedCode {
        shape: &run.shape,
        bits: &run.bits,
        prepared_sides: prepared,
    };
    let py = PytorchScript {
        python: &args.python,
        script,
    };
    let (m, labels) = py
        .run(
            &args.model,
            code,
            tch::get_num_threads(),
            pass.precision,
            pass.window_batch,
            layout,
        )
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "  {} ({}, {} threads): g {:.1} s, s over {} windows {:.1} s, peak RSS {:.0} MB",
        m.framework, m.precision, m.threads, m.g_s, m.windows, m.s_s, m.peak_rss_mb
    );
    if m.windows != ours.windows {
        bail!("PyTorch slid {} windows, Orchestra {}", m.windows, ours.windows);
    }
    Ok(CloudRun {
        framework: m.framework,
        precision: m.precision,
        g_s: m.g_s,
        s_s: m.s_s,
        windows: m.windows,
        gflop: ours.g_gflop + ours.s_gflop,
        labels: cloud.preparation()?.restore_labels(&labels, prepared, source),
        voxels_unlike_first: 0,
        dice_vs_truth: None,
    })
}

/// The raw scan segmented by a trained D1, in the first precision (fp32 by default).
fn d1_row(
    path: &Path,
    gpu: Option<Device>,
    scan: &Volume,
    precisions: &[Precision],
    link_mb_per_s: f64,
) -> Result<VolumeLatencyRow> {
    let spec = super::trial::read_spec(path)?;
    if spec.variant != Variant::D1 {
        bail!("--d1 {}: variant {}, expected D1", path.display(), spec.variant);
    }
    let (d1, _, data) = super::trial::load_checkpoint(&spec, None)?;
    d1.cloud_layout();
    let TrainingData::Volumes(set) = data else {
        bail!("--d1 {}: not a volume model", path.display());
    };
    let d1_gpu = gpu
        .map(|device| d1.copy_to(device))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    eprintln!("raw scan, D1:");
    let pass = CloudPass {
        window_batch: VOLUME_WINDOW_BATCH,
        precision: precisions.first().copied().unwrap_or_default(),
    };
    let report = |line: &str| eprintln!("  {line}");
    let (row, _) = raw_row(
        &d1,
        d1_gpu.as_ref(),
        &set.preprocessing,
        scan,
        pass,
        link_mb_per_s,
        report,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(row)
}
