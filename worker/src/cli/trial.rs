//! The commands on one trial: train it, evaluate or export one of its checkpoints, and describe
//! its networks; with the helpers every command that reads a trial spec or a checkpoint uses.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use orchestra_api::{ModelSpec, Preset, TrialSpec, Variant};
use orchestra_store::layout::TrialKeys;
use orchestra_worker::data::TrainingData;
use orchestra_worker::nets::Model;
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::{self, device_for_spec, Outcome, RunOptions};
use orchestra_worker::{eval, info};

/// Train one trial from its spec; writes checkpoints, metrics.jsonl and result.json.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub spec: PathBuf,
    /// Continue from the latest checkpoint if there is one.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds between progress reports (a log line without a bar, and the store's
    /// progress.json that `orchestra run` shows); 0: none.
    #[arg(long, default_value_t = 15.0)]
    pub progress_every_s: f64,
    /// Train only to this step, a rung of the search (below the spec's steps): checkpoint,
    /// write the rung record, exit. Runners promote the trial by starting it again with a
    /// higher target; it continues from the checkpoint.
    #[arg(long)]
    pub until: Option<u64>,
    #[command(flatten)]
    pub dist: orchestra_worker::dist::DistArgs,
}

/// Print each network's layers, parameter count and FLOPs at a given input size.
#[derive(clap::Args)]
pub struct InfoArgs {
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    #[arg(long, default_value_t = 2)]
    pub dims: u32,
    #[arg(long, default_value = "D4")]
    pub variant: Variant,
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Classes including background.
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
    /// Print every layer, not just the totals.
    #[arg(long)]
    pub layers: bool,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let TrainArgs {
        spec,
        resume,
        no_progress,
        progress_every_s,
        until,
        dist,
    } = args;
    let spec = read_spec(&spec)?;
    if until == Some(0) {
        anyhow::bail!("--until 0: the step target must be at least 1");
    }
    let opts = RunOptions {
        resume,
        progress: !no_progress && std::io::stderr().is_terminal(),
        stop_after: None,
        until,
        dist: dist.options(),
        bucket_bytes: dist.bucket_bytes(),
        progress_every: std::time::Duration::from_secs_f64(progress_every_s.clamp(0.0, 86_400.0)),
    };
    match train::run_trial(&spec, &opts)? {
        Outcome::Finished(result) => {
            print_result(&result, if spec.model.dims == 3 { "volume" } else { "image" });
            println!(
                "result: {}/{}",
                spec.store.trim_end_matches('/'),
                TrialKeys::new(&spec.experiment, &spec.trial).result()
            );
        }
        Outcome::Paused { step, rung: None } => println!("paused at step {step}"),
        Outcome::Paused { step, rung: Some(r) } => println!(
            "rung reached at step {step}: Dice {:.4} at {:.5} bpp (rung record: {}/{})",
            r.scores.dice,
            r.bpp(),
            spec.store.trim_end_matches('/'),
            TrialKeys::new(&spec.experiment, &spec.trial).rung(step)
        ),
    }
    Ok(())
}

pub fn eval(spec: &Path, step: Option<u64>) -> Result<()> {
    let spec = read_spec(spec)?;
    let (model, step, data) = load_checkpoint(&spec, step)?;
    let device = model.vs.device();
    let batch = spec.hyper.batch_size as usize;
    let e = match data {
        TrainingData::Images(d) => eval::evaluate_images(&model, &d.val, d.channels, d.size, device, batch),
        TrainingData::Volumes(v) => eval::evaluate_volumes(&model, &v.val, &v.preprocessing, device, batch),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"step": step, "eval": e}))?
    );
    Ok(())
}

pub fn export(spec: &Path, step: Option<u64>, out: &Path) -> Result<()> {
    let spec = read_spec(spec)?;
    let (model, step, data) = load_checkpoint(&spec, step)?;
    // A volume model carries how its scans were prepared: the edge repeats it.
    let volume = match &data {
        TrainingData::Volumes(v) => Some(&v.preprocessing),
        TrainingData::Images(_) => None,
    };
    orchestra_worker::codec::model_file::CompressionModel::save_with(&model, volume, out)?;
    println!("{}: {} step {step}", out.display(), spec.trial);
    Ok(())
}

