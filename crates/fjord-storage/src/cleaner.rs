//! Log compaction for `cleanup.policy=compact` (and `compact,delete`), after Kafka's LogCleaner,
//! simplified to one partition and one pass. The pass is split so that the long part, reading
//! and rewriting segments, runs without the partition's lock:
//!
//! 1. [`prepare`] (`&Log`, under the lock, cheap): [`plan`] the cleanable range — it ends at
//!    the active segment, or earlier at the first segment holding records newer than
//!    `min.compaction.lag.ms`. Cleaning is due when the dirty ratio reaches
//!    `min.cleanable.dirty.ratio`, when a dirty segment is older than `max.compaction.lag.ms`
//!    (KIP-354), or when kept tombstones have passed `delete.retention.ms`. Then snapshot what
//!    the build reads into a [`CleanInput`]: each sealed segment below the end with its size
//!    and open file, the tombstone times, and the log's [generation](Log::generation).
//! 2. [`build`] (`&CleanInput`, no lock): offset map key → latest offset over the dirty
//!    section, then every segment of the snapshot is rewritten into `{base}.log.cleaned`
//!    (with its `.index.cleaned` / `.timeindex.cleaned`) keeping only each key's latest
//!    record. Batches keep their offsets (gaps are fine), timestamps, producer id/epoch, last
//!    offset (as Kafka does) and codec (re-encoded with kafka-protocol). Sealed segments change
//!    only by truncation, deletion or replacement, so bytes `[0, size)` of the snapshot are
//!    stable; the snapshot's `Arc<File>` keeps a segment readable even if retention unlinks it.
//! 3. [`install`] (`&mut Log`, under the lock, cheap: renames): first the staleness check.
//!    If the log was truncated or had a segment replaced since the snapshot (its generation
//!    moved), or a snapshot segment has another size, the pass is abandoned: the `.cleaned`
//!    files go and nothing counts as cleaned (the next pass starts over). A segment deleted
//!    meanwhile (retention, DeleteRecords: only a prefix of the log goes, so the keys
//!    superseding records in later segments are still there) is just skipped. Otherwise
//!    `.cleaned` → `.swap` → `.log` renames; a crash leaves either the old segment or a
//!    complete `.swap`, which [`crate::Log::open`] finishes installing.
//!
//! [`maybe_clean`] runs the three in a row for an owner with exclusive access (tests); the
//! broker's maintenance loop takes the lock for steps 1 and 3 only
//! ([`Log::maintain_and_plan_clean`]).
//!
//! Transactions, as Kafka's cleaner: the cleanable range also ends at the segment holding the
//! first unstable offset (an open transaction's records may still be aborted, so they must not
//! supersede anything), and the batches of aborted transactions are dropped — they neither
//! count for their keys in the offset map (a key's committed value survives an aborted
//! newer one) nor stay in the log. Markers (control batches) are kept: Kafka drops one once
//! its transaction has no data left and `delete.retention.ms` has passed; here they stay,
//! which costs a few dozen bytes per transaction and can never expose aborted data.
//!
//! Tombstones: rather than Kafka's per-batch delete horizon (which needs a base timestamp the
//! kafka-protocol encoder cannot write), the checkpoint records when the cleaner first kept
//! tombstones in each segment; they are dropped once `delete.retention.ms` has passed since.
//! Segments are not merged after cleaning (Kafka groups small ones).

use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::log::{decode_records, Log};
use crate::segment::{
    scan_file, segment_path, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use bytes::{Bytes, BytesMut};
use fjord_protocol::batch;
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint.json";

/// Cleaner progress for one partition, persisted next to its segments.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerCheckpoint {
    /// Everything below has been cleaned at least once.
    pub first_dirty_offset: i64,
    /// Segment base offset → time (ms) the cleaner first kept tombstones in it.
    pub tombstones_since: BTreeMap<i64, i64>,
}

impl CleanerCheckpoint {
    pub fn load(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(CHECKPOINT_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }
    pub fn persist(&self, dir: &Path) -> Result<(), StorageError> {
        let data = serde_json::to_vec(self).expect("serializable");
        crate::index::write_atomic(&dir.join(CHECKPOINT_FILE), &data)
    }
    pub fn forget_segment(&mut self, base: i64) {
        self.tombstones_since.remove(&base);
    }
    pub fn truncate(&mut self, log_end_offset: i64) {
        self.first_dirty_offset = self.first_dirty_offset.min(log_end_offset);
        self.tombstones_since.retain(|&b, _| b < log_end_offset);
    }
}

/// What one cleaning pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub first_dirty_offset: i64,
}

