//! `orchestra-worker`: trains, evaluates and describes the paper's networks.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orchestra_api::{ModelSpec, Preset, TrialSpec, Variant};
use orchestra_store::layout::TrialKeys;
use orchestra_worker::data::{Dataset, TrainingData};
use orchestra_worker::info;
use orchestra_worker::nets::{Model, NetConfig};
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::{self, device_for_spec, Outcome, RunOptions};

mod cli;

use cli::{bench, bench_allreduce, bench_latency, bench_latency_volume, codec as codec_cli};

#[derive(Parser)]
#[command(
    name = "orchestra-worker",
    version,
    about = "Train, evaluate and describe Orchestra's compression and segmentation networks"
)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one trial from its spec; writes checkpoints, metrics.jsonl and result.json.
    Train {
        #[arg(long)]
        spec: PathBuf,
        /// Continue from the latest checkpoint if there is one.
        #[arg(long)]
        resume: bool,
        /// No progress bar even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Seconds between progress reports (a log line without a bar, and the store's
        /// progress.json that `orchestra run` shows); 0: none.
        #[arg(long, default_value_t = 15.0)]
        progress_every_s: f64,
        /// Train only to this step, a rung of the search (below the spec's steps): checkpoint,
        /// write the rung record, exit. Runners promote the trial by starting it again with a
        /// higher target; it continues from the checkpoint.
        #[arg(long)]
        until: Option<u64>,
        #[command(flatten)]
        dist: orchestra_worker::dist::DistArgs,
    },
    /// Evaluate a trial's checkpoint on the validation split and print the scores as JSON.
    Eval {
        #[arg(long)]
        spec: PathBuf,
        /// Checkpoint step (default: the latest).
        #[arg(long)]
        step: Option<u64>,
    },
    /// Print each network's layers, parameter count and FLOPs at a given input size.
    Info {
        #[arg(long, default_value = "small")]
        preset: Preset,
        #[arg(long, default_value_t = 128)]
        size: u32,
        #[arg(long, default_value_t = 2)]
        dims: u32,
        #[arg(long, default_value = "D4")]
        variant: Variant,
        #[arg(long, default_value_t = 3)]
        channels: usize,
        /// Classes including background.
        #[arg(long, default_value_t = 2)]
        classes: usize,
        /// Print every layer, not just the totals.
        #[arg(long)]
        layers: bool,
    },
    /// Training throughput and peak memory per variant (see `make bench`).
    Bench(bench::BenchArgs),
    /// All-reduce throughput of the collectives backend for bucket sizes 1-64 MiB (run it
    /// under `mpirun -n 2`, or with --dist nccl and the rendezvous variables).
    BenchAllreduce(bench_allreduce::AllReduceArgs),
    /// Package a trial's checkpoint as a deployable model file (C, q, g, s; no critic).
    Export {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        step: Option<u64>,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Edge side: compress an image (PNG, JPEG) or a scan (NIfTI `.nii`, `.nii.gz`, or a DICOM
    /// series folder; volume models) into a bitstream.
    Encode {
        #[arg(long)]
        model: PathBuf,
        image: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Print the code bits of a bitstream (checks it completely).
    Decode {
        #[arg(long)]
        model: PathBuf,
        stream: PathBuf,
        #[command(flatten)]
        limits: codec_cli::LimitFlags,
    },
    /// Cloud side: segment a bitstream into a label map PNG (and an overlay on the original), or
    /// a volume stream into a NIfTI label volume (`-o labels.nii.gz`) on the scan's voxels.
    Segment {
        #[arg(long)]
        model: PathBuf,
        stream: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Write an overlay of the label map on this image...
        #[arg(long, requires = "overlay")]
        image: Option<PathBuf>,
        /// ... to this file.
        #[arg(long, requires = "image")]
        overlay: Option<PathBuf>,
        #[command(flatten)]
        limits: codec_cli::LimitFlags,
    },
    /// Cloud side: serve POST /v1/segment (bitstream in, label map out), /healthz, /metrics.
    Serve {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key", conflicts_with = "insecure")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP (loopback tests only: the bitstreams are medical data).
        #[arg(long)]
        insecure: bool,
        /// Bearer tokens, one per line (at least 16 characters each).
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 64 * 1024)]
        max_body_bytes: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Close connections that send no complete request headers for this long (new, after
        /// the TLS handshake, or idle between requests).
        #[arg(long, default_value_t = 10_000)]
        header_timeout_ms: u64,
        #[command(flatten)]
        limits: codec_cli::LimitFlags,
        /// Where g + s run: cpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Most codes segmented in one forward pass (1: no batching).
        #[arg(long, default_value_t = 16)]
        max_batch: usize,
        /// How long a batch waits for more requests after its first (0: take what is queued).
        #[arg(long, default_value_t = 0.0)]
        batch_wait_ms: f64,
    },
    /// The edge's C (orchestra-edge, pure Rust) against libtorch's on a dataset's held-out
    /// split: differing code bits, streams decoded in the cloud, Dice from each encoder's
    /// streams, and encoding latency side by side.
    CompareEdge {
        #[arg(long)]
        model: PathBuf,
        /// Dataset URI whose held-out split is compared (its images at the model's size).
        #[arg(long)]
        dataset: String,
        /// Compare at most this many held-out images.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the comparison as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a dataset's held-out images as PNG files (inputs for the edge's load test).
    Samples {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        size: u32,
        #[arg(long, default_value_t = 16)]
        count: usize,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Write seeded synthetic cardiac volumes (a blood pool inside a myocardium-like wall,
    /// bias field, noise) as `images/heartNNN.nii.gz` and `labels/heartNNN.nii.gz`.
    SynthVolumes {
        #[arg(short, long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: usize,
        /// Sides z,y,x.
        #[arg(long, default_value = "12,96,96", value_delimiter = ',')]
        sides: Vec<usize>,
        /// Voxel spacing z,y,x in millimetres.
        #[arg(long, default_value = "2.5,1,1", value_delimiter = ',')]
        spacing: Vec<f32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Latency breakdown from the edge to the label map, per method (the paper's Table 2).
    BenchLatency(bench_latency::LatencyArgs),
    /// The same for one whole scan (a 512 x 512 x N CT): the edge on one core and on every
    /// core, transmission, decoding, and g + sliding-window s, beside the raw scan and D1.
    BenchLatencyVolume(bench_latency_volume::VolumeLatencyArgs),
    /// Rate against accuracy on the held-out split: JPEG over its quality knob (segmented by a
    /// D1 model) beside learned models on their real bitstreams; a table and a plot. For volume
    /// models: JPEG-2000 per slice and H.264 over the slices (inter) on whole held-out volumes.
    RateAccuracy {
        /// Trial spec of the D1 model that segments the baselines' decoded images.
        #[arg(long)]
        d1: PathBuf,
        /// Trial specs of learned compressing models (D2-D4).
        #[arg(long, num_args = 1..)]
        models: Vec<PathBuf>,
        /// JPEG qualities.
        #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,40,70,90")]
        qualities: Vec<u8>,
        /// JPEG-2000 target rates (bits per pixel).
        #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.15,0.25,0.4,0.8,1.5")]
        j2k_rates: Vec<f64>,
        /// H.264 intra quantisers (0-51).
        #[arg(long, value_delimiter = ',', default_value = "51,46,42,38,34,30,24")]
        h264_qps: Vec<u8>,
        /// Train the Auto/Seg baseline (an autoencoder with C's code, pixel MSE) for this many
        /// steps on the training split (0: leave it out).
        #[arg(long, default_value_t = 0)]
        autoseg_steps: u64,
        /// Output folder for rate-accuracy.{md,json,svg,png}.
        #[arg(long, default_value = "rate-accuracy")]
        out: PathBuf,
    },
    /// Feed the decoder generated inputs (random, random payloads, mutated streams of the
    /// given images) and report how many were decoded or rejected; fails on any panic.
    FuzzDecoder {
        #[arg(long)]
        model: PathBuf,
        images: Vec<PathBuf>,
        /// Also mutate the streams of this many synthetic images.
        #[arg(long, default_value_t = 0)]
        synthetic: u64,
        #[arg(long, default_value_t = 1_000_000)]
        inputs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    // The local runner shares the cores between parallel trials through this variable.
    if let Some(n) = std::env::var("ORCHESTRA_THREADS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        tch::set_num_threads(n.max(1));
    }
    if let Err(e) = run(cli.command) {
        eprintln!("error: {}", orchestra_api::redact(&format!("{e:#}")));
        std::process::exit(1);
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only where a terminal shows them, never into a log file or a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| orchestra_api::RedactingStderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn synth_volumes(out: &Path, count: usize, sides: &[usize], spacing: &[f32], seed: u64) -> Result<()> {
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

fn read_spec(path: &PathBuf) -> Result<TrialSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trial spec {}", path.display()))?;
    Ok(TrialSpec::from_yaml(&text, &path.display().to_string())?)
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train {
            spec,
            resume,
            no_progress,
            progress_every_s,
            until,
            dist,
        } => {
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
        }
        Command::Eval { spec, step } => {
            let spec = read_spec(&spec)?;
            let (model, step, data) = load_checkpoint(&spec, step)?;
            let device = model.vs.device();
            let batch = spec.hyper.batch_size as usize;
            let e = match data {
                TrainingData::Images(d) => train::evaluate(&model, &d.val, d.channels, d.size, device, batch),
                TrainingData::Volumes(v) => {
                    train::volume_eval::evaluate_volumes(&model, &v.val, &v.preprocessing, device, batch)
                }
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"step": step, "eval": e}))?
            );
        }
        Command::Info {
            preset,
            size,
            dims,
            variant,
            channels,
            classes,
            layers,
        } => {
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
            let config = NetConfig::resolve(&model, channels, classes);
            let networks = info::describe(&config, variant);
            print!("{}", info::render(&config, &networks, layers));
        }
        Command::Bench(args) => bench::run(args)?,
        Command::BenchAllreduce(args) => bench_allreduce::run(args)?,
        Command::Export { spec, step, out } => {
            let spec = read_spec(&spec)?;
            let (model, step, data) = load_checkpoint(&spec, step)?;
            // A volume model carries how its scans were prepared: the edge repeats it.
            let volume = match &data {
                TrainingData::Volumes(v) => Some(&v.preprocessing),
                TrainingData::Images(_) => None,
            };
            orchestra_worker::codec::model_file::CompressionModel::save_with(&model, volume, &out)?;
            println!("{}: {} step {step}", out.display(), spec.trial);
        }
        Command::Serve {
            model,
            listen,
            tls_cert,
            tls_key,
            insecure,
            tokens,
            max_body_bytes,
            concurrency,
            timeout_ms,
            header_timeout_ms,
            limits,
            device,
            max_batch,
            batch_wait_ms,
        } => {
            let tls = match (tls_cert, tls_key, insecure) {
                (Some(c), Some(k), false) => Some((c, k)),
                (None, None, true) => None,
                _ => bail!("give --tls-cert and --tls-key, or --insecure for plain HTTP on loopback"),
            };
            let config = orchestra_worker::serve::ServeConfig {
                tls,
                tokens: orchestra_worker::serve::read_tokens(&tokens)?,
                max_body_bytes,
                concurrency,
                timeout: std::time::Duration::from_millis(timeout_ms),
                header_timeout: std::time::Duration::from_millis(header_timeout_ms.max(1)),
                batch: orchestra_worker::serve::BatchOptions {
                    max_batch: max_batch.max(1),
                    max_wait: std::time::Duration::from_secs_f64(batch_wait_ms.max(0.0) / 1e3),
                },
            };
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            let device = orchestra_worker::cuda::parse_device(&device).map_err(anyhow::Error::msg)?;
            let model = limits.apply(orchestra_worker::codec::model_file::CompressionModel::load(
                &model, device,
            )?)?;
            let server = orchestra_worker::serve::start(model, listen, config)?;
            println!(
                "serving {scheme}://{} (POST /v1/segment, GET /healthz, GET /metrics)",
                server.addr
            );
            server.wait();
        }
        Command::CompareEdge {
            model,
            dataset,
            limit,
            out,
        } => codec_cli::compare_edge(&model, &dataset, limit, out.as_deref())?,
        Command::Samples {
            dataset,
            size,
            count,
            out,
        } => codec_cli::samples(&dataset, size, count, &out)?,
        Command::SynthVolumes {
            out,
            count,
            sides,
            spacing,
            seed,
        } => synth_volumes(&out, count, &sides, &spacing, seed)?,
        Command::BenchLatency(args) => bench_latency::run(args)?,
        Command::BenchLatencyVolume(args) => bench_latency_volume::run(args)?,
        Command::RateAccuracy {
            d1,
            models,
            qualities,
            j2k_rates,
            h264_qps,
            autoseg_steps,
            out,
        } => {
            use orchestra_worker::baselines::rate_accuracy::{self, CodecSetting};
            let d1_spec = read_spec(&d1)?;
            if d1_spec.variant != Variant::D1 {
                bail!("--d1 {}: variant {}, expected D1", d1.display(), d1_spec.variant);
            }
            if d1_spec.model.dims == 3 {
                let specs = models.iter().map(read_spec).collect::<Result<Vec<_>>>()?;
                return cli::volume::rate_accuracy(&d1_spec, &specs, &j2k_rates, &h264_qps, &out);
            }
            let (d1_model, _, _) = load_checkpoint(&d1_spec, None)?;
            let data = Dataset::open(&d1_spec.dataset, d1_spec.model.input_size)?;
            let settings: Vec<CodecSetting> = qualities
                .iter()
                .map(|q| CodecSetting::Jpeg(*q))
                .chain(j2k_rates.iter().map(|b| CodecSetting::Jpeg2000(*b)))
                .chain(h264_qps.iter().map(|q| CodecSetting::H264(*q)))
                .collect();
            eprintln!(
                "rate-accuracy: {} codec settings on {} held-out images",
                settings.len(),
                data.val.len()
            );
            let mut baselines =
                rate_accuracy::codec_curve(&d1_model, &data.val, data.channels, data.size, &settings)
                    .map_err(anyhow::Error::msg)?;
            if autoseg_steps > 0 {
                use orchestra_worker::baselines::autoseg::{autoseg_point, AutoEncoder};
                // The code of the learned models (their preset and overrides), else D1's preset.
                let code_model = match models.first() {
                    Some(path) => read_spec(path)?.model,
                    None => d1_spec.model.clone(),
                };
                let config =
                    orchestra_worker::nets::NetConfig::resolve(&code_model, data.channels, data.classes);
                let ae = AutoEncoder::new(&config, d1_model.vs.device(), d1_spec.seed);
                eprintln!(
                    "rate-accuracy: training Auto/Seg for {autoseg_steps} steps ({} code bits)",
                    config.code_bits()
                );
                let batch = d1_spec.hyper.batch_size as usize;
                let (first, last) = ae.train(&data.train, autoseg_steps, batch, 1e-3, d1_spec.seed);
                eprintln!("rate-accuracy: Auto/Seg pixel MSE {first:.5} -> {last:.5}");
                baselines.push(autoseg_point(&d1_model, &ae, &data.val));
            }
            let mut learned = Vec::new();
            for path in &models {
                let spec = read_spec(path)?;
                if spec.dataset != d1_spec.dataset || spec.model.input_size != d1_spec.model.input_size {
                    bail!(
                        "{}: dataset or input size differs from the D1 model's",
                        path.display()
                    );
                }
                let (model, _, _) = load_checkpoint(&spec, None)?;
                let point =
                    rate_accuracy::learned_point(&spec.trial, &model, &data.val, data.channels, data.size)
                        .map_err(anyhow::Error::msg)?;
                learned.push((point, spec.variant));
            }
            let mut all: Vec<_> = baselines.clone();
            all.extend(learned.iter().map(|(p, _)| p.clone()));
            let table = rate_accuracy::table(&all);
            print!("{table}");
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(out.join("rate-accuracy.md"), &table)?;
            std::fs::write(out.join("rate-accuracy.json"), serde_json::to_vec_pretty(&all)?)?;
            let report = rate_accuracy::report("held-out images", &learned, &baselines);
            let (svg, png) = orchestra_report::plot::write_plots(&report, &out.join("rate-accuracy"))
                .map_err(anyhow::Error::msg)?;
            println!("plot: {} and {}", png.display(), svg.display());
        }
        Command::Encode { model, image, out } => codec_cli::encode(&model, &image, &out)?,
        Command::Decode {
            model,
            stream,
            limits,
        } => codec_cli::decode(&model, &stream, &limits)?,
        Command::Segment {
            model,
            stream,
            out,
            image,
            overlay,
            limits,
        } => codec_cli::segment(
            &model,
            &stream,
            &out,
            image.as_deref().zip(overlay.as_deref()),
            &limits,
        )?,
        Command::FuzzDecoder {
            model,
            images,
            synthetic,
            inputs,
            seed,
        } => codec_cli::fuzz(&model, &images, synthetic, inputs, seed)?,
    }
    Ok(())
}

/// The model of a trial's checkpoint (`step`, or the latest), on the trial's device, and the
/// trial's dataset (it says how many channels and classes the networks were built for).
fn load_checkpoint(spec: &TrialSpec, step: Option<u64>) -> Result<(Model, u64, TrainingData)> {
    let ts = TrialStore::new(Store::open(&spec.store)?, &spec.experiment, &spec.trial);
    let step = match step {
        Some(s) => s,
        None => ts
            .latest_step()?
            .with_context(|| format!("trial {} has no checkpoint in {}", spec.trial, spec.store))?,
    };
    let ckpt = ts.load(step)?;
    let data = TrainingData::open(&spec.dataset, &spec.model)?;
    let config = NetConfig::resolve(&spec.model, data.channels(), data.classes());
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
