//! Learning curves: every trial's held-out Dice (and bpp) at each evaluation, against the step
//! and against the training seconds spent to reach it, read from the trials' `metrics.jsonl`
//! in one or more stores. `orchestra curves` draws them and tabulates where each trial ended;
//! the table's smoothed column (the mean of the last evaluations) is what ablations compare,
//! since one evaluation on a few hundred images moves by a few hundredths from step to step.

use orchestra_report::lines::Series;
use orchestra_store::layout::{ExperimentKeys, TrialKeys};
use orchestra_store::Store;
use serde::Serialize;

use crate::dashboard::metrics_file;
use crate::results::{experiments_in, ResultsError};

/// One evaluation of a trial.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurvePoint {
    pub step: u64,
    pub dice: f64,
    pub bpp: Option<f64>,
    pub train_seconds: Option<f64>,
}

/// One trial's evaluations in step order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialCurve {
    pub experiment: String,
    pub trial: String,
    pub points: Vec<CurvePoint>,
}

/// How many of the last evaluations the smoothed Dice averages.
pub const SMOOTHED_OVER: usize = 3;

impl TrialCurve {
    /// The last `SMOOTHED_OVER` evaluations (fewer when there are fewer).
    fn tail(&self) -> &[CurvePoint] {
        &self.points[self.points.len().saturating_sub(SMOOTHED_OVER)..]
    }

    /// The mean Dice of the last `SMOOTHED_OVER` evaluations.
    pub fn smoothed_dice(&self) -> Option<f64> {
        let tail = self.tail();
        (!tail.is_empty()).then(|| tail.iter().map(|p| p.dice).sum::<f64>() / tail.len() as f64)
    }

    /// The mean bpp over the same evaluations (None for D1, which has no code).
    pub fn smoothed_bpp(&self) -> Option<f64> {
        let tail = self.tail();
        let bpps: Option<Vec<f64>> = tail.iter().map(|p| p.bpp).collect();
        bpps.filter(|b| !b.is_empty())
            .map(|b| b.iter().sum::<f64>() / b.len() as f64)
    }
}

/// The curves of every trial of every Experiment in `store` (or only `experiment`'s) that has
/// evaluated at least once. Lines that do not parse are reported in the error.
pub fn read_curves(store: &Store, experiment: Option<&str>) -> Result<Vec<TrialCurve>, ResultsError> {
    let names = match experiment {
        Some(e) => vec![e.to_string()],
        None => experiments_in(store)?,
    };
    let mut curves = Vec::new();
    for name in names {
        let keys = ExperimentKeys::new(&name);
        let mut trials: Vec<String> = store
            .list(&format!("{}/", keys.prefix()))?
            .iter()
            .filter_map(|k| keys.trial_of_object(k).map(String::from))
            .collect();
        trials.dedup();
        for trial in trials {
            let key = TrialKeys::new(&name, &trial).metrics();
            let Some(bytes) = store.get(&key)? else {
                continue;
            };
            let m = metrics_file(&bytes);
            if let Some(problem) = m.problems.first() {
                return Err(ResultsError::Corrupt {
                    key,
                    reason: problem.clone(),
                });
            }
            let points: Vec<CurvePoint> = m
                .evals
                .iter()
                .map(|e| CurvePoint {
                    step: e.step,
                    dice: e.dice,
                    bpp: e.bpp,
                    train_seconds: e.train_seconds,
                })
                .collect();
            if !points.is_empty() {
                curves.push(TrialCurve {
                    experiment: name.clone(),
                    trial,
                    points,
                });
            }
        }
    }
    Ok(curves)
}

/// What a curve is drawn against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Axis {
    Step,
    /// Training seconds (only the evaluations that recorded them).
    Seconds,
}

/// One line per trial, Dice against `axis`.
pub fn dice_series(curves: &[TrialCurve], axis: Axis) -> Vec<Series> {
    curves
        .iter()
        .map(|c| Series {
            name: c.trial.clone(),
            points: c
                .points
                .iter()
                .filter_map(|p| {
                    let x = match axis {
                        Axis::Step => Some(p.step as f64),
                        Axis::Seconds => p.train_seconds,
                    };
                    Some((x?, p.dice))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// A table: each trial's last step, its last Dice, the smoothed Dice and bpp, the best Dice
/// and where it was reached, and the training seconds.
pub fn curves_markdown(curves: &[TrialCurve]) -> String {
    let mut s = format!(
        "| trial | last step | Dice there | Dice, mean of last {SMOOTHED_OVER} evals | bpp, same evals | best Dice (step) | training s |\n|---|---|---|---|---|---|---|\n"
    );
    for c in curves {
        let last = c.points.last().expect("curves have points");
        let best = c
            .points
            .iter()
            .max_by(|a, b| a.dice.total_cmp(&b.dice))
            .expect("curves have points");
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        s += &format!(
            "| {} | {} | {:.4} | {} | {} | {:.4} ({}) | {} |\n",
            c.trial,
            last.step,
            last.dice,
            opt(c.smoothed_dice(), 4),
            opt(c.smoothed_bpp(), 5),
            best.dice,
            best.step,
            opt(last.train_seconds, 0),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(trial: &str, dice: &[f64], bpp: Option<f64>) -> TrialCurve {
        TrialCurve {
            experiment: "e".into(),
            trial: trial.into(),
            points: dice
                .iter()
                .enumerate()
                .map(|(i, &d)| CurvePoint {
                    step: 100 * (i as u64 + 1),
                    dice: d,
                    bpp,
                    train_seconds: (i > 0).then_some(10.0 * i as f64),
                })
                .collect(),
        }
    }

    #[test]
    fn the_table_smooths_over_the_last_evaluations() {
        let c = [
            curve("e-d1-000", &[0.5, 0.8, 0.9, 0.7], None),
            curve("e-d4-000", &[0.6], Some(0.005)),
        ];
        assert!((c[0].smoothed_dice().unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(c[0].smoothed_bpp(), None);
        assert_eq!(c[1].smoothed_bpp(), Some(0.005));
        let md = curves_markdown(&c);
        assert!(
            md.contains("| e-d1-000 | 400 | 0.7000 | 0.8000 | - | 0.9000 (300) | 30 |"),
            "{md}"
        );
        assert!(
            md.contains("| e-d4-000 | 100 | 0.6000 | 0.6000 | 0.00500 | 0.6000 (100) | - |"),
            "{md}"
        );
    }

    #[test]
    fn series_against_seconds_leave_out_evaluations_without_them() {
        let c = [curve("a", &[0.5, 0.8], None), curve("b", &[0.4], None)];
        let steps = dice_series(&c, Axis::Step);
        assert_eq!(steps[0].points, [(100.0, 0.5), (200.0, 0.8)]);
        let seconds = dice_series(&c, Axis::Seconds);
        assert_eq!(seconds.len(), 1, "b has no timed evaluation");
        assert_eq!(seconds[0].points, [(10.0, 0.8)]);
    }
}
