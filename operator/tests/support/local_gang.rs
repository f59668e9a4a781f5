//! A trial run the way a gang runs it, but as processes of this machine: the reference the
//! end-to-end tests compare a gang's metrics with.

use std::path::Path;
use std::process::Command;

use orchestra_api::TrialSpec;

use super::cluster;

/// A `MASTER_PORT` whose next port (the collective's) is free too, below Linux's ephemeral
/// range so that no outgoing connection takes it before the ranks bind.
pub fn free_port_pair() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok();
    let start = 20_000 + (std::process::id() % 5_000) as u16 * 2;
    (0..5_000u16)
        .map(|i| 20_000 + (start - 20_000 + 2 * i) % 10_000)
        .find(|&p| free(p) && free(p + 1))
        .expect("a free pair of ports")
}

/// Runs `spec` to its end as `world` TCP ranks on loopback (one thread each, as a pod with a
/// 1-CPU request), storing into `dir` (the spec's store is replaced by a file:// store there);
/// the store.
pub fn run_local_ranks(spec: &TrialSpec, world: usize, dir: &Path) -> orchestra_store::Store {
    let mut spec = spec.clone();
    spec.store = format!("file://{}", dir.join("store").display());
    let spec_path = dir.join("trial.yaml");
    std::fs::write(&spec_path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let port = free_port_pair();
    let ranks: Vec<std::process::Child> = (0..world)
        .map(|rank| {
            Command::new(cluster::our_binary("orchestra-worker"))
                .args(["train", "--no-progress", "--dist", "tcp", "--spec"])
                .arg(&spec_path)
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("RANK", rank.to_string())
                .env("ORCHESTRA_THREADS", "1")
                .env("ORCHESTRA_DATA_CACHE", dir.join("cache"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "local rank {rank}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    orchestra_store::Store::open(&spec.store).unwrap()
}

/// The object at `key`, as text; fails naming the key when it is not there.
pub fn read_text(store: &orchestra_store::Store, key: &str) -> String {
    let bytes = store
        .get(key)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} is not in the store"));
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The lines of a metrics.jsonl, parsed.
/// metrics.jsonl's lines, each evaluation's training seconds taken out (wall-clock, different
/// in every run; checked to be there and positive).
pub fn metrics_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(seconds) = v.as_object_mut().and_then(|o| o.remove("trainSeconds")) {
                assert!(seconds.as_f64().is_some_and(|s| s > 0.0), "{l}");
            }
            v
        })
        .collect()
}
