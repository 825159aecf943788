//! The Raft log on disk: entries as JSON lines (`raft-log.jsonl`) and the vote, committed and
//! last purged log ids in `raft-state.json` (replaced atomically).
//!
//! Entries are also kept in memory: the metadata log is small compared to partition data and
//! snapshots purge it. Truncation and purge rewrite the file (tmp + rename).
//!
//! All disk work runs on the store's own thread (`raft-log-writer`, a [`DiskThread`]), never on
//! an async worker: `append` puts the entries in memory (readable at once, as openraft wants),
//! queues their bytes and returns; the thread group-commits the appends queued back to back
//! (one write, one fsync) and then calls each append's [`LogFlushed`] callback in order.
//! Votes, committed ids, truncation and purge are queued behind the appends and awaited. The
//! in-memory lock is never held while the thread writes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{RaftNodeId, TypeConfig};
use crate::persist::{self, AppendDone, DiskState, DiskThread, FileKind};

const LOG_FILE: &str = "raft-log.jsonl";
const STATE_FILE: &str = "raft-state.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct HardState {
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<LogId<RaftNodeId>>,
    last_purged: Option<LogId<RaftNodeId>>,
}

/// What readers and openraft see, in memory.
#[derive(Debug)]
struct Inner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// Each entry's size in the file (its JSON line), by index: what the snapshot trigger by
    /// bytes counts ([`FileLogStore::bytes_after`]).
    sizes: BTreeMap<u64, u64>,
    hard: HardState,
}

/// The files, owned by the writer thread.
struct LogFiles {
    dir: PathBuf,
    file: File,
}

impl DiskState for LogFiles {
    fn append_durably(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        persist::sync_data(&self.file, FileKind::RaftLog)
    }
}

impl LogFiles {
    fn save_hard(&self, hard: &HardState) -> io::Result<()> {
        let bytes = serde_json::to_vec(hard).map_err(io::Error::other)?;
        persist::replace_file(&self.dir, STATE_FILE, &bytes, FileKind::RaftState)
    }

    /// Rewrite the log file with `entries`.
    fn rewrite(&mut self, entries: &[Entry<TypeConfig>]) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        persist::replace_file(&self.dir, LOG_FILE, &buf, FileKind::RaftLog)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    disk: DiskThread<LogFiles>,
}

/// The Raft log store; clones share the same log (one is the reader openraft asks for).
#[derive(Debug, Clone)]
pub struct FileLogStore {
    shared: Arc<Shared>,
}

