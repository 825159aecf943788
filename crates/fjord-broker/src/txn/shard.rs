//! One `__transaction_state` partition's transactional ids (Kafka's coordinator shard): loaded
//! by replaying the partition while this broker leads it, dropped when it stops leading it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fjord_protocol::batch::BatchIter;
use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use fjord_txn::{Coordinator, TxnState, Write};
use kafka_protocol::records::RecordBatchDecoder;
use parking_lot::Mutex;

use super::log::{self, Pending, WriteError};
use super::{markers, TXN_TOPIC};
use crate::broker::Broker;
use crate::partition::Partition;

pub struct Shard {
    /// The partition's index, which is also this shard's.
    pub index: i32,
    pub(crate) state: Mutex<ShardState>,
    /// Held while the partition is replayed (a blocking thread), so two loads never race.
    loading: Mutex<()>,
    /// A load was handed to a blocking thread and has not finished.
    load_queued: AtomicBool,
}

#[derive(Default)]
pub(crate) struct ShardState {
    /// `None` while this broker does not lead the partition or has not replayed it yet.
    pub coordinator: Option<Coordinator>,
    /// The partition's leader epoch the state was loaded at (the coordinator epoch).
    pub epoch: i32,
    /// Bumped by every load and unload, so a write or a marker job that completes later knows
    /// whether the state it changed is still the one installed.
    pub generation: u64,
}

/// Why a shard is loaded or unloaded (the metrics label and the log line).
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// This broker leads the partition (a new election, a restart, a reload).
    Elected,
    /// This broker no longer leads the partition, or leads it in a new epoch.
    LostLeadership,
    /// An append failed for a reason every later append shares.
    AppendFailed,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Elected => "elected",
            Change::LostLeadership => "lost_leadership",
            Change::AppendFailed => "append_failed",
        }
    }
}

impl Shard {
    pub fn new(index: i32) -> Shard {
        Shard {
            index,
            state: Mutex::new(ShardState::default()),
            loading: Mutex::new(()),
            load_queued: AtomicBool::new(false),
        }
    }

    /// Whether the state installed is still the one of `generation`.
    pub fn is_current(&self, generation: u64) -> bool {
        let s = self.state.lock();
        s.generation == generation && s.coordinator.is_some()
    }

    /// Read the shard's ids (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS when not loaded).
    pub fn read<T>(
        &self,
        broker: &Broker,
        f: impl FnOnce(&Coordinator) -> T,
    ) -> Result<T, ErrorCode> {
        let s = self.state.lock();
        match s.coordinator.as_ref() {
            Some(c) => Ok(f(c)),
            None => {
                drop(s);
                Err(unavailable(broker, self.index))
            }
        }
    }

    /// Lock, run `op`, queue its record, unlock. `Ok(None)`: nothing to write.
    pub fn start(
        self: &Arc<Self>,
        broker: &Broker,
        op: impl FnOnce(&mut Coordinator, i64) -> Result<Option<Write>, ErrorCode>,
    ) -> Result<Option<Pending>, ErrorCode> {
        let now = now_ms();
        let mut s = self.state.lock();
        let generation = s.generation;
        let Some(c) = s.coordinator.as_mut() else {
            drop(s);
            return Err(unavailable(broker, self.index));
        };
        let Some(write) = op(c, now)? else {
            return Ok(None);
        };
        match log::queue(broker, self.index, &write.record, now) {
            Ok(queued) => Ok(Some(Pending {
                shard: self.clone(),
                generation,
                write,
                queued,
            })),
            Err(e) => {
                c.write_failed(&write.transactional_id);
                Err(e)
            }
        }
    }

    /// A write of `id`'s transition is replicated or failed: apply it to the state it was
    /// made on (if that is still installed), and start the markers of a prepared transaction.
    pub fn settle(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        generation: u64,
        id: &str,
        result: Result<(), WriteError>,
    ) -> Result<(), ErrorCode> {
        let mut s = self.state.lock();
        let current = s.generation == generation;
        let Some(c) = s.coordinator.as_mut().filter(|_| current) else {
            // Unloaded (or reloaded) meanwhile: the state this write belonged to is gone.
            return Err(result.err().map_or(ErrorCode::NotCoordinator, |e| e.code));
        };
        match result {
            Ok(()) => {
                let markers = c.written(id);
                drop(s);
                if let Some(m) = markers {
                    markers::spawn(broker, self, generation, m);
                }
                Ok(())
            }
            Err(e) => {
                c.write_failed(id);
                drop(s);
                if e.unusable {
                    self.unload(broker, Change::AppendFailed, Some(generation));
                }
                Err(e.code)
            }
        }
    }

