//! The dashboard tested as a person uses it (#30), in headless Chromium: the list, an
//! Experiment and a trial, their numbers checked against `leaderboard.json` and
//! `metrics.jsonl`; sorting by keyboard, filtering; a live update arriving while a trial
//! finishes; and a 1,000-trial Experiment measured with Navigation Timing. Screenshots go to
//! `target/dashboard/`. Skips, saying why, where Chromium or chromedriver is missing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use orchestra_api::{Experiment, ExperimentSpec};
use orchestra_operator::candidates::candidates;
use orchestra_operator::dashboard::{self, StoreSource};
use orchestra_operator::leaderboard::Leaderboard;
use orchestra_operator::results;
use orchestra_store::layout::{ExperimentKeys, TrialKeys};
use orchestra_store::Store;
use serde_json::{json, Value};
use support::browser::Browser;
use support::results::result;

const ENTER: &str = "\u{E007}";

fn experiment(name: &str, store: &str, values: &[f64]) -> Experiment {
    let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    let text = format!(
        "apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  dataset: synthetic://lesion
  model: {{ inputSize: 64 }}
  variants: [D1, D4]
  search: {{ lambdaRate: {{ type: list, values: [{}] }} }}
  steps: 40
  objective: {{ bppBudget: 0.01 }}
  store: {store}
",
        list.join(", ")
    );
    ExperimentSpec::parse_resource(&text, &format!("{name}.yaml")).unwrap()
}

/// What a worker leaves in the store for a trial that trained to `reached` steps (and finished
/// there when `finished`): parameters, metrics, rung records, checkpoints, progress, result.
fn write_trial(store: &Store, exp: &Experiment, i: usize, finished: bool) -> (f64, f64) {
    let name = exp.metadata.name.clone().unwrap();
    let c = &candidates(&name, &exp.spec)[i];
    let spec = exp.spec.trial_spec(&c.name, &name, c.variant, &c.params);
    let keys = TrialKeys::new(&name, &c.name);
    let dice = 0.70 + 0.2 * ((i * 37) % 100) as f64 / 100.0;
    let bpp = if c.variant == orchestra_api::Variant::D1 {
        24.0
    } else {
        0.002 + 0.01 * ((i * 53) % 100) as f64 / 100.0
    };
    store
        .put(&keys.params(), serde_json::to_vec(&c.params).unwrap())
        .unwrap();
    let mut lines = Vec::new();
    for step in 1..=spec.steps {
        lines.push(
            json!({"step": step, "loss_seg": 1.0 / step as f64, "loss_rate": 0.5, "lr": 0.002, "w_dis": 0.0})
                .to_string(),
        );
        if step % 20 == 0 {
            let d = dice - 0.01 * (spec.steps - step) as f64 / 20.0;
            lines.push(json!({"step": step, "eval": {"scores": {"dice": d, "iou": d * 0.8, "images": 8}, "rate": {"bpp": bpp}}}).to_string());
        }
    }
    store.put(&keys.metrics(), lines.join("\n") + "\n").unwrap();
    for step in [20, 40] {
        store.put(&keys.weights(step), vec![0u8; 4096]).unwrap();
        store.put(&keys.checkpoint_state(step), b"{}".to_vec()).unwrap();
    }
    store.put(&keys.latest(), TrialKeys::checkpoint_dir(40)).unwrap();
    let progress = json!({"trial": c.name, "step": 40, "steps": 40, "imagesPerSecond": 100.0, "lossSeg": 0.1, "at": 1.0});
    store.put(&keys.progress(), progress.to_string()).unwrap();
    if finished {
        let r = result(&name, &c.name, &spec, dice, bpp);
        store
            .put(&keys.result(), serde_json::to_vec(&r).unwrap())
            .unwrap();
    }
    (dice, bpp)
}