impl FileLogStore {
    /// Open (or create) the log in `dir`, dropping a torn last line.
    ///
    /// Reading back is defensive: an unreadable entry (bad JSON or UTF-8, or an index that does
    /// not follow the previous one) truncates the log there, and a committed index past what
    /// is left is lowered to it (the leader sends the rest again); an unreadable state file is
    /// moved aside and the node starts without a vote. Each is logged at ERROR and counted
    /// ([`crate::corrupt_data_skipped`]). Losing a vote can let this node vote twice in one
    /// term, which matters only if it restarts within that term; losing entries matters only
    /// if too few other voters still hold them.
    pub fn open(dir: &Path) -> io::Result<FileLogStore> {
        std::fs::create_dir_all(dir)?;
        let state_path = dir.join(STATE_FILE);
        let mut hard = match std::fs::read(&state_path) {
            Ok(bytes) => match serde_json::from_slice::<HardState>(&bytes) {
                Ok(h) => h,
                Err(e) => {
                    let aside = dir.join(format!("{STATE_FILE}.corrupt"));
                    tracing::error!(path = %state_path.display(), error = %e, moved_to = %aside.display(),
                        "unreadable raft state (vote, committed, purged); starting without it");
                    std::fs::rename(&state_path, &aside)?;
                    crate::note_corrupt_data();
                    HardState::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(e),
        };
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut entries: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        let mut good = 0u64;
        let mut reader = BufReader::new(file.try_clone()?);
        let mut line = Vec::new();
        let mut corrupt = None;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let next = entries.keys().next_back().map(|i| i + 1);
            match serde_json::from_slice::<Entry<TypeConfig>>(&line[..n - 1]) {
                Ok(e) if next.is_none_or(|i| i == e.log_id.index) => {
                    sizes.insert(e.log_id.index, n as u64);
                    entries.insert(e.log_id.index, e);
                    good += n as u64;
                }
                Ok(e) => {
                    corrupt = Some(format!(
                        "entry {} where {} was expected",
                        e.log_id.index,
                        next.unwrap_or(0)
                    ));
                    break;
                }
                Err(e) => {
                    corrupt = Some(e.to_string());
                    break;
                }
            }
        }
        let len = file.metadata()?.len();
        if len != good {
            match &corrupt {
                Some(why) => {
                    tracing::error!(path = %path.display(), offset = good, dropped_bytes = len - good,
                        error = %why, "unreadable raft log entry; truncating the log there");
                    crate::note_corrupt_data();
                }
                None => tracing::warn!(path = %path.display(), dropped_bytes = len - good,
                    "truncating torn tail of the raft log"),
            }
            file.set_len(good)?;
            persist::sync_all(&file, FileKind::RaftLog)?;
        }
        // What is committed must still be here (or purged into the snapshot).
        let last = entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(hard.last_purged);
        if hard.committed.map(|c| c.index) > last.map(|l| l.index) {
            tracing::error!(committed = ?hard.committed, last = ?last,
                "raft log ends before its committed index; lowering it to the last entry");
            hard.committed = last;
            crate::note_corrupt_data();
            let files = LogFiles {
                dir: dir.to_path_buf(),
                file: file.try_clone()?,
            };
            files.save_hard(&hard)?;
        }
        let disk = DiskThread::spawn(
            "raft-log-writer",
            LogFiles {
                dir: dir.to_path_buf(),
                file,
            },
        )?;
        Ok(FileLogStore {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    entries,
                    sizes,
                    hard,
                }),
                disk,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("raft log lock")
    }

    /// Put `entries` in memory and queue them for the disk; `done` runs on the writer thread
    /// once they are durable. Returns once they are readable.
    fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
        done: AppendDone,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut new = Vec::new();
        for e in entries {
            let start = buf.len();
            serde_json::to_writer(&mut buf, &e)
                .map_err(|err| io::Error::other(format!("encoding entry {}: {err}", e.log_id)))?;
            buf.push(b'\n');
            new.push(((buf.len() - start) as u64, e));
        }
        let mut inner = self.lock();
        // Queued under the lock, so the file follows the order of the entries in memory.
        self.shared.disk.append(buf, done)?;
        for (size, e) in new {
            inner.sizes.insert(e.log_id.index, size);
            inner.entries.insert(e.log_id.index, e);
        }
        Ok(())
    }

