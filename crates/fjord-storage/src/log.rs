//! [`Log`]: one partition's log (Kafka's UnifiedLog + LocalLog) — segments, leader append
//! (offsets and epoch assigned here) and follower append (kept as the leader wrote them),
//! read, recovery, retention, truncation, the high watermark, and the checkpoint files next
//! to the segments.

use crate::cleaner::{self, CleanReport, CleanerCheckpoint};
use crate::config::{LogConfig, TimestampType};
use crate::epoch::LeaderEpochCache;
use crate::error::{AppendError, ReadError, StorageError};
use crate::producer_state::{self, Check, ProducerEntry, ProducerStateManager};
use crate::segment::{
    scan_file, segment_path, FileRange, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use bytes::Bytes;
use fjord_protocol::batch::{self, BatchHeader};
use fjord_protocol::records::{self, AppendOrigin, ValidatedRecords};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Written by a clean [`Log::close`] and removed before the next change to the log's files
/// ([`Log::mark_dirty`]); its absence on open triggers recovery.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// The log start offset raised by retention or DeleteRecords.
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";
/// Everything below this offset has been fsynced; recovery starts at its segment.
pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
/// The high watermark as of the last [`Log::checkpoint_high_watermark`] (or close).
pub const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";

/// Result of a successful append (or of a duplicate, with the original offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// Sum of the batches' `records_count`.
    pub record_count: u64,
    pub bytes: usize,
    /// The batch was already in the log (idempotent retry); nothing was written.
    pub duplicate: bool,
}