pub fn info(args: InfoArgs) -> Result<()> {
    let InfoArgs {
        preset,
        size,
        dims,
        variant,
        channels,
        classes,
        layers,
    } = args;
    if channels == 0 || classes < 2 {
        bail!("--channels must be at least 1 and --classes at least 2 (background included)");
    }
    let model = ModelSpec::new(preset, size, dims);
    let probe = TrialSpec {
        experiment: "info".into(),
        trial: "info".into(),
        variant,
        dataset: "synthetic://lesion".into(),
        model: model.clone(),
        hyper: Default::default(),
        steps: 1,
        seed: 0,
        world_size: 1,
        store: "memory://info".into(),
        checkpoint_every: 0,
        keep_checkpoints: 1,
        eval_every: 0,
        device: Default::default(),
    };
    probe.validate("command line")?;
    let config = orchestra_worker::nets::config::resolve(&model, channels, classes);
    let networks = info::describe(&config, variant);
    print!("{}", info::render(&config, &networks, layers));
    Ok(())
}

pub fn read_spec(path: &Path) -> Result<TrialSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trial spec {}", path.display()))?;
    Ok(TrialSpec::from_yaml(&text, &path.display().to_string())?)
}

/// The model of a trial's checkpoint (`step`, or the latest), on the trial's device, and the
/// trial's dataset (it says how many channels and classes the networks were built for).
pub fn load_checkpoint(spec: &TrialSpec, step: Option<u64>) -> Result<(Model, u64, TrainingData)> {
    let ts = TrialStore::new(Store::open(&spec.store)?, &spec.experiment, &spec.trial);
    let step = match step {
        Some(s) => s,
        None => ts
            .latest_step()?
            .with_context(|| format!("trial {} has no checkpoint in {}", spec.trial, spec.store))?,
    };
    let ckpt = ts.load(step)?;
    let data = TrainingData::open(&spec.dataset, &spec.model)?;
    let config = orchestra_worker::nets::config::resolve(&spec.model, data.channels(), data.classes());
    let model = Model::new(config, spec.variant, device_for_spec(spec)?);
    model
        .load_weights(&ckpt.weights)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("checkpoint step {step}"))?;
    Ok((model, step, data))
}

/// A trial's scores; `unit` is what was scored (an image or a whole volume).
fn print_result(r: &orchestra_api::TrialResult, unit: &str) {
    println!(
        "{} {}: Dice {:.4}  IoU {:.4}  (per class Dice {:?}) on {} held-out {unit}s",
        r.trial,
        r.variant,
        r.scores.dice,
        r.scores.iou,
        r.scores
            .dice_per_class
            .iter()
            .map(|d| format!("{d:.4}"))
            .collect::<Vec<_>>(),
        r.scores.images
    );
    if let Some(rate) = &r.rate {
        if let (Some(bpp), Some(no_header), Some(bytes)) =
            (rate.bpp, rate.bpp_no_header, rate.mean_stream_bytes)
        {
            println!(
                "  real bitstreams: {bytes:.1} bytes per {unit} = {bpp:.5} bpp ({no_header:.5} without the header), {} round-trip failures",
                rate.round_trip_failures
            );
        }
        println!(
            "  code {} bits = {:.5} bpp raw; estimated {:.5} bpp under the learned bit model (training estimate, not a real bitstream)",
            rate.code_bits, rate.bits_per_pixel_raw, rate.bpp_estimate
        );
    }
    println!(
        "  {} steps in {:.1}s ({:.1} images/s); parameters C {} g {} s {} D {} q {}",
        r.steps,
        r.timings.train_seconds,
        r.timings.train_images_per_second,
        r.params.compressor,
        r.params.reconstructor,
        r.params.segmentor,
        r.params.critic,
        r.params.bit_model
    );
}
