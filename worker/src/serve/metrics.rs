//! Prometheus counters and a latency histogram for the segmentation service, rendered in the
//! text exposition format. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    ok: AtomicU64,
    bad_request: AtomicU64,
    unauthorized: AtomicU64,
    too_large: AtomicU64,
    other_error: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum of latencies in microseconds.
    sum_us: AtomicU64,
}

impl Metrics {
    pub fn record(&self, status: u16, bytes_in: usize, bytes_out: usize, seconds: f64) {
        let counter = match status {
            200 => &self.ok,
            400 | 415 | 406 => &self.bad_request,
            401 => &self.unauthorized,
            413 => &self.too_large,
            _ => &self.other_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out as u64, Ordering::Relaxed);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::from(
            "# HELP orchestra_segment_requests_total Segmentation requests by outcome.\n\
             # TYPE orchestra_segment_requests_total counter\n",
        );
        for (code, c) in [
            ("200", &self.ok),
            ("400", &self.bad_request),
            ("401", &self.unauthorized),
            ("413", &self.too_large),
            ("other", &self.other_error),
        ] {
            s += &format!("orchestra_segment_requests_total{{code=\"{code}\"}} {}\n", g(c));
        }
        s += "# HELP orchestra_segment_received_bytes_total Bitstream bytes received.\n\
              # TYPE orchestra_segment_received_bytes_total counter\n";
        s += &format!("orchestra_segment_received_bytes_total {}\n", g(&self.bytes_in));
        s += "# HELP orchestra_segment_sent_bytes_total Response bytes sent.\n\
              # TYPE orchestra_segment_sent_bytes_total counter\n";
        s += &format!("orchestra_segment_sent_bytes_total {}\n", g(&self.bytes_out));
        s += "# HELP orchestra_segment_duration_seconds Time from request to response.\n\
              # TYPE orchestra_segment_duration_seconds histogram\n";
        for (i, bound) in BUCKETS.iter().enumerate() {
            s += &format!(
                "orchestra_segment_duration_seconds_bucket{{le=\"{bound}\"}} {}\n",
                g(&self.buckets[i])
            );
        }
        s += &format!(
            "orchestra_segment_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
            g(&self.count)
        );
        s += &format!(
            "orchestra_segment_duration_seconds_sum {}\n",
            g(&self.sum_us) as f64 / 1e6
        );
        s += &format!("orchestra_segment_duration_seconds_count {}\n", g(&self.count));
        s
    }
}
