//! Disk work of the metadata storage, kept off the async worker threads.
//!
//! Each durable file set (the Raft log store, the state machine's snapshot, the single node's
//! `metadata.log`) owns one [`DiskThread`]: a dedicated OS thread that runs that store's disk
//! jobs one at a time, in the order they were queued. Appends queued back to back are
//! *group-committed*: one write and one fsync for all of them, then each caller is told, in
//! order. Async callers queue a job (never blocking: the queue is unbounded, and bounded in
//! practice by the callers, who wait for their answers) and await the answer; no lock is held
//! while the thread writes or fsyncs.
//!
//! Every metadata fsync goes through [`sync_data`] / [`sync_all`] / [`sync_dir`] here, which
//! call [`fjord_storage::fsync`] (slow-disk simulation, process-wide fsync counters) and also
//! count per metadata file kind; [`stats`] is what the broker exports.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Which metadata file an fsync was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The Raft log entries (`raft-log.jsonl`).
    RaftLog,
    /// The Raft vote / committed / purged ids (`raft-state.json`).
    RaftState,
    /// The state machine's snapshot (`snapshot.json`).
    Snapshot,
    /// The single node's `metadata.log`.
    MetadataLog,
}

impl FileKind {
    pub const ALL: [FileKind; 4] = [
        FileKind::RaftLog,
        FileKind::RaftState,
        FileKind::Snapshot,
        FileKind::MetadataLog,
    ];

    /// The label the broker exports.
    pub fn label(self) -> &'static str {
        match self {
            FileKind::RaftLog => "raft_log",
            FileKind::RaftState => "raft_state",
            FileKind::Snapshot => "snapshot",
            FileKind::MetadataLog => "metadata_log",
        }
    }
}

/// Upper bounds of the group-commit size buckets (appends per fsync); the last bucket is
/// everything above.
pub const GROUP_COMMIT_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

struct Counters {
    fsyncs: [AtomicU64; 4],
    fsync_nanos: [AtomicU64; 4],
    /// Per bucket of [`GROUP_COMMIT_BUCKETS`] (not cumulative), plus one for larger.
    group_commits: [AtomicU64; GROUP_COMMIT_BUCKETS.len() + 1],
    group_commit_appends: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static COUNTERS: Counters = Counters {
    fsyncs: [ZERO; 4],
    fsync_nanos: [ZERO; 4],
    group_commits: [ZERO; GROUP_COMMIT_BUCKETS.len() + 1],
    group_commit_appends: ZERO,
};

/// What this process's metadata storage has done on disk so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Per [`FileKind::ALL`]: (fsyncs, seconds spent in them).
    pub fsyncs: Vec<(FileKind, u64, f64)>,
    /// Group commits per size bucket, cumulative as Prometheus wants them: the count of commits
    /// of at most `GROUP_COMMIT_BUCKETS[i]` appends; the last is all commits.
    pub group_commits_cumulative: Vec<u64>,
    /// Appends made durable by group commits (the histogram's sum).
    pub group_commit_appends: u64,
}

/// The counters so far.
pub fn stats() -> Stats {
    let c = &COUNTERS;
    let fsyncs = FileKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k,
                c.fsyncs[i].load(Ordering::Relaxed),
                c.fsync_nanos[i].load(Ordering::Relaxed) as f64 / 1e9,
            )
        })
        .collect();
    let mut total = 0;
    let group_commits_cumulative = c
        .group_commits
        .iter()
        .map(|n| {
            total += n.load(Ordering::Relaxed);
            total
        })
        .collect();
    Stats {
        fsyncs,
        group_commits_cumulative,
        group_commit_appends: c.group_commit_appends.load(Ordering::Relaxed),
    }
}

fn counted(kind: FileKind, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let start = Instant::now();
    let r = f();
    let i = kind as usize;
    COUNTERS.fsyncs[i].fetch_add(1, Ordering::Relaxed);
    COUNTERS.fsync_nanos[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

fn note_group_commit(appends: usize) {
    let n = appends as u64;
    let bucket = GROUP_COMMIT_BUCKETS
        .iter()
        .position(|b| n <= *b)
        .unwrap_or(GROUP_COMMIT_BUCKETS.len());
    COUNTERS.group_commits[bucket].fetch_add(1, Ordering::Relaxed);
    COUNTERS
        .group_commit_appends
        .fetch_add(n, Ordering::Relaxed);
}

/// `fdatasync` of a metadata file (on a [`DiskThread`] or at start-up only).
pub(crate) fn sync_data(file: &File, kind: FileKind) -> io::Result<()> {
    counted(kind, || fjord_storage::fsync::sync_data(file))
}

/// `fsync` of a metadata file (on a [`DiskThread`] or at start-up only).
pub(crate) fn sync_all(file: &File, kind: FileKind) -> io::Result<()> {
    counted(kind, || fjord_storage::fsync::sync_all(file))
}

/// fsync of a metadata directory after a rename or create in it.
pub(crate) fn sync_dir(dir: &Path, kind: FileKind) -> io::Result<()> {
    counted(kind, || fjord_storage::fsync::sync_dir(dir))
}

/// Replace `dir/name` atomically with `bytes`: write a temporary file, fsync it, rename it over
/// the old one, fsync the directory.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8], kind: FileKind) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    sync_all(&f, kind)?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir, kind)
}

/// What a [`DiskThread`] owns: its files.
pub(crate) trait DiskState: Send + 'static {
    /// Write `bytes` at the end of the log and make them durable (one fsync). Called with the
    /// bytes of every append queued back to back (a group commit).
    fn append_durably(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// Told once an append is durable, or failed.
pub(crate) type AppendDone = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Job<S> {
    Append { bytes: Vec<u8>, done: AppendDone },
    Run(Box<dyn FnOnce(&mut S) + Send>),
}

/// Stop adding appends to a group commit past this many bytes (a bound on one write).
const MAX_GROUP_BYTES: usize = 8 << 20;

/// A dedicated thread running one store's disk jobs in order (see the module docs). Dropping it
/// lets the thread finish what is queued and waits for it, so that a store reopened in the same
/// process never races its predecessor's writes.
pub(crate) struct DiskThread<S> {
    tx: Option<mpsc::Sender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
}

impl<S> std::fmt::Debug for DiskThread<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskThread").finish_non_exhaustive()
    }
}

