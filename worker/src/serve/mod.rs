//! The remote segmentation service: bitstreams in, label maps out, as the paper deploys the
//! method (compress on the edge, segment in the cloud).
//!
//! It carries medical data, so it is secure by default: TLS (rustls) unless `--insecure` is
//! given explicitly, and bearer tokens checked (in constant time) before any work is done.
//! Plain HTTP (`--insecure`) is served on loopback addresses only. Bodies are bounded, as is
//! the code a stream may announce (the codec's limits, checked on the header); requests time
//! out, and so do connections that send no complete request headers (slow or idle clients);
//! concurrency is limited. Every answer is counted and every error is JSON (see `answers`).
//! Logs carry request ids, never image data or bitstreams. Entropy decoding runs on the
//! blocking pool, one request per thread; g + s runs on concurrent requests' codes in batches
//! (see `batcher`).

mod answers;
pub mod batcher;
mod certificate;
mod metrics;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use orchestra_codec::volume_stream;
use orchestra_edge::nifti_write::labels_nii_gz;
use orchestra_edge::volume::{spacing_of, Geometry, LabelVolume, DEFAULT_MAX_VOXELS};
use serde_json::json;

use answers::{error_response, BytesIn, RequestId};
use state::AppState;

use crate::codec::model_file::CompressionModel;
pub use batcher::{BatchError, BatchOptions, Batcher, LabelMap};
pub use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("--insecure serves plain HTTP on loopback addresses only, not on {addr}: bitstreams are medical data; give --tls-cert and --tls-key to listen there")]
    InsecureNotLoopback { addr: SocketAddr },
}

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// PEM certificate chain and private key; `None` only with an explicit `--insecure`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Accepted bearer tokens.
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub concurrency: usize,
    pub timeout: Duration,
    /// A connection that has not sent a complete request's headers this long after it opened,
    /// after its TLS handshake, or after its last answer (idle keep-alive) is closed.
    pub header_timeout: Duration,
    pub batch: BatchOptions,
}

/// Reads bearer tokens: one per line, blank lines and `#` comments ignored; at least 16
/// characters each, so that a stray short word never becomes a password.
pub fn read_tokens(path: &std::path::Path) -> Result<Vec<String>, ServeError> {
    let err = |reason: String| ServeError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err(err("no tokens: every request would be refused".into()));
    }
    if let Some((i, _)) = tokens.iter().enumerate().find(|(_, t)| t.len() < 16) {
        return Err(err(format!("token {} is shorter than 16 characters", i + 1)));
    }
    Ok(tokens)
}

/// Bearer-token check, before the body is read or any work is done.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    request: Request,
    next: Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare against every token without an early exit, in constant time per token.
    let ok = state.tokens.iter().fold(0u8, |acc, t| {
        acc | t.as_bytes().ct_eq(presented.as_bytes()).unwrap_u8()
    });
    if ok == 1 {
        return next.run(request).await;
    }
    tracing::warn!(request_id = id, "unauthorized request");
    let mut r = error_response(StatusCode::UNAUTHORIZED, id, "missing or invalid bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Run-length encoding of a label map in raster order: [[label, run], ...].
pub fn run_lengths(labels: &[u8]) -> Vec<[u64; 2]> {
    let mut runs: Vec<[u64; 2]> = Vec::new();
    for &l in labels {
        match runs.last_mut() {
            Some(last) if last[0] == l as u64 => last[1] += 1,
            _ => runs.push([l as u64, 1]),
        }
    }
    runs
}

/// Content types a bitstream may be sent as.
const STREAM_TYPES: [&str; 2] = ["application/octet-stream", "application/vnd.orchestra.stream"];

async fn segment(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bytes_in = body.len();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    let mut response = if content_type.is_some_and(|t| STREAM_TYPES.iter().any(|s| t.eq_ignore_ascii_case(s)))
    {
        segment_stream(&state, id, &headers, body).await
    } else {
        error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            id,
            &format!(
                "send the bitstream as {} (got {})",
                STREAM_TYPES[0],
                content_type.unwrap_or("no content type")
            ),
        )
    };
    response.extensions_mut().insert(BytesIn(bytes_in));
    response
}

/// Decode, segment and answer in the form the client accepts.
async fn segment_stream(state: &AppState, id: u64, headers: &HeaderMap, body: Bytes) -> Response {
    let json_wanted = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let codec = state.codec.clone();
    // A request that times out drops this future: the batcher never sees its code, and a
    // decode still running finishes within the codec's limits and is discarded. A volume
    // stream's geometry is checked (and bounded) before its code is decoded.
    let decoded = tokio::task::spawn_blocking(move || -> Result<_, String> {
        if volume_stream::is_volume_stream(&body) {
            let (geometry, code) =
                volume_stream::unwrap(&body, DEFAULT_MAX_VOXELS as u64).map_err(|e| e.to_string())?;
            let (shape, bits) = codec
                .decode(code)
                .map_err(|e| format!("the code after the geometry: {e}"))?;
            Ok((Some(geometry), shape, bits))
        } else {
            let (shape, bits) = codec.decode(&body).map_err(|e| e.to_string())?;
            Ok((None, shape, bits))
        }
    })
    .await;
    let batch_error = |e: BatchError| {
        let status = match e {
            BatchError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            BatchError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            BatchError::Refused(_) => StatusCode::BAD_REQUEST,
        };
        (status, e.to_string())
    };
    let result = match decoded {
        Err(join) => Err((StatusCode::INTERNAL_SERVER_ERROR, join.to_string())),
        Ok(Err(e)) => Err((StatusCode::BAD_REQUEST, e)),
        Ok(Ok((None, shape, bits))) => state.batcher.segment(shape, bits).await.map_err(batch_error),
        Ok(Ok((Some(geometry), shape, bits))) => state
            .batcher
            .segment_volume(geometry, shape, bits)
            .await
            .map_err(batch_error),
    };
    let map = match result {
        Err((status, reason)) if status.is_server_error() => {
            tracing::error!(request_id = id, error = %reason, "segmentation failed");
            return error_response(status, id, "internal error");
        }
        Err((status, reason)) => return error_response(status, id, &reason),
        Ok(map) => map,
    };
    answer(map, id, json_wanted)
}

