//! A whole trial: open the data and the store, resume if asked, train with a progress bar,
//! stream metrics, checkpoint, evaluate, and write `result.json` last.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use orchestra_api::{RungRecord, Timings, TrialResult, TrialSpec};
use serde_json::json;

use super::progress::ProgressReporter;
use super::tensorboard::{self, EventFile};
use super::trainer::{device_for_spec, TrainError, Trainer};
use crate::data::{DataError, TrainingData};
use crate::dist::{DistError, DistOptions, DEFAULT_BUCKET_BYTES};
use crate::eval::Evaluation;
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
    let mut run = TrialRun::start(spec, opts, ts)?;
    run.train()?;
    if run.trainer.step < spec.steps {
        return run.pause();
    }
    run.finish()
}

/// One process's part of a trial run, from its (resumed) start to its end.
struct TrialRun<'a> {
    spec: &'a TrialSpec,
    ts: TrialStore,
    trainer: Trainer,
    /// Rank 0 alone writes; the others wait for it at a barrier with the longer timeout.
    leader: bool,
    world: usize,
    slow: Option<Duration>,
    /// metrics.jsonl's lines so far (those of earlier runs up to the checkpoint included).
    metrics: Vec<String>,
    /// This run's TensorBoard event file (earlier runs keep theirs) and its key.
    events: EventFile,
    events_key: String,
    /// Training seconds of earlier runs.
    elapsed_before: f64,
    last_eval: Option<(u64, Evaluation)>,
    /// Seconds this run spent evaluating, left out of the training seconds an evaluation's
    /// line records (learning curves against wall-clock count training alone).
    eval_seconds: f64,
    bar: ProgressBar,
    reporter: ProgressReporter,
    comm_before: f64,
    started: Instant,
    first_step: u64,
    /// The step this run trains to (a rung, or the spec's steps) and where it stops (earlier
    /// with `stop_after`).
    target: u64,
    stop_at: u64,
}

impl<'a> TrialRun<'a> {
    /// Connects the ranks, opens the data, builds the trainer and resumes it from the latest
    /// checkpoint, if any.
    fn start(spec: &'a TrialSpec, opts: &RunOptions, ts: TrialStore) -> Result<TrialRun<'a>, RunError> {
        let device = device_for_spec(spec)?;
        let comm = crate::dist::connect(&opts.dist, device).map_err(|source| RunError::Dist {
            trial: spec.trial.clone(),
            source,
        })?;
        let (rank, world) = (comm.rank(), comm.world_size());
        let leader = rank == 0;
        let data = TrainingData::open(&spec.dataset, &spec.model)?;
        let (n_train, n_val) = data.counts();
        tracing::info!(
            trial = %spec.trial, variant = %spec.variant, train = n_train, val = n_val,
            classes = data.classes(), rank, world, backend = comm.backend(), "dataset ready"
        );
        let mut trainer = Trainer::with_collective(spec.clone(), data, comm, opts.bucket_bytes)?;
        let mut metrics: Vec<String> = Vec::new();
        let mut elapsed_before = 0.0;
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
        // The pre-training's seconds count as training: they are part of what the trial cost.
        let started = Instant::now();
        let comm_before = trainer.comm_seconds;
        if trainer.step == 0 && spec.variant.has_compressor() && spec.hyper.code_pretrain_steps > 0 {
            pretrain_code(&mut trainer, opts, leader)?;
        }
        let first_step = trainer.step;
        let target = opts.until.map_or(spec.steps, |u| u.min(spec.steps));
        let began = tensorboard::wall_time();
        let events_key = ts.keys.events(began as u64, first_step);
        Ok(TrialRun {
            spec,
            ts,
            bar: progress_bar(spec, first_step, opts.progress && leader),
            reporter: ProgressReporter::new(opts.progress_every, opts.progress, leader, first_step),
            comm_before,
            trainer,
            leader,
            world,
            slow: Some(opts.dist.io_timeout),
            metrics,
            events: EventFile::new(began, first_step),
            events_key,
            elapsed_before,
            last_eval: None,
            eval_seconds: 0.0,
            started,
            first_step,
            target,
            stop_at: opts.stop_after.map_or(target, |n| (first_step + n).min(target)),
        })
    }

    fn dist_err(&self, source: DistError) -> RunError {
        RunError::Dist {
            trial: self.spec.trial.clone(),
            source,
        }
    }

    /// All ranks wait for rank 0's writes.
    fn barrier(&mut self) -> Result<(), RunError> {
        let slow = self.slow;
        self.trainer
            .collectives()
            .barrier(slow)
            .map_err(|e| self.dist_err(e))
    }

    fn rung_of(&self, step: u64, e: &Evaluation) -> RungRecord {
        RungRecord {
            step,
            scores: e.scores.clone(),
            rate: e.rate.clone(),
            source_bits_per_pixel: self.trainer.data.source_bits_per_pixel(),
        }
    }

    /// An evaluation at `step`, in metrics.jsonl's lines and in the event file.
    fn log_eval(&mut self, step: u64, e: &Evaluation) {
        let train_seconds = self.train_seconds() - self.eval_seconds;
        self.metrics.push(eval_line(step, e, train_seconds));
        let scalars = tensorboard::eval_scalars(e);
        self.events.scalars(tensorboard::wall_time(), step, &scalars);
    }

    fn logs(&self) -> Logs<'_> {
        Logs {
            metrics: &self.metrics,
            events: &self.events,
            events_key: &self.events_key,
        }
    }

