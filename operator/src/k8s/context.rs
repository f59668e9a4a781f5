//! What every reconciliation shares (the client, the recorder, the metrics, the gang and
//! planner settings, the clock) and the one error type the reconciler returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::Recorder;
use kube::Client;

use super::builders::GangConfig;
use super::metrics::Metrics;
use crate::planner::PlannerConfig;
use crate::results::ResultsError;
use orchestra_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error(
        "the caches of Trials, Jobs and Pods are not filled yet (their first listing has not come back)"
    )]
    CachesNotReady,
}

impl Error {
    /// A short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Store(_) => "store",
            Error::Results(_) => "results",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace(_) => "namespace",
            Error::CachesNotReady => "caches",
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub gang: GangConfig,
    pub planner: PlannerConfig,
    /// Seconds since the Unix epoch (tests pin it).
    pub clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// What this process last wrote of each derived object (the leaderboard ConfigMap), so
    /// that an unchanged one is not written again on every reconciliation.
    pub published: Published,
    /// Trials whose transitions and actions are written at once in one reconciliation (1: one
    /// after another, in the planner's order, as the reconcile tests expect).
    pub writers: usize,
    /// Each Experiment's last ranking (by namespace, name and generation): ranked again from the
    /// store only when a trial finished or was stopped, not on every look (a ranking reads every
    /// finished trial's result).
    pub leaderboards: Mutex<HashMap<String, orchestra_report::leaderboard::Leaderboard>>,
    /// When each Experiment's leaderboard plot was last drawn (seconds since the epoch).
    pub plotted: Mutex<HashMap<String, u64>>,
    /// The controller's caches of Trials, Jobs and Pods; None where there is no controller
    /// (the reconcile tests), and the reconciler lists instead.
    pub caches: Option<super::cache::Caches>,
}

/// A fingerprint per object key of the content this process last wrote there. Empty after a
/// restart: each object is written once more, then only when it changes.
#[derive(Default)]
pub struct Published(Mutex<HashMap<String, u64>>);

impl Published {
    /// Whether `content` differs from what was last written at `key` (and remembers it as
    /// written: call it right before the write, and `forget` the key if the write fails).
    pub fn changed(&self, key: &str, content: &impl std::hash::Hash) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let print =
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(content);
        let mut seen = self.0.lock().expect("the memo's lock is never poisoned");
        seen.insert(key.to_string(), print) != Some(print)
    }

    pub fn forget(&self, key: &str) {
        self.0
            .lock()
            .expect("the memo's lock is never poisoned")
            .remove(key);
    }
}

/// Seconds between two drawings of an Experiment's leaderboard plot while its trials finish
/// (it is drawn once more when the Experiment ends).
pub const PLOT_EVERY: u64 = 30;

impl Context {
    /// Whether the Experiment's plot may be drawn now (and if so, notes that it is).
    pub(super) fn plot_due(&self, namespace: &str, name: &str, now: u64) -> bool {
        let mut plotted = self
            .plotted
            .lock()
            .expect("the plot times' lock is never poisoned");
        let last = plotted.entry(format!("{namespace}/{name}")).or_insert(0);
        if now >= *last + PLOT_EVERY || *last == 0 {
            *last = now;
            true
        } else {
            false
        }
    }

    /// The Experiment is gone: what this process remembers of it goes too.
    pub(super) fn forget_experiment(&self, namespace: &str, name: &str) {
        let prefix = format!("{namespace}/{name}@");
        self.leaderboards
            .lock()
            .expect("the leaderboards' lock is never poisoned")
            .retain(|k, _| !k.starts_with(&prefix));
        self.plotted
            .lock()
            .expect("the plot times' lock is never poisoned")
            .remove(&format!("{namespace}/{name}"));
        self.published.forget(&format!(
            "{namespace}/{}",
            super::names::leaderboard_config_map(name)
        ));
    }

    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_says_changed_once_per_new_content_and_forgets_on_request() {
        let p = Published::default();
        assert!(p.changed("ns/lb", &("a", "b")), "first write");
        assert!(!p.changed("ns/lb", &("a", "b")), "the same content again");
        assert!(p.changed("ns/lb", &("a", "c")), "new content");
        assert!(p.changed("ns/other", &("a", "c")), "each key on its own");
        p.forget("ns/lb");
        assert!(p.changed("ns/lb", &("a", "c")), "a failed write is written again");
    }
}
