//! One partition of a topic as this broker sees it: its replication state (assignment from the
//! cluster image, role, high watermark, followers' progress — `fjord_replication`), its log
//! when a replica lives here, and the fetch requests waiting for new data.
//!
//! Locks: the log sits behind a lock held only for the synchronous storage call, never across
//! an `.await`; the replication state has its own small lock. The order is always log, then
//! replication state (an append and a role change serialize on the log lock, so a follower's
//! append can never land after this broker became leader). A deleted partition's log is taken
//! out (`None`) under the write lock, so a request that raced with the deletion can never write
//! into a directory that a recreated topic of the same name may be using.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use fjord_replication::{AckStatus, FetchEffect, NotAReplica, PartitionReplica, Transition};
use fjord_storage::cleaner;
use fjord_storage::{
    AppendError, AppendInfo, FileRange, Log, LogConfig, MaintenanceReport, ReadError, ReadResult,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch, Notify};
use uuid::Uuid;

use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::{self, AppendOrigin};

/// A partition's replicas, ISR, leader and epochs, as the cluster image last said.
pub type ReplicaState = fjord_replication::Assignment;

/// One partition of a topic.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    /// This broker's node id.
    local: i32,
    /// Produce and consumer fetch since the last activity report (`crate::topic_activity`).
    pub activity: crate::topic_activity::PartitionActivity,
    replica: Mutex<PartitionReplica>,
    /// Boxed: a `Log` is several hundred bytes, and a broker has a `Partition` for every
    /// partition of the cluster, most of them without a local replica (at a million replicas,
    /// 334k partitions).
    log: RwLock<Option<Box<Log>>>,
    /// Leader appends validated and waiting for the partition's I/O thread.
    queued: Mutex<Vec<QueuedAppend>>,
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Bumped whenever the high watermark or the assignment changes: acks=all produces wait
    /// on it. Created by the first waiter (a channel is ~350 bytes, and most of a broker's
    /// partitions may never see an acks=all produce); bumps before that wake nobody, and a
    /// waiter checks the state after subscribing.
    progress: OnceLock<watch::Sender<u64>>,
    /// Which reassignment traffic of this partition is throttled here.
    throttle: RwLock<crate::throttle::ReplicaThrottle>,
    /// Bytes in as leader and the sampled top-keys sketch ([`crate::skew`]).
    pub skew: crate::skew::PartitionSkew,
    /// Per transactional producer, the last of its appends still waiting for its turn
    /// ([`Partition::txn_turn`]); created by the first (boxed: most partitions never see one).
    txn_turns: OnceLock<Box<TxnTurns>>,
}

/// Producer id → the receiver of its last append's "queued" signal.
type TxnTurns = Mutex<HashMap<i64, watch::Receiver<bool>>>;

/// A transactional producer's place in the order of its appends to one partition
/// ([`Partition::txn_turn`]): wait for the one before, queue the append, then [`TxnTurn::done`].
pub struct TxnTurn {
    prev: Option<watch::Receiver<bool>>,
    mine: watch::Sender<bool>,
    producer_id: i64,
    partition: Arc<Partition>,
}

impl TxnTurn {
    /// Wait until the producer's previous append to the partition is queued (or gave up).
    pub async fn wait(&mut self) {
        if let Some(prev) = self.prev.as_mut() {
            // An error is a predecessor dropped without queueing: its turn is over too.
            let _ = prev.wait_for(|queued| *queued).await;
        }
    }

    /// This append is queued (or will not be): the next one may go.
    pub fn done(self) {
        let _ = self.mine.send(true);
        if let Some(turns) = self.partition.txn_turns.get() {
            let mut turns = turns.lock();
            if turns
                .get(&self.producer_id)
                .is_some_and(|rx| rx.same_channel(&self.mine.subscribe()))
            {
                turns.remove(&self.producer_id);
            }
        }
    }
}

/// What a consumer's fetch reads from one partition ([`Partition::read_for_consumer`]).
pub struct ConsumerRead {
    pub read: ReadResult<Option<FileRange>>,
    pub last_stable_offset: i64,
    /// For read_committed: the aborted transactions (producer id, first offset) the records
    /// may hold.
    pub aborted: Option<Vec<(i64, i64)>>,
}