/// Whole batches for a fetch: their bytes, or (from [`Log::read_range`]) a file range.
#[derive(Debug, Clone)]
pub struct ReadResult<R = Bytes> {
    pub records: R,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What [`Log::maintain`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MaintenanceReport {
    pub rolled: bool,
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub flushed: bool,
    pub producers_expired: usize,
    pub cleaned: Option<CleanReport>,
}

pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty. Boxed: a map node
    /// holds room for 11 values, and most partitions have one segment (inline, that node
    /// was ~1.8 KB per partition).
    pub(crate) segments: BTreeMap<i64, Box<Segment>>,
    pub(crate) log_start_offset: i64,
    recovery_point: i64,
    /// The value in the recovery-point file (0 if absent, which recovery treats the same).
    recovery_point_on_disk: i64,
    /// Offsets below are committed (replicated to the ISR); clamped to [log start, log end].
    high_watermark: i64,
    /// The value in the high-watermark file (`None` if absent).
    high_watermark_on_disk: Option<i64>,
    producers: ProducerStateManager,
    /// `Some(o)`: a snapshot at `o` holds exactly the in-memory producer state (or, with no
    /// snapshot and nothing to replay, opening would rebuild exactly it). Close writes one
    /// only when this is not the log end.
    producers_persisted_at: Option<i64>,
    /// The active segment's in-memory index differs from its files.
    index_dirty: bool,
    epochs: LeaderEpochCache,
    /// Reused for every append: the request is copied here once and patched in place.
    write_buf: Vec<u8>,
    /// Reused per append: (position in write_buf, header) of each batch.
    batch_buf: Vec<(usize, BatchHeader)>,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// A flush was asked for (policy or roll) and has not run ([`Log::prepare_flush`]).
    flush_due: bool,
    /// Truncations so far: a flush planned before one must not move the recovery point.
    truncations: u64,
    /// `.deleted` files of removed segments not unlinked yet ([`Log::take_deleted_files`]).
    deleted_files: Vec<PathBuf>,
    pub(crate) cleaner: CleanerCheckpoint,
    /// What the cleaner checkpoint file holds (default if absent, which loads the same).
    cleaner_on_disk: CleanerCheckpoint,
    /// The clean-shutdown marker is on disk: nothing has changed the log's files since the
    /// clean close that wrote it. Cleared (and the file removed) by [`Log::mark_dirty`].
    clean_marker: bool,
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

fn remove_file(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
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
        let now = wall_clock_ms();
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
    fn load_producer_state(&mut self) -> Result<(), StorageError> {
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
            scan_file(seg.file()?, &seg.path, pos, seg.size, false, |_, h, _| {
                if h.base_offset >= from {
                    producers.replay(h);
                }
                Ok(true)
            })?;
        }
        Ok(unreadable)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }
    /// Producer state, for the broker (e.g. DescribeProducers) and tests.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Offsets below are committed: replicated to every ISR member (the replication layer
    /// decides; the log only keeps it in bounds and persists it).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Set the high watermark, clamped to [log start offset, log end offset]. Not persisted
    /// until [`Log::checkpoint_high_watermark`] or [`Log::close`].
    pub fn set_high_watermark(&mut self, hw: i64) {
        self.high_watermark = hw.clamp(self.log_start_offset, self.log_end_offset());
    }

    /// Write the high watermark to `high-watermark-checkpoint` unless the file already holds
    /// it. An empty log (log start = log end) needs no file: open clamps any value to that
    /// one offset. Returns whether it wrote.
    pub fn checkpoint_high_watermark(&mut self) -> Result<bool, StorageError> {
        let hw = self.high_watermark;
        let empty = self.log_start_offset == self.log_end_offset();
        if self.high_watermark_on_disk == Some(hw)
            || (self.high_watermark_on_disk.is_none() && empty)
        {
            return Ok(false);
        }
        crate::index::write_atomic(
            &self.dir.join(HIGH_WATERMARK_FILE),
            hw.to_string().as_bytes(),
        )?;
        self.high_watermark_on_disk = Some(hw);
        Ok(true)
    }

    /// Remove the clean-shutdown marker, if it is still there, before the first change to
    /// the segments (their data, or which segments there are), the log start or the epoch
    /// cache since the log was opened: from then on a crash must be detected by the next
    /// open. Every such change calls this first. Files that are written whole (temp file +
    /// rename) and agree with unchanged segments do not: the high-watermark and cleaner
    /// checkpoints, producer snapshots, and an index rebuilt from unchanged data.
    pub(crate) fn mark_dirty(&mut self) -> Result<(), StorageError> {
        if self.clean_marker {
            remove_file(&self.dir.join(CLEAN_SHUTDOWN_FILE))?;
            self.clean_marker = false;
        }
        Ok(())
    }

    /// One segment, and no byte in it.
    fn is_empty(&self) -> bool {
        self.segments.len() == 1 && self.active().size == 0
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("never empty")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("never empty")
    }

    /// Validate `records` (one or more v2 batches, as the broker's own coordinators write
    /// them), assign offsets and write them in one write. Client produce validates first,
    /// outside the log's lock, and calls [`Log::append_validated`].
    pub fn append(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let rules = self.config.record_rules(now_ms, AppendOrigin::Coordinator);
        let validated = records::validate(records, &rules)?;
        self.append_validated(records, &validated, leader_epoch, now_ms)
    }

    /// Assign offsets to records that passed [`records::validate`] and write them in one
    /// write. Only what depends on the log's state is checked here: the idempotent producer's
    /// epoch and sequence (a duplicate answers with the original offsets) and `segment.bytes`.
    pub fn append_validated(
        &mut self,
        records: &[u8],
        validated: &ValidatedRecords,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        self.append_validated_many(&[(records, validated)], leader_epoch, now_ms)
            .pop()
            .expect("one result per append")
    }

    /// [`Log::append_validated`] for several produce requests at once (pipelined requests to
    /// one partition, queued while the previous write ran). Each is checked on its own — one
    /// refused leaves the others — and the accepted ones are copied into one buffer and
    /// written with one write (more only when a segment rolls in between). Results are in
    /// input order. A failed write fails its requests and every later one.
    pub fn append_validated_many(
        &mut self,
        items: &[(&[u8], &ValidatedRecords)],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Vec<Result<AppendInfo, AppendError>> {
        let mut stage = Stage {
            batches: std::mem::take(&mut self.batch_buf),
            appends: Vec::new(),
            results: items.iter().map(|_| None).collect(),
            leader_epoch,
            log_append: self.config.message_timestamp_type == TimestampType::LogAppendTime,
            now_ms,
            failure: None,
        };
        stage.batches.clear();
        self.write_buf.clear();
        // Producer entries of the staged batches, for the sequence checks of later ones.
        let mut pending: Vec<ProducerEntry> = Vec::new();
        let mut next = self.log_end_offset();
        for (i, (records, validated)) in items.iter().enumerate() {
            if stage.failure.is_some() {
                stage.results[i] = Some(Err(stage.failed(&self.dir)));
                continue;
            }
            match self.stage_append(i, records, validated, &mut pending, &mut next, &mut stage) {
                Ok(None) => {}
                Ok(Some(dup)) => stage.results[i] = Some(Ok(dup)),
                Err(e) => stage.results[i] = Some(Err(e)),
            }
        }
        self.write_staged(&mut stage);
        self.batch_buf = std::mem::take(&mut stage.batches);
        let written: u64 = stage
            .results
            .iter()
            .flatten()
            .filter_map(|r| r.as_ref().ok())
            .map(|i| i.record_count)
            .sum();
        if written > 0 {
            self.count_for_flush(written, now_ms);
        }
        stage
            .results
            .into_iter()
            .map(|r| r.expect("every append has a result"))
            .collect()
    }

    /// Write what [`Log::stage_append`] staged at the end of the active segment, then index
    /// it and commit its producer state and epoch. On a failed write every staged append
    /// gets the error (and so will every later one: `stage.failure`).
    fn write_staged(&mut self, stage: &mut Stage) {
        if stage.appends.is_empty() {
            return;
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.segments.values_mut().next_back().expect("never empty");
        let start = seg.size;
        let written = seg
            .file()
            .and_then(|f| {
                f.write_all_at(&self.write_buf, start)
                    .map_err(|e| StorageError::io(&seg.path, e))
            })
            .and_then(|()| seg.index_mut().map(|_| ()));
        if let Err(e) = written {
            stage.failure = Some(e.to_string());
            for a in stage.appends.drain(..) {
                stage.results[a.item] = Some(Err(AppendError::Storage(e.duplicate())));
            }
            stage.batches.clear();
            self.write_buf.clear();
            return;
        }
        for (pos, h) in stage.batches.iter() {
            seg.track_batch(start + *pos as u64, h, interval);
        }
        self.index_dirty = true;
        self.producers_persisted_at = None;
        for (_, h) in stage.batches.iter() {
            if h.has_producer_id() {
                let e = self.producers.updated_entry(&[], h);
                self.producers.commit(e);
            }
        }
        let first = stage.appends[0].first_offset;
        let epoch = self.epochs.assign(stage.leader_epoch, first);
        for a in stage.appends.drain(..) {
            stage.results[a.item] = Some(match &epoch {
                Ok(()) => Ok(AppendInfo {
                    base_offset: a.first_offset,
                    last_offset: a.last_offset,
                    log_append_time: if stage.log_append { stage.now_ms } else { -1 },
                    log_start_offset: self.log_start_offset,
                    record_count: a.record_count,
                    bytes: a.bytes,
                    duplicate: false,
                }),
                Err(e) => Err(AppendError::Storage(e.duplicate())),
            });
        }
        if let Err(e) = epoch {
            stage.failure = Some(e.to_string());
        }
        stage.batches.clear();
        self.write_buf.clear();
    }

    /// Check one append of [`Log::append_validated_many`] and copy it, with offsets, epoch
    /// and timestamps patched, behind the staged ones (writing those first if a roll is due).
    /// `Ok(Some(_))`: a duplicate, answered with the original offsets.
    fn stage_append(
        &mut self,
        item: usize,
        records: &[u8],
        validated: &ValidatedRecords,
        pending: &mut Vec<ProducerEntry>,
        next: &mut i64,
        stage: &mut Stage,
    ) -> Result<Option<AppendInfo>, AppendError> {
        if validated.len != records.len() || validated.batches.is_empty() {
            return Err(AppendError::NotValidated {
                validated: validated.len,
                got: records.len(),
            });
        }
        if records.len() as u64 > self.config.segment_bytes {
            return Err(AppendError::RecordListTooLarge {
                size: records.len(),
                max: self.config.segment_bytes,
            });
        }
        // Producer state: epochs, sequences, duplicates.
        let mark = pending.len();
        for b in &validated.batches {
            let h = &b.header;
            if h.has_producer_id() {
                match self.producers.check(pending, h) {
                    Err(e) => {
                        pending.truncate(mark);
                        return Err(e.into());
                    }
                    Ok(Check::Duplicate(dup)) => {
                        pending.truncate(mark);
                        return Ok(Some(AppendInfo {
                            base_offset: dup.first_offset,
                            last_offset: dup.last_offset,
                            log_append_time: -1,
                            log_start_offset: self.log_start_offset,
                            record_count: 0,
                            bytes: 0,
                            duplicate: true,
                        }));
                    }
                    Ok(Check::Append) => {
                        let e = self.producers.updated_entry(pending, h);
                        pending.push(e);
                    }
                }
            }
        }
        let max_ts = if stage.log_append {
            stage.now_ms
        } else {
            validated
                .batches
                .iter()
                .map(|b| b.max_timestamp)
                .max()
                .unwrap_or(-1)
        };
        let total_offsets: i64 = validated
            .batches
            .iter()
            .map(|b| b.header.offset_count())
            .sum();
        let result = self.make_room(records.len(), max_ts, total_offsets, *next, stage);
        if let Err(e) = result {
            pending.truncate(mark);
            return Err(e);
        }

        // Copy once, patch offsets / epoch / timestamps in place.
        let base = self.write_buf.len();
        let first_batch = stage.batches.len();
        self.write_buf.extend_from_slice(records);
        let first_offset = *next;
        for vb in &validated.batches {
            let mut h = vb.header;
            let pos = base + vb.position;
            let b = &mut self.write_buf[pos..pos + h.total_size()];
            batch::set_base_offset(b, *next);
            batch::set_partition_leader_epoch(b, stage.leader_epoch);
            if stage.log_append {
                batch::set_log_append_time(b, stage.now_ms);
                h.max_timestamp = stage.now_ms;
                h.attributes |= batch::attributes::TIMESTAMP_TYPE_LOG_APPEND;
            } else if h.max_timestamp != vb.max_timestamp {
                // The producer's header disagrees with its records: the records win (Kafka
                // rewrites it too), so the time index stays true.
                batch::set_max_timestamp(b, vb.max_timestamp);
                h.max_timestamp = vb.max_timestamp;
            }
            h.base_offset = *next;
            h.partition_leader_epoch = stage.leader_epoch;
            *next += h.offset_count();
            stage.batches.push((pos, h));
        }
        // The producer entries again, now with the offsets assigned: a retry queued behind
        // this append is answered with them.
        pending.truncate(mark);
        for (_, h) in &stage.batches[first_batch..] {
            if h.has_producer_id() {
                let e = self.producers.updated_entry(pending, h);
                pending.push(e);
            }
        }
        stage.appends.push(StagedAppend {
            item,
            first_offset,
            last_offset: *next - 1,
            record_count: validated.record_count,
            bytes: records.len(),
        });
        Ok(None)
    }

    /// Before staging `size` more bytes: write what is staged if the new records would not
    /// fit the same segment, then roll if they need a new one.
    fn make_room(
        &mut self,
        size: usize,
        max_ts: i64,
        offsets: i64,
        next: i64,
        stage: &mut Stage,
    ) -> Result<(), AppendError> {
        self.mark_dirty()?;
        let staged = self.write_buf.len();
        if staged > 0 {
            let leo = self.log_end_offset();
            let over = self.active().size + (staged + size) as u64 > self.config.segment_bytes;
            if over || self.should_roll(staged + size, max_ts, next - leo + offsets, stage.now_ms) {
                self.write_staged(stage);
                if let Some(msg) = &stage.failure {
                    return Err(AppendError::Storage(StorageError::io(
                        &self.dir,
                        std::io::Error::other(msg.clone()),
                    )));
                }
            }
        }
        if self.write_buf.is_empty() && self.should_roll(size, max_ts, offsets, stage.now_ms) {
            self.roll(stage.now_ms)?;
        }
        Ok(())
    }
    /// Count appended records against the flush policy (`flush.messages`, `flush.ms`) and
    /// ask for a flush when it says so ([`Log::flush_due`]). Shared by leader and follower
    /// appends. The fsync itself is the caller's, outside the partition's lock.
    fn count_for_flush(&mut self, record_count: u64, now_ms: i64) {
        self.unflushed_messages += record_count;
        if self.unflushed_messages >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.flush_due = true;
            self.last_flush_ms = now_ms;
        }
    }

    /// Append batches a leader already wrote (Kafka's `appendAsFollower`): base offsets and
    /// partition leader epochs are kept as they are, nothing is patched, and the caller's
    /// bytes are written directly. Headers and CRCs are checked; the first batch must start
    /// at the log end and each batch right after the previous one. On compacted topics the
    /// cleaner leaves holes between and inside batches, so there a batch may start later and
    /// hold fewer records than offsets (never earlier: that is an overlap).
    ///
    /// Unlike [`Log::append`]: no idempotent-producer checks (the follower takes what the
    /// leader wrote) but producer state is updated, so a follower that becomes leader
    /// deduplicates retries; the leader-epoch cache takes every newer epoch at its batch's
    /// base offset; `max.message.bytes` and the key check of compacted topics are left to
    /// the leader (a follower whose config lags must not stall replication); a fetch larger
    /// than `segment.bytes` is split over segments (one write per segment), since a fetch
    /// can carry many produce requests. Empty `records` is a no-op (`record_count` 0).
    ///
    /// Validation errors leave the log untouched. A storage error can leave a prefix of
    /// whole batches written (the log end offset says how far).
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let leo = self.log_end_offset();
        if records.is_empty() {
            return Ok(AppendInfo {
                base_offset: leo,
                last_offset: leo - 1,
                log_append_time: -1,
                log_start_offset: self.log_start_offset,
                record_count: 0,
                bytes: 0,
                duplicate: false,
            });
        }
        let mut batches = std::mem::take(&mut self.batch_buf);
        batches.clear();
        let result = self.validate_follower(records, leo, &mut batches);
        let record_count = match result {
            Ok(n) => n,
            Err(e) => {
                self.batch_buf = batches;
                return Err(e);
            }
        };
        let result = self
            .mark_dirty()
            .and_then(|()| self.write_follower_batches(records, &batches, now_ms));
        let first_offset = batches[0].1.base_offset;
        let last_offset = batches[batches.len() - 1].1.last_offset();
        self.batch_buf = batches;
        result?;

        self.count_for_flush(record_count, now_ms);
        Ok(AppendInfo {
            base_offset: first_offset,
            last_offset,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
            record_count,
            bytes: records.len(),
            duplicate: false,
        })
    }

    /// Pass 1 of [`Log::append_as_follower`]: the records count.
    fn validate_follower(
        &self,
        records: &[u8],
        log_end_offset: i64,
        batches: &mut Vec<(usize, BatchHeader)>,
    ) -> Result<u64, AppendError> {
        let holes = self.config.cleanup_policy.compacts();
        let mut pos = 0usize;
        let mut count = 0u64;
        let mut expected = log_end_offset;
        while pos < records.len() {
            let h = batch::parse_header(&records[pos..])?;
            let size = h.total_size();
            batch::verify_crc(&records[pos..pos + size], &h)?;
            if h.compression() > 4 {
                return Err(AppendError::UnsupportedCompression(h.compression()));
            }
            let short = h.records_count as i64 != h.offset_count();
            if h.records_count <= 0
                || h.last_offset_delta < 0
                || h.records_count as i64 > h.offset_count()
                || (short && !holes)
            {
                return Err(AppendError::Corrupt(format!(
                    "records_count {} does not match last_offset_delta {}",
                    h.records_count, h.last_offset_delta
                )));
            }
            if h.base_offset < expected || (h.base_offset > expected && !holes) {
                return Err(AppendError::OutOfOrderOffsets {
                    expected,
                    got: h.base_offset,
                });
            }
            count += h.records_count as u64;
            expected = h.last_offset() + 1;
            batches.push((pos, h));
            pos += size;
        }
        Ok(count)
    }

    /// Pass 2 of [`Log::append_as_follower`]: write runs of batches that fit the active
    /// segment, rolling before a run when needed, one write per run.
    fn write_follower_batches(
        &mut self,
        records: &[u8],
        batches: &[(usize, BatchHeader)],
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let interval = self.config.index_interval_bytes;
        let mut i = 0;
        while i < batches.len() {
            // The run [i, j): the first batch decides the roll as in `append`; later ones
            // join while the segment stays within segment.bytes and u32 relative offsets.
            let (pos, first) = &batches[i];
            let leo = self.log_end_offset();
            if self.should_roll(
                first.total_size(),
                first.max_timestamp,
                first.last_offset() + 1 - leo,
                now_ms,
            ) {
                self.roll(now_ms)?;
            }
            let seg_size = self.active().size;
            let seg_base = self.active().base_offset;
            let mut end = pos + first.total_size();
            let mut j = i + 1;
            while j < batches.len() {
                let (p, h) = &batches[j];
                let run_end = p + h.total_size();
                if seg_size + (run_end - pos) as u64 > self.config.segment_bytes
                    || h.last_offset() - seg_base > i32::MAX as i64
                {
                    break;
                }
                end = run_end;
                j += 1;
            }

            let seg = self.segments.values_mut().next_back().expect("never empty");
            let start = seg.size;
            seg.file()?
                .write_all_at(&records[*pos..end], start)
                .map_err(|e| StorageError::io(&seg.path, e))?;
            seg.index_mut()?;
            for (p, h) in &batches[i..j] {
                seg.track_batch(start + (p - pos) as u64, h, interval);
            }
            self.index_dirty = true;
            self.producers_persisted_at = None;
            for (_, h) in &batches[i..j] {
                // No checks: what the leader wrote is the truth.
                self.producers.replay(h);
                self.epochs
                    .assign(h.partition_leader_epoch, h.base_offset)?;
            }
            i = j;
        }
        Ok(())
    }

    fn should_roll(&self, size: usize, max_ts: i64, offsets: i64, now_ms: i64) -> bool {
        let seg = self.active();
        if seg.size == 0 {
            return false;
        }
        let waited = match seg.rolling_base_timestamp {
            Some(base) => max_ts.saturating_sub(base),
            None => now_ms.saturating_sub(seg.created_ms),
        };
        seg.size + size as u64 > self.config.segment_bytes
            || waited > self.config.segment_ms
            || seg.index_full(self.config.segment_index_bytes)
            // Relative offsets in the index are u32.
            || seg.next_offset + offsets - seg.base_offset > i32::MAX as i64
    }

    /// Seal the active segment and start a new one at the log end offset. The sealed
    /// segment is not fsynced here: the roll asks for a flush ([`Log::flush_due`]), which
    /// the caller runs outside the partition's lock (Kafka flushes a rolled segment
    /// asynchronously too); the recovery point moves only once that is done.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let leo = self.log_end_offset();
        if self.active().size == 0 {
            return Ok(());
        }
        self.mark_dirty()?;
        let seg = self.active_mut();
        seg.seal_index();
        seg.write_index()?;
        let old_base = seg.base_offset;
        self.segments
            .insert(leo, Box::new(Segment::create(&self.dir, leo, now_ms)?));
        self.index_dirty = !self.active().index_matches_disk();
        self.producers.write_snapshot(&self.dir, leo)?;
        self.producers_persisted_at = Some(leo);
        self.flush_due = true;
        tracing::info!(dir = %self.dir.display(), old_base, new_base = leo, "rolled segment");
        Ok(())
    }

