//! A multi-rank backend under the watchdog: each operation is numbered, reported to the
//! rendezvous store, and bounded by the timeout. When it overruns, the message names the ranks
//! that have not reached it (or rank 0, when its store is gone with it).

use std::sync::Arc;
use std::time::Duration;

use tch::Tensor;

use super::rendezvous::{Client, Progress};

/// How often each rank tells rank 0's store that it is alive.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A rank silent for longer than this is reported as stopped or dead.
const SILENT: Duration = Duration::from_millis(2000);
use super::watchdog::Watchdog;
use super::{Collective, DistError};

/// Exit status of a rank that gave up waiting for its peers.
pub const EXIT_PEER_LOST: i32 = 3;

pub struct Watched {
    inner: Box<dyn Collective>,
    watchdog: Watchdog,
    client: Option<Arc<Client>>,
    timeout: Duration,
    seq: u64,
}

impl Watched {
    pub fn around(
        inner: Box<dyn Collective>,
        timeout: Duration,
        client: Option<Client>,
    ) -> Result<Box<dyn Collective>, DistError> {
        let client = client.map(Arc::new);
        let (rank, world) = (inner.rank(), inner.world_size());
        let addr = client.as_ref().map(|c| c.addr().to_string());
        let backend = inner.backend();
        if let Some(a) = &addr {
            start_heartbeat(a.clone(), rank);
        }
        let watchdog = Watchdog::start(Box::new(move |op, seq, timeout| {
            // A fresh connection: the trainer's may be mid-request.
            let progress = addr
                .as_ref()
                .map(|a| Client::connect(a, Duration::from_secs(5)).and_then(|c| c.progress()));
            let message = diagnose(rank, world, op, seq, timeout, progress);
            tracing::error!(backend, "{message}");
            eprintln!("error: {backend}: {message}");
            // The blocked MPI/NCCL call cannot be interrupted; leave without running destructors
            // that would wait on it.
            unsafe { libc::_exit(EXIT_PEER_LOST) };
        }));
        Ok(Box::new(Watched {
            inner,
            watchdog,
            client,
            timeout,
            seq: 0,
        }))
    }

    fn guarded<T>(
        &mut self,
        op: &str,
        timeout: Duration,
        f: impl FnOnce(&mut dyn Collective) -> Result<T, DistError>,
    ) -> Result<T, DistError> {
        self.seq += 1;
        if let Some(c) = &self.client {
            // A lost store is diagnosed by the watchdog if the operation hangs.
            let _ = c.report(self.inner.rank(), self.seq, op);
        }
        self.watchdog.arm(op, self.seq, timeout);
        let out = f(self.inner.as_mut());
        self.watchdog.disarm();
        out
    }
}

impl Collective for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn communicates(&self) -> bool {
        self.inner.communicates()
    }
    fn device(&self) -> tch::Device {
        self.inner.device()
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError> {
        let timeout = self.timeout;
        self.guarded("all-reduce", timeout, |c| c.all_reduce_sum(t))
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<(), DistError> {
        let timeout = self.timeout;
        self.guarded("broadcast", timeout, |c| c.broadcast(t, root))
    }
    fn barrier(&mut self, timeout: Option<Duration>) -> Result<(), DistError> {
        let timeout = timeout.unwrap_or(self.timeout);
        self.guarded("barrier", timeout, |c| c.barrier(None))
    }
}

/// A thread of its own, so that a rank busy in a long computation or a blocked collective still
/// beats; only a stopped, dead or unreachable process falls silent.
fn start_heartbeat(addr: String, rank: usize) {
    let _ = std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let Ok(client) = Client::connect(&addr, Duration::from_secs(10)) else {
                return;
            };
            while client.beat(rank).is_ok() {
                std::thread::sleep(HEARTBEAT);
            }
        });
}

/// The message of a rank whose operation `seq` did not finish within `timeout`.
pub fn diagnose(
    rank: usize,
    world: usize,
    op: &str,
    seq: u64,
    timeout: Duration,
    progress: Option<Result<Progress, DistError>>,
) -> String {
    let head = format!("rank {rank}: {op} #{seq} did not complete within {timeout:?}");
    match progress {
        None => format!("{head}; a peer rank has died or hangs (no rendezvous store to ask which)"),
        Some(Err(e)) => format!(
            "{head}; rank 0 is unreachable ({e}): it has probably died, taking the rendezvous store with it"
        ),
        Some(Ok(p)) => {
            let behind: Vec<String> = (0..world)
                .filter(|r| *r != rank)
                .filter_map(|r| match p.0.get(&r) {
                    None => Some(format!("rank {r} (never reported)")),
                    Some(q) => {
                        let silent = q.silent_for.is_some_and(|s| s > SILENT);
                        let last = format!("last entered {} #{}", q.op, q.seq);
                        match (silent, q.seq < seq) {
                            (true, _) => Some(format!(
                                "rank {r} (silent for {:.1?}, stopped or dead; {last})",
                                q.silent_for.unwrap_or_default()
                            )),
                            (false, true) => Some(format!("rank {r} ({last})")),
                            (false, false) => None,
                        }
                    }
                })
                .collect();
            if behind.is_empty() {
                format!("{head}; every rank entered it, so the transport itself is stuck")
            } else {
                format!("{head}; waiting for {}: it has died or hangs", behind.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::rendezvous::RankProgress;
    use std::collections::HashMap;

    #[test]
    fn names_the_ranks_that_are_behind() {
        let t = Duration::from_secs(30);
        let at = |seq: u64, op: &str, silent_ms: u64| RankProgress {
            seq,
            op: op.to_string(),
            silent_for: Some(Duration::from_millis(silent_ms)),
        };
        let p = Progress(HashMap::from([
            (0, at(12, "all-reduce", 100)),
            (1, at(11, "broadcast", 100)),
            (2, at(12, "all-reduce", 200)),
            (4, at(12, "all-reduce", 9000)),
        ]));
        let m = diagnose(0, 5, "all-reduce", 12, t, Some(Ok(p)));
        assert!(
            m.starts_with("rank 0: all-reduce #12 did not complete within 30s"),
            "{m}"
        );
        assert!(m.contains("rank 1 (last entered broadcast #11)"), "{m}");
        assert!(
            m.contains("rank 3 (never reported)") && !m.contains("rank 2"),
            "{m}"
        );
        assert!(
            m.contains("rank 4 (silent for 9.0s, stopped or dead; last entered all-reduce #12)"),
            "{m}"
        );

        let gone = DistError::Rendezvous {
            addr: "trial-0:29500".into(),
            reason: "connection refused".into(),
        };
        let m = diagnose(1, 2, "barrier", 3, t, Some(Err(gone)));
        assert!(
            m.contains("rank 0 is unreachable") && m.contains("trial-0:29500"),
            "{m}"
        );
    }
}
