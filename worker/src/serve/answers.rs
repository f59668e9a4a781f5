//! Every answer of the segmentation API goes through one place: it gets its request id, errors
//! become JSON whoever produced them (the handler, the body limit, the timeout, the router),
//! and each answer is counted once by its status code with the bytes it carried, so that the
//! metrics add up: requests = the sum of answers by code.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::AppState;

/// The id of a request, given by `account` before anything else runs.
#[derive(Clone, Copy, Debug)]
pub struct RequestId(pub u64);

/// Bitstream bytes a handler read, for the metrics.
#[derive(Clone, Copy, Debug)]
pub struct BytesIn(pub usize);

/// A JSON error answer.
pub fn error_response(status: StatusCode, id: u64, message: &str) -> Response {
    (status, axum::Json(json!({"error": message, "requestId": id}))).into_response()
}

/// Why an answer that was not produced as JSON failed, in words a client can act on.
fn reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than this service accepts",
        StatusCode::REQUEST_TIMEOUT => "the request took longer than this service allows",
        StatusCode::NOT_FOUND => "no such endpoint: POST /v1/segment, GET /healthz, GET /metrics",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint",
        _ => status.canonical_reason().unwrap_or("error"),
    }
}

fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The outermost layer of the API: id, JSON errors, metrics and the access log line.
pub async fn account(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    let status = response.status();
    if !status.is_success() && !is_json(&response) {
        let headers = std::mem::take(response.headers_mut());
        let extensions = std::mem::take(response.extensions_mut());
        response = error_response(status, id, reason(status));
        // Keep what the inner layers said (WWW-Authenticate, Allow), not their content type.
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name, value.clone());
            }
        }
        *response.extensions_mut() = extensions;
    }
    let bytes_in = response.extensions().get::<BytesIn>().map_or(0, |b| b.0);
    // Answers are small (a label map at most), so they are counted by collecting them.
    let (mut parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(request_id = id, error = %e, "cannot collect the answer");
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            serde_json::to_vec(&json!({"error": "internal error", "requestId": id}))
                .unwrap_or_default()
                .into()
        }
    };
    parts.headers.insert("x-request-id", HeaderValue::from(id));
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        parts.headers.insert("x-processing-ms", v);
    }
    let status = parts.status.as_u16();
    state
        .metrics
        .record(status, bytes_in, body.len(), started.elapsed().as_secs_f64());
    if parts.status.is_server_error() {
        tracing::error!(request_id = id, status, bytes_in, ms, "segment");
    } else {
        tracing::info!(
            request_id = id,
            status,
            bytes_in,
            bytes_out = body.len(),
            ms,
            "segment"
        );
    }
    Response::from_parts(parts, Body::from(body))
}
