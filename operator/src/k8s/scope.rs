//! One reconciliation's view of one Experiment (`Scope`), and the idempotent I/O every step of
//! it uses: server-side apply under one field manager, deletions that ignore what is already
//! gone, and blocking store I/O off the async runtime.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, PatchParams};
use kube::{Resource, ResourceExt};
use orchestra_api::{Experiment, Trial};
use orchestra_store::Store;

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
