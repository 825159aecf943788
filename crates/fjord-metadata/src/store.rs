//! The durable metadata log: one JSON record per line, fsynced before a change is acknowledged.
//!
//! A crash can leave a torn last line; replay stops there and truncates it, so the log always
//! holds exactly the records that were acknowledged.
//!
//! Writes run on the log's own thread (`metadata-log-writer`, a [`DiskThread`]): the caller
//! queues a batch with [`MetadataLog::queue`] (under its own lock, which fixes the order) and
//! awaits [`Appended::durable`] after releasing that lock; batches queued back to back share
//! one write and one fsync (group commit). [`MetadataLog::settle`] then hands out the batches
//! that are durable, in log order, and applies them to [`MetadataLog::image`].
//!
//! A failed write cuts the file back to its last durable length, and every batch queued after
//! it fails too (they were decided on top of the failed one) until `settle` has seen the
//! failure and told the caller to rebuild its state from the durable image.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use thiserror::Error;

use crate::persist::{self, DiskState, DiskThread, FileKind};
use crate::{ClusterImage, MetadataRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata log {path}: cannot encode record: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The file, owned by the writer thread.
struct LogFile {
    file: File,
    /// Bytes known durable: where a failed write is cut back to.
    durable_len: u64,
    /// A write failed; later appends fail until [`LogFile::recover`].
    failed: bool,
    /// Cutting a failed write back failed too: the file can no longer be trusted.
    poisoned: bool,
}

impl DiskState for LogFile {
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other(
                "an earlier metadata log write failed; later ones are refused until the controller is rebuilt",
            ));
        }
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| persist::sync_data(&self.file, FileKind::MetadataLog));
        match written {
            Ok(()) => self.durable_len += bytes.len() as u64,
            Err(_) => {
                self.failed = true;
                let cut = self
                    .file
                    .set_len(self.durable_len)
                    .and_then(|()| persist::sync_data(&self.file, FileKind::MetadataLog));
                if let Err(e) = cut {
                    tracing::error!(error = %e, durable_len = self.durable_len,
                        "cannot cut a failed metadata log write back; refusing every later write");
                    self.poisoned = true;
                }
            }
        }
        written
    }
}

impl LogFile {
    fn recover(&mut self) {
        self.failed = self.poisoned;
    }
}

const QUEUED: u8 = 0;
const DURABLE: u8 = 1;
const FAILED: u8 = 2;

/// A batch queued and not yet settled.
struct Pending {
    records: Vec<MetadataRecord>,
    status: Arc<AtomicU8>,
}

/// A queued batch: resolves once its records are durable (or their write failed).
pub struct Appended {
    path: PathBuf,
    rx: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
    blocking_rx: std::sync::mpsc::Receiver<()>,
    status: Arc<AtomicU8>,
}

impl Appended {
    fn result(path: PathBuf, status: &AtomicU8) -> Result<(), StoreError> {
        match status.load(Ordering::Acquire) {
            DURABLE => Ok(()),
            _ => Err(StoreError::Io {
                path,
                source: std::io::Error::other("the metadata log write failed"),
            }),
        }
    }

    /// Wait (without blocking the async worker) until the batch is durable.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(StoreError::Io {
                path: self.path,
                source,
            }),
            Err(_) => Appended::result(self.path, &self.status),
        }
    }

    /// Wait on this thread until the batch is durable (start-up code and tests only).
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        let _ = self.blocking_rx.recv();
        Appended::result(self.path, &self.status)
    }
}

/// What [`MetadataLog::settle`] hands out.
#[derive(Debug, Default)]
pub struct Settled {
    /// Records now durable, in log order, not handed out before (already in the image).
    pub records: Vec<MetadataRecord>,
    /// A write failed: the batches queued since the last durable one are gone, and whoever
    /// decided them must rebuild its state from [`MetadataLog::image`].
    pub failed: bool,
}

/// The metadata log file and the image of its durable records.
pub struct MetadataLog {
    path: PathBuf,
    image: ClusterImage,
    records: u64,
    pending: VecDeque<Pending>,
    disk: DiskThread<LogFile>,
}

