//! `orchestra bench-cluster`: the operator at scale on the real control plane. N Experiments of M
//! single-worker trials go to a cluster that `scripts/bench_cluster.sh` started
//! (`scripts/cluster.sh` with KWOK's fake nodes, the operator, and reads in the audit log); the
//! fake workers write each trial's result to the store while KWOK "runs" its pod; every second
//! the harness counts the trials running, started and finished and reads the operator's memory.
//! At the end: the reconcile latency (the operator's histogram), every client's requests (the
//! audit log), the CPU and peak memory of the operator, kube-apiserver and etcd.

pub mod audit;
pub mod experiments;
pub mod fake_worker;
pub mod latency;
pub mod report;
pub mod usage;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use orchestra_api::{Experiment, ExperimentPhase};

use self::experiments::Sweep;
use self::fake_worker::Tally;
use self::report::{ClusterBench, Sample};
use self::usage::{ProcessCost, Reading};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchClusterConfig {
    /// The cluster's folder (`scripts/cluster.sh up DIR` with CLUSTER_KWOK_NODES,
    /// CLUSTER_OPERATOR=1 and CLUSTER_AUDIT_READS=1; scripts/bench_cluster.sh starts one).
    #[arg(long)]
    pub cluster: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub experiments: usize,
    /// Trials per Experiment.
    #[arg(long, default_value_t = 1000)]
    pub trials: usize,
    /// Trials at once per Experiment.
    #[arg(long, default_value_t = 100)]
    pub parallelism: usize,
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    /// The store's folder (file://), which the operator and the fake workers share.
    #[arg(long)]
    pub store: PathBuf,
    /// Give up after this long (the report says what had not finished).
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the cluster in {dir}: {what}")]
    Cluster { dir: PathBuf, what: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What `scripts/cluster.sh` wrote down about the cluster in `dir`.
fn read_note(dir: &Path, file: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(dir.join(file))
        .map(|s| s.trim().to_string())
        .map_err(|e| BenchError::Cluster {
            dir: dir.to_path_buf(),
            what: format!("{file}: {e} (start it with scripts/bench_cluster.sh, or scripts/cluster.sh up with CLUSTER_KWOK_NODES and CLUSTER_OPERATOR=1)"),
        })
}

async fn client(dir: &Path) -> Result<Client, BenchError> {
    let path = dir.join("kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| BenchError::Cluster {
        dir: dir.to_path_buf(),
        what: format!("kubeconfig: {e}"),
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| BenchError::Cluster {
            dir: dir.to_path_buf(),
            what: format!("kubeconfig: {e}"),
        })?;
    // The harness's own requests apart from the operator's in the audit log.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("orchestra-bench-cluster"),
    ));
    Ok(Client::try_from(config)?)
}

/// The processes whose cost is reported, as `scripts/cluster.sh` names them.
const MEASURED: [&str; 4] = ["orchestra-operator", "kube-apiserver", "etcd", "kwok"];

fn readings(dir: &Path) -> Vec<Option<Reading>> {
    MEASURED
        .iter()
        .map(|p| usage::cluster_pid(dir, p).and_then(usage::read))
        .collect()
}

/// The Experiments' counts of finished trials, and whether every one of them has ended.
async fn finished(
    api: &Api<Experiment>,
    sweep: &Sweep<'_>,
) -> Result<(usize, usize, usize, bool), BenchError> {
    let list = api.list(&ListParams::default()).await?;
    let (mut succeeded, mut failed, mut stopped, mut ended) = (0, 0, 0, 0);
    for e in list.items.iter().filter(|e| {
        e.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("bench-"))
    }) {
        let Some(s) = &e.status else { continue };
        succeeded += s.trials_succeeded as usize;
        failed += s.trials_failed as usize;
        stopped += s.trials_stopped as usize;
        ended += usize::from(matches!(
            s.phase,
            ExperimentPhase::Succeeded | ExperimentPhase::Failed
        ));
    }
    Ok((succeeded, failed, stopped, ended == sweep.count))
}

