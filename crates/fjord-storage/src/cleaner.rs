//! Log compaction for `cleanup.policy=compact` (and `compact,delete`), after Kafka's LogCleaner,
//! simplified to one partition and one pass:
//!
//! 1. [`plan`] (`&Log`): the cleanable range ends at the active segment, or earlier at the
//!    first segment holding records newer than `min.compaction.lag.ms`. Cleaning is due when
//!    the dirty ratio reaches `min.cleanable.dirty.ratio`, when a dirty segment is older than
//!    `max.compaction.lag.ms` (KIP-354), or when kept tombstones have passed
//!    `delete.retention.ms`.
//! 2. [`build`] (`&Log`): offset map key → latest offset over the dirty section, then every
//!    sealed segment below the end is rewritten into `{base}.log.cleaned` keeping only each
//!    key's latest record. Batches keep their offsets (gaps are fine), timestamps, producer
//!    id/epoch, last offset (as Kafka does) and codec (re-encoded with kafka-protocol).
//! 3. [`install`] (`&mut Log`): `.cleaned` → `.swap` → `.log` renames; a crash leaves either
//!    the old segment or a complete `.swap`, which [`crate::Log::open`] finishes installing.
//!
//! Steps 1–2 only read the log, so they can later run off the partition lock.
//!
//! Tombstones: rather than Kafka's per-batch delete horizon (which needs a base timestamp the
//! kafka-protocol encoder cannot write), the checkpoint records when the cleaner first kept
//! tombstones in each segment; they are dropped once `delete.retention.ms` has passed since.
//! Segments are not merged after cleaning (Kafka groups small ones).

use crate::error::StorageError;
use crate::log::{decode_records, Log};
use crate::segment::{scan_file, segment_path, Segment, LOG_SUFFIX};
use bytes::{Bytes, BytesMut};
use fjord_protocol::batch;
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

/// A rewritten segment waiting in `{base}.log.cleaned` (or unchanged: `path` None).
#[derive(Debug)]
pub struct CleanedSegment {
    pub base_offset: i64,
    pub path: Option<PathBuf>,
    pub has_tombstones: bool,
    pub records_removed: u64,
    pub size_before: u64,
    pub size_after: u64,
}

/// Run a pass if one is due.
pub fn maybe_clean(log: &mut Log, now_ms: i64) -> Result<Option<CleanReport>, StorageError> {
    let Some(plan) = plan(log, now_ms)? else {
        return Ok(None);
    };
    let cleaned = build(log, &plan)?;
    install(log, &plan, cleaned).map(Some)
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

/// Build the key map and write the cleaned segments. Reads only.
pub fn build(log: &Log, plan: &CleanPlan) -> Result<Vec<CleanedSegment>, StorageError> {
    // Key → latest offset in the dirty section.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for (_, seg) in log.segments.range(..plan.end_offset) {
        if seg.next_offset <= plan.first_dirty_offset {
            continue;
        }
        scan_file(seg.file()?, &seg.path, 0, seg.size, false, |_, h, bytes| {
            if h.is_control() || h.last_offset() < plan.first_dirty_offset {
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

    let mut out = Vec::new();
    let cfg = &log.config;
    for (&base, seg) in log.segments.range(..plan.end_offset) {
        let drop_tombstones = log
            .cleaner
            .tombstones_since
            .get(&base)
            .is_some_and(|&t| plan.now_ms.saturating_sub(t) >= cfg.delete_retention_ms);
        let mut new = Vec::with_capacity(seg.size as usize);
        let (mut removed, mut has_tombstones) = (0u64, false);
        scan_file(seg.file()?, &seg.path, 0, seg.size, false, |_, h, bytes| {
            if h.is_control() {
                new.extend_from_slice(bytes);
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
            } else if !kept.is_empty() {
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
                .map_err(|e| StorageError::Corrupt {
                    path: seg.path.clone(),
                    reason: format!("re-encoding batch at {}: {e}", h.base_offset),
                })?;
                let mut b = buf.to_vec();
                let new_h = batch::parse_header(&b).map_err(|e| StorageError::Corrupt {
                    path: seg.path.clone(),
                    reason: e.to_string(),
                })?;
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
                new.extend_from_slice(&b);
            }
            Ok(true)
        })?;
        let path = if removed > 0 {
            let p = segment_path(&log.dir, base, "log.cleaned");
            let f = std::fs::File::create(&p).map_err(|e| StorageError::io(&p, e))?;
            use std::io::Write;
            (&f).write_all(&new)
                .and_then(|_| crate::fsync::sync_all(&f))
                .map_err(|e| StorageError::io(&p, e))?;
            Some(p)
        } else {
            None
        };
        out.push(CleanedSegment {
            base_offset: base,
            path,
            has_tombstones,
            records_removed: removed,
            size_before: seg.size,
            size_after: new.len() as u64,
        });
    }
    Ok(out)
}

/// Swap the cleaned files in and advance the checkpoint.
pub fn install(
    log: &mut Log,
    plan: &CleanPlan,
    cleaned: Vec<CleanedSegment>,
) -> Result<CleanReport, StorageError> {
    let mut report = CleanReport {
        first_dirty_offset: plan.end_offset,
        ..Default::default()
    };
    if cleaned.iter().any(|c| c.path.is_some()) {
        log.mark_dirty()?;
    }
    for c in cleaned {
        let base = c.base_offset;
        report.bytes_before += c.size_before;
        if let Some(cleaned_path) = c.path {
            // The log may have changed under a planner running without the lock; here we run
            // under &mut, but check anyway so a stale plan cannot clobber a segment.
            let Some(seg) = log.segments.get(&base) else {
                std::fs::remove_file(&cleaned_path)
                    .map_err(|e| StorageError::io(&cleaned_path, e))?;
                continue;
            };
            if seg.size != c.size_before {
                std::fs::remove_file(&cleaned_path)
                    .map_err(|e| StorageError::io(&cleaned_path, e))?;
                continue;
            }
            let next_base = seg.next_offset;
            let swap = segment_path(&log.dir, base, "log.swap");
            let live = segment_path(&log.dir, base, LOG_SUFFIX);
            std::fs::rename(&cleaned_path, &swap).map_err(|e| StorageError::io(&swap, e))?;
            for suffix in ["index", "timeindex"] {
                let p = segment_path(&log.dir, base, suffix);
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io(&p, e));
                    }
                }
            }
            std::fs::rename(&swap, &live).map_err(|e| StorageError::io(&live, e))?;
            let new_seg = Segment::open_sealed(&log.dir, base, next_base)?;
            new_seg.index()?;
            new_seg.write_index()?;
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
    Ok(report)
}