    fn set_recovery_point(&mut self, offset: i64) -> Result<(), StorageError> {
        self.recovery_point = offset;
        if offset == self.recovery_point_on_disk {
            return Ok(());
        }
        crate::index::write_atomic(
            &self.dir.join(RECOVERY_POINT_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.recovery_point_on_disk = offset;
        Ok(())
    }

    /// Write the cleaner checkpoint if it differs from the file.
    pub(crate) fn persist_cleaner(&mut self) -> Result<(), StorageError> {
        if self.cleaner == self.cleaner_on_disk {
            return Ok(());
        }
        self.cleaner.persist(&self.dir)?;
        self.cleaner_on_disk = self.cleaner.clone();
        Ok(())
    }

    /// Whole batches from `fetch_offset`, at most `max_bytes` (but at least one batch when
    /// `min_one_batch`), none starting at or beyond `max_offset`. Reads one segment.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, ReadError> {
        let r = self.read_range(fetch_offset, max_bytes, max_offset, min_one_batch)?;
        let records = match &r.records {
            Some(range) => range.read().map_err(|e| StorageError::io(&self.dir, e))?,
            None => Bytes::new(),
        };
        Ok(ReadResult {
            records,
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
        })
    }

    /// What [`Log::read`] would return, as a range of a segment file instead of bytes (`None`
    /// when empty): only batch headers are read here, so a fetch can send the records with
    /// `sendfile`, or read them after the caller has released its lock on the log.
    pub fn read_range(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult<Option<FileRange>>, ReadError> {
        let leo = self.log_end_offset();
        if fetch_offset < self.log_start_offset || fetch_offset > leo {
            return Err(ReadError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: leo,
            });
        }
        let empty = ReadResult {
            records: None,
            log_start_offset: self.log_start_offset,
            log_end_offset: leo,
        };
        if fetch_offset == leo || fetch_offset >= max_offset {
            return Ok(empty);
        }
        let start_base = self
            .segments
            .range(..=fetch_offset)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        // Compaction can leave a segment without the offset; continue in the next one.
        for seg in self.segments.range(start_base..).map(|(_, s)| s) {
            let Some((pos, h)) = seg.find_batch(fetch_offset)? else {
                continue;
            };
            if h.base_offset >= max_offset {
                return Ok(empty);
            }
            let first = h.total_size();
            let end = if first > max_bytes {
                if !min_one_batch {
                    return Ok(empty);
                }
                pos + first as u64
            } else {
                // Bounded by `max_offset` only where the segment holds offsets at or beyond
                // it (a sealed segment's `next_offset` is an upper bound: then we look).
                let cut = if max_offset < seg.next_offset {
                    seg.position_of_offset(max_offset)?
                } else {
                    seg.size
                };
                let limit = (pos + max_bytes as u64).min(cut);
                seg.whole_batches_end(pos, limit)?
            };
            let records = (end > pos)
                .then(|| seg.range(pos, (end - pos) as usize))
                .transpose()?;
            return Ok(ReadResult { records, ..empty });
        }
        Ok(empty)
    }

    /// First record with timestamp >= `ts`: (offset, timestamp, leader epoch).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64, i32)>, StorageError> {
        let start_base = self
            .segments
            .range(..=self.log_start_offset)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        for (&base, seg) in self.segments.range(start_base..) {
            let is_active = seg.base_offset == self.active().base_offset;
            let idx = seg.index()?;
            let seg_max = if is_active {
                seg.max_timestamp
            } else {
                idx.max_timestamp().map_or(-1, |e| e.0)
            };
            if seg_max < ts {
                continue;
            }
            let from = idx
                .lookup_time(ts)
                .map_or(base, |rel| base + rel as i64)
                .max(self.log_start_offset);
            let Some((mut pos, _)) = seg.find_batch(from)? else {
                continue;
            };
            while let Some(h) = seg.read_header_at(pos)? {
                if h.max_timestamp >= ts && h.last_offset() >= self.log_start_offset {
                    if h.is_log_append_time() {
                        let o = h.base_offset.max(self.log_start_offset);
                        return Ok(Some((o, h.max_timestamp, h.partition_leader_epoch)));
                    }
                    let bytes = seg.read_at(pos, h.total_size())?;
                    for r in decode_records(&bytes, &seg.path)? {
                        if r.timestamp >= ts && r.offset >= self.log_start_offset {
                            return Ok(Some((r.offset, r.timestamp, h.partition_leader_epoch)));
                        }
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP, KIP-734):
    /// (offset, timestamp, leader epoch).
    pub fn max_timestamp(&self) -> Option<(i64, i64, i32)> {
        let active_base = self.active().base_offset;
        let mut best: Option<(i64, i64)> = None; // (ts, batch last offset)
        for seg in self.segments.values() {
            let cand = if seg.base_offset == active_base {
                (seg.max_timestamp >= 0).then_some((seg.max_timestamp, seg.offset_of_max_timestamp))
            } else {
                seg.index()
                    .ok()?
                    .max_timestamp()
                    .map(|(t, rel)| (t, seg.base_offset + rel as i64))
            };
            if let Some(c) = cand {
                if best.is_none_or(|b| c.0 > b.0) {
                    best = Some(c);
                }
            }
        }
        let (ts, last) = best?;
        if last < self.log_start_offset {
            return None;
        }
        // Narrow from the batch to the exact record (decode that one batch).
        let offset = self.exact_offset_of_timestamp(last, ts).unwrap_or(last);
        Some((offset, ts, self.epochs.epoch_for_offset(offset)))
    }

    fn exact_offset_of_timestamp(&self, batch_offset: i64, ts: i64) -> Option<i64> {
        let seg = self.segments.range(..=batch_offset).next_back()?.1;
        let (pos, h) = seg.find_batch(batch_offset).ok()??;
        if h.is_log_append_time() {
            return Some(h.base_offset);
        }
        let bytes = seg.read_at(pos, h.total_size()).ok()?;
        decode_records(&bytes, &seg.path)
            .ok()?
            .into_iter()
            .find(|r| r.timestamp == ts)
            .map(|r| r.offset)
    }

    /// DeleteRecords: raise the log start offset to `offset` and drop segments wholly below.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, StorageError> {
        let leo = self.log_end_offset();
        if offset > leo || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: leo,
            });
        }
        if offset > self.log_start_offset {
            self.set_log_start_offset(offset)?;
            let doomed: Vec<i64> = self
                .segments
                .keys()
                .zip(self.segments.keys().skip(1))
                .filter(|(_, &next)| next <= offset)
                .map(|(&b, _)| b)
                .collect();
            self.delete_segments(&doomed, "delete-records")?;
        }
        Ok(self.log_start_offset)
    }

