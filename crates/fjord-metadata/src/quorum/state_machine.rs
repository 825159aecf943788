//! The Raft state machine: committed batches of [`MetadataRecord`]s applied to a
//! [`ClusterImage`]. A snapshot is the image written as records, plus the metadata offset, in
//! `snapshot.json` (replaced atomically); a restarted node loads it and openraft replays the
//! committed log entries after it.
//!
//! `snapshot.json` is two JSON lines: a header (`{"format":2,"meta":...}`, openraft's snapshot
//! metadata) and the snapshot data itself (`{"offset":...,"records":[...]}`), the same bytes
//! openraft sends to a follower that needs a snapshot. The first format, one object whose
//! `data` held those bytes as a JSON array of numbers (3.4× their size: 196 MiB for the 58 MiB
//! of records of 1M replicas), is still read.
//!
//! Readers follow it through a [`MetadataFeed`]: the state keeps the most recent records in a
//! [`RecordWindow`] and every change of the metadata offset is published on a `watch` channel.
//!
//! Snapshot files are encoded, written, fsynced and read on the state machine's own thread
//! (`raft-snapshot-io`, a [`DiskThread`]), in the order they were asked for; a snapshot older
//! than the one already on disk (a build that raced an install) is not written over it. No
//! lock is held while the thread works: a build copies the image out under the read lock first.

use std::io::{self, Cursor};
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
use crate::persist::{self, DiskState, DiskThread, FileKind};
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

/// A snapshot: the Raft metadata and the data (a [`SnapshotData`] as JSON).
#[derive(Debug)]
struct SnapshotFile {
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
    data: Vec<u8>,
}

/// The format of `snapshot.json` written now: this header on the first line, the data after.
const SNAPSHOT_FORMAT: u32 = 2;

/// The first line of a `snapshot.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    format: u32,
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
}

/// The first format of `snapshot.json` (read only): the data as a JSON array of byte values.
#[derive(Debug, Deserialize)]
struct SnapshotFileV1 {
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
    data: Vec<u8>,
}

impl SnapshotFile {
    /// The file's bytes: the header line, then the data (JSON has no raw newline in it).
    fn encode(&self) -> io::Result<Vec<u8>> {
        let header = SnapshotHeader {
            format: SNAPSHOT_FORMAT,
            meta: self.meta.clone(),
        };
        let mut bytes = serde_json::to_vec(&header).map_err(io::Error::other)?;
        bytes.reserve(self.data.len() + 2);
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.data);
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Read either format; an unreadable file is an `InvalidData` error.
    fn decode(mut bytes: Vec<u8>) -> io::Result<SnapshotFile> {
        let invalid = |e: serde_json::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        if let Some(eol) = bytes.iter().position(|b| *b == b'\n') {
            let header: SnapshotHeader = serde_json::from_slice(&bytes[..eol]).map_err(invalid)?;
            if header.format != SNAPSHOT_FORMAT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown snapshot format {}", header.format),
                ));
            }
            // The data in place: drop the header line and the final newline.
            bytes.drain(..=eol);
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot data without its final newline (torn write)",
                ));
            }
            return Ok(SnapshotFile {
                meta: header.meta,
                data: bytes,
            });
        }
        let v1: SnapshotFileV1 = serde_json::from_slice(&bytes).map_err(invalid)?;
        Ok(SnapshotFile {
            meta: v1.meta,
            data: v1.data,
        })
    }
}

/// The state machine; its snapshot builder is a clone sharing the same state.
#[derive(Debug, Clone)]
pub struct MetadataStateMachine {
    state: Arc<RwLock<MetadataState>>,
    /// The metadata offset, published after each change of the state.
    offsets: Arc<watch::Sender<i64>>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    disk: Arc<DiskThread<SnapshotFiles>>,
}

/// The snapshot file, owned by the state machine's disk thread.
struct SnapshotFiles {
    dir: PathBuf,
    /// The last log id of the snapshot on disk.
    written: Option<LogId<RaftNodeId>>,
}

impl DiskState for SnapshotFiles {
    fn append_durably(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Err(io::Error::other(
            "a snapshot is written whole, not appended",
        ))
    }
}

