//! Handing freed heap memory back to the system. glibc's allocator keeps the pages of freed
//! memory for reuse; at scale the operator frees far more than it keeps (watch events, list and
//! patch bodies, leaderboard plots), and measured at 10,000 trials two thirds of its resident
//! memory was such free heap (146 MB resident, 57 MB after one `malloc_trim`:
//! docs/results/2026-12-03-cluster-scale.md). Every few seconds the free pages go back.

use std::time::Duration;

/// Returns free heap pages to the system every `every`, for as long as the process runs.
pub async fn trim_every(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, macOS's) return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