    fn set_log_start_offset(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.mark_dirty()?;
        self.log_start_offset = offset;
        crate::index::write_atomic(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.high_watermark = self.high_watermark.max(offset);
        self.epochs.truncate_from_start(offset)?;
        // Snapshots below the log start are useless, except the newest (state must survive).
        let snaps = producer_state::list_snapshots(&self.dir)?;
        if let Some((&newest, older)) = snaps.split_last() {
            for &s in older {
                if s < offset && s != newest {
                    remove_file(&ProducerStateManager::snapshot_path(&self.dir, s))?;
                }
            }
        }
        Ok(())
    }

    fn delete_segment_files(dir: &Path, base: i64) -> Result<(), StorageError> {
        for suffix in [LOG_SUFFIX, "index", "timeindex"] {
            let p = segment_path(dir, base, suffix);
            if !p.exists() {
                continue;
            }
            // Rename first so a crash mid-delete leaves a `.deleted` file, not a live segment.
            let mut d = p.as_os_str().to_owned();
            d.push(".deleted");
            std::fs::rename(&p, &d).map_err(|e| StorageError::io(&p, e))?;
            remove_file(Path::new(&d))?;
        }
        Ok(())
    }

    /// Rename a deleted segment's files to `.deleted` (a crash leaves no live segment) and
    /// leave the unlinking, which can take long for a big file, to
    /// [`Log::take_deleted_files`]' caller once the partition's lock is released. Files
    /// nobody unlinked are removed by [`Log::close`] or the next open.
    fn retire_segment_files(&mut self, base: i64) -> Result<(), StorageError> {
        for suffix in [LOG_SUFFIX, "index", "timeindex"] {
            let p = segment_path(&self.dir, base, suffix);
            let mut d = p.as_os_str().to_owned();
            d.push(".deleted");
            match std::fs::rename(&p, &d) {
                Ok(()) => self.deleted_files.push(PathBuf::from(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&p, e)),
            }
        }
        Ok(())
    }

    /// Files of deleted segments still to unlink (see [`Log::retire_segment_files`]); unlink
    /// them with [`remove_deleted_files`] after releasing the lock.
    pub fn take_deleted_files(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.deleted_files)
    }

