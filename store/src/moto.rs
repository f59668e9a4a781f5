//! A loopback S3 server (moto, installed by `make setup`) for tests of this crate and of the
//! worker: started on a free port, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The endpoint is process-wide (environment variables): one test at a time.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A moto server on a free port, stopped when dropped.
pub struct Moto {
    child: Child,
    /// The address it listens on (loopback, or an address pods of a test cluster reach).
    pub host: String,
    pub port: u16,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn moto_server() -> std::path::PathBuf {
    let venv = std::env::var_os("ORCHESTRA_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/orchestra/venv")
        });
    let path = venv.join("bin/moto_server");
    assert!(
        path.exists(),
        "{} is missing: run `make setup`, which installs moto[server]",
        path.display()
    );
    path
}

pub fn start_moto() -> Moto {
    start_moto_on("127.0.0.1")
}

/// A moto server listening on `host` (an address of this machine).
pub fn start_moto_on(host: &str) -> Moto {
    let port = TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
    let child = Command::new(moto_server())
        .args(["-H", host, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let started = Instant::now();
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        child,
        host: host.to_string(),
        port,
    }
}

/// Creates a bucket with a plain HTTP PUT (moto accepts unsigned requests).
pub fn create_bucket(port: u16, bucket: &str) {
    create_bucket_at("127.0.0.1", port, bucket)
}

pub fn create_bucket_at(host: &str, port: u16, bucket: &str) {
    let mut s = TcpStream::connect((host, port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Points s3:// stores of this process at the server on `port` (credentials are moto's dummies).
pub fn point_at(port: u16) {
    point_at_endpoint(&format!("http://127.0.0.1:{port}"))
}

/// Points s3:// stores of this process at the server at `endpoint` (`http://HOST:PORT`).
pub fn point_at_endpoint(endpoint: &str) {
    // Every test here points the process at its own server before opening a store.
    for (k, v) in [
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(k, v);
    }
}

/// A loopback TCP proxy in front of the S3 server that can cut the connection at the n-th PUT
/// request (the server "stops" in the middle of a multi-object checkpoint) and come back later.
pub struct CuttableProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    puts: std::sync::atomic::AtomicUsize,
    cut_at: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl CuttableProxy {
    pub fn start(upstream: u16) -> CuttableProxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState::default());
        state.cut_at.store(usize::MAX, SeqCst);
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.down.load(SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let st = s.clone();
                // Client -> server, counting request lines that start a PUT.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (client, server);
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if buf[..n].starts_with(b"PUT /") {
                            let k = st.puts.fetch_add(1, SeqCst) + 1;
                            if k >= st.cut_at.load(SeqCst) {
                                st.down.store(true, SeqCst);
                            }
                        }
                        if st.down.load(SeqCst) || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
                let st = s.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (s2, c2);
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if st.down.load(SeqCst) || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttableProxy { port, state }
    }

    /// Goes down when the `n`-th PUT request (counted from the start) arrives, before it is
    /// forwarded; every connection is cut and new ones are refused until `restore`.
    pub fn cut_at_put(&self, n: usize) {
        self.state.cut_at.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.cut_at.store(usize::MAX, SeqCst);
        self.state.down.store(false, SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn puts(&self) -> usize {
        self.state.puts.load(std::sync::atomic::Ordering::SeqCst)
    }
}
