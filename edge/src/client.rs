//! The edge client: compress locally, send the bitstream over TLS with a bearer token, receive
//! the label map; and a bounded load test against a service.

use std::path::Path;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
}

/// An HTTP(S) agent that trusts the system roots, or only `ca_cert` (PEM) when given.
pub fn agent(ca_cert: Option<&Path>, timeout: Duration) -> Result<Agent, ClientError> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = ca_cert {
        let err = |reason: String| ClientError::Config {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| err(format!("not a PEM certificate: {e}")))?;
        tls = tls.root_certs(RootCerts::new_with_certs(&[cert.to_owned()]));
    }
    let config = Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    Ok(config.into())
}

/// A service's base URL as given on the command line: http(s), without credentials, which
/// would be shown in every error and log line that names the URL (the token is read from a
/// file instead).
pub fn server_url(url: &str) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected https://host:port".into());
    };
    if scheme != "https" && scheme != "http" {
        return Err(format!(
            "scheme {scheme:?}: expected https:// (or http:// on loopback)"
        ));
    }
    if rest.split(['/', '?', '#']).next().unwrap_or("").contains('@') {
        return Err("the URL carries credentials (user:password@): give the token with --token-file".into());
    }
    Ok(url.to_string())
}

/// What one remote segmentation returned.
pub struct Remote {
    /// The answer: a PNG label map for an image's stream, a gzipped NIfTI label volume for a
    /// volume stream.
    pub body: Vec<u8>,
    pub round_trip: Duration,
    /// The service's own processing time (its `x-processing-ms` header).
    pub server_ms: Option<f64>,
}

/// Sends one bitstream; returns the label map PNG.
pub fn segment_remote(
    agent: &Agent,
    server: &str,
    token: &str,
    stream: &[u8],
) -> Result<Remote, ClientError> {
    segment_remote_as(agent, server, token, stream, "image/png")
}

/// Sends one bitstream or volume stream, asking for the answer as `accept` (`image/png` for a
/// label map, `application/gzip` for a label volume).
pub fn segment_remote_as(
    agent: &Agent,
    server: &str,
    token: &str,
    stream: &[u8],
    accept: &str,
) -> Result<Remote, ClientError> {
    let url = format!("{}/v1/segment", server.trim_end_matches('/'));
    let started = Instant::now();
    let mut response = agent
        .post(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .header("accept", accept)
        .send(stream)
        .map_err(|e| ClientError::Request {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let status = response.status().as_u16();
    let server_ms = response
        .headers()
        .get("x-processing-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| ClientError::Request {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if status != 200 {
        return Err(ClientError::Status {
            url,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(Remote {
        body,
        round_trip: started.elapsed(),
        server_ms,
    })
}

/// Throughput and latency of a bounded load test.
#[derive(Debug, serde::Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub concurrency: usize,
    pub failed: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failure's message, if any request failed.
    pub first_error: Option<String>,
}

/// Sends `requests` requests from `concurrency` threads (each request a stream of `streams`
/// in turn) and measures them. Bounded in count; each request also has the agent's timeout.
pub fn load_test(
    agent: &Agent,
    server: &str,
    token: &str,
    streams: &[Vec<u8>],
    requests: usize,
    concurrency: usize,
) -> LoadReport {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<f64, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= requests {
                            break;
                        }
                        let t = Instant::now();
                        let r = segment_remote(agent, server, token, &streams[i % streams.len()]);
                        out.push(
                            r.map(|_| t.elapsed().as_secs_f64() * 1e3)
                                .map_err(|e| e.to_string()),
                        );
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut ok: Vec<f64> = results.iter().filter_map(|r| r.as_ref().ok()).copied().collect();
    ok.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if ok.is_empty() {
            f64::NAN
        } else {
            ok[((ok.len() - 1) as f64 * p).round() as usize]
        }
    };
    LoadReport {
        requests,
        concurrency,
        failed: results.len() - ok.len(),
        seconds,
        requests_per_second: ok.len() as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: ok.last().copied().unwrap_or(f64::NAN),
        first_error: results.iter().find_map(|r| r.as_ref().err().cloned()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_urls_with_credentials_are_refused_without_echoing_them() {
        let err = super::server_url("https://user:hunter2hunter2@host:8443").unwrap_err();
        assert!(err.contains("--token-file") && !err.contains("hunter2"), "{err}");
        assert!(super::server_url("ftp://host").is_err());
        assert_eq!(
            super::server_url("https://host:8443").unwrap(),
            "https://host:8443"
        );
    }
}
