//! The controller's main loop: watches Experiments, the Trials they own, and the Jobs, Pods and
//! Services of their gangs (label-filtered, mapped back to their Experiment), and reconciles.
//! The Trial, Job and Pod watches also fill the reconciler's caches (`cache`).
//!
//! Each watch backs off on its own errors. kube-runtime's controller also backs off over all its
//! watches together, by default for up to a minute after any error of any one of them: after an
//! API server restart the watches' errors (a refused connection, then "too old resource
//! version" once each) came one after another, every one pausing all the others, and the caches
//! stayed minutes behind (a Job that completed meanwhile was not seen for over five minutes).
//! So the shared backoff here is only a breath between errors (`Brief`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use orchestra_api::{Experiment, Trial};

use super::builders::GangConfig;
use super::cache::{self, scoped};
use super::context::Context;
use super::gang_job::GangJob;
use super::metrics::Metrics;
use super::names::{LABEL_EXPERIMENT, MANAGER};
use super::reconcile::{error_policy, reconcile};
use crate::dashboard::{self, ClusterSource};
use crate::planner::PlannerConfig;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the Experiment CRD is not installed in this cluster (kubectl apply -f manifests/crds.yaml, or install the Helm chart): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(kube::Error),
}

/// Checks that the API server answers and knows our resources, before watching anything.
pub async fn preflight(client: &Client, namespace: Option<&str>) -> Result<(), StartError> {
    let api: Api<Experiment> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(StartError::CrdMissing(kube::Error::Api(s))),
        Err(e) => Err(StartError::Unreachable(e)),
    }
}

/// The Experiment a gang object belongs to, from its label.
fn owner_experiment<K: ResourceExt>(obj: K) -> Option<ObjectRef<Experiment>> {
    let exp = obj.labels().get(LABEL_EXPERIMENT)?.clone();
    Some(ObjectRef::new(&exp).within(&obj.namespace()?))
}

/// The controller's backoff over all its watches together: a tenth of a second after any error,
/// since every watch already backs off on its own (see the module's comment).
struct Brief;

impl Iterator for Brief {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
}

impl Backoff for Brief {
    fn reset(&mut self) {}
}

pub struct Options {
    /// Watch one namespace (default: all).
    pub namespace: Option<String>,
    pub gang: GangConfig,
    pub planner: PlannerConfig,
    /// This replica's name, for events.
    pub instance: String,
    /// Where to serve the dashboard (read-only, over the controller's own watches), if at all.
    pub dashboard: Option<tokio::net::TcpListener>,
}

pub async fn run(client: Client, opts: Options, metrics: Arc<Metrics>) {
    let ns = opts.namespace.as_deref();
    let experiments: Api<Experiment> = scoped(&client, ns);
    let trials: Api<Trial> = scoped(&client, ns);
    let jobs: Api<GangJob> = scoped(&client, ns);
    let pods: Api<Pod> = scoped(&client, ns);
    let services: Api<Service> = scoped(&client, ns);
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(opts.instance.clone()),
    };
    let ours = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let (caches, streams) = cache::watches(trials, jobs, pods, ours.clone());
    let trial_store = caches.trials();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        gang: opts.gang,
        planner: opts.planner,
        clock: Box::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        }),
        writers: 16,
        per_look: 8,
        memos: Default::default(),
        caches: Some(caches),
    });
    let (experiment_store, experiment_writer) = reflector::store();
    let dashboard = opts.dashboard.map(|listener| {
        let source = ClusterSource::new(experiment_store.clone(), trial_store, client.clone(), ns);
        tokio::spawn(async move {
            if let Err(e) = dashboard::serve(listener, Arc::new(source)).await {
                tracing::error!(error = %e, "the dashboard stopped");
            }
        })
    });
    let experiments = watcher(experiments, watcher::Config::default())
        .default_backoff()
        .reflect(experiment_writer)
        .applied_objects();
    let services = watcher(services, ours).default_backoff().touched_objects();
    Controller::for_stream(experiments, experiment_store)
        .owns_stream(streams.trials)
        .watches_stream(streams.jobs, owner_experiment)
        .watches_stream(streams.pods, owner_experiment)
        .watches_stream(services, owner_experiment)
        .trigger_backoff(Brief)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            match outcome {
                Ok((obj, _)) => tracing::debug!(experiment = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile error"),
            }
        })
        .await;
    if let Some(d) = dashboard {
        d.abort();
    }
}