    /// Delete whole segments (never the last one — callers roll first if needed).
    fn delete_segments(&mut self, bases: &[i64], reason: &str) -> Result<u64, StorageError> {
        if !bases.is_empty() {
            self.mark_dirty()?;
        }
        let mut bytes = 0;
        for &b in bases {
            if self.segments.len() <= 1 || b == self.active().base_offset {
                break;
            }
            if let Some(seg) = self.segments.remove(&b) {
                bytes += seg.size;
                tracing::info!(dir = %self.dir.display(), base = b, size = seg.size, reason,
                    "deleting segment");
                drop(seg);
                self.retire_segment_files(b)?;
                self.cleaner.forget_segment(b);
            }
        }
        let first = *self.segments.keys().next().expect("never empty");
        self.set_log_start_offset(first)?;
        self.persist_cleaner()?;
        Ok(bytes)
    }

    /// Periodic work: roll by `segment.ms`, retention, compaction, `flush.ms`, producer
    /// expiry.
    pub fn maintain(&mut self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let mut report = MaintenanceReport::default();
        {
            let seg = self.active();
            let base = seg.rolling_base_timestamp.unwrap_or(seg.created_ms);
            if seg.size > 0 && now_ms.saturating_sub(base) > self.config.segment_ms {
                self.roll(now_ms)?;
                report.rolled = true;
            }
        }
        if self.config.cleanup_policy.deletes() {
            let (n, bytes) = self.apply_retention(now_ms)?;
            report.segments_deleted = n;
            report.bytes_deleted = bytes;
        }
        if self.config.cleanup_policy.compacts() {
            report.cleaned = cleaner::maybe_clean(self, now_ms)?;
        }
        if now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
            && self.unflushed_messages > 0
        {
            self.flush_due = true;
            self.last_flush_ms = now_ms;
        }
        report.flushed = self.flush_due;
        report.producers_expired = self
            .producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
        if report.producers_expired > 0 {
            self.producers_persisted_at = None;
        }
        Ok(report)
    }

