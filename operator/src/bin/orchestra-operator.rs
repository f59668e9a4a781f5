//! `orchestra-operator`: the Kubernetes controller. Runs in the cluster (in-cluster config) or
//! beside it (kubeconfig); exits with a clear message when no cluster is reachable or the CRDs
//! are missing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use orchestra_operator::dashboard;
use orchestra_operator::k8s::builders::GangConfig;
use orchestra_operator::k8s::controller::{self, preflight, Options};
use orchestra_operator::k8s::leader::{self, LeaseOptions};
use orchestra_operator::k8s::metrics::Metrics;
use orchestra_operator::k8s::server;
use orchestra_operator::planner::PlannerConfig;

#[derive(Parser)]
#[command(
    name = "orchestra-operator",
    version,
    about = "Orchestra's Kubernetes operator"
)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Worker image for Experiments that name none.
    #[arg(
        long,
        env = "WORKER_IMAGE",
        default_value = "ghcr.io/orchestra-dev/orchestra-worker:latest"
    )]
    worker_image: String,
    /// imagePullPolicy of worker pods (IfNotPresent for images loaded into kind).
    #[arg(long, env = "WORKER_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// Seconds a worker rank waits for one collective before it exits naming the missing rank.
    #[arg(long, default_value_t = 300)]
    collective_timeout: u64,
    /// Seconds before the first restart of a failed gang (doubles per attempt).
    #[arg(long, default_value_t = 10)]
    restart_backoff: u64,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Serve the dashboard (read-only) on this address, e.g. 0.0.0.0:8081: the Experiments, their
    /// fronts, trials and curves, live.
    #[arg(long, env = "DASHBOARD_ADDR")]
    dashboard_addr: Option<SocketAddr>,
    /// Elect a leader through a Lease so that only one replica acts.
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "orchestra-system")]
    lease_namespace: String,
    /// This replica's identity (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

/// `orchestra-operator/<version> (<identity>)`, the identity cut to what a header may hold.
fn user_agent(identity: &str) -> String {
    let printable: String = identity
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(128)
        .collect();
    format!("orchestra-operator/{} ({printable})", env!("CARGO_PKG_VERSION"))
}

/// The dashboard of a replica that waits for the lease, on a copy of the socket (the replica
/// serves on the socket itself once it acts and this task is aborted).
fn waiting_dashboard(
    socket: &std::net::TcpListener,
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
    let (source, watches) = dashboard::ClusterSource::watching(client.clone(), namespace);
    Ok(tokio::spawn(async move {
        let serve = dashboard::serve(listener, Arc::new(source));
        let (_, served) = tokio::join!(watches, serve);
        if let Err(e) = served {
            tracing::error!(error = %e, "the dashboard stopped");
        }
    }))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {}", orchestra_api::redact(&format!("{e:#}")));
        std::process::exit(1);
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| orchestra_api::RedactingStderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// A client of the cluster this runs in or beside, naming this replica in its User-Agent.
async fn connect(identity: &str) -> Result<kube::Client> {
    // The client's error quotes the kubeconfig's offending lines (tokens included): shown
    // once, redacted.
    let unreachable = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "no Kubernetes cluster reachable: no in-cluster service account and no usable kubeconfig (KUBECONFIG or ~/.kube/config): {}",
            orchestra_api::redact(&e.to_string())
        )
    };
    let mut config = kube::Config::infer().await.map_err(|e| unreachable(&e))?;
    // Which replica sent a request, in the API server's audit log (as kube-controller-manager
    // names itself there).
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent(identity))?,
    ));
    kube::Client::try_from(config).map_err(|e| unreachable(&e))
}

async fn run(args: Args) -> Result<()> {
    init_logs(args.log_json);
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("orchestra-operator-{}", std::process::id()))
    });
    let client = connect(&identity).await?;
    preflight(&client, args.namespace.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(server::serve(args.metrics_addr, metrics.clone()));
    let trim = tokio::spawn(orchestra_operator::k8s::heap::trim_every(Duration::from_secs(5)));

    let lease = LeaseOptions {
        namespace: args.lease_namespace.clone(),
        name: "orchestra-operator-leader".into(),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    // Bound at the start, so that a taken or wrong address fails it. Every replica serves the
    // dashboard (a Service may send a reader to any): one that waits for the lease over watches
    // of its own, the one that acts over its controller's.
    let dashboard = match args.dashboard_addr {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| anyhow::anyhow!("--dashboard-addr {addr}: {e}"))?,
        ),
        None => None,
    };
    if args.leader_election {
        let waiting = match &dashboard {
            Some(socket) => Some(waiting_dashboard(socket, &client, args.namespace.as_deref())?),
            None => None,
        };
        leader::acquire(&client, &lease).await;
        if let Some(w) = waiting {
            w.abort();
        }
    }
    let dashboard = dashboard.map(tokio::net::TcpListener::from_std).transpose()?;
    let opts = Options {
        namespace: args.namespace.clone(),
        gang: GangConfig {
            worker_image: args.worker_image.clone(),
            image_pull_policy: args.image_pull_policy.clone(),
            collective_timeout: args.collective_timeout,
        },
        planner: PlannerConfig {
            restart_backoff: args.restart_backoff,
            ..Default::default()
        },
        instance: identity,
        dashboard,
    };
    tracing::info!(namespace = ?args.namespace, worker_image = %args.worker_image, "operator started");
    let run = controller::run(client.clone(), opts, metrics);
    if args.leader_election {
        tokio::select! {
            _ = run => {}
            _ = leader::keep(&client, &lease) => {
                anyhow::bail!("leadership lost: exiting so that a single replica acts");
            }
        }
    } else {
        run.await;
    }
    server.abort();
    trim.abort();
    Ok(())
}
