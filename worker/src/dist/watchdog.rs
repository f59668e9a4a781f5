//! A timer thread armed around each blocking collective: MPI and NCCL calls cannot be
//! cancelled, so when one outlives its timeout the watchdog reports and ends the process (the
//! launcher, mpirun or the operator, then sees a failed rank instead of a hang).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Expired = Box<dyn Fn(&str, u64, Duration) + Send + Sync>;

struct Armed {
    deadline: Instant,
    timeout: Duration,
    seq: u64,
    op: String,
}

struct Shared {
    armed: Mutex<Option<Armed>>,
    changed: Condvar,
}

pub struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Starts the timer thread; `on_expiry(op, seq, timeout)` runs on it when an armed
    /// operation is not disarmed in time (in production it exits the process).
    pub fn start(on_expiry: Expired) -> Watchdog {
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("collective-watchdog".into())
            .spawn(move || loop {
                let mut armed = s.armed.lock().unwrap();
                let fired = match &*armed {
                    None => {
                        drop(s.changed.wait(armed).unwrap());
                        continue;
                    }
                    Some(a) if Instant::now() >= a.deadline => (a.op.clone(), a.seq, a.timeout),
                    Some(a) => {
                        let left = a.deadline.saturating_duration_since(Instant::now());
                        armed = s.changed.wait_timeout(armed, left).unwrap().0;
                        drop(armed);
                        continue;
                    }
                };
                *armed = None;
                drop(armed);
                on_expiry(&fired.0, fired.1, fired.2);
            })
            .expect("spawn the watchdog thread");
        Watchdog { shared }
    }

    pub fn arm(&self, op: &str, seq: u64, timeout: Duration) {
        *self.shared.armed.lock().unwrap() = Some(Armed {
            deadline: Instant::now() + timeout,
            timeout,
            seq,
            op: op.to_string(),
        });
        self.shared.changed.notify_all();
    }

    pub fn disarm(&self) {
        *self.shared.armed.lock().unwrap() = None;
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_only_for_operations_that_overrun() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let dog = Watchdog::start(Box::new(move |op, seq, t| {
            tx.lock().unwrap().send((op.to_string(), seq, t)).unwrap();
        }));
        dog.arm("all-reduce", 1, Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(20));
        dog.disarm();
        dog.arm("barrier", 2, Duration::from_millis(50));
        let (op, seq, t) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((op.as_str(), seq, t), ("barrier", 2, Duration::from_millis(50)));
        assert!(
            rx.recv_timeout(Duration::from_millis(400)).is_err(),
            "the disarmed op never fires"
        );
    }
}