    /// Delete segments past `retention.ms` / `retention.bytes` (Kafka's rules: stop at the
    /// first segment that is kept; the active segment counts, and is rolled first if it must
    /// go).
    fn apply_retention(&mut self, now_ms: i64) -> Result<(usize, u64), StorageError> {
        let mut doomed = Vec::new();
        let active_base = self.active().base_offset;
        if self.config.retention_ms >= 0 {
            for (&b, seg) in &self.segments {
                if b == active_base && seg.size == 0 {
                    break;
                }
                // A sealed segment emptied by compaction holds nothing to retain (and its
                // mtime says nothing about record age).
                let empty = seg.size == 0;
                if empty
                    || now_ms.saturating_sub(seg.largest_timestamp()?) > self.config.retention_ms
                {
                    doomed.push(b);
                } else {
                    break;
                }
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut diff = self.size_bytes() as i64 - self.config.retention_bytes;
            for (&b, seg) in &self.segments {
                if b == active_base && seg.size == 0 {
                    break;
                }
                if diff - (seg.size as i64) < 0 {
                    break;
                }
                diff -= seg.size as i64;
                if !doomed.contains(&b) {
                    doomed.push(b);
                }
            }
            doomed.sort_unstable();
        }
        if doomed.is_empty() {
            return Ok((0, 0));
        }
        if doomed.contains(&active_base) {
            self.roll(now_ms)?;
        }
        let n = doomed.len();
        let bytes = self.delete_segments(&doomed, "retention")?;
        Ok((n, bytes))
    }

    /// fsync the segments above the recovery point and advance it to the log end, all under
    /// `&mut self` (opening, closing, tests). Appends and maintenance split this into
    /// [`Log::prepare_flush`], [`FlushPlan::sync`] outside the lock and [`Log::finish_flush`].
    pub fn flush(&mut self) -> Result<(), StorageError> {
        let plan = self.prepare_flush()?;
        plan.sync()?;
        self.finish_flush(&plan)
    }

    /// The flush policy or a roll asked for a flush that has not run yet.
    pub fn flush_due(&self) -> bool {
        self.flush_due
    }

    /// Step 1 of a flush, under the lock: write the active index if it changed and list the
    /// files that hold data above the recovery point.
    pub fn prepare_flush(&mut self) -> Result<FlushPlan, StorageError> {
        let leo = self.log_end_offset();
        let rp = self.recovery_point;
        let mut files = Vec::new();
        for seg in self.segments.values() {
            // A file never opened has had nothing written through it; with the marker still
            // there, nothing has been written at all since the clean close synced it.
            if (seg.next_offset > rp || seg.base_offset >= rp)
                && seg.is_open()
                && !self.clean_marker
            {
                files.push((seg.path.clone(), seg.file()?.clone()));
            }
        }
        if self.index_dirty {
            self.active().write_index()?;
            self.index_dirty = false;
        }
        self.unflushed_messages = 0;
        self.flush_due = false;
        Ok(FlushPlan {
            files,
            upto: leo,
            truncations: self.truncations,
        })
    }

    /// Step 3 of a flush, under the lock again: everything below the plan's log end is on
    /// disk, so the recovery point moves there — unless the log was truncated meanwhile
    /// (the synced bytes may not be the log's any more; the next flush will do).
    pub fn finish_flush(&mut self, plan: &FlushPlan) -> Result<(), StorageError> {
        if plan.truncations != self.truncations {
            self.flush_due = true;
            return Ok(());
        }
        let upto = plan.upto.min(self.log_end_offset());
        if upto > self.recovery_point {
            self.set_recovery_point(upto)?;
        }
        Ok(())
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

    /// Remove everything at or above `offset` (follower truncation). Below the log start
    /// this is [`Log::truncate_fully_and_start_at`].
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        self.mark_dirty()?;
        self.truncate_and_reload(offset)
    }

    /// Delete every segment and start an empty log at `offset` (Kafka's
    /// `truncateFullyAndStartAt`), e.g. for a follower whose log end is below the leader's
    /// log start. Log start, log end and high watermark all become `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        self.mark_dirty()?;
        let offset = offset.max(0);
        let all: Vec<i64> = self.segments.keys().copied().collect();
        for b in all {
            self.segments.remove(&b);
            Self::delete_segment_files(&self.dir, b)?;
        }
        let seg = Segment::create(&self.dir, offset, wall_clock_ms())?;
        self.index_dirty = !seg.index_matches_disk();
        self.segments.insert(seg.base_offset, Box::new(seg));
        self.log_start_offset = offset;
        crate::index::write_atomic(
            &self.dir.join(LOG_START_FILE),
            self.log_start_offset.to_string().as_bytes(),
        )?;
        self.cleaner = CleanerCheckpoint::default();
        // Nothing of the old log is left: no epoch (even those starting below `offset`), no
        // producer snapshot (open or the reload below would restore stale state).
        self.epochs.truncate_from_end(i64::MIN)?;
        for s in producer_state::list_snapshots(&self.dir)? {
            remove_file(&ProducerStateManager::snapshot_path(&self.dir, s))?;
        }
        self.after_truncation(offset)
    }