/// The range to clean, decided on `&Log`.
#[derive(Debug, Clone)]
pub struct CleanPlan {
    pub first_dirty_offset: i64,
    /// Exclusive: base offset of the first segment not cleaned.
    pub end_offset: i64,
    pub now_ms: i64,
}

/// A sealed segment as [`prepare`] saw it: what [`build`] reads, without the lock.
#[derive(Debug)]
struct SnapshotSegment {
    base_offset: i64,
    path: PathBuf,
    /// Bytes `[0, size)` are read; a different size at install means the snapshot is stale.
    size: u64,
    next_offset: i64,
    /// Held so the bytes stay readable even if retention unlinks the file meanwhile.
    file: Arc<File>,
}

/// Everything [`build`] needs, taken from the log under its lock by [`prepare`] so the build
/// can run without it. Holding it keeps the snapshot segments' files open: drop it after the
/// lock is released (an old segment's last reference may be here, and closing it frees the
/// file's blocks).
#[derive(Debug)]
pub struct CleanInput {
    pub plan: CleanPlan,
    dir: PathBuf,
    /// [`Log::generation`] at the snapshot.
    generation: u64,
    delete_retention_ms: i64,
    index_interval_bytes: usize,
    tombstones_since: BTreeMap<i64, i64>,
    /// Aborted transactions starting in the range: producer id → (first offset, marker
    /// offset) spans.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Sealed segments below `plan.end_offset`, oldest first.
    segments: Vec<SnapshotSegment>,
}

impl CleanInput {
    /// Whether batch `h` belongs to an aborted transaction (its data, not its marker).
    fn is_aborted(&self, h: &batch::BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.get(&h.producer_id).is_some_and(|spans| {
                spans
                    .iter()
                    .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
            })
    }
}

impl CleanInput {
    /// Base offsets of the segments the pass rewrites (if anything in them is superseded).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }
}

/// A rewritten segment waiting in `{base}.log.cleaned` (or unchanged: `path` None). Dropping
/// it removes files not installed.
#[derive(Debug)]
pub struct CleanedSegment {
    pub base_offset: i64,
    /// The `.log.cleaned` file; its `.index.cleaned` and `.timeindex.cleaned` go with it.
    pub path: Option<PathBuf>,
    /// The rewritten segment's index, as written to `.index.cleaned` / `.timeindex.cleaned`.
    index: Option<SegmentIndex>,
    pub has_tombstones: bool,
    pub records_removed: u64,
    pub size_before: u64,
    pub size_after: u64,
}

impl CleanedSegment {
    fn files(log_path: &Path) -> [PathBuf; 3] {
        let dir = log_path.parent().unwrap_or(Path::new(""));
        let stem = log_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log.cleaned"))
            .unwrap_or_default();
        [
            log_path.to_path_buf(),
            dir.join(format!("{stem}.{INDEX_SUFFIX}.cleaned")),
            dir.join(format!("{stem}.{TIME_INDEX_SUFFIX}.cleaned")),
        ]
    }
}

impl CleanedSegment {
    /// Hand the files to `log` to unlink once its lock is released (unlinking a big file can
    /// take long): [`Log::take_deleted_files`].
    fn remove_after_lock(&mut self, log: &mut Log) {
        if let Some(p) = self.path.take() {
            for f in Self::files(&p) {
                log.defer_unlink(f);
            }
        }
    }
}

impl Drop for CleanedSegment {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            for f in Self::files(&p) {
                if let Err(e) = std::fs::remove_file(&f) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %f.display(), error = %e,
                            "cannot remove a cleaned segment file (the next open will)");
                    }
                }
            }
        }
    }
}

/// Run a pass if one is due, holding `log` throughout (for an exclusive owner; the broker
/// uses [`prepare`], [`build`] and [`install`] with the lock held for the first and last only).
pub fn maybe_clean(log: &mut Log, now_ms: i64) -> Result<Option<CleanReport>, StorageError> {
    let Some(input) = prepare(log, now_ms)? else {
        return Ok(None);
    };
    let cleaned = build(&input)?;
    install(log, &input, cleaned)
}

