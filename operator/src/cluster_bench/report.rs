//! What `bench-cluster` measured, as JSON, a Markdown report with the goals beside the
//! figures, and the plots of trials running and finished over time.

use std::collections::BTreeMap;
use std::path::Path;

use orchestra_report::figure::write_figure;
use orchestra_report::lines::{LineChart, Series};
use serde::Serialize;

use super::audit::RequestKind;
use super::latency::ReconcileLatency;
use super::usage::ProcessCost;

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// Pods running now.
    pub running: usize,
    /// Trials whose pod has run.
    pub started: usize,
    /// Trials the Experiments' status counts as finished (succeeded, failed or stopped).
    pub finished: usize,
    pub operator_rss_mb: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterBench {
    pub experiments: usize,
    pub trials_per_experiment: usize,
    pub parallelism_per_experiment: usize,
    pub fake_nodes: usize,
    pub pod_seconds: u64,
    pub trials: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub results_written: usize,
    pub result_write_failures: usize,
    pub peak_running: usize,
    /// From the first apply to the last trial's pod running, and to every Experiment finished;
    /// None where that never happened within the time limit.
    pub all_started_s: Option<f64>,
    pub all_finished_s: Option<f64>,
    pub reconcile: Option<ReconcileLatency>,
    pub processes: Vec<ProcessCost>,
    pub requests: Vec<(RequestKind, u64)>,
    pub timeline: Vec<Sample>,
}

/// The goals (#27): the operator's writes per single-worker trial, its p99 reconcile
/// and its peak memory.
pub const GOAL_WRITES_PER_TRIAL: f64 = 12.0;
pub const GOAL_P99_S: f64 = 1.0;
pub const GOAL_OPERATOR_RSS_MB: f64 = 150.0;

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "never".into(), |s| format!("{s:.0}"))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

impl ClusterBench {
    /// Requests of the operator of each (verb, resource), per trial.
    fn operator_requests(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for (k, n) in &self.requests {
            if k.client == "orchestra-operator" {
                *out.entry((k.verb.clone(), k.resource.clone())).or_insert(0) += n;
            }
        }
        out
    }

    pub fn operator_writes_per_trial(&self) -> f64 {
        let writes: u64 = self
            .requests
            .iter()
            .filter(|(k, _)| k.client == "orchestra-operator" && k.is_write())
            .map(|(_, n)| n)
            .sum();
        writes as f64 / self.trials.max(1) as f64
    }

    fn summary_table(&self) -> String {
        let operator = self.processes.iter().find(|p| p.process == "orchestra-operator");
        let rss = operator.map_or(f64::NAN, |p| p.peak_rss_mb);
        let writes = self.operator_writes_per_trial();
        let mut s = String::from("| measure | value | goal |\n|---|---|---|\n");
        s += &format!(
            "| trials finished | {} succeeded, {} failed of {} | all ({}) |\n",
            self.succeeded,
            self.failed,
            self.trials,
            mark(self.succeeded == self.trials)
        );
        s += &format!("| most trials running at once | {} | |\n", self.peak_running);
        s += &format!(
            "| apply to every trial started | {} s | |\n| apply to every trial finished | {} s | |\n",
            secs(self.all_started_s),
            secs(self.all_finished_s)
        );
        if let Some(r) = &self.reconcile {
            s += &format!(
                "| reconciles | {} (mean {:.3} s) | |\n| reconcile p50 / p99 | {:.3} s / {:.3} s | p99 < {GOAL_P99_S} s ({}) |\n",
                r.reconciles,
                r.mean_s,
                r.p50_s,
                r.p99_s,
                mark(r.p99_s < GOAL_P99_S)
            );
        }
        s += &format!(
            "| operator's API writes per trial | {writes:.2} | at most {GOAL_WRITES_PER_TRIAL} ({}) |\n",
            mark(writes <= GOAL_WRITES_PER_TRIAL)
        );
        s += &format!(
            "| operator's peak RSS | {rss:.0} MB | under {GOAL_OPERATOR_RSS_MB} MB ({}) |\n",
            mark(rss < GOAL_OPERATOR_RSS_MB)
        );
        s
    }

    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "{} Experiments x {} single-worker trials ({} in all), {} at a time per Experiment, on {} \
             KWOK nodes; each pod runs {} s.\n\n",
            self.experiments,
            self.trials_per_experiment,
            self.trials,
            self.parallelism_per_experiment,
            self.fake_nodes,
            self.pod_seconds
        );
        s += &self.summary_table();
        if let Some(r) = self.reconcile.as_ref().filter(|r| !r.steps.is_empty()) {
            s += "\nWhere a reconciliation's time goes (the operator's step histograms):\n\n\
                  | step | total s | mean s | p50 s | p99 s |\n|---|---|---|---|---|\n";
            for st in &r.steps {
                s += &format!(
                    "| {} | {:.1} | {:.4} | {:.4} | {:.4} |\n",
                    st.step, st.total_s, st.mean_s, st.p50_s, st.p99_s
                );
            }
        }
        s += "\n| process | CPU seconds | peak RSS (MB) |\n|---|---|---|\n";
        for p in &self.processes {
            s += &format!(
                "| {} | {:.1} | {:.0} |\n",
                p.process, p.cpu_seconds, p.peak_rss_mb
            );
        }
        s += "\nThe operator's requests (the API server's audit log), per trial:\n\n\
              | verb | resource | requests | per trial |\n|---|---|---|---|\n";
        for ((verb, resource), n) in self.operator_requests() {
            s += &format!(
                "| {verb} | {resource} | {n} | {:.3} |\n",
                n as f64 / self.trials.max(1) as f64
            );
        }
        let mut by_client: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (k, n) in &self.requests {
            let e = by_client.entry(k.client.as_str()).or_default();
            if k.is_write() {
                e.0 += n;
            } else {
                e.1 += n;
            }
        }
        s += "\nEvery client's requests:\n\n| client | writes | reads | writes per trial |\n|---|---|---|---|\n";
        for (client, (w, r)) in by_client {
            s += &format!(
                "| {client} | {w} | {r} | {:.2} |\n",
                w as f64 / self.trials.max(1) as f64
            );
        }
        s
    }

    /// `<stem>-running.{svg,png}` and `<stem>-finished.{svg,png}`.
    pub fn write_plots(&self, stem: &Path) -> Result<(), String> {
        let series = |name: &str, f: fn(&Sample) -> usize| Series {
            name: name.into(),
            points: self.timeline.iter().map(|s| (s.t_s, f(s) as f64)).collect(),
        };
        let aimed = (self.experiments * self.parallelism_per_experiment) as f64;
        let title = format!("{} trials on the real control plane (KWOK nodes)", self.trials);
        write_figure(
            &LineChart {
                title: &title,
                x_desc: "seconds since the first apply",
                y_desc: "trials running",
                series: &[series("pods running", |s| s.running)],
                target: Some(("parallelism", aimed)),
                zoom: false,
            },
            &with_suffix(stem, "-running"),
        )?;
        write_figure(
            &LineChart {
                title: &title,
                x_desc: "seconds since the first apply",
                y_desc: "trials",
                series: &[
                    series("started", |s| s.started),
                    series("finished", |s| s.finished),
                ],
                target: Some(("all", self.trials as f64)),
                zoom: false,
            },
            &with_suffix(stem, "-finished"),
        )?;
        Ok(())
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = stem.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    stem.with_file_name(name)
}
