//! Prometheus counters and a latency histogram for the segmentation service, rendered in the
//! text exposition format. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering};

/// The status codes the service answers with, each counted under its own label; anything else
/// is counted as "other", so that the counts always add up to the requests.
const CODES: [u16; 12] = [200, 400, 401, 404, 405, 406, 408, 413, 415, 429, 500, 503];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Upper bounds of the batch-size buckets, in codes per forward pass.
const BATCH_BUCKETS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

#[derive(Default)]
pub struct Metrics {
    /// Answers per entry of `CODES`, then "other".
    answers: [AtomicU64; CODES.len() + 1],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum of latencies in microseconds.
    sum_us: AtomicU64,
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
    batches: AtomicU64,
    batched_codes: AtomicU64,
}

impl Metrics {
    pub fn record(&self, status: u16, bytes_in: usize, bytes_out: usize, seconds: f64) {
        let slot = CODES.iter().position(|&c| c == status).unwrap_or(CODES.len());
        self.answers[slot].fetch_add(1, Ordering::Relaxed);
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

    /// One forward pass of g + s over `size` codes.
    pub fn record_batch(&self, size: usize) {
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if size <= *bound {
                self.batch_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_codes.fetch_add(size as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::from(
            "# HELP orchestra_segment_requests_total Segmentation requests by outcome.\n\
             # TYPE orchestra_segment_requests_total counter\n",
        );
        let labels = CODES.iter().map(u16::to_string).chain(["other".to_string()]);
        for (code, c) in labels.zip(&self.answers) {
            s += &format!("orchestra_segment_requests_total{{code=\"{code}\"}} {}\n", g(c));
        }
        s += "# HELP orchestra_segment_received_bytes_total Bitstream bytes received.\n\
              # TYPE orchestra_segment_received_bytes_total counter\n";
        s += &format!("orchestra_segment_received_bytes_total {}\n", g(&self.bytes_in));
        s += "# HELP orchestra_segment_sent_bytes_total Response bytes sent.\n\
              # TYPE orchestra_segment_sent_bytes_total counter\n";
        s += &format!("orchestra_segment_sent_bytes_total {}\n", g(&self.bytes_out));
        let load = |counts: &[AtomicU64]| counts.iter().map(g).collect::<Vec<u64>>();
        s += &histogram(
            "orchestra_segment_duration_seconds",
            "Time from request to response.",
            &BUCKETS.map(|b| b.to_string()),
            &load(&self.buckets),
            g(&self.count),
            &(g(&self.sum_us) as f64 / 1e6).to_string(),
        );
        s += &histogram(
            "orchestra_segment_batch_size",
            "Codes segmented per forward pass of g + s.",
            &BATCH_BUCKETS.map(|b| b.to_string()),
            &load(&self.batch_buckets),
            g(&self.batches),
            &g(&self.batched_codes).to_string(),
        );
        s
    }
}

/// A histogram in the text exposition format: cumulative counts per upper bound, then +Inf.
fn histogram(name: &str, help: &str, bounds: &[String], counts: &[u64], count: u64, sum: &str) -> String {
    let mut s = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
    for (bound, n) in bounds.iter().zip(counts) {
        s += &format!("{name}_bucket{{le=\"{bound}\"}} {n}\n");
    }
    s += &format!("{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n");
    s
}