/// A leader append waiting for the partition's I/O thread ([`Partition::append_async`]).
struct QueuedAppend {
    records: bytes::Bytes,
    validated: records::ValidatedRecords,
    /// How its transactional batches are checked (KIP-890 verification).
    check: fjord_storage::TxnCheck,
    now_ms: i64,
    reply: oneshot::Sender<Result<AppendInfo, AppendRejection>>,
}

/// The partition was deleted while a request held it.
pub const DELETED: ErrorCode = ErrorCode::UnknownTopicOrPartition;

impl Partition {
    /// A partition on broker `local` with no assignment yet; [`Partition::set_state`] gives it
    /// one once its log (if a replica lives here) is installed.
    pub fn new(topic: Arc<str>, topic_id: Uuid, index: i32, local: i32) -> Partition {
        Partition {
            topic,
            topic_id,
            index,
            local,
            activity: Default::default(),
            replica: Mutex::new(PartitionReplica::new(local, 0)),
            log: RwLock::new(None),
            queued: Mutex::new(Vec::new()),
            waiters: Mutex::new(Vec::new()),
            progress: OnceLock::new(),
            throttle: RwLock::new(Default::default()),
            skew: Default::default(),
            txn_turns: OnceLock::new(),
        }
    }

    /// Keep a transactional producer's appends to this partition in request order while one
    /// of them waits on its KIP-890 verification (Kafka gets the order by reading one request
    /// of a connection at a time; fjord reads on, so a later request of the producer could be
    /// appended first: OUT_OF_ORDER_SEQUENCE_NUMBER, librdkafka 0103). Called in request order
    /// (while the request is read): a turn when this append needs verification or an earlier
    /// append of the producer is still waiting for its turn, else `None` (append at once).
    pub fn txn_turn(self: &Arc<Self>, producer_id: i64, verifying: bool) -> Option<TxnTurn> {
        if !verifying && self.txn_turns.get().is_none() {
            return None;
        }
        let mut turns = self
            .txn_turns
            .get_or_init(|| Box::new(Mutex::new(HashMap::new())))
            .lock();
        let waiting = turns.get(&producer_id).is_some_and(|rx| !*rx.borrow());
        if !verifying && !waiting {
            return None;
        }
        let (mine, rx) = watch::channel(false);
        let prev = turns.insert(producer_id, rx);
        Some(TxnTurn {
            prev: prev.filter(|p| !*p.borrow()),
            mine,
            producer_id,
            partition: self.clone(),
        })
    }

    /// The assignment (a copy).
    pub fn state(&self) -> ReplicaState {
        self.replica.lock().assignment().clone()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.lock().assignment().leader_epoch
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.replica.lock().is_leader()
    }

    /// Whether a replica of the partition lives on this broker.
    pub fn is_replica(&self) -> bool {
        self.replica
            .lock()
            .assignment()
            .replicas
            .contains(&self.local)
    }

    pub fn high_watermark(&self) -> i64 {
        self.replica.lock().high_watermark()
    }

    /// Run `f` on the replication state.
    pub fn with_replica<T>(&self, f: impl FnOnce(&mut PartitionReplica) -> T) -> T {
        f(&mut self.replica.lock())
    }

    /// Take the new assignment from the cluster image. Returns the previous one and how this
    /// broker's role changed.
    pub fn set_state(&self, state: ReplicaState, now_ms: i64) -> (ReplicaState, Transition) {
        let log = self.log.write();
        let leo = log.as_deref().map_or(0, Log::log_end_offset);
        let (old, transition, leads) = {
            let mut r = self.replica.lock();
            let old = r.assignment().clone();
            let t = r.apply(state, leo, now_ms);
            (old, t, r.is_leader())
        };
        drop(log);
        self.bump_progress();
        if !leads || transition != Transition::Unchanged {
            // Fetchers parked on a partition we no longer lead must answer now.
            self.wake_fetchers();
        }
        (old, transition)
    }