/// A label map in the form the client accepts: JSON (run lengths), a gzipped NIfTI label
/// volume on the scan's voxels, or a PNG for an image.
fn answer(map: LabelMap, id: u64, json_wanted: bool) -> Response {
    let (h, w) = (map.sides[0] as u32, *map.sides.last().unwrap_or(&0) as u32);
    if json_wanted {
        return axum::Json(json!({
            "width": w, "height": h, "shape": map.sides, "rle": run_lengths(&map.labels)
        }))
        .into_response();
    }
    if let (Some(affine), 3) = (map.affine, map.sides.len()) {
        // A label volume answers as a gzipped NIfTI file on the scan's voxels.
        let volume = LabelVolume {
            geometry: Geometry {
                sides: [map.sides[0], map.sides[1], map.sides[2]],
                spacing: spacing_of(&affine),
                affine,
            },
            labels: map.labels,
        };
        return match labels_nii_gz(&volume, "answer") {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "application/gzip"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"labels.nii.gz\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                id,
                "cannot write the NIfTI answer",
            ),
        };
    }
    if map.sides.len() != 2 {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            id,
            "a volume's label map has no PNG form; ask for application/json",
        );
    }
    let mut png = Vec::new();
    let img = image::GrayImage::from_raw(w, h, map.labels).expect("sized label map");
    match img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png) {
        Ok(()) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, id, "cannot encode the PNG"),
    }
}

fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    let api = Router::new()
        .route("/v1/segment", post(segment))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            config.concurrency.max(1),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), answers::account));
    let metrics_state = state.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let s = metrics_state.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        s.metrics.render(),
                    )
                }
            }),
        )
        .merge(api)
        .with_state(state)
}

/// A service running on its own threads; dropping it does not stop it, `shutdown` does.
pub struct RunningServer {
    pub addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn shutdown(mut self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the service stops.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the service on `listen` (port 0 picks a free port).
/// A non-blocking listener on `listen`, and the address it got (the port, for port 0).
fn bind(listen: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), ServeError> {
    let failed = |e: std::io::Error| ServeError::Listen {
        addr: listen.to_string(),
        reason: e.to_string(),
    };
    let listener = std::net::TcpListener::bind(listen).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

pub fn start(
    model: CompressionModel,
    listen: SocketAddr,
    config: ServeConfig,
) -> Result<RunningServer, ServeError> {
    if config.tls.is_none() && !listen.ip().is_loopback() {
        return Err(ServeError::InsecureNotLoopback { addr: listen });
    }
    if let Some((cert, _)) = &config.tls {
        certificate::check_server_certificate(cert)?;
    }
    let (listener, addr) = bind(listen)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(
            runtime
                .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key))
                .map_err(|e| ServeError::Config {
                    path: cert.clone(),
                    reason: format!("TLS certificate or key: {e}"),
                })?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let codec = model.codec.clone();
    let batcher = Batcher::start(model, config.batch, config.concurrency, metrics.clone());
    let state = Arc::new(AppState {
        batcher,
        codec,
        tokens: config.tokens.clone(),
        metrics,
        next_id: AtomicU64::new(1),
    });
    let app = router(state, &config);
    let handle = axum_server::Handle::new();
    let server_handle = handle.clone();
    let header_timeout = config.header_timeout;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let service = app.into_make_service();
            // Connections whose request headers take longer than `header_timeout`, counted
            // from when the server starts waiting for them (a new connection, or a kept-alive
            // one after its last answer: idle ones too), are closed; so are TLS handshakes.
            let mut server = match axum_server::from_tcp(listener) {
                Ok(server) => server.http1_only().first_request_timeout(header_timeout),
                Err(e) => {
                    tracing::error!(error = %e, "server stopped");
                    return;
                }
            };
            server.http_builder().http1().header_read_timeout(header_timeout);
            let server = server.handle(server_handle);
            let result = match tls {
                Some(tls) => {
                    let acceptor =
                        axum_server::tls_rustls::RustlsAcceptor::new(tls).handshake_timeout(header_timeout);
                    server.acceptor(acceptor).serve(service).await
                }
                None => server.serve(service).await,
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "server stopped");
            }
        });
    });
    Ok(RunningServer {
        addr,
        handle,
        thread: Some(thread),
    })
}
