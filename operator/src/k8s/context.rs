//! What every reconciliation shares (the client, the recorder, the metrics, the gang and
//! planner settings, the clock) and the one error type the reconciler returns.

use std::sync::Arc;

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
}

impl Context {
    pub(super) fn now(&self) -> u64 {
        (self.clock)()
    }
}
