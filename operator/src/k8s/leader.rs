//! Leader election on a coordination.k8s.io Lease, so that of two replicas only one acts:
//! the leader renews the Lease every few seconds; another replica takes it only once it has
//! expired; a leader that cannot renew in time exits (and is restarted as a follower).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// Whether `identity` may take or keep `lease` at `now` (seconds).
pub fn may_hold(lease: &Lease, identity: &str, now: i64) -> bool {
    let Some(spec) = &lease.spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(_) => {
            let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
            let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
            renewed + duration < now
        }
    }
}

fn spec_for(opts: &LeaseOptions, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let same = previous.and_then(|p| p.holder_identity.as_deref()) == Some(opts.identity.as_str());
    LeaseSpec {
        holder_identity: Some(opts.identity.clone()),
        lease_duration_seconds: Some(opts.duration.as_secs() as i32),
        acquire_time: if same {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + if same { 0 } else { 1 },
        ),
        ..Default::default()
    }
}

/// One attempt to take or renew the Lease; true when this replica holds it afterwards.
pub async fn try_hold(client: &Client, opts: &LeaseOptions) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &opts.namespace);
    let now = Timestamp::now();
    match api.get_opt(&opts.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(opts.name.clone()),
                    namespace: Some(opts.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec_for(opts, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(current) => {
            if !may_hold(&current, &opts.identity, now.as_second()) {
                return Ok(false);
            }
            let mut next = current.clone();
            next.spec = Some(spec_for(opts, current.spec.as_ref(), now));
            // The resourceVersion makes this a compare-and-swap: a rival's write wins.
            match api.replace(&opts.name, &PostParams::default(), &next).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica leads.
pub async fn acquire(client: &Client, opts: &LeaseOptions) {
    loop {
        match try_hold(client, opts).await {
            Ok(true) => {
                tracing::info!(lease = %opts.name, identity = %opts.identity, "became the leader");
                return;
            }
            Ok(false) => tracing::info!(lease = %opts.name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(opts.renew_every).await;
    }
}

/// Renews the Lease until that fails for longer than its duration; returns then.
pub async fn keep(client: &Client, opts: &LeaseOptions) {
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(opts.renew_every).await;
        match try_hold(client, opts).await {
            Ok(true) => last = std::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %opts.name, "lost the lease to another replica");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
        }
        if last.elapsed() > opts.duration {
            tracing::error!(lease = %opts.name, "could not renew the lease in time");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected() {
        assert!(may_hold(&lease("a", 100, 15), "a", 110));
        assert!(!may_hold(&lease("b", 100, 15), "a", 110));
        assert!(may_hold(&lease("b", 100, 15), "a", 116), "expired");
        assert!(may_hold(&Lease::default(), "a", 0));
    }
}
