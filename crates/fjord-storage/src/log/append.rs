//! Leader append (offsets, epoch and timestamps patched into one buffer, one write for
//! several queued requests), follower append (batches kept as the leader wrote them),
//! the flush-policy count, and segment rolls.

use super::{AppendInfo, Log};
use crate::config::TimestampType;
use crate::error::{AppendError, StorageError};
use crate::producer_state::{Check, ProducerEntry};
use crate::segment::Segment;
use fjord_protocol::batch::{self, BatchHeader, BatchIter};
use fjord_protocol::records::{self, AppendOrigin, ValidatedRecords};
use std::os::unix::fs::FileExt;
use std::path::Path;

impl Log {
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
        let checks = vec![TxnCheck::Exempt; items.len()];
        self.append_validated_many_checked(items, &checks, leader_epoch, now_ms)
    }

    /// [`Log::append_validated_many`] with each append's transaction check: a client's
    /// transactional batch may open a transaction only with a verification guard that is
    /// still the producer's (KIP-890 part 1, [`ProducerStateManager::start_verification`]).
    ///
    /// [`ProducerStateManager::start_verification`]: crate::producer_state::ProducerStateManager::start_verification
    pub fn append_validated_many_checked(
        &mut self,
        items: &[(&[u8], &ValidatedRecords)],
        checks: &[TxnCheck],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Vec<Result<AppendInfo, AppendError>> {
        let mut stage = Stage {
            markers: Vec::new(),
            batches: std::mem::take(&mut self.batch_buf),
            pieces: Vec::new(),
            staged: 0,
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
            let check = checks.get(i).copied().unwrap_or(TxnCheck::Exempt);
            match self.stage_append(
                i,
                records,
                validated,
                check,
                &mut pending,
                &mut next,
                &mut stage,
            ) {
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
    fn write_staged(&mut self, stage: &mut Stage<'_>) {
        if stage.appends.is_empty() {
            return;
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.segments.values_mut().next_back().expect("never empty");
        let start = seg.size;
        let written = seg
            .file()
            .and_then(|f| {
                write_pieces_at(f, &stage.pieces, &self.write_buf, start)
                    .map_err(|e| StorageError::io(&seg.path, e))
            })
            .and_then(|()| seg.index_mut().map(|_| ()));
        if let Err(e) = written {
            stage.failure = Some(e.to_string());
            for a in stage.appends.drain(..) {
                stage.results[a.item] = Some(Err(AppendError::Storage(e.duplicate())));
            }
            stage.clear_written();
            self.write_buf.clear();
            return;
        }
        for (pos, h) in stage.batches.iter() {
            seg.track_batch(start + *pos as u64, h, interval);
        }
        self.index_dirty = true;
        self.producers_persisted_at = None;
        for ((_, h), marker) in stage.batches.iter().zip(&stage.markers) {
            if h.has_producer_id() {
                self.producers.apply(h, *marker);
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
        stage.clear_written();
        self.write_buf.clear();
    }

    /// Check one append of [`Log::append_validated_many`] and stage it behind the staged ones
    /// (writing those first if a roll is due), with offsets, epoch and timestamps patched.
    /// Only what changes is copied: each batch's first [`PATCHED_PREFIX`] bytes (base offset,
    /// length, leader epoch — outside the CRC) go to `write_buf` and the rest is written from
    /// the caller's buffer; a batch whose timestamps change (and so its CRC) is copied whole.
    /// `Ok(Some(_))`: a duplicate, answered with the original offsets.
    #[allow(clippy::too_many_arguments)]
    fn stage_append<'a>(
        &mut self,
        item: usize,
        records: &'a [u8],
        validated: &ValidatedRecords,
        check: TxnCheck,
        pending: &mut Vec<ProducerEntry>,
        next: &mut i64,
        stage: &mut Stage<'a>,
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
        // Producer state: epochs, sequences, duplicates; markers' coordinator epochs; a
        // client's transaction verification.
        let mark = pending.len();
        let mut markers = Vec::with_capacity(validated.batches.len());
        for b in &validated.batches {
            let h = &b.header;
            let mut marker = None;
            if h.has_producer_id() && h.is_control() {
                let bytes = records
                    .get(b.position..b.position + h.total_size())
                    .unwrap_or_default();
                marker = fjord_protocol::control::read_marker(bytes)
                    .map_err(|e| AppendError::InvalidRecord(e.to_string()))
                    .inspect_err(|_| pending.truncate(mark))?;
                if let Some(m) = marker {
                    self.producers
                        .check_marker(pending, h, m.coordinator_epoch)
                        .inspect_err(|_| pending.truncate(mark))?;
                }
            }
            markers.push(marker);
            if let TxnCheck::Verified(guard) = check {
                if h.has_producer_id() {
                    self.producers
                        .check_verified(pending, h, guard)
                        .inspect_err(|_| pending.truncate(mark))?;
                }
            }
            if h.has_producer_id() {
                match self.producers.check(pending, h) {
                    Err(e) => {
                        pending.truncate(mark);
                        return Err(e);
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
                        let mut e = self.producers.updated_entry(pending, h);
                        if let Some(m) = marker {
                            e.coordinator_epoch = e.coordinator_epoch.max(m.coordinator_epoch);
                        }
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

        let base = stage.staged;
        let first_batch = stage.batches.len();
        let first_offset = *next;
        // The batches tile the records (the validator walked them back to back); if they ever
        // did not, copy the records whole, as they are.
        let tiled = validated.batches.iter().try_fold(0usize, |at, vb| {
            (vb.position == at).then_some(at + vb.header.total_size())
        }) == Some(records.len());
        if !tiled {
            let at = self.write_buf.len();
            self.write_buf.extend_from_slice(records);
            stage.pieces.push(Piece::Buf(at..self.write_buf.len()));
        }
        for vb in &validated.batches {
            let mut h = vb.header;
            let pos = base + vb.position;
            let size = h.total_size();
            let whole = !tiled
                || stage.log_append
                || h.max_timestamp != vb.max_timestamp
                || size <= PATCHED_PREFIX;
            let at = if tiled {
                let src = &records[vb.position..vb.position + size];
                let at = self.write_buf.len();
                if whole {
                    self.write_buf.extend_from_slice(src);
                    stage.pieces.push(Piece::Buf(at..at + size));
                } else {
                    self.write_buf.extend_from_slice(&src[..PATCHED_PREFIX]);
                    stage.pieces.push(Piece::Buf(at..at + PATCHED_PREFIX));
                    stage.pieces.push(Piece::Slice(&src[PATCHED_PREFIX..]));
                }
                at
            } else {
                self.write_buf.len() - records.len() + vb.position
            };
            let end = if whole {
                at + size
            } else {
                at + PATCHED_PREFIX
            };
            let b = &mut self.write_buf[at..end];
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
        stage.markers.extend(markers.iter().copied());
        stage.staged += records.len();
        // The producer entries again, now with the offsets assigned: a retry queued behind
        // this append is answered with them.
        pending.truncate(mark);
        for ((_, h), marker) in stage.batches[first_batch..]
            .iter()
            .zip(&stage.markers[first_batch..])
        {
            if h.has_producer_id() {
                let mut e = self.producers.updated_entry(pending, h);
                if let Some(m) = marker {
                    e.coordinator_epoch = e.coordinator_epoch.max(m.coordinator_epoch);
                }
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
        let staged = stage.staged;
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
        if stage.staged == 0 && self.should_roll(size, max_ts, offsets, stage.now_ms) {
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
        let mut count = 0u64;
        let mut expected = log_end_offset;
        // Any error, a truncated tail included, rejects the whole fetch: the fetcher keeps
        // only whole batches, so a cut batch here is damage.
        for b in BatchIter::new(records) {
            let b = b?;
            let h = b.header;
            batch::verify_crc(b.bytes, &h)?;
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
            batches.push((b.position, h));
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
            for (p, h) in &batches[i..j] {
                // No checks: what the leader wrote is the truth.
                self.producers.replay(h, &records[*p..*p + h.total_size()]);
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
}

/// Bytes of each leader batch rewritten when it is appended: base offset (8), batch length
/// (4) and partition leader epoch (4), all outside the CRC.
const PATCHED_PREFIX: usize = 16;

/// Appends of one [`Log::append_validated_many`] call, not yet written: patched bytes in
/// `Log::write_buf`, the rest still in the callers' buffers.
struct Stage<'a> {
    /// (position in the staged bytes, patched header) of each staged batch.
    batches: Vec<(usize, BatchHeader)>,
    /// The transaction marker of each staged batch that is one (parallel to `batches`).
    markers: Vec<Option<fjord_protocol::control::EndTxnMarker>>,
    /// The staged bytes in order.
    pieces: Vec<Piece<'a>>,
    /// How many bytes are staged.
    staged: usize,
    appends: Vec<StagedAppend>,
    /// One per input append, filled as each is decided.
    results: Vec<Option<Result<AppendInfo, AppendError>>>,
    leader_epoch: i32,
    log_append: bool,
    now_ms: i64,
    /// A write failed (its message): every later append fails too.
    failure: Option<String>,
}

/// A run of staged bytes: in `Log::write_buf`, or still in the caller's buffer.
enum Piece<'a> {
    Buf(std::ops::Range<usize>),
    Slice(&'a [u8]),
}

impl Stage<'_> {
    /// Forget the staged bytes (written, or failed).
    fn clear_written(&mut self) {
        self.batches.clear();
        self.markers.clear();
        self.pieces.clear();
        self.staged = 0;
    }

    fn failed(&self, dir: &Path) -> AppendError {
        let msg = self.failure.clone().unwrap_or_default();
        AppendError::Storage(StorageError::io(dir, std::io::Error::other(msg)))
    }
}

/// How a leader append's transactional batches are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCheck {
    /// The broker's own coordinators (their transactional offset commits, markers).
    Exempt,
    /// A client's produce, with the guard its transaction verification got (`None`: it
    /// needed none, the producer had a transaction open here, or it did not verify).
    Verified(Option<u64>),
}

/// One append staged in [`Stage`].
struct StagedAppend {
    item: usize,
    first_offset: i64,
    last_offset: i64,
    record_count: u64,
    bytes: usize,
}

/// Write `pieces` (ranges of `buf` and the callers' slices) at `offset` of `file`, with as few
/// `pwritev` calls as it takes (at most 1,024 slices each, Linux's `IOV_MAX`).
fn write_pieces_at(
    file: &std::fs::File,
    pieces: &[Piece<'_>],
    buf: &[u8],
    mut offset: u64,
) -> std::io::Result<()> {
    use std::io::IoSlice;
    const MAX_SLICES: usize = 1024;
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .map(|p| match p {
            Piece::Buf(r) => IoSlice::new(&buf[r.clone()]),
            Piece::Slice(s) => IoSlice::new(s),
        })
        .filter(|s| !s.is_empty())
        .collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_SLICES);
        let written = match rustix::io::pwritev(file, &rest[..n], offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(w) => w,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += written as u64;
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}
