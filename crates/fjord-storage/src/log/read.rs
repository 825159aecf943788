//! Reads: whole batches by offset (as bytes or a file range), and timestamp lookups.

use super::{Log, ReadResult};
use crate::error::{ReadError, StorageError};
use crate::segment::FileRange;
use bytes::Bytes;
use std::path::Path;

impl Log {
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

    /// Does a read at `offset` start below the active segment? Such reads (consumers catching
    /// up, followers restarting) may load a segment index and read pages that are not cached:
    /// they may wait for the disk.
    pub fn reads_sealed_segment(&self, offset: i64) -> bool {
        offset < self.active().base_offset
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