fn first_batch_timestamp(seg: &Segment) -> Result<Option<i64>, StorageError> {
    Ok(seg.read_header_at(0)?.map(|h| h.base_timestamp))
}

/// Decide whether cleaning is due and over which range.
pub fn plan(log: &Log, now_ms: i64) -> Result<Option<CleanPlan>, StorageError> {
    let cfg = &log.config;
    let active_base = log.active().base_offset;
    let mut end = active_base;
    if cfg.min_compaction_lag_ms > 0 {
        for (&b, seg) in log.segments.range(..active_base) {
            if now_ms.saturating_sub(seg.largest_timestamp()?) < cfg.min_compaction_lag_ms {
                end = b;
                break;
            }
        }
    }
    // Not past an open transaction: its records may still be aborted.
    if let Some(unstable) = log.producer_state().first_unstable_offset() {
        if let Some((&b, _)) = log.segments.range(..=unstable).next_back() {
            end = end.min(b);
        }
    }
    let first_dirty = log.cleaner.first_dirty_offset.max(log.log_start_offset);
    let bases: Vec<i64> = log.segments.keys().copied().collect();
    let (mut clean_bytes, mut dirty_bytes, mut forced) = (0u64, 0u64, false);
    for (i, &b) in bases.iter().enumerate() {
        if b >= end {
            break;
        }
        let next = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        let seg = &log.segments[&b];
        if next <= first_dirty {
            clean_bytes += seg.size;
        } else {
            dirty_bytes += seg.size;
            if let Some(ts) = first_batch_timestamp(seg)? {
                forced |= now_ms.saturating_sub(ts) > cfg.max_compaction_lag_ms;
            }
        }
    }
    let tombstones_due = log
        .cleaner
        .tombstones_since
        .iter()
        .any(|(&b, &t)| b < end && now_ms.saturating_sub(t) >= cfg.delete_retention_ms);
    let ratio = if dirty_bytes == 0 {
        0.0
    } else {
        dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64
    };
    let due =
        (dirty_bytes > 0 && (ratio >= cfg.min_cleanable_dirty_ratio || forced)) || tombstones_due;
    if !due {
        return Ok(None);
    }
    Ok(Some(CleanPlan {
        first_dirty_offset: first_dirty,
        end_offset: end,
        now_ms,
    }))
}

/// [`plan`], and if cleaning is due, snapshot what [`build`] needs. Cheap: no segment is
/// read (files of segments not read yet are opened).
pub fn prepare(log: &Log, now_ms: i64) -> Result<Option<CleanInput>, StorageError> {
    let Some(plan) = plan(log, now_ms)? else {
        return Ok(None);
    };
    let mut segments = Vec::new();
    for (&base, seg) in log.segments.range(..plan.end_offset) {
        segments.push(SnapshotSegment {
            base_offset: base,
            path: seg.path.clone(),
            size: seg.size,
            next_offset: seg.next_offset,
            file: seg.file()?.clone(),
        });
    }
    let tombstones_since = log
        .cleaner
        .tombstones_since
        .range(..plan.end_offset)
        .map(|(&b, &t)| (b, t))
        .collect();
    let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for a in log.producer_state().aborted_before(plan.end_offset) {
        aborted
            .entry(a.producer_id)
            .or_default()
            .push((a.first_offset, a.last_offset));
    }
    Ok(Some(CleanInput {
        aborted,
        plan,
        dir: log.dir.clone(),
        generation: log.generation(),
        delete_retention_ms: log.config.delete_retention_ms,
        index_interval_bytes: log.config.index_interval_bytes,
        tombstones_since,
        segments,
    }))
}

/// Build the key map and write the cleaned segments, from the snapshot only: call it without
/// the partition's lock. Reads the segments and writes (and fsyncs) `.cleaned` files, which
/// are removed again if it fails.
pub fn build(input: &CleanInput) -> Result<Vec<CleanedSegment>, StorageError> {
    let plan = &input.plan;
    // Key → latest offset in the dirty section.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for seg in &input.segments {
        if seg.next_offset <= plan.first_dirty_offset {
            continue;
        }
        scan_file(&seg.file, &seg.path, 0, seg.size, false, |_, h, bytes| {
            if h.is_control() || h.last_offset() < plan.first_dirty_offset || input.is_aborted(h) {
                return Ok(true);
            }
            for r in decode_records(bytes, &seg.path)? {
                if let Some(k) = r.key {
                    if r.offset >= plan.first_dirty_offset {
                        latest.insert(k, r.offset);
                    }
                }
            }
            Ok(true)
        })?;
    }

    // On an error, dropping `out` removes the files written so far.
    let mut out = Vec::with_capacity(input.segments.len());
    for seg in &input.segments {
        out.push(rewrite(input, seg, &latest)?);
    }
    Ok(out)
}