    /// Wake acks=all produces waiting on this partition (if any ever waited).
    fn bump_progress(&self) {
        if let Some(tx) = self.progress.get() {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Set which reassignment traffic is throttled (from the metadata image).
    pub fn set_throttle(&self, t: crate::throttle::ReplicaThrottle) {
        let mut cur = self.throttle.write();
        if *cur != t {
            *cur = t;
        }
    }

    /// Whether this broker, leading, throttles the fetches of `follower` (being added).
    pub fn leader_throttles(&self, follower: i32) -> bool {
        self.throttle.read().leader_throttled.contains(&follower)
    }

    /// Whether this broker throttles its own fetches of the partition (it is being added).
    pub fn follower_throttled(&self) -> bool {
        self.throttle.read().follower_throttled
    }

    /// Whether the log is open here.
    pub fn has_log(&self) -> bool {
        self.log.read().is_some()
    }

    /// Put the log of a replica that now lives here in place (once); the replication state
    /// starts from the log's checkpointed high watermark.
    pub fn install_log(&self, log: Log) {
        let mut guard = self.log.write();
        if guard.is_none() {
            self.replica
                .lock()
                .restore_high_watermark(log.high_watermark());
            *guard = Some(Box::new(log));
        }
    }

    /// The key of this partition's jobs on the disk I/O threads (one thread per partition).
    pub fn io_key(&self) -> u64 {
        let (hi, lo) = self.topic_id.as_u64_pair();
        hi ^ lo.rotate_left(17) ^ (self.index as u64)
    }

    /// Append as leader without waiting for the disk on the calling (async) thread: the
    /// records are validated here (CPU only), queued on the partition, and written by the
    /// partition's disk I/O thread ([`fjord_storage::io`]). Appends that queue up while a
    /// write runs are written together with one write ([`Log::append_validated_many`]).
    /// Queued in call order; the future resolves once the records are written (and fsynced,
    /// when the flush policy asks for it).
    pub fn append_async(
        self: &Arc<Self>,
        io: &fjord_storage::io::IoThreads,
        records: bytes::Bytes,
        origin: AppendOrigin,
        now_ms: i64,
    ) -> impl std::future::Future<Output = Result<AppendInfo, AppendRejection>> + Send + 'static
    {
        let check = match origin {
            AppendOrigin::Coordinator => fjord_storage::TxnCheck::Exempt,
            _ => fjord_storage::TxnCheck::Verified(None),
        };
        self.append_async_checked(io, records, origin, check, now_ms)
    }

    /// [`Partition::append_async`] with the transaction check of a client's append: the
    /// guard of its transaction verification ([`Partition::start_verification`]).
    pub fn append_async_checked(
        self: &Arc<Self>,
        io: &fjord_storage::io::IoThreads,
        records: bytes::Bytes,
        origin: AppendOrigin,
        check: fjord_storage::TxnCheck,
        now_ms: i64,
    ) -> impl std::future::Future<Output = Result<AppendInfo, AppendRejection>> + Send + 'static
    {
        let queued = self.queue_append(io, records, origin, check, now_ms);
        async move {
            match queued {
                Ok(rx) => rx.await.unwrap_or(Err(AppendRejection::IoGone)),
                Err(e) => Err(e),
            }
        }
    }

    fn queue_append(
        self: &Arc<Self>,
        io: &fjord_storage::io::IoThreads,
        records: bytes::Bytes,
        origin: AppendOrigin,
        check: fjord_storage::TxnCheck,
        now_ms: i64,
    ) -> Result<oneshot::Receiver<Result<AppendInfo, AppendRejection>>, AppendRejection> {
        let rules = {
            let guard = self.log.read();
            let log = guard.as_ref().ok_or(AppendRejection::Deleted)?;
            log.config().record_rules(now_ms, origin)
        };
        let validated =
            records::validate(&records, &rules).map_err(|e| AppendRejection::Storage(e.into()))?;
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = self.queued.lock();
            q.push(QueuedAppend {
                records,
                validated,
                check,
                now_ms,
                reply: tx,
            });
            q.len() == 1
        };
        if first {
            let p = self.clone();
            if !io.execute(self.io_key(), move || p.write_queued()) {
                // No I/O thread (shutting down): whoever is queued gets IoGone.
                self.queued.lock().clear();
            }
        }
        Ok(rx)
    }

    /// On the partition's I/O thread: write every queued append (one write), flush if the
    /// policy says so, then answer them.
    fn write_queued(&self) {
        let queued = std::mem::take(&mut *self.queued.lock());
        if queued.is_empty() {
            return;
        }
        let now_ms = queued.iter().map(|q| q.now_ms).max().unwrap_or(0);
        let (mut results, hw_moved) = {
            let mut guard = self.log.write();
            match guard.as_mut() {
                None => (
                    queued
                        .iter()
                        .map(|_| Err(AppendRejection::Deleted))
                        .collect(),
                    false,
                ),
                Some(log) => {
                    let mut r = self.replica.lock();
                    if !r.is_leader() {
                        let all = queued.iter().map(|_| Err(AppendRejection::NotLeader));
                        (all.collect::<Vec<_>>(), false)
                    } else {
                        let epoch = r.assignment().leader_epoch;
                        let items: Vec<(&[u8], &records::ValidatedRecords)> = queued
                            .iter()
                            .map(|q| (&q.records[..], &q.validated))
                            .collect();
                        let checks: Vec<fjord_storage::TxnCheck> =
                            queued.iter().map(|q| q.check).collect();
                        let results = log
                            .append_validated_many_checked(&items, &checks, epoch, now_ms)
                            .into_iter()
                            .map(|r| r.map_err(AppendRejection::Storage))
                            .collect::<Vec<_>>();
                        let moved = r.on_leader_append(log.log_end_offset());
                        (results, moved)
                    }
                }
            }
        };
        if hw_moved {
            self.bump_progress();
        }
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|i| !i.duplicate))
        {
            self.wake_fetchers();
            // acks=1 is answered only once the flush policy is satisfied (Kafka flushes
            // inside the append, before answering).
            if let Err(e) = self.flush_if_due() {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendRejection::Storage(AppendError::Storage(
                        e.duplicate(),
                    )));
                }
            }
        }
        for (q, r) in queued.into_iter().zip(results) {
            let _ = q.reply.send(r);
        }
    }

    /// Start verifying that this partition is in the transaction of `producer_id` (KIP-890
    /// part 1), on the partition's I/O thread after the appends queued before it: the guard
    /// the producer's append must present (`None`: it has a transaction open here and needs
    /// none). Not the leader, or no log: NOT_LEADER_OR_FOLLOWER.
    pub async fn start_verification(
        self: &Arc<Self>,
        io: &fjord_storage::io::IoThreads,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Option<u64>, ErrorCode> {
        let now = fjord_protocol::clock::now_ms();
        self.on_io(io, move |p| {
            if !p.is_leader() {
                return Err(ErrorCode::NotLeaderOrFollower);
            }
            let mut guard = p.log.write();
            let log = guard.as_mut().ok_or(ErrorCode::NotLeaderOrFollower)?;
            Ok(log.start_verification(producer_id, epoch, now))
        })
        .await
        .unwrap_or(Err(ErrorCode::NotLeaderOrFollower))
    }

    /// Run `f` on the partition's disk I/O thread, after every write queued before it.
    pub fn on_io<T: Send + 'static>(
        self: &Arc<Self>,
        io: &fjord_storage::io::IoThreads,
        f: impl FnOnce(&Partition) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, fjord_storage::io::IoGone>> + Send + 'static
    {
        let p = self.clone();
        io.run(self.io_key(), move || f(&p))
    }

    /// If an append or a roll asked for a flush: fsync with the log's lock released in
    /// between (readers and the next appends' validation go on), then move the recovery
    /// point. Call it on the partition's I/O thread or a blocking thread.
    pub fn flush_if_due(&self) -> Result<(), fjord_storage::StorageError> {
        let plan = {
            let mut guard = self.log.write();
            match guard.as_mut() {
                Some(log) if log.flush_due() => log.prepare_flush()?,
                _ => return Ok(()),
            }
        };
        let synced = plan.sync();
        if let Err(e) = &synced {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                "fsync of the partition's log failed");
        }
        synced?;
        if let Some(log) = self.log.write().as_mut() {
            log.finish_flush(&plan)?;
        }
        Ok(())
    }

    /// Append records fetched from the leader (offsets and epochs as the leader wrote them)
    /// and take the leader's high watermark. Refused unless this broker still follows in
    /// `leader_epoch`. Returns the bytes appended.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader_epoch: i32,
        leader_high_watermark: i64,
        leader_log_start_offset: i64,
        now_ms: i64,
    ) -> Result<usize, AppendRejection> {
        let (moved, deleted) = {
            let mut guard = self.log.write();
            let log = guard.as_mut().ok_or(AppendRejection::Deleted)?;
            let mut r = self.replica.lock();
            if r.is_leader() || r.assignment().leader_epoch != leader_epoch {
                return Err(AppendRejection::NotLeader);
            }
            if !records.is_empty() {
                log.append_as_follower(records, now_ms)
                    .map_err(AppendRejection::Storage)?;
            }
            // The leader's log start moved on (retention, DeleteRecords): follow it.
            if leader_log_start_offset > log.log_start_offset()
                && leader_log_start_offset <= log.log_end_offset()
            {
                if let Err(e) = log.delete_records_before(leader_log_start_offset) {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                        "cannot follow the leader's log start offset");
                }
                r.on_log_start(log.log_start_offset());
            }
            let moved = r.on_leader_high_watermark(leader_high_watermark, log.log_end_offset());
            (moved, log.take_deleted_files())
        };
        fjord_storage::log::remove_deleted_files(deleted);
        if moved {
            self.bump_progress();
        }
        if moved || !records.is_empty() {
            self.wake_fetchers();
        }
        if !records.is_empty() {
            self.flush_if_due()
                .map_err(|e| AppendRejection::Storage(AppendError::Storage(e)))?;
        }
        Ok(records.len())
    }

    /// Truncate the follower's log to end at `offset` (divergent records); returns the log end
    /// before and after.
    pub fn truncate_to(&self, offset: i64) -> Result<(i64, i64), AppendRejection> {
        let mut guard = self.log.write();
        let log = guard.as_mut().ok_or(AppendRejection::Deleted)?;
        let before = log.log_end_offset();
        log.truncate_to(offset)
            .map_err(|e| AppendRejection::Storage(AppendError::Storage(e)))?;
        let after = log.log_end_offset();
        self.replica.lock().on_truncated(after);
        Ok((before, after))
    }

    /// Empty the follower's log and restart it at the leader's log start (the follower fell
    /// behind the leader's retention).
    pub fn restart_at(&self, offset: i64) -> Result<(), AppendRejection> {
        let mut guard = self.log.write();
        let log = guard.as_mut().ok_or(AppendRejection::Deleted)?;
        log.truncate_fully_and_start_at(offset)
            .map_err(|e| AppendRejection::Storage(AppendError::Storage(e)))?;
        self.replica.lock().on_log_start(offset);
        Ok(())
    }

    /// A follower fetched at `fetch_offset`: record its progress (on the leader), which may
    /// advance the high watermark (waking acks=all produces and consumers) and may ask for an
    /// ISR expand.
    pub fn on_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<FetchEffect, NotAReplica> {
        let effect = {
            let guard = self.log.read();
            let leo = guard.as_deref().map_or(0, Log::log_end_offset);
            self.replica
                .lock()
                .on_follower_fetch(replica, fetch_offset, leo, now_ms)?
        };
        if effect.high_watermark_advanced {
            self.bump_progress();
            self.wake_fetchers();
        }
        Ok(effect)
    }

    /// ISR members that have lagged for `lag_max_ms`: the ISR to propose, if any.
    pub fn isr_to_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        let guard = self.log.read();
        let leo = guard.as_ref()?.log_end_offset();
        self.replica.lock().isr_to_shrink(leo, now_ms, lag_max_ms)
    }

    /// Wait until an acks=all produce whose records end below `required_offset` is replicated
    /// to the ISR, the role changes, or `deadline` passes (`Waiting`). A partition whose log
    /// was taken away (the topic deleted, the replica moved off this broker) answers
    /// `NotLeader` at once, as Kafka's DelayedProduce does, rather than at the deadline.
    pub async fn wait_acks_all(
        &self,
        required_offset: i64,
        min_insync_replicas: usize,
        deadline: Instant,
    ) -> AckStatus {
        let mut rx = self
            .progress
            .get_or_init(|| watch::channel(0).0)
            .subscribe();
        loop {
            if !self.has_log() {
                return AckStatus::NotLeader;
            }
            let status = self
                .replica
                .lock()
                .acks_all_status(required_offset, min_insync_replicas);
            if status != AckStatus::Waiting {
                return status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return AckStatus::Waiting;
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return self
                        .replica
                        .lock()
                        .acks_all_status(required_offset, min_insync_replicas)
                }
            }
        }
    }

    /// The acks=all status now, without waiting.
    pub fn acks_all_status(&self, required_offset: i64, min_insync_replicas: usize) -> AckStatus {
        self.replica
            .lock()
            .acks_all_status(required_offset, min_insync_replicas)
    }

    /// Whole batches for a consumer, up to the high watermark, as a range of a segment file
    /// (`None`: nothing to read). Only batch headers are read under the lock; the records are
    /// read or sent (sendfile) by the caller after it is released.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult<Option<FileRange>>, ReadRejection> {
        self.read_for_consumer(fetch_offset, max_bytes, min_one_batch, false)
            .map(|r| r.read)
    }

    /// [`read`](Self::read) with the partition's last stable offset; `read_committed` stops
    /// at it (Kafka's `isolation_level = 1`) and names the aborted transactions the consumer
    /// must skip in what it may read.
    pub fn read_for_consumer(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<ConsumerRead, ReadRejection> {
        let guard = self.log.read();
        let log = guard.as_ref().ok_or(ReadRejection::Deleted)?;
        let hw = self.replica.lock().high_watermark();
        let lso = log.last_stable_offset(hw);
        let upto = if read_committed { lso } else { hw };
        let mut r = log
            .read_range(fetch_offset, max_bytes, upto, min_one_batch)
            .map_err(ReadRejection::Storage)?;
        r.log_end_offset = hw;
        let aborted = read_committed.then(|| log.aborted_transactions(fetch_offset, upto));
        Ok(ConsumerRead {
            read: r,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// Whole batches for a follower: up to the log end, within `max_bytes`, except that with
    /// `min_one_batch` a first batch larger than `max_bytes` is read whole (Kafka's
    /// `minOneMessage`, so a large batch cannot stall replication). `ReadResult::log_end_offset`
    /// is the high watermark, which is what the follower is told.
    pub fn read_for_follower(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult<Option<FileRange>>, ReadRejection> {
        let guard = self.log.read();
        let log = guard.as_ref().ok_or(ReadRejection::Deleted)?;
        let leo = log.log_end_offset();
        let mut r = log
            .read_range(fetch_offset, max_bytes, leo, min_one_batch)
            .map_err(ReadRejection::Storage)?;
        r.log_end_offset = self.replica.lock().high_watermark();
        Ok(r)
    }

    /// Does a read at `offset` start in a sealed segment (and so may wait for the disk)?
    pub fn reads_sealed_segment(&self, offset: i64) -> bool {
        self.with_log(|l| l.reads_sealed_segment(offset))
            .unwrap_or(false)
    }

    /// Run `f` with shared access to the log; `None` if the partition was deleted.
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> Option<T> {
        self.log.read().as_deref().map(f)
    }

    /// Run `f` with exclusive access to the log; `None` if the partition was deleted.
    pub fn with_log_mut<T>(&self, f: impl FnOnce(&mut Log) -> T) -> Option<T> {
        self.log.write().as_deref_mut().map(f)
    }

    /// Run `f` with exclusive access to the log, then, with the lock released, unlink the
    /// files of segments it deleted and run the flush it asked for (retention, DeleteRecords,
    /// maintenance). Disk work: call it on the partition's I/O thread or a blocking thread.
    /// `None` if the partition was deleted.
    pub fn change_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> Option<T> {
        let (out, deleted) = {
            let mut guard = self.log.write();
            let log = guard.as_mut()?;
            let out = f(log);
            (out, log.take_deleted_files())
        };
        fjord_storage::log::remove_deleted_files(deleted);
        if let Err(e) = self.flush_if_due() {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                "cannot flush the partition's log");
        }
        Some(out)
    }

    /// Periodic log maintenance ([`Log::maintain`]: rolls, retention, `flush.ms`, producer
    /// expiry, compaction) without holding the log's lock across compaction's disk work: the
    /// lock is taken to plan a pass and snapshot the segments, released while
    /// [`cleaner::build`] reads and rewrites them (produce and fetch go on), and taken again
    /// to [`cleaner::install`] the result, which refuses a build the log changed under
    /// (`compaction_stale` in the report). Long: call it on a blocking thread, not the
    /// partition's I/O thread (appends would wait for the build). `None` if the partition was
    /// deleted.
    pub fn maintain(
        &self,
        now_ms: i64,
    ) -> Option<Result<MaintenanceReport, fjord_storage::StorageError>> {
        let (mut report, clean) = match self.change_log(|l| l.maintain_and_plan_clean(now_ms))? {
            Ok(planned) => planned,
            Err(e) => return Some(Err(e)),
        };
        let Some(input) = clean else {
            return Some(Ok(report));
        };
        let cleaned = match cleaner::build(&input) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        // Files not installed (stale, deleted partition, error) are removed when `cleaned`'s
        // segments drop; `input` drops after the lock is released.
        match self.change_log(|l| cleaner::install(l, &input, cleaned))? {
            Ok(Some(r)) => report.cleaned = Some(r),
            Ok(None) => report.compaction_stale = true,
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(report))
    }

    /// Copy the high watermark into the log and write its checkpoint if it changed.
    pub fn checkpoint_high_watermark(&self) -> Result<bool, fjord_storage::StorageError> {
        let hw = self.high_watermark();
        self.with_log_mut(|l| {
            l.set_high_watermark(hw);
            l.checkpoint_high_watermark()
        })
        .unwrap_or(Ok(false))
    }

    /// May this broker serve a client request for the partition as its leader? Only the leader
    /// may (NOT_LEADER_OR_FOLLOWER otherwise, so the client refreshes its metadata). Then
    /// Kafka's fencing of a client-supplied current leader epoch ([`Partition::check_epoch`]).
    pub fn check_leader_epoch(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        if !self.is_leader() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        self.check_epoch(client_epoch)
    }

    /// May this broker serve a consumer's fetch as leader or follower (KIP-392)? It must host
    /// a replica, and the client's leader epoch (-1: don't check) must be ours.
    pub fn check_replica_epoch(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        if !self.is_replica() || !self.has_log() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        self.check_epoch(client_epoch)
    }

    /// A client ahead of us knows of a newer leader (UNKNOWN_LEADER_EPOCH); a client behind us
    /// has stale metadata (FENCED_LEADER_EPOCH). -1 means "don't check".
    fn check_epoch(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        if client_epoch < 0 {
            return Ok(());
        }
        match client_epoch.cmp(&self.leader_epoch()) {
            std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
            std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// (log start, high watermark) or `None` once deleted.
    pub fn offsets(&self) -> Option<(i64, i64)> {
        let ls = self.with_log(|l| l.log_start_offset())?;
        Some((ls, self.high_watermark()))
    }

    /// The local log end, or `None` once deleted.
    pub fn log_end_offset(&self) -> Option<i64> {
        self.with_log(|l| l.log_end_offset())
    }

    pub fn update_config(&self, config: LogConfig) {
        self.with_log_mut(|l| l.update_config(config));
    }

    /// Take the log out for deletion or shutdown (the high watermark goes with it); later
    /// calls see the partition as gone.
    pub fn take_log(&self) -> Option<Log> {
        let hw = self.high_watermark();
        let mut log = self.log.write().take().map(|l| *l);
        if let Some(l) = log.as_mut() {
            l.set_high_watermark(hw);
        }
        self.wake_fetchers();
        self.bump_progress();
        log
    }

    /// Register interest in the next append. Register *before* checking for data so an append
    /// between the check and the wait is not missed (`Notify` keeps the permit).
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        let mut w = self.waiters.lock();
        if !w.iter().any(|x| Arc::ptr_eq(x, waiter)) {
            w.push(waiter.clone());
        }
    }

    pub fn unregister_waiter(&self, waiter: &Arc<Notify>) {
        self.waiters.lock().retain(|x| !Arc::ptr_eq(x, waiter));
    }

    fn wake_fetchers(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters {
            w.notify_one();
        }
    }
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendRejection {
    Deleted,
    /// This broker does not lead (a produce) or no longer follows in that epoch (a fetch).
    NotLeader,
    Storage(AppendError),
    /// The disk I/O thread is gone (shutting down) or failed.
    IoGone,
}

impl AppendRejection {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendRejection::Deleted => DELETED,
            AppendRejection::NotLeader => ErrorCode::NotLeaderOrFollower,
            AppendRejection::Storage(e) => e.error_code(),
            AppendRejection::IoGone => ErrorCode::KafkaStorageError,
        }
    }
    pub fn message(&self) -> String {
        match self {
            AppendRejection::Deleted => "partition was deleted".into(),
            AppendRejection::NotLeader => "this broker does not lead the partition".into(),
            AppendRejection::Storage(e) => e.to_string(),
            AppendRejection::IoGone => fjord_storage::io::IoGone.to_string(),
        }
    }
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadRejection {
    Deleted,
    Storage(ReadError),
}

impl ReadRejection {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReadRejection::Deleted => DELETED,
            ReadRejection::Storage(e) => e.error_code(),
        }
    }
}
