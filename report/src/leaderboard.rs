//! The leaderboard: every finished trial with its parameters, rate and scores; the Pareto front
//! of bits per pixel (down) against Dice (up); the winner under the bpp budget; and the front's
//! hypervolume, one number to compare sweeps. Pure: results in, rankings out.

use std::collections::BTreeMap;

use orchestra_api::{BestTrial, Objective, TrialResult, Variant};
use serde::{Deserialize, Serialize};

pub use crate::pareto::{hypervolume, pareto_front};
pub use orchestra_api::trial_result::{BppSource, Ranked};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub trial: String,
    pub variant: Variant,
    pub params: BTreeMap<String, f64>,
    pub bpp: f64,
    pub bpp_source: BppSource,
    /// The training estimate, shown beside a real-bitstream bpp.
    pub bpp_estimate: Option<f64>,
    pub dice: f64,
    pub iou: f64,
    pub dice_per_class: Vec<f64>,
    pub on_front: bool,
    /// Steps the trial trained.
    #[serde(default)]
    pub steps: u64,
    /// Steps of the trials it read weights from (warm start, distillation teacher): part of
    /// its cost, shown beside its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub teacher_steps: u64,
    /// Autoencoder steps of C and g before its own (`hyper.codePretrainSteps`): part of its
    /// cost too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pretrain_steps: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A rate-accuracy curve of a baseline codec (bpp, Dice) points, drawn beside the trials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaderboard {
    pub experiment: String,
    /// Best Dice first; ties broken by lower bpp, then by name.
    pub entries: Vec<Entry>,
    /// Trial names on the Pareto front, by increasing bpp.
    pub front: Vec<String>,
    pub bpp_budget: Option<f64>,
    /// Best Dice at or below the budget.
    pub winner: Option<String>,
    pub reference_bpp: f64,
    /// Area dominated by the front in [0, referenceBpp] x [0, 1] (bpp x Dice).
    pub hypervolume: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Curve>,
    /// Trials the search stopped early, with the step they reached and their scores there
    /// (not ranked: they trained fewer steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<StoppedEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoppedEntry {
    pub trial: String,
    pub variant: Variant,
    pub params: BTreeMap<String, f64>,
    pub step: u64,
    pub bpp: f64,
    pub dice: f64,
    pub reason: String,
}

/// One finished trial as the leaderboard takes it.
#[derive(Clone, Debug)]
pub struct Finished {
    pub result: TrialResult,
    pub params: BTreeMap<String, f64>,
}

/// The rate a result is ranked by, where it comes from, and the training estimate beside it
/// (the rule is the API's, shared with the search's rung records).
pub fn ranked_bpp(r: &TrialResult) -> (f64, BppSource, Option<f64>) {
    Ranked::of(r.rate.as_ref(), r.source_bits_per_pixel).parts()
}

impl Entry {
    /// A finished trial's entry, not yet ranked (`on_front` is set by the ranking).
    pub fn of(f: &Finished) -> Entry {
        let r = &f.result;
        let (bpp, source, estimate) = ranked_bpp(r);
        Entry {
            trial: r.trial.clone(),
            variant: r.variant,
            params: f.params.clone(),
            bpp,
            bpp_source: source,
            bpp_estimate: estimate,
            dice: r.scores.dice,
            iou: r.scores.iou,
            dice_per_class: r.scores.dice_per_class.clone(),
            on_front: false,
            steps: r.steps,
            teacher_steps: r.teacher_steps(),
            pretrain_steps: r.code_pretrain_steps(),
        }
    }
}

/// Ranks finished trials.
pub fn rank(experiment: &str, finished: &[Finished], objective: &Objective) -> Leaderboard {
    rank_entries(experiment, finished.iter().map(Entry::of).collect(), objective)
}

