//! The Kubernetes operator: Experiments become Trials, each Trial a gang of worker pods (an
//! Indexed Job behind a headless Service), restarted as a whole from its checkpoint when any
//! of its pods fails; the leaderboard is published in status, a ConfigMap and the store.

mod actions;
pub mod builders;
pub mod cache;
pub mod context;
pub mod controller;
mod crd_schema;
pub mod gang_job;
pub mod heap;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod reconcile;
mod scope;
pub mod server;
pub mod status;
mod transitions;

/// Both CRDs as one YAML stream (what `crdgen` prints and `manifests/crds.yaml` holds).
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [orchestra_api::Experiment::crd(), orchestra_api::Trial::crd()] {
        let mut crd = serde_json::to_value(&crd).expect("CRDs serialise");
        crd_schema::kubernetes_formats(&mut crd);
        if crd["spec"]["names"]["kind"] == "Experiment" {
            crd_schema::add_root_validations(&mut crd, orchestra_api::experiment::root_validations());
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRDs serialise"));
    }
    out
}
