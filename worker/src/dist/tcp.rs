//! Plain TCP between CPU ranks, for gangs that no `mpirun` starts (an Indexed Job on
//! Kubernetes): every rank connects to rank 0 on `MASTER_PORT + 1`, and rank 0 is the hub.
//! An all-reduce sends each rank's buffer to rank 0, which adds them in rank order and sends
//! the sum back, so every rank gets bit-identical results; a broadcast goes out from rank 0
//! (through it when another rank is the root). Fine for the few CPU ranks of a trial; NCCL is
//! the backend for GPUs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::{Collective, DistError, RendezvousEnv};

pub struct TcpCollective {
    rank: usize,
    size: usize,
    /// Rank 0: the connection to rank r at index r - 1.
    peers: Vec<TcpStream>,
    /// Other ranks: the connection to rank 0.
    hub: Option<TcpStream>,
}

fn err(reason: String) -> DistError {
    DistError::Backend {
        backend: "tcp",
        reason,
    }
}

impl TcpCollective {
    pub fn init(env: &RendezvousEnv, timeout: Duration) -> Result<TcpCollective, DistError> {
        let port = env
            .master_port
            .checked_add(1)
            .ok_or_else(|| err("MASTER_PORT + 1 is not a port".into()))?;
        let deadline = Instant::now() + timeout;
        if env.rank == 0 {
            Self::accept_ranks(env, port, deadline, timeout)
        } else {
            Self::connect_to_rank_zero(env, port, deadline, timeout)
        }
    }

