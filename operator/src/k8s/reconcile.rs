//! The reconciler: observe an Experiment's trials and gangs, call the planner, carry out its
//! actions with Kubernetes objects, and write the status. Idempotent: every object is applied
//! server-side under one field manager, deletions ignore what is already gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use orchestra_api::{
    DeviceKind, Experiment, ExperimentPhase, ExperimentStatus, Trial, TrialPhase, TrialResult,
};
use orchestra_store::layout::{self, ExperimentKeys, TrialKeys};
use orchestra_store::{Store, StoreError};
use serde_json::json;

use super::builders::{self, GangConfig};
use super::metrics::Metrics;
use super::names::{self, FINALIZER, MANAGER};
use super::observe::{format_time, observe, Transition};
use crate::planner::{plan, Action as Step, PlannerConfig};
use crate::results::{self, ResultsError};
use crate::summary::{shown_bpp, Summary};

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
    fn now(&self) -> u64 {
        (self.clock)()
    }
}

pub async fn reconcile(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<Action, Error> {
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
pub fn error_policy(exp: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(experiment = %exp.name_any(), %error, "reconcile failed");
    ctx.metrics.failed(error.reason());
    Action::requeue(Duration::from_secs(15))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
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

/// Publishes an event about `regarding`; a failure to publish is logged, not fatal.
async fn publish_event(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, regarding).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// Writes `status` of one of our resources by server-side apply.
async fn patch_status<K>(api: &Api<K>, name: &str, status: &impl serde::Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The four conditions for `phase`, keeping each one's transition time while its status holds.
pub fn conditions(
    previous: &[Condition],
    phase: ExperimentPhase,
    created: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: u64,
) -> Vec<Condition> {
    let wanted = [
        (
            "Created",
            created,
            if created { "TrialsCreated" } else { "NoTrials" },
        ),
        ("Running", phase == ExperimentPhase::Running, reason),
        ("Succeeded", phase == ExperimentPhase::Succeeded, reason),
        ("Failed", phase == ExperimentPhase::Failed, reason),
    ];
    wanted
        .iter()
        .map(|(kind, on, reason)| {
            let status = if *on { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == *kind && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| {
                    Time(k8s_openapi::jiff::Timestamp::from_second(now as i64).expect("a valid time"))
                });
            Condition {
                type_: kind.to_string(),
                status: status.into(),
                reason: reason.to_string(),
                message: if *on { message.to_string() } else { String::new() },
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Runs blocking store I/O off the async runtime (the store drives its own runtime).
async fn with_store<T: Send + 'static>(
    uri: &str,
    f: impl FnOnce(&Store) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let uri = uri.to_string();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&uri)?;
        f(&store)
    })
    .await
    .expect("the store task does not panic")
}

async fn apply(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = exp.name_any();
    let ns = exp.namespace().unwrap_or_default();
    let now = ctx.now();
    let experiments: Api<Experiment> = Api::namespaced(ctx.client.clone(), &ns);
    let exp_ref = exp.object_ref(&());
    let previous = exp.status.clone().unwrap_or_default();

    // An invalid Experiment gets a Failed condition with the reason, and nothing else.
    let invalid = exp
        .spec
        .validate(&name, &format!("Experiment {ns}/{name}"))
        .err()
        .map(|e| e.to_string())
        .or_else(|| cluster_problems(&exp));
    if let Some(message) = invalid {
        let status = ExperimentStatus {
            phase: ExperimentPhase::Failed,
            message: Some(message.clone()),
            conditions: conditions(
                &previous.conditions,
                ExperimentPhase::Failed,
                false,
                "InvalidSpec",
                &message,
                exp.metadata.generation,
                now,
            ),
            observed_generation: exp.metadata.generation,
            ..Default::default()
        };
        if previous.message.as_deref() != Some(message.as_str()) {
            publish_event(
                &ctx,
                &exp_ref,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message,
            )
            .await;
        }
        patch_status(&experiments, &name, &status).await?;
        return Ok(Action::await_change());
    }

    let trials_api: Api<Trial> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&names::experiment_selector(&name));
    let trials = trials_api.list(&selector).await?.items;
    let jobs = jobs_api.list(&selector).await?.items;
    let pods = pods_api.list(&selector).await?.items;

    // Results of the running trials (those whose gang may have finished).
    let running: Vec<String> = trials
        .iter()
        .filter(|t| t.status.as_ref().is_some_and(|s| s.phase == TrialPhase::Running))
        .map(|t| t.name_any())
        .collect();
    let (exp_name, steps) = (name.clone(), exp.spec.steps);
    let mut found: BTreeMap<String, TrialResult> = with_store(&exp.spec.store, move |store| {
        let mut out = BTreeMap::new();
        for t in running {
            if let Some(r) = layout::finished_result(store, &TrialKeys::new(&exp_name, &t), steps)? {
                out.insert(t, r);
            }
        }
        Ok(out)
    })
    .await?;
    let mut result_of = |trial: &str| -> Option<TrialResult> { found.remove(trial) };
    let (observed, transitions) = observe(
        &trials,
        &jobs,
        &pods,
        now,
        exp.spec.gang_timeout_seconds,
        &mut result_of,
    );
    let mut by_name: BTreeMap<String, Trial> = trials.into_iter().map(|t| (t.name_any(), t)).collect();

    // Record what changed since the last look.
    let mut finished_any = false;
    for tr in &transitions {
        match tr {
            Transition::Succeeded { trial, result } => {
                let t = &by_name[trial];
                let mut status = t.status.clone().unwrap_or_default();
                status.phase = TrialPhase::Succeeded;
                status.finished_at = Some(format_time(now));
                status.dice = Some(result.scores.dice);
                status.bpp = Some(shown_bpp(result));
                status.last_checkpoint_step = Some(result.steps);
                status.result = Some((**result).clone());
                status.message = Some(format!("finished {} steps", result.steps));
                patch_status(&trials_api, trial, &status).await?;
                let note = format!("Dice {:.4} at {:.5} bpp", result.scores.dice, shown_bpp(result));
                publish_event(
                    &ctx,
                    &t.object_ref(&()),
                    EventType::Normal,
                    "TrialSucceeded",
                    "Finish",
                    note.clone(),
                )
                .await;
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Normal,
                    "TrialSucceeded",
                    "Finish",
                    format!("{trial}: {note}"),
                )
                .await;
                finished_any = true;
            }
            Transition::AttemptFailed {
                trial,
                attempt,
                reason,
            } => {
                let t = &by_name[trial];
                let mut status = t.status.clone().unwrap_or_default();
                status.phase = TrialPhase::AttemptFailed;
                status.finished_at = Some(format_time(now));
                status.message = Some(format!("attempt {attempt} failed: {reason}"));
                patch_status(&trials_api, trial, &status).await?;
                // The whole gang goes: survivors of a failed rank never rejoin on their own.
                delete_ignoring_absent(&jobs_api, &names::job(trial, *attempt)).await?;
                let note = format!("attempt {attempt} failed: {reason}");
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Warning,
                    "AttemptFailed",
                    "Observe",
                    format!("{trial}: {note}"),
                )
                .await;
            }
            Transition::Unschedulable {
                trial,
                pending,
                waited,
            } => {
                let t = &by_name[trial];
                let mut status = t.status.clone().unwrap_or_default();
                let message = format!(
                    "gang not fully scheduled after {waited}s: {} pending ({})",
                    pending.len(),
                    pending.join(", ")
                );
                if status.message.as_deref() != Some(message.as_str()) {
                    status.message = Some(message.clone());
                    patch_status(&trials_api, trial, &status).await?;
                    publish_event(
                        &ctx,
                        &exp_ref,
                        EventType::Warning,
                        "GangUnschedulable",
                        "Schedule",
                        format!("{trial}: {message}"),
                    )
                    .await;
                }
            }
        }
    }

    let decision = plan(&name, &exp.spec, &observed, now, &ctx.planner);
    // Into the store first: the submitted Experiment and each new trial's swept parameters,
    // which the leaderboard reads beside the results.
    let mut writes: Vec<(String, Vec<u8>)> = decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Step::CreateTrial {
                name: trial, params, ..
            } => Some((
                TrialKeys::new(&name, trial).params(),
                serde_json::to_vec(params).expect("params serialise"),
            )),
            _ => None,
        })
        .collect();
    if observed.is_empty() {
        writes.push((
            ExperimentKeys::new(&name).spec(),
            serde_yaml::to_string(exp.as_ref())
                .expect("experiment serialises")
                .into_bytes(),
        ));
    }
    if !writes.is_empty() {
        with_store(&exp.spec.store, move |store| {
            writes
                .into_iter()
                .try_for_each(|(k, v)| store.put(&k, v))
                .map_err(Error::from)
        })
        .await?;
    }
    for step in &decision.actions {
        match step {
            Step::CreateTrial {
                name: trial,
                params,
                spec,
                ..
            } => {
                let object = builders::trial(&exp, spec, params);
                let created = match trials_api.create(&PostParams::default(), &object).await {
                    Ok(t) => t,
                    Err(kube::Error::Api(s)) if s.code == 409 => trials_api.get(trial).await?,
                    Err(e) => return Err(e.into()),
                };
                by_name.insert(trial.clone(), created);
            }
            Step::StartTrial { name: trial, attempt } => {
                let t = by_name
                    .get(trial)
                    .cloned()
                    .expect("the planner starts known trials");
                let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
                    Api::namespaced(ctx.client.clone(), &ns);
                let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(ctx.client.clone(), &ns);
                cms.patch(
                    &names::spec_config_map(trial),
                    &apply_params(),
                    &Patch::Apply(&builders::spec_config_map(&t)),
                )
                .await?;
                svcs.patch(
                    &names::service(trial),
                    &apply_params(),
                    &Patch::Apply(&builders::service(&t)),
                )
                .await?;
                if *attempt > 1 {
                    delete_ignoring_absent(&jobs_api, &names::job(trial, attempt - 1)).await?;
                }
                let job = builders::job(&exp, &t, *attempt, &ctx.gang);
                jobs_api
                    .patch(&names::job(trial, *attempt), &apply_params(), &Patch::Apply(&job))
                    .await?;
                let mut status = t.status.clone().unwrap_or_default();
                status.phase = TrialPhase::Running;
                status.attempts = *attempt;
                status.started_at = Some(format_time(now));
                status.finished_at = None;
                status.message = Some(if *attempt == 1 {
                    format!("gang of {} started", t.spec.world_size)
                } else {
                    format!(
                        "attempt {attempt} of {}: gang restarted from the latest checkpoint",
                        exp.spec.max_attempts
                    )
                });
                patch_status(&trials_api, trial, &status).await?;
                let (reason, note) = if *attempt == 1 {
                    (
                        "TrialStarted",
                        format!("{trial}: {} worker(s)", t.spec.world_size),
                    )
                } else {
                    (
                        "TrialRestarted",
                        format!("{trial}: attempt {attempt}, resuming from the latest checkpoint"),
                    )
                };
                publish_event(&ctx, &exp_ref, EventType::Normal, reason, "Start", note).await;
            }
            Step::FailTrial { name: trial, reason } => {
                let t = &by_name[trial];
                let mut status = t.status.clone().unwrap_or_default();
                delete_ignoring_absent(&jobs_api, &names::job(trial, status.attempts)).await?;
                status.phase = TrialPhase::Failed;
                status.finished_at = Some(format_time(now));
                status.message = Some(reason.clone());
                patch_status(&trials_api, trial, &status).await?;
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Warning,
                    "TrialFailed",
                    "Fail",
                    format!("{trial}: {reason}"),
                )
                .await;
            }
            Step::StopTrial { name: trial } => {
                let t = &by_name[trial];
                let mut status = t.status.clone().unwrap_or_default();
                delete_ignoring_absent(&jobs_api, &names::job(trial, status.attempts)).await?;
                status.phase = TrialPhase::Stopped;
                status.finished_at = Some(format_time(now));
                status.message = Some("stopped: the Experiment ended".into());
                patch_status(&trials_api, trial, &status).await?;
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Normal,
                    "TrialStopped",
                    "Stop",
                    trial.clone(),
                )
                .await;
            }
        }
    }

    // The leaderboard: status, a ConfigMap, and (when a trial finished) the plot in the store.
    let plot =
        finished_any || (decision.phase != previous.phase && decision.phase == ExperimentPhase::Succeeded);
    let (exp_for_store, dir) = (
        exp.clone(),
        std::env::temp_dir().join(format!("orchestra-operator-{ns}-{name}")),
    );
    let lb = with_store(&exp.spec.store, move |store| {
        let name = exp_for_store.name_any();
        let finished = results::read_finished(store, &name)?;
        if plot {
            if let Err(e) = results::publish(store, &exp_for_store, &dir) {
                tracing::warn!(experiment = %name, error = %e, "could not publish the leaderboard plot");
            }
        }
        Ok(crate::leaderboard::rank(
            &name,
            &finished,
            &exp_for_store.spec.objective,
        ))
    })
    .await?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm = builders::leaderboard_config_map(
        &exp,
        lb.to_markdown(),
        serde_json::to_string_pretty(&lb).expect("leaderboard serialises"),
    );
    cms.patch(
        &names::leaderboard_config_map(&name),
        &apply_params(),
        &Patch::Apply(&cm),
    )
    .await?;

    let total = crate::candidates::candidates(&name, &exp.spec).len();
    let summary = Summary::after(&observed, &decision.actions, total, &lb);
    ctx.metrics.set_trials(&name, &summary.by_phase());
    let reason = match decision.phase {
        ExperimentPhase::Failed => "FailureBudgetSpent",
        ExperimentPhase::Succeeded => "AllTrialsFinished",
        ExperimentPhase::Running => "TrialsRunning",
        ExperimentPhase::Pending => "Waiting",
    };
    let status = ExperimentStatus {
        phase: decision.phase,
        progress: summary.progress(),
        trials_total: summary.total,
        trials_succeeded: summary.succeeded,
        trials_failed: summary.failed,
        trials_running: summary.running,
        best: summary.best.clone(),
        pareto_front: lb.front_entries(),
        hypervolume: (!lb.entries.is_empty()).then_some(lb.hypervolume),
        message: Some(decision.message.clone()),
        top: lb.top(5),
        leaderboard_config_map: Some(names::leaderboard_config_map(&name)),
        conditions: conditions(
            &previous.conditions,
            decision.phase,
            !by_name.is_empty(),
            reason,
            &decision.message,
            exp.metadata.generation,
            now,
        ),
        observed_generation: exp.metadata.generation,
    };
    patch_status(&experiments, &name, &status).await?;
    if decision.phase != previous.phase {
        match decision.phase {
            ExperimentPhase::Succeeded => {
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Normal,
                    "Succeeded",
                    "Finish",
                    decision.message.clone(),
                )
                .await
            }
            ExperimentPhase::Failed => {
                publish_event(
                    &ctx,
                    &exp_ref,
                    EventType::Warning,
                    "Failed",
                    "Finish",
                    decision.message.clone(),
                )
                .await
            }
            _ => {}
        }
    }
    Ok(match decision.phase {
        ExperimentPhase::Succeeded | ExperimentPhase::Failed => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(
            decision.requeue_after.unwrap_or(30).clamp(1, 30),
        )),
    })
}

/// The finalizer: the gangs go (Jobs and their pods), and the store's objects too when the
/// Experiment asks for it.
async fn cleanup(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    Ok(Action::await_change())
}
