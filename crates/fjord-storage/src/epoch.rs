//! Leader epoch cache (Kafka's LeaderEpochFileCache): `(epoch, start_offset)` for every epoch
//! that appended to this log, in the file `leader-epoch-checkpoint` (Kafka's text format:
//! version line `0`, entry count, then `epoch start_offset` lines).

use crate::error::StorageError;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// The cache of a log without a checkpoint file (what [`LeaderEpochCache::load`] returns
    /// then), without looking for the file.
    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            path: dir.join(CHECKPOINT_FILE),
            entries: Vec::new(),
        }
    }

    pub fn load(dir: &Path) -> Result<LeaderEpochCache, StorageError> {
        let path = dir.join(CHECKPOINT_FILE);
        let mut entries = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bad = |reason: &str| StorageError::Corrupt {
                    path: path.clone(),
                    reason: reason.to_string(),
                };
                let mut lines = text.lines();
                if lines.next().map(str::trim) != Some("0") {
                    return Err(bad("unknown version"));
                }
                let n: usize = lines
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .ok_or_else(|| bad("bad entry count"))?;
                for _ in 0..n {
                    let l = lines.next().ok_or_else(|| bad("missing entry"))?;
                    let mut it = l.split_whitespace();
                    let epoch = it.next().and_then(|x| x.parse().ok());
                    let start = it.next().and_then(|x| x.parse().ok());
                    match (epoch, start) {
                        (Some(epoch), Some(start_offset)) => entries.push(EpochEntry {
                            epoch,
                            start_offset,
                        }),
                        _ => return Err(bad("bad entry")),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(StorageError::Corrupt {
                    path,
                    reason: "not UTF-8".into(),
                })
            }
            Err(e) => return Err(StorageError::io(&path, e)),
        }
        Ok(LeaderEpochCache { path, entries })
    }

    fn persist(&self) -> Result<(), StorageError> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        crate::index::write_atomic(&self.path, s.as_bytes())
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Record that `epoch` starts at `start_offset`, if it is newer than the latest.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| l >= epoch) {
            return Ok(());
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()
    }

    /// Epoch of the record at `offset` (the last entry starting at or before it).
    pub fn epoch_for_offset(&self, offset: i64) -> i32 {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        if i == 0 {
            -1
        } else {
            self.entries[i - 1].epoch
        }
    }

    /// Kafka's `endOffsetFor`: (largest epoch <= `requested`, start offset of the next higher
    /// epoch or the log end). `None` means Kafka's (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    /// = (-1, -1).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if requested < 0 {
            return None;
        }
        if self.latest_epoch() == Some(requested) {
            return Some((requested, log_end_offset));
        }
        let higher = self.entries.iter().find(|e| e.epoch > requested)?;
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            // Older than anything we know: Kafka answers (requested, start of the next epoch).
            None => Some((requested, higher.start_offset)),
            Some(floor) => Some((floor.epoch, higher.start_offset)),
        }
    }

    /// Drop entries starting at or after `end_offset` (log truncated to `end_offset`).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), StorageError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Log start moved to `start_offset`: drop entries wholly before it and move the epoch
    /// covering it to start there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), StorageError> {
        let i = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if i == 0 {
            return Ok(());
        }
        let mut keep = self.entries.split_off(i - 1);
        if keep[0].start_offset != start_offset || i > 1 {
            keep[0].start_offset = start_offset;
            self.entries = keep;
            self.persist()
        } else {
            self.entries = keep;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_like_kafka() {
        let d = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(d.path()).unwrap();
        assert_eq!(c.end_offset_for(0, 0), None);
        c.assign(2, 10).unwrap();
        c.assign(4, 20).unwrap();
        c.assign(3, 15).unwrap(); // ignored: not newer
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(3, 30), Some((2, 20)));
        assert_eq!(c.end_offset_for(2, 30), Some((2, 20)));
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(5, 30), None);
        assert_eq!(c.end_offset_for(-1, 30), None);
        assert_eq!(c.epoch_for_offset(12), 2);
        assert_eq!(c.epoch_for_offset(9), -1);

        let c2 = LeaderEpochCache::load(d.path()).unwrap();
        assert_eq!(c2.entries(), c.entries());

        c.truncate_from_start(12).unwrap();
        assert_eq!(
            c.entries()[0],
            EpochEntry {
                epoch: 2,
                start_offset: 12
            }
        );
        c.truncate_from_end(20).unwrap();
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(
            LeaderEpochCache::load(d.path()).unwrap().entries(),
            c.entries()
        );
    }
}
