//! The segmentation service on loopback: authentication before work, PNG and RLE answers equal
//! to local segmentation, typed 4xx errors, metrics, TLS, and a bounded load test.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use orchestra_api::Variant;
use orchestra_edge::client;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::data::{batch, Dataset, Sample, SyntheticKind};
use orchestra_worker::serve::{start, BatchOptions, ServeConfig};
use orchestra_worker::train::Trainer;
use tch::Device;

const TOKEN: &str = "test-token-0123456789abcdef";

/// Label maps of `streams` as the model segments them one at a time, as class bytes.
fn label_maps(model: &CompressionModel, streams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    streams
        .iter()
        .map(|s| {
            Vec::<u8>::try_from(model.segment(s).unwrap().flatten(0, -1).to_kind(tch::Kind::Uint8)).unwrap()
        })
        .collect()
}

fn holds_both_classes(map: &[u8]) -> bool {
    map.iter().any(|&v| v != map[0])
}

/// The fixture: a D4 model trained until at least 4 of the 6 held-out label maps hold lesion
/// (all-background maps would make "remote equals local" trivially true), saved once per test
/// binary as a model file; every test loads its own copy.
fn fixture() -> &'static (tempfile::TempDir, Vec<Vec<u8>>) {
    static FIXTURE: OnceLock<(tempfile::TempDir, Vec<Vec<u8>>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut spec = common::tiny_spec(Variant::D4, "memory://serve", "serve");
        // The learning-rate schedule spans the budget.
        spec.steps = 400;
        let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
        let refs: Vec<&Sample> = data.val.iter().take(6).collect();
        let images = batch(&refs, data.channels, data.size, Device::Cpu).0;
        let mut t = Trainer::new(spec, data.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut streams = Vec::new();
        common::train_until(&mut t, 400, 20, "4 of 6 label maps hold lesion", |t, _| {
            CompressionModel::save(&t.model, &path).unwrap();
            let model = CompressionModel::load(&path, Device::Cpu).unwrap();
            streams = model.encode(&images).unwrap();
            label_maps(&model, &streams)
                .iter()
                .filter(|m| holds_both_classes(m))
                .count()
                >= 4
        });
        (dir, streams)
    })
}

fn model_and_streams() -> (CompressionModel, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (dir, streams) = fixture();
    let model = CompressionModel::load(&dir.path().join("model.safetensors"), Device::Cpu).unwrap();
    let expected = label_maps(&model, streams);
    (model, streams.clone(), expected)
}

fn config(tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> ServeConfig {
    ServeConfig {
        tls,
        tokens: vec![TOKEN.into()],
        max_body_bytes: 1024,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(10),
        batch: BatchOptions::default(),
    }
}

fn post(agent: &ureq::Agent, url: &str, token: Option<&str>, accept: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = agent
        .post(url)
        .header("accept", accept)
        .header("content-type", "application/octet-stream");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send(body).unwrap();
    (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
}

#[test]
fn the_service_authenticates_segments_and_reports() {
    let (model, streams, expected) = model_and_streams();
    let server = start(model, "127.0.0.1:0".parse().unwrap(), config(None)).unwrap();
    let base = format!("http://{}", server.addr);
    let url = format!("{base}/v1/segment");
    let agent = client::agent(None, Duration::from_secs(10)).unwrap();

    let mut r = agent.get(&format!("{base}/healthz")).call().unwrap();
    assert_eq!(r.body_mut().read_to_string().unwrap(), "ok\n");

    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = post(&agent, &url, token, "image/png", &streams[0]);
        assert_eq!(status, 401);
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("bearer token"));
    }

    for (s, want) in streams.iter().zip(&expected) {
        let (status, png) = post(&agent, &url, Some(TOKEN), "image/png", s);
        assert_eq!(status, 200);
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (64, 64));
        assert_eq!(
            &img.into_raw(),
            want,
            "remote labels differ from local segmentation"
        );
    }
    let (status, body) = post(&agent, &url, Some(TOKEN), "application/json", &streams[1]);
    assert_eq!(status, 200);
    let rle: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let runs = rle["rle"].as_array().unwrap();
    let mut decoded = Vec::new();
    for run in runs {
        decoded.extend(std::iter::repeat_n(
            run[0].as_u64().unwrap() as u8,
            run[1].as_u64().unwrap() as usize,
        ));
    }
    assert_eq!(decoded, expected[1]);

    let (status, body) = post(&agent, &url, Some(TOKEN), "image/png", &[0x20, 0x00, 1, 2]);
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(err["error"].as_str().unwrap().contains("another model"), "{err}");
    let (status, _) = post(&agent, &url, Some(TOKEN), "image/png", &vec![0x10; 4096]);
    assert_eq!(status, 413, "bodies above the limit are refused");
    // A volume stream whose geometry places no voxel (an all-zero affine, as a converter that
    // wrote none leaves it): 400 naming the field, as the edge's readers refuse such a scan.
    use orchestra_codec::volume_stream::{wrap, Reduction, VolumeGeometry};
    let flat = VolumeGeometry {
        sides: [8, 64, 64],
        reduction: Reduction::Factor([1, 1, 1]),
        affine: [[0.0; 4]; 3],
    };
    let (status, body) = post(&agent, &url, Some(TOKEN), "image/png", &wrap(&flat, &streams[0]));
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("affine at byte 20")
            && err["error"].as_str().unwrap().contains("zero spacing"),
        "{err}"
    );

    let report = client::load_test(&agent, &base, TOKEN, &streams, 60, 4);
    assert_eq!(report.failed, 0, "{report:?}");
    eprintln!("load test: {report:?}");

    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("orchestra_segment_requests_total{code=\"401\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "orchestra_segment_requests_total{{code=\"200\"}} {}\n",
            streams.len() + 1 + 60
        )),
        "{metrics}"
    );
    assert!(metrics.contains("orchestra_segment_duration_seconds_count"));
    server.shutdown();
}

