//! What every reconciliation shares (the client, the recorder, the metrics, the gang and
//! planner settings, the clock) and the one error type the reconciler returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::Recorder;
use kube::Client;

use super::builders::GangConfig;
use super::metrics::Metrics;
use crate::planner::PlannerConfig;
use crate::results::{ReadSoFar, ResultsError};
use orchestra_report::leaderboard::Leaderboard;
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
    #[error(
        "refused to write trial {0}'s status as Succeeded without its result (a bug: it would erase the result)"
    )]
    ResultMissing(String),
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
            Error::ResultMissing(_) => "result",
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
    /// Trials whose transitions and actions are written at once in one reconciliation (1: one
    /// after another, in the planner's order, as the reconcile tests expect).
    pub writers: usize,
    /// The most trials one reconciliation records or starts; the rest wait for the next one,
    /// which comes at once. (A look that started a wave of a hundred gangs waited on some six
    /// hundred writes: at 10,000 trials such looks were the slowest hundredth, 5-10 s each; at
    /// 32 a look the slowest hundredth still took 2-3 s, waiting on two rounds of its writers.
    /// The operator takes 8: one round of `writers`.)
    pub per_look: usize,
    /// What this process remembers of each Experiment between reconciliations.
    pub memos: Memos,
    /// The controller's caches of Trials, Jobs and Pods; None where there is no controller
    /// (the reconcile tests), and the reconciler lists instead.
    pub caches: Option<super::cache::Caches>,
}

/// What this process remembers of one Experiment between its reconciliations, so that a look
/// that changes nothing costs nothing. Empty after a restart (each is then done once more), and
/// dropped with the Experiment.
#[derive(Default)]
struct Memo {
    /// The last ranking and the generation of the Experiment it was ranked for: ranked again
    /// from the store only when a trial finished or was stopped (a ranking reads every finished
    /// trial's result). Shared with the looks that use it: a copy per look was a thousand
    /// entries copied on every look at scale.
    ranking: Option<(i64, Arc<Leaderboard>)>,
    /// A fingerprint of the leaderboard ConfigMap's content last written, so that an unchanged
    /// one is not written again; when it was written; whether a newer content waits for
    /// `CONFIG_MAP_EVERY` to pass.
    published: Option<u64>,
    config_map_at: Option<u64>,
    config_map_pending: bool,
    /// What has been read of the finished and stopped trials' results, for the generation of
    /// the Experiment it was read for: a ranking reads only the trials that ended since.
    read: Option<(i64, ReadSoFar)>,
    /// When the leaderboard's plot was last drawn (seconds since the epoch).
    plotted: Option<u64>,
    /// Drawings of the plot handed out, and the last one written (the turn it was given),
    /// which the drawings hold while they write.
    drawings: u64,
    drawn: Arc<Mutex<u64>>,
}

/// Each Experiment's `Memo`, by namespace and name.
#[derive(Default)]
pub struct Memos(Mutex<HashMap<(String, String), Memo>>);

/// Seconds between two drawings of an Experiment's leaderboard plot while its trials finish
/// (it is drawn once more when the Experiment ends).
pub const PLOT_EVERY: u64 = 30;

/// Seconds between two writes of an Experiment's leaderboard ConfigMap while its trials finish
/// (written once more when the Experiment ends). At a thousand trials an Experiment, one write
/// per finished trial was the slowest hundredth of the reconciliations
/// (docs/results/2026-12-03-cluster-scale.md); the status and the store have the ranking too.
pub const CONFIG_MAP_EVERY: u64 = 10;

