//! `orchestra`: run an Experiment on this machine, check Experiment files, show leaderboards.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orchestra_api::{Experiment, ExperimentPhase};
use orchestra_operator::local::{LocalOptions, LocalOutcome, LocalRunner};
use orchestra_operator::planner::PlannerConfig;
use orchestra_operator::results;
use orchestra_store::layout::{self, EXPERIMENT_FILE, LEADERBOARD_STEM};
use orchestra_store::Store;

#[derive(Parser)]
#[command(
    name = "orchestra",
    version,
    about = "Sweep, rank and compare segmentation-guided compression models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an Experiment on this machine; run it again to continue after an interruption.
    Run {
        file: PathBuf,
        /// Working folder for state, trial specs, logs and the leaderboard (default: runs/<name>).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Override the Experiment's store URI.
        #[arg(long)]
        store: Option<String>,
        /// Trials at once on this machine (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// The orchestra-worker binary (default: beside this one).
        #[arg(long, env = "ORCHESTRA_WORKER")]
        worker: Option<PathBuf>,
        /// Seconds before a failed attempt is retried (doubling per attempt).
        #[arg(long, default_value_t = 5)]
        restart_backoff: u64,
        /// Off a terminal (no progress bars): seconds between progress lines (each running
        /// trial's step, images/s, losses and ETA, then the Experiment's counts); 0: none.
        #[arg(long, default_value_t = 30.0)]
        progress_every: f64,
    },
    /// Check an Experiment file and print what it would run.
    Validate { file: PathBuf },
    /// Print the leaderboard of a run folder or of the experiments in a store, and write its plot.
    Leaderboard {
        /// A run folder (runs/<name>) or a store URI (file:///..., memory://).
        source: String,
        /// Which experiment, when the store holds several.
        #[arg(long)]
        experiment: Option<String>,
        /// Where to write leaderboard.{json,md,svg,png} (default: the run folder, or .).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Learning curves: every trial's held-out Dice against the step and against the training
    /// seconds, from one or more stores (or run folders), drawn and tabulated.
    Curves {
        /// Store URIs (every Experiment in each) or run folders (runs/<name>).
        #[arg(required = true)]
        sources: Vec<String>,
        /// Where to write <out>-step.{svg,png}, <out>-seconds.{svg,png}, <out>.md and <out>.json.
        #[arg(long, default_value = "curves")]
        out: PathBuf,
        /// The charts' title.
        #[arg(long, default_value = "Held-out Dice during training")]
        title: String,
    },
    /// Serve the dashboard of a run folder or of every Experiment in a store: the front, every
    /// trial and its curves, live while `orchestra run` works (read-only).
    Dashboard {
        /// A run folder (runs/<name>) or a store URI (file:///..., s3://...).
        source: String,
        /// Where to listen (127.0.0.1 keeps it to this machine).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Time the planner and the leaderboard on synthetic sweeps (see `make bench`).
    BenchPlanner {
        #[arg(long, default_value_t = 10_000)]
        trials: usize,
        /// Also write the timings as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The operator at scale on a real control plane with KWOK's fake nodes (started by
    /// scripts/bench_cluster.sh): time to start and finish every trial, reconcile latency, API
    /// requests per trial by client, the operator's and the API server's CPU and memory.
    BenchCluster {
        #[command(flatten)]
        config: orchestra_operator::cluster_bench::BenchClusterConfig,
        /// Writes <out>.json, <out>.md and the plots <out>-running.{svg,png}, <out>-finished.{svg,png}.
        #[arg(long, default_value = "bench-results/cluster")]
        out: PathBuf,
    },
    /// Replay recorded learning curves through the planner under grid, random, ASHA,
    /// Hyperband, median stopping and Pareto ASHA: hypervolume against trial-steps spent.
    BenchSearch {
        /// The recorded curves (JSON).
        #[arg(long, default_value = "docs/results/search-curves.json")]
        curves: PathBuf,
        /// Record the curves first from this store's finished sweep (then replay them).
        #[arg(long)]
        record_from: Option<String>,
        /// The sweep to record, when the store holds several.
        #[arg(long)]
        experiment: Option<String>,
        #[command(flatten)]
        config: orchestra_operator::search_bench::BenchConfig,
        /// Writes <out>.md, <out>.svg and <out>.png.
        #[arg(long, default_value = "bench-results/search")]
        out: PathBuf,
    },
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only where a terminal shows them, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| orchestra_api::RedactingStderr)
        .init();
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {}", orchestra_api::redact(&format!("{e:#}")));
        std::process::exit(1);
    }
}

fn load(file: &Path) -> Result<Experiment> {
    Ok(orchestra_api::experiment_file::load(file)?)
}

fn default_worker() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("orchestra-worker")))
        .unwrap_or_else(|| PathBuf::from("orchestra-worker"))
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Run {
            file,
            workdir,
            store,
            jobs,
            worker,
            restart_backoff,
            progress_every,
        } => run_experiment(
            &file,
            workdir,
            store,
            jobs,
            worker,
            restart_backoff,
            Duration::from_secs_f64(progress_every.clamp(0.0, 86_400.0)),
        ),
        Command::Validate { file } => validate(&file),
        Command::Dashboard { source, addr } => dashboard(&source, addr),
        Command::BenchPlanner { trials, out } => bench_planner(trials, out),
        Command::BenchCluster { config, out } => bench_cluster(&config, &out),
        Command::BenchSearch {
            curves,
            record_from,
            experiment,
            config,
            out,
        } => {
            if let Some(uri) = record_from {
                record_curves(&uri, experiment, &curves)?;
            }
            bench_search(&curves, &config, &out)
        }
        Command::Leaderboard {
            source,
            experiment,
            out,
        } => leaderboard(&source, experiment, out),
        Command::Curves { sources, out, title } => curves(&sources, &out, &title),
    }
}