/// Ranks finished trials' entries (as `Entry::of` makes them): a ranker that keeps entries
/// between rankings need not keep the whole results.
pub fn rank_entries(experiment: &str, mut entries: Vec<Entry>, objective: &Objective) -> Leaderboard {
    for e in &mut entries {
        e.on_front = false;
    }
    entries.sort_by(|a, b| {
        b.dice
            .total_cmp(&a.dice)
            .then(a.bpp.total_cmp(&b.bpp))
            .then_with(|| a.trial.cmp(&b.trial))
    });
    let points: Vec<(f64, f64)> = entries.iter().map(|e| (e.bpp, e.dice)).collect();
    let front_idx = pareto_front(&points);
    for &i in &front_idx {
        entries[i].on_front = true;
    }
    let winner = objective.bpp_budget.and_then(|budget| {
        // Entries are sorted by Dice: the first one within budget wins.
        entries.iter().find(|e| e.bpp <= budget).map(|e| e.trial.clone())
    });
    Leaderboard {
        experiment: experiment.to_string(),
        front: front_idx.iter().map(|&i| entries[i].trial.clone()).collect(),
        hypervolume: hypervolume(&points, &front_idx, objective.reference_bpp),
        entries,
        bpp_budget: objective.bpp_budget,
        winner,
        reference_bpp: objective.reference_bpp,
        baselines: Vec::new(),
        stopped: Vec::new(),
    }
}

impl Leaderboard {
    fn best_trial(e: &Entry) -> BestTrial {
        BestTrial {
            trial: e.trial.clone(),
            variant: e.variant,
            dice: e.dice,
            bpp: e.bpp,
        }
    }

    /// The winner under the budget, or the best Dice overall without one.
    pub fn best(&self) -> Option<BestTrial> {
        let e = match &self.winner {
            Some(w) => self.entries.iter().find(|e| &e.trial == w),
            None => self.entries.first(),
        };
        e.map(Self::best_trial)
    }

    /// The best `most` entries and every entry on the front (best Dice first), and the first
    /// `most` stopped trials: what fits where space is bounded (a ConfigMap holds 1 MiB, some
    /// 4,000 entries).
    pub fn shortened(&self, most: usize) -> Leaderboard {
        let entries = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| *i < most || e.on_front)
            .map(|(_, e)| e.clone())
            .collect();
        Leaderboard {
            entries,
            stopped: self.stopped.iter().take(most).cloned().collect(),
            ..self.clone()
        }
    }

    /// The first `n` entries (best Dice first).
    pub fn top(&self, n: usize) -> Vec<BestTrial> {
        self.entries.iter().take(n).map(Self::best_trial).collect()
    }

    pub fn front_entries(&self) -> Vec<BestTrial> {
        self.front
            .iter()
            .filter_map(|t| self.entries.iter().find(|e| &e.trial == t))
            .map(Self::best_trial)
            .collect()
    }

    /// A Markdown table, best first, with the front marked.
    pub fn to_markdown(&self) -> String {
        let params: Vec<&String> = {
            let mut p: Vec<&String> = self.entries.iter().flat_map(|e| e.params.keys()).collect();
            p.sort();
            p.dedup();
            p
        };
        // Multi-structure tasks (cardiac volumes) show each structure's Dice too.
        let per_class = self.entries.iter().any(|e| e.dice_per_class.len() > 1);
        // Trials that learned from others or pre-trained their code show what they cost: their
        // own steps, then each kind of extra step that any trial took.
        let costs = Costs {
            pretrain: self.entries.iter().any(|e| e.pretrain_steps > 0),
            teachers: self.entries.iter().any(|e| e.teacher_steps > 0),
        };
        let mut s = format!("## Leaderboard: {}\n\n", self.experiment);
        s += "| # | trial | variant |";
        for p in &params {
            s += &format!(" {p} |");
        }
        s += " bpp | bpp source | est. bpp | Dice | IoU |";
        if per_class {
            s += " Dice per class |";
        }
        if let Some(header) = costs.header() {
            s += &format!(" {header} |");
        }
        s += " front |\n|---|---|---|";
        s += &"---|".repeat(params.len() + per_class as usize + costs.shown() as usize);
        s += "---|---|---|---|---|---|\n";
        for (i, e) in self.entries.iter().enumerate() {
            s += &markdown_row(i + 1, e, &params, per_class, costs);
        }
        s += &format!(
            "\nPareto front (bpp down, Dice up): {}\n\nHypervolume in [0, {} bpp] x [0, 1]: {:.6}\n",
            if self.front.is_empty() {
                "empty".to_string()
            } else {
                self.front.join(", ")
            },
            self.reference_bpp,
            self.hypervolume
        );
        if let Some(b) = self.bpp_budget {
            s += &format!(
                "\nWinner at <= {b} bpp: {}\n",
                self.winner
                    .as_deref()
                    .unwrap_or("none (no trial within the budget)")
            );
        }
        if !self.stopped.is_empty() {
            s += &format!(
                "\n### Stopped early by the search ({})\n\n| trial | variant | reached step | bpp | Dice | why |\n|---|---|---|---|---|---|\n",
                self.stopped.len()
            );
            for e in &self.stopped {
                s += &format!(
                    "| {} | {} | {} | {:.5} | {:.4} | {} |\n",
                    e.trial, e.variant, e.step, e.bpp, e.dice, e.reason
                );
            }
        }
        if self.entries.iter().any(|e| e.bpp_source == BppSource::Estimate) {
            s += "\nbpp marked `estimate` is the learned bit model's ideal code length, not a real bitstream.\n";
        }
        s
    }
}

