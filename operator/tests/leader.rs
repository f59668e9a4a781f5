//! Leader election against the mock API server: the first replica takes the Lease, a second
//! one is refused while the Lease is fresh, the holder renews it, and a stale write loses.

mod support;

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use orchestra_operator::k8s::leader::{try_hold, LeaseOptions};
use serde_json::json;
use support::fake_api::FakeApi;

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/orchestra-system/leases/orchestra-operator-leader";

fn options(identity: &str) -> LeaseOptions {
    LeaseOptions {
        namespace: "orchestra-system".into(),
        name: "orchestra-operator-leader".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn one_replica_leads_and_the_other_waits() {
    let fake = FakeApi::default();
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = fake.clone().serve(handle);
    let client = Client::new(svc, "orchestra-system");

    assert!(
        try_hold(&client, &options("replica-a")).await.unwrap(),
        "the first replica takes it"
    );
    let lease = fake.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    assert!(
        !try_hold(&client, &options("replica-b")).await.unwrap(),
        "a fresh lease is respected"
    );
    assert_eq!(fake.get(LEASE).unwrap()["spec"]["holderIdentity"], "replica-a");

    assert!(
        try_hold(&client, &options("replica-a")).await.unwrap(),
        "the holder renews"
    );
    assert_eq!(fake.get(LEASE).unwrap()["metadata"]["resourceVersion"], "2");
    assert_eq!(
        fake.get(LEASE).unwrap()["spec"]["leaseTransitions"],
        1,
        "a renewal is no transition"
    );

    // An expired lease (renewed long ago) goes to the replica that asks.
    let mut stale = fake.get(LEASE).unwrap();
    stale["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    fake.put(LEASE, stale);
    assert!(try_hold(&client, &options("replica-b")).await.unwrap());
    let lease = fake.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);

    let methods: Vec<String> = fake.log().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "GET", "PUT", "GET", "PUT"]);
    server.abort();
}