/// Rewrite one segment keeping each key's latest record (per `latest`).
fn rewrite(
    input: &CleanInput,
    seg: &SnapshotSegment,
    latest: &HashMap<Bytes, i64>,
) -> Result<CleanedSegment, StorageError> {
    let base = seg.base_offset;
    let drop_tombstones = input
        .tombstones_since
        .get(&base)
        .is_some_and(|&t| input.plan.now_ms.saturating_sub(t) >= input.delete_retention_ms);
    let mut new = Vec::with_capacity(seg.size as usize);
    // (position in `new`, header) of every batch kept, for the index.
    let mut kept_batches = Vec::new();
    let (mut removed, mut has_tombstones) = (0u64, false);
    scan_file(&seg.file, &seg.path, 0, seg.size, false, |_, h, bytes| {
        let pos = new.len() as u64;
        if h.is_control() {
            new.extend_from_slice(bytes);
            kept_batches.push((pos, *h));
            return Ok(true);
        }
        if input.is_aborted(h) {
            removed += h.records_count.max(0) as u64;
            return Ok(true);
        }
        let records = decode_records(bytes, &seg.path)?;
        let n = records.len();
        let kept: Vec<_> = records
            .into_iter()
            .filter(|r| {
                let Some(k) = &r.key else { return false };
                let newest = latest.get(k).is_none_or(|&o| r.offset >= o);
                newest && !(r.value.is_none() && drop_tombstones)
            })
            .collect();
        has_tombstones |= kept.iter().any(|r| r.value.is_none());
        removed += (n - kept.len()) as u64;
        if kept.len() == n {
            new.extend_from_slice(bytes);
            kept_batches.push((pos, *h));
        } else if !kept.is_empty() {
            let corrupt = |reason: String| StorageError::Corrupt {
                path: seg.path.clone(),
                reason,
            };
            let compression = match h.compression() {
                1 => Compression::Gzip,
                2 => Compression::Snappy,
                3 => Compression::Lz4,
                4 => Compression::Zstd,
                _ => Compression::None,
            };
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                kept.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .map_err(|e| corrupt(format!("re-encoding batch at {}: {e}", h.base_offset)))?;
            let mut b = buf.to_vec();
            let new_h = batch::parse_header(&b).map_err(|e| corrupt(e.to_string()))?;
            // Keep the original last offset (the log end and producer state depend on it)
            // and sequence numbering, as Kafka's cleaner does.
            let base_seq = if h.base_sequence < 0 {
                -1
            } else {
                new_h.base_sequence
            };
            batch::set_last_offset_delta_and_base_sequence(
                &mut b,
                (h.last_offset() - new_h.base_offset) as i32,
                base_seq,
            );
            if h.is_log_append_time() {
                batch::set_log_append_time(&mut b, h.max_timestamp);
            }
            let final_h = batch::parse_header(&b).map_err(|e| corrupt(e.to_string()))?;
            new.extend_from_slice(&b);
            kept_batches.push((pos, final_h));
        }
        Ok(true)
    })?;
    let mut cleaned = CleanedSegment {
        base_offset: base,
        path: None,
        index: None,
        has_tombstones,
        records_removed: removed,
        size_before: seg.size,
        size_after: new.len() as u64,
    };
    if removed > 0 {
        let p = segment_path(&input.dir, base, "log.cleaned");
        // Set before writing: if a write fails, dropping `cleaned` removes what was written.
        cleaned.path = Some(p.clone());
        let f = std::fs::File::create(&p).map_err(|e| StorageError::io(&p, e))?;
        use std::io::Write;
        (&f).write_all(&new)
            .and_then(|_| crate::fsync::sync_all(&f))
            .map_err(|e| StorageError::io(&p, e))?;
        let idx = Segment::index_of_batches(
            base,
            kept_batches.iter().map(|(p, h)| (*p, h)),
            input.index_interval_bytes,
        );
        let [_, index, timeindex] = CleanedSegment::files(&p);
        idx.write(&index, &timeindex)?;
        cleaned.index = Some(idx);
    }
    Ok(cleaned)
}

