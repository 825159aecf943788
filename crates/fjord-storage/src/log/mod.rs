//! [`Log`]: one partition's log (Kafka's UnifiedLog + LocalLog) — segments, leader append
//! (offsets and epoch assigned here) and follower append (kept as the leader wrote them),
//! read, recovery, retention, truncation, the high watermark, and the checkpoint files next
//! to the segments.

use crate::cleaner::{CleanReport, CleanerCheckpoint};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::StorageError;
use crate::producer_state::ProducerStateManager;
use crate::segment::Segment;
use bytes::Bytes;
use fjord_protocol::batch::BatchHeader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod append;
mod flush;
mod load;
mod read;
mod retention;
mod truncate;

pub use append::TxnCheck;
pub use flush::FlushPlan;
pub use load::OpenReport;
pub(crate) use read::decode_records;
pub use retention::remove_deleted_files;

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
    /// A compaction pass was built but the log changed under it (truncation), so it was
    /// abandoned: nothing cleaned ([`crate::cleaner::install`]).
    pub compaction_stale: bool,
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
    /// Changes when the log is truncated or a segment replaced ([`Log::generation`]).
    generation: u64,
    /// `.deleted` files of removed segments not unlinked yet ([`Log::take_deleted_files`]).
    deleted_files: Vec<PathBuf>,
    pub(crate) cleaner: CleanerCheckpoint,
    /// What the cleaner checkpoint file holds (default if absent, which loads the same).
    cleaner_on_disk: CleanerCheckpoint,
    /// The clean-shutdown marker is on disk: nothing has changed the log's files since the
    /// clean close that wrote it. Cleared (and the file removed) by [`Log::mark_dirty`].
    clean_marker: bool,
}

/// Generations are unique across the process's logs, so a [`crate::cleaner::CleanInput`]
/// taken from one log is stale against another opened on the same directory later.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn remove_file(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

impl Log {
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

    /// Start verifying that this partition is in `producer_id`'s transaction (KIP-890 part
    /// 1): the guard its append must present, `None` if it has a transaction open here.
    pub fn start_verification(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> Option<u64> {
        self.producers
            .start_verification(producer_id, epoch, now_ms)
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Offsets below are committed: replicated to every ISR member (the replication layer
    /// decides; the log only keeps it in bounds and persists it).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The aborted transactions a read_committed fetch of `[from, upto)` must skip, as
    /// (producer id, first offset): Kafka's `aborted_transactions` of a fetch response.
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<(i64, i64)> {
        self.producers.aborted_between(from, upto)
    }

    /// The last stable offset at high watermark `high_watermark` (a leader's comes from its
    /// replication state, which the log's own checkpointed one lags): read_committed consumers
    /// read below it. The high watermark, or the first offset of the oldest open transaction
    /// if that is lower.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(high_watermark, |f| f.min(high_watermark))
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

    /// OffsetForLeaderEpoch: (largest epoch <= `epoch`, its end offset). `None` is Kafka's
    /// (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Install a segment whose file was replaced (compaction).
    pub(crate) fn replace_segment(&mut self, seg: Segment) {
        self.generation = next_generation();
        self.segments.insert(seg.base_offset, Box::new(seg));
    }

    /// Changes whenever data already in the log may change: truncation (which can cut a
    /// sealed segment and refill it to the same size) or a segment replaced by compaction.
    /// Appends, rolls and deletions from the front keep it. Work planned on a snapshot of
    /// the log checks it before installing its result (the cleaner does).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Unlink `path` after the lock is released, with the deleted segments' files
    /// ([`Log::take_deleted_files`]). A file nobody unlinks is left to the next open, which
    /// must tidy it (`.deleted`, `.cleaned`).
    pub(crate) fn defer_unlink(&mut self, path: PathBuf) {
        self.deleted_files.push(path);
    }
}
