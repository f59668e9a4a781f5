//! Progress at a steady interval while a trial trains, for whoever has no progress bar to look
//! at: a log line (a pod's log, a runner's log file) and the store's `progress.json`, which the
//! local runner prints off a terminal. Only rank 0 reports.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orchestra_api::{TrialProgress, TrialSpec};
use orchestra_store::layout::TrialKeys;
use orchestra_store::Store;

use super::trainer::StepMetrics;

/// How often progress is reported by default.
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_secs(15);

pub struct ProgressReporter {
    every: Duration,
    /// Whether a progress bar already shows the same on a terminal (no log line then).
    bar_visible: bool,
    enabled: bool,
    started: Instant,
    first_step: u64,
    last: Instant,
}

impl ProgressReporter {
    pub fn new(every: Duration, bar_visible: bool, leader: bool, first_step: u64) -> ProgressReporter {
        let now = Instant::now();
        ProgressReporter {
            every,
            bar_visible,
            enabled: leader && !every.is_zero(),
            started: now,
            first_step,
            last: now,
        }
    }

    /// Reports after this run's first step (a run that has started shows at once), then
    /// whenever the interval has passed since the last report.
    pub fn after_step(
        &mut self,
        spec: &TrialSpec,
        world: usize,
        m: &StepMetrics,
        store: &Store,
        keys: &TrialKeys,
    ) {
        let first = m.step == self.first_step + 1;
        if !self.enabled || (!first && self.last.elapsed() < self.every) {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let steps_done = m.step.saturating_sub(self.first_step) as f64;
        let progress = TrialProgress {
            trial: spec.trial.clone(),
            step: m.step,
            steps: spec.steps,
            images_per_second: steps_done * (spec.hyper.batch_size as usize * world) as f64 / seconds,
            loss_seg: m.loss_seg,
            loss_dis: m.loss_dis,
            loss_rate: m.loss_rate,
            eta_seconds: TrialProgress::eta(m.step, spec.steps, steps_done / seconds),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        if !self.bar_visible {
            tracing::info!("{}", progress.line());
        }
        let bytes = serde_json::to_vec(&progress).expect("progress serialises");
        // Progress is advisory: a failed write costs a line on a runner's screen, not training.
        if let Err(e) = store.put_once(&keys.progress(), bytes) {
            tracing::warn!(error = %e, "cannot write the progress record");
        }
    }
}