#[test]
fn tls_is_served_and_only_trusted_certificates_connect() {
    let (model, streams, expected) = model_and_streams();
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = start(
        model,
        "127.0.0.1:0".parse().unwrap(),
        config(Some((cert.clone(), key))),
    )
    .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());

    let trusted = client::agent(Some(&cert), Duration::from_secs(10)).unwrap();
    let remote = client::segment_remote(&trusted, &base, TOKEN, &streams[0]).unwrap();
    let img = image::load_from_memory(&remote.body).unwrap().to_luma8();
    assert_eq!(img.into_raw(), expected[0]);
    assert!(remote.server_ms.is_some());

    let untrusted = client::agent(None, Duration::from_secs(10)).unwrap();
    assert!(
        client::segment_remote(&untrusted, &base, TOKEN, &streams[0]).is_err(),
        "a self-signed certificate must not be trusted by default"
    );
    let plain = client::agent(None, Duration::from_secs(10)).unwrap();
    assert!(client::segment_remote(
        &plain,
        &format!("http://127.0.0.1:{}", server.addr.port()),
        TOKEN,
        &streams[0]
    )
    .is_err());
    server.shutdown();
}

#[test]
fn concurrent_requests_are_segmented_in_batches_per_code_shape() {
    let (model, mut streams, mut expected) = model_and_streams();
    // Two images of another size: their codes have another shape and need their own batch.
    let small: Vec<Sample> = (0..2)
        .map(|i| orchestra_worker::data::synthetic::generate(SyntheticKind::Lesion, 32, 9, i))
        .collect();
    let refs: Vec<&Sample> = small.iter().collect();
    let images = batch(&refs, 3, 32, Device::Cpu).0;
    for s in model.encode(&images).unwrap() {
        let labels = model.segment(&s).unwrap();
        assert_eq!(labels.size(), [32, 32]);
        expected.push(Vec::<u8>::try_from(labels.flatten(0, -1).to_kind(tch::Kind::Uint8)).unwrap());
        streams.push(s);
    }
    let with_lesion = expected.iter().filter(|e| holds_both_classes(e)).count();
    assert!(
        with_lesion >= 3,
        "only {with_lesion} label maps hold both classes: equality of blank maps would prove little"
    );
    let n = streams.len();
    let mut cfg = config(None);
    cfg.concurrency = n;
    // The batch stays open until all requests are in: one forward pass per code shape.
    cfg.batch = BatchOptions {
        max_batch: n,
        max_wait: Duration::from_secs(20),
    };
    let server = start(model, "127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let base = format!("http://{}", server.addr);
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|s| {
                let url = format!("{base}/v1/segment");
                scope.spawn(move || {
                    let agent = client::agent(None, Duration::from_secs(60)).unwrap();
                    post(&agent, &url, Some(TOKEN), "image/png", s)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ((status, png), want)) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(*status, 200, "request {i}");
        let img = image::load_from_memory(png).unwrap().to_luma8();
        assert_eq!(
            &img.into_raw(),
            want,
            "request {i}: labels segmented in a batch differ from one image alone"
        );
    }
    let agent = client::agent(None, Duration::from_secs(10)).unwrap();
    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("orchestra_segment_batch_size_count 2\n"),
        "one batch per code shape expected:\n{metrics}"
    );
    assert!(
        metrics.contains(&format!("orchestra_segment_batch_size_sum {n}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("orchestra_segment_batch_size_bucket{le=\"1\"} 0\n"),
        "{metrics}"
    );
    server.shutdown();
}

#[test]
fn a_request_that_times_out_in_the_queue_costs_no_forward_pass() {
    let (model, streams, _) = model_and_streams();
    let mut cfg = config(None);
    cfg.timeout = Duration::from_millis(500);
    // The batch waits 2.5 s for a second request that never comes; the first times out at 0.5 s.
    cfg.batch = BatchOptions {
        max_batch: 2,
        max_wait: Duration::from_millis(2500),
    };
    let server = start(model, "127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let base = format!("http://{}", server.addr);
    let agent = client::agent(None, Duration::from_secs(10)).unwrap();
    let (status, _) = post(
        &agent,
        &format!("{base}/v1/segment"),
        Some(TOKEN),
        "image/png",
        &streams[0],
    );
    assert_eq!(status, 408);
    std::thread::sleep(Duration::from_millis(3000));
    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("orchestra_segment_batch_size_count 0\n"),
        "{metrics}"
    );
    server.shutdown();
}

/// The value of an unlabelled or labelled sample line of the metrics text.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[test]
fn every_answer_is_json_counted_and_the_metrics_add_up() {
    let (model, streams, _) = model_and_streams();
    let tag = model.codec.tag;
    let server = start(model, "127.0.0.1:0".parse().unwrap(), config(None)).unwrap();
    let base = format!("http://{}", server.addr);
    let agent = client::agent(None, Duration::from_secs(10)).unwrap();
    let auth = format!("Bearer {TOKEN}");
    // A valid header announcing a 4000x4000 code: above the decoder's limits, refused unread.
    let huge = [0x21, tag, 0xa0, 0x1f, 0xa0, 0x1f, 0];
    let octets = Some("application/octet-stream");
    // (expected status, method, path, token, content type, body)
    type Case<'a> = (u16, &'a str, &'a str, bool, Option<&'a str>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (200, "POST", "/v1/segment", true, octets, streams[0].clone()),
        (415, "POST", "/v1/segment", true, None, streams[0].clone()),
        (
            415,
            "POST",
            "/v1/segment",
            true,
            Some("image/png"),
            streams[0].clone(),
        ),
        (413, "POST", "/v1/segment", true, octets, vec![0x20; 4096]),
        (401, "POST", "/v1/segment", false, octets, streams[0].clone()),
        (405, "GET", "/v1/segment", true, None, vec![]),
        (404, "POST", "/v1/nothing-here", true, octets, vec![1]),
        (
            400,
            "POST",
            "/v1/segment",
            true,
            octets,
            vec![0x20, tag ^ 1, 1, 2],
        ),
        (400, "POST", "/v1/segment", true, octets, huge.to_vec()),
    ];
    let (mut sent, mut read_by_handler) = (0, 0);
    for (want, method, path, token, content_type, body) in &cases {
        let mut req = axum::http::Request::builder()
            .method(*method)
            .uri(format!("{base}{path}"));
        if *token {
            req = req.header("authorization", &auth);
        }
        if let Some(t) = content_type {
            req = req.header("content-type", *t);
        }
        let mut r = agent.run(req.body(body.clone()).unwrap()).unwrap();
        assert_eq!(r.status().as_u16(), *want, "{method} {path} {content_type:?}");
        assert!(r.headers().contains_key("x-request-id"), "{want}: no request id");
        let answer = r.body_mut().read_to_vec().unwrap();
        sent += answer.len();
        if *want != 200 {
            let err: serde_json::Value = serde_json::from_slice(&answer)
                .unwrap_or_else(|e| panic!("{want}: not JSON ({e}): {:?}", String::from_utf8_lossy(&answer)));
            assert!(
                err["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{want}: {err}"
            );
            assert!(err["requestId"].as_u64().is_some(), "{want}: {err}");
            if *want == 400 && body.len() == huge.len() {
                assert!(err["error"].as_str().unwrap().contains("limit"), "{err}");
            }
        }
        if [200, 400, 415].contains(want) {
            read_by_handler += body.len();
        }
    }
    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    let counted: Vec<(String, u64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("orchestra_segment_requests_total{code=\""))
        .map(|l| {
            let (code, n) = l.split_once("\"} ").unwrap();
            (code.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(
        counted.iter().map(|c| c.1).sum::<u64>(),
        cases.len() as u64,
        "requests counted do not add up:\n{metrics}"
    );
    for (want, ..) in &cases {
        let expected = cases.iter().filter(|c| c.0 == *want).count() as u64;
        assert!(
            counted.contains(&(want.to_string(), expected)),
            "{want}:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "orchestra_segment_sent_bytes_total"),
        sent as u64
    );
    assert_eq!(
        sample(&metrics, "orchestra_segment_received_bytes_total"),
        read_by_handler as u64
    );
    assert_eq!(
        sample(&metrics, "orchestra_segment_duration_seconds_count"),
        cases.len() as u64
    );
    server.shutdown();
}

#[test]
fn plain_http_off_loopback_and_unusable_certificates_are_refused_at_start() {
    let load = || model_and_streams().0;
    let err = start(load(), "0.0.0.0:0".parse().unwrap(), config(None))
        .err()
        .unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, params: rcgen::CertificateParams| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let params = || rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let mut ca = params();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let mut expired = params();
    expired.not_before = rcgen::date_time_ymd(2001, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let not_pem = (dir.path().join("cert.txt"), dir.path().join("key.txt"));
    std::fs::write(&not_pem.0, "certificate: see the wiki").unwrap();
    for (tls, words) in [
        (write("ca", ca), "CA certificate"),
        (write("expired", expired), "not now"),
        (not_pem, "no CERTIFICATE"),
    ] {
        let cert = tls.0.clone();
        let err = start(load(), "127.0.0.1:0".parse().unwrap(), config(Some(tls)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(words) && err.contains(&*cert.to_string_lossy()),
            "{err}"
        );
    }
    let good = write("good", params());
    start(load(), "127.0.0.1:0".parse().unwrap(), config(Some(good)))
        .unwrap()
        .shutdown();
}

/// Reads until the server closes the connection; false if the read timed out instead (the
/// server kept the connection open).
fn closed_by_server(mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn connections_without_complete_headers_are_closed() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    // The client gives up after 30 s; the service must close first, after its 300 ms.
    let connect = |addr| {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    for tls in [None, Some((cert.clone(), key))] {
        let mut cfg = config(tls.clone());
        cfg.header_timeout = Duration::from_millis(300);
        let server = start(model_and_streams().0, "127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        let silent = connect(server.addr);
        assert!(
            closed_by_server(|b| (&silent).read(b)),
            "tls {}: silent connection kept",
            tls.is_some()
        );
        if tls.is_none() {
            let mut partial = connect(server.addr);
            partial
                .write_all(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            assert!(closed_by_server(|b| partial.read(b)), "partial headers kept");
            let mut idle = connect(server.addr);
            idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 12];
            idle.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"HTTP/1.1 200");
            assert!(
                closed_by_server(|b| idle.read(b)),
                "idle keep-alive connection kept"
            );
        } else {
            // After a completed handshake, a client that sends nothing is closed too.
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ck.cert.der().clone()).unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let conn =
                rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
                    .unwrap();
            let mut stream = rustls::StreamOwned::new(conn, connect(server.addr));
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).unwrap();
            }
            assert!(
                closed_by_server(|b| stream.read(b)),
                "handshaken silent connection kept"
            );
        }
        server.shutdown();
    }
}

#[test]
fn a_request_whose_client_left_costs_no_forward_pass() {
    use std::io::Write;
    let (model, streams, _) = model_and_streams();
    let mut cfg = config(None);
    // The batch waits 2.5 s for a second request that never comes; the client leaves at 0.3 s.
    cfg.batch = BatchOptions {
        max_batch: 2,
        max_wait: Duration::from_millis(2500),
    };
    let server = start(model, "127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        streams[0].len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&streams[0]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    std::thread::sleep(Duration::from_millis(3500));
    let agent = client::agent(None, Duration::from_secs(10)).unwrap();
    let mut r = agent
        .get(&format!("http://{}/metrics", server.addr))
        .call()
        .unwrap();
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("orchestra_segment_batch_size_count 0\n"),
        "the code of a client that left was segmented:\n{metrics}"
    );
    server.shutdown();
}