impl MetadataLog {
    /// Open (or create) the log at `dir/metadata.log` and replay it into an image (start-up
    /// code: reads and may fsync on the calling thread).
    pub fn open(dir: &Path) -> Result<MetadataLog, StoreError> {
        let path = dir.join("metadata.log");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut image = ClusterImage::default();
        let mut good_len = 0u64;
        let mut records = 0;
        let mut reader = BufReader::new(file.try_clone().map_err(io)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                break; // torn write at the tail
            }
            match serde_json::from_slice::<MetadataRecord>(&line[..n - 1]) {
                Ok(rec) => {
                    image.apply(&rec);
                    records += 1;
                    good_len += n as u64;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), offset = good_len, error = %e,
                        "metadata log has an unreadable record; truncating there");
                    crate::note_corrupt_data();
                    break;
                }
            }
        }
        let len = file.metadata().map_err(io)?.len();
        if len != good_len {
            tracing::warn!(path = %path.display(), dropped_bytes = len - good_len,
                "truncating torn tail of the metadata log");
            file.set_len(good_len).map_err(io)?;
            persist::sync_all(&file, FileKind::MetadataLog).map_err(io)?;
        }
        let disk = DiskThread::spawn(
            "metadata-log-writer",
            LogFile {
                file,
                durable_len: good_len,
                failed: false,
                poisoned: false,
            },
        )
        .map_err(io)?;
        Ok(MetadataLog {
            path,
            image,
            records,
            pending: VecDeque::new(),
            disk,
        })
    }

    /// Queue `records` for the log, after every batch queued before (call under the lock that
    /// orders the caller's decisions; await the result after releasing it). Nothing blocks.
    pub fn queue(&mut self, records: Vec<MetadataRecord>) -> Result<Appended, StoreError> {
        let mut buf = Vec::new();
        for record in &records {
            serde_json::to_writer(&mut buf, record).map_err(|source| StoreError::Encode {
                path: self.path.clone(),
                source,
            })?;
            buf.push(b'\n');
        }
        let status = Arc::new(AtomicU8::new(QUEUED));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (blocking_tx, blocking_rx) = std::sync::mpsc::sync_channel(1);
        let done = {
            let status = status.clone();
            Box::new(move |r: std::io::Result<()>| {
                status.store(if r.is_ok() { DURABLE } else { FAILED }, Ordering::Release);
                let _ = tx.send(r);
                let _ = blocking_tx.send(());
            })
        };
        self.disk
            .append(buf, done)
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.pending.push_back(Pending {
            records,
            status: status.clone(),
        });
        Ok(Appended {
            path: self.path.clone(),
            rx,
            blocking_rx,
            status,
        })
    }

    /// Hand out the batches that are durable, in log order, applying them to the image; stop at
    /// the first still in flight. On a failed batch, drop it and everything queued after it and
    /// let the writer accept batches again (see [`Settled::failed`]).
    pub fn settle(&mut self) -> Settled {
        let mut out = Settled::default();
        while let Some(front) = self.pending.front() {
            match front.status.load(Ordering::Acquire) {
                DURABLE => {
                    let batch = self.pending.pop_front().expect("front");
                    for record in &batch.records {
                        self.image.apply(record);
                    }
                    self.records += batch.records.len() as u64;
                    out.records.extend(batch.records);
                }
                FAILED => {
                    let dropped: usize = self.pending.drain(..).map(|p| p.records.len()).sum();
                    tracing::error!(path = %self.path.display(), dropped_records = dropped,
                        durable_records = self.records,
                        "metadata log write failed; dropping the batches queued since the last durable one");
                    self.disk.queue(LogFile::recover);
                    out.failed = true;
                    break;
                }
                _ => break,
            }
        }
        out
    }

    /// Persist `records` (one write, one fsync), waiting on this thread, and settle (start-up
    /// code and tests only). Batches queued before are written first, so they settle too.
    pub fn append_all(&mut self, records: &[MetadataRecord]) -> Result<Settled, StoreError> {
        let appended = self.queue(records.to_vec())?;
        let written = appended.wait_blocking();
        let settled = self.settle();
        written.map(|()| settled)
    }

    /// [`append_all`](Self::append_all) of one record.
    pub fn append(&mut self, record: MetadataRecord) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(&record)).map(|_| ())
    }

    /// The image of the durable records settled so far.
    pub fn image(&self) -> &ClusterImage {
        &self.image
    }

    /// Records replayed or settled since open (the next metadata offset).
    pub fn record_count(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let mut log = MetadataLog::open(dir.path()).unwrap();
            log.append(MetadataRecord::Topic {
                name: "t".into(),
                id,
                partitions: 3,
                configs: BTreeMap::new(),
            })
            .unwrap();
            log.append(MetadataRecord::ProducerIds { next: 5000 })
                .unwrap();
        }
        // Simulate a crash in the middle of writing a third record.
        let path = dir.path().join("metadata.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"type":"RemoveTop"#).unwrap();
        drop(f);
        let mut log = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(log.image().topic("t").unwrap().partitions, 3);
        assert_eq!(log.image().next_producer_id(), 5000);
        assert_eq!(log.record_count(), 2);
        log.append(MetadataRecord::RemoveTopic { id }).unwrap();
        let log = MetadataLog::open(dir.path()).unwrap();
        assert!(log.image().topic("t").is_none());
        assert_eq!(log.record_count(), 3);
    }

    fn producer_ids(next: i64) -> Vec<MetadataRecord> {
        vec![MetadataRecord::ProducerIds { next }]
    }

    /// Many batches queued at once on a slow disk: the worker never waits for the disk, the
    /// batches share fsyncs, each is acknowledged once durable, and they settle in order.
    #[test]
    fn queued_batches_group_commit_off_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetadataLog::open(dir.path()).unwrap();
        let before = crate::persist::stats();
        let worst = crate::persist::tests::worst_tick_lateness(|| async {
            let appended: Vec<Appended> = (1..=20)
                .map(|i| log.queue(producer_ids(i)).unwrap())
                .collect();
            for a in appended {
                a.durable().await.unwrap();
            }
        });
        assert!(
            worst < std::time::Duration::from_millis(50),
            "a worker thread waited {worst:?} for the metadata log"
        );
        let after = crate::persist::stats();
        let commits = |s: &crate::persist::Stats| *s.group_commits_cumulative.last().unwrap();
        assert!(
            commits(&after) - commits(&before) < 20,
            "20 batches queued at once took one fsync each"
        );
        let settled = log.settle();
        assert!(!settled.failed);
        let nexts: Vec<i64> = settled
            .records
            .iter()
            .map(|r| match r {
                MetadataRecord::ProducerIds { next } => *next,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(nexts, (1..=20).collect::<Vec<_>>());
        assert_eq!(log.record_count(), 20);
        assert_eq!(log.image().next_producer_id(), 20);
        drop(log);
        let log = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(log.record_count(), 20);
    }

    /// The harness catches a worker that fsyncs (so the test above can fail).
    #[test]
    fn a_blocking_fsync_on_the_worker_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let worst = crate::persist::tests::worst_tick_lateness(|| async {
            fjord_storage::fsync::sync_data(&file).unwrap();
        });
        assert!(worst >= std::time::Duration::from_millis(150), "{worst:?}");
    }
}