/// Why [`install`] found a build stale, if it did.
fn staleness(log: &Log, input: &CleanInput) -> Option<&'static str> {
    if log.dir != input.dir {
        return Some("another log");
    }
    if log.generation() != input.generation {
        return Some("log truncated or segments replaced");
    }
    for s in &input.segments {
        match log.segments.get(&s.base_offset) {
            Some(seg) if seg.size != s.size => return Some("segment size changed"),
            Some(_) => {}
            // Deleted from the front (retention, DeleteRecords): its records are gone, and
            // the later segments' are not, so the rest of the build still holds.
            None if s.base_offset < log.log_start_offset => {}
            None => return Some("segment gone"),
        }
    }
    None
}

/// Swap the cleaned files in and advance the checkpoint, unless the log changed under the
/// build in a way that invalidates it ([`CleanInput`]'s staleness rules): then the `.cleaned`
/// files are dropped, nothing counts as cleaned and the result is `None`. Cheap: renames and
/// small index writes. Call it with the lock that [`prepare`] held.
pub fn install(
    log: &mut Log,
    input: &CleanInput,
    cleaned: Vec<CleanedSegment>,
) -> Result<Option<CleanReport>, StorageError> {
    let plan = &input.plan;
    if let Some(reason) = staleness(log, input) {
        tracing::info!(dir = %log.dir.display(), first_dirty = plan.first_dirty_offset,
            end = plan.end_offset, reason, "log changed during compaction; pass abandoned");
        for mut c in cleaned {
            c.remove_after_lock(log);
        }
        return Ok(None);
    }
    let mut report = CleanReport {
        first_dirty_offset: plan.end_offset,
        ..Default::default()
    };
    if cleaned.iter().any(|c| c.path.is_some()) {
        log.mark_dirty()?;
    }
    for mut c in cleaned {
        let base = c.base_offset;
        if !log.segments.contains_key(&base) {
            // Deleted from the front meanwhile (see `staleness`).
            c.remove_after_lock(log);
            continue;
        }
        report.bytes_before += c.size_before;
        if let Some(cleaned_path) = c.path.take() {
            let [_, cleaned_index, cleaned_timeindex] = CleanedSegment::files(&cleaned_path);
            let next_base = log.segments[&base].next_offset;
            let swap = segment_path(&log.dir, base, "log.swap");
            let live = segment_path(&log.dir, base, LOG_SUFFIX);
            std::fs::rename(&cleaned_path, &swap).map_err(|e| StorageError::io(&swap, e))?;
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let p = segment_path(&log.dir, base, suffix);
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io(&p, e));
                    }
                }
            }
            std::fs::rename(&swap, &live).map_err(|e| StorageError::io(&live, e))?;
            // A crash before these renames leaves the segment without index files, which
            // opening rebuilds.
            for (from, suffix) in [
                (&cleaned_index, INDEX_SUFFIX),
                (&cleaned_timeindex, TIME_INDEX_SUFFIX),
            ] {
                let to = segment_path(&log.dir, base, suffix);
                std::fs::rename(from, &to).map_err(|e| StorageError::io(&to, e))?;
            }
            let new_seg = Segment::open_sealed(&log.dir, base, next_base)?;
            if let Some(idx) = c.index.take() {
                new_seg.set_index(idx);
            }
            log.replace_segment(new_seg);
            report.segments_rewritten += 1;
            report.records_removed += c.records_removed;
            report.bytes_after += c.size_after;
        } else {
            report.bytes_after += c.size_before;
        }
        if c.has_tombstones {
            log.cleaner
                .tombstones_since
                .entry(base)
                .or_insert(plan.now_ms);
        } else {
            log.cleaner.tombstones_since.remove(&base);
        }
    }
    log.cleaner.first_dirty_offset = log.cleaner.first_dirty_offset.max(plan.end_offset);
    log.persist_cleaner()?;
    tracing::info!(dir = %log.dir.display(), first_dirty = plan.first_dirty_offset,
        end = plan.end_offset, rewritten = report.segments_rewritten,
        removed = report.records_removed, bytes_before = report.bytes_before,
        bytes_after = report.bytes_after, "compacted log");
    Ok(Some(report))
}
