//! One reconciliation's view of one Experiment (`Scope`), and the idempotent I/O every step of
//! it uses: server-side apply under one field manager, deletions that ignore what is already
//! gone, and blocking store I/O off the async runtime.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use orchestra_api::{Experiment, Trial, TrialPhase, TrialStatus};
use orchestra_store::Store;
use serde_json::json;

use super::context::{Context, Error};
use super::names::MANAGER;

pub(super) fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(super) async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `status` of one of our resources by server-side apply.
pub(super) async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Ok(api
        .patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await?)
}

/// Runs blocking store I/O off the async runtime (the store drives its own runtime).
pub(super) async fn with_store<T: Send + 'static>(
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

/// What one reconciliation of one Experiment works with.
pub(super) struct Scope<'a> {
    pub ctx: &'a Context,
    pub exp: &'a Experiment,
    pub name: String,
    pub ns: String,
    /// Seconds since the Unix epoch, read once per reconciliation.
    pub now: u64,
    pub exp_ref: ObjectReference,
    pub experiments: Api<Experiment>,
    pub trials: Api<Trial>,
    pub jobs: Api<Job>,
}

impl Scope<'_> {
    /// Writes a trial's status, and keeps the answer until the cache shows it.
    pub(super) async fn write_trial_status(&self, trial: &str, status: &TrialStatus) -> Result<(), Error> {
        // The cache keeps no result of a Succeeded trial (`cache::strip_trial`): applying such
        // a status from it would erase the result the server holds.
        if status.phase == TrialPhase::Succeeded && status.result.is_none() {
            return Err(Error::ResultMissing(trial.to_string()));
        }
        let written = patch_status(&self.trials, trial, status).await?;
        self.remember_trial(written);
        Ok(())
    }

    pub(super) fn remember_trial(&self, t: Trial) {
        if let Some(c) = &self.ctx.caches {
            c.written_trials.remember(t);
        }
    }

    pub(super) fn remember_job(&self, j: Job) {
        if let Some(c) = &self.ctx.caches {
            c.written_jobs.remember(j.into());
        }
    }

    /// Deletes a gang's Job (and with it its pods); gone already is fine.
    pub(super) async fn delete_job(&self, name: &str) -> Result<(), Error> {
        delete_ignoring_absent(&self.jobs, name).await?;
        if let Some(c) = &self.ctx.caches {
            c.written_jobs.forget(&self.ns, name);
        }
        Ok(())
    }
}

impl<'a> Scope<'a> {
    pub(super) fn new(exp: &'a Experiment, ctx: &'a Context) -> Scope<'a> {
        let ns = exp.namespace().unwrap_or_default();
        let client = ctx.client.clone();
        Scope {
            ctx,
            exp,
            name: exp.name_any(),
            now: ctx.now(),
            exp_ref: exp.object_ref(&()),
            experiments: Api::namespaced(client.clone(), &ns),
            trials: Api::namespaced(client.clone(), &ns),
            jobs: Api::namespaced(client, &ns),
            ns,
        }
    }
}
