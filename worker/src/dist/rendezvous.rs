//! A small key-value store on rank 0, reached through `MASTER_ADDR:MASTER_PORT`: ranks check
//! in, rank 0 hands out the NCCL unique id, and every rank reports which collective operation
//! it has entered, so that a rank stuck waiting can name the rank that is missing.
//!
//! The protocol is one text line per request on a persistent TCP connection:
//! `SET <key> <hex>` -> `OK`; `GET <key> <timeout-ms>` -> `VAL <hex>` or `TIMEOUT`;
//! `SEEN <rank> <seq> <op>` and `BEAT <rank>` (no reply);
//! `PROGRESS` -> `PROGRESS <rank>:<seq>:<silent-ms or ->:<op> ...`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{DistError, RendezvousEnv};

#[derive(Default)]
struct State {
    values: HashMap<String, Vec<u8>>,
    /// rank -> (sequence number, operation) of the latest operation it entered.
    seen: HashMap<usize, (u64, String)>,
    /// rank -> when its heartbeat thread last reported (a stopped or dead process is silent).
    beats: HashMap<usize, Instant>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// Starts the store on `bind` (port 0: any free port) in background threads that live as long
/// as the process; returns the bound port.
pub fn serve(bind: &str) -> Result<u16, DistError> {
    let listener = TcpListener::bind(bind).map_err(|e| DistError::Rendezvous {
        addr: bind.to_string(),
        reason: format!("cannot listen: {e}"),
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let shared = Arc::new(Shared::default());
    std::thread::Builder::new()
        .name("rendezvous".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("rendezvous-conn".into())
                    .spawn(move || serve_connection(conn, &shared));
            }
        })
        .map_err(|e| DistError::Rendezvous {
            addr: bind.to_string(),
            reason: format!("cannot start the server thread: {e}"),
        })?;
    Ok(port)
}

fn serve_connection(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut lines = BufReader::new(conn).lines();
    while let Some(Ok(line)) = lines.next() {
        let mut parts = line.split(' ');
        let reply = match (parts.next(), parts.next(), parts.next()) {
            (Some("SET"), Some(key), Some(hex)) => match decode_hex(hex) {
                Some(value) => {
                    shared.state.lock().unwrap().values.insert(key.to_string(), value);
                    shared.changed.notify_all();
                    "OK".to_string()
                }
                None => "ERR bad hex".to_string(),
            },
            (Some("GET"), Some(key), Some(ms)) => {
                let deadline = Instant::now() + Duration::from_millis(ms.parse().unwrap_or(0));
                let mut state = shared.state.lock().unwrap();
                loop {
                    if let Some(v) = state.values.get(key) {
                        break format!("VAL {}", encode_hex(v));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break "TIMEOUT".to_string();
                    }
                    state = shared.changed.wait_timeout(state, left).unwrap().0;
                }
            }
            (Some("SEEN"), Some(rank), Some(seq)) => {
                let op = parts.collect::<Vec<_>>().join(" ");
                if let (Ok(rank), Ok(seq)) = (rank.parse(), seq.parse()) {
                    shared.state.lock().unwrap().seen.insert(rank, (seq, op));
                }
                continue;
            }
            (Some("BEAT"), Some(rank), _) => {
                if let Ok(rank) = rank.parse() {
                    shared.state.lock().unwrap().beats.insert(rank, Instant::now());
                }
                continue;
            }
            (Some("PROGRESS"), _, _) => {
                let state = shared.state.lock().unwrap();
                let mut ranks: Vec<usize> = state.seen.keys().chain(state.beats.keys()).copied().collect();
                ranks.sort();
                ranks.dedup();
                let list: Vec<String> = ranks
                    .iter()
                    .map(|r| {
                        let (seq, op) = state.seen.get(r).cloned().unwrap_or((0, "nothing".into()));
                        let silent = state
                            .beats
                            .get(r)
                            .map_or("-".to_string(), |t| t.elapsed().as_millis().to_string());
                        format!("{r}:{seq}:{silent}:{}", op.replace(' ', "_"))
                    })
                    .collect();
                format!("PROGRESS {}", list.join(" "))
            }
            _ => "ERR unknown request".to_string(),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// A connection to the store.
pub struct Client {
    addr: String,
    conn: Mutex<(BufReader<TcpStream>, TcpStream)>,
}

/// What the store knows of one rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankProgress {
    /// Sequence number and name of the latest operation it entered (0, "nothing" if none).
    pub seq: u64,
    pub op: String,
    /// Time since its last heartbeat; None if it never sent one.
    pub silent_for: Option<Duration>,
}

/// What the store knows of every rank that reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress(pub HashMap<usize, RankProgress>);

impl Client {
    /// Connects to `addr`, retrying until `timeout` (rank 0 may start after the others).
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, DistError> {
        let deadline = Instant::now() + timeout;
        let err = |reason: String| DistError::Rendezvous {
            addr: addr.to_string(),
            reason,
        };
        loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve: {e}"))
                .and_then(|mut addrs| {
                    let a = addrs.next().ok_or_else(|| "resolves to no address".to_string())?;
                    TcpStream::connect_timeout(&a, Duration::from_secs(2)).map_err(|e| e.to_string())
                });
            match attempt {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let reader = stream.try_clone().map_err(|e| err(e.to_string()))?;
                    return Ok(Client {
                        addr: addr.to_string(),
                        conn: Mutex::new((BufReader::new(reader), stream)),
                    });
                }
                Err(last) if Instant::now() >= deadline => {
                    return Err(err(format!(
                        "rank 0's rendezvous store did not answer within {timeout:?} (last error: {last})"
                    )));
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request(&self, line: &str, reply: bool, timeout: Duration) -> Result<String, DistError> {
        let err = |reason: String| DistError::Rendezvous {
            addr: self.addr.clone(),
            reason,
        };
        let mut conn = self.conn.lock().unwrap();
        let (reader, writer) = &mut *conn;
        writeln!(writer, "{line}").map_err(|e| err(format!("lost the connection to rank 0: {e}")))?;
        if !reply {
            return Ok(String::new());
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(timeout + Duration::from_secs(5)));
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) => Err(err("rank 0 closed the connection (it has probably exited)".into())),
            Ok(_) => Ok(answer.trim_end().to_string()),
            Err(e) => Err(err(format!("no answer from rank 0: {e}"))),
        }
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let answer = self.request(
            &format!("SET {key} {}", encode_hex(value)),
            true,
            Duration::from_secs(30),
        )?;
        if answer == "OK" {
            Ok(())
        } else {
            Err(DistError::Rendezvous {
                addr: self.addr.clone(),
                reason: format!("SET {key}: {answer}"),
            })
        }
    }

    /// Waits up to `timeout` for `key` to be set.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, DistError> {
        let answer = self.request(&format!("GET {key} {}", timeout.as_millis()), true, timeout)?;
        match answer.strip_prefix("VAL ") {
            Some(hex) => Ok(decode_hex(hex)),
            None if answer == "VAL" => Ok(Some(Vec::new())),
            None if answer == "TIMEOUT" => Ok(None),
            None => Err(DistError::Rendezvous {
                addr: self.addr.clone(),
                reason: format!("GET {key}: {answer}"),
            }),
        }
    }

    /// Records that `rank` entered operation number `seq` (no answer is awaited).
    pub fn report(&self, rank: usize, seq: u64, op: &str) -> Result<(), DistError> {
        self.request(&format!("SEEN {rank} {seq} {op}"), false, Duration::ZERO)
            .map(|_| ())
    }

    /// Tells the store that `rank` is alive (no answer is awaited).
    pub fn beat(&self, rank: usize) -> Result<(), DistError> {
        self.request(&format!("BEAT {rank}"), false, Duration::ZERO)
            .map(|_| ())
    }

    pub fn progress(&self) -> Result<Progress, DistError> {
        let answer = self.request("PROGRESS", true, Duration::from_secs(5))?;
        let body = answer
            .strip_prefix("PROGRESS")
            .ok_or_else(|| DistError::Rendezvous {
                addr: self.addr.clone(),
                reason: format!("PROGRESS: {answer}"),
            })?;
        let mut map = HashMap::new();
        for entry in body.split_whitespace() {
            let mut f = entry.splitn(4, ':');
            if let (Some(r), Some(s), Some(ms), Some(op)) = (f.next(), f.next(), f.next(), f.next()) {
                if let (Ok(r), Ok(seq)) = (r.parse(), s.parse()) {
                    let silent_for = ms.parse().ok().map(Duration::from_millis);
                    let op = op.replace('_', " ");
                    map.insert(r, RankProgress { seq, op, silent_for });
                }
            }
        }
        Ok(Progress(map))
    }
}

/// Joins the rendezvous of `env`: rank 0 starts the store on `MASTER_PORT`, every rank checks
/// in, and each waits until all `WORLD_SIZE` ranks have, naming those that did not.
pub fn join(env: &RendezvousEnv, timeout: Duration) -> Result<Client, DistError> {
    let addr = if env.rank == 0 {
        serve(&format!("0.0.0.0:{}", env.master_port))?;
        format!("127.0.0.1:{}", env.master_port)
    } else {
        env.address()
    };
    let client = Client::connect(&addr, timeout)?;
    check_in(&client, env.rank, env.world_size, timeout)?;
    Ok(client)
}

/// Every rank announces itself and waits for all others.
pub fn check_in(client: &Client, rank: usize, world_size: usize, timeout: Duration) -> Result<(), DistError> {
    client.set(&format!("joined/{rank}"), b"1")?;
    let deadline = Instant::now() + timeout;
    let mut missing = Vec::new();
    for r in 0..world_size {
        let left = deadline.saturating_duration_since(Instant::now());
        if client.get(&format!("joined/{r}"), left)?.is_none() {
            missing.push(r);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DistError::Rendezvous {
            addr: client.addr.clone(),
            reason: format!("rank(s) {missing:?} of {world_size} did not join within {timeout:?}"),
        })
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_exchange_values_and_progress() {
        let port = serve("127.0.0.1:0").unwrap();
        let addr = format!("127.0.0.1:{port}");
        let a = Client::connect(&addr, Duration::from_secs(5)).unwrap();
        let b = Client::connect(&addr, Duration::from_secs(5)).unwrap();
        let waiter = std::thread::spawn({
            let addr = addr.clone();
            move || {
                let c = Client::connect(&addr, Duration::from_secs(5)).unwrap();
                c.get("nccl-id", Duration::from_secs(10)).unwrap()
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        a.set("nccl-id", &[0, 1, 254, 255]).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(vec![0, 1, 254, 255]));
        assert_eq!(b.get("absent", Duration::from_millis(50)).unwrap(), None);

        a.report(0, 7, "all-reduce bucket 2").unwrap();
        b.report(1, 6, "broadcast").unwrap();
        b.beat(1).unwrap();
        a.beat(2).unwrap();
        // Reports are not answered: a round trip on b makes sure the store has read b's.
        assert_eq!(b.get("flush", Duration::ZERO).unwrap(), None);
        let p = a.progress().unwrap();
        assert_eq!(
            (p.0[&0].seq, p.0[&0].op.as_str(), p.0[&0].silent_for),
            (7, "all-reduce bucket 2", None)
        );
        assert_eq!((p.0[&1].seq, p.0[&1].op.as_str()), (6, "broadcast"));
        assert!(p.0[&1].silent_for.unwrap() < Duration::from_secs(5));
        assert_eq!((p.0[&2].seq, p.0[&2].op.as_str()), (0, "nothing"));
    }

    #[test]
    fn check_in_names_the_rank_that_never_came() {
        let port = serve("127.0.0.1:0").unwrap();
        let c = Client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(5)).unwrap();
        let err = check_in(&c, 0, 2, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank(s) [1] of 2 did not join"), "{err}");
    }

    #[test]
    fn connect_gives_up_with_the_address() {
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(&format!("127.0.0.1:{free}"), Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{free}")) && err.contains("did not answer"),
            "{err}"
        );
    }
}