/// Which extra steps the leaderboard's cost column adds to each trial's own.
#[derive(Clone, Copy)]
struct Costs {
    pretrain: bool,
    teachers: bool,
}

impl Costs {
    fn shown(self) -> bool {
        self.pretrain || self.teachers
    }

    fn header(self) -> Option<&'static str> {
        match (self.pretrain, self.teachers) {
            (false, false) => None,
            (true, false) => Some("steps (+ code pre-training)"),
            (false, true) => Some("steps (+ teachers')"),
            (true, true) => Some("steps (+ code pre-training + teachers')"),
        }
    }

    /// The entry's own steps alone when it took no extra ones, else every part the header names.
    fn cell(self, e: &Entry) -> String {
        let mut cell = e.steps.to_string();
        if e.pretrain_steps + e.teacher_steps > 0 {
            for (shown, n) in [
                (self.pretrain, e.pretrain_steps),
                (self.teachers, e.teacher_steps),
            ] {
                if shown {
                    cell += &format!(" + {n}");
                }
            }
        }
        cell
    }
}

/// One trial's row of the Markdown leaderboard.
fn markdown_row(rank: usize, e: &Entry, params: &[&String], per_class: bool, costs: Costs) -> String {
    let mut s = format!("| {rank} | {} | {} |", e.trial, e.variant);
    for p in params {
        s += &match e.params.get(*p) {
            Some(v) => format!(" {v} |"),
            None => " |".to_string(),
        };
    }
    let source = match e.bpp_source {
        BppSource::Bitstream => "bitstream",
        BppSource::Estimate => "estimate",
        BppSource::Uncompressed => "raw pixels",
    };
    let est = e.bpp_estimate.map_or(String::new(), |b| format!("{b:.5}"));
    s += &format!(
        " {:.5} | {source} | {est} | {:.4} | {:.4} |",
        e.bpp, e.dice, e.iou
    );
    if per_class {
        let each: Vec<String> = e.dice_per_class.iter().map(|d| format!("{d:.3}")).collect();
        s += &format!(" {} |", each.join(" / "));
    }
    if costs.shown() {
        s += &format!(" {} |", costs.cell(e));
    }
    s += &format!(" {} |\n", if e.on_front { "*" } else { "" });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestra_api::{ParamCounts, RateScores, SegmentationScores, Timings};

    pub fn finished(trial: &str, variant: Variant, bpp: Option<f64>, dice: f64) -> Finished {
        Finished {
            result: TrialResult {
                experiment: "e".into(),
                trial: trial.into(),
                variant,
                steps: 1,
                scores: SegmentationScores {
                    dice,
                    iou: dice / (2.0 - dice),
                    dice_per_class: vec![dice],
                    iou_per_class: vec![dice / (2.0 - dice)],
                    images: 10,
                },
                rate: bpp.map(|b| RateScores::estimated(192, 0.0117, b)),
                source_bits_per_pixel: 24.0,
                params: ParamCounts::default(),
                timings: Timings::default(),
                hyper: Default::default(),
                teachers: Vec::new(),
            },
            params: BTreeMap::new(),
        }
    }

    #[test]
    fn trials_that_learned_from_others_show_their_teachers_steps() {
        let plain = rank(
            "e",
            &[finished("e-d1-000", Variant::D1, None, 0.9)],
            &Objective::default(),
        );
        assert!(
            !plain.to_markdown().contains("teachers'"),
            "no column without a teacher"
        );
        let mut taught = finished("e-d4-000", Variant::D4, Some(0.005), 0.85);
        taught.result.steps = 2000;
        taught.result.teachers = vec![orchestra_api::TeacherCost {
            source: "trial:e-d1-000".into(),
            variant: Variant::D1,
            steps: 6000,
            train_seconds: 700.0,
        }];
        let board = rank(
            "e",
            &[finished("e-d1-000", Variant::D1, None, 0.9), taught],
            &Objective::default(),
        );
        let md = board.to_markdown();
        assert!(md.contains("| steps (+ teachers') |"), "{md}");
        assert!(md.contains("| 2000 + 6000 |"), "{md}");
        assert!(md.contains("| 1 |"), "{md}");
        let d4 = board.entries.iter().find(|e| e.trial == "e-d4-000").unwrap();
        assert_eq!((d4.steps, d4.teacher_steps, d4.pretrain_steps), (2000, 6000, 0));
    }

    /// A code pre-training is a cost of its own, in the column and apart from the teachers'; a
    /// D1's setting of it is ignored (it has no code).
    #[test]
    fn code_pre_training_is_counted_apart_from_teachers() {
        let mut d1 = finished("e-d1-000", Variant::D1, None, 0.9);
        d1.result.hyper.code_pretrain_steps = 300;
        let mut pre = finished("e-d4-000", Variant::D4, Some(0.005), 0.85);
        pre.result.steps = 2000;
        pre.result.hyper.code_pretrain_steps = 500;
        let only_pre = rank("e", &[d1.clone(), pre.clone()], &Objective::default());
        let md = only_pre.to_markdown();
        assert!(md.contains("| steps (+ code pre-training) |"), "{md}");
        assert!(md.contains("| 2000 + 500 |"), "{md}");
        let d1_entry = only_pre.entries.iter().find(|e| e.trial == "e-d1-000").unwrap();
        assert_eq!((d1_entry.pretrain_steps, d1_entry.teacher_steps), (0, 0));
        pre.result.teachers = vec![orchestra_api::TeacherCost {
            source: "trial:e-d1-000".into(),
            variant: Variant::D1,
            steps: 6000,
            train_seconds: 700.0,
        }];
        assert_eq!(pre.result.steps_in_all(), 8500);
        let both = rank("e", &[d1, pre], &Objective::default()).to_markdown();
        assert!(
            both.contains("| steps (+ code pre-training + teachers') |"),
            "{both}"
        );
        assert!(both.contains("| 2000 + 500 + 6000 |"), "{both}");
    }

    #[test]
    fn front_winner_and_hypervolume_by_hand() {
        let f = vec![
            finished("a", Variant::D4, Some(0.004), 0.80),
            finished("b", Variant::D4, Some(0.006), 0.78), // dominated by a
            finished("c", Variant::D3, Some(0.010), 0.85),
            finished("d", Variant::D2, Some(0.002), 0.60),
            finished("e", Variant::D1, None, 0.90), // 24 bpp, beyond the reference
        ];
        let objective = Objective {
            bpp_budget: Some(0.005),
            reference_bpp: 0.1,
            mode: None,
        };
        let lb = rank("e", &f, &objective);
        assert_eq!(
            lb.entries.iter().map(|e| e.trial.as_str()).collect::<Vec<_>>(),
            ["e", "c", "a", "b", "d"]
        );
        assert_eq!(lb.front, ["d", "a", "c", "e"]);
        assert_eq!(lb.winner.as_deref(), Some("a"));
        // (0.1-0.002)*0.60 + (0.1-0.004)*(0.80-0.60) + (0.1-0.010)*(0.85-0.80)
        let expected = 0.098 * 0.60 + 0.096 * 0.20 + 0.090 * 0.05;
        assert!((lb.hypervolume - expected).abs() < 1e-12, "{}", lb.hypervolume);
        assert_eq!(lb.best().unwrap().trial, "a");
        let md = lb.to_markdown();
        assert!(
            md.contains("| 3 | a | D4 |") && md.contains("Winner at <= 0.005 bpp: a"),
            "{md}"
        );
        assert!(md.contains("raw pixels") && md.contains("not a real bitstream"));
    }

    #[test]
    fn a_shortened_board_keeps_the_best_and_the_whole_front() {
        let f = vec![
            finished("a", Variant::D4, Some(0.004), 0.80),
            finished("b", Variant::D4, Some(0.006), 0.78),
            finished("c", Variant::D3, Some(0.010), 0.85),
            finished("d", Variant::D2, Some(0.002), 0.60),
            finished("e", Variant::D1, None, 0.90),
        ];
        let lb = rank("e", &f, &Objective::default());
        let short = lb.shortened(2);
        // The best two (e, c), then a and d for the front; b (dominated, fourth) is left out.
        assert_eq!(
            short.entries.iter().map(|e| e.trial.as_str()).collect::<Vec<_>>(),
            ["e", "c", "a", "d"]
        );
        assert_eq!((&short.front, short.hypervolume), (&lb.front, lb.hypervolume));
        assert_eq!(lb.shortened(10), lb);
    }

    #[test]
    fn stopped_trials_are_listed_with_their_step_not_ranked() {
        let mut lb = rank(
            "e",
            &[finished("a", Variant::D4, Some(0.004), 0.8)],
            &Objective::default(),
        );
        lb.stopped.push(StoppedEntry {
            trial: "b".into(),
            variant: Variant::D4,
            params: BTreeMap::new(),
            step: 120,
            bpp: 0.003,
            dice: 0.9,
            reason: "stopped early at step 120: not in the top 1/3 of its rung".into(),
        });
        let md = lb.to_markdown();
        assert!(
            md.contains("Stopped early by the search (1)")
                && md.contains("| b | D4 | 120 | 0.00300 | 0.9000 |"),
            "{md}"
        );
        assert_eq!(lb.front, ["a"], "a stopped trial is not on the front");
        let back: Leaderboard = serde_json::from_str(&serde_json::to_string(&lb).unwrap()).unwrap();
        assert_eq!(back, lb);
    }

    #[test]
    fn real_bitstreams_take_precedence_over_estimates() {
        let mut f = finished("a", Variant::D4, Some(0.004), 0.8);
        f.result.rate.as_mut().unwrap().bpp = Some(0.0051);
        let lb = rank("e", &[f], &Objective::default());
        assert_eq!(lb.entries[0].bpp, 0.0051);
        assert_eq!(lb.entries[0].bpp_source, BppSource::Bitstream);
        assert_eq!(lb.entries[0].bpp_estimate, Some(0.004));
    }

    #[test]
    fn empty_and_ties() {
        let lb = rank(
            "e",
            &[],
            &Objective {
                bpp_budget: Some(1.0),
                reference_bpp: 0.1,
                mode: None,
            },
        );
        assert!(lb.entries.is_empty() && lb.front.is_empty() && lb.winner.is_none());
        assert_eq!(lb.hypervolume, 0.0);
        let same = vec![
            finished("x", Variant::D4, Some(0.01), 0.5),
            finished("y", Variant::D4, Some(0.01), 0.5),
        ];
        let lb = rank("e", &same, &Objective::default());
        assert_eq!(lb.front, ["x"], "equal points: one represents the front");
    }
}
