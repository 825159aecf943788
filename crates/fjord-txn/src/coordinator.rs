//! [`Coordinator`]: the transactional ids of the `__transaction_state` partitions this broker
//! leads, and the checks and transitions of InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn and EndTxn (Kafka's `TransactionCoordinator` and `TransactionMetadata`,
//! first transaction protocol with KIP-360). No I/O: see the crate docs for the runtime's part.

use std::collections::{BTreeMap, BTreeSet};

use crate::records::{self, Decoded, Record, TxnValue};
use crate::state::TxnState;
use crate::ErrorCode;

/// No producer id / epoch (Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`).
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The consumer offsets topic: AddOffsetsToTxn adds its partition for the group.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// What the coordinator keeps of a transactional id.
pub type TxnMetadata = TxnValue;

/// Settings, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id idle this long is forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.state.log.num.partitions`.
    pub txn_partitions: i32,
    /// `offsets.topic.num.partitions`, to place the group of an AddOffsetsToTxn.
    pub offsets_partitions: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            txn_partitions: 50,
            offsets_partitions: 50,
        }
    }
}

/// A partition (topic, index) and its error code.
pub type PartitionResult = ((String, i32), ErrorCode);

/// What the client gets once a [`Write`] is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// InitProducerId: the producer's id and epoch.
    ProducerId {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// No error.
    Ok,
    /// An error that is the request's answer even though the write succeeded (an
    /// InitProducerId that fenced an open transaction answers CONCURRENT_TRANSACTIONS, and the
    /// client retries once the abort completes).
    Error(ErrorCode),
    /// Nobody waits (a timer's abort, a completion after the markers).
    None,
}

/// A record to append to `__transaction_state` partition `partition` before answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub transactional_id: String,
    pub partition: i32,
    pub record: Record,
    pub answer: Answer,
}

/// Commit or abort markers for the partitions of a transaction (WriteTxnMarkers to each
/// partition's leader), fenced by the coordinator epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: BTreeSet<(String, i32)>,
}

#[derive(Debug, Clone)]
struct Entry {
    current: TxnValue,
    /// The transition written and not yet confirmed.
    pending: Option<TxnValue>,
}

/// Every transactional id this broker coordinates.
#[derive(Debug, Clone)]
pub struct Coordinator {
    config: Config,
    txns: BTreeMap<String, Entry>,
    /// Leader epoch of each `__transaction_state` partition led here (the coordinator epoch).
    epochs: BTreeMap<i32, i32>,
}