    fn train_seconds(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Trains to `stop_at`: metrics streamed, evaluations (rung records of the learning curve)
    /// and checkpoints when due.
    fn train(&mut self) -> Result<(), RunError> {
        let spec = self.spec;
        while self.trainer.step < self.stop_at {
            let began = Instant::now();
            let m = self.trainer.train_step()?;
            let images = (spec.hyper.batch_size as usize * self.world) as f64;
            let per_second = images / began.elapsed().as_secs_f64().max(1e-9);
            self.metrics
                .push(serde_json::to_string(&m).expect("metrics serialise"));
            let scalars = tensorboard::step_scalars(&m, per_second);
            self.events.scalars(tensorboard::wall_time(), m.step, &scalars);
            self.bar.set_position(self.trainer.step);
            self.bar.set_message(orchestra_api::trial_progress::losses(
                m.loss_seg,
                m.loss_dis,
                m.loss_rate,
            ));
            self.reporter
                .after_step(spec, self.world, &m, &self.ts.store, &self.ts.keys);
            let step = self.trainer.step;
            let eval_due = spec.eval_every > 0 && step.is_multiple_of(spec.eval_every) && step < spec.steps;
            if eval_due && self.leader {
                let eval_started = Instant::now();
                let e = self.trainer.evaluate();
                self.eval_seconds += eval_started.elapsed().as_secs_f64();
                self.log_eval(step, &e);
                // The learning curve, one record per evaluation; the one at the step target is
                // written after the checkpoint below.
                if step != self.target {
                    put_rung(&self.ts, &self.rung_of(step, &e))?;
                }
                self.last_eval = Some((step, e));
            }
            let due = spec.checkpoint_every > 0 && step.is_multiple_of(spec.checkpoint_every);
            let save_due = (due || step == self.stop_at) && step < spec.steps;
            if save_due && self.leader {
                save(&self.ts, &self.trainer, &self.logs(), self.train_seconds(), spec)?;
            }
            if (eval_due || save_due) && self.world > 1 {
                self.barrier()?;
            }
        }
        Ok(())
    }

    /// Stopped before the spec's steps: at the rung `target` (its record written last, after
    /// the checkpoint at this step, so that a runner that sees it can always continue the trial
    /// from there; a run resumed at its target, killed between the two writes, writes it now),
    /// or on request.
    fn pause(mut self) -> Result<Outcome, RunError> {
        let step = self.trainer.step;
        let mut rung = None;
        if step == self.target {
            if self.leader {
                let e = match self.last_eval.take() {
                    Some((s, e)) if s == step => e,
                    _ => self.trainer.evaluate(),
                };
                if last_eval_needed(&self.metrics, step) {
                    self.log_eval(step, &e);
                    write_logs(&self.ts, &self.logs())?;
                }
                let record = self.rung_of(step, &e);
                put_rung(&self.ts, &record)?;
                rung = Some(Box::new(record));
            }
            if self.world > 1 {
                self.barrier()?;
            }
        }
        self.bar.abandon_with_message(format!("paused at step {step}"));
        Ok(Outcome::Paused { step, rung })
    }

    /// At the spec's steps: rank 0 evaluates, checkpoints, and writes the result last (its
    /// presence means the trial is finished); the other ranks wait for it and read it back.
    fn finish(mut self) -> Result<Outcome, RunError> {
        let spec = self.spec;
        let train_seconds = self.train_seconds();
        let run_seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        if !self.leader {
            self.barrier()?;
            let result = finished_result(&self.ts, spec)?.ok_or_else(|| StoreError::Corrupt {
                uri: self.ts.store.uri().to_string(),
                key: self.ts.keys.result(),
                reason: "rank 0 passed the final barrier without writing the result".into(),
            })?;
            return Ok(Outcome::Finished(Box::new(result)));
        }
        self.bar.finish_with_message("evaluating");
        let eval_started = Instant::now();
        let evaluation = self.trainer.evaluate();
        let eval_seconds = eval_started.elapsed().as_secs_f64();
        self.eval_seconds += eval_seconds;
        self.log_eval(self.trainer.step, &evaluation);
        save(&self.ts, &self.trainer, &self.logs(), train_seconds, spec)?;
        put_rung(&self.ts, &self.rung_of(self.trainer.step, &evaluation))?;
        let spec_yaml = serde_yaml::to_string(spec).expect("a trial spec serialises");
        self.ts.store.put(&self.ts.keys.spec(), spec_yaml.into_bytes())?;

        let steps_this_run = (self.trainer.step - self.first_step) as f64;
        let world = self.world;
        let result = TrialResult {
            experiment: spec.experiment.clone(),
            trial: spec.trial.clone(),
            variant: spec.variant,
            steps: self.trainer.step,
            scores: evaluation.scores,
            rate: evaluation.rate,
            source_bits_per_pixel: self.trainer.data.source_bits_per_pixel(),
            params: self.trainer.param_counts(),
            timings: Timings {
                train_seconds,
                train_images_per_second: steps_this_run * (spec.hyper.batch_size as usize * world) as f64
                    / run_seconds,
                eval_seconds,
                world_size: world as u32,
                communication_seconds: self.trainer.comm_seconds - self.comm_before,
            },
            hyper: spec.hyper.clone(),
            teachers: self.trainer.teachers.clone(),
        };
        // Written last: its presence means the trial is finished.
        self.ts.store.put(
            &self.ts.keys.result(),
            serde_json::to_vec_pretty(&result).expect("result serialises"),
        )?;
        if world > 1 {
            self.barrier()?;
        }
        Ok(Outcome::Finished(Box::new(result)))
    }
}

/// The stored result, if this trial already ran to its full step count.
fn finished_result(ts: &TrialStore, spec: &TrialSpec) -> Result<Option<TrialResult>, RunError> {
    Ok(layout::finished_result(&ts.store, &ts.keys, spec.steps)?)
}

/// What a run has logged so far: metrics.jsonl's lines and its TensorBoard event file.
struct Logs<'a> {
    metrics: &'a [String],
    events: &'a EventFile,
    events_key: &'a str,
}

