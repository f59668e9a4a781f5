//! The local runner: an Experiment on this machine, no cluster. Trials run as
//! `orchestra-worker` processes; the runner observes them, asks the planner what to do, and
//! does it. Its state lives in `<workdir>/state.json` and the trials' in the store, so running
//! the same command again after an interruption continues where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use orchestra_api::{
    DeviceKind, Experiment, ExperimentPhase, ExperimentSpec, RungRecord, RungScore, StoppedTrial, TrialPhase,
    TrialResult, TrialSpec, Variant,
};
use orchestra_store::layout::{self, ExperimentKeys, Reached, TrialKeys, EXPERIMENT_FILE};
use orchestra_store::Store;
use serde::{Deserialize, Serialize};

use crate::gpu_slots::{visible_gpus, GpuSlots};
use crate::leaderboard::Leaderboard;
use crate::observed::ObservedTrial;
use crate::planner::{plan, Action, PlannerConfig};
use crate::results::{self, ResultsError};
use crate::runner::Runner;
use crate::summary::{shown_bpp, Summary};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Store(#[from] orchestra_store::StoreError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("cannot start {worker}: {reason} (build it with `make build`, or pass --worker)")]
    Worker { worker: PathBuf, reason: String },
    #[error("device: cuda, but {0}")]
    NoGpu(String),
    #[error("{path} belongs to experiment {found:?}, not {expected:?}")]
    WrongFolder {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// One trial as the runner records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialRecord {
    pub variant: Variant,
    pub params: BTreeMap<String, f64>,
    pub phase: TrialPhase,
    pub attempts: u32,
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The step target of the latest worker run (0 before the first).
    #[serde(default)]
    pub target: u64,
    /// Runs started by a promotion (not attempts).
    #[serde(default)]
    pub promotions: u32,
    /// Scores at the rungs reached, lowest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungScore>,
}

impl TrialRecord {
    /// Records the score at a rung, once.
    fn reached(&mut self, score: RungScore) {
        if self.rungs.last().is_none_or(|r| r.step != score.step) {
            self.rungs.push(score);
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    experiment: String,
    trials: BTreeMap<String, TrialRecord>,
}

pub struct LocalOptions {
    /// The `orchestra-worker` binary.
    pub worker: PathBuf,
    /// Trials at once on this machine (further capped by the Experiment's parallelism and, on
    /// GPUs, by the GPUs times `trialsPerGpu`).
    pub jobs: usize,
    /// The GPUs trials may run on, as CUDA_VISIBLE_DEVICES names them; `None`: those this
    /// machine shows (CUDA_VISIBLE_DEVICES, else nvidia-smi).
    pub gpus: Option<Vec<String>>,
    pub progress: bool,
    /// Without progress bars (off a terminal: CI, nohup, a pod's log), a line per running
    /// trial and one for the Experiment are printed this often.
    pub progress_every: Duration,
    pub planner: PlannerConfig,
}

/// How a run ended.
pub enum LocalOutcome {
    Finished {
        phase: ExperimentPhase,
        message: String,
        leaderboard: Box<Leaderboard>,
        plot: PathBuf,
    },
    Interrupted,
    /// `spec.suspend` is set: nothing runs until it is unset and the runner started again.
    Suspended {
        message: String,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct LocalRunner {
    exp: Experiment,
    name: String,
    dir: PathBuf,
    store: Store,
    opts: LocalOptions,
    state: State,
    children: BTreeMap<String, Child>,
    /// Which GPU each running single-worker trial is pinned to (device: cuda).
    gpus: Option<GpuSlots>,
    /// Lines for the user about rungs reached and trials stopped early, printed by `run`.
    notes: Vec<String>,
}

impl LocalRunner {
    /// Prepares `dir` (created if missing) for the Experiment, picking up an earlier run's state.
    pub fn new(exp: Experiment, dir: &Path, opts: LocalOptions) -> Result<LocalRunner, LocalError> {
        let name = exp.metadata.name.clone().unwrap_or_default();
        let io = |path: &Path, e: std::io::Error| LocalError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        for sub in ["trials", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| io(&dir.join(sub), e))?;
        }
        let store = Store::open(&exp.spec.store)?;
        let state_path = dir.join("state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LocalError::Io {
                path: state_path.clone(),
                reason: format!("not a runner state: {e}"),
            })?,
            Err(_) => State {
                experiment: name.clone(),
                trials: BTreeMap::new(),
            },
        };
        if state.experiment != name {
            return Err(LocalError::WrongFolder {
                path: dir.to_path_buf(),
                found: state.experiment,
                expected: name,
            });
        }
        // Trials that were running when the last runner stopped were interrupted, not failed:
        // they start again (resuming from their checkpoints) without spending an attempt.
        for rec in state.trials.values_mut() {
            if rec.phase == TrialPhase::Running {
                rec.phase = TrialPhase::Pending;
                rec.attempts = rec.attempts.saturating_sub(1);
            }
        }
        let gpus = if exp.spec.device == DeviceKind::Cuda {
            let list = opts.gpus.clone().unwrap_or_else(machine_gpus);
            if list.is_empty() {
                return Err(LocalError::NoGpu(
                    "this machine shows no GPU (CUDA_VISIBLE_DEVICES is empty or nvidia-smi lists none)"
                        .into(),
                ));
            }
            // A multi-rank gang's ranks are placed by the worker (one GPU per local rank).
            (exp.spec.workers_per_trial == 1)
                .then(|| GpuSlots::new(list, exp.spec.resources.trials_per_gpu as usize))
        } else {
            None
        };
        let exp_yaml = serde_yaml::to_string(&exp).expect("experiment serialises");
        std::fs::write(dir.join(EXPERIMENT_FILE), &exp_yaml)
            .map_err(|e| io(&dir.join(EXPERIMENT_FILE), e))?;
        store.put(&ExperimentKeys::new(&name).spec(), exp_yaml.into_bytes())?;
        Ok(LocalRunner {
            exp,
            name,
            dir: dir.to_path_buf(),
            store,
            opts,
            state,
            children: BTreeMap::new(),
            gpus,
            notes: Vec::new(),
        })
    }

    /// Trials that run at once here: `--jobs`, the Experiment's parallelism and, with pinned
    /// GPUs, their places (GPUs x trialsPerGpu).
    pub fn capacity(&self) -> usize {
        let gpu_places = self.gpus.as_ref().map_or(usize::MAX, GpuSlots::capacity);
        self.opts
            .jobs
            .min(self.exp.spec.parallelism as usize)
            .min(gpu_places)
            .max(1)
    }

    /// Forgets a trial's worker process (it exited or was stopped) and frees its GPU place.
    fn forget_child(&mut self, trial: &str) -> Option<Child> {
        if let Some(g) = self.gpus.as_mut() {
            g.release(trial);
        }
        self.children.remove(trial)
    }

    fn save_state(&self) -> Result<(), LocalError> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        // Write-then-rename: a crash never leaves a half-written state file.
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| LocalError::Io {
                path,
                reason: e.to_string(),
            })
    }

    fn set_phase(&mut self, trial: &str, phase: TrialPhase, message: Option<String>) {
        if let Some(rec) = self.state.trials.get_mut(trial) {
            rec.phase = phase;
            rec.since = now();
            rec.message = message;
        }
    }

    /// Updates the records from the children's exits and the store's results; returns the
    /// results of the trials that finished since the last call.
    /// What the runner sees now: the results of trials that finished since the last look, and
    /// every trial as the planner sees it (the same `ObservedTrial`s the operator derives from
    /// Trials and Jobs; a test builds both from one fixture).
    pub fn look(&mut self) -> Result<(Vec<TrialResult>, Vec<ObservedTrial>), LocalError> {
        let finished = self.observe()?;
        Ok((finished, self.observed()))
    }

    fn observe(&mut self) -> Result<Vec<TrialResult>, LocalError> {
        let mut finished = Vec::new();
        let names: Vec<String> = self.children.keys().cloned().collect();
        for trial in names {
            let status = match self.children.get_mut(&trial).map(Child::try_wait) {
                Some(Ok(Some(status))) => status,
                Some(Ok(None)) => continue,
                Some(Err(e)) => {
                    self.forget_child(&trial);
                    self.set_phase(
                        &trial,
                        TrialPhase::AttemptFailed,
                        Some(format!("lost the worker process: {e}")),
                    );
                    continue;
                }
                None => continue,
            };
            self.forget_child(&trial);
            let reached = if status.success() {
                self.reached(&trial)?
            } else {
                None
            };
            if let Some(reached) = reached {
                self.record_reached(&trial, reached, &mut finished);
            } else {
                let log = self.dir.join("logs").join(format!("{trial}.log"));
                let tail = std::fs::read_to_string(&log)
                    .ok()
                    .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(String::from))
                    .unwrap_or_default();
                let why = if status.success() {
                    "exited without a result".to_string()
                } else {
                    status.to_string()
                };
                tracing::warn!(trial, %why, last_log_line = %tail, "trial attempt failed");
                self.set_phase(
                    &trial,
                    TrialPhase::AttemptFailed,
                    Some(format!("{why}: {tail} (log: {})", log.display())),
                );
            }
        }
        // A trial recorded as not finished whose result is in the store did finish (for example
        // just before the runner was killed): take the store's word for it.
        let unfinished: Vec<String> = self
            .state
            .trials
            .iter()
            .filter(|(n, r)| !r.phase.is_terminal() && !self.children.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for trial in unfinished {
            if self.state.trials[&trial].phase == TrialPhase::Paused {
                continue;
            }
            if let Some(reached) = self.reached(&trial)? {
                self.record_reached(&trial, reached, &mut finished);
            }
        }
        Ok(finished)
    }

    /// What the store holds for a trial's step target: its result (trained to `steps`) or its
    /// rung record at a lower target.
    fn reached(&self, trial: &str) -> Result<Option<Reached>, LocalError> {
        let keys = TrialKeys::new(&self.name, trial);
        let steps = self.exp.spec.steps;
        let target = self.state.trials.get(trial).map_or(steps, |r| r.target);
        Ok(layout::reached(&self.store, &keys, target, steps)?)
    }

    fn record_reached(&mut self, trial: &str, reached: Reached, finished: &mut Vec<TrialResult>) {
        match reached {
            Reached::Finished(r) => {
                if let Some(rec) = self.state.trials.get_mut(trial) {
                    rec.reached(RungRecord::of_result(&r).score());
                }
                self.set_phase(trial, TrialPhase::Succeeded, None);
                finished.push(*r);
            }
            Reached::Rung(r) => {
                let score = r.score();
                if let Some(rec) = self.state.trials.get_mut(trial) {
                    rec.reached(score);
                }
                let note = format!(
                    "at step {}: Dice {:.4} at {:.5} bpp",
                    score.step, score.dice, score.bpp
                );
                let variant = self
                    .state
                    .trials
                    .get(trial)
                    .map(|r| r.variant.to_string())
                    .unwrap_or_default();
                self.notes.push(format!("{trial} {variant}: rung reached {note}"));
                self.set_phase(trial, TrialPhase::Paused, Some(note));
            }
        }
    }

    fn observed(&self) -> Vec<ObservedTrial> {
        self.state
            .trials
            .iter()
            .map(|(name, r)| ObservedTrial {
                target: r.target,
                promotions: r.promotions,
                rungs: r.rungs.clone(),
                ..ObservedTrial::new(name, r.phase, r.attempts, r.since)
            })
            .collect()
    }

    fn start(&mut self, trial: &str, attempt: u32, until: u64, promotion: bool) -> Result<(), LocalError> {
        let spec_path = self.dir.join("trials").join(format!("{trial}.yaml"));
        let (log, log_err) = trial_log(&self.dir.join("logs").join(format!("{trial}.log")))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = self.capacity();
        // A data-parallel trial is a gang of ranks under mpirun (Open MPI), sharing the cores.
        let ranks = self.exp.spec.workers_per_trial.max(1) as usize;
        let threads = (cores / (slots * ranks)).max(1);
        let mut cmd = worker_command(&self.opts.worker, ranks);
        // The worker reports at least twice per interval of ours, so that each line is fresh.
        let report_every = (self.opts.progress_every.as_secs_f64() / 2.0).clamp(0.1, 15.0);
        cmd.args(["train", "--resume", "--no-progress", "--progress-every-s"])
            .arg(report_every.to_string())
            .arg("--spec")
            .arg(&spec_path)
            .env("ORCHESTRA_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        if ranks > 1 {
            cmd.args(["--dist", "mpi"]);
        }
        if until < self.exp.spec.steps {
            cmd.args(["--until", &until.to_string()]);
        }
        if let Some(g) = self.gpus.as_mut() {
            let capacity = g.capacity();
            let gpu = g.assign(trial).ok_or_else(|| {
                LocalError::NoGpu(format!(
                    "no free GPU place for trial {trial}: all {capacity} are taken"
                ))
            })?;
            // The worker sees one GPU, its cuda:0; packed trials share it as processes.
            cmd.env("CUDA_VISIBLE_DEVICES", gpu);
        }
        kill_with_parent(&mut cmd);
        let spawned = cmd.spawn();
        if let (Err(_), Some(g)) = (&spawned, self.gpus.as_mut()) {
            g.release(trial);
        }
        let child = spawned.map_err(|e| LocalError::Worker {
            worker: if ranks > 1 {
                PathBuf::from("mpirun")
            } else {
                self.opts.worker.clone()
            },
            reason: if ranks > 1 {
                format!("{e} (workersPerTrial = {ranks} starts the ranks with mpirun: install Open MPI)")
            } else {
                e.to_string()
            },
        })?;
        tracing::info!(
            trial,
            attempt,
            until,
            promotion,
            pid = child.id(),
            ranks,
            threads,
            "trial started"
        );
        self.children.insert(trial.to_string(), child);
        if let Some(rec) = self.state.trials.get_mut(trial) {
            rec.attempts = attempt;
            rec.target = until;
            rec.promotions += u32::from(promotion);
        }
        self.set_phase(trial, TrialPhase::Running, None);
        Ok(())
    }

    fn stop(&mut self, trial: &str) {
        if let Some(mut child) = self.forget_child(trial) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn apply(&mut self, actions: &[Action]) -> Result<(), LocalError> {
        for action in actions {
            action.carry_out(self)?;
        }
        self.save_state()
    }

    /// The overall bar (hidden off a terminal) under which each running trial gets a spinner.
    fn progress_bars(&self, total: u64) -> (MultiProgress, ProgressBar) {
        let bars = MultiProgress::new();
        if !self.opts.progress {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let overall = bars.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} trials {elapsed_precise} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        overall.set_prefix(self.name.clone());
        (bars, overall)
    }

    /// One spinner per running trial: new trials get one, finished ones lose theirs.
    fn sync_spinners(&self, bars: &MultiProgress, spinners: &mut BTreeMap<String, ProgressBar>) {
        spinners.retain(|name, bar| {
            let running = self.children.contains_key(name);
            if !running {
                bar.finish_and_clear();
            }
            running
        });
        for name in self.children.keys() {
            if !spinners.contains_key(name) {
                let rec = &self.state.trials[name];
                let bar = bars.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed}").expect("valid template"),
                );
                bar.set_message(format!("{name} ({}, attempt {})", rec.variant, rec.attempts));
                spinners.insert(name.clone(), bar);
            }
        }
        spinners.values().for_each(|b| b.tick());
    }

    /// The running trials' progress records (step, speed, losses, ETA): on their spinners on a
    /// terminal, else printed as lines with the Experiment's summary line.
    fn show_progress(&self, spinners: &BTreeMap<String, ProgressBar>, summary: &str) {
        let keys = ExperimentKeys::new(&self.name);
        for name in self.children.keys() {
            let progress = match layout::read_progress(&self.store, &keys.trial(name)) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(trial = %name, error = %e, "cannot read the progress record");
                    continue;
                }
            };
            let variant = self.state.trials[name].variant;
            match spinners.get(name) {
                Some(bar) if self.opts.progress => bar.set_message(format!("{variant} {}", progress.line())),
                _ => println!("  {variant} {}", progress.line()),
            }
        }
        if !self.opts.progress {
            println!("{}: {summary}", self.name);
        }
    }

    /// Stops every running trial as an interruption, not a failure: the next run resumes each
    /// without spending an attempt.
    fn interrupt(&mut self) -> Result<(), LocalError> {
        let running: Vec<String> = self.children.keys().cloned().collect();
        for trial in running {
            self.stop(&trial);
            if let Some(rec) = self.state.trials.get_mut(&trial) {
                rec.phase = TrialPhase::Pending;
                rec.attempts = rec.attempts.saturating_sub(1);
            }
        }
        self.save_state()
    }

    /// Runs until the Experiment ends or `interrupted` is set.
    /// The leaderboard, published again (table, JSON and plot in the store and the run folder)
    /// when the number of succeeded or stopped trials (both listed on it) changed.
    fn publish_if_changed<'p>(
        &self,
        published: &'p mut Option<Published>,
    ) -> Result<&'p Leaderboard, LocalError> {
        let count = |phase| self.state.trials.values().filter(|r| r.phase == phase).count();
        let finished = (count(TrialPhase::Succeeded), count(TrialPhase::Stopped));
        if published.as_ref().is_none_or(|(n, _, _)| *n != finished) {
            let (lb, plot) = results::publish(&self.store, &self.exp, &self.dir)?;
            *published = Some((finished, lb, plot));
        }
        Ok(&published.as_ref().expect("published above").1)
    }

    pub fn run(&mut self, interrupted: Arc<AtomicBool>) -> Result<LocalOutcome, LocalError> {
        let total = crate::candidates::candidates(&self.name, &self.exp.spec).len() as u64;
        let (bars, overall) = self.progress_bars(total);
        let mut trial_bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
        // The leaderboard as last published, and for how many succeeded and stopped trials.
        let mut published: Option<Published> = None;
        // Spinners are refreshed often; printed lines at the configured interval.
        let show_every = if self.opts.progress {
            Duration::from_secs(2)
        } else {
            self.opts.progress_every
        };
        let started = std::time::Instant::now();
        let mut shown = started;
        // The planner fills this machine's places, not the cluster's parallelism.
        let here = ExperimentSpec {
            parallelism: self.capacity() as u32,
            ..self.exp.spec.clone()
        };
        loop {
            let (finished, observed) = self.look()?;
            for r in finished {
                bars.suspend(|| {
                    println!(
                        "{} {}: Dice {:.4} at {:.5} bpp",
                        r.trial,
                        r.variant,
                        r.scores.dice,
                        shown_bpp(&r)
                    )
                });
            }
            let p = plan(&self.name, &here, &observed, now(), &self.opts.planner);
            self.apply(&p.actions)?;
            for note in std::mem::take(&mut self.notes) {
                bars.suspend(|| println!("{note}"));
            }

            let leaderboard = self.publish_if_changed(&mut published)?;
            let summary = Summary::after(&observed, &p.actions, total as usize, leaderboard);
            overall.set_position(summary.done() as u64);
            overall.set_message(summary.line());
            self.sync_spinners(&bars, &mut trial_bars);
            if !show_every.is_zero() && shown.elapsed() >= show_every && !self.children.is_empty() {
                shown = std::time::Instant::now();
                let counts = format!(
                    "[{}] {}/{total} trials done, {}",
                    orchestra_api::trial_progress::duration(started.elapsed().as_secs_f64()),
                    summary.done(),
                    summary.line()
                );
                self.show_progress(&trial_bars, &counts);
            }

            if matches!(p.phase, ExperimentPhase::Succeeded | ExperimentPhase::Failed)
                && self.children.is_empty()
            {
                overall.finish_with_message(p.message.clone());
                let (_, leaderboard, plot) = published.expect("published on the first iteration");
                return Ok(LocalOutcome::Finished {
                    phase: p.phase,
                    message: p.message,
                    leaderboard: Box::new(leaderboard),
                    plot,
                });
            }
            if p.phase == ExperimentPhase::Suspended && self.children.is_empty() {
                overall.abandon_with_message("suspended");
                return Ok(LocalOutcome::Suspended { message: p.message });
            }
            if interrupted.load(Ordering::SeqCst) {
                self.interrupt()?;
                overall.abandon_with_message("interrupted");
                return Ok(LocalOutcome::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The leaderboard as last published, its plot, and for how many (succeeded, stopped) trials.
type Published = ((usize, usize), Leaderboard, PathBuf);

/// The GPUs this machine shows: CUDA_VISIBLE_DEVICES, else nvidia-smi's list (none without it).
fn machine_gpus() -> Vec<String> {
    let var = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    visible_gpus(var.as_deref(), || {
        let out = Command::new("nvidia-smi")
            .args(["--query-gpu=index", "--format=csv,noheader"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// The worker, or `ranks` of it under mpirun (Open MPI) for a data-parallel trial.
fn worker_command(worker: &Path, ranks: usize) -> Command {
    if ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(["-n", &ranks.to_string(), "--oversubscribe"])
            // Open MPI refuses root (containers) unless told.
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg(worker);
        c
    } else {
        Command::new(worker)
    }
}

/// A trial's log, appended to by its worker's stdout and stderr.
fn trial_log(path: &Path) -> Result<(std::fs::File, std::fs::File), LocalError> {
    let io = |e: std::io::Error| LocalError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let log_err = log.try_clone().map_err(io)?;
    Ok((log, log_err))
}

/// The early-stop record of a trial the search stops at a rung (one that reached a rung).
fn stopped_marker(trial: &str, rec: &TrialRecord, reason: &str) -> Option<StoppedTrial> {
    (rec.phase == TrialPhase::Paused)
        .then(|| StoppedTrial::at_last_rung(trial, rec.variant, &rec.rungs, reason))
}

/// Workers die with the runner, even when it is killed outright, so that a second runner never
/// races an orphan on the same trial. They also get their own process group, so that a Ctrl-C
/// at the terminal reaches the runner alone, which stops them as an interruption rather than
/// seeing them die as failed attempts.
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child's own process state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The local runner's meaning of each planner action: a trial's spec file, a worker process (or
/// an mpirun of ranks), and the trial's record in the run's state file.
impl Runner for LocalRunner {
    type Done<'a> = Result<(), LocalError>;

    fn create_trial<'a>(
        &'a mut self,
        name: &'a str,
        variant: Variant,
        params: &'a BTreeMap<String, f64>,
        spec: &'a TrialSpec,
    ) -> Result<(), LocalError> {
        let path = self.dir.join("trials").join(format!("{name}.yaml"));
        let yaml = serde_yaml::to_string(spec).expect("trial spec serialises");
        std::fs::write(&path, yaml).map_err(|e| LocalError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.store.put(
            &TrialKeys::new(&self.name, name).params(),
            serde_json::to_vec(params).expect("params serialise"),
        )?;
        self.state.trials.insert(
            name.to_string(),
            TrialRecord {
                variant,
                params: params.clone(),
                phase: TrialPhase::Pending,
                attempts: 0,
                since: now(),
                message: None,
                target: 0,
                promotions: 0,
                rungs: Vec::new(),
            },
        );
        Ok(())
    }

    fn start_trial<'a>(
        &'a mut self,
        name: &'a str,
        attempt: u32,
        until: u64,
        promotion: bool,
    ) -> Result<(), LocalError> {
        self.start(name, attempt, until, promotion)
    }

    fn fail_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Result<(), LocalError> {
        tracing::error!(trial = %name, %reason, "trial failed");
        let detail = self.state.trials.get(name).and_then(|r| r.message.clone());
        self.set_phase(
            name,
            TrialPhase::Failed,
            Some(detail.unwrap_or_else(|| reason.to_string())),
        );
        Ok(())
    }

    fn stop_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Result<(), LocalError> {
        self.stop(name);
        if let Some(marker) = self
            .state
            .trials
            .get(name)
            .and_then(|r| stopped_marker(name, r, reason))
        {
            self.store.put(
                &TrialKeys::new(&self.name, name).stopped(),
                serde_json::to_vec_pretty(&marker).expect("stop record serialises"),
            )?;
            self.notes.push(format!("{name} {}: {reason}", marker.variant));
        }
        self.set_phase(name, TrialPhase::Stopped, Some(reason.to_string()));
        Ok(())
    }

    fn suspend_trial<'a>(&'a mut self, name: &'a str) -> Result<(), LocalError> {
        self.stop(name);
        self.set_phase(name, TrialPhase::Pending, Some("suspended".into()));
        if let Some(rec) = self.state.trials.get_mut(name) {
            rec.attempts = rec.attempts.saturating_sub(1);
        }
        Ok(())
    }
}