    fn truncate_and_reload(&mut self, offset: i64) -> Result<(), StorageError> {
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        let keep_one = self.segments.len() == doomed.len();
        for b in doomed {
            if keep_one && b == *self.segments.keys().next().expect("non-empty") {
                continue;
            }
            self.segments.remove(&b);
            Self::delete_segment_files(&self.dir, b)?;
            self.cleaner.forget_segment(b);
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        seg.truncate_to(offset, interval)?;
        seg.write_index()?;
        self.index_dirty = false;
        self.after_truncation(offset)
    }

    /// Bring epochs, cleaner progress, recovery point, high watermark and producer state to
    /// the new log end.
    fn after_truncation(&mut self, offset: i64) -> Result<(), StorageError> {
        self.truncations += 1;
        let leo = self.log_end_offset();
        self.epochs.truncate_from_end(leo)?;
        self.cleaner.truncate(leo);
        self.persist_cleaner()?;
        if self.recovery_point > leo {
            self.set_recovery_point(leo)?;
        }
        self.high_watermark = self.high_watermark.clamp(self.log_start_offset, leo);
        self.load_producer_state()?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = leo,
            high_watermark = self.high_watermark, "truncated log");
        Ok(())
    }

    /// OffsetForLeaderEpoch: (largest epoch <= `epoch`, its end offset). `None` is Kafka's
    /// (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Reload the in-memory index of a segment whose file was replaced (compaction).
    pub(crate) fn replace_segment(&mut self, seg: Segment) {
        self.segments.insert(seg.base_offset, Box::new(seg));
    }
}