    /// Run a timer; returns the writes it queued (to complete in tasks of their own).
    pub fn timer(
        self: &Arc<Self>,
        broker: &Broker,
        f: &impl Fn(&mut Coordinator, i64) -> Vec<Write>,
    ) -> Vec<Pending> {
        let now = now_ms();
        let mut s = self.state.lock();
        let generation = s.generation;
        let Some(c) = s.coordinator.as_mut() else {
            return Vec::new();
        };
        let metrics = broker.txns.metrics(broker);
        let mut out = Vec::new();
        for write in f(c, now) {
            let id = write.transactional_id.clone();
            if let Some(v) = c.get(&id) {
                if v.state == TxnState::Ongoing {
                    tracing::warn!(transactional_id = %id, producer_id = v.producer_id,
                        producer_epoch = v.producer_epoch, timeout_ms = v.timeout_ms,
                        open_ms = now - v.start_ms, partitions = v.partitions.len(),
                        "transaction timed out: aborting it and fencing its producer");
                    metrics.timed_out.inc();
                } else {
                    tracing::info!(transactional_id = %id,
                        idle_ms = now - v.last_update_ms,
                        "transactional id expired (transactional.id.expiration.ms)");
                    metrics.expired.inc();
                }
            }
            match log::queue(broker, self.index, &write.record, now) {
                Ok(queued) => out.push(Pending {
                    shard: self.clone(),
                    generation,
                    write,
                    queued,
                }),
                Err(_) => c.write_failed(&id),
            }
        }
        out
    }

    /// Bring the shard in line with its partition `p`: loaded (on a blocking thread) while this
    /// broker leads it, at its current leader epoch; unloaded otherwise.
    pub fn reconcile(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        p: Option<&Arc<Partition>>,
        start: bool,
    ) {
        let leading = p.filter(|p| p.is_leader() && p.has_log());
        let (loaded, epoch) = {
            let s = self.state.lock();
            (s.coordinator.is_some(), s.epoch)
        };
        let Some(p) = leading else {
            if loaded {
                self.unload(broker, Change::LostLeadership, None);
            }
            return;
        };
        if loaded && epoch == p.leader_epoch() {
            return;
        }
        if loaded {
            // Led again in a new epoch: the log is the truth, and markers carry the new epoch.
            self.unload(broker, Change::LostLeadership, None);
        }
        if start && !self.load_queued.swap(true, Ordering::AcqRel) {
            let (b, p, shard) = (broker.clone(), p.clone(), self.clone());
            tokio::task::spawn_blocking(move || {
                shard.load(&b, &p);
                shard.load_queued.store(false, Ordering::Release);
            });
        }
    }

