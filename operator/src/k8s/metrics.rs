//! Prometheus metrics of the controller: reconciles, failures by reason, trials by phase and
//! reconcile duration, served on `/metrics`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

/// A step of a reconciliation (`list`, `store`, `record`, `plan`, `act`, `leaderboard`,
/// `status`): where its time goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub experiment: String,
    pub phase: String,
}

pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<FailureLabels, Counter>,
    pub trials: Family<PhaseLabels, Gauge>,
    pub duration: Histogram,
    pub steps: Family<StepLabels, Histogram>,
    registry: Registry,
}

/// 1 ms to about two minutes, each bucket 1.5 times the last (quantiles to within a third).
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 1.5, 30))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("orchestra_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let trials = Family::<PhaseLabels, Gauge>::default();
        let duration = seconds_histogram();
        let steps =
            Family::<StepLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register("reconciles", "Reconciliations of Experiments", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by reason",
            failures.clone(),
        );
        registry.register("trials", "Trials by Experiment and phase", trials.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            duration.clone(),
        );
        registry.register(
            "reconcile_step_duration_seconds",
            "Duration of each step of a reconciliation",
            steps.clone(),
        );
        Metrics {
            reconciles,
            failures,
            trials,
            duration,
            steps,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a reconciliation and times it until the guard is dropped.
    pub fn start(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            started: Instant::now(),
            metrics: self,
        }
    }

    /// Times one step of a reconciliation: the time since `since`, which it then resets.
    pub fn step(&self, step: &'static str, since: &mut Instant) {
        self.steps
            .get_or_create(&StepLabels { step })
            .observe(since.elapsed().as_secs_f64());
        *since = Instant::now();
    }

    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn set_trials(&self, experiment: &str, counts: &[(&str, u32)]) {
        for (phase, n) in counts {
            self.trials
                .get_or_create(&PhaseLabels {
                    experiment: experiment.to_string(),
                    phase: phase.to_string(),
                })
                .set(i64::from(*n));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

pub struct ReconcileTimer<'a> {
    started: Instant,
    metrics: &'a Metrics,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}
