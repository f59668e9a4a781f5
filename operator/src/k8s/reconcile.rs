//! The reconciler in controller-rs's shape: `reconcile` routes through the finalizer; `apply`
//! observes an Experiment's trials and gangs, records each transition (`transitions`), asks the
//! planner, carries out each of its actions (`actions`) and writes the leaderboard and the
//! status (`status`). Idempotent: every object is applied server-side under one field manager,
//! deletions ignore what is already gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use orchestra_api::{DeviceKind, Experiment, ExperimentPhase, Trial, TrialPhase};
use orchestra_store::layout::{self, TrialKeys};

use super::context::{Context, Error};
use super::names::{self, FINALIZER};
use super::observe::{observe, Reached};
use super::scope::{with_store, Scope};
use super::{actions, status, transitions};
use crate::planner::plan;
use crate::summary::Summary;

pub async fn reconcile(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<controller::Action, Error> {
    let _timer = ctx.metrics.start();
    let ns = exp
        .namespace()
        .ok_or_else(|| Error::NoNamespace(exp.name_any()))?;
    let api: Api<Experiment> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, exp, |event| async {
        match event {
            Finalizer::Apply(e) => apply(e, ctx.clone()).await,
            Finalizer::Cleanup(e) => cleanup(e, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Requeues failed reconciliations with a delay (and counts them).
pub fn error_policy(exp: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> controller::Action {
    tracing::warn!(experiment = %exp.name_any(), %error, "reconcile failed");
    ctx.metrics.failed(error.reason());
    controller::Action::requeue(Duration::from_secs(15))
}

/// Problems the operator has with a valid spec: what a cluster cannot run.
pub fn cluster_problems(exp: &Experiment) -> Option<String> {
    let s = &exp.spec;
    if s.device == DeviceKind::Cuda && s.resources.gpus == 0 {
        return Some("spec.resources.gpus = 0: device: cuda needs at least one GPU per worker".into());
    }
    if s.store.starts_with("memory://") {
        return Some(format!(
            "spec.store = {}: memory stores live in one process; workers on a cluster need file:// on a shared volume or object storage",
            s.store
        ));
    }
    None
}

async fn apply(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<controller::Action, Error> {
    let scope = Scope::new(&exp, &ctx);
    let previous = exp.status.clone().unwrap_or_default();
    // An invalid Experiment gets a Failed condition with the reason, and nothing else.
    let invalid = exp
        .spec
        .validate(&scope.name, &format!("Experiment {}/{}", scope.ns, scope.name))
        .err()
        .map(|e| e.to_string())
        .or_else(|| cluster_problems(&exp));
    if let Some(message) = invalid {
        status::reject_invalid(&scope, &previous, message).await?;
        return Ok(controller::Action::await_change());
    }

    let selector = ListParams::default().labels(&names::experiment_selector(&scope.name));
    let trials = scope.trials.list(&selector).await?.items;
    let jobs = scope.jobs.list(&selector).await?.items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &scope.ns);
    let pods = pods_api.list(&selector).await?.items;
    let mut found = reached_targets(&scope, &trials).await?;
    let mut reached_of = |trial: &str| -> Option<Reached> { found.remove(trial) };
    let (observed, transitions) = observe(
        &trials,
        &jobs,
        &pods,
        scope.now,
        exp.spec.gang_timeout_seconds,
        &mut reached_of,
    );
    let mut by_name: BTreeMap<String, Trial> = trials.into_iter().map(|t| (t.name_any(), t)).collect();
    let mut finished_any = false;
    for tr in &transitions {
        finished_any |= transitions::record(&scope, &mut by_name, tr).await?;
    }

    let decision = plan(&scope.name, &exp.spec, &observed, scope.now, &ctx.planner);
    actions::write_to_store(&scope, &decision.actions, &by_name, observed.is_empty()).await?;
    let mut objects = actions::Objects {
        scope: &scope,
        trials: &mut by_name,
    };
    for action in &decision.actions {
        action.carry_out(&mut objects).await?;
    }

    // The leaderboard's plot is redrawn when a trial finished or the Experiment did.
    let plot =
        finished_any || (decision.phase != previous.phase && decision.phase == ExperimentPhase::Succeeded);
    let lb = status::publish_leaderboard(&scope, plot).await?;
    let total = crate::candidates::candidates(&scope.name, &exp.spec).len();
    let summary = Summary::after(&observed, &decision.actions, total, &lb);
    ctx.metrics.set_trials(&scope.name, &summary.by_phase());
    status::write_experiment_status(&scope, &previous, &decision, &summary, &lb, !by_name.is_empty()).await?;
    Ok(match decision.phase {
        // Nothing runs while suspended: the next look is when the spec changes.
        ExperimentPhase::Succeeded | ExperimentPhase::Failed | ExperimentPhase::Suspended => {
            controller::Action::await_change()
        }
        _ => controller::Action::requeue(Duration::from_secs(
            decision.requeue_after.unwrap_or(30).clamp(1, 30),
        )),
    })
}

/// What the store holds for each running trial's step target (those whose gang may have
/// finished): the result that covers `steps`, or the rung record at a lower target.
async fn reached_targets(scope: &Scope<'_>, trials: &[Trial]) -> Result<BTreeMap<String, Reached>, Error> {
    let steps = scope.exp.spec.steps;
    let running: Vec<(String, u64)> = trials
        .iter()
        .filter_map(|t| {
            let s = t.status.as_ref().filter(|s| s.phase == TrialPhase::Running)?;
            Some((t.name_any(), s.target_step.unwrap_or(steps)))
        })
        .collect();
    let experiment = scope.name.clone();
    with_store(&scope.exp.spec.store, move |store| {
        let mut out = BTreeMap::new();
        for (t, target) in running {
            let keys = TrialKeys::new(&experiment, &t);
            if let Some(r) = layout::reached(store, &keys, target, steps)? {
                out.insert(t, r);
            }
        }
        Ok(out)
    })
    .await
}

/// The finalizer: the gangs go (Jobs and their pods), and the store's objects too when the
/// Experiment asks for it.
async fn cleanup(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<controller::Action, Error> {
    let name = exp.name_any();
    let ns = exp.namespace().unwrap_or_default();
    let selector = ListParams::default().labels(&names::experiment_selector(&name));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    jobs.delete_collection(&DeleteParams::background(), &selector)
        .await?;
    pods.delete_collection(&DeleteParams::background(), &selector)
        .await?;
    if exp.spec.cleanup_store {
        let prefix = name.clone();
        with_store(&exp.spec.store, move |store| {
            store.delete_prefix(&prefix).map_err(Error::from)
        })
        .await?;
        tracing::info!(experiment = %name, store = %exp.spec.store, "deleted the experiment's objects in the store");
    }
    Ok(controller::Action::await_change())
}
