//! Carrying out the planner's actions with Kubernetes objects: each action one function, each
//! idempotent (server-side apply under one field manager; a create that finds its object
//! takes it; deletions ignore what is already gone).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PostParams};
use kube::runtime::events::EventType;
use orchestra_api::{StoppedTrial, Trial, TrialPhase, TrialSpec, TrialStatus, Variant};
use orchestra_store::layout::{ExperimentKeys, TrialKeys};

use super::builders;
use super::context::Error;
use super::names;
use super::observe::format_time;
use super::scope::{apply_params, with_store, Scope};
use super::status::publish_trial_event;
use crate::planner::Action;
use crate::runner::Runner;

/// Into the store before any object exists: each new trial's swept parameters (the leaderboard
/// reads them beside the results) and, on the first look, the submitted Experiment.
pub(super) async fn write_to_store(
    scope: &Scope<'_>,
    actions: &[Action],
    trials: &BTreeMap<String, Arc<Trial>>,
    first_look: bool,
) -> Result<(), Error> {
    let name = scope.name.clone();
    let mut writes: Vec<(String, Vec<u8>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateTrial {
                name: trial, params, ..
            } => Some((
                TrialKeys::new(&name, trial).params(),
                serde_json::to_vec(params).expect("params serialise"),
            )),
            // A trial the search stops at its rung: the leaderboard lists it with that rung.
            Action::StopTrial { name: trial, reason } => {
                let t = trials.get(trial)?;
                let status = t.status.as_ref().filter(|s| s.phase == TrialPhase::Paused)?;
                let marker = StoppedTrial::at_last_rung(trial, t.spec.variant, &status.rungs, reason);
                Some((
                    TrialKeys::new(&name, trial).stopped(),
                    serde_json::to_vec_pretty(&marker).expect("stop record serialises"),
                ))
            }
            _ => None,
        })
        .collect();
    if first_look {
        writes.push((
            ExperimentKeys::new(&name).spec(),
            serde_yaml::to_string(scope.exp)
                .expect("experiment serialises")
                .into_bytes(),
        ));
    }
    if writes.is_empty() {
        return Ok(());
    }
    with_store(&scope.exp.spec.store, move |store| {
        writes
            .into_iter()
            .try_for_each(|(k, v)| store.put(&k, v))
            .map_err(Error::from)
    })
    .await
}

/// The reconciler's meaning of each planner action: Kubernetes objects. `trials` learns of the
/// trials it creates.
pub(super) struct Objects<'s, 'x> {
    pub scope: &'s Scope<'x>,
    pub trials: &'s mut BTreeMap<String, Arc<Trial>>,
}

/// One action's API requests.
pub(super) type Requests<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

impl Runner for Objects<'_, '_> {
    type Done<'a>
        = Requests<'a>
    where
        Self: 'a;

    fn create_trial<'a>(
        &'a mut self,
        name: &'a str,
        _variant: Variant,
        params: &'a BTreeMap<String, f64>,
        spec: &'a TrialSpec,
    ) -> Requests<'a> {
        Box::pin(async move {
            let object = builders::trial(self.scope.exp, spec, params);
            let created = match self.scope.trials.create(&PostParams::default(), &object).await {
                Ok(t) => t,
                Err(kube::Error::Api(s)) if s.code == 409 => self.scope.trials.get(name).await?,
                Err(e) => return Err(e.into()),
            };
            self.scope.remember_trial(created.clone());
            self.trials.insert(name.to_string(), Arc::new(created));
            Ok(())
        })
    }

    fn start_trial<'a>(
        &'a mut self,
        name: &'a str,
        attempt: u32,
        until: u64,
        promotion: bool,
    ) -> Requests<'a> {
        let t = self.trials.get(name).expect("the planner starts known trials");
        Box::pin(start_trial(self.scope, t, attempt, until, promotion))
    }

    fn fail_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Requests<'a> {
        Box::pin(fail_trial(self.scope, &self.trials[name], reason))
    }

    fn stop_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Requests<'a> {
        Box::pin(stop_trial(self.scope, &self.trials[name], reason))
    }

    fn suspend_trial<'a>(&'a mut self, name: &'a str) -> Requests<'a> {
        Box::pin(suspend_trial(self.scope, &self.trials[name]))
    }
}

/// A started trial's status: Running, its attempt, promotions and step target, and a message
/// that says which kind of start it was.
fn started_status(scope: &Scope<'_>, t: &Trial, attempt: u32, until: u64, promotion: bool) -> TrialStatus {
    let mut status = t.status.clone().unwrap_or_default();
    status.phase = TrialPhase::Running;
    status.attempts = attempt;
    status.promotions += u32::from(promotion);
    status.target_step = Some(until);
    status.started_at = Some(format_time(scope.now));
    status.finished_at = None;
    let counted = attempt - status.promotions;
    let to = if until < t.spec.steps {
        format!(" to step {until} (a rung)")
    } else {
        String::new()
    };
    status.message = Some(if promotion {
        format!("promoted: continues from its checkpoint{to}")
    } else if counted <= 1 && attempt == 1 {
        format!("gang of {} started{to}", t.spec.world_size)
    } else {
        format!(
            "attempt {counted} of {}: gang restarted from the latest checkpoint{to}",
            scope.exp.spec.max_attempts
        )
    });
    status
}

