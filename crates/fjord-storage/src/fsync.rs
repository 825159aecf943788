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
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static COUNT: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// The configured artificial delay (zero unless `FJORD_DEBUG_FSYNC_DELAY_MS` is set).
fn delay() -> Duration {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("FJORD_DEBUG_FSYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis)
    })
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
