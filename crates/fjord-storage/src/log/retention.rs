//! Raising the log start (retention by time and size, DeleteRecords), deleting segments
//! (renamed under the lock, unlinked after it), and periodic maintenance.

use super::{remove_file, Log, MaintenanceReport, LOG_START_FILE};
use crate::cleaner;
use crate::error::StorageError;
use crate::producer_state::{self, ProducerStateManager};
use crate::segment::{segment_path, LOG_SUFFIX};
use std::path::{Path, PathBuf};

impl Log {
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
        self.producers.forget_aborted_before(offset);
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

    pub(super) fn delete_segment_files(dir: &Path, base: i64) -> Result<(), StorageError> {
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
    /// expiry. Compacts with `&mut self` held throughout, which can take long: for an owner
    /// with exclusive access (tests, tools). Under a lock others wait on, use
    /// [`Log::maintain_and_plan_clean`] and build the compaction without the lock.
    pub fn maintain(&mut self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let (mut report, clean) = self.maintain_and_plan_clean(now_ms)?;
        if let Some(input) = clean {
            let cleaned = cleaner::build(&input)?;
            report.cleaned = cleaner::install(self, &input, cleaned)?;
            report.compaction_stale = report.cleaned.is_none();
        }
        Ok(report)
    }

    /// [`Log::maintain`] except compaction: if a pass is due, it is planned and snapshotted
    /// ([`cleaner::prepare`]) and returned, for the caller to run [`cleaner::build`] without
    /// the log's lock and [`cleaner::install`] with it again. Cheap: no segment is read.
    pub fn maintain_and_plan_clean(
        &mut self,
        now_ms: i64,
    ) -> Result<(MaintenanceReport, Option<cleaner::CleanInput>), StorageError> {
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
        let clean = if self.config.cleanup_policy.compacts() {
            cleaner::prepare(self, now_ms)?
        } else {
            None
        };
        Ok((report, clean))
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
