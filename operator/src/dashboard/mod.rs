//! The dashboard: the Experiments, one Experiment's front, trials and search, and one trial's
//! curves, served as HTML by `orchestra dashboard` (a run folder or a store) and by the
//! operator (`--dashboard-addr`). The pages are drawn on the server, charts as SVG, with a
//! little JavaScript for sorting, filtering, hovering and live updates; every asset is compiled
//! into the binary (no CDN, no web fonts). Why SVG from the server rather than a charting
//! library: the charts are few and fixed (a scatter with a staircase, three line charts), the
//! server already has the numbers, a thousand points are some 60 kB of SVG against a bundled
//! library's hundreds of kB, and the pages work without JavaScript.

mod assets;
mod charts;
mod cluster_source;
mod metrics_file;
mod pages;
mod server;
mod store_source;
mod view;

pub use cluster_source::ClusterSource;
pub use metrics_file::{metrics_file, MetricsFile};
pub use server::{router, serve, Source};
pub use store_source::StoreSource;
pub use view::{ExperimentList, ExperimentView, TrialPage, TrialView};

use orchestra_api::TrialPhase;
use orchestra_store::layout::TrialKeys;

use self::view::CheckpointView;
use crate::candidates::candidates;

/// An Experiment's phase and message from its trials, for runners that do not say (a run
/// folder or a store): finished when every candidate ended.
pub fn experiment_phase(trials: &[TrialView], total: usize) -> (String, String) {
    let ended = |p: TrialPhase| {
        matches!(
            p,
            TrialPhase::Succeeded | TrialPhase::Failed | TrialPhase::Stopped
        )
    };
    let finished = trials.iter().filter(|t| ended(t.phase)).count();
    let succeeded = trials.iter().filter(|t| t.phase == TrialPhase::Succeeded).count();
    let running = trials.iter().filter(|t| t.phase == TrialPhase::Running).count();
    let message = format!("{finished}/{total} trials finished");
    let phase = if total > 0 && finished == total {
        if succeeded > 0 {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if running > 0 || finished > 0 {
        "Running"
    } else {
        "Pending"
    };
    (phase.to_string(), message)
}

/// One trial's page from its row, its metrics file and its checkpoints.
pub fn trial_page(
    view: &ExperimentView,
    row: TrialView,
    metrics: Option<MetricsFile>,
    checkpoints: Vec<CheckpointView>,
    log_tail: Option<String>,
) -> TrialPage {
    let spec = &view.experiment.spec;
    let all = candidates(&view.name, spec);
    let schedule = spec.algorithm.schedule(spec.steps);
    let position = all.iter().position(|c| c.name == row.name).unwrap_or(0);
    let rung_steps = schedule.rungs(position % schedule.brackets(), spec.steps);
    let trial_spec = spec.trial_spec(&row.name, &view.name, row.variant, &row.params);
    let spec_yaml = serde_yaml::to_string(&trial_spec).expect("a trial spec serialises");
    let metrics = metrics.unwrap_or_default();
    let keys = TrialKeys::new(&view.name, &row.name);
    let mut problems: Vec<String> = metrics
        .problems
        .iter()
        .map(|p| format!("{}: {p}", keys.metrics()))
        .collect();
    if !row.has_metrics && row.phase != TrialPhase::Pending {
        problems.push(format!(
            "no metrics: {} has not been written (the worker writes it at each checkpoint; a trial that never reached one, or whose worker could not write to the store, has none)",
            keys.metrics()
        ));
    }
    if let Some(m) = row.message.as_ref().filter(|_| row.phase == TrialPhase::Failed) {
        problems.push(format!("failed: {m}"));
    }
    TrialPage {
        steps: spec.steps,
        losses: metrics.steps,
        evals: metrics.evals,
        rung_steps,
        checkpoints,
        spec_yaml,
        log_tail,
        history: Vec::new(),
        problems,
        row,
    }
}
