//! `orchestra-worker bench`: training images per second and peak resident memory per variant.
//! Each variant runs in its own child process so that its peak memory is its own.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use orchestra_api::{DeviceKind, ModelSpec, Precision, Preset, SegLoss, TrialSpec, Variant};
use orchestra_worker::data::TrainingData;
use orchestra_worker::dist::{self, DistArgs};
use orchestra_worker::train::{device_for_spec, Trainer};
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "small")]
    preset: Preset,
    #[arg(long, default_value_t = 128)]
    size: u32,
    #[arg(long, default_value_t = 8)]
    batch: u32,
    /// Timed steps per variant (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// 3 for volumes: synthetic cardiac volumes (3 classes) in patches of `--patch`, s the 3D
    /// U-Net, nnU-Net's loss.
    #[arg(long, default_value_t = 2)]
    dims: u8,
    /// A volume model's training patch, z,y,x.
    #[arg(long, value_delimiter = ',', default_value = "32,64,64")]
    patch: Vec<u32>,
    /// Arithmetic of the forward passes: fp32, or bf16 autocast (`hyper.precision`).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Where the JSON results go (a Markdown table is written beside it).
    #[arg(long, default_value = "bench-results/worker-train.json")]
    out: PathBuf,
    /// Measure only this variant in this process and print one JSON line (used internally,
    /// and under `mpirun`: rank 0 prints).
    #[arg(long)]
    variant: Option<Variant>,
    #[command(flatten)]
    dist: DistArgs,
}

#[derive(Serialize, Deserialize)]
struct Measurement {
    variant: Variant,
    preset: String,
    /// The image side, or the volume patch's sides (z x y x x).
    size: String,
    /// Pixels (voxels) of one input.
    #[serde(default)]
    pixels: u64,
    batch: u32,
    device: String,
    #[serde(default)]
    precision: Precision,
    threads: i32,
    steps: u64,
    seconds: f64,
    images_per_second: f64,
    ms_per_step: f64,
    peak_rss_mb: f64,
    #[serde(default)]
    backend: String,
    #[serde(default = "one")]
    world_size: usize,
    /// Share of the timed steps' wall time that rank 0 spent in collectives.
    #[serde(default)]
    communication_share: f64,
}