impl SnapshotFiles {
    /// Replace the snapshot on disk with `file`, unless the one there is newer.
    fn write(&mut self, file: &SnapshotFile) -> io::Result<()> {
        if file.meta.last_log_id < self.written {
            tracing::debug!(snapshot = %file.meta.snapshot_id, on_disk = ?self.written,
                "not writing a snapshot older than the one on disk");
            return Ok(());
        }
        let bytes = file.encode()?;
        persist::replace_file(&self.dir, SNAPSHOT_FILE, &bytes, FileKind::Snapshot)?;
        self.written = file.meta.last_log_id;
        Ok(())
    }
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
        let disk = DiskThread::spawn(
            "raft-snapshot-io",
            SnapshotFiles {
                dir: dir.to_path_buf(),
                written: state.last_applied,
            },
        )?;
        Ok(MetadataStateMachine {
            state: Arc::new(RwLock::new(state)),
            offsets,
            snapshot_seq: Default::default(),
            disk: Arc::new(disk),
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
}

fn read_snapshot(dir: &Path) -> io::Result<Option<SnapshotFile>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => Ok(Some(SnapshotFile::decode(bytes)?)),
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
        let signature = meta.signature();
        let snapshot_meta = meta.clone();
        let bytes = self
            .disk
            .run(move |files| {
                let file = SnapshotFile {
                    meta: snapshot_meta,
                    data: serde_json::to_vec(&data).map_err(io::Error::other)?,
                };
                files.write(&file)?;
                Ok(file.data)
            })
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
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
        let file = SnapshotFile {
            meta: meta.clone(),
            data: bytes,
        };
        self.disk
            .run(move |files| files.write(&file))
            .await
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
        let file = self
            .disk
            .run(|files| read_snapshot(&files.dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(file.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Building, writing and reading a snapshot on a slow disk never blocks the worker, and a
    /// reopened state machine starts from the snapshot.
    #[test]
    fn snapshots_are_written_off_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetadataStateMachine::open(dir.path()).unwrap();
        let worst = crate::persist::tests::worst_tick_lateness(|| async {
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Normal(super::super::MetadataBatch {
                    records: vec![MetadataRecord::ProducerIds { next: 7 }],
                }),
            };
            sm.apply([entry]).await.unwrap();
            let built = sm.build_snapshot().await.unwrap();
            let current = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta, built.meta);
        });
        assert!(
            worst < std::time::Duration::from_millis(50),
            "a worker thread waited {worst:?} for a snapshot"
        );
        drop(sm);
        let sm = MetadataStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied().map(|l| l.index), Some(1));
        assert_eq!(sm.state().read().unwrap().offset, 1);
    }

    fn apply_one(records: Vec<MetadataRecord>, index: u64) -> Entry<TypeConfig> {
        Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(super::super::MetadataBatch { records }),
        }
    }

    /// A `snapshot.json` written by the first format (the data as a JSON array of byte
    /// values) still loads; the next snapshot is written in the current format, a third of
    /// the size, and loads too.
    #[test]
    fn reads_the_first_snapshot_format_and_writes_the_current_one() {
        #[derive(Serialize)]
        struct V1 {
            meta: SnapshotMeta<RaftNodeId, BasicNode>,
            data: Vec<u8>,
        }
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<MetadataRecord> = (1..=200)
            .map(|next| MetadataRecord::ProducerIds { next })
            .collect();
        let data = serde_json::to_vec(&SnapshotData {
            offset: records.len() as i64,
            records: records.clone(),
        })
        .unwrap();
        let last = LogId::new(openraft::CommittedLeaderId::new(1, 1), 3);
        let v1 = V1 {
            meta: SnapshotMeta {
                last_log_id: Some(last),
                last_membership: StoredMembership::default(),
                snapshot_id: "1-3-0".into(),
            },
            data: data.clone(),
        };
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            serde_json::to_vec(&v1).unwrap(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut sm = MetadataStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied(), Some(last));
        let expected = ClusterImage::from_records(&records);
        {
            let state = sm.state();
            let state = state.read().unwrap();
            assert_eq!(state.offset, 200);
            assert_eq!(state.image, expected);
        }
        // openraft gets the data itself, whatever the file's format.
        let current = rt
            .block_on(sm.get_current_snapshot())
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.snapshot.into_inner(), data);

        rt.block_on(sm.apply([apply_one(
            vec![MetadataRecord::ProducerIds { next: 500 }],
            4,
        )]))
        .unwrap();
        let built = rt.block_on(sm.build_snapshot()).unwrap();
        let file = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert!(file.starts_with(br#"{"format":2,"#), "{:?}", &file[..20]);
        let built_data = built.snapshot.into_inner();
        assert!(
            file.len() < built_data.len() + 1_000,
            "{} bytes on disk for {} of data",
            file.len(),
            built_data.len()
        );
        drop(sm);
        let sm = MetadataStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied().map(|l| l.index), Some(4));
        let state = sm.state();
        let state = state.read().unwrap();
        assert_eq!(state.offset, 201);
    }

    /// A snapshot cut short (a torn write that escaped the rename) is not loaded as valid.
    #[test]
    fn a_torn_snapshot_is_invalid_data() {
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "x".into(),
        };
        let file = SnapshotFile {
            meta,
            data: br#"{"offset":0,"records":[]}"#.to_vec(),
        };
        let bytes = file.encode().unwrap();
        let back = SnapshotFile::decode(bytes.clone()).unwrap();
        assert_eq!(back.data, file.data);
        let err = SnapshotFile::decode(bytes[..bytes.len() - 5].to_vec()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = SnapshotFile::decode(b"{\"format\":9,".to_vec()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