    /// Replay partition `p` into a new coordinator at its leader epoch, install it, and resend
    /// the markers of the transactions it left prepared (a blocking thread: reads the log).
    fn load(self: &Arc<Self>, broker: &Arc<Broker>, p: &Partition) {
        let _loading = self.loading.lock();
        let epoch = p.leader_epoch();
        if !p.is_leader() || self.state.lock().coordinator.is_some() {
            return;
        }
        let started = Instant::now();
        let mut c = Coordinator::new(broker.txns.config().coordinator.clone());
        c.load_partition(self.index, epoch);
        let replayed = match replay(&mut c, p) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition = p.index, error = %e,
                    "cannot read {TXN_TOPIC}; its transactional ids start without their state");
                Replayed::default()
            }
        };
        let skipped = replayed.skipped_batches + replayed.skipped_records;
        if skipped > 0 {
            tracing::error!(
                partition = p.index,
                skipped_batches = replayed.skipped_batches,
                skipped_records = replayed.skipped_records,
                "{TXN_TOPIC} held unreadable data; its transactional ids were replayed without it"
            );
            broker
                .metrics
                .corrupt_data_skipped
                .with_label_values(&["transaction_state"])
                .inc_by(skipped as u64);
        }
        let ids = c.iter().count();
        let ongoing = c
            .iter()
            .filter(|(_, v)| v.state == TxnState::Ongoing)
            .count();
        let unfinished = c.unfinished();
        let generation = {
            let mut s = self.state.lock();
            s.generation += 1;
            s.epoch = epoch;
            s.coordinator = Some(c);
            s.generation
        };
        broker
            .txns
            .metrics(broker)
            .shard_changes
            .with_label_values(&[Change::Elected.label()])
            .inc();
        // An empty partition's load is routine (50 of them on a node's first start): DEBUG.
        if ids == 0 {
            tracing::debug!(
                partition = self.index,
                coordinator_epoch = epoch,
                "transaction coordinator shard loaded (no transactional ids)"
            );
        } else {
            tracing::info!(
            partition = self.index,
            coordinator_epoch = epoch,
            transactional_ids = ids,
            ongoing,
            completing = unfinished.len(),
            records = replayed.records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "transaction coordinator shard loaded: this broker coordinates the transactional ids of this {TXN_TOPIC} partition"
        );
        }
        for m in unfinished {
            markers::spawn(broker, self, generation, m);
        }
    }

    /// Drop the shard's ids (with `generation`: only if that state is still installed).
    /// Marker jobs and writes of the dropped state stop when they see the new generation.
    pub fn unload(&self, broker: &Broker, why: Change, generation: Option<u64>) {
        let ids = {
            let mut s = self.state.lock();
            if generation.is_some_and(|g| g != s.generation) {
                return;
            }
            let Some(c) = s.coordinator.take() else {
                return;
            };
            s.generation += 1;
            c.iter().count()
        };
        broker
            .txns
            .metrics(broker)
            .shard_changes
            .with_label_values(&[why.label()])
            .inc();
        if ids == 0 {
            tracing::debug!(
                partition = self.index,
                reason = why.label(),
                "transaction coordinator shard unloaded (no transactional ids)"
            );
            return;
        }
        tracing::info!(
            partition = self.index,
            reason = why.label(),
            transactional_ids = ids,
            "transaction coordinator shard unloaded: this broker no longer coordinates the transactional ids of this {TXN_TOPIC} partition"
        );
    }
}

/// Why a shard cannot serve: this broker leads its partition but has not loaded it yet
/// (COORDINATOR_LOAD_IN_PROGRESS, as Kafka), or does not lead it (NOT_COORDINATOR).
fn unavailable(broker: &Broker, index: i32) -> ErrorCode {
    let leads = broker.topic(TXN_TOPIC).is_some_and(|t| {
        t.partitions
            .get(index as usize)
            .is_some_and(|p| p.is_leader())
    });
    if leads {
        ErrorCode::CoordinatorLoadInProgress
    } else {
        ErrorCode::NotCoordinator
    }
}

/// What replaying a partition read and skipped.
#[derive(Debug, Default, Clone, Copy)]
struct Replayed {
    records: usize,
    skipped_batches: usize,
    skipped_records: usize,
}

/// Replay one `__transaction_state` partition up to its log end (this broker leads it: its
/// log is the partition's truth). A batch that does not decode is skipped whole, a record the
/// coordinator cannot read alone; a header that does not frame stops the replay there.
fn replay(c: &mut Coordinator, p: &Partition) -> anyhow::Result<Replayed> {
    let mut out = Replayed::default();
    let Some((mut offset, _)) = p.offsets() else {
        return Ok(out);
    };
    let end = p.log_end_offset().unwrap_or(offset);
    while offset < end {
        let read = p.read_for_follower(offset, 8 << 20, true).map_err(|e| {
            anyhow::anyhow!("reading {TXN_TOPIC}-{}: {:?}", p.index, e.error_code())
        })?;
        let Some(range) = read.records else { break };
        let raw = range
            .read()
            .map_err(|e| anyhow::anyhow!("reading {TXN_TOPIC}-{}: {e}", p.index))?;
        let before = offset;
        for batch in BatchIter::new(&raw) {
            let Ok(b) = batch else {
                out.skipped_batches += 1;
                return Ok(out);
            };
            let last = b
                .header
                .base_offset
                .saturating_add(b.header.last_offset_delta as i64);
            offset = offset.max(last.saturating_add(1));
            let Ok(set) = RecordBatchDecoder::decode(&mut raw.slice(b.position..b.end())) else {
                out.skipped_batches += 1;
                continue;
            };
            for r in set.records.into_iter().filter(|r| !r.control) {
                let Some(key) = r.key else { continue };
                match c.replay(&key, r.value.as_deref()) {
                    Ok(()) => out.records += 1,
                    Err(_) => out.skipped_records += 1,
                }
            }
        }
        if offset == before {
            break;
        }
    }
    Ok(out)
}