impl Memos {
    fn with<T>(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Memo) -> T) -> T {
        let mut memos = self.0.lock().expect("the memos' lock is never poisoned");
        f(memos
            .entry((namespace.to_string(), name.to_string()))
            .or_default())
    }

    /// The Experiment's last ranking, if it was ranked for this generation.
    pub fn ranking(&self, namespace: &str, name: &str, generation: i64) -> Option<Arc<Leaderboard>> {
        self.with(namespace, name, |m| {
            m.ranking
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, lb)| lb.clone())
        })
    }

    pub fn remember_ranking(&self, namespace: &str, name: &str, generation: i64, lb: &Arc<Leaderboard>) {
        self.with(namespace, name, |m| m.ranking = Some((generation, lb.clone())));
    }

    /// What has been read of the Experiment's ended trials for this generation (nothing after
    /// an edit of its spec); given back with `keep_read`.
    pub fn read_so_far(&self, namespace: &str, name: &str, generation: i64) -> ReadSoFar {
        self.with(namespace, name, |m| match m.read.take() {
            Some((g, read)) if g == generation => read,
            _ => ReadSoFar::default(),
        })
    }

    pub fn keep_read(&self, namespace: &str, name: &str, generation: i64, read: ReadSoFar) {
        self.with(namespace, name, |m| m.read = Some((generation, read)));
    }

    /// A turn for a drawing of the Experiment's plot: the drawing writes while it holds the
    /// lock, and only if no later turn has written before it.
    pub fn next_drawing(&self, namespace: &str, name: &str) -> (u64, Arc<Mutex<u64>>) {
        self.with(namespace, name, |m| {
            m.drawings += 1;
            (m.drawings, m.drawn.clone())
        })
    }

    /// Whether the leaderboard ConfigMap is to be written now with `content`: when it differs
    /// from the content last written, and none was written in the last `CONFIG_MAP_EVERY`
    /// seconds or `now_anyway` (the Experiment ended). A change held back is pending
    /// (`config_map_pending`) until a later look writes it. Remembers a content to be written
    /// as published: call it right before the write, and `unpublished` if the write fails.
    pub fn config_map_due(
        &self,
        namespace: &str,
        name: &str,
        content: &impl std::hash::Hash,
        now: u64,
        now_anyway: bool,
    ) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let print =
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(content);
        self.with(namespace, name, |m| {
            if m.published == Some(print) {
                m.config_map_pending = false;
                return false;
            }
            let due = now_anyway || m.config_map_at.is_none_or(|at| now >= at + CONFIG_MAP_EVERY);
            m.config_map_pending = !due;
            if due {
                m.published = Some(print);
                m.config_map_at = Some(now);
            }
            due
        })
    }

    /// Whether a newer leaderboard waits to be written to the ConfigMap.
    pub fn config_map_pending(&self, namespace: &str, name: &str) -> bool {
        self.with(namespace, name, |m| m.config_map_pending)
    }

    /// The last write failed: the next look makes it again, whatever it holds.
    pub fn unpublished(&self, namespace: &str, name: &str) {
        self.with(namespace, name, |m| {
            m.published = None;
            m.config_map_at = None;
            m.config_map_pending = true;
        });
    }

    /// Whether the Experiment's plot may be drawn now (and if so, notes that it is).
    pub fn plot_due(&self, namespace: &str, name: &str, now: u64) -> bool {
        self.with(namespace, name, |m| {
            let due = m.plotted.is_none_or(|last| now >= last + PLOT_EVERY);
            if due {
                m.plotted = Some(now);
            }
            due
        })
    }

    /// The Experiment is gone: what this process remembers of it goes too.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .expect("the memos' lock is never poisoned")
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

impl Context {
    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(experiment: &str) -> Leaderboard {
        serde_json::from_value(serde_json::json!({
            "experiment": experiment, "entries": [], "front": [], "hypervolume": 0.0,
            "referenceBpp": 0.1
        }))
        .unwrap()
    }

    #[test]
    fn the_config_map_is_written_on_change_at_most_every_few_seconds_and_at_the_end() {
        let m = Memos::default();
        let due =
            |exp: &str, content: &str, now: u64, end: bool| m.config_map_due("ns", exp, &content, now, end);
        assert!(due("e", "a", 100, false), "first write");
        assert!(!due("e", "a", 200, false), "the same content again");
        assert!(!m.config_map_pending("ns", "e"));
        assert!(!due("e", "b", 105, false), "new content, too soon");
        assert!(m.config_map_pending("ns", "e"), "held back");
        assert!(due("f", "b", 105, false), "each Experiment on its own");
        assert!(due("e", "b", 100 + CONFIG_MAP_EVERY, false), "its time came");
        assert!(!m.config_map_pending("ns", "e"));
        assert!(due("e", "c", 111, true), "the Experiment ended: at once");
        m.unpublished("ns", "e");
        assert!(m.config_map_pending("ns", "e"), "a failed write waits to be made");
        assert!(due("e", "c", 112, false), "and is made at the next look");
    }

    #[test]
    fn rankings_hold_for_their_generation_plots_wait_and_a_deleted_experiment_is_forgotten() {
        let m = Memos::default();
        assert!(m.ranking("ns", "e", 1).is_none());
        m.remember_ranking("ns", "e", 1, &Arc::new(board("e")));
        assert_eq!(m.ranking("ns", "e", 1).as_deref(), Some(&board("e")));
        assert!(
            m.ranking("ns", "e", 2).is_none(),
            "an edited spec is ranked again"
        );
        assert!(m.plot_due("ns", "e", 1000), "the first plot");
        assert!(!m.plot_due("ns", "e", 1000 + PLOT_EVERY - 1));
        assert!(m.plot_due("ns", "e", 1000 + PLOT_EVERY));
        m.config_map_due("ns", "e", &"x", 1000, false);
        m.forget("ns", "e");
        assert!(m.ranking("ns", "e", 1).is_none());
        assert!(
            m.plot_due("ns", "e", 1000 + PLOT_EVERY),
            "drawn again after a restart of it"
        );
        assert!(m.config_map_due("ns", "e", &"x", 1001, false));
    }
}