/// Unlink files [`Log::take_deleted_files`] handed over (no lock needed). Failures are
/// logged: the next open removes what is left.
pub fn remove_deleted_files(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a deleted segment file");
            }
        }
    }
}

/// The files a flush must fsync, taken under the partition's lock by [`Log::prepare_flush`]
/// and synced after it is released.
pub struct FlushPlan {
    files: Vec<(PathBuf, std::sync::Arc<std::fs::File>)>,
    upto: i64,
    truncations: u64,
}

impl FlushPlan {
    /// Step 2 of a flush, with no lock held: fsync the files.
    pub fn sync(&self) -> Result<(), StorageError> {
        for (path, file) in &self.files {
            crate::fsync::sync_data(file).map_err(|e| StorageError::io(path, e))?;
        }
        Ok(())
    }

    /// Nothing to fsync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Appends of one [`Log::append_validated_many`] call: copied into `Log::write_buf`, not yet
/// written.
struct Stage {
    /// (position in write_buf, patched header) of each staged batch.
    batches: Vec<(usize, BatchHeader)>,
    appends: Vec<StagedAppend>,
    /// One per input append, filled as each is decided.
    results: Vec<Option<Result<AppendInfo, AppendError>>>,
    leader_epoch: i32,
    log_append: bool,
    now_ms: i64,
    /// A write failed (its message): every later append fails too.
    failure: Option<String>,
}

impl Stage {
    fn failed(&self, dir: &Path) -> AppendError {
        let msg = self.failure.clone().unwrap_or_default();
        AppendError::Storage(StorageError::io(dir, std::io::Error::other(msg)))
    }
}

/// One append staged in [`Stage`].
struct StagedAppend {
    item: usize,
    first_offset: i64,
    last_offset: i64,
    record_count: u64,
    bytes: usize,
}

/// Decode the records of one batch (any codec).
pub(crate) fn decode_records(
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<kafka_protocol::records::Record>, StorageError> {
    let mut b = Bytes::copy_from_slice(bytes);
    kafka_protocol::records::RecordBatchDecoder::decode(&mut b)
        .map(|s| s.records)
        .map_err(|e| StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("cannot decode batch: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
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
