//! One summary of an Experiment's trials, the same for both runners: trial counts per phase once
//! the planner's actions are carried out, progress, the best trial as the leaderboard chooses it,
//! and the bpp a trial is shown with. The Kubernetes status, the operator's metrics and the local
//! runner's progress line all read it, so that the two runners cannot disagree on what they
//! observed.

use std::collections::BTreeMap;

use orchestra_api::{BestTrial, RungOccupancy, TrialPhase, TrialResult};

use crate::leaderboard::{ranked_bpp, Leaderboard};
use crate::observed::ObservedTrial;
use crate::planner::Action;

/// Trial counts and the best trial of one Experiment at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Trials the Experiment will run in all (its candidates).
    pub total: u32,
    pub pending: u32,
    pub running: u32,
    /// Waiting to be restarted after a failed attempt.
    pub attempt_failed: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub stopped: u32,
    /// At a rung, waiting for the search to promote or stop them.
    pub paused: u32,
    /// The leaderboard's choice: best Dice within the bpp budget, else best Dice.
    pub best: Option<BestTrial>,
    /// Per rung below the last (with early stopping), trials that reached it and wait there.
    pub rungs: Vec<RungOccupancy>,
}

impl Summary {
    /// The summary once `actions` are carried out on the `observed` trials.
    pub fn after(
        observed: &[ObservedTrial],
        actions: &[Action],
        total: usize,
        leaderboard: &Leaderboard,
    ) -> Summary {
        let phases = phases_after(observed, actions);
        let count = |p: TrialPhase| phases.values().filter(|q| **q == p).count() as u32;
        Summary {
            total: total as u32,
            pending: count(TrialPhase::Pending),
            running: count(TrialPhase::Running),
            attempt_failed: count(TrialPhase::AttemptFailed),
            succeeded: count(TrialPhase::Succeeded),
            failed: count(TrialPhase::Failed),
            stopped: count(TrialPhase::Stopped),
            paused: count(TrialPhase::Paused),
            best: leaderboard.best(),
            rungs: rung_occupancy(observed, &phases),
        }
    }

    /// "succeeded/total", as `kubectl get experiments` shows it.
    pub fn progress(&self) -> String {
        format!("{}/{}", self.succeeded, self.total)
    }

    /// Trials that will not run again.
    pub fn done(&self) -> u32 {
        self.succeeded + self.failed + self.stopped
    }

