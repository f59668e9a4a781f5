//! The cluster benchmark's sweep (`orchestra bench-cluster`: N Experiments x M single-worker
//! trials, the same Experiments) through the mock API server instead of the real control plane,
//! for comparison: the reconciler alone, with no API server cost, no watch and no caches (it
//! lists), no scheduler, Job controller or kubelet. Each round reconciles every Experiment, then
//! completes every running gang (its result written to the store as the fake workers of the real
//! benchmark write it, its Job marked Complete). A benchmark, not a test: `scripts/bench_cluster.sh`
//! runs it (`--ignored`) with the real benchmark's sizes and writes
//! `bench-results/cluster-fake-api.{json,md}`.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use orchestra_api::{Experiment, ExperimentPhase};
use orchestra_operator::cluster_bench::experiments::Sweep;
use orchestra_operator::cluster_bench::fake_worker::write_result;
use orchestra_operator::k8s::reconcile::reconcile;
use orchestra_store::Store;
use serde_json::{json, Value};
use support::fake_api::FakeApi;
use support::fake_operator;

const NS: &str = "bench";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `verb resource` of a request to the mock server (`list` for a GET of a collection).
fn kind_of(method: &str, target: &str) -> (String, String) {
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let at = segments
        .iter()
        .position(|s| *s == "namespaces")
        .map_or(0, |i| i + 2);
    let rest = &segments[at.min(segments.len())..];
    let resource = match rest {
        [plural, _, sub, ..] => format!("{plural}/{sub}"),
        [plural, ..] => plural.to_string(),
        [] => "(none)".into(),
    };
    let verb = match (method, rest.len()) {
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        (m, _) => m,
    };
    (verb.to_string(), resource)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Completes every gang that runs: its result in the store, its Job Complete.
fn complete_gangs(fake: &FakeApi, store: &Store) -> usize {
    let mut st = fake.0.lock().unwrap();
    let mut done = 0;
    for (path, job) in st.objects.iter_mut() {
        if !path.starts_with(&format!("/apis/batch/v1/namespaces/{NS}/jobs/"))
            || !job["status"]["conditions"].is_null()
        {
            continue;
        }
        let labels = &job["metadata"]["labels"];
        let (Some(exp), Some(trial)) = (
            labels["orchestra.dev/experiment"].as_str(),
            labels["orchestra.dev/trial"].as_str(),
        ) else {
            continue;
        };
        write_result(store, exp, trial, 10).unwrap();
        job["status"] =
            json!({"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]});
        done += 1;
    }
    done
}

#[test]
#[ignore = "a benchmark: scripts/bench_cluster.sh runs it"]
fn the_cluster_benchmark_sweep_through_the_fake_api() {
    let store_dir = tempfile::tempdir().unwrap();
    let store_uri = format!("file://{}", store_dir.path().display());
    let sweep = Sweep {
        namespace: NS,
        count: setting("BENCH_CLUSTER_EXPERIMENTS", 10),
        trials: setting("BENCH_CLUSTER_TRIALS", 1000),
        parallelism: setting("BENCH_CLUSTER_PARALLELISM", 100),
        steps: 10,
        store: &store_uri,
    };
    let fake = FakeApi::default();
    let path = |name: &str| format!("/apis/orchestra.dev/v1alpha1/namespaces/{NS}/experiments/{name}");
    for i in 0..sweep.count {
        let mut v = serde_json::to_value(sweep.experiment(i)).unwrap();
        v["metadata"]["uid"] = json!(format!("uid-{i}"));
        v["metadata"]["generation"] = json!(1);
        v["metadata"]["finalizers"] = json!(["orchestra.dev/cleanup"]);
        fake.put(&path(&sweep.name(i)), v);
    }
    let store = Store::open(&store_uri).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let (ctx, server) =
        runtime.block_on(async { fake_operator::start(&fake, NS, now.clone(), 0, 16, usize::MAX) });
    let started = Instant::now();
    let mut durations = Vec::new();
    let mut requests: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut ended = 0;
        for i in 0..sweep.count {
            let exp: Experiment = serde_json::from_value(fake.get(&path(&sweep.name(i))).unwrap()).unwrap();
            if exp
                .status
                .as_ref()
                .is_some_and(|s| matches!(s.phase, ExperimentPhase::Succeeded | ExperimentPhase::Failed))
            {
                ended += 1;
                continue;
            }
            let t = Instant::now();
            runtime.block_on(reconcile(Arc::new(exp), ctx.clone())).unwrap();
            durations.push(t.elapsed().as_secs_f64());
        }
        // Counted and dropped as they come (the mock keeps every request's body).
        for r in std::mem::take(&mut fake.0.lock().unwrap().log) {
            *requests.entry(kind_of(&r.method, &r.target)).or_insert(0) += 1;
        }
        if ended == sweep.count || rounds > 10 * sweep.trials + 10 {
            break;
        }
        complete_gangs(&fake, &store);
        now.fetch_add(30, std::sync::atomic::Ordering::SeqCst);
    }
    server.abort();
    let wall = started.elapsed().as_secs_f64();
    let trials = sweep.total_trials() as f64;
    let succeeded: u64 = (0..sweep.count)
        .map(|i| {
            fake.get(&path(&sweep.name(i))).unwrap()["status"]["trialsSucceeded"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    durations.sort_by(f64::total_cmp);
    let writes: u64 = requests
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "create" | "patch" | "update" | "delete"))
        .map(|(_, n)| n)
        .sum();
    let mut md = format!(
        "{} Experiments x {} trials through the mock API server: {succeeded} of {} succeeded in {rounds} rounds, {wall:.1} s.\n\n\
         | measure | value |\n|---|---|\n| reconciles | {} |\n| reconcile p50 / p99 / max | {:.4} s / {:.4} s / {:.4} s |\n\
         | operator's API writes per trial | {:.2} |\n\n| verb | resource | requests | per trial |\n|---|---|---|---|\n",
        sweep.count,
        sweep.trials,
        sweep.total_trials(),
        durations.len(),
        quantile(&durations, 0.5),
        quantile(&durations, 0.99),
        durations.last().copied().unwrap_or(0.0),
        writes as f64 / trials,
    );
    for ((verb, resource), n) in &requests {
        md += &format!("| {verb} | {resource} | {n} | {:.3} |\n", *n as f64 / trials);
    }
    println!("{md}");
    let out =
        std::env::var("BENCH_CLUSTER_FAKE_OUT").unwrap_or_else(|_| "bench-results/cluster-fake-api".into());
    let out = std::path::Path::new(&out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let json: Value = json!({
        "experiments": sweep.count, "trialsPerExperiment": sweep.trials,
        "parallelismPerExperiment": sweep.parallelism, "succeeded": succeeded, "rounds": rounds,
        "wallSeconds": wall, "reconciles": durations.len(),
        "p50Seconds": quantile(&durations, 0.5), "p99Seconds": quantile(&durations, 0.99),
        "writesPerTrial": writes as f64 / trials,
        "requests": requests.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "count": n})).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(out.with_extension("md"), md).unwrap();
    assert_eq!(
        succeeded as usize,
        sweep.total_trials(),
        "every trial finishes through the fake API too"
    );
}
