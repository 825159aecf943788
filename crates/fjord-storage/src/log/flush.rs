//! Flush, split so that fsyncs run with the partition's lock released: plan under the
//! lock, sync outside it, move the recovery point under it again.

use super::Log;
use crate::error::StorageError;
use std::path::PathBuf;

impl Log {
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