    /// Bytes in the log file of the entries after `index` (all of them for `None`): the log
    /// written since a snapshot at `index`, which the snapshot trigger by bytes compares with
    /// `metadata.log.max.record.bytes.between.snapshots`.
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        let inner = self.lock();
        match index {
            Some(i) => inner.sizes.range(i + 1..).map(|(_, n)| n).sum(),
            None => inner.sizes.values().sum(),
        }
    }

    /// Bytes in the log file of the entries up to and including `index`: the log kept behind a
    /// snapshot at `index`.
    pub fn bytes_through(&self, index: u64) -> u64 {
        self.lock().sizes.range(..=index).map(|(_, n)| n).sum()
    }

    /// The highest entry to purge so that the entries kept up to `snapshot` (the log behind a
    /// snapshot) hold at most `retain` bytes; `None` when they already do. Whole entries only:
    /// the newest ones that fit are kept.
    pub fn purge_point(&self, snapshot: u64, retain: u64) -> Option<u64> {
        let inner = self.lock();
        let mut kept = 0u64;
        for (index, n) in inner.sizes.range(..=snapshot).rev() {
            kept += n;
            if kept > retain {
                return Some(*index);
            }
        }
        None
    }

    /// Change the hard state in memory and queue it for the disk (in order with everything
    /// queued before); the future resolves once it is durable.
    fn save_hard(
        &self,
        change: impl FnOnce(&mut HardState),
    ) -> impl std::future::Future<Output = io::Result<()>> {
        let mut inner = self.lock();
        change(&mut inner.hard);
        let hard = inner.hard.clone();
        self.shared.disk.run(move |files| files.save_hard(&hard))
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftNodeId>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = FileLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftNodeId>> {
        let inner = self.lock();
        let last_purged_log_id = inner.hard.last_purged;
        let last_log_id = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<(), StorageError<RaftNodeId>> {
        let vote = *vote;
        self.save_hard(|h| h.vote = Some(vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>, StorageError<RaftNodeId>> {
        Ok(self.lock().hard.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftNodeId>>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        self.save_hard(|h| h.committed = committed)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<RaftNodeId>>, StorageError<RaftNodeId>> {
        Ok(self.lock().hard.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.append_entries(
            entries,
            Box::new(move |result| callback.log_io_completed(result)),
        )
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(
        &mut self,
        log_id: LogId<RaftNodeId>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let written = {
            let mut inner = self.lock();
            inner.entries.split_off(&log_id.index);
            inner.sizes.split_off(&log_id.index);
            let keep: Vec<_> = inner.entries.values().cloned().collect();
            self.shared.disk.run(move |files| files.rewrite(&keep))
        };
        written
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> Result<(), StorageError<RaftNodeId>> {
        let written = {
            let mut inner = self.lock();
            inner.hard.last_purged = Some(log_id);
            let keep = inner.entries.split_off(&(log_id.index + 1));
            inner.entries = keep;
            let keep = inner.sizes.split_off(&(log_id.index + 1));
            inner.sizes = keep;
            let hard = inner.hard.clone();
            let keep: Vec<_> = inner.entries.values().cloned().collect();
            self.shared.disk.run(move |files| {
                files.save_hard(&hard)?;
                files.rewrite(&keep)
            })
        };
        written
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::MetadataBatch;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![crate::MetadataRecord::ProducerIds { next: index as i64 }],
            }),
        }
    }

    /// Append through the writer thread and wait until durable (the `LogFlushed` callback
    /// cannot be built outside openraft).
    async fn append(store: &FileLogStore, entries: impl IntoIterator<Item = Entry<TypeConfig>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store
            .append_entries(
                entries,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    /// The bytes counted after an index are the file's: the same after a reopen, and they
    /// follow truncation and purge.
    #[tokio::test]
    async fn bytes_after_an_index_match_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLogStore::open(dir.path()).unwrap();
        append(&store, (1..=6).map(entry)).await;
        let file_len = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert_eq!(store.bytes_after(None), file_len);
        let line = store.bytes_after(Some(5));
        assert!(line > 0);
        assert_eq!(store.bytes_after(Some(6)), 0);
        assert_eq!(store.bytes_after(Some(3)), 3 * line);
        drop(store);
        let mut store = FileLogStore::open(dir.path()).unwrap();
        assert_eq!(store.bytes_after(None), file_len);
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 6))
            .await
            .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        assert_eq!(store.bytes_after(None), 3 * line);
        assert_eq!(
            store.bytes_after(None),
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len()
        );
    }

    #[tokio::test]
    async fn reopen_truncate_purge_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileLogStore::open(dir.path()).unwrap();
        append(&store, (1..=6).map(entry)).await;
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
            .await
            .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        drop(store);
        // A torn line at the tail is dropped on open.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(br#"{"log_id":"#).unwrap();
        drop(f);
        let mut store = FileLogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
        let got: Vec<u64> = store
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, vec![3, 4]);
    }

    #[tokio::test]
    async fn corrupt_entries_and_state_are_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileLogStore::open(dir.path()).unwrap();
        append(&store, (1..=6).map(entry)).await;
        store
            .save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 6)))
            .await
            .unwrap();
        drop(store);
        // Entry 4's line damaged (invalid UTF-8 in the middle of the file).
        let path = dir.path().join(LOG_FILE);
        let text = std::fs::read(&path).unwrap();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                text.iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let mut bytes = text.clone();
        bytes[starts[3] + 2] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let before = crate::corrupt_data_skipped();
        let mut store = FileLogStore::open(dir.path()).unwrap();
        assert!(crate::corrupt_data_skipped() >= before + 2);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        assert_eq!(
            store.read_committed().await.unwrap().map(|l| l.index),
            Some(3)
        );
        drop(store);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), starts[3] as u64);

        // A garbled state file is moved aside; the log stays.
        std::fs::write(dir.path().join(STATE_FILE), b"\xff{").unwrap();
        let mut store = FileLogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert!(dir.path().join(format!("{STATE_FILE}.corrupt")).exists());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    }

    /// Appends, a vote, a truncation and a purge on a slow disk: the worker thread never waits
    /// for the disk.
    #[test]
    fn disk_work_never_blocks_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileLogStore::open(dir.path()).unwrap();
        let id = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
        let worst = crate::persist::tests::worst_tick_lateness(|| async {
            append(&store, (1..=3).map(entry)).await;
            append(&store, (4..=6).map(entry)).await;
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
            store.save_committed(Some(id(5))).await.unwrap();
            store.truncate(id(6)).await.unwrap();
            store.purge(id(2)).await.unwrap();
        });
        assert!(
            worst < std::time::Duration::from_millis(50),
            "a worker thread waited {worst:?} for the raft log"
        );
        drop(store);
        let mut store = FileLogStore::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
            assert_eq!(state.last_log_id.map(|l| l.index), Some(5));
        });
    }
}
