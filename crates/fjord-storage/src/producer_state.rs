//! Idempotent-producer state (Kafka's ProducerStateManager, simplified): per producer id the
//! epoch and the last five batches' sequence ranges and offsets, so a retried batch is answered
//! with its original offsets and a gap is refused.
//!
//! Transactions (issue 15, in progress): a producer's first transactional batch opens its
//! transaction at that offset, and a control batch (its commit or abort marker) ends it. The
//! open transactions, by first offset, give the first unstable offset, which bounds the last
//! stable offset (LSO) that read_committed consumers read up to. Aborted transactions (Kafka's
//! transaction index) are kept with the state, in marker order, so a read_committed fetch can
//! name the ones its range overlaps; they go when the log start passes their marker, and are
//! rebuilt with the rest of the state from a snapshot and the batches after it. (Kafka keeps
//! them in a `.txnindex` file per segment; here they live in memory and in the snapshot, so a
//! compacted topic that aborts often keeps them until the cleaner learns to drop aborted data.)
//!
//! A marker carries its transaction coordinator's epoch; the producer remembers the last one
//! (Kafka's `coordinatorEpoch`), and a marker from an older coordinator is refused with
//! TRANSACTION_COORDINATOR_FENCED (a deposed coordinator's late marker).
//!
//! KIP-890 part 1 (transaction verification): before a leader appends a producer's first
//! transactional batch to a partition where it has no transaction open, it asks the
//! transaction coordinator whether the partition is in the transaction. The leader starts a
//! verification first ([`ProducerStateManager::start_verification`], Kafka's
//! `VerificationGuard`); a marker or a newer epoch of the producer ends it, and the append
//! opens the transaction only if its guard is still the producer's — so a transaction aborted
//! while the question was on its way is not reopened by the late append (a hanging
//! transaction that would hold the last stable offset back for good). Guards live in memory.
//!
//! Persisted as `{offset:020}.snapshot` (JSON) on roll and close; on open the latest snapshot
//! at or below the log end is loaded and the batch headers after it are replayed.

use crate::error::{AppendError, StorageError};
use fjord_protocol::batch::BatchHeader;
use fjord_protocol::control::EndTxnMarker;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// Batches remembered per producer (Kafka: `NUM_BATCHES_TO_RETAIN`, the max in-flight).
pub const BATCHES_TO_RETAIN: usize = 5;
pub const SNAPSHOT_SUFFIX: &str = "snapshot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Max timestamp of the last batch; drives `producer.id.expiration.ms`.
    pub last_timestamp: i64,
    /// The first offset of the producer's open transaction, if one is open.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
    /// The coordinator epoch of the producer's last marker (-1: none yet).
    #[serde(default = "no_coordinator_epoch")]
    pub coordinator_epoch: i32,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

/// Outcome of checking one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Append,
    /// Already in the log: the original offsets.
    Duplicate(BatchMeta),
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id (derived from `producers`).
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
    /// Transaction verifications under way: producer id → (guard, producer epoch, started at
    /// in ms). Not persisted: a restart makes the producer verify again.
    verifications: HashMap<i64, (u64, i16, i64)>,
    next_guard: u64,
}

/// A transaction aborted in this partition (an entry of Kafka's transaction index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The last stable offset once the marker was written.
    pub last_stable_offset: i64,
}

/// A transaction its marker ended in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    producers: Vec<ProducerEntry>,
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
}

