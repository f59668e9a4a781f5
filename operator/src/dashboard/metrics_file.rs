//! A trial's `metrics.jsonl` as the dashboard's curves take it: one line per step (the losses,
//! the learning rate) and one per evaluation (Dice, IoU and the real bitstreams' bpp). A line
//! that does not parse is reported by number, never skipped in silence.

use serde::Deserialize;

use super::view::{EvalLine, StepLine};

#[derive(Deserialize)]
struct Line {
    step: u64,
    #[serde(default)]
    eval: Option<Eval>,
    #[serde(default)]
    loss_seg: Option<f64>,
    #[serde(default)]
    loss_dis: Option<f64>,
    #[serde(default)]
    loss_rate: Option<f64>,
    #[serde(default)]
    lr: Option<f64>,
    #[serde(default, rename = "trainSeconds")]
    train_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct Eval {
    scores: Scores,
    #[serde(default)]
    rate: Option<Rate>,
}

#[derive(Deserialize)]
struct Scores {
    dice: f64,
    iou: f64,
}

#[derive(Deserialize)]
struct Rate {
    #[serde(default)]
    bpp: Option<f64>,
}

/// The step lines, the evaluation lines, and what could not be read (by line number; the
/// caller names the file).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsFile {
    pub steps: Vec<StepLine>,
    pub evals: Vec<EvalLine>,
    pub problems: Vec<String>,
}

/// Parses `metrics.jsonl`.
pub fn metrics_file(bytes: &[u8]) -> MetricsFile {
    let mut out = MetricsFile::default();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line {
                step,
                eval: Some(e),
                train_seconds,
                ..
            }) => out.evals.push(EvalLine {
                step,
                dice: e.scores.dice,
                iou: e.scores.iou,
                bpp: e.rate.and_then(|r| r.bpp),
                train_seconds,
            }),
            Ok(Line {
                step,
                loss_seg: Some(loss_seg),
                loss_dis,
                loss_rate,
                lr,
                ..
            }) => out.steps.push(StepLine {
                step,
                loss_seg,
                loss_dis,
                loss_rate,
                lr,
            }),
            Ok(_) => out
                .problems
                .push(format!("line {}: neither a step nor an evaluation", i + 1)),
            Err(e) => out.problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_evaluations_are_told_apart_and_a_bad_line_is_named() {
        let text = br#"{"step":1,"loss_seg":0.5,"loss_rate":0.9,"lr":0.002,"w_dis":0.0}
{"step":2,"loss_seg":0.4,"loss_dis":0.1,"lr":0.002,"w_dis":0.04}

{"eval":{"rate":{"bpp":0.005,"codeBits":192},"scores":{"dice":0.91,"iou":0.85,"images":8}},"step":2,"trainSeconds":1.5}
{"step":3,"loss_seg":
{"step":4}
"#;
        let m = metrics_file(text);
        assert_eq!(m.steps.len(), 2);
        assert_eq!(m.steps[1].loss_dis, Some(0.1));
        assert_eq!(m.steps[0].loss_rate, Some(0.9));
        assert_eq!(
            m.evals,
            vec![EvalLine {
                step: 2,
                dice: 0.91,
                iou: 0.85,
                bpp: Some(0.005),
                train_seconds: Some(1.5),
            }]
        );
        assert_eq!(m.problems.len(), 2, "{:?}", m.problems);
        assert!(m.problems[0].starts_with("line 5:"), "{:?}", m.problems);
        assert!(m.problems[1].starts_with("line 6: neither"), "{:?}", m.problems);
    }
}