    /// Rank 0: every other rank connects and says which it is.
    fn accept_ranks(
        env: &RendezvousEnv,
        port: u16,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<TcpCollective, DistError> {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| err(format!("rank 0 cannot listen on port {port}: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
        let mut peers: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
        while peers.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
                    let _ = s.set_nodelay(true);
                    let mut id = [0u8; 4];
                    s.read_exact(&mut id)
                        .map_err(|e| err(format!("a rank's greeting: {e}")))?;
                    let r = u32::from_le_bytes(id) as usize;
                    match peers.get_mut(r.wrapping_sub(1)) {
                        Some(slot @ None) => *slot = Some(s),
                        _ => {
                            return Err(err(format!(
                                "a connection claims rank {r}, which is taken or out of range"
                            )))
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<usize> = peers
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.is_none())
                            .map(|(i, _)| i + 1)
                            .collect();
                        return Err(err(format!(
                            "rank(s) {missing:?} did not connect within {timeout:?}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(format!("accept: {e}"))),
            }
        }
        Ok(TcpCollective {
            rank: 0,
            size: env.world_size,
            peers: peers.into_iter().flatten().collect(),
            hub: None,
        })
    }

    /// Rank r > 0: connects to rank 0 (retrying until the deadline) and says which rank it is.
    fn connect_to_rank_zero(
        env: &RendezvousEnv,
        port: u16,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<TcpCollective, DistError> {
        let addr = format!("{}:{port}", env.master_addr);
        let stream = loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
                .and_then(|a| {
                    TcpStream::connect_timeout(&a, Duration::from_secs(2)).map_err(|e| e.to_string())
                });
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(err(format!(
                        "rank 0 at {addr} did not accept within {timeout:?}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = stream.set_nodelay(true);
        let mut s = stream;
        s.write_all(&(env.rank as u32).to_le_bytes())
            .map_err(|e| err(format!("greeting rank 0: {e}")))?;
        Ok(TcpCollective {
            rank: env.rank,
            size: env.world_size,
            peers: Vec::new(),
            hub: Some(s),
        })
    }
}

fn lost(rank: usize, what: &str, e: std::io::Error) -> DistError {
    err(format!("{what} rank {rank}: {e} (it has probably died)"))
}

/// Adds little-endian values of `kind` in `src` to `dst`.
fn add_into(dst: &mut [u8], src: &[u8], kind: Kind) {
    match kind {
        Kind::Float => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                let v = f32::from_le_bytes(d.try_into().unwrap()) + f32::from_le_bytes(s.try_into().unwrap());
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                let v = f64::from_le_bytes(d.try_into().unwrap()) + f64::from_le_bytes(s.try_into().unwrap());
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "tcp"
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<(), DistError> {
        let kind = t.kind();
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(DistError::Tensor {
                op: "all-reduce",
                what: format!("{kind:?}"),
                expected: "float or double",
            });
        }
        let (ptr, len) = super::cpu_memory("all-reduce", t)?;
        // SAFETY: the tensor's `len` bytes, alive and not otherwise accessed meanwhile.
        let mine = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        if let Some(hub) = self.hub.as_mut() {
            hub.write_all(mine).map_err(|e| lost(0, "sending to", e))?;
            hub.read_exact(mine).map_err(|e| lost(0, "receiving from", e))?;
            return Ok(());
        }
        let mut buf = vec![0u8; len];
        for (i, p) in self.peers.iter_mut().enumerate() {
            p.read_exact(&mut buf)
                .map_err(|e| lost(i + 1, "receiving from", e))?;
            add_into(mine, &buf, kind);
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            p.write_all(mine).map_err(|e| lost(i + 1, "sending to", e))?;
        }
        Ok(())
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<(), DistError> {
        let (ptr, len) = super::cpu_memory("broadcast", t)?;
        // SAFETY: as above.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        if let Some(hub) = self.hub.as_mut() {
            if self.rank == root {
                hub.write_all(data).map_err(|e| lost(0, "sending to", e))?;
            }
            if self.rank != root {
                hub.read_exact(data).map_err(|e| lost(0, "receiving from", e))?;
            }
            return Ok(());
        }
        if root != 0 {
            let from = self
                .peers
                .get_mut(root - 1)
                .ok_or_else(|| err(format!("no rank {root}")))?;
            from.read_exact(data)
                .map_err(|e| lost(root, "receiving from", e))?;
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            if i + 1 != root {
                p.write_all(data).map_err(|e| lost(i + 1, "sending to", e))?;
            }
        }
        Ok(())
    }
    fn barrier(&mut self, _: Option<Duration>) -> Result<(), DistError> {
        self.all_reduce_sum(&Tensor::zeros([1], (Kind::Float, Device::Cpu)))
    }
}

/// A `MASTER_PORT` for tests on one machine: it and the next port (the collectives') are free
/// now, and both lie below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection of a test running beside it can take them before the ranks bind. An ephemeral
/// port picked by binding port 0 and releasing it can be, and was: "Address already in use".
#[doc(hidden)]
pub fn free_master_port_for_tests() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Tests of one process calling at once would find the same free pair: each call starts
    // 64 ports further on.
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let free = |port: u16| TcpListener::bind(("0.0.0.0", port)).is_ok();
    // Start where the process id says, so that test processes running at once try apart.
    let offset = CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(64) % 6_000;
    let start = 20_000 + ((std::process::id() % 6_000) as u16 * 2 + offset) % 12_000;
    (0..6_000u16)
        .map(|i| 20_000 + (start - 20_000 + 2 * i) % 12_000)
        .find(|&p| free(p) && free(p + 1))
        .expect("a free pair of ports below 32000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_ranks_sum_and_broadcast_identically() {
        let port = free_master_port_for_tests();
        let run = |rank: usize| {
            std::thread::spawn(move || {
                let env = RendezvousEnv {
                    master_addr: "127.0.0.1".into(),
                    master_port: port,
                    world_size: 3,
                    rank,
                };
                let mut c = TcpCollective::init(&env, Duration::from_secs(10)).unwrap();
                let t = Tensor::from_slice(&[rank as f32 + 1.0, 10.0 * rank as f32]);
                c.all_reduce_sum(&t).unwrap();
                let b = Tensor::from_slice(&[rank as f64; 3]);
                c.broadcast(&b, 2).unwrap();
                c.barrier(None).unwrap();
                (
                    Vec::<f32>::try_from(&t).unwrap(),
                    Vec::<f64>::try_from(&b).unwrap(),
                )
            })
        };
        let handles: Vec<_> = (0..3).map(run).collect();
        for h in handles {
            let (sum, b) = h.join().unwrap();
            assert_eq!(sum, vec![6.0, 30.0]);
            assert_eq!(b, vec![2.0; 3]);
        }
    }
}
