//! An operator's context on the mock API server (`fake_api`): its client, event recorder and
//! clock, as the reconcile scenarios and the fake-API scale benchmark start it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use orchestra_operator::k8s::builders::GangConfig;
use orchestra_operator::k8s::context::Context;
use orchestra_operator::k8s::metrics::Metrics;
use orchestra_operator::planner::PlannerConfig;

use super::fake_api::FakeApi;

/// A context whose client talks to `fake` (served until the handle is aborted); `writers`
/// trials written at once (1 keeps the planner's order of requests), at most `per_look` trials
/// recorded or started in one reconciliation.
pub fn start(
    fake: &FakeApi,
    namespace: &str,
    now: Arc<AtomicU64>,
    restart_backoff: u64,
    writers: usize,
    per_look: usize,
) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = fake.clone().serve(handle);
    let client = Client::new(svc, namespace);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "orchestra-operator".into(),
                instance: Some("test".into()),
            },
        ),
        client,
        metrics: Arc::new(Metrics::default()),
        gang: GangConfig {
            worker_image: "orchestra-worker:test".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            collective_timeout: 60,
        },
        planner: PlannerConfig {
            restart_backoff,
            max_backoff: 300,
        },
        clock: Box::new(move || now.load(Ordering::SeqCst)),
        writers,
        per_look,
        memos: Default::default(),
        caches: None,
    });
    (ctx, server)
}
