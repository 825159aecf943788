//! Follower truncation: to an offset, or fully to start again at an offset.

use super::{remove_file, Log, LOG_START_FILE};
use crate::cleaner::CleanerCheckpoint;
use crate::error::StorageError;
use crate::producer_state::{self, ProducerStateManager};
use crate::segment::Segment;
use fjord_protocol::clock::now_ms;

impl Log {
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
        let seg = Segment::create(&self.dir, offset, now_ms())?;
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
        self.generation = super::next_generation();
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
}
