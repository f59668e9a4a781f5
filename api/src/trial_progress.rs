//! How far a running trial is: what its worker publishes at a steady interval (the store's
//! `progress.json`, and a log line), and what a runner without a progress bar prints.

use serde::{Deserialize, Serialize};

/// A running trial's progress at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialProgress {
    pub trial: String,
    pub step: u64,
    pub steps: u64,
    /// Training images per second over this run of the worker (all ranks).
    pub images_per_second: f64,
    /// The latest step's losses.
    pub loss_seg: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_dis: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_rate: Option<f64>,
    /// Seconds to the last step at the current speed; `None` before a speed is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// Seconds since the Unix epoch when this was written.
    pub at: f64,
}

impl TrialProgress {
    /// The remaining steps at `steps_per_second`, if that is a usable speed.
    pub fn eta(step: u64, steps: u64, steps_per_second: f64) -> Option<f64> {
        (steps_per_second.is_finite() && steps_per_second > 0.0)
            .then(|| steps.saturating_sub(step) as f64 / steps_per_second)
    }

    /// One line for a log: `trial step 120/400 (30%), 45.2 images/s, seg 0.3121 dis 0.6931
    /// rate 0.812b, eta 6m12s`.
    pub fn line(&self) -> String {
        let percent = 100.0 * self.step as f64 / self.steps.max(1) as f64;
        let mut s = format!(
            "{} step {}/{} ({percent:.0}%), {:.1} images/s, {}",
            self.trial,
            self.step,
            self.steps,
            self.images_per_second,
            losses(self.loss_seg, self.loss_dis, self.loss_rate)
        );
        match self.eta_seconds {
            Some(eta) => s += &format!(", eta {}", duration(eta)),
            None => s += ", eta unknown",
        }
        s
    }
}

/// A step's losses as the progress bar and the progress line show them: `seg 0.3121 dis 0.6932
/// rate 0.812b` (the critic's and the rate's only for the variants that have them).
pub fn losses(seg: f64, dis: Option<f64>, rate: Option<f64>) -> String {
    let mut s = format!("seg {seg:.4}");
    if let Some(d) = dis {
        s += &format!(" dis {d:.4}");
    }
    if let Some(r) = rate {
        s += &format!(" rate {r:.3}b");
    }
    s
}

/// `6m12s`, `1h04m`, `45s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_step_speed_losses_and_eta() {
        let p = TrialProgress {
            trial: "q-d4-001".into(),
            step: 120,
            steps: 400,
            images_per_second: 45.23,
            loss_seg: 0.31214,
            loss_dis: Some(0.6932),
            loss_rate: Some(0.8121),
            eta_seconds: TrialProgress::eta(120, 400, 280.0 / 372.0),
            at: 0.0,
        };
        assert_eq!(
            p.line(),
            "q-d4-001 step 120/400 (30%), 45.2 images/s, seg 0.3121 dis 0.6932 rate 0.812b, eta 6m12s"
        );
        assert_eq!(TrialProgress::eta(5, 10, 0.0), None);
        assert_eq!(duration(3840.0), "1h04m");
        assert_eq!(duration(45.4), "45s");
    }
}
