//! `orchestra-worker serve`: the cloud side's segmentation service over HTTPS.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::codec::LimitFlags;

/// Cloud side: serve POST /v1/segment (bitstream in, label map out), /healthz, /metrics.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", conflicts_with = "insecure")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (loopback tests only: the bitstreams are medical data).
    #[arg(long)]
    pub insecure: bool,
    /// Bearer tokens, one per line (at least 16 characters each).
    #[arg(long)]
    pub tokens: PathBuf,
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Close connections that send no complete request headers for this long (new, after
    /// the TLS handshake, or idle between requests).
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Where g + s run: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Most codes segmented in one forward pass (1: no batching).
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// How long a batch waits for more requests after its first (0: take what is queued).
    #[arg(long, default_value_t = 0.0)]
    pub batch_wait_ms: f64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let ServeArgs {
        model,
        listen,
        tls_cert,
        tls_key,
        insecure,
        tokens,
        max_body_bytes,
        concurrency,
        timeout_ms,
        header_timeout_ms,
        limits,
        device,
        max_batch,
        batch_wait_ms,
    } = args;
    let tls = match (tls_cert, tls_key, insecure) {
        (Some(c), Some(k), false) => Some((c, k)),
        (None, None, true) => None,
        _ => bail!("give --tls-cert and --tls-key, or --insecure for plain HTTP on loopback"),
    };
    let config = orchestra_worker::serve::ServeConfig {
        tls,
        tokens: orchestra_worker::serve::read_tokens(&tokens)?,
        max_body_bytes,
        concurrency,
        timeout: std::time::Duration::from_millis(timeout_ms),
        header_timeout: std::time::Duration::from_millis(header_timeout_ms.max(1)),
        batch: orchestra_worker::serve::BatchOptions {
            max_batch: max_batch.max(1),
            max_wait: std::time::Duration::from_secs_f64(batch_wait_ms.max(0.0) / 1e3),
        },
    };
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let device = orchestra_worker::cuda::parse_device(&device).map_err(anyhow::Error::msg)?;
    let model = limits.apply(orchestra_worker::codec::model_file::CompressionModel::load(
        &model, device,
    )?)?;
    let server = orchestra_worker::serve::start(model, listen, config)?;
    println!(
        "serving {scheme}://{} (POST /v1/segment, GET /healthz, GET /metrics)",
        server.addr
    );
    server.wait();
    Ok(())
}