fn gone() -> io::Error {
    io::Error::other("the metadata disk thread has stopped")
}

/// The same error for every append of a failed group commit.
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl<S: DiskState> DiskThread<S> {
    /// Start the thread `name` owning `state`.
    pub(crate) fn spawn(name: &str, mut state: S) -> io::Result<DiskThread<S>> {
        let (tx, rx) = mpsc::channel::<Job<S>>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut next = None;
                loop {
                    let job = match next.take() {
                        Some(job) => job,
                        None => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                    };
                    match job {
                        Job::Run(f) => f(&mut state),
                        Job::Append { mut bytes, done } => {
                            let mut dones = vec![done];
                            while bytes.len() < MAX_GROUP_BYTES {
                                match rx.try_recv() {
                                    Ok(Job::Append { bytes: more, done }) => {
                                        bytes.extend_from_slice(&more);
                                        dones.push(done);
                                    }
                                    Ok(other) => {
                                        next = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let result = state.append_durably(&bytes);
                            note_group_commit(dones.len());
                            for done in dones {
                                done(result.as_ref().map(|_| ()).map_err(copy_error));
                            }
                        }
                    }
                }
            })?;
        Ok(DiskThread {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job<S>) -> io::Result<()> {
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())
    }

    /// Queue `bytes` for the log; `done` runs on the thread once they are durable (or failed).
    /// Queued in call order, so callers that must keep an order queue under their own lock.
    pub(crate) fn append(&self, bytes: Vec<u8>, done: AppendDone) -> io::Result<()> {
        self.send(Job::Append { bytes, done })
    }

    /// Queue `f` now, in call order with appends (callers that must keep an order queue under
    /// their own lock and await after releasing it), and return its result once the thread has
    /// run it after everything queued before; awaiting never blocks the async worker.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> io::Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = io::Result<T>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.send(Job::Run(Box::new(move |s| {
            let _ = tx.send(f(s));
        })));
        async move {
            queued?;
            rx.await.map_err(|_| gone())?
        }
    }

    /// Queue `f` after everything queued before, without waiting for it.
    pub(crate) fn queue(&self, f: impl FnOnce(&mut S) + Send + 'static) {
        if self.send(Job::Run(Box::new(f))).is_err() {
            tracing::error!("a metadata disk thread has stopped; a job was dropped");
        }
    }
}

impl<S> Drop for DiskThread<S> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a metadata disk thread panicked");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    /// Serializes the tests that change the process-wide fsync delay.
    pub(crate) static SLOW_DISK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Run `work` on a current-thread runtime next to a ticker that wakes every 5 ms, with every
    /// fsync slowed to 200 ms; return the ticker's worst lateness beyond that of a reference
    /// ticker on a plain thread over the same time (what a loaded machine adds to any thread's
    /// wake-ups). A ticker late by about an fsync shows that `work` blocked the only worker.
    pub(crate) fn worst_tick_lateness<F>(work: impl FnOnce() -> F) -> Duration
    where
        F: std::future::Future<Output = ()>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _slow = SLOW_DISK.lock().await;
            fjord_storage::fsync::set_debug_delay(Duration::from_millis(200));
            let worst = Arc::new(std::sync::Mutex::new(Duration::ZERO));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ticker = tokio::spawn({
                let worst = worst.clone();
                let stop = stop.clone();
                async move {
                    let period = Duration::from_millis(5);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let start = std::time::Instant::now();
                        tokio::time::sleep(period).await;
                        let late = start.elapsed().saturating_sub(period);
                        let mut w = worst.lock().unwrap();
                        *w = (*w).max(late);
                    }
                }
            });
            let reference = std::thread::spawn({
                let stop = stop.clone();
                move || {
                    let period = Duration::from_millis(5);
                    let mut worst = Duration::ZERO;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let start = std::time::Instant::now();
                        std::thread::sleep(period);
                        worst = worst.max(start.elapsed().saturating_sub(period));
                    }
                    worst
                }
            });
            // Let the ticker start before the work does.
            tokio::task::yield_now().await;
            work().await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            ticker.await.unwrap();
            let noise = reference.join().unwrap();
            fjord_storage::fsync::set_debug_delay(Duration::ZERO);
            let w = *worst.lock().unwrap();
            w.saturating_sub(noise)
        })
    }
}