/// Kafka never hands out the last two epochs of a producer id, so that the coordinator can
/// always fence it once more.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl Coordinator {
    pub fn new(config: Config) -> Coordinator {
        Coordinator {
            config,
            txns: BTreeMap::new(),
            epochs: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `__transaction_state` partition of an id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        crate::txn_partition(transactional_id, self.config.txn_partitions)
    }

    /// This broker now leads `partition` at `epoch`: replay its records with
    /// [`replay`](Self::replay), then resend the markers of [`unfinished`](Self::unfinished).
    pub fn load_partition(&mut self, partition: i32, epoch: i32) {
        self.epochs.insert(partition, epoch);
    }

    /// This broker no longer leads `partition`: forget its ids.
    pub fn unload_partition(&mut self, partition: i32) {
        self.epochs.remove(&partition);
        let n = self.config.txn_partitions;
        self.txns
            .retain(|id, _| crate::txn_partition(id, n) != partition);
    }

    /// Whether this broker coordinates `transactional_id` (it leads the id's partition).
    pub fn owns(&self, transactional_id: &str) -> bool {
        self.epochs
            .contains_key(&self.partition_for(transactional_id))
    }

    /// Apply a record read from `__transaction_state` while loading a partition.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match records::decode(key, value)? {
            Decoded::Txn(k, Some(v)) => {
                self.txns.insert(
                    k.transactional_id,
                    Entry {
                        current: v,
                        pending: None,
                    },
                );
            }
            Decoded::Txn(k, None) => {
                self.txns.remove(&k.transactional_id);
            }
            Decoded::Unknown => {}
        }
        Ok(())
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id).map(|e| &e.current)
    }

    /// Every id, for ListTransactions (filter by the caller).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TxnMetadata)> {
        self.txns.iter().map(|(id, e)| (id.as_str(), &e.current))
    }

    /// Markers of the transactions left in PrepareCommit / PrepareAbort (after a load, a
    /// coordinator that failed mid-way): the runtime writes them again.
    pub fn unfinished(&self) -> Vec<Markers> {
        self.txns
            .iter()
            .filter(|(_, e)| e.pending.is_none())
            .filter_map(|(id, e)| self.markers(id, &e.current))
            .collect()
    }

    fn markers(&self, id: &str, v: &TxnValue) -> Option<Markers> {
        let commit = match v.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return None,
        };
        Some(Markers {
            transactional_id: id.to_string(),
            producer_id: v.producer_id,
            producer_epoch: v.producer_epoch,
            commit,
            coordinator_epoch: self
                .epochs
                .get(&self.partition_for(id))
                .copied()
                .unwrap_or(-1),
            partitions: v.partitions.clone(),
        })
    }

    /// Record `next` as `id`'s transition in flight and the write that makes it durable.
    fn stage(&mut self, id: &str, next: TxnValue, answer: Answer) -> Write {
        let record = records::record(id, (next.state != TxnState::Dead).then_some(&next));
        if let Some(e) = self.txns.get_mut(id) {
            e.pending = Some(next);
        }
        Write {
            transactional_id: id.to_string(),
            partition: self.partition_for(id),
            record,
            answer,
        }
    }

    /// InitProducerId with a transactional id: a new id gets a producer id from
    /// `new_producer_id`; an idle one gets its epoch bumped (fencing older producers), or a new
    /// producer id once the epochs run out; an open transaction is aborted with a bumped epoch
    /// first (the client is told CONCURRENT_TRANSACTIONS and retries). `expected` is the
    /// producer id and epoch the client had (KIP-360), checked so that a fenced producer cannot
    /// come back.
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: i64,
        new_producer_id: &mut dyn FnMut() -> Option<i64>,
    ) -> Result<Write, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        if !self.txns.contains_key(id) {
            let producer_id = new_producer_id().ok_or(ErrorCode::CoordinatorNotAvailable)?;
            self.txns.insert(
                id.to_string(),
                Entry {
                    current: TxnValue {
                        producer_id,
                        previous_producer_id: NO_PRODUCER_ID,
                        producer_epoch: NO_PRODUCER_EPOCH,
                        last_producer_epoch: NO_PRODUCER_EPOCH,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        start_ms: -1,
                        last_update_ms: now,
                    },
                    pending: None,
                },
            );
        }
        let entry = &self.txns[id];
        if entry.pending.is_some() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        let cur = entry.current.clone();
        if let Some((pid, epoch)) = expected {
            let known = cur.producer_epoch == NO_PRODUCER_EPOCH
                || pid == cur.producer_id
                || (pid == cur.previous_producer_id && epoch_exhausted(epoch));
            if !known {
                return Err(ErrorCode::ProducerFenced);
            }
        }
        match cur.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the open transaction's producer and abort it; the epoch is never
                // returned, the client retries and bumps it once more.
                let next = TxnValue {
                    producer_epoch: cur.producer_epoch + 1,
                    last_producer_epoch: NO_PRODUCER_EPOCH,
                    state: TxnState::PrepareAbort,
                    last_update_ms: now,
                    ..cur
                };
                Ok(self.stage(id, next, Answer::Error(ErrorCode::ConcurrentTransactions)))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let rotate = epoch_exhausted(cur.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == cur.producer_epoch);
                let (producer_id, previous, epoch, last) = if rotate {
                    let pid = new_producer_id().ok_or(ErrorCode::CoordinatorNotAvailable)?;
                    let last = if expected.is_some() {
                        cur.producer_epoch
                    } else {
                        NO_PRODUCER_EPOCH
                    };
                    (pid, cur.producer_id, 0, last)
                } else {
                    let bumped = cur.producer_epoch + 1;
                    let (epoch, last) = match expected {
                        None => (bumped, NO_PRODUCER_EPOCH),
                        Some((_, e))
                            if cur.producer_epoch == NO_PRODUCER_EPOCH
                                || e == cur.producer_epoch =>
                        {
                            (bumped, cur.producer_epoch)
                        }
                        // A retry of a bump whose answer was lost: the same epoch again.
                        Some((_, e)) if e == cur.last_producer_epoch => {
                            (cur.producer_epoch, cur.last_producer_epoch)
                        }
                        Some(_) => return Err(ErrorCode::ProducerFenced),
                    };
                    (cur.producer_id, cur.previous_producer_id, epoch, last)
                };
                let next = TxnValue {
                    producer_id,
                    previous_producer_id: previous,
                    producer_epoch: epoch,
                    last_producer_epoch: last,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now,
                };
                Ok(self.stage(
                    id,
                    next,
                    Answer::ProducerId {
                        producer_id,
                        producer_epoch: epoch,
                    },
                ))
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The checks shared by the requests of an initialized producer.
    fn check_producer(&self, id: &str, producer_id: i64, epoch: i16) -> Result<&Entry, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        let e = self
            .txns
            .get(id)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if e.current.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if e.current.producer_epoch != epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if e.pending.is_some() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(e)
    }

    /// AddPartitionsToTxn: start the transaction or widen it. `Ok(None)`: nothing to write
    /// (the partitions are already in it).
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &BTreeSet<(String, i32)>,
        now: i64,
    ) -> Result<Option<Write>, ErrorCode> {
        let cur = &self.check_producer(id, producer_id, epoch)?.current;
        match cur.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing if partitions.is_subset(&cur.partitions) => return Ok(None),
            TxnState::Dead | TxnState::PrepareEpochFence => return Err(ErrorCode::InvalidTxnState),
            _ => {}
        }
        let start_ms = if cur.state.is_idle() {
            now
        } else {
            cur.start_ms
        };
        let next = TxnValue {
            state: TxnState::Ongoing,
            partitions: cur.partitions.union(partitions).cloned().collect(),
            start_ms,
            last_update_ms: now,
            ..cur.clone()
        };
        Ok(Some(self.stage(id, next, Answer::Ok)))
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so
    /// its TxnOffsetCommits are committed or aborted with it.
    pub fn add_offsets(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
        now: i64,
    ) -> Result<Option<Write>, ErrorCode> {
        let p = fjord_protocol::coordinator_key::coordinator_partition(
            group_id,
            self.config.offsets_partitions,
        );
        let partitions = BTreeSet::from([(OFFSETS_TOPIC.to_string(), p)]);
        self.add_partitions(id, producer_id, epoch, &partitions, now)
    }

    /// EndTxn: prepare the commit or abort (the client is answered once that is durable; the
    /// markers follow). `Ok(None)`: a retry of an end that already completed.
    pub fn end_txn(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<Option<Write>, ErrorCode> {
        let cur = &self.check_producer(id, producer_id, epoch)?.current;
        let next_state = match (cur.state, commit) {
            (TxnState::Ongoing, true) => TxnState::PrepareCommit,
            (TxnState::Ongoing, false) => TxnState::PrepareAbort,
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(ErrorCode::ConcurrentTransactions)
            }
            _ => return Err(ErrorCode::InvalidTxnState),
        };
        let next = TxnValue {
            state: next_state,
            last_update_ms: now,
            ..cur.clone()
        };
        Ok(Some(self.stage(id, next, Answer::Ok)))
    }

    /// The write of `id`'s transition is durable: it becomes the id's state. Returns the
    /// markers to send when the transition prepared a commit or an abort.
    pub fn written(&mut self, id: &str) -> Option<Markers> {
        let e = self.txns.get_mut(id)?;
        let next = e.pending.take()?;
        if next.state == TxnState::Dead {
            self.txns.remove(id);
            return None;
        }
        e.current = next;
        let v = e.current.clone();
        self.markers(id, &v)
    }

    /// The write of `id`'s transition failed: the id stays as it was.
    pub fn write_failed(&mut self, id: &str) {
        if let Some(e) = self.txns.get_mut(id) {
            e.pending = None;
        }
    }

    /// Every partition has the markers of `id`'s prepared transaction: complete it.
    pub fn markers_written(&mut self, id: &str, now: i64) -> Option<Write> {
        let e = self.txns.get(id)?;
        if e.pending.is_some() {
            return None;
        }
        let state = match e.current.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        let next = TxnValue {
            state,
            partitions: BTreeSet::new(),
            last_update_ms: now,
            ..e.current.clone()
        };
        Some(self.stage(id, next, Answer::None))
    }

    /// AddPartitionsToTxn with `verify_only` (a partition leader checking a transactional
    /// produce, KIP-890 part 1): whether each partition is in `id`'s ongoing transaction under
    /// this producer id and epoch. Writes nothing. As Kafka's
    /// `handleVerifyPartitionsInTransaction`, a transition in flight is not checked (the
    /// partition leader's append is the last check), and a partition not in the transaction
    /// gets TRANSACTION_ABORTABLE.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<Vec<PartitionResult>, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        let cur = &self
            .txns
            .get(id)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?
            .current;
        if cur.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if cur.producer_epoch != epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if matches!(cur.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                let in_txn = cur.state == TxnState::Ongoing && cur.partitions.contains(p);
                let e = if in_txn {
                    ErrorCode::None
                } else {
                    ErrorCode::TransactionAbortable
                };
                (p.clone(), e)
            })
            .collect())
    }

    /// The timers: open transactions older than their timeout are aborted, with the epoch
    /// bumped so that their producer is fenced (Kafka's `abortTimedOutTransactions`); ids idle
    /// longer than `transactional.id.expiration.ms` are removed with a tombstone.
    pub fn tick(&mut self, now: i64) -> Vec<Write> {
        self.timers(now, true, true)
    }

    /// Only the aborts of [`tick`](Self::tick)
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub fn abort_timed_out(&mut self, now: i64) -> Vec<Write> {
        self.timers(now, true, false)
    }

    /// Only the expiry of [`tick`](Self::tick)
    /// (`transaction.remove.expired.transaction.cleanup.interval.ms`).
    pub fn expire_ids(&mut self, now: i64) -> Vec<Write> {
        self.timers(now, false, true)
    }

    fn timers(&mut self, now: i64, aborts: bool, expiry: bool) -> Vec<Write> {
        let mut abort = Vec::new();
        let mut expire = Vec::new();
        for (id, e) in &self.txns {
            if e.pending.is_some() {
                continue;
            }
            let v = &e.current;
            if v.state == TxnState::Ongoing
                && now.saturating_sub(v.start_ms) > i64::from(v.timeout_ms)
            {
                if aborts {
                    abort.push(id.clone());
                }
            } else if v.state.is_idle()
                && now.saturating_sub(v.last_update_ms) > self.config.id_expiration_ms
                && expiry
            {
                expire.push(id.clone());
            }
        }
        let mut out = Vec::with_capacity(abort.len() + expire.len());
        for id in abort {
            let cur = self.txns[&id].current.clone();
            let epoch = if epoch_exhausted(cur.producer_epoch) {
                cur.producer_epoch
            } else {
                cur.producer_epoch + 1
            };
            let next = TxnValue {
                producer_epoch: epoch,
                last_producer_epoch: NO_PRODUCER_EPOCH,
                state: TxnState::PrepareAbort,
                last_update_ms: now,
                ..cur
            };
            out.push(self.stage(&id, next, Answer::None));
        }
        for id in expire {
            let next = TxnValue {
                state: TxnState::Dead,
                ..self.txns[&id].current.clone()
            };
            out.push(self.stage(&id, next, Answer::None));
        }
        out
    }
}

#[cfg(test)]
mod tests;