fn publish(store: &Store, exp: &Experiment, dir: &std::path::Path) -> Leaderboard {
    store
        .put(
            &ExperimentKeys::new(exp.metadata.name.as_deref().unwrap()).spec(),
            serde_yaml::to_string(exp).unwrap(),
        )
        .unwrap();
    results::publish(store, exp, dir).unwrap().0
}

fn text(b: &Browser, css: &str) -> String {
    b.run(&format!(
        "return document.querySelector({css:?}).textContent.trim()"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// The cells of the trial table's row for `trial`, by column header.
fn row(b: &Browser, trial: &str) -> Value {
    b.run(&format!(
        "const heads = Array.from(document.querySelectorAll('#trials thead th')).map(h => h.textContent.trim());
         const r = document.querySelector('#trials tr[data-t={trial:?}]');
         if (!r) return null;
         const out = {{}}; Array.from(r.children).forEach((c, i) => out[heads[i]] = c.textContent.trim()); return out;"
    ))
}

#[test]
fn the_dashboard_shows_the_runs_numbers_live_and_a_thousand_trials_quickly() {
    let browser = match Browser::start() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipped: the dashboard's browser test needs headless Chromium: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().join("store").display());
    let store = Store::open(&uri).unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard");

    // A small Experiment, one trial still running; a thousand finished trials beside it.
    let live = experiment("live", &uri, &[0.02, 0.2]);
    for i in 0..2 {
        write_trial(&store, &live, i, true);
    }
    write_trial(&store, &live, 2, false);
    let live_lb = publish(&store, &live, &dir.path().join("live"));
    let values: Vec<f64> = (1..=999).map(|i| i as f64 / 1000.0).collect();
    let big = experiment("thousand", &uri, &values);
    for i in 0..1000 {
        write_trial(&store, &big, i, true);
    }
    let big_lb = publish(&store, &big, &dir.path().join("thousand"));
    assert_eq!(big_lb.entries.len(), 1000);

    // Made before the server's runtime and kept here too, so that the store (which has a
    // runtime of its own) is dropped after it, outside it.
    let source = Arc::new(StoreSource::open(&uri).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(dashboard::serve(listener, source.clone()));
    let site = format!("http://{addr}");

    // The list: both Experiments, the best under the budget as leaderboard.json has it.
    browser.goto(&format!("{site}/"));
    browser.screenshot(&shots.join("experiments.png"));
    let winner = live_lb.winner.clone().expect("a winner under the budget");
    let best = live_lb.entries.iter().find(|e| e.trial == winner).unwrap();
    let live_row = text(&browser, "#experiments tr[data-p] th a[href*='/live/']");
    assert_eq!(live_row, "live");
    let best_cell = browser.run(
        "return Array.from(document.querySelectorAll('#experiments tbody tr')).find(r => r.querySelector('th').textContent.trim() === 'live').children[5].textContent.trim()",
    );
    assert_eq!(
        best_cell.as_str().unwrap(),
        format!("{winner}: Dice {:.4} at {:.5} bpp", best.dice, best.bpp)
    );

    // One Experiment: every finished trial's Dice and bpp as leaderboard.json has them.
    browser.goto(&format!("{site}/ns/default/experiments/live/"));
    browser.screenshot(&shots.join("experiment.png"));
    for e in &live_lb.entries {
        let r = row(&browser, &e.trial);
        assert_eq!(r["Dice"], format!("{:.4}", e.dice), "{}", e.trial);
        assert_eq!(r["bpp"], format!("{:.5}", e.bpp), "{}", e.trial);
        assert_eq!(r["Phase"], "Succeeded");
    }
    assert_eq!(
        text(&browser, "#hypervolume"),
        format!("{:.5}", live_lb.hypervolume)
    );
    let running = candidates("live", &live.spec)[2].name.clone();
    assert_eq!(row(&browser, &running)["Phase"], "Running");
    // Sorting by keyboard: Enter on the Dice header's button sorts best first.
    browser.press("#trials thead th:nth-child(6) button", ENTER);
    let sorted = browser
        .run("return document.querySelector('#trials thead th:nth-child(6)').getAttribute('aria-sort')");
    assert_eq!(sorted, "descending");
    let first = browser.run("return document.querySelector('#trials tbody tr').dataset.t");
    let top = live_lb
        .entries
        .iter()
        .max_by(|a, b| a.dice.total_cmp(&b.dice))
        .unwrap();
    assert_eq!(first, Value::from(top.trial.clone()));
    // Filtering by variant.
    browser.run("const s = document.querySelector('[data-filter=v]'); s.value = 'D4'; s.dispatchEvent(new Event('change', {bubbles: true})); return null");
    let shown = browser.run("return Array.from(document.querySelectorAll('#trials tbody tr')).filter(r => !r.hidden).map(r => r.children[1].textContent.trim())");
    assert_eq!(shown, json!(["D4", "D4"]));

    // Live: the running trial finishes; the open page shows it without a reload.
    let started = std::time::Instant::now();
    write_trial(&store, &live, 2, true);
    let lb = publish(&store, &live, &dir.path().join("live"));
    let waited = browser.wait_for(
        &format!("const r = document.querySelector('#trials tr[data-t={running:?}]'); return !!r && r.children[3].textContent.trim() === 'Succeeded'"),
        Duration::from_secs(15),
        "the finished trial to show as Succeeded",
    );
    let finished = lb.entries.iter().find(|e| e.trial == running).unwrap();
    assert_eq!(row(&browser, &running)["Dice"], format!("{:.4}", finished.dice));
    assert_eq!(
        browser.run("return document.querySelector('[data-filter=v]').value"),
        "D4",
        "the filter survives the update"
    );
    eprintln!(
        "live update: shown {:.2} s after the result was written ({:.2} s after the page began waiting)",
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );

    // One trial: its curves and scores as metrics.jsonl and result.json have them.
    browser.goto(&format!("{site}/ns/default/experiments/live/trials/{running}/"));
    browser.screenshot(&shots.join("trial.png"));
    assert_eq!(text(&browser, "#dice"), format!("{:.4}", finished.dice));
    let keys = TrialKeys::new("live", &running);
    let metrics = String::from_utf8(store.get(&keys.metrics()).unwrap().unwrap().to_vec()).unwrap();
    let evals = metrics.lines().filter(|l| l.contains("\"eval\"")).count();
    let dots = browser.run("return Array.from(document.querySelectorAll('svg.curves circle.dot title')).filter(t => t.textContent.startsWith('Dice ')).length");
    assert_eq!(
        dots,
        Value::from(evals),
        "one Dice point per evaluation in metrics.jsonl"
    );
    let checkpoints = browser.run("return document.querySelectorAll('#checkpoints tbody tr').length");
    assert_eq!(checkpoints, 2);

    // A thousand trials: timed by the browser, weighed with its assets.
    browser.goto(&format!("{site}/ns/default/experiments/thousand/"));
    browser.screenshot(&shots.join("experiment-1000.png"));
    let timing = browser.run(
        "const n = performance.getEntriesByType('navigation')[0];
         const assets = performance.getEntriesByType('resource').reduce((s, r) => s + r.decodedBodySize, 0);
         return {loadMs: n.loadEventEnd - n.startTime, responseMs: n.responseEnd - n.startTime,
                 domMs: n.domContentLoadedEventEnd - n.startTime, htmlBytes: n.decodedBodySize, assetBytes: assets,
                 rows: document.querySelectorAll('#trials tbody tr').length}",
    );
    eprintln!("1,000 trials: {timing}");
    std::fs::write(
        shots.join("timing-1000.json"),
        serde_json::to_vec_pretty(&timing).unwrap(),
    )
    .unwrap();
    assert_eq!(timing["rows"], 1000);
    let bytes = timing["htmlBytes"].as_f64().unwrap() + timing["assetBytes"].as_f64().unwrap();
    assert!(bytes < 500_000.0, "the page weighs {bytes} bytes with its assets");
}