    /// Counts by phase name, for the trials-by-phase metric.
    pub fn by_phase(&self) -> [(&'static str, u32); 4] {
        [
            ("Pending", self.pending),
            ("Running", self.running),
            ("Succeeded", self.succeeded),
            ("Failed", self.failed),
        ]
    }

    /// One line for a progress display: running, failed, and the best trial so far.
    pub fn line(&self) -> String {
        let best = self.best.as_ref().map_or(String::new(), |b| {
            format!(", best Dice {:.4} at {:.5} bpp ({})", b.dice, b.bpp, b.trial)
        });
        let paused = match self.paused {
            0 => String::new(),
            n => format!(", {n} at a rung"),
        };
        format!("running {}, failed {}{paused}{best}", self.running, self.failed)
    }
}

/// The bpp a trial is shown with everywhere (status, events, progress lines, leaderboard): the
/// real bitstream's when measured, else the training estimate, else (D1, no compression) the
/// source image's bits per pixel.
pub fn shown_bpp(result: &TrialResult) -> f64 {
    ranked_bpp(result).0
}

/// Per step at which some trial paused, how many trials reached it and how many still wait.
fn rung_occupancy(observed: &[ObservedTrial], phases: &BTreeMap<String, TrialPhase>) -> Vec<RungOccupancy> {
    let mut by_step: BTreeMap<u64, RungOccupancy> = BTreeMap::new();
    for t in observed {
        for r in &t.rungs {
            by_step
                .entry(r.step)
                .or_insert(RungOccupancy {
                    step: r.step,
                    reached: 0,
                    waiting: 0,
                })
                .reached += 1;
        }
        if phases.get(&t.name) == Some(&TrialPhase::Paused) {
            if let Some(o) = by_step.get_mut(&t.target) {
                o.waiting += 1;
            }
        }
    }
    by_step.into_values().collect()
}

/// Each trial's phase once the planner's `actions` are carried out.
pub fn phases_after(observed: &[ObservedTrial], actions: &[Action]) -> BTreeMap<String, TrialPhase> {
    let mut phases: BTreeMap<String, TrialPhase> =
        observed.iter().map(|t| (t.name.clone(), t.phase)).collect();
    for a in actions {
        let (name, phase) = match a {
            Action::CreateTrial { name, .. } => (name, TrialPhase::Pending),
            Action::StartTrial { name, .. } => (name, TrialPhase::Running),
            Action::FailTrial { name, .. } => (name, TrialPhase::Failed),
            Action::StopTrial { name, .. } => (name, TrialPhase::Stopped),
            Action::SuspendTrial { name } => (name, TrialPhase::Pending),
        };
        phases.insert(name.clone(), phase);
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderboard::{rank, Finished};
    use orchestra_api::{Objective, ParamCounts, RateScores, SegmentationScores, Timings, Variant};

    fn result(trial: &str, variant: Variant, rate: Option<RateScores>, dice: f64) -> TrialResult {
        TrialResult {
            experiment: "e".into(),
            trial: trial.into(),
            variant,
            steps: 10,
            scores: SegmentationScores {
                dice,
                iou: dice,
                dice_per_class: vec![dice],
                iou_per_class: vec![dice],
                images: 4,
            },
            rate,
            source_bits_per_pixel: 24.0,
            params: ParamCounts::default(),
            timings: Timings::default(),
            hyper: Default::default(),
            teachers: Vec::new(),
        }
    }

    #[test]
    fn every_trial_is_shown_with_the_bpp_the_leaderboard_ranks_it_by() {
        let real = RateScores {
            bpp: Some(0.004),
            ..RateScores::estimated(192, 0.0117, 0.0035)
        };
        let d1 = result("d1", Variant::D1, None, 0.9);
        let d4 = result("d4", Variant::D4, Some(real), 0.8);
        let d2 = result(
            "d2",
            Variant::D2,
            Some(RateScores::estimated(192, 0.0117, 0.006)),
            0.7,
        );
        // D1 has no bitstream: it is shown at the source's 24 bpp, never without a rate.
        assert_eq!(shown_bpp(&d1), 24.0);
        assert_eq!(shown_bpp(&d4), 0.004, "the real bitstream, not the estimate");
        assert_eq!(
            shown_bpp(&d2),
            0.006,
            "the estimate when no bitstream was measured"
        );
        let finished = finished_of(&[&d1, &d4, &d2]);
        let lb = rank(
            "e",
            &finished,
            &Objective {
                bpp_budget: Some(0.005),
                reference_bpp: 0.1,
                mode: None,
            },
        );
        for e in &lb.entries {
            let r = finished.iter().find(|f| f.result.trial == e.trial).unwrap();
            assert_eq!(e.bpp, shown_bpp(&r.result), "{}", e.trial);
        }

        let observed = [
            seen("d1", TrialPhase::Succeeded),
            seen("d4", TrialPhase::Succeeded),
            seen("d2", TrialPhase::Succeeded),
            seen("x", TrialPhase::AttemptFailed),
            seen("y", TrialPhase::Running),
        ];
        let actions = [
            Action::FailTrial {
                name: "x".into(),
                reason: "out of attempts".into(),
            },
            Action::StopTrial {
                name: "y".into(),
                reason: "stopped: the Experiment failed".into(),
            },
        ];
        let s = Summary::after(&observed, &actions, 7, &lb);
        assert_eq!(
            (
                s.pending,
                s.running,
                s.attempt_failed,
                s.succeeded,
                s.failed,
                s.stopped
            ),
            (0, 0, 0, 3, 1, 1)
        );
        assert_eq!(s.progress(), "3/7");
        assert_eq!(s.done(), 5);
        // Under the budget the best trial is the leaderboard's winner (D4), not the best Dice (D1).
        let best = s.best.as_ref().unwrap();
        assert_eq!((best.trial.as_str(), best.bpp), ("d4", 0.004));
        assert_eq!(
            s.line(),
            "running 0, failed 1, best Dice 0.8000 at 0.00400 bpp (d4)"
        );
    }

    fn finished_of(results: &[&TrialResult]) -> Vec<Finished> {
        results
            .iter()
            .map(|r| Finished {
                result: (*r).clone(),
                params: BTreeMap::new(),
            })
            .collect()
    }

    fn seen(name: &str, phase: TrialPhase) -> ObservedTrial {
        ObservedTrial::new(name, phase, 1, 0)
    }

    #[test]
    fn actions_move_trials_to_their_next_phase() {
        let observed = [
            seen("a", TrialPhase::Running),
            seen("b", TrialPhase::AttemptFailed),
            seen("c", TrialPhase::AttemptFailed),
            seen("d", TrialPhase::Succeeded),
        ];
        let actions = [
            Action::StartTrial {
                name: "b".into(),
                attempt: 2,
                until: 10,
                promotion: false,
            },
            Action::FailTrial {
                name: "c".into(),
                reason: "out of attempts".into(),
            },
            Action::StopTrial {
                name: "a".into(),
                reason: "stopped: the Experiment failed".into(),
            },
        ];
        let after = phases_after(&observed, &actions);
        assert_eq!(after["a"], TrialPhase::Stopped);
        assert_eq!(after["b"], TrialPhase::Running);
        assert_eq!(after["c"], TrialPhase::Failed);
        assert_eq!(after["d"], TrialPhase::Succeeded);
    }
}
