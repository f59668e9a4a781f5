//! CPU seconds and memory of a process of the cluster, from /proc (Linux): what the operator and
//! the API server cost while the benchmark runs.

use std::path::Path;

use serde::Serialize;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Reading {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub rss_mb: f64,
    /// The most resident memory the process has had (VmHWM).
    pub peak_rss_mb: f64,
}

/// Reads `/proc/<pid>`; None once the process is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Reading {
        cpu_seconds: cpu_seconds(&stat)?,
        rss_mb: kib_field(&status, "VmRSS:")? / 1024.0,
        peak_rss_mb: kib_field(&status, "VmHWM:")? / 1024.0,
    })
}

/// utime + stime (fields 14 and 15, after the parenthesised command name, which may hold
/// spaces) in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (the state).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_second.max(1) as f64)
}

fn kib_field(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid that `scripts/cluster.sh` recorded for one of its processes.
pub fn cluster_pid(cluster: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(cluster.join("pids").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a process cost over the benchmark: CPU seconds between two readings, its peak memory.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCost {
    pub process: String,
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
}

impl ProcessCost {
    pub fn between(process: &str, start: Reading, end: Reading) -> ProcessCost {
        ProcessCost {
            process: process.to_string(),
            cpu_seconds: end.cpu_seconds - start.cpu_seconds,
            peak_rss_mb: end.peak_rss_mb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).expect("this process is in /proc");
        assert!(r.rss_mb > 0.0 && r.peak_rss_mb >= r.rss_mb, "{r:?}");
        assert!(r.cpu_seconds >= 0.0);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 1000 10";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / hz));
    }
}
