//! A whole trial: open the data and the store, resume if asked, train with a progress bar,
//! stream metrics, checkpoint, evaluate, and write `result.json` last.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use orchestra_api::{RungRecord, Timings, TrialResult, TrialSpec};
use serde_json::json;

use super::evaluation::Evaluation;
use super::progress::ProgressReporter;
use super::trainer::{device_for_spec, TrainError, Trainer};
use crate::data::{DataError, TrainingData};
use crate::dist::{DistError, DistOptions, DEFAULT_BUCKET_BYTES};
use crate::store::checkpoint::TrialStore;
use crate::store::{Store, StoreError};
use orchestra_store::layout;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("trial {trial}: {source}")]
    Dist { trial: String, source: DistError },
    #[error("trial {trial} already has a checkpoint at step {step} in {store}: pass --resume to continue it, or use another trial name")]
    AlreadyStarted { trial: String, step: u64, store: String },
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Continue from the latest checkpoint if there is one (else start fresh).
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many steps in this process (tests use it to simulate an interruption).
    pub stop_after: Option<u64>,
    /// The step target of this run, a rung of the search below `steps`: train to it, write a
    /// checkpoint and then its rung record, and stop. A later run with a higher target (a
    /// promotion) continues from that checkpoint.
    pub until: Option<u64>,
    /// Collectives backend and its timeouts (data-parallel trials).
    pub dist: DistOptions,
    /// Gradient bucket size for the all-reduce.
    pub bucket_bytes: usize,
    /// How often progress is logged (without a bar) and written to the store; zero: never.
    pub progress_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            progress: false,
            stop_after: None,
            until: None,
            dist: DistOptions::default(),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            progress_every: super::progress::DEFAULT_PROGRESS_EVERY,
        }
    }
}

/// What a run ended with.
pub enum Outcome {
    Finished(Box<TrialResult>),
    /// Stopped early on request (`stop_after`, or at the rung `until`, whose record is then
    /// written), with a checkpoint at this step.
    Paused {
        step: u64,
        rung: Option<Box<RungRecord>>,
    },
}

