//! The Raft state machine: committed batches of [`MetadataRecord`]s applied to a
//! [`ClusterImage`]. A snapshot is the image written as records, plus the metadata offset, in
//! `snapshot.json` (replaced atomically); a restarted node loads it and openraft replays the
//! committed log entries after it.
//!
//! Readers follow it through a [`MetadataFeed`]: the state keeps the most recent records in a
//! [`RecordWindow`] and every change of the metadata offset is published on a `watch` channel.

use std::fs::File;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::feed::{MetadataFeed, RecordWindow, DEFAULT_WINDOW_RECORDS};
use super::{BatchApplied, RaftNodeId, TypeConfig};
use crate::{ClusterImage, MetadataRecord};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the state machine has applied. Readers take the lock briefly, never across `.await`.
#[derive(Debug, Default)]
pub struct MetadataState {
    pub last_applied: Option<LogId<RaftNodeId>>,
    pub last_membership: StoredMembership<RaftNodeId, BasicNode>,
    pub image: ClusterImage,
    /// Metadata records applied (the next metadata offset).
    pub offset: i64,
    /// The most recent records applied; `window.end() == offset`.
    pub window: RecordWindow,
}

/// The content of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    offset: i64,
    records: Vec<MetadataRecord>,
}

/// A snapshot file: the Raft metadata and the data.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine; its snapshot builder is a clone sharing the same state.
#[derive(Debug, Clone)]
pub struct MetadataStateMachine {
    dir: PathBuf,
    state: Arc<RwLock<MetadataState>>,
    /// The metadata offset, published after each change of the state.
    offsets: Arc<watch::Sender<i64>>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl MetadataStateMachine {
    /// Load the last snapshot in `dir`, if any, with the default record window.
    pub fn open(dir: &Path) -> io::Result<MetadataStateMachine> {
        MetadataStateMachine::open_with_window(dir, DEFAULT_WINDOW_RECORDS)
    }

    /// Load the last snapshot in `dir`, if any, keeping up to `window_records` recent records
    /// for [`MetadataFeed`] readers.
    pub fn open_with_window(dir: &Path, window_records: usize) -> io::Result<MetadataStateMachine> {
        std::fs::create_dir_all(dir)?;
        let mut state = MetadataState {
            window: RecordWindow::new(window_records),
            ..Default::default()
        };
        let snapshot = read_snapshot(dir).and_then(|f| match f {
            Some(file) => {
                let data: SnapshotData =
                    serde_json::from_slice(&file.data).map_err(io::Error::other)?;
                Ok(Some((file, data)))
            }
            None => Ok(None),
        });
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e)
                if e.kind() != io::ErrorKind::Other && e.kind() != io::ErrorKind::InvalidData =>
            {
                return Err(e)
            }
            Err(e) => {
                // The log replays what it still holds; the quorum refuses to start if it
                // was purged past the lost snapshot (see `QuorumNode::start_with_window`).
                let path = dir.join(SNAPSHOT_FILE);
                let aside = dir.join(format!("{SNAPSHOT_FILE}.corrupt"));
                tracing::error!(path = %path.display(), error = %e, moved_to = %aside.display(),
                    "unreadable metadata snapshot; starting from the log alone");
                std::fs::rename(&path, &aside)?;
                crate::note_corrupt_data();
                None
            }
        };
        if let Some((file, data)) = snapshot {
            state.image = ClusterImage::from_records(&data.records);
            state.offset = data.offset;
            state.window.reset(data.offset);
            state.last_applied = file.meta.last_log_id;
            state.last_membership = file.meta.last_membership;
        }
        let offsets = Arc::new(watch::channel(state.offset).0);
        Ok(MetadataStateMachine {
            dir: dir.to_path_buf(),
            state: Arc::new(RwLock::new(state)),
            offsets,
            snapshot_seq: Default::default(),
        })
    }

    /// The last log id applied (from the snapshot, right after open).
    pub fn applied(&self) -> Option<LogId<RaftNodeId>> {
        self.state.read().expect("state lock").last_applied
    }

    /// The shared state, for readers of the image.
    pub fn state(&self) -> Arc<RwLock<MetadataState>> {
        self.state.clone()
    }

    /// A reader of the applied records.
    pub fn feed(&self) -> MetadataFeed {
        MetadataFeed::new(self.state.clone(), self.offsets.clone())
    }

    /// Wake feed readers if the offset moved (after the state lock is released).
    fn publish(&self, offset: i64) {
        self.offsets
            .send_if_modified(|o| std::mem::replace(o, offset) != offset);
    }

    fn write_snapshot(&self, file: &SnapshotFile) -> io::Result<()> {
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(file).map_err(io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

fn read_snapshot(dir: &Path) -> io::Result<Option<SnapshotFile>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(io::Error::other)?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftNodeId>> {
        let (meta, data) = {
            let state = self.state.read().expect("state lock");
            let seq = self
                .snapshot_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let last = state.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: state.last_membership.clone(),
                snapshot_id: format!(
                    "{}-{}-{seq}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index)
                ),
            };
            let data = SnapshotData {
                offset: state.offset,
                records: state.image.to_records(),
            };
            (meta, data)
        };
        let bytes = serde_json::to_vec(&data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.write_snapshot(&file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotBuilder = MetadataStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<RaftNodeId>>,
            StoredMembership<RaftNodeId, BasicNode>,
        ),
        StorageError<RaftNodeId>,
    > {
        let state = self.state.read().expect("state lock");
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchApplied>, StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut guard = self.state.write().expect("state lock");
        let state = &mut *guard;
        let mut out = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let mut applied = BatchApplied {
                first_offset: state.offset,
                rejected: 0,
            };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for record in batch.records {
                        if let Err(e) = state.image.try_apply(&record) {
                            tracing::warn!(error = %e, ?record, "metadata record rejected; skipped");
                            applied.rejected += 1;
                        }
                        // Rejected records still take an offset, as in Controller::replay, and
                        // stay in the window so that every reader counts offsets alike.
                        state.offset += 1;
                        state.window.push(record);
                    }
                }
                EntryPayload::Membership(m) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            out.push(applied);
        }
        let offset = state.offset;
        drop(guard);
        self.publish(offset);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftNodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.write_snapshot(&SnapshotFile {
            meta: meta.clone(),
            data: bytes,
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        {
            let mut state = self.state.write().expect("state lock");
            state.image = ClusterImage::from_records(&data.records);
            state.offset = data.offset;
            state.window.reset(data.offset);
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
        }
        self.publish(data.offset);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftNodeId>> {
        let file = read_snapshot(&self.dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(file.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}
