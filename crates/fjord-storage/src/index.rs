//! Sparse offset and time indexes of one segment, held in memory and written to disk whole
//! (`.index`, `.timeindex`) when the segment is sealed, or flushed or closed with its index
//! changed since it was last written.
//!
//! Kafka mmaps preallocated index files; we keep `Vec`s instead because an index is small
//! (one entry per `index.interval.bytes`) and writing it whole, via a temp file and rename,
//! means a crash can never leave a half-written index that looks valid.
//!
//! - offset index entry: `relative_offset u32 | position u32` (big-endian) — the batch whose
//!   base offset is `base + relative_offset` starts at byte `position`.
//! - time index entry: `timestamp i64 | relative_offset u32` — every record at or before
//!   `base + relative_offset` has a timestamp <= `timestamp` (the max timestamp so far, and the
//!   batch ending at that offset first reached it).

use crate::error::StorageError;
use std::path::Path;

pub const OFFSET_ENTRY_SIZE: usize = 8;
pub const TIME_ENTRY_SIZE: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (relative offset of a batch's base offset, file position of that batch)
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp so far, relative last offset of the batch that first reached it)
    pub times: Vec<(i64, u32)>,
}

impl SegmentIndex {
    /// File position from which to scan for `relative_offset`: the last indexed batch that
    /// starts at or before it.
    pub fn lookup_offset(&self, relative_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.0 <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// The last indexed batch position at or below the file position `pos` (0 if none): a
    /// batch boundary from which to walk batch headers up to `pos`.
    pub fn lookup_position(&self, pos: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.1 <= pos);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// The relative offset from which to scan for the first record with timestamp >= `ts`:
    /// just past the last time entry whose max timestamp is strictly below `ts` (all records up
    /// to that entry's offset are older than `ts`). `None` means from the segment start.
    pub fn lookup_time(&self, ts: i64) -> Option<u32> {
        let i = self.times.partition_point(|e| e.0 < ts);
        if i == 0 {
            None
        } else {
            Some(self.times[i - 1].1 + 1)
        }
    }

    /// Largest timestamp recorded in the time index.
    pub fn max_timestamp(&self) -> Option<(i64, u32)> {
        self.times.last().copied()
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_SIZE);
        for (r, p) in &self.offsets {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_SIZE);
        for (t, r) in &self.times {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    /// Decode both files and sanity-check them against the log size. `None` if either is
    /// missing, torn or inconsistent — the caller rebuilds from the log.
    pub fn load(index: &Path, timeindex: &Path, log_size: u64) -> Option<SegmentIndex> {
        let ob = std::fs::read(index).ok()?;
        let tb = std::fs::read(timeindex).ok()?;
        if ob.len() % OFFSET_ENTRY_SIZE != 0 || tb.len() % TIME_ENTRY_SIZE != 0 {
            return None;
        }
        let offsets: Vec<(u32, u32)> = ob
            .chunks_exact(OFFSET_ENTRY_SIZE)
            .map(|c| {
                (
                    u32::from_be_bytes(c[0..4].try_into().expect("4")),
                    u32::from_be_bytes(c[4..8].try_into().expect("4")),
                )
            })
            .collect();
        let times: Vec<(i64, u32)> = tb
            .chunks_exact(TIME_ENTRY_SIZE)
            .map(|c| {
                (
                    i64::from_be_bytes(c[0..8].try_into().expect("8")),
                    u32::from_be_bytes(c[8..12].try_into().expect("4")),
                )
            })
            .collect();
        let monotonic_o = offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let monotonic_t = times
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let in_bounds = offsets.last().is_none_or(|e| (e.1 as u64) < log_size);
        if !(monotonic_o && monotonic_t && in_bounds) {
            return None;
        }
        Some(SegmentIndex { offsets, times })
    }

    /// Write both files atomically (temp file + rename).
    pub fn write(&self, index: &Path, timeindex: &Path) -> Result<(), StorageError> {
        write_atomic(index, &self.encode_offsets())?;
        write_atomic(timeindex, &self.encode_times())
    }
}

/// Replace `path` with `data` via `path.tmp` and a rename, so readers see old or new, not torn.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(|e| StorageError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let idx = SegmentIndex {
            offsets: vec![(0, 0), (10, 100), (20, 250)],
            times: vec![(5, 9), (8, 19), (12, 29)],
        };
        assert_eq!(idx.lookup_offset(0), 0);
        assert_eq!(idx.lookup_offset(9), 0);
        assert_eq!(idx.lookup_offset(10), 100);
        assert_eq!(idx.lookup_offset(1000), 250);
        assert_eq!(idx.lookup_time(5), None);
        assert_eq!(idx.lookup_time(6), Some(10));
        assert_eq!(idx.lookup_time(100), Some(30));
    }

    #[test]
    fn roundtrip_and_rejects_torn_files() {
        let d = tempfile::tempdir().unwrap();
        let (i, t) = (d.path().join("a.index"), d.path().join("a.timeindex"));
        let idx = SegmentIndex {
            offsets: vec![(0, 0), (10, 100)],
            times: vec![(5, 9)],
        };
        idx.write(&i, &t).unwrap();
        assert_eq!(SegmentIndex::load(&i, &t, 200), Some(idx.clone()));
        // Position beyond the log: stale index.
        assert_eq!(SegmentIndex::load(&i, &t, 50), None);
        std::fs::write(&i, [0u8; 5]).unwrap();
        assert_eq!(SegmentIndex::load(&i, &t, 200), None);
    }
}
