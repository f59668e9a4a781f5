//! `orchestra-node-agent`: test support, not part of the product. A Kubernetes node whose pods
//! are local processes, so that the operator's end-to-end tests run on the real upstream control
//! plane (kube-apiserver, kube-scheduler, the Job controller, the garbage collector) without a
//! container engine. It registers a Node with the capacity it is told, heartbeats its Lease,
//! runs every pod kube-scheduler binds to it (command, arguments, environment, volumes as
//! folders, the worker binary in place of the image) and reports their status as the kubelet
//! does. With `--pod-bridge` each pod has its own network namespace and address on the
//! cluster's bridge, host name, and resolver pointed at the cluster DNS (`network.rs`);
//! without, pods share the node's address. What it does not do, and says: images (a folder per
//! image pattern), isolation beyond the network (no cgroups: resource limits are what the
//! scheduler counts; no user switch: securityContext is not enforced), `kubectl logs` (each
//! container's log is `<root>/<ns>_<pod>_<uid>/logs/<container>.log`), and probes.

mod env;
mod images;
mod network;
mod node;
mod pod_status;
mod pods;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use images::ImageMap;
use node::Capacity;
use pods::Agent;

/// The time now as the API server writes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[derive(Parser)]
#[command(
    name = "orchestra-node-agent",
    version,
    about = "A Kubernetes node whose pods are local processes (test support)"
)]
struct Args {
    /// Kubeconfig of the node's identity (system:node:<name> in group system:nodes).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    #[arg(long)]
    node_name: String,
    /// CPU capacity offered to the scheduler.
    #[arg(long, default_value = "2")]
    cpu: String,
    #[arg(long, default_value = "8Gi")]
    memory: String,
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// `nvidia.com/gpu` capacity (a count the scheduler sees; no GPU is used).
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// The node's and its pods' address.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Folder of the pods' folders (volumes, logs).
    #[arg(long)]
    root: PathBuf,
    /// `PATTERN=DIR`: containers of images matching PATTERN (`*` wildcards) run their command
    /// from DIR. Repeatable; first match wins.
    #[arg(long = "image", required = true)]
    images: Vec<String>,
    /// Variables of the agent's own environment that every container gets (what an image bakes
    /// in); PATH always.
    #[arg(long = "pass-env", default_values = ["PATH", "LD_LIBRARY_PATH"])]
    pass_env: Vec<String>,
    /// The cluster's pod bridge: each pod gets a network namespace, a veth on it and an
    /// address of --pod-ips (needs root). Without it pods share the node's address.
    #[arg(long, requires_all = ["pod_subnet", "pod_ips", "cluster_dns"])]
    pod_bridge: Option<String>,
    /// The bridge's subnet (its gateway, the bridge's own address, is the first host).
    #[arg(long)]
    pod_subnet: Option<String>,
    /// This node's pod addresses, FIRST-LAST.
    #[arg(long)]
    pod_ips: Option<String>,
    /// The cluster DNS server the pods' resolv.conf names.
    #[arg(long)]
    cluster_dns: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_ansi(false)
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The pod network when the agent was given one (bridge, subnet, address range and DNS).
fn pod_network(args: &Args) -> Result<Option<network::PodNetwork>> {
    Ok(
        match (
            &args.pod_bridge,
            &args.pod_subnet,
            &args.pod_ips,
            args.cluster_dns,
        ) {
            (Some(bridge), Some(subnet), Some(range), Some(dns)) => Some(network::PodNetwork::new(
                network::NetworkConfig::parse(bridge, subnet, range, dns, &args.cluster_domain)?,
                &args.node_name,
            )),
            _ => None,
        },
    )
}

/// A client with the node's own identity, from its kubeconfig.
async fn client_of(path: &std::path::Path) -> Result<Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", path.display()))?;
    Ok(Client::try_from(config)?)
}

async fn run(args: Args) -> Result<()> {
    let images = ImageMap::parse(&args.images).map_err(anyhow::Error::msg)?;
    let network = pod_network(&args)?;
    std::fs::create_dir_all(&args.root).with_context(|| format!("creating {}", args.root.display()))?;
    let client = client_of(&args.kubeconfig).await?;
    let version = client
        .apiserver_version()
        .await
        .context("reaching the API server")?
        .git_version;
    let cap = Capacity {
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
        gpus: args.gpus,
    };
    let node = node::register(&client, &args.node_name, &cap, &args.address, &version)
        .await
        .with_context(|| format!("registering node {}", args.node_name))?;
    tracing::info!(node = %args.node_name, %version, cpu = %cap.cpu, memory = %cap.memory, gpus = cap.gpus, "registered");
    if let Some(net) = &network {
        net.clean_stale().await;
        tracing::info!(bridge = %net.config.bridge, first = %net.config.first, last = %net.config.last, dns = %net.config.dns, "pods get their own network namespace and address");
    }
    let beat = tokio::spawn(node::heartbeat(
        client.clone(),
        node,
        cap,
        args.address.clone(),
        version,
        Duration::from_secs(args.heartbeat_s.max(1)),
    ));

    let base_env = args
        .pass_env
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let agent = Arc::new(Agent::new(
        client.clone(),
        args.node_name.clone(),
        args.address.clone(),
        args.root.clone(),
        images,
        base_env,
        network,
    ));
    let pods: Api<Pod> = Api::all(client);
    let mine = watcher::Config::default().fields(&format!("spec.nodeName={}", args.node_name));
    let mut events = watcher::watcher(pods, mine).boxed();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(p) | Event::InitApply(p))) => agent.observe(p),
                Some(Ok(Event::Delete(p))) => agent.forget(&p),
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => break,
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(node = %agent.node, "stopping: the pods' processes are killed");
    beat.abort();
    agent.stop_all().await;
    Ok(())
}