/// Serves the dashboard until Ctrl-C.
fn dashboard(source: &str, addr: std::net::SocketAddr) -> Result<()> {
    let source = orchestra_operator::dashboard::StoreSource::open(source).map_err(anyhow::Error::msg)?;
    eprintln!(
        "dashboard of {} on http://{addr}/ (Ctrl-C stops it)",
        source.uri()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--addr {addr}"))?;
        orchestra_operator::dashboard::serve(listener, std::sync::Arc::new(source)).await?;
        Ok(())
    })
}

/// Runs an Experiment on this machine until it finishes or Ctrl-C (then the same command resumes).
fn run_experiment(
    file: &Path,
    workdir: Option<PathBuf>,
    store: Option<String>,
    jobs: Option<usize>,
    worker: Option<PathBuf>,
    restart_backoff: u64,
    progress_every: Duration,
) -> Result<()> {
    let mut exp = load(file)?;
    if let Some(s) = store {
        exp.spec.store = s;
        exp.spec.validate(
            exp.metadata.name.as_deref().unwrap_or_default(),
            &file.display().to_string(),
        )?;
    }
    let name = exp.metadata.name.clone().unwrap_or_default();
    let dir = workdir.unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = LocalOptions {
        worker: worker.unwrap_or_else(default_worker),
        jobs: jobs.unwrap_or(cores).max(1),
        gpus: None,
        progress: std::io::stderr().is_terminal(),
        progress_every,
        planner: PlannerConfig {
            restart_backoff,
            ..Default::default()
        },
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    println!(
        "experiment {name}: store {}, folder {}",
        exp.spec.store,
        dir.display()
    );
    let mut runner = LocalRunner::new(exp, &dir, opts)?;
    match runner.run(interrupted)? {
        LocalOutcome::Interrupted => {
            println!("interrupted: run the same command again to continue");
            std::process::exit(130);
        }
        LocalOutcome::Suspended { message } => {
            println!("experiment {name}: {message}; set spec.suspend to false (or remove it) and run again");
        }
        LocalOutcome::Finished {
            phase,
            message,
            leaderboard,
            plot,
        } => {
            println!("\n{}", leaderboard.to_markdown());
            println!("experiment {name}: {phase:?} ({message})");
            println!(
                "leaderboard: {}",
                dir.join(format!("{LEADERBOARD_STEM}.md")).display()
            );
            println!("plot: {} (and .svg)", plot.display());
            if phase == ExperimentPhase::Failed {
                bail!("experiment {name} failed: {message}");
            }
        }
    }
    Ok(())
}

/// Checks an Experiment and lists the trials it would run.
fn validate(file: &Path) -> Result<()> {
    let exp = load(file)?;
    let name = exp.metadata.name.clone().unwrap_or_default();
    let all = orchestra_operator::candidates::candidates(&name, &exp.spec);
    println!(
        "{}: valid; {} trials of {} steps, {} at a time",
        file.display(),
        all.len(),
        exp.spec.steps,
        exp.spec.parallelism
    );
    let schedule = exp.spec.algorithm.schedule(exp.spec.steps);
    if exp.spec.algorithm.is_multi_fidelity() {
        let ladders: Vec<String> = (0..schedule.brackets())
            .map(|b| {
                let rungs: Vec<String> = schedule
                    .rungs(b, exp.spec.steps)
                    .iter()
                    .map(u64::to_string)
                    .collect();
                rungs.join(" -> ")
            })
            .collect();
        println!(
            "  early stopping at rungs (steps) {}; ranked by {:?}; at most that many steps per trial",
            ladders.join(" | "),
            exp.spec.objective.effective_mode()
        );
    }
    for c in all {
        let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let sources: Vec<String> = exp
            .spec
            .hyper
            .model_sources(c.variant)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let reads = if sources.is_empty() {
            String::new()
        } else {
            format!(" (learns from {})", sources.join(", "))
        };
        println!("  {} {} {}{reads}", c.name, c.variant, params.join(" "));
    }
    Ok(())
}

/// Times the planner and the leaderboard on many synthetic trials.
fn bench_planner(trials: usize, out: Option<PathBuf>) -> Result<()> {
    let report = orchestra_operator::bench::planner_and_leaderboard(trials);
    println!("{}", report.to_markdown());
    if let Some(path) = out {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("written: {}", path.display());
    }
    Ok(())
}

fn bench_cluster(config: &orchestra_operator::cluster_bench::BenchClusterConfig, out: &Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(orchestra_operator::cluster_bench::run(config))?;
    println!("{}", report.to_markdown());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = out.with_extension("json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = out.with_extension("md");
    std::fs::write(&md, report.to_markdown()).with_context(|| format!("cannot write {}", md.display()))?;
    report
        .write_plots(out)
        .map_err(|e| anyhow::anyhow!("cannot draw the plots: {e}"))?;
    println!(
        "written: {}, {} and {}-{{running,finished}}.{{svg,png}}",
        json.display(),
        md.display(),
        out.display()
    );
    if report.succeeded < report.trials {
        bail!(
            "{} of {} trials did not succeed",
            report.trials - report.succeeded,
            report.trials
        );
    }
    Ok(())
}

fn record_curves(uri: &str, experiment: Option<String>, curves: &Path) -> Result<()> {
    use orchestra_operator::search_bench::record;
    let store = Store::open(uri)?;
    let name = match experiment {
        Some(n) => n,
        None => match results::experiments_in(&store)?.as_slice() {
            [only] => only.clone(),
            names => bail!(
                "{uri} holds {} experiments ({}): pass --experiment",
                names.len(),
                names.join(", ")
            ),
        },
    };
    let rec = record(&store, &name)?;
    if rec.trials.is_empty() {
        bail!("{uri}: experiment {name} has no finished trial to record");
    }
    if let Some(dir) = curves.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(curves, serde_json::to_vec(&rec)?)
        .with_context(|| format!("cannot write {}", curves.display()))?;
    println!(
        "recorded the curves of {} trials of {name}: {}",
        rec.trials.len(),
        curves.display()
    );
    Ok(())
}

fn bench_search(
    curves: &Path,
    cfg: &orchestra_operator::search_bench::BenchConfig,
    out: &Path,
) -> Result<()> {
    use orchestra_operator::search_bench::{run, Recording};
    use orchestra_report::figure::write_figure;
    use orchestra_report::lines::LineChart;
    let text = std::fs::read(curves).with_context(|| {
        format!(
            "cannot read {} (record curves with --record-from <store>)",
            curves.display()
        )
    })?;
    let rec: Recording = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a curve recording", curves.display()))?;
    let bench = run(&rec, cfg).map_err(anyhow::Error::msg)?;
    println!("{}", bench.markdown);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let md = out.with_extension("md");
    std::fs::write(&md, &bench.markdown).with_context(|| format!("cannot write {}", md.display()))?;
    let chart = LineChart {
        title: "Search: hypervolume of fully trained trials against compute",
        x_desc: "trial-steps spent (share of the grid's)",
        y_desc: "hypervolume (bpp x Dice)",
        series: &bench.series,
        target: Some(("95 % of the grid's hypervolume", bench.target)),
        zoom: false,
    };
    let (svg, png) = write_figure(&chart, out).map_err(anyhow::Error::msg)?;
    println!("written: {}, {}, {}", md.display(), svg.display(), png.display());
    Ok(())
}

/// Draws and tabulates the learning curves of every trial in `sources`.
fn curves(sources: &[String], out: &Path, title: &str) -> Result<()> {
    use orchestra_operator::learning_curves::{curves_markdown, dice_series, read_curves, Axis};
    use orchestra_report::figure::write_figure;
    use orchestra_report::lines::LineChart;
    let mut all = Vec::new();
    for source in sources {
        let (store, folder) = open_source(source)?;
        let experiment = folder.map(|(_, exp)| exp.metadata.name.clone().unwrap_or_default());
        let found =
            read_curves(&store, experiment.as_deref()).with_context(|| format!("reading {source}"))?;
        if found.is_empty() {
            bail!("{source}: no trial has evaluated yet (spec.evalEvery writes the curves)");
        }
        all.extend(found);
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let table = curves_markdown(&all);
    println!("{table}");
    let with_suffix = |suffix: &str| {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        out.with_file_name(name)
    };
    std::fs::write(with_suffix(".md"), &table)?;
    std::fs::write(with_suffix(".json"), serde_json::to_vec_pretty(&all)?)?;
    for (axis, suffix, x_desc) in [
        (Axis::Step, "-step", "training step"),
        (
            Axis::Seconds,
            "-seconds",
            "training seconds (evaluations left out)",
        ),
    ] {
        let series = dice_series(&all, axis);
        if series.is_empty() {
            println!("no evaluation recorded its training seconds: no chart against time");
            continue;
        }
        let chart = LineChart {
            title,
            x_desc,
            y_desc: "held-out Dice",
            series: &series,
            target: None,
            zoom: true,
        };
        let (svg, png) = write_figure(&chart, &with_suffix(suffix)).map_err(anyhow::Error::msg)?;
        println!("written: {}, {}", svg.display(), png.display());
    }
    Ok(())
}

/// The store a command reads: a store URI itself, or a run folder's (with the folder and its
/// Experiment).
fn open_source(source: &str) -> Result<(Store, Option<(PathBuf, Experiment)>)> {
    if source.contains("://") {
        return Ok((Store::open(source)?, None));
    }
    let dir = PathBuf::from(source);
    let exp = load(&dir.join(EXPERIMENT_FILE))
        .with_context(|| format!("{source} is not a run folder (no {EXPERIMENT_FILE})"))?;
    Ok((Store::open(&exp.spec.store)?, Some((dir, exp))))
}

/// Ranks an experiment's finished trials from a run folder or a store and writes the leaderboard.
fn leaderboard(source: &str, experiment: Option<String>, out: Option<PathBuf>) -> Result<()> {
    let (store, folder) = open_source(source)?;
    let (exp, default_out) = match folder {
        Some((dir, exp)) => (exp, dir),
        None => {
            let names = results::experiments_in(&store)?;
            let name = match (experiment, names.as_slice()) {
                (Some(n), _) => n,
                (None, [only]) => only.clone(),
                (None, []) => bail!("{source} holds no experiment (no <name>/{EXPERIMENT_FILE})"),
                (None, many) => bail!(
                    "{source} holds several experiments ({}): pass --experiment",
                    many.join(", ")
                ),
            };
            let exp = layout::read_experiment(&store, &name)?
                .with_context(|| format!("experiment {name} is not in {source}"))?;
            (exp, PathBuf::from("."))
        }
    };
    let (lb, plot) = results::publish(&store, &exp, &out.unwrap_or(default_out))?;
    println!("{}", lb.to_markdown());
    println!("plot: {} (and .svg)", plot.display());
    Ok(())
}