impl ProducerStateManager {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Validate a client batch against the current state (Kafka's ProducerAppendInfo checks).
    /// `pending` holds entries already updated by earlier batches of the same request.
    pub fn check(&self, pending: &[ProducerEntry], h: &BatchHeader) -> Result<Check, AppendError> {
        let pid = h.producer_id;
        let entry = pending
            .iter()
            .rev()
            .find(|e| e.producer_id == pid)
            .or_else(|| self.producers.get(&pid));
        if h.is_control() {
            // A marker carries no sequence: only a fenced epoch is refused.
            return match entry {
                Some(e) if h.producer_epoch < e.epoch => Err(AppendError::InvalidProducerEpoch {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    current: e.epoch,
                }),
                _ => Ok(Check::Append),
            };
        }
        if h.base_sequence < 0 {
            // A coordinator's own transactional batch (an offset commit in a transaction) has
            // no sequence (clients' batches with a producer id must have one: validation).
            return match entry {
                Some(e) if h.producer_epoch < e.epoch => Err(AppendError::InvalidProducerEpoch {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    current: e.epoch,
                }),
                _ => Ok(Check::Append),
            };
        }
        let first_seq = h.base_sequence;
        let last_seq = h.last_sequence();
        let Some(e) = entry else {
            // Unknown producer: must start at 0 (Kafka 4 answers OutOfOrderSequence).
            if first_seq != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id: pid,
                    first_seq,
                    last_seq: -1,
                });
            }
            return Ok(Check::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id: pid,
                epoch: h.producer_epoch,
                current: e.epoch,
            });
        }
        let current_last = e.batches.back().map_or(-1, |b| b.last_seq);
        if h.producer_epoch > e.epoch {
            if first_seq != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id: pid,
                    first_seq,
                    last_seq: current_last,
                });
            }
            return Ok(Check::Append);
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*b));
        }
        let in_sequence = if current_last < 0 {
            first_seq == 0
        } else {
            first_seq == next_seq(current_last)
        };
        if !in_sequence {
            return Err(AppendError::OutOfOrderSequence {
                producer_id: pid,
                first_seq,
                last_seq: current_last,
            });
        }
        Ok(Check::Append)
    }

    /// A marker for `h.producer_id` from coordinator epoch `coordinator_epoch`: refused if
    /// the producer has seen a marker from a newer coordinator (Kafka's
    /// `checkCoordinatorEpoch`).
    pub fn check_marker(
        &self,
        pending: &[ProducerEntry],
        h: &BatchHeader,
        coordinator_epoch: i32,
    ) -> Result<(), AppendError> {
        let entry = pending
            .iter()
            .rev()
            .find(|e| e.producer_id == h.producer_id)
            .or_else(|| self.producers.get(&h.producer_id));
        match entry {
            Some(e) if e.coordinator_epoch > coordinator_epoch => {
                Err(AppendError::TransactionCoordinatorFenced {
                    producer_id: h.producer_id,
                    coordinator_epoch,
                    current: e.coordinator_epoch,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether the producer has a transaction open here (in `pending` or the state).
    pub fn has_ongoing_txn(&self, pending: &[ProducerEntry], producer_id: i64) -> bool {
        pending
            .iter()
            .rev()
            .find(|e| e.producer_id == producer_id)
            .or_else(|| self.producers.get(&producer_id))
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Start verifying that this partition is in the transaction of `producer_id` at
    /// `epoch`: `None` if the producer already has a transaction open here (its appends need
    /// no verification), else the guard the append must present. Starts while one is under
    /// way share its guard (as Kafka's `maybeCreateVerificationStateEntry` reuses its entry):
    /// a producer sends the first batches of a transaction to a partition several requests at
    /// a time, and each must still be appendable. Only a marker (or a newer epoch) ends it.
    pub fn start_verification(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> Option<u64> {
        if self.has_ongoing_txn(&[], producer_id) {
            return None;
        }
        if let Some(e) = self.producers.get(&producer_id) {
            if epoch < e.epoch {
                // A fenced producer: a guard it can never use.
                return Some(0);
            }
        }
        if let Some((guard, e, _)) = self.verifications.get_mut(&producer_id) {
            *e = (*e).max(epoch);
            return Some(*guard);
        }
        self.next_guard += 1;
        let guard = self.next_guard;
        self.verifications
            .insert(producer_id, (guard, epoch, now_ms));
        Some(guard)
    }

    /// Whether a client's transactional batch `h` may be appended with `guard` (the one its
    /// verification got, `None` if it needed none): yes if the producer has a transaction open
    /// here, or if `guard` is still the producer's verification; INVALID_TXN_STATE otherwise
    /// (never verified, or a marker ended the verification meanwhile).
    pub fn check_verified(
        &self,
        pending: &[ProducerEntry],
        h: &BatchHeader,
        guard: Option<u64>,
    ) -> Result<(), AppendError> {
        if !h.is_transactional() || h.is_control() || self.has_ongoing_txn(pending, h.producer_id) {
            return Ok(());
        }
        match (guard, self.verifications.get(&h.producer_id)) {
            (Some(g), Some((current, epoch, _))) if g == *current && *epoch <= h.producer_epoch => {
                Ok(())
            }
            _ => Err(AppendError::InvalidTxnState {
                producer_id: h.producer_id,
            }),
        }
    }

    /// The entry for `h.producer_id` after appending `h` (with its assigned offsets).
    pub fn updated_entry(&self, pending: &[ProducerEntry], h: &BatchHeader) -> ProducerEntry {
        let mut e = pending
            .iter()
            .rev()
            .find(|e| e.producer_id == h.producer_id)
            .or_else(|| self.producers.get(&h.producer_id))
            .cloned()
            .unwrap_or(ProducerEntry {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                txn_first_offset: None,
                coordinator_epoch: -1,
            });
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        if h.is_control() {
            // The marker ends the transaction; it is not a batch of the sequence.
            e.txn_first_offset = None;
            e.last_timestamp = e.last_timestamp.max(h.max_timestamp);
            return e;
        }
        if h.is_transactional() && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(h.base_offset);
        }
        if h.base_sequence < 0 {
            // A coordinator's batch without a sequence: nothing to deduplicate by.
            e.last_timestamp = e.last_timestamp.max(h.max_timestamp);
            return e;
        }
        if e.batches.len() == BATCHES_TO_RETAIN {
            e.batches.pop_front();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        e.last_timestamp = e.last_timestamp.max(h.max_timestamp);
        e
    }

    /// Make `entry` the producer's state.
    pub fn commit(&mut self, entry: ProducerEntry) {
        self.commit_ending(entry, -1);
    }

    /// [`commit`](Self::commit) for the entry after a batch at `last_offset`: returns the
    /// transaction that batch ended (a marker), if any.
    pub fn commit_ending(
        &mut self,
        entry: ProducerEntry,
        last_offset: i64,
    ) -> Option<CompletedTxn> {
        let pid = entry.producer_id;
        let before = self.producers.get(&pid).and_then(|e| e.txn_first_offset);
        let after = entry.txn_first_offset;
        // A transaction that opened or ended, or a newer epoch, ends a verification.
        if before != after
            || self
                .verifications
                .get(&pid)
                .is_some_and(|(_, epoch, _)| *epoch < entry.epoch)
        {
            self.verifications.remove(&pid);
        }
        self.producers.insert(pid, entry);
        if before == after {
            return None;
        }
        if let Some(f) = after {
            self.ongoing.insert(f, pid);
        }
        let first_offset = before?;
        self.ongoing.remove(&first_offset);
        Some(CompletedTxn {
            producer_id: pid,
            first_offset,
            last_offset,
        })
    }

    /// The first offset of the oldest open transaction: nothing at or past it is stable.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The open transactions: (first offset, producer id), oldest first.
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(f, p)| (*f, *p))
    }

    fn rebuild_ongoing(&mut self) {
        self.ongoing = self
            .producers
            .values()
            .filter_map(|e| e.txn_first_offset.map(|f| (f, e.producer_id)))
            .collect();
    }

    /// Replay batch `h` (its bytes: `batch`) read from the log or from the leader (no
    /// validation: it was validated when appended). Returns the transaction it ended, if it
    /// is a marker; an abort is also added to the aborted transactions.
    pub fn replay(&mut self, h: &BatchHeader, batch: &[u8]) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        let marker = if h.is_control() {
            match fjord_protocol::control::read_marker(batch) {
                Ok(m) => m,
                // Only a leader writes control batches; one it cannot read ends the
                // transaction as a commit would (nothing hidden from read_committed consumers).
                Err(e) => {
                    tracing::warn!(
                        producer_id = h.producer_id,
                        offset = h.base_offset,
                        error = %e,
                        "unreadable transaction marker"
                    );
                    None
                }
            }
        } else {
            None
        };
        self.apply(h, marker)
    }

    /// Make batch `h` (appended: its offsets assigned) part of the state; `marker` is what a
    /// control batch holds. Returns the transaction it ended; an abort is also added to the
    /// aborted transactions. Leader appends and replays both come here.
    pub fn apply(&mut self, h: &BatchHeader, marker: Option<EndTxnMarker>) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        let mut e = self.updated_entry(&[], h);
        if let Some(m) = marker {
            e.coordinator_epoch = e.coordinator_epoch.max(m.coordinator_epoch);
        }
        if h.is_control() {
            // A marker ends any verification under way: the transaction it verified is over.
            self.verifications.remove(&h.producer_id);
        }
        let done = self.commit_ending(e, h.last_offset())?;
        if marker.is_some_and(|m| !m.commit) {
            self.aborted.push(AbortedTxn {
                producer_id: done.producer_id,
                first_offset: done.first_offset,
                last_offset: done.last_offset,
                last_stable_offset: self.first_unstable_offset().unwrap_or(done.last_offset + 1),
            });
        }
        Some(done)
    }

    /// Every producer's state (DescribeProducers), in no particular order.
    pub fn producers(&self) -> impl Iterator<Item = &ProducerEntry> + '_ {
        self.producers.values()
    }

    /// The aborted transactions a read_committed fetch of `[from, upto)` must skip: those
    /// whose data may lie in the range (marker at or after `from`, first offset before
    /// `upto`), as (producer id, first offset).
    pub fn aborted_between(&self, from: i64, upto: i64) -> Vec<(i64, i64)> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < upto)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// The aborted transactions whose data starts below `upto`, oldest first (the cleaner
    /// drops their batches).
    pub fn aborted_before(&self, upto: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.first_offset < upto)
            .copied()
            .collect()
    }

    /// The log start moved to `offset`: forget the aborted transactions whose marker is gone.
    pub fn forget_aborted_before(&mut self, offset: i64) {
        let gone = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted.drain(..gone);
    }

    /// Drop producers idle for longer than `expiration_ms`, except those with a transaction
    /// open (as Kafka). Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        self.verifications
            .retain(|_, (_, _, at)| now_ms.saturating_sub(*at) < expiration_ms);
        before - self.producers.len()
    }

    pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
        crate::segment::segment_path(dir, offset, SNAPSHOT_SUFFIX)
    }

    /// Write `{offset}.snapshot` holding the state as of `offset` (the log end offset).
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> Result<(), StorageError> {
        let mut producers: Vec<ProducerEntry> = self.producers.values().cloned().collect();
        producers.sort_by_key(|e| e.producer_id);
        let data = serde_json::to_vec(&Snapshot {
            version: 1,
            producers,
            aborted: self.aborted.clone(),
        })
        .expect("serializable");
        crate::index::write_atomic(&Self::snapshot_path(dir, offset), &data)
    }

    pub fn read_snapshot(path: &Path) -> Result<ProducerStateManager, StorageError> {
        let data = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
        let snap: Snapshot = serde_json::from_slice(&data).map_err(|e| StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut m = ProducerStateManager {
            producers: snap
                .producers
                .into_iter()
                .map(|e| (e.producer_id, e))
                .collect(),
            ongoing: BTreeMap::new(),
            aborted: snap.aborted,
            verifications: HashMap::new(),
            next_guard: 0,
        };
        m.rebuild_ongoing();
        Ok(m)
    }
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let ent = ent.map_err(|e| StorageError::io(dir, e))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_protocol::batch::attributes as batch_attributes;

    fn hdr(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 10,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn sequence_rules() {
        let mut m = ProducerStateManager::default();
        assert!(matches!(
            m.check(&[], &hdr(1, 0, 3, 1, 0)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        let h = hdr(1, 0, 0, 3, 0);
        assert_eq!(m.check(&[], &h).unwrap(), Check::Append);
        let e = m.updated_entry(&[], &h);
        m.commit(e);
        assert!(matches!(m.check(&[], &h).unwrap(), Check::Duplicate(b) if b.last_offset == 2));
        assert!(m.check(&[], &hdr(1, 0, 4, 1, 0)).is_err());
        assert_eq!(m.check(&[], &hdr(1, 0, 3, 1, 0)).unwrap(), Check::Append);
        // New epoch must restart at 0; older epoch is fenced.
        assert!(m.check(&[], &hdr(1, 1, 3, 1, 0)).is_err());
        assert_eq!(m.check(&[], &hdr(1, 1, 0, 1, 0)).unwrap(), Check::Append);
        m.commit(m.updated_entry(&[], &hdr(1, 1, 0, 1, 5)));
        assert!(matches!(
            m.check(&[], &hdr(1, 0, 3, 1, 0)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut m = ProducerStateManager::default();
        m.commit(ProducerEntry {
            producer_id: 9,
            epoch: 0,
            batches: [BatchMeta {
                first_seq: i32::MAX - 1,
                last_seq: i32::MAX,
                first_offset: 0,
                last_offset: 1,
            }]
            .into(),
            last_timestamp: 0,
            txn_first_offset: None,
            coordinator_epoch: -1,
        });
        assert_eq!(m.check(&[], &hdr(9, 0, 0, 2, 2)).unwrap(), Check::Append);
        assert!(m.check(&[], &hdr(9, 0, 1, 2, 2)).is_err());
    }

    #[test]
    fn keeps_last_five_and_expires() {
        let mut m = ProducerStateManager::default();
        for i in 0..7 {
            let h = hdr(1, 0, i, 1, i as i64);
            m.commit(m.updated_entry(&[], &h));
        }
        let e = m.get(1).unwrap();
        assert_eq!(e.batches.len(), 5);
        assert_eq!(e.batches.front().unwrap().first_seq, 2);
        assert!(m.check(&[], &hdr(1, 0, 1, 1, 0)).is_err());
        assert_eq!(m.expire(100, 1000), 0);
        assert_eq!(m.expire(10_000, 1000), 1);
        assert!(m.is_empty());
    }

    fn txn_hdr(pid: i64, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            attributes: batch_attributes::TRANSACTIONAL,
            ..hdr(pid, 0, seq, n, base)
        }
    }

    /// A real marker batch at `base`: its header and bytes.
    fn marker(pid: i64, epoch: i16, base: i64, commit: bool) -> (BatchHeader, Vec<u8>) {
        use fjord_protocol::control::{marker_batch, EndTxnMarker};
        let mut b = marker_batch(
            pid,
            epoch,
            EndTxnMarker {
                commit,
                coordinator_epoch: 0,
            },
            10,
            0,
        );
        fjord_protocol::batch::set_base_offset(&mut b, base);
        (fjord_protocol::batch::parse_header(&b).unwrap(), b)
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_their_marker() {
        let mut m = ProducerStateManager::default();
        assert_eq!(
            m.replay(&hdr(9, 0, 0, 2, 0), &[]),
            None,
            "not transactional"
        );
        assert_eq!(m.first_unstable_offset(), None);
        assert_eq!(m.replay(&txn_hdr(1, 0, 3, 2), &[]), None);
        assert_eq!(m.replay(&txn_hdr(2, 0, 1, 5), &[]), None);
        assert_eq!(m.replay(&txn_hdr(1, 3, 2, 6), &[]), None);
        assert_eq!(m.first_unstable_offset(), Some(2));
        assert_eq!(m.ongoing().collect::<Vec<_>>(), [(2, 1), (5, 2)]);
        // A marker carries no sequence; its epoch is all that is checked.
        let (commit, bytes) = marker(1, 0, 8, true);
        assert_eq!(m.check(&[], &commit).unwrap(), Check::Append);
        assert_eq!(
            m.replay(&commit, &bytes),
            Some(CompletedTxn {
                producer_id: 1,
                first_offset: 2,
                last_offset: 8
            })
        );
        assert_eq!(m.first_unstable_offset(), Some(5));
        // The marker did not count as a batch of the sequence: the next batch follows on.
        assert_eq!(m.check(&[], &txn_hdr(1, 5, 1, 9)).unwrap(), Check::Append);
        m.replay(&txn_hdr(1, 5, 1, 9), &[]);
        assert_eq!(m.first_unstable_offset(), Some(5));
        assert_eq!(m.ongoing().collect::<Vec<_>>(), [(5, 2), (9, 1)]);
        // A fenced producer's marker is refused.
        let (h, b) = marker(2, 3, 10, false);
        m.replay(&h, &b);
        assert_eq!(m.aborted_between(0, 11), [(2, 5)]);
        assert!(matches!(
            m.check(&[], &marker(2, 1, 11, false).0),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn open_transactions_survive_a_snapshot_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ProducerStateManager::default();
        m.replay(&txn_hdr(1, 0, 1, 4), &[]);
        m.replay(&hdr(2, 0, 0, 1, 5), &[]);
        m.write_snapshot(dir.path(), 6).unwrap();
        let mut back = ProducerStateManager::read_snapshot(&ProducerStateManager::snapshot_path(
            dir.path(),
            6,
        ))
        .unwrap();
        assert_eq!(back, m);
        assert_eq!(back.first_unstable_offset(), Some(4));
        // Long idle: the producer without a transaction expires, the one with it stays.
        assert_eq!(back.expire(1_000_000, 1_000), 1);
        assert!(back.get(1).is_some());
    }
}
