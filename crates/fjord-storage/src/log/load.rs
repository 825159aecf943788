//! Opening a log: one directory listing, tidying interrupted file operations, loading
//! checkpoints, recovery of segments above the recovery point, and producer-state load;
//! and the clean close that writes what changed and the clean-shutdown marker.

use super::{
    remove_deleted_files, remove_file, Log, CLEAN_SHUTDOWN_FILE, HIGH_WATERMARK_FILE,
    LOG_START_FILE, RECOVERY_POINT_FILE,
};
use crate::cleaner::{self, CleanerCheckpoint};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::StorageError;
use crate::producer_state::{self, ProducerStateManager};
use crate::segment::{scan_file, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use fjord_protocol::clock::now_ms;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn read_offset_file(path: &Path) -> Result<Option<i64>, StorageError> {
    match std::fs::read(path) {
        Ok(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| StorageError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("not an offset: {:?}", String::from_utf8_lossy(&b)),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// What [`Log::open_with_report`] found unreadable and dropped or ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Checkpoint files and producer snapshots that could not be parsed (deleted; the log was
    /// recovered without them).
    pub corrupt_files: Vec<PathBuf>,
    /// Bytes cut from segments at a corrupt or torn batch.
    pub truncated_bytes: u64,
    /// Whole segments deleted because they followed a corrupt batch.
    pub deleted_segments: u64,
}

impl OpenReport {
    /// Whether anything on disk was dropped or ignored.
    pub fn is_clean(&self) -> bool {
        self.corrupt_files.is_empty() && self.truncated_bytes == 0 && self.deleted_segments == 0
    }
}

/// A checkpoint read: a corrupt file is logged at ERROR, noted in `report`, deleted and read as
/// absent; an I/O error stays an error.
fn tolerate<T>(
    read: Result<T, StorageError>,
    report: &mut OpenReport,
) -> Result<Option<T>, StorageError> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(StorageError::Corrupt { path, reason }) => {
            tracing::error!(file = %path.display(), %reason,
                "deleting corrupt checkpoint file; the log is recovered without it");
            // Absent reads the same as what the log now holds, so the file is rewritten
            // when the fact next changes, as for a log that never had it.
            remove_file(&path)?;
            report.corrupt_files.push(path);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One listing of a partition directory (by [`Log::open`]): every decision about which
/// files to read on open comes from it, so no file is probed by name.
#[derive(Debug, Default)]
struct DirListing {
    /// The segment files there are, by base offset.
    segments: BTreeMap<i64, SegmentFiles>,
    /// Producer snapshot offsets, ascending.
    snapshots: Vec<i64>,
    clean_shutdown: bool,
    log_start: bool,
    recovery_point: bool,
    high_watermark: bool,
    epochs: bool,
    cleaner: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct SegmentFiles {
    log: bool,
    index: bool,
    time_index: bool,
}

impl DirListing {
    /// Both index files are there, so loading them is worth trying.
    fn has_index_files(&self, base: i64) -> bool {
        self.segments
            .get(&base)
            .is_some_and(|f| f.index && f.time_index)
    }
    fn has_any_index_file(&self, base: i64) -> bool {
        self.segments
            .get(&base)
            .is_some_and(|f| f.index || f.time_index)
    }
}

impl Log {
    /// Open (or create) the log in `dir`. Without a clean-shutdown marker, segments after the
    /// recovery point are validated batch by batch and truncated at the first bad batch.
    ///
    /// The directory is listed once; that listing decides which checkpoint, index and
    /// snapshot files are read (a missing file is never probed). The clean-shutdown marker
    /// stays in place until the first change to the log's files ([`Log::mark_dirty`]): a
    /// log that is opened and closed (or crashes) without being changed is still in the state
    /// its last clean close left, so reopening it needs no recovery, and neither open nor
    /// close writes anything for it.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log, StorageError> {
        Self::open_with_report(dir, config).map(|(log, _)| log)
    }

    /// [`Log::open`], also saying what was unreadable on disk and dropped or ignored.
    ///
    /// Reading back is defensive: a corrupt checkpoint file (log start, recovery point, high
    /// watermark, leader epochs, cleaner state) is logged at ERROR and ignored — the log is
    /// then recovered as after a crash, and the fact falls back to what the segments say —
    /// and a corrupt or torn batch truncates the segment there (and drops later segments, as
    /// Kafka's recovery does). Only an I/O error fails the open.
    pub fn open_with_report(
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<(Log, OpenReport), StorageError> {
        let dir = dir.into();
        let mut report = OpenReport::default();
        let listing = match Self::tidy_dir(&dir) {
            Ok(l) => l,
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
                DirListing::default()
            }
            Err(e) => return Err(e),
        };
        let mut read_if = |present: bool, name: &str| {
            if present {
                tolerate(read_offset_file(&dir.join(name)), &mut report).map(Option::flatten)
            } else {
                Ok(None)
            }
        };
        let checkpoint_start = read_if(listing.log_start, LOG_START_FILE)?;
        let recovery_point = read_if(listing.recovery_point, RECOVERY_POINT_FILE)?.unwrap_or(-1);
        let hw_on_disk = read_if(listing.high_watermark, HIGH_WATERMARK_FILE)?;
        // A damaged checkpoint casts doubt on the rest: recover as after a crash.
        let clean = listing.clean_shutdown && report.corrupt_files.is_empty();
        let now = now_ms();
        // Index files without a log are no segment (e.g. a crash while deleting one).
        let bases: Vec<i64> = listing
            .segments
            .iter()
            .filter(|(_, f)| f.log)
            .map(|(&b, _)| b)
            .collect();

        let mut segments = BTreeMap::new();
        let mut recovered = false;
        // Whether the active segment's index files hold its in-memory index.
        let mut active_index_on_disk = true;
        if bases.is_empty() {
            let base = checkpoint_start.unwrap_or(0).max(0);
            segments.insert(base, Box::new(Segment::create(&dir, base, now)?));
            // Stale index files at this base (none normally) differ from the empty index.
            active_index_on_disk = !listing.has_any_index_file(base);
        } else {
            let interval = config.index_interval_bytes;
            let mut i = 0;
            while i < bases.len() {
                let base = bases[i];
                let next = bases.get(i + 1).copied();
                let last = next.is_none();
                let needs_recovery = !clean && (last || next.unwrap_or(i64::MAX) > recovery_point);
                let index_files = listing.has_index_files(base);
                if needs_recovery {
                    recovered = true;
                    let (mut seg, dropped, on_disk) =
                        Segment::open_active(&dir, base, true, index_files, interval)?;
                    if !last && dropped == 0 {
                        // Stays sealed: restore the final time entry that roll wrote.
                        seg.seal_index();
                    }
                    // Recovery rebuilt the index from the log; write it only if the files
                    // do not already hold exactly that.
                    if !seg.index_equals(on_disk.as_ref()) {
                        seg.write_index()?;
                    }
                    segments.insert(base, Box::new(seg));
                    report.truncated_bytes += dropped;
                    if dropped > 0 && !last {
                        // Data after a torn batch cannot be trusted: drop later segments.
                        for &later in &bases[i + 1..] {
                            tracing::error!(dir = %dir.display(), base = later,
                                "deleting segment after corrupt point");
                            Self::delete_segment_files(&dir, later)?;
                            report.deleted_segments += 1;
                        }
                        break;
                    }
                } else if last {
                    let (seg, _, on_disk) =
                        Segment::open_active(&dir, base, false, index_files, interval)?;
                    active_index_on_disk = seg.index_equals(on_disk.as_ref());
                    segments.insert(base, Box::new(seg));
                } else {
                    segments.insert(
                        base,
                        Box::new(Segment::open_sealed(&dir, base, next.expect("not last"))?),
                    );
                }
                i += 1;
            }
        }
        let first_base = *segments.keys().next().expect("non-empty");
        let leo = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset;
        let log_start_offset = checkpoint_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(leo);

        let mut epochs = if listing.epochs {
            tolerate(LeaderEpochCache::load(&dir), &mut report)?
                .unwrap_or_else(|| LeaderEpochCache::empty(&dir))
        } else {
            LeaderEpochCache::empty(&dir)
        };
        epochs.truncate_from_end(leo)?;
        // A recovered active segment has just had its index written if it differed.
        let index_dirty = !recovered && !active_index_on_disk;
        let cleaner = if listing.cleaner {
            tolerate(CleanerCheckpoint::load(&dir), &mut report)?.unwrap_or_default()
        } else {
            CleanerCheckpoint::default()
        };
        // Without the file (a log written before it existed, or a deleted file): after a
        // clean shutdown everything is taken as committed, as it was when a single node
        // acknowledged every append at once; after a crash only what was fsynced (the
        // recovery point), since the unsynced tail may not have been acknowledged. An
        // underestimate only delays visibility: a leader raises the high watermark again as
        // followers fetch, a follower takes it from the leader. (Kafka falls back to 0.)
        let high_watermark = hw_on_disk
            .unwrap_or(if clean || log_start_offset == leo {
                leo
            } else {
                recovery_point
            })
            .clamp(log_start_offset, leo);

        let mut log = Log {
            cleaner_on_disk: cleaner.clone(),
            cleaner,
            dir,
            config,
            segments,
            log_start_offset,
            recovery_point: recovery_point.max(0),
            recovery_point_on_disk: recovery_point.max(0),
            high_watermark,
            high_watermark_on_disk: hw_on_disk,
            producers: ProducerStateManager::default(),
            producers_persisted_at: None,
            index_dirty,
            epochs,
            write_buf: Vec::new(),
            batch_buf: Vec::new(),
            unflushed_messages: 0,
            last_flush_ms: now,
            flush_due: false,
            truncations: 0,
            generation: super::next_generation(),
            deleted_files: Vec::new(),
            clean_marker: clean,
        };
        report
            .corrupt_files
            .extend(log.load_producer_state_from(&listing.snapshots)?);
        if recovered {
            // Writes only what recovery changed: the index if it differs from its files, the
            // recovery point if it moved.
            log.flush()?;
        }
        // One line per log only when recovery ran on some data: a broker opens up to 100,000
        // logs, and an empty one is always opened without a marker (see `close`).
        if recovered && !log.is_empty() {
            tracing::info!(dir = %log.dir.display(), log_start_offset, log_end_offset = leo,
                high_watermark, segments = log.segments.len(), "opened log after recovery");
        } else {
            tracing::debug!(dir = %log.dir.display(), log_start_offset, log_end_offset = leo,
                high_watermark, segments = log.segments.len(), "opened log");
        }
        Ok((log, report))
    }

    /// List the directory once: finish or discard interrupted file operations, and note the
    /// segments, indexes, snapshots and checkpoint files there are.
    fn tidy_dir(dir: &Path) -> Result<DirListing, StorageError> {
        let mut names = Vec::new();
        for ent in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let ent = ent.map_err(|e| StorageError::io(dir, e))?;
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
        let mut l = DirListing::default();
        let mut swapped = Vec::new();
        for name in &names {
            let path = dir.join(name);
            if name.ends_with(".cleaned") || name.ends_with(".deleted") || name.ends_with(".tmp") {
                tracing::info!(file = %path.display(), "removing stray temp file");
                remove_file(&path)?;
            } else if let Some(stem) = name.strip_suffix(".log.swap") {
                // A `.swap` is only created once the cleaned segment is complete and synced:
                // finish installing it. Its old indexes are stale.
                let final_path = dir.join(format!("{stem}.log"));
                tracing::info!(file = %path.display(), "completing interrupted segment swap");
                remove_file(&final_path.with_extension("index"))?;
                remove_file(&final_path.with_extension("timeindex"))?;
                std::fs::rename(&path, &final_path).map_err(|e| StorageError::io(&path, e))?;
                if let Ok(b) = stem.parse() {
                    l.segments.entry(b).or_default().log = true;
                    swapped.push(b);
                }
            } else {
                match name.as_str() {
                    CLEAN_SHUTDOWN_FILE => l.clean_shutdown = true,
                    LOG_START_FILE => l.log_start = true,
                    RECOVERY_POINT_FILE => l.recovery_point = true,
                    HIGH_WATERMARK_FILE => l.high_watermark = true,
                    crate::epoch::CHECKPOINT_FILE => l.epochs = true,
                    cleaner::CHECKPOINT_FILE => l.cleaner = true,
                    _ => {
                        // `{offset:020}.{log,index,timeindex,snapshot}`
                        let Some((stem, ext)) = name.rsplit_once('.') else {
                            continue;
                        };
                        let Ok(offset) = stem.parse::<i64>() else {
                            continue;
                        };
                        match ext {
                            LOG_SUFFIX => l.segments.entry(offset).or_default().log = true,
                            INDEX_SUFFIX => l.segments.entry(offset).or_default().index = true,
                            TIME_INDEX_SUFFIX => {
                                l.segments.entry(offset).or_default().time_index = true
                            }
                            producer_state::SNAPSHOT_SUFFIX => l.snapshots.push(offset),
                            _ => {}
                        }
                    }
                }
            }
        }
        for b in swapped {
            // Removed above, even if listed before the swap was seen.
            let files = l.segments.entry(b).or_default();
            files.index = false;
            files.time_index = false;
        }
        l.snapshots.sort_unstable();
        Ok(l)
    }

    /// Load the latest producer snapshot at or below the log end and replay the rest.
    pub(super) fn load_producer_state(&mut self) -> Result<(), StorageError> {
        let snaps = producer_state::list_snapshots(&self.dir)?;
        self.load_producer_state_from(&snaps).map(drop)
    }

    /// [`Log::load_producer_state`] with the snapshot offsets (ascending) already listed.
    /// Nothing is read when the newest snapshot is at the log end (as after a clean close),
    /// or when there is neither a snapshot nor a record (an empty log). Returns the unreadable
    /// snapshots, which are deleted (an older one, or the log itself, rebuilds the state).
    fn load_producer_state_from(&mut self, snaps: &[i64]) -> Result<Vec<PathBuf>, StorageError> {
        let leo = self.log_end_offset();
        let mut unreadable = Vec::new();
        let mut from = self.log_start_offset;
        self.producers = ProducerStateManager::default();
        for &s in snaps.iter().rev() {
            let path = ProducerStateManager::snapshot_path(&self.dir, s);
            if s > leo {
                remove_file(&path)?;
                continue;
            }
            match ProducerStateManager::read_snapshot(&path) {
                Ok(p) => {
                    self.producers = p;
                    from = s;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "deleting unreadable producer snapshot");
                    remove_file(&path)?;
                    unreadable.push(path);
                }
            }
        }
        // Nothing to replay: the snapshot at `from` (or, without one, the empty state at the
        // log start = log end) is what the next open would load too.
        self.producers_persisted_at = (from == leo).then_some(leo);
        if from >= leo {
            return Ok(unreadable);
        }
        // Replay batch headers from `from` to the log end (no records decoded).
        let starts: Vec<i64> = self.segments.keys().copied().collect();
        for (i, &base) in starts.iter().enumerate() {
            let seg = &self.segments[&base];
            if starts.get(i + 1).is_some_and(|&n| n <= from) {
                continue;
            }
            let Some((pos, _)) = seg.find_batch(from)? else {
                continue;
            };
            let producers = &mut self.producers;
            scan_file(
                seg.file()?,
                &seg.path,
                pos,
                seg.size,
                false,
                |_, h, batch| {
                    if h.base_offset >= from {
                        producers.replay(h, batch);
                    }
                    Ok(true)
                },
            )?;
        }
        Ok(unreadable)
    }

    /// Flush, persist indexes, producer state and the high watermark, and leave the
    /// clean-shutdown marker. Files that already hold the current state (index, recovery
    /// point, producer snapshot at the log end, cleaner checkpoint, high watermark, and the
    /// marker itself if nothing removed it since open) are not rewritten.
    ///
    /// An empty log (one empty segment) gets no marker: recovering it reads and writes
    /// nothing and ends in the state a clean open would load, so the marker would save
    /// nothing, while creating it costs an inode (100,000 new topics' partitions closing
    /// at once spent seconds there).
    pub fn close(mut self) -> Result<(), StorageError> {
        remove_deleted_files(self.take_deleted_files());
        self.flush()?;
        let leo = self.log_end_offset();
        if self.producers_persisted_at != Some(leo) {
            self.producers.write_snapshot(&self.dir, leo)?;
            self.producers_persisted_at = Some(leo);
        }
        self.persist_cleaner()?;
        self.checkpoint_high_watermark()?;
        if !self.clean_marker && !self.is_empty() {
            let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
            std::fs::write(&marker, b"").map_err(|e| StorageError::io(&marker, e))?;
        }
        tracing::debug!(dir = %self.dir.display(), log_end_offset = leo, "closed log");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::segment_path;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as Ts,
    };
    use std::os::unix::fs::MetadataExt;

    /// A v2 batch of `n` records (idempotent if `pid >= 0`, sequence from `seq`).
    fn batch(n: usize, ts: i64, pid: i64, seq: i32) -> Vec<u8> {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 0 } else { -1 },
                timestamp_type: Ts::Creation,
                offset: i as i64,
                sequence: if pid >= 0 { seq + i as i32 } else { -1 },
                timestamp: ts + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    /// (name -> (inode, mtime ns, ctime ns, len)) of every file, the marker included.
    fn files(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let m = e.metadata().unwrap();
                let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
                let ctime = m.ctime() * 1_000_000_000 + m.ctime_nsec();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    (m.ino(), mtime, ctime, m.len()),
                )
            })
            .collect()
    }

    /// [`files`] without the marker.
    fn files_but_marker(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
        let mut f = files(dir);
        f.remove(CLEAN_SHUTDOWN_FILE);
        f
    }

    fn offsets(log: &Log) -> Vec<i64> {
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.log_end_offset() {
            let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
            let mut b = r.records.clone();
            let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut b).unwrap();
            for rec in sets.into_iter().flat_map(|s| s.records) {
                if rec.offset >= next {
                    out.push(rec.offset);
                }
            }
            next = *out.last().unwrap() + 1;
        }
        out
    }

    /// Close, then clean and unclean reopen + close of a log nobody modifies: no file other
    /// than the marker is created, rewritten or replaced, and after a clean close not even
    /// the marker (it stays until the first change).
    fn assert_untouched_cycles_write_nothing(dir: &Path, log: Log) {
        let leo = log.log_end_offset();
        let hw = log.high_watermark();
        let empty = log.segment_count() == 1 && log.size_bytes() == 0;
        log.close().unwrap();
        let before = files(dir);
        // An empty log is closed without a marker: opening it without is just as cheap.
        assert_eq!(before.contains_key(CLEAN_SHUTDOWN_FILE), !empty);
        // Clean open + close: nothing at all is written, the marker stays in place.
        let log = Log::open(dir, config()).unwrap();
        assert_eq!(files(dir), before);
        assert_eq!(log.high_watermark(), hw);
        log.close().unwrap();
        assert_eq!(files(dir), before);
        // Crash while open without a change: the files are as the clean close left them,
        // marker included, so the next open is a clean one too.
        drop(Log::open(dir, config()).unwrap());
        assert_eq!(files(dir), before);
        // A crash after a change leaves no marker: unclean open (recovery), close.
        if !empty {
            std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE)).unwrap();
        }
        let before = files_but_marker(dir);
        let log = Log::open(dir, config()).unwrap();
        assert_eq!(files(dir), before);
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.high_watermark(), hw);
        log.close().unwrap();
        assert_eq!(dir.join(CLEAN_SHUTDOWN_FILE).exists(), !empty);
        assert_eq!(files_but_marker(dir), before);
        let log = Log::open(dir, config()).unwrap();
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.high_watermark(), hw);
        assert_eq!(
            offsets(&log),
            (log.log_start_offset()..leo).collect::<Vec<_>>()
        );
        log.close().unwrap();
    }

    #[test]
    fn untouched_empty_log_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::open(d.path(), config()).unwrap();
        assert_untouched_cycles_write_nothing(d.path(), log);
    }

    #[test]
    fn untouched_log_with_data_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), config()).unwrap();
        for i in 0..40 {
            // Idempotent and plain batches, over several segments.
            let b = if i % 2 == 0 {
                batch(2, 1_000 + i, 7, i as i32)
            } else {
                batch(2, 1_000 + i, -1, -1)
            };
            log.append(&b, 0, 0).unwrap();
        }
        assert!(log.segment_count() > 2);
        log.set_high_watermark(57);
        assert_untouched_cycles_write_nothing(d.path(), log);
        assert!(d.path().join(HIGH_WATERMARK_FILE).exists());
    }

    #[test]
    fn untouched_follower_log_is_not_rewritten() {
        let (da, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = Log::open(da.path(), config()).unwrap();
        let mut log = Log::open(d.path(), config()).unwrap();
        for i in 0..40 {
            let b = batch(2, 1_000 + i, 7, 2 * i as i32);
            let info = leader.append(&b, (i / 10) as i32, 0).unwrap();
            let r = leader
                .read(info.base_offset, 1 << 20, i64::MAX, true)
                .unwrap();
            log.append_as_follower(&r.records, 0).unwrap();
        }
        log.set_high_watermark(75);
        assert!(log.segment_count() > 2);
        assert_untouched_cycles_write_nothing(d.path(), log);
    }

    #[test]
    fn recovery_of_sealed_segments_keeps_their_indexes() {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), config()).unwrap();
        for i in 0..40 {
            log.append(&batch(2, 1_000 + 10 * i, -1, -1), 0, 0).unwrap();
        }
        assert!(log.segment_count() > 2);
        let leo = log.log_end_offset();
        let max_ts = log.max_timestamp();
        log.close().unwrap();
        // Recovery point lagging: every segment is recovered on an unclean open.
        crate::index::write_atomic(&d.path().join(RECOVERY_POINT_FILE), b"0").unwrap();
        std::fs::remove_file(d.path().join(CLEAN_SHUTDOWN_FILE)).unwrap();
        let mut before = files(d.path());
        let log = Log::open(d.path(), config()).unwrap();
        let mut after = files(d.path());
        // Only the recovery point moved; the (sealed) indexes were already right.
        assert_ne!(
            before.remove(RECOVERY_POINT_FILE),
            after.remove(RECOVERY_POINT_FILE)
        );
        assert_eq!(before, after);
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.max_timestamp(), max_ts);
        assert_eq!(offsets(&log), (0..leo).collect::<Vec<_>>());
        assert_untouched_cycles_write_nothing(d.path(), log);
    }

    #[test]
    fn log_modified_after_open_is_recovered_and_closed() {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), config()).unwrap();
        for i in 0..10 {
            log.append(&batch(2, 1_000, 7, 2 * i), 0, 0).unwrap();
        }
        log.close().unwrap();

        // Clean open, append, crash: the marker is gone, recovery finds everything written.
        let mut log = Log::open(d.path(), config()).unwrap();
        log.append(&batch(3, 2_000, 7, 20), 0, 0).unwrap();
        let leo = log.log_end_offset();
        drop(log);
        assert!(!d.path().join(CLEAN_SHUTDOWN_FILE).exists());
        // Tear the last batch: recovery must cut it, even though it was untouched otherwise.
        let last = segment_path(
            d.path(),
            *Log::open(d.path(), config())
                .unwrap()
                .segment_base_offsets()
                .last()
                .unwrap(),
            LOG_SUFFIX,
        );
        let len = std::fs::metadata(&last).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let mut log = Log::open(d.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), leo - 3);
        // Producer state was rebuilt: sequence 20 is next again.
        log.append(&batch(3, 2_000, 7, 20), 0, 0).unwrap();
        assert_eq!(log.log_end_offset(), leo);
        log.close().unwrap();

        // Clean reopen sees the new data and producer state (a retry is a duplicate).
        let mut log = Log::open(d.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(offsets(&log), (0..leo).collect::<Vec<_>>());
        assert!(log.append(&batch(3, 2_000, 7, 20), 0, 0).unwrap().duplicate);
        // Truncate after open, close, reopen unclean-free and clean.
        log.truncate_to(10).unwrap();
        log.close().unwrap();
        let log = Log::open(d.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(offsets(&log), (0..10).collect::<Vec<_>>());
        // Untouched from here on: cycles write nothing.
        assert_untouched_cycles_write_nothing(d.path(), log);
    }

    /// Manual measurement (not a correctness test): close + open of 10,000 empty logs.
    /// `cargo test -p fjord-storage --release --lib -- --ignored --nocapture measure_`
    #[test]
    #[ignore]
    fn measure_close_open_10k_empty_logs() {
        let n: usize = std::env::var("FJORD_MEASURE_LOGS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000);
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..n).map(|i| root.path().join(format!("t-{i}"))).collect();
        let cfg = LogConfig::default();
        let t = std::time::Instant::now();
        let mut logs: Vec<Log> = dirs
            .iter()
            .map(|d| Log::open(d, cfg.clone()).unwrap())
            .collect();
        let create = t.elapsed();
        for round in 0..3 {
            let t = std::time::Instant::now();
            for l in logs.drain(..) {
                l.close().unwrap();
            }
            let close = t.elapsed();
            let t = std::time::Instant::now();
            logs = dirs
                .iter()
                .map(|d| Log::open(d, cfg.clone()).unwrap())
                .collect();
            let open_clean = t.elapsed();
            // Unclean: drop without close (no marker), then open again (recovery path).
            logs.clear();
            let t = std::time::Instant::now();
            logs = dirs
                .iter()
                .map(|d| Log::open(d, cfg.clone()).unwrap())
                .collect();
            let open_unclean = t.elapsed();
            eprintln!(
                "round {round}: {n} logs: create {create:?}, close {close:?}, \
                 clean open {open_clean:?}, unclean open {open_unclean:?}"
            );
        }
        for l in logs.drain(..) {
            l.close().unwrap();
        }
    }
}
