//! Every fsync Fjord issues goes through here, for two reasons:
//!
//! - **Measured**: the count and total time are kept in process-wide counters
//!   ([`stats`]) that the broker exports as `fjord_fsync_total` / `fjord_fsync_seconds_total`,
//!   so an operator sees a slow disk before the clients do.
//! - **A slow disk on demand**: with `FJORD_DEBUG_FSYNC_DELAY_MS` set in the environment, each
//!   fsync sleeps that long first. Tests use it to prove that no async worker thread ever
//!   waits for the disk (a worker that fsyncs would stall every connection it serves); the
//!   fault harness uses it as its "slow disk". Read once, at the first fsync.
//!
//! Callers must never run these on an async worker thread: they are for the storage I/O
//! threads, `spawn_blocking` and start-up/shutdown code.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static COUNT: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// Artificial delay in milliseconds; `u64::MAX` until first read from the environment.
static DELAY_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// The configured artificial delay (zero unless `FJORD_DEBUG_FSYNC_DELAY_MS` is set or a test
/// called [`set_debug_delay`]).
fn delay() -> Duration {
    let mut ms = DELAY_MS.load(Ordering::Relaxed);
    if ms == u64::MAX {
        ms = std::env::var("FJORD_DEBUG_FSYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(u64::MAX - 1);
        // A concurrent set_debug_delay wins.
        let _ = DELAY_MS.compare_exchange(u64::MAX, ms, Ordering::Relaxed, Ordering::Relaxed);
        ms = DELAY_MS.load(Ordering::Relaxed);
    }
    Duration::from_millis(ms)
}

/// Make every later fsync in this process sleep `d` first (tests of slow disks in one
/// process; across processes use the environment variable).
pub fn set_debug_delay(d: Duration) {
    DELAY_MS.store((d.as_millis() as u64).min(u64::MAX - 1), Ordering::Relaxed);
}

fn timed(f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    let start = Instant::now();
    let d = delay();
    if !d.is_zero() {
        std::thread::sleep(d);
    }
    let r = f();
    COUNT.fetch_add(1, Ordering::Relaxed);
    NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// `fdatasync`: the file's data and the metadata needed to read it back.
pub fn sync_data(file: &File) -> std::io::Result<()> {
    timed(|| file.sync_data())
}

/// `fsync`: data and all metadata (use for directories and newly created files).
pub fn sync_all(file: &File) -> std::io::Result<()> {
    timed(|| file.sync_all())
}

/// fsync a directory, so entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    sync_all(&File::open(dir)?)
}

/// (fsyncs so far, seconds spent in them) in this process.
pub fn stats() -> (u64, f64) {
    (
        COUNT.load(Ordering::Relaxed),
        NANOS.load(Ordering::Relaxed) as f64 / 1e9,
    )
}