fn one() -> usize {
    1
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The trial one bench measurement trains: synthetic lesions (2D) or hearts (3D patches) at the
/// arguments' sizes, `steps` plus three warm-up steps.
fn bench_spec(args: &BenchArgs, variant: Variant, device: DeviceKind) -> Result<TrialSpec> {
    let (dataset, model, seg_loss) = if args.dims == 3 {
        let [z, y, x] = <[u32; 3]>::try_from(args.patch.as_slice())
            .map_err(|_| anyhow::anyhow!("--patch {:?}: expected z,y,x", args.patch))?;
        let model = ModelSpec {
            patch: Some(vec![z, y, x]),
            ..ModelSpec::new(args.preset, y, 3)
        };
        (
            format!("synthetic://heart3d?n=12&sides={z}x{y}x{x}&seed=1&val=2"),
            model,
            SegLoss::DiceCe,
        )
    } else {
        (
            format!("synthetic://lesion?n=64&size={}&seed=1&val=8", args.size),
            ModelSpec::new(args.preset, args.size, 2),
            SegLoss::Mse,
        )
    };
    Ok(TrialSpec {
        experiment: "bench".into(),
        trial: format!("bench-{}", variant.to_string().to_lowercase()),
        variant,
        dataset,
        model,
        hyper: orchestra_api::Hyper {
            batch_size: args.batch,
            seg_loss,
            precision: args.precision,
            ..Default::default()
        },
        steps: args.steps + 3,
        seed: 1,
        world_size: 1,
        store: "memory://bench".into(),
        checkpoint_every: 0,
        keep_checkpoints: 1,
        eval_every: 0,
        device,
    })
}

fn measure(args: &BenchArgs, variant: Variant) -> Result<Measurement> {
    let device = match args.device.as_str() {
        "cpu" => DeviceKind::Cpu,
        "cuda" => DeviceKind::Cuda,
        other => bail!("--device {other}: expected cpu or cuda"),
    };
    let spec = bench_spec(args, variant, device)?;
    let pixels: u64 = spec.model.sides().iter().map(|&s| s as u64).product();
    let size = spec
        .model
        .sides()
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("x");
    spec.validate("bench arguments")?;
    let comm = dist::connect(&args.dist.options(), device_for_spec(&spec)?)?;
    let (backend, world) = (comm.backend(), comm.world_size());
    let spec = TrialSpec {
        world_size: world as u32,
        ..spec
    };
    let data = TrainingData::open(&spec.dataset, &spec.model)?;
    let mut trainer = Trainer::with_collective(spec, data, comm, args.dist.bucket_bytes())?;
    for _ in 0..3 {
        trainer.train_step()?;
    }
    let comm_before = trainer.comm_seconds;
    let started = Instant::now();
    for _ in 0..args.steps {
        trainer.train_step()?;
    }
    if let tch::Device::Cuda(i) = trainer.device {
        tch::Cuda::synchronize(i as i64);
    }
    let seconds = started.elapsed().as_secs_f64();
    let comm_seconds = trainer.comm_seconds - comm_before;
    Ok(Measurement {
        variant,
        preset: format!("{:?}", args.preset).to_lowercase(),
        size,
        pixels,
        batch: args.batch,
        device: args.device.clone(),
        precision: args.precision,
        threads: tch::get_num_threads(),
        steps: args.steps,
        seconds,
        images_per_second: (args.steps * args.batch as u64 * world as u64) as f64 / seconds,
        ms_per_step: 1000.0 * seconds / args.steps as f64,
        peak_rss_mb: peak_rss_mb(),
        backend: backend.to_string(),
        world_size: world,
        communication_share: comm_seconds / seconds,
    })
}

/// The child process that measures variant `v` alone (a fresh process: its peak RSS is its own).
fn child_command(exe: &std::path::Path, args: &BenchArgs, v: Variant) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "bench",
        "--variant",
        &v.to_string(),
        "--preset",
        &format!("{:?}", args.preset).to_lowercase(),
    ])
    .args([
        "--size",
        &args.size.to_string(),
        "--batch",
        &args.batch.to_string(),
        "--dims",
        &args.dims.to_string(),
        "--patch",
        &args
            .patch
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ])
    .args(["--steps", &args.steps.to_string(), "--device", &args.device])
    .args(["--precision", args.precision.name()])
    .args([
        "--dist",
        args.dist.backend.to_possible_value().expect("named").get_name(),
    ])
    .args(["--bucket-mib", &args.dist.bucket_mib.to_string()]);
    cmd
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(v) = args.variant {
        let m = measure(&args, v)?;
        if dist::started_by_mpirun() && std::env::var("OMPI_COMM_WORLD_RANK").is_ok_and(|r| r != "0") {
            return Ok(());
        }
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut rows = Vec::new();
    for v in Variant::ALL {
        let input = if args.dims == 3 {
            format!("{:?} patches", args.patch)
        } else {
            format!("{}px", args.size)
        };
        eprintln!(
            "bench: {v} ({} preset, {input}, batch {}, {} steps)",
            format!("{:?}", args.preset).to_lowercase(),
            args.batch,
            args.steps
        );
        let out = child_command(&exe, &args, v)
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!("bench {v} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let m: Measurement = serde_json::from_slice(out.stdout.trim_ascii()).context("bench child output")?;
        rows.push(m);
    }
    let per_second = if args.dims == 3 { "patches/s" } else { "images/s" };
    let mut table = format!("| variant | preset | size | batch | device | precision | backend x ranks | threads | {per_second} | ms/step | comm share | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for m in &rows {
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} x {} | {} | {:.1} | {:.1} | {:.1} % | {:.0} |\n",
            m.variant,
            m.preset,
            m.size,
            m.batch,
            m.device,
            m.precision,
            m.backend,
            m.world_size,
            m.threads,
            m.images_per_second,
            m.ms_per_step,
            100.0 * m.communication_share,
            m.peak_rss_mb
        );
    }
    print!("{table}");
    write_results(&args.out, &rows, &table)?;
    Ok(())
}

/// Writes benchmark rows as JSON at `out` and the printed table as Markdown beside it.
pub fn write_results(out: &std::path::Path, rows: &impl Serialize, table: &str) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(rows)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let md = out.with_extension("md");
    std::fs::write(&md, table).with_context(|| format!("cannot write {}", md.display()))?;
    println!("written: {} and {}", out.display(), md.display());
    Ok(())
}
