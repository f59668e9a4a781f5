//! Reconcile latency from the operator's own histogram (`/metrics`,
//! `orchestra_operator_reconcile_duration_seconds`): quantiles the way Prometheus's
//! `histogram_quantile` reads them, linear within the bucket that holds the rank.

use serde::Serialize;

const HISTOGRAM: &str = "orchestra_operator_reconcile_duration_seconds";
const STEPS: &str = "orchestra_operator_reconcile_step_duration_seconds";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReconcileLatency {
    pub reconciles: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p99_s: f64,
    /// The upper bound of the highest bucket any reconcile fell in (infinite past the last).
    pub max_bound_s: f64,
    /// The same per step of a reconciliation (`list`, `store`, `plan`, ...), with each step's
    /// total seconds: where the time goes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepLatency>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLatency {
    pub step: String,
    pub total_s: f64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p99_s: f64,
}

/// The histogram `name`'s cumulative buckets (upper bound, count), sum and count; `label` is
/// the text of the series' other labels (`step="list"`), empty for none.
/// A histogram as its text shows it: cumulative buckets (upper bound, count), sum, count.
type Parsed = (Vec<(f64, u64)>, f64, u64);

fn parse(text: &str, name: &str, label: &str) -> Option<Parsed> {
    let bucket_prefix = format!("{name}_bucket{{");
    let braces = if label.is_empty() {
        String::new()
    } else {
        format!("{{{label}}}")
    };
    let (sum_name, count_name) = (format!("{name}_sum{braces}"), format!("{name}_count{braces}"));
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (None, None);
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let (series, value) = line.rsplit_once(' ')?;
        if let Some(inner) = series
            .strip_prefix(&bucket_prefix)
            .and_then(|r| r.strip_suffix('}'))
        {
            // `le` may come before or after the other labels.
            let (les, others): (Vec<&str>, Vec<&str>) =
                inner.split(',').partition(|l| l.starts_with("le=\""));
            if others.join(",") != label {
                continue;
            }
            let le = les.first()?.strip_prefix("le=\"")?.strip_suffix('"')?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, value.parse::<f64>().ok()? as u64));
        } else if series == sum_name {
            sum = value.parse().ok();
        } else if series == count_name {
            count = value.parse::<f64>().ok().map(|c| c as u64);
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some((buckets, sum?, count?))
}

/// The `q` quantile: linear between the bounds of the bucket holding rank q * count (from 0
/// for the first bucket); the last finite bound when the rank is past it.
fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> f64 {
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for &(le, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let inside = (cumulative - lower.1) as f64;
            let share = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * share;
        }
        lower = (le, cumulative);
    }
    lower.0
}

/// The latency in the operator's metrics text; None when the histogram is not there.
pub fn from_metrics(text: &str) -> Option<ReconcileLatency> {
    let (buckets, sum, count) = parse(text, HISTOGRAM, "")?;
    if count == 0 {
        return None;
    }
    let max_bound_s = buckets
        .iter()
        .find(|(_, c)| *c == count)
        .map_or(f64::INFINITY, |(le, _)| *le);
    Some(ReconcileLatency {
        reconciles: count,
        mean_s: sum / count as f64,
        p50_s: quantile(&buckets, count, 0.5),
        p99_s: quantile(&buckets, count, 0.99),
        max_bound_s,
        steps: steps(text),
    })
}

/// Every step's latency, in the order the reconciler takes them.
fn steps(text: &str) -> Vec<StepLatency> {
    let prefix = format!("{STEPS}_count{{step=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.split_once('"').map(|(step, _)| step))
        .filter_map(|step| {
            let (buckets, sum, count) = parse(text, STEPS, &format!("step=\"{step}\""))?;
            (count > 0).then(|| StepLatency {
                step: step.to_string(),
                total_s: sum,
                mean_s: sum / count as f64,
                p50_s: quantile(&buckets, count, 0.5),
                p99_s: quantile(&buckets, count, 0.99),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP orchestra_operator_reconcile_duration_seconds Duration.\n\
        # TYPE orchestra_operator_reconcile_duration_seconds histogram\n\
        orchestra_operator_reconcile_duration_seconds_sum 30.0\n\
        orchestra_operator_reconcile_duration_seconds_count 100\n\
        orchestra_operator_reconcile_duration_seconds_bucket{le=\"0.1\"} 40\n\
        orchestra_operator_reconcile_duration_seconds_bucket{le=\"0.2\"} 90\n\
        orchestra_operator_reconcile_duration_seconds_bucket{le=\"0.4\"} 100\n\
        orchestra_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 100\n\
        orchestra_operator_reconciles_total 100\n\
        orchestra_operator_reconcile_step_duration_seconds_sum{step=\"list\"} 2.0\n\
        orchestra_operator_reconcile_step_duration_seconds_count{step=\"list\"} 10\n\
        orchestra_operator_reconcile_step_duration_seconds_bucket{le=\"0.1\",step=\"list\"} 5\n\
        orchestra_operator_reconcile_step_duration_seconds_bucket{le=\"0.3\",step=\"list\"} 10\n\
        orchestra_operator_reconcile_step_duration_seconds_bucket{le=\"+Inf\",step=\"list\"} 10\n";

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let l = from_metrics(TEXT).unwrap();
        assert_eq!(l.reconciles, 100);
        assert!((l.mean_s - 0.3).abs() < 1e-12);
        // Rank 50: 10 of the 50 in (0.1, 0.2].
        assert!((l.p50_s - 0.12).abs() < 1e-12, "{l:?}");
        // Rank 99: 9 of the 10 in (0.2, 0.4].
        assert!((l.p99_s - 0.38).abs() < 1e-12, "{l:?}");
        assert_eq!(l.max_bound_s, 0.4);
        assert_eq!(l.steps.len(), 1);
        let list = &l.steps[0];
        assert_eq!(
            (list.step.as_str(), list.total_s, list.mean_s),
            ("list", 2.0, 0.2)
        );
        assert!(
            (list.p50_s - 0.1).abs() < 1e-12 && (list.p99_s - 0.296).abs() < 1e-12,
            "{list:?}"
        );
    }

    #[test]
    fn past_the_last_bound_says_the_last_bound_and_no_histogram_is_none() {
        let text = TEXT.replace("le=\"0.4\"} 100", "le=\"0.4\"} 95");
        let l = from_metrics(&text).unwrap();
        assert_eq!(l.p99_s, 0.4);
        assert!(l.max_bound_s.is_infinite());
        assert_eq!(from_metrics("orchestra_operator_reconciles_total 3\n"), None);
    }
}