/// A trial's gang: its spec ConfigMap and (for two or more workers) headless Service, the
/// previous gang's Job gone, this gang's Job (training to `until`); then the Trial's status and
/// an event.
async fn start_trial(
    scope: &Scope<'_>,
    t: &Trial,
    attempt: u32,
    until: u64,
    promotion: bool,
) -> Result<(), Error> {
    let trial = kube::ResourceExt::name_any(t);
    let client = scope.ctx.client.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &scope.ns);
    let svcs: Api<Service> = Api::namespaced(client, &scope.ns);
    cms.patch(
        &names::spec_config_map(&trial),
        &apply_params(),
        &Patch::Apply(&builders::spec_config_map(t)),
    )
    .await?;
    // The headless Service is how ranks 1.. find rank 0; a single worker is rank 0 and connects
    // to itself on 127.0.0.1, so its gang has none (it would cost five API writes per trial:
    // ours, and the Endpoints and EndpointSlice controllers' two each).
    if t.spec.world_size > 1 {
        svcs.patch(
            &names::service(&trial),
            &apply_params(),
            &Patch::Apply(&builders::service(t)),
        )
        .await?;
    }
    if attempt > 1 {
        scope.delete_job(&names::job(&trial, attempt - 1)).await?;
    }
    let job = builders::job(scope.exp, t, attempt, until, &scope.ctx.gang);
    if scope.exp.spec.queue_name.is_some() {
        // Kueue owns `suspend` once the Job exists (it unsuspends on admission): the Job is
        // created, never applied again, so that a retried start cannot suspend an admitted
        // gang (kubeflow/trainer#3008).
        match scope.jobs.create(&PostParams::default(), &job).await {
            Ok(j) => scope.remember_job(j),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        let j = scope
            .jobs
            .patch(&names::job(&trial, attempt), &apply_params(), &Patch::Apply(&job))
            .await?;
        scope.remember_job(j);
    }
    let status = started_status(scope, t, attempt, until, promotion);
    let counted = attempt - status.promotions;
    scope.write_trial_status(&trial, &status).await?;
    let (reason, detail) = if promotion {
        ("TrialPromoted", format!("continues to step {until}"))
    } else if attempt == 1 {
        ("TrialStarted", format!("{} worker(s)", t.spec.world_size))
    } else {
        (
            "TrialRestarted",
            format!("attempt {counted}, resuming from the latest checkpoint"),
        )
    };
    publish_trial_event(scope, t, EventType::Normal, (reason, "Start"), Some(&detail)).await;
    Ok(())
}

/// Out of attempts (or otherwise hopeless): the gang goes, the trial is Failed.
async fn fail_trial(scope: &Scope<'_>, t: &Trial, reason: &str) -> Result<(), Error> {
    let trial = kube::ResourceExt::name_any(t);
    let mut status = t.status.clone().unwrap_or_default();
    scope.delete_job(&names::job(&trial, status.attempts)).await?;
    status.phase = TrialPhase::Failed;
    status.finished_at = Some(format_time(scope.now));
    status.message = Some(reason.to_string());
    scope.write_trial_status(&trial, &status).await?;
    publish_trial_event(
        scope,
        t,
        EventType::Warning,
        ("TrialFailed", "Fail"),
        Some(reason),
    )
    .await;
    Ok(())
}

/// The Experiment is suspended: the running gang goes, the attempt is given back, the trial
/// waits (Pending) to resume from its latest checkpoint.
async fn suspend_trial(scope: &Scope<'_>, t: &Trial) -> Result<(), Error> {
    let trial = kube::ResourceExt::name_any(t);
    let mut status = t.status.clone().unwrap_or_default();
    scope.delete_job(&names::job(&trial, status.attempts)).await?;
    status.phase = TrialPhase::Pending;
    status.attempts = status.attempts.saturating_sub(1);
    status.message = Some("suspended: resumes from its latest checkpoint".into());
    scope.write_trial_status(&trial, &status).await?;
    publish_trial_event(scope, t, EventType::Normal, ("TrialSuspended", "Suspend"), None).await;
    Ok(())
}

/// The Experiment ended (failure budget spent), or the search stopped a paused trial at its
/// rung: a running gang goes, the trial is Stopped with the reason.
async fn stop_trial(scope: &Scope<'_>, t: &Trial, reason: &str) -> Result<(), Error> {
    let trial = kube::ResourceExt::name_any(t);
    let mut status = t.status.clone().unwrap_or_default();
    let early = status.phase == TrialPhase::Paused;
    scope.delete_job(&names::job(&trial, status.attempts)).await?;
    status.phase = TrialPhase::Stopped;
    status.finished_at = Some(format_time(scope.now));
    status.message = Some(reason.to_string());
    scope.write_trial_status(&trial, &status).await?;
    let (kind, detail) = if early {
        ("TrialStoppedEarly", Some(reason))
    } else {
        ("TrialStopped", None)
    };
    publish_trial_event(scope, t, EventType::Normal, (kind, "Stop"), detail).await;
    Ok(())
}