fn save(
    ts: &TrialStore,
    trainer: &Trainer,
    logs: &Logs,
    elapsed: f64,
    spec: &TrialSpec,
) -> Result<(), RunError> {
    // Logs first, so that after a restart they cover at least the checkpoint's steps.
    write_logs(ts, logs)?;
    ts.save(&trainer.checkpoint(elapsed), spec.keep_checkpoints)?;
    Ok(())
}

fn write_logs(ts: &TrialStore, logs: &Logs) -> Result<(), RunError> {
    let mut text = logs.metrics.join("\n");
    text.push('\n');
    ts.store.put(&ts.keys.metrics(), text)?;
    Ok(ts.store.put(logs.events_key, logs.events.bytes().to_vec())?)
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

/// An evaluation's line in metrics.jsonl, with the training seconds spent to reach it
/// (evaluations excluded; earlier runs' seconds, from the checkpoint, included).
fn eval_line(step: u64, e: &Evaluation, train_seconds: f64) -> String {
    json!({"step": step, "eval": e, "trainSeconds": train_seconds}).to_string()
}

/// `hyper.codePretrainSteps` autoencoder steps of C and g, with a progress bar on a terminal
/// and otherwise a log line at the progress interval; the losses it started and ended with
/// are logged.
fn pretrain_code(trainer: &mut Trainer, opts: &RunOptions, leader: bool) -> Result<(), RunError> {
    let (trial, steps) = (trainer.spec.trial.clone(), trainer.spec.hyper.code_pretrain_steps);
    tracing::info!(trial = %trial, steps, "code pre-training: C and g rebuild the image through the code");
    let bar = if opts.progress && leader {
        ProgressBar::new(steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} pre-training steps eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{trial} code"));
    let log = leader && !opts.progress && !opts.progress_every.is_zero();
    let mut last_log = Instant::now();
    let losses = trainer.pretrain_code(steps, &mut |done, loss| {
        bar.set_position(done);
        bar.set_message(format!("mse {loss:.4}"));
        if log && (done == 1 || last_log.elapsed() >= opts.progress_every) {
            last_log = Instant::now();
            tracing::info!(trial = %trial, step = done, steps, mse = loss, "code pre-training");
        }
    })?;
    bar.finish_and_clear();
    tracing::info!(
        trial = %trial, steps, mse_first_tenth = losses.first, mse_last_tenth = losses.last,
        "code pre-training done"
    );
    Ok(())
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
