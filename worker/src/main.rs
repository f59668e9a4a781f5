//! `orchestra-worker`: trains, evaluates and describes the paper's networks.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

use cli::{
    bench, bench_allreduce, bench_latency, bench_latency_volume, codec as codec_cli, rate_accuracy, serve,
    trial, volume,
};

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
    Train(trial::TrainArgs),
    /// Evaluate a trial's checkpoint on the validation split and print the scores as JSON.
    Eval {
        #[arg(long)]
        spec: PathBuf,
        /// Checkpoint step (default: the latest).
        #[arg(long)]
        step: Option<u64>,
    },
    /// Print each network's layers, parameter count and FLOPs at a given input size.
    Info(trial::InfoArgs),
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
    Serve(serve::ServeArgs),
    /// The edge's C (orchestra-edge, pure Rust) against libtorch's on a dataset's held-out
    /// split: differing code bits, streams decoded in the cloud, Dice from each encoder's
    /// streams, and encoding latency side by side.
    /// The edge's C (plane by plane) against libtorch's (tiled) on whole scans: code bits that
    /// differ, how near the threshold, stream equality, time of each.
    CompareEdgeVolume {
        /// An exported volume model (D2-D4).
        #[arg(long)]
        model: PathBuf,
        /// Scans: NIfTI files or DICOM series folders.
        #[arg(required = true)]
        scans: Vec<PathBuf>,
        /// Write the comparisons as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    RateAccuracy(rate_accuracy::RateAccuracyArgs),
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

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => trial::train(args)?,
        Command::Eval { spec, step } => trial::eval(&spec, step)?,
        Command::Info(args) => trial::info(args)?,
        Command::Bench(args) => bench::run(args)?,
        Command::BenchAllreduce(args) => bench_allreduce::run(args)?,
        Command::Export { spec, step, out } => trial::export(&spec, step, &out)?,
        Command::Serve(args) => serve::run(args)?,
        Command::CompareEdge {
            model,
            dataset,
            limit,
            out,
        } => codec_cli::compare_edge(&model, &dataset, limit, out.as_deref())?,
        Command::CompareEdgeVolume { model, scans, out } => {
            codec_cli::compare_edge_volume(&model, &scans, out.as_deref())?
        }
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
        } => volume::synth_volumes(&out, count, &sides, &spacing, seed)?,
        Command::BenchLatency(args) => bench_latency::run(args)?,
        Command::BenchLatencyVolume(args) => bench_latency_volume::run(args)?,
        Command::RateAccuracy(args) => rate_accuracy::run(args)?,
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
