//! What the dashboard shows, whatever it was read from (a store and a local run's state file,
//! or the operator's Experiments and Trials): the pages are drawn from these views alone.

use std::collections::BTreeMap;

use orchestra_api::{Experiment, RungScore, TrialPhase, Variant};

use crate::leaderboard::Leaderboard;

/// The Experiments a source holds, and what it found that is not one (a spec that does not
/// parse, a store that cannot be opened), named by where it is.
#[derive(Clone, Debug, Default)]
pub struct ExperimentList {
    pub views: Vec<ExperimentView>,
    pub problems: Vec<String>,
}

/// One Experiment as its pages show it.
#[derive(Clone, Debug)]
pub struct ExperimentView {
    pub namespace: String,
    pub name: String,
    pub experiment: Experiment,
    /// "Running", "Succeeded", ...: the runner's word where it has one.
    pub phase: String,
    pub message: Option<String>,
    pub conditions: Vec<ConditionView>,
    /// The newest first.
    pub events: Vec<EventView>,
    /// Every trial that exists, by name.
    pub trials: Vec<TrialView>,
    /// Trials the Experiment will have in all (its candidates).
    pub total: usize,
    /// As the runner last published it (`leaderboard.json`).
    pub leaderboard: Option<Leaderboard>,
    /// When the Experiment was submitted, in milliseconds since the Unix epoch.
    pub created_ms: Option<i64>,
    /// Where the phases come from, when it is not the runner (a store alone cannot tell a
    /// running worker from one that died).
    pub phase_source: Option<String>,
    /// What could not be read, by key.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConditionView {
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EventView {
    pub kind: String,
    pub reason: String,
    pub note: String,
    /// The Trial the event is about (its related object), when it names one.
    pub trial: Option<String>,
    pub age_s: Option<u64>,
}

/// One trial's row: what it is, how far it got and how it scored.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialView {
    pub name: String,
    pub variant: Variant,
    pub params: BTreeMap<String, f64>,
    pub phase: TrialPhase,
    /// Worker runs started for it; None where the source does not know (a store alone).
    pub attempts: Option<u32>,
    pub promotions: u32,
    /// The furthest step it is known to have reached (result, progress, checkpoint or rung).
    pub step: Option<u64>,
    /// The step it trains to now (a rung, or the Experiment's steps).
    pub target: Option<u64>,
    /// Final scores, or else those at its last rung.
    pub dice: Option<f64>,
    pub iou: Option<f64>,
    pub bpp: Option<f64>,
    /// Scores at each rung reached, lowest first.
    pub rungs: Vec<RungScore>,
    /// Why it stopped, failed or waits.
    pub message: Option<String>,
    /// Seconds of training (a finished trial's own count, else since it started).
    pub seconds: Option<f64>,
    /// Whether its worker wrote any metrics yet.
    pub has_metrics: bool,
}

impl TrialView {
    /// A trial known by name only: Pending, nothing reached.
    pub fn new(name: &str, variant: Variant) -> TrialView {
        TrialView {
            name: name.to_string(),
            variant,
            params: BTreeMap::new(),
            phase: TrialPhase::Pending,
            attempts: None,
            promotions: 0,
            step: None,
            target: None,
            dice: None,
            iou: None,
            bpp: None,
            rungs: Vec::new(),
            message: None,
            seconds: None,
            has_metrics: false,
        }
    }

    /// The highest rung it reached, if any.
    pub fn rung(&self) -> Option<u64> {
        self.rungs.iter().map(|r| r.step).max()
    }
}

/// Counts of trials by phase, in the order phases are shown.
pub fn by_phase(trials: &[TrialView]) -> Vec<(TrialPhase, usize)> {
    let mut counts: BTreeMap<u8, (TrialPhase, usize)> = BTreeMap::new();
    for t in trials {
        counts.entry(phase_order(t.phase)).or_insert((t.phase, 0)).1 += 1;
    }
    counts.into_values().collect()
}

fn phase_order(p: TrialPhase) -> u8 {
    match p {
        TrialPhase::Running => 0,
        TrialPhase::Pending => 1,
        TrialPhase::Paused => 2,
        TrialPhase::AttemptFailed => 3,
        TrialPhase::Succeeded => 4,
        TrialPhase::Stopped => 5,
        TrialPhase::Failed => 6,
    }
}

/// One trial's page: its row, and what only its page shows.
#[derive(Clone, Debug)]
pub struct TrialPage {
    pub row: TrialView,
    pub steps: u64,
    /// Per step: the losses and the learning rate.
    pub losses: Vec<StepLine>,
    /// Per evaluation: the scores.
    pub evals: Vec<EvalLine>,
    /// The rung steps of its bracket.
    pub rung_steps: Vec<u64>,
    pub checkpoints: Vec<CheckpointView>,
    /// The trial's spec as a worker takes it (YAML), to reproduce it.
    pub spec_yaml: String,
    /// The last lines of its log, where the runner keeps one.
    pub log_tail: Option<String>,
    /// Its starts, restarts, failed attempts and stops with their reasons, the newest first,
    /// where the runner records them (the operator's events).
    pub history: Vec<EventView>,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepLine {
    pub step: u64,
    pub loss_seg: f64,
    pub loss_dis: Option<f64>,
    pub loss_rate: Option<f64>,
    pub lr: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalLine {
    pub step: u64,
    pub dice: f64,
    pub iou: f64,
    pub bpp: Option<f64>,
    /// Training seconds spent to reach the step, evaluations left out (older files lack it).
    pub train_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointView {
    pub step: u64,
    pub bytes: u64,
    pub latest: bool,
}
