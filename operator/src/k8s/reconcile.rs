//! The reconciler in controller-rs's shape: `reconcile` routes through the finalizer; `apply`
//! observes an Experiment's trials and gangs, records each transition (`transitions`), asks the
//! planner, carries out each of its actions (`actions`) and writes the leaderboard and the
//! status (`status`). Idempotent: every object is applied server-side under one field manager,
//! deletions ignore what is already gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use orchestra_api::{DeviceKind, Experiment, ExperimentPhase, Trial, TrialPhase, TrialStatus};
use orchestra_store::layout::{self, TrialKeys};

use super::context::{Context, Error};
use super::gang_job::GangJob;
use super::names::{self, FINALIZER};
use super::observe::{gang_completed, observe, Reached, Transition};
use super::scope::{with_store, Scope};
use super::status::Plot;
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

/// Requeues failed reconciliations with a delay (and counts them); soon when only the caches
/// were not filled yet.
pub fn error_policy(exp: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> controller::Action {
    tracing::warn!(experiment = %exp.name_any(), %error, "reconcile failed");
    ctx.metrics.failed(error.reason());
    let after = if matches!(error, Error::CachesNotReady) {
        1
    } else {
        15
    };
    controller::Action::requeue(Duration::from_secs(after))
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

    let metrics = &ctx.metrics;
    let mut since = std::time::Instant::now();
    // Shared with the caches; a trial the reconciler writes is copied then (`Arc::make_mut`).
    let (trials, jobs, pods) = seen(&scope).await?;
    metrics.step("list", &mut since);
    let mut found = reached_targets(&scope, &trials, &jobs).await?;
    metrics.step("store", &mut since);
    let mut reached_of = |trial: &str| -> Option<Reached> { found.remove(trial) };
    let (observed, transitions) = observe(
        &trials,
        &jobs,
        &pods,
        scope.now,
        exp.spec.gang_timeout_seconds,
        &mut reached_of,
    );
    let mut by_name: BTreeMap<String, Arc<Trial>> = trials.into_iter().map(|t| (t.name_any(), t)).collect();
    let mut transitions = transitions;
    let more_to_record = first_trials(&mut transitions, ctx.per_look, Transition::trial);
    let finished_any = record(&scope, &transitions, &mut by_name).await?;
    metrics.step("record", &mut since);
    if more_to_record {
        // The planner would take the transitions not recorded yet for done: the next look,
        // at once, records them first.
        status::publish_leaderboard(&scope, finished_any, Plot::No, false).await?;
        metrics.step("leaderboard", &mut since);
        return Ok(controller::Action::requeue(Duration::ZERO));
    }

    let mut decision = plan(&scope.name, &exp.spec, &observed, scope.now, &ctx.planner);
    let more_to_start = first_trials(&mut decision.actions, ctx.per_look, |a| a.trial());
    metrics.step("plan", &mut since);
    actions::write_to_store(&scope, &decision.actions, &by_name, observed.is_empty()).await?;
    carry_out(&scope, &decision.actions, &mut by_name).await?;
    metrics.step("act", &mut since);

    // The last look for a while: nothing is held back past it.
    let settled = decision.phase != previous.phase
        && matches!(
            decision.phase,
            ExperimentPhase::Succeeded | ExperimentPhase::Failed | ExperimentPhase::Suspended
        );
    let ended = settled && decision.phase == ExperimentPhase::Succeeded;
    let plot = plot_for(&scope, ended, finished_any);
    // Ranked again when the finished or stopped trials changed.
    let rerank = finished_any
        || decision
            .actions
            .iter()
            .any(|a| matches!(a, crate::planner::Action::StopTrial { .. }));
    let lb = status::publish_leaderboard(&scope, rerank, plot, settled).await?;
    metrics.step("leaderboard", &mut since);
    let total = crate::candidates::candidates(&scope.name, &exp.spec).len();
    let summary = Summary::after(&observed, &decision.actions, total, &lb);
    ctx.metrics.set_trials(&scope.name, &summary.by_phase());
    status::write_experiment_status(&scope, &previous, &decision, &summary, &lb, !by_name.is_empty()).await?;
    metrics.step("status", &mut since);
    let held_back = ctx.memos.config_map_pending(&scope.ns, &scope.name);
    Ok(next_look(&decision, more_to_start, held_back))
}

/// The leaderboard's plot is drawn when a trial finished (at most every PLOT_EVERY seconds, aside:
/// at scale trials finish several a second, and a plot of a thousand points takes a good part of
/// a second) and, waited for, when the Experiment ended.
fn plot_for(scope: &Scope<'_>, ended: bool, finished_any: bool) -> Plot {
    if ended {
        Plot::Final
    } else if finished_any && scope.ctx.memos.plot_due(&scope.ns, &scope.name, scope.now) {
        Plot::Aside
    } else {
        Plot::No
    }
}

/// When the Experiment is looked at again after a look that carried out `decision`; soon enough
/// for a leaderboard held back (`held_back`) to be written in its time.
fn next_look(decision: &crate::planner::Plan, more_to_start: bool, held_back: bool) -> controller::Action {
    let wait = decision.requeue_after.unwrap_or(30).clamp(1, 30);
    let wait = if held_back {
        wait.min(super::context::CONFIG_MAP_EVERY)
    } else {
        wait
    };
    match decision.phase {
        // Nothing runs while suspended: the next look is when the spec changes.
        ExperimentPhase::Succeeded | ExperimentPhase::Failed | ExperimentPhase::Suspended => {
            controller::Action::await_change()
        }
        // The planner's actions for more trials than one look carries out: the rest at once.
        _ if more_to_start => controller::Action::requeue(Duration::ZERO),
        _ => controller::Action::requeue(Duration::from_secs(wait)),
    }
}

/// Keeps the items of the first `most` trials named in `items` (all of each such trial's, in
/// their order); true when some were left out.
fn first_trials<T>(items: &mut Vec<T>, most: usize, trial_of: impl Fn(&T) -> &str) -> bool {
    let before = items.len();
    let mut kept: std::collections::HashSet<String> = std::collections::HashSet::new();
    items.retain(|item| {
        let trial = trial_of(item);
        if kept.contains(trial) {
            return true;
        }
        let room = kept.len() < most;
        if room {
            kept.insert(trial.to_string());
        }
        room
    });
    items.len() < before
}

/// One Experiment's Trials, Jobs and Pods: from the controller's caches, or (with none, as in
/// the reconcile tests) listed.
async fn seen(scope: &Scope<'_>) -> Result<(Vec<Arc<Trial>>, Vec<Arc<GangJob>>, Vec<Arc<Pod>>), Error> {
    if let Some(caches) = &scope.ctx.caches {
        if !caches.ready(Duration::from_secs(5)).await {
            return Err(Error::CachesNotReady);
        }
        let seen = caches.experiment(&scope.ns, &scope.name);
        return Ok((seen.trials, seen.jobs, seen.pods));
    }
    let selector = ListParams::default().labels(&names::experiment_selector(&scope.name));
    let pods: Api<Pod> = Api::namespaced(scope.ctx.client.clone(), &scope.ns);
    let jobs: Api<GangJob> = Api::namespaced(scope.ctx.client.clone(), &scope.ns);
    Ok((
        shared(scope.trials.list(&selector).await?.items),
        shared(jobs.list(&selector).await?.items),
        shared(pods.list(&selector).await?.items),
    ))
}

/// Records the observed transitions (trials side by side) into `trials`; true when a trial
/// finished.
async fn record(
    scope: &Scope<'_>,
    seen: &[Transition],
    trials: &mut BTreeMap<String, Arc<Trial>>,
) -> Result<bool, Error> {
    // Boxed first: a stream that maps borrowed items to futures is not provably Send.
    let snapshot: &BTreeMap<String, Arc<Trial>> = trials;
    let writes: Vec<Write<'_, (String, TrialStatus, bool)>> = seen
        .iter()
        .map(|tr| Box::pin(transitions::record(scope, snapshot, tr)) as Write<'_, _>)
        .collect();
    let recorded: Vec<(String, TrialStatus, bool)> = stream::iter(writes)
        .buffer_unordered(scope.ctx.writers.max(1))
        .try_collect()
        .await?;
    let mut finished_any = false;
    for (trial, status, finished) in recorded {
        finished_any |= finished;
        if let Some(t) = trials.get_mut(&trial) {
            Arc::make_mut(t).status = Some(status);
        }
    }
    Ok(finished_any)
}

/// One trial's writes in a reconciliation, run beside other trials'.
type Write<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

fn shared<K>(items: Vec<K>) -> Vec<Arc<K>> {
    items.into_iter().map(Arc::new).collect()
}

/// Carries out the planner's actions: each trial's in the planner's order, trials side by side
/// (`Context::writers` at once: a wave of a hundred gangs is some six hundred requests, and one
/// after another they took seconds). `trials` learns of what was created and written.
async fn carry_out(
    scope: &Scope<'_>,
    actions: &[crate::planner::Action],
    trials: &mut BTreeMap<String, Arc<Trial>>,
) -> Result<(), Error> {
    let mut groups: Vec<(&str, Vec<&crate::planner::Action>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for a in actions {
        let i = *index.entry(a.trial()).or_insert_with(|| {
            groups.push((a.trial(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(a);
    }
    let writes: Vec<Write<'_, BTreeMap<String, Arc<Trial>>>> = groups
        .into_iter()
        .map(|(name, group)| {
            // Each trial's actions work on their own copy of it, merged back afterwards.
            let mut own: BTreeMap<String, Arc<Trial>> = trials
                .get(name)
                .map(|t| (name.to_string(), t.clone()))
                .into_iter()
                .collect();
            Box::pin(async move {
                let mut objects = actions::Objects {
                    scope,
                    trials: &mut own,
                };
                for a in group {
                    a.carry_out(&mut objects).await?;
                }
                Ok::<_, Error>(own)
            }) as Write<'_, _>
        })
        .collect();
    let done: Vec<BTreeMap<String, Arc<Trial>>> = stream::iter(writes)
        .buffer_unordered(scope.ctx.writers.max(1))
        .try_collect()
        .await?;
    for own in done {
        trials.extend(own);
    }
    Ok(())
}

/// What the store holds for the step target of each running trial whose gang completed: the
/// result that covers `steps`, or the rung record at a lower target. (The store is read for
/// those only: with a thousand trials running, most reconciliations read it for none.)
async fn reached_targets(
    scope: &Scope<'_>,
    trials: &[Arc<Trial>],
    jobs: &[Arc<GangJob>],
) -> Result<BTreeMap<String, Reached>, Error> {
    let steps = scope.exp.spec.steps;
    let running: Vec<(String, u64)> = trials
        .iter()
        .filter_map(|t| {
            let s = t.status.as_ref().filter(|s| s.phase == TrialPhase::Running)?;
            let name = t.name_any();
            gang_completed(jobs, &name, s.attempts).then(|| (name, s.target_step.unwrap_or(steps)))
        })
        .collect();
    if running.is_empty() {
        return Ok(BTreeMap::new());
    }
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
    ctx.memos.forget(&ns, &name);
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

#[cfg(test)]
mod tests {
    use super::{first_trials, next_look};
    use crate::planner::Plan;
    use kube::runtime::controller::Action;
    use orchestra_api::ExperimentPhase;
    use std::time::Duration;

    fn plan(phase: ExperimentPhase, requeue_after: Option<u64>) -> Plan {
        Plan {
            actions: Vec::new(),
            phase,
            message: String::new(),
            requeue_after,
        }
    }

    #[test]
    fn a_held_back_leaderboard_brings_the_next_look_within_its_interval_and_an_ended_experiment_waits() {
        let every = super::super::context::CONFIG_MAP_EVERY;
        let running = plan(ExperimentPhase::Running, Some(30));
        assert_eq!(
            next_look(&running, false, false),
            Action::requeue(Duration::from_secs(30))
        );
        assert_eq!(
            next_look(&running, false, true),
            Action::requeue(Duration::from_secs(every))
        );
        let soon = plan(ExperimentPhase::Running, Some(2));
        assert_eq!(
            next_look(&soon, false, true),
            Action::requeue(Duration::from_secs(2)),
            "an earlier restart wins"
        );
        assert_eq!(
            next_look(&running, true, true),
            Action::requeue(Duration::ZERO),
            "more to start: at once"
        );
        for phase in [
            ExperimentPhase::Succeeded,
            ExperimentPhase::Failed,
            ExperimentPhase::Suspended,
        ] {
            // Nothing is held back past these: the look that settled them wrote the ConfigMap.
            assert_eq!(
                next_look(&plan(phase, Some(5)), false, true),
                Action::await_change()
            );
        }
    }

    #[test]
    fn a_look_keeps_every_item_of_its_first_trials_in_order_and_says_when_it_left_some() {
        let items = vec![("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("d", 1)];
        let mut kept = items.clone();
        assert!(first_trials(&mut kept, 2, |i| i.0));
        assert_eq!(kept, vec![("a", 1), ("b", 1), ("a", 2), ("b", 2)]);
        let mut all = items.clone();
        assert!(!first_trials(&mut all, 4, |i| i.0), "four trials fit");
        assert_eq!(all, items);
        let mut none = items;
        assert!(first_trials(&mut none, 0, |i| i.0));
        assert!(none.is_empty());
    }
}
