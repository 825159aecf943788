//! Dedicated disk I/O threads: where appends, fsyncs, segment rolls, truncations and retention
//! run, so no async worker thread ever waits for the disk.
//!
//! A job carries a key (the broker uses the partition); all jobs of one key run on the same
//! thread in submission order, so a partition's writes never race each other and a produce
//! request appended before the next one on a connection is written before it. Different keys
//! spread over the threads. The caller awaits the job's result over a oneshot channel.
//!
//! Threads are plain OS threads (`num.io.threads`, Kafka's name for its request-handler
//! pool); each drains its queue in order. A job that panics is contained: its caller gets
//! [`IoGone`] and the thread goes on with the next job.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

type Job = Box<dyn FnOnce() + Send>;

/// The I/O thread that should have run a job is gone (shutdown) or the job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the storage I/O thread did not complete the operation")]
pub struct IoGone;

/// Counters of the pool, exported by the broker as metrics.
#[derive(Default)]
pub struct IoStats {
    /// Jobs queued and not yet finished, over all threads.
    pub queued: AtomicI64,
    /// Jobs finished.
    pub jobs: AtomicU64,
    /// Nanoseconds spent running jobs (all threads).
    pub busy_nanos: AtomicU64,
    /// Jobs that panicked.
    pub panics: AtomicU64,
}

/// A pool of I/O threads, each with its own queue.
pub struct IoThreads {
    queues: Vec<mpsc::Sender<Job>>,
    stats: Arc<IoStats>,
}

impl IoThreads {
    /// Start `threads` (at least one) threads named `<name>-<i>`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<IoThreads> {
        let stats = Arc::new(IoStats::default());
        let mut queues = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let start = Instant::now();
                        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            stats.panics.fetch_add(1, Ordering::Relaxed);
                        }
                        stats
                            .busy_nanos
                            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        stats.jobs.fetch_add(1, Ordering::Relaxed);
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                })?;
            queues.push(tx);
        }
        Ok(IoThreads { queues, stats })
    }

    pub fn threads(&self) -> usize {
        self.queues.len()
    }

    pub fn stats(&self) -> &IoStats {
        &self.stats
    }

    fn queue(&self, key: u64) -> &mpsc::Sender<Job> {
        // Fibonacci hashing spreads sequential keys (partition indexes) over the threads.
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.queues[(h >> 32) as usize % self.queues.len()]
    }

    /// Run `f` on the thread of `key`, without waiting for it. False if the pool is gone.
    pub fn execute(&self, key: u64, f: impl FnOnce() + Send + 'static) -> bool {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.queue(key).send(Box::new(f)).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Run `f` on the thread of `key`; the future resolves with its result. The job is queued
    /// when this is called, not when the future is first polled, so jobs keep the order of the
    /// calls even if their futures are awaited later.
    pub fn run<T: Send + 'static>(
        &self,
        key: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, IoGone>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.execute(key, move || {
            let _ = tx.send(f());
        });
        async move { rx.await.map_err(|_| IoGone) }
    }

    /// Run `f` on the thread of `key` and block the calling (non-async) thread until it is
    /// done. For start-up, shutdown and blocking-pool code that must order itself after the
    /// queued writes of a partition.
    pub fn run_blocking<T: Send + 'static>(
        &self,
        key: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IoGone> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.execute(key, move || {
            let _ = tx.send(f());
        });
        rx.recv().map_err(|_| IoGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_keeps_its_order_and_panics_are_contained() {
        let io = IoThreads::new(3, "test-io").unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut futs = Vec::new();
        for i in 0..100 {
            let seen = seen.clone();
            futs.push(io.run(7, move || seen.lock().push(i)));
        }
        assert_eq!(io.run_blocking(7, || panic!("boom")), Err(IoGone));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for f in futs {
                f.await.unwrap();
            }
        });
        assert_eq!(*seen.lock(), (0..100).collect::<Vec<_>>());
        assert_eq!(io.run_blocking(7, || 5), Ok(5));
        assert_eq!(io.stats().panics.load(Ordering::Relaxed), 1);
    }
}