pub fn run_trial(spec: &TrialSpec, opts: &RunOptions) -> Result<Outcome, RunError> {
    let ts = TrialStore::new(Store::open(&spec.store)?, &spec.experiment, &spec.trial);
    let latest = ts.latest_step()?;
    if let (Some(step), false) = (latest, opts.resume) {
        return Err(RunError::AlreadyStarted {
            trial: spec.trial.clone(),
            step,
            store: spec.store.clone(),
        });
    }
    if opts.resume {
        if let Some(result) = finished_result(&ts, spec)? {
            tracing::info!(trial = %spec.trial, "trial already finished; nothing to do");
            return Ok(Outcome::Finished(Box::new(result)));
        }
    }

    let device = device_for_spec(spec)?;
    let dist_err = |source| RunError::Dist {
        trial: spec.trial.clone(),
        source,
    };
    let comm = crate::dist::connect(&opts.dist, device).map_err(dist_err)?;
    let (rank, world) = (comm.rank(), comm.world_size());
    // Rank 0 alone writes; the others wait for it at a barrier with the longer timeout.
    let leader = rank == 0;
    let data = TrainingData::open(&spec.dataset, &spec.model)?;
    let (n_train, n_val) = data.counts();
    tracing::info!(
        trial = %spec.trial, variant = %spec.variant, train = n_train, val = n_val,
        classes = data.classes(), rank, world, backend = comm.backend(), "dataset ready"
    );
    let mut trainer = Trainer::with_collective(spec.clone(), data, comm, opts.bucket_bytes)?;
    let slow = Some(opts.dist.io_timeout);
    let mut metrics: Vec<String> = Vec::new();
    let mut elapsed_before = 0.0;
    let mut last_eval: Option<(u64, Evaluation)> = None;
    if let Some(ckpt) = ts.load_latest()? {
        trainer.restore(&ckpt)?;
        elapsed_before = ckpt.elapsed_seconds;
        metrics = read_metrics(&ts)?
            .into_iter()
            .filter(|line| line_step(line).is_some_and(|s| s <= ckpt.step))
            .collect();
        tracing::info!(trial = %spec.trial, step = ckpt.step, rank, "resumed from checkpoint");
    }
    trainer.agree_on_step()?;

    let bar = progress_bar(spec, trainer.step, opts.progress && leader);
    let mut reporter = ProgressReporter::new(opts.progress_every, opts.progress, leader, trainer.step);
    let comm_before = trainer.comm_seconds;
    let started = Instant::now();
    let first_step = trainer.step;
    let target = opts.until.map_or(spec.steps, |u| u.min(spec.steps));
    let stop_at = opts.stop_after.map_or(target, |n| (first_step + n).min(target));
    let source_bpp = trainer.data.source_bits_per_pixel();
    let rung_of = |step: u64, e: &Evaluation| RungRecord {
        step,
        scores: e.scores.clone(),
        rate: e.rate.clone(),
        source_bits_per_pixel: source_bpp,
    };
    while trainer.step < stop_at {
        let m = trainer.train_step()?;
        metrics.push(serde_json::to_string(&m).expect("metrics serialise"));
        bar.set_position(trainer.step);
        bar.set_message(orchestra_api::trial_progress::losses(
            m.loss_seg,
            m.loss_dis,
            m.loss_rate,
        ));
        reporter.after_step(spec, world, &m, &ts.store, &ts.keys);
        let step = trainer.step;
        let eval_due = spec.eval_every > 0 && step % spec.eval_every == 0 && step < spec.steps;
        if eval_due && leader {
            let e = trainer.evaluate();
            metrics.push(eval_line(step, &e));
            // The learning curve, one record per evaluation; the one at the step target is
            // written after the checkpoint below.
            if step != target {
                put_rung(&ts, &rung_of(step, &e))?;
            }
            last_eval = Some((step, e));
        }
        let due = spec.checkpoint_every > 0 && step % spec.checkpoint_every == 0;
        let save_due = (due || step == stop_at) && step < spec.steps;
        if save_due && leader {
            save(
                &ts,
                &trainer,
                &metrics,
                elapsed_before + started.elapsed().as_secs_f64(),
                spec,
            )?;
        }
        if (eval_due || save_due) && world > 1 {
            trainer.collectives().barrier(slow).map_err(dist_err)?;
        }
    }
    if trainer.step < spec.steps {
        let step = trainer.step;
        let mut rung = None;
        if step == target {
            // The rung is reached: its record goes last, after the checkpoint at this step,
            // so that a runner that sees it can always continue the trial from there. A run
            // resumed at its target (killed between the two writes) writes it now.
            if leader {
                let e = match last_eval.take() {
                    Some((s, e)) if s == step => e,
                    _ => trainer.evaluate(),
                };
                if last_eval_needed(&metrics, step) {
                    metrics.push(eval_line(step, &e));
                    write_metrics(&ts, &metrics)?;
                }
                let record = rung_of(step, &e);
                put_rung(&ts, &record)?;
                rung = Some(Box::new(record));
            }
            if world > 1 {
                trainer.collectives().barrier(slow).map_err(dist_err)?;
            }
        }
        bar.abandon_with_message(format!("paused at step {step}"));
        return Ok(Outcome::Paused { step, rung });
    }
    let train_seconds = elapsed_before + started.elapsed().as_secs_f64();
    let run_seconds = started.elapsed().as_secs_f64().max(1e-9);
    if !leader {
        // Rank 0 evaluates and writes the result; the others wait for it and read it back.
        trainer.collectives().barrier(slow).map_err(dist_err)?;
        let result = finished_result(&ts, spec)?.ok_or_else(|| StoreError::Corrupt {
            uri: ts.store.uri().to_string(),
            key: ts.keys.result(),
            reason: "rank 0 passed the final barrier without writing the result".into(),
        })?;
        return Ok(Outcome::Finished(Box::new(result)));
    }
    bar.finish_with_message("evaluating");
    let eval_started = Instant::now();
    let evaluation = trainer.evaluate();
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    metrics.push(eval_line(trainer.step, &evaluation));
    save(&ts, &trainer, &metrics, train_seconds, spec)?;
    put_rung(&ts, &rung_of(trainer.step, &evaluation))?;

    let steps_this_run = (trainer.step - first_step) as f64;
    let result = TrialResult {
        experiment: spec.experiment.clone(),
        trial: spec.trial.clone(),
        variant: spec.variant,
        steps: trainer.step,
        scores: evaluation.scores,
        rate: evaluation.rate,
        source_bits_per_pixel: trainer.data.source_bits_per_pixel(),
        params: trainer.param_counts(),
        timings: Timings {
            train_seconds,
            train_images_per_second: steps_this_run * (spec.hyper.batch_size as usize * world) as f64
                / run_seconds,
            eval_seconds,
            world_size: world as u32,
            communication_seconds: trainer.comm_seconds - comm_before,
        },
        hyper: spec.hyper.clone(),
    };
    // Written last: its presence means the trial is finished.
    ts.store.put(
        &ts.keys.result(),
        serde_json::to_vec_pretty(&result).expect("result serialises"),
    )?;
    if world > 1 {
        trainer.collectives().barrier(slow).map_err(dist_err)?;
    }
    Ok(Outcome::Finished(Box::new(result)))
}

/// The stored result, if this trial already ran to its full step count.
fn finished_result(ts: &TrialStore, spec: &TrialSpec) -> Result<Option<TrialResult>, RunError> {
    Ok(layout::finished_result(&ts.store, &ts.keys, spec.steps)?)
}

fn save(
    ts: &TrialStore,
    trainer: &Trainer,
    metrics: &[String],
    elapsed: f64,
    spec: &TrialSpec,
) -> Result<(), RunError> {
    // Metrics first, so that after a restart they cover at least the checkpoint's steps.
    write_metrics(ts, metrics)?;
    ts.save(&trainer.checkpoint(elapsed), spec.keep_checkpoints)?;
    Ok(())
}

fn write_metrics(ts: &TrialStore, metrics: &[String]) -> Result<(), RunError> {
    let mut text = metrics.join("\n");
    text.push('\n');
    Ok(ts.store.put(&ts.keys.metrics(), text)?)
}

fn put_rung(ts: &TrialStore, record: &RungRecord) -> Result<(), RunError> {
    let bytes = serde_json::to_vec_pretty(record).expect("rung record serialises");
    Ok(ts.store.put(&ts.keys.rung(record.step), bytes)?)
}

/// Whether the metrics lack an evaluation line at `step` (a run resumed at its target).
fn last_eval_needed(metrics: &[String], step: u64) -> bool {
    !metrics
        .iter()
        .rev()
        .any(|l| l.contains("\"eval\"") && line_step(l) == Some(step))
}

fn read_metrics(ts: &TrialStore) -> Result<Vec<String>, RunError> {
    Ok(match ts.store.get(&ts.keys.metrics())? {
        Some(b) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => Vec::new(),
    })
}

fn line_step(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

fn eval_line(step: u64, e: &Evaluation) -> String {
    json!({"step": step, "eval": e}).to_string()
}

fn progress_bar(spec: &TrialSpec, position: u64, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(spec.steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}", spec.trial, spec.variant));
    bar.set_position(position);
    bar
}
