//! An observer beside an end-to-end test: on its own thread it lists some kinds of one
//! Experiment's objects with kubectl at a fixed interval and hands each listing to a `Sampler`,
//! until the test asks for what it saw. (`gang_watch` counts gangs alive at once;
//! `cluster_kueue.rs` counts the gangs Kueue admitted.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::Cluster;

/// What an observer keeps of each listing: the items, and the seconds since it started.
pub trait Sampler: Default + Send + 'static {
    fn sample(&mut self, items: &[Value], at: f64);
}

pub struct Poller<S> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<S>>,
}

impl<S: Sampler> Poller<S> {
    /// Lists `kinds` (`jobs`, `jobs,pods`) labelled with `experiment` in `ns` every `every`.
    pub fn start(c: &'static Cluster, ns: &str, experiment: &str, kinds: &str, every: Duration) -> Poller<S> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ns, kinds) = (ns.to_string(), kinds.to_string());
        let selector = format!("orchestra.dev/experiment={experiment}");
        let thread = std::thread::spawn(move || {
            let mut seen = S::default();
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let out = c.kubectl(&["-n", &ns, "get", &kinds, "-l", &selector, "-o", "json"]);
                // The API server may be restarting: such a listing is skipped.
                if let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) {
                    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
                    seen.sample(items, start.elapsed().as_secs_f64());
                }
                std::thread::sleep(every);
            }
            seen
        });
        Poller {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the observer and returns what it saw.
    pub fn finish(mut self) -> S {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the observer does not panic")
    }
}

impl<S> Drop for Poller<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