pub async fn run(cfg: &BenchClusterConfig) -> Result<ClusterBench, BenchError> {
    let dir = &cfg.cluster;
    let fake_nodes: usize = read_note(dir, "kwok-nodes")?.parse().unwrap_or(0);
    let pod_seconds: u64 = read_note(dir, "kwok-pod-seconds")?.parse().unwrap_or(0);
    let metrics_addr = read_note(dir, "operator-metrics-addr")?;
    let audit_log = dir.join("logs/audit.log");
    let client = client(dir).await?;
    std::fs::create_dir_all(&cfg.store).map_err(|source| BenchError::Io {
        path: cfg.store.clone(),
        source,
    })?;
    let store_uri = format!("file://{}", cfg.store.display());
    let sweep = Sweep {
        namespace: &cfg.namespace,
        count: cfg.experiments,
        trials: cfg.trials,
        parallelism: cfg.parallelism,
        steps: 10,
        store: &store_uri,
    };
    create_namespace(&client, &cfg.namespace).await?;

    let before = readings(dir);
    let audit_from = audit::now();
    let t0 = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let watch = tokio::spawn(fake_worker::run(
        Api::<Pod>::namespaced(client.clone(), &cfg.namespace),
        store_uri.clone(),
        sweep.steps,
        t0,
        tally.clone(),
    ));
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &cfg.namespace);
    for i in 0..sweep.count {
        experiments
            .create(&PostParams::default(), &sweep.experiment(i))
            .await?;
    }
    let timeline = follow(&experiments, &sweep, dir, &tally, t0, cfg.timeout_s).await?;
    watch.abort();

    let after = readings(dir);
    let metrics = operator_metrics(&metrics_addr).await;
    let requests = audit::count(&audit_log, &audit_from).map_err(|source| BenchError::Io {
        path: audit_log.clone(),
        source,
    })?;
    let (succeeded, failed, _, _) = finished(&experiments, &sweep).await?;
    let t = tally.lock().expect("the tally's lock is never poisoned");
    let total = sweep.total_trials();
    let all_started_s = (t.started.len() == total).then(|| t.started.values().copied().fold(0.0, f64::max));
    let all_finished_s = timeline.iter().find(|s| s.finished >= total).map(|s| s.t_s);
    Ok(ClusterBench {
        experiments: sweep.count,
        trials_per_experiment: sweep.trials,
        parallelism_per_experiment: sweep.parallelism,
        fake_nodes,
        pod_seconds,
        trials: total,
        succeeded,
        failed,
        results_written: t.results_written,
        result_write_failures: t.write_failures,
        peak_running: timeline.iter().map(|s| s.running).max().unwrap_or(0),
        all_started_s,
        all_finished_s,
        reconcile: metrics.as_deref().and_then(latency::from_metrics),
        processes: MEASURED
            .iter()
            .zip(before.iter().zip(&after))
            .filter_map(|(name, (b, a))| Some(ProcessCost::between(name, (*b)?, (*a)?)))
            .collect(),
        requests: requests.into_iter().collect(),
        timeline,
    })
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), BenchError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("a namespace");
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Samples once a second until every Experiment has ended (or the time is up), with a
/// progress bar of finished trials.
async fn follow(
    experiments: &Api<Experiment>,
    sweep: &Sweep<'_>,
    dir: &Path,
    tally: &Mutex<Tally>,
    t0: Instant,
    timeout_s: u64,
) -> Result<Vec<Sample>, BenchError> {
    let total = sweep.total_trials();
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} trials finished, {msg}",
        )
        .expect("a valid template"),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let operator = usage::cluster_pid(dir, "orchestra-operator");
    let mut timeline = Vec::new();
    let mut last_line = 0u64;
    loop {
        let (succeeded, failed, stopped, all_ended) = finished(experiments, sweep).await?;
        let done = succeeded + failed + stopped;
        let t_s = t0.elapsed().as_secs_f64();
        let (running, started) = {
            let t = tally.lock().expect("the tally's lock is never poisoned");
            (t.running.len(), t.started.len())
        };
        let rss = operator.and_then(usage::read).map_or(0.0, |r| r.rss_mb);
        timeline.push(Sample {
            t_s,
            running,
            started,
            finished: done,
            operator_rss_mb: rss,
        });
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{running} running, {started} started, operator {rss:.0} MB"
        ));
        // Off a terminal, a line every 30 s.
        if bar.is_hidden() && t_s as u64 >= last_line + 30 {
            last_line = t_s as u64;
            eprintln!("bench-cluster: {t_s:.0} s: {done}/{total} finished, {running} running, {started} started, operator {rss:.0} MB");
        }
        if all_ended || t_s > timeout_s as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bar.finish();
    Ok(timeline)
}

/// The operator's `/metrics` text, by a plain HTTP/1.0 GET (no HTTP client in this crate);
/// None when it does not answer.
async fn operator_metrics(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}
