//! Learning-rate schedules and the loss weights' warm-ups.

use orchestra_api::LrSchedule;

/// Learning rate at `step` of `total`.
pub fn learning_rate(base: f64, schedule: LrSchedule, min_ratio: f64, step: u64, total: u64) -> f64 {
    let progress = if total <= 1 {
        0.0
    } else {
        step as f64 / (total - 1) as f64
    };
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Cosine => {
            base * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
        }
        LrSchedule::Step => {
            let halvings = (progress >= 0.5) as i32 + (progress >= 0.75) as i32;
            base * 0.5f64.powi(halvings)
        }
    }
}

/// A loss weight at `step`, ramped linearly from 0 to `w` over `warmup` steps: the critic's (the
/// segmentation loss alone shapes the first steps; pure adversarial training is unstable) and
/// the rate's (the code carries the segmentation before it is squeezed).
pub fn ramp(w: f64, warmup: u64, step: u64) -> f64 {
    if warmup == 0 {
        w
    } else {
        w * (step as f64 / warmup as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_start_at_base_and_end_where_stated() {
        assert_eq!(learning_rate(1.0, LrSchedule::Cosine, 0.1, 0, 100), 1.0);
        assert!((learning_rate(1.0, LrSchedule::Cosine, 0.1, 99, 100) - 0.1).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, LrSchedule::Step, 0.0, 80, 101), 0.25);
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 0.0, 80, 100), 1.0);
        assert_eq!(ramp(0.5, 10, 5), 0.25);
        assert_eq!(ramp(0.5, 10, 50), 0.5);
    }
}
