//! The Node object: registered with its capacity, kept alive through its Lease in
//! `kube-node-lease` (what the node lifecycle controller watches) and a Ready condition.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::now_rfc3339;

/// What the node offers to the scheduler.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// `nvidia.com/gpu` as a count (no GPU is touched: it is what the scheduler counts).
    pub gpus: u32,
}

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;

pub fn node_object(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                "node.orchestra.dev/agent": "process",
            }
        },
        "spec": {}
    }))
    .expect("a valid Node")
}

pub fn node_status(cap: &Capacity, ip: &str, now: &str, version: &str) -> serde_json::Value {
    let mut resources = BTreeMap::from([
        ("cpu".to_string(), cap.cpu.clone()),
        ("memory".to_string(), cap.memory.clone()),
        ("pods".to_string(), cap.pods.to_string()),
        ("ephemeral-storage".to_string(), "100Gi".to_string()),
    ]);
    if cap.gpus > 0 {
        resources.insert("nvidia.com/gpu".into(), cap.gpus.to_string());
    }
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
                condition("Ready", "True", "KubeletReady", "orchestra-node-agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "localhost"}],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "orchestra-node-agent (pods run as processes)",
                "containerRuntimeVersion": format!("process://orchestra-node-agent/{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": version, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            }
        }
    })
}

/// Creates the Node (or takes over an existing one of the same name) and reports it Ready.
pub async fn register(
    client: &Client,
    name: &str,
    cap: &Capacity,
    ip: &str,
    version: &str,
) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.create(&PostParams::default(), &node_object(name)).await {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 409 => nodes.get(name).await?,
        Err(e) => return Err(e.into()),
    };
    report_ready(client, name, cap, ip, version).await?;
    Ok(node)
}

pub async fn report_ready(
    client: &Client,
    name: &str,
    cap: &Capacity,
    ip: &str,
    version: &str,
) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = node_status(cap, ip, &now_rfc3339(), version);
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .map(|_| ())
}

fn lease_object(node: &Node, name: &str) -> Lease {
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS}
    }))
    .expect("a valid Lease");
    lease.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }]);
    lease
}

/// Renews the node's Lease every `every` and its Ready condition every fourth time, until the
/// task is dropped. Errors are logged and retried: a node that cannot reach the API server is
/// what the node lifecycle controller notices.
pub async fn heartbeat(
    client: Client,
    node: Node,
    cap: Capacity,
    ip: String,
    version: String,
    every: Duration,
) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    // `register` has just reported the node Ready: the status is next refreshed at beat 4.
    let mut beat = 1u64;
    loop {
        let mut lease = lease_object(&node, &name);
        let renew = MicroTime(k8s_openapi::jiff::Timestamp::now());
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(renew);
        }
        let applied = leases
            .patch(
                &name,
                &PatchParams::apply("orchestra-node-agent").force(),
                &Patch::Apply(&lease),
            )
            .await;
        if let Err(e) = applied {
            tracing::warn!(node = %name, error = %e, "lease renewal failed");
        }
        if beat.is_multiple_of(4) {
            if let Err(e) = report_ready(&client, &name, &cap, &ip, &version).await {
                tracing::warn!(node = %name, error = %e, "node status update failed");
            }
        }
        beat += 1;
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_offers_the_capacity_and_gpus_only_when_asked() {
        let cap = Capacity {
            cpu: "2".into(),
            memory: "8Gi".into(),
            pods: 32,
            gpus: 0,
        };
        let s = node_status(&cap, "127.0.0.1", "2026-01-01T00:00:00Z", "v1.37.2");
        assert_eq!(s["status"]["allocatable"]["cpu"], "2");
        assert!(s["status"]["capacity"].get("nvidia.com/gpu").is_none());
        assert_eq!(s["status"]["conditions"][3]["type"], "Ready");
        let gpus = node_status(&Capacity { gpus: 2, ..cap }, "127.0.0.1", "t", "v");
        assert_eq!(gpus["status"]["capacity"]["nvidia.com/gpu"], "2");
        let n = node_object("n1");
        assert_eq!(n.metadata.labels.unwrap()["kubernetes.io/hostname"], "n1");
    }
}
