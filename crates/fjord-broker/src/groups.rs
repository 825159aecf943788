//! The group coordinator's runtime: feeds requests and timer ticks to the I/O-free
//! [`fjord_group::Coordinator`], appends the records it returns to `__consumer_offsets` (before
//! any reply computed in the same step is sent), parks JoinGroup/SyncGroup requests until the
//! state machine releases them, and replays `__consumer_offsets` to load groups.
//!
//! As Kafka's coordinator, it is sharded by `__consumer_offsets` partition: a group lives in
//! the [`Shard`] of its partition, with its own lock and coordinator state. A shard is loaded
//! (its partition replayed) while this broker leads that partition and unloaded when it stops
//! leading it, so groups on different partitions never wait for each other.
//!
//! A shard's lock is never held across an `.await` or disk I/O: an operation locks its shard,
//! runs the state machine, queues the records on the partition's disk I/O thread
//! ([`Partition::append_async`], queued at call time, so records reach the log in the order the
//! state machine produced them), unlocks, and only then waits for the append and wakes parked
//! requests. Offset commits stay pending (OffsetFetch does not see them, as Kafka's
//! `pendingOffsetCommits`) until their records are on every in-sync replica, then become the
//! committed offsets ([`Coordinator::commits_replicated`]); if the append or the replication
//! fails they are dropped ([`Coordinator::commits_failed`]). If an append failed because the
//! partition cannot be written at all (not the leader any more, storage error), the shard is
//! unloaded and, while this broker still leads, replayed again from the log, the truth.
//!
//! As Kafka's coordinator, nothing is answered before the records it depends on are on every
//! in-sync replica of their `__consumer_offsets` partition (acks=all): an operation returns
//! what it appended as [`Written`], parked requests get it with their reply ([`Delivered`]),
//! and the handlers wait for [`Written::replicated`] before answering. A member told it joined
//! therefore stays joined when the coordinator moves; if replication does not happen within
//! [`REPLICATION_TIMEOUT`] the answer is COORDINATOR_NOT_AVAILABLE (NOT_COORDINATOR when
//! leadership moved), which clients retry after finding the coordinator again.

use fjord_protocol::clock::now_ms;
use fjord_protocol::records::AppendOrigin;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fjord_group::coordinator::{Record, TopicInfo, TopicsView};
use fjord_group::{Coordinator, Effects, Event, PendingCommit, Reply, Token};
use fjord_protocol::batch::BatchIter;
use fjord_protocol::error::ErrorCode;
use fjord_storage::AppendInfo;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::{oneshot, watch};

use crate::broker::Broker;
use crate::partition::{AppendRejection, Partition};
use fjord_replication::AckStatus;

/// How long an answer waits for its records to reach the ISR (Kafka's
/// `offsets.commit.timeout.ms` default).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What one coordinator operation appended: where its records end in each partition, or the
/// append's error.
#[derive(Clone, Default)]
pub struct Written {
    ends: Vec<(Arc<Partition>, i64)>,
    failed: Option<ErrorCode>,
    /// How the wait for the ISR ended, when the runtime already waited (an operation with
    /// offset commits waits before making them visible).
    replication: Option<Result<(), ErrorCode>>,
}

impl Written {
    /// Whether the append itself succeeded (its records are in the leader's log).
    pub fn appended(&self) -> Result<(), ErrorCode> {
        self.failed.map_or(Ok(()), Err)
    }

    /// Wait until the records are on every in-sync replica (at most [`REPLICATION_TIMEOUT`]).
    pub async fn replicated(&self) -> Result<(), ErrorCode> {
        self.appended()?;
        if let Some(r) = self.replication {
            return r;
        }
        let deadline = std::time::Instant::now() + REPLICATION_TIMEOUT;
        for (p, required) in &self.ends {
            match p.wait_acks_all(*required, 1, deadline).await {
                AckStatus::Done => {}
                AckStatus::NotLeader => return Err(ErrorCode::NotCoordinator),
                AckStatus::Waiting | AckStatus::NotEnoughReplicasAfterAppend => {
                    return Err(ErrorCode::CoordinatorNotAvailable)
                }
            }
        }
        Ok(())
    }
}

/// A parked request's reply, with what must be replicated before it is sent.
pub struct Delivered {
    pub reply: Reply,
    pub written: Written,
}

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = fjord_metadata::internal::GROUP_METADATA_TOPIC;

/// The assignors' topic view and the name of each topic in it by id (to drop removed topics).
#[derive(Default)]
struct GroupTopics {
    view: Arc<TopicsView>,
    names: HashMap<uuid::Uuid, String>,
}

/// The groups of one `__consumer_offsets` partition (Kafka's coordinator shard).
struct Shard {
    /// The partition's index, which is also this shard's.
    index: i32,
    state: Mutex<ShardState>,
    /// Held while the partition is replayed into a new state (a blocking thread, never an
    /// async worker), so two loads of one shard never race; operations do not take it.
    loading: Mutex<()>,
    /// A load was handed to a blocking thread by the tick and has not finished.
    load_queued: AtomicBool,
    /// Groups and members as of the last tick or load (for the gauges).
    groups: AtomicI64,
    members: AtomicI64,
}

impl Shard {
    /// Record the shard's group and member counts for the gauges.
    fn count(&self, c: &Coordinator) {
        self.groups.store(c.group_count() as i64, Ordering::Relaxed);
        self.members
            .store(c.member_count() as i64, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct ShardState {
    /// The shard's groups: `None` while this broker does not lead the partition or has not
    /// replayed it yet (requests get NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS).
    coordinator: Option<Coordinator>,
    /// Bumped by every load and unload, so an append that completes later knows whether the
    /// state it changed is still the one installed.
    generation: u64,
    /// Parked JoinGroup/SyncGroup requests. Dropped on unload: their handlers answer
    /// NOT_COORDINATOR and the clients find the new coordinator.
    waiters: HashMap<Token, oneshot::Sender<Delivered>>,
}

/// Why a shard is loaded or unloaded (the metrics label and the log line).
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Replayed at startup (this broker led the partition when it started).
    Startup,
    /// Replayed because this broker is about to lead the partition.
    Elected,
    /// Replayed because the tick found the partition led here but not loaded (an election
    /// seen before the startup load, a log opened late, or a reload after a failed append).
    Reconciled,
    /// Dropped: this broker no longer leads the partition.
    LostLeadership,
    /// Dropped: an append to the partition failed for a reason every later append shares.
    AppendFailed,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::Startup => "startup",
            Change::Elected => "elected",
            Change::Reconciled => "reconciled",
            Change::LostLeadership => "lost_leadership",
            Change::AppendFailed => "append_failed",
        }
    }
}

/// The coordinator's own metrics, registered on first use.
#[derive(Clone)]
struct CoordinatorMetrics {
    /// From queueing an append to `__consumer_offsets` until it is in the leader's log.
    append_seconds: Histogram,
    shards_loaded: IntGauge,
    shard_groups: IntGaugeVec,
    shard_changes: IntCounterVec,
}

impl CoordinatorMetrics {
    fn new(registry: &Registry) -> CoordinatorMetrics {
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "group_coordinator_append_seconds",
                "Time from queueing a group coordinator append to __consumer_offsets until it is in the leader's log (before replication)",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("buckets")),
        )
        .expect("valid metric");
        let shards_loaded = IntGauge::new(
            "group_coordinator_shards_loaded",
            "__consumer_offsets partitions whose groups this broker coordinates (loaded shards)",
        )
        .expect("valid metric");
        let shard_groups = IntGaugeVec::new(
            Opts::new(
                "group_coordinator_shard_groups",
                "Groups in each loaded coordinator shard, by __consumer_offsets partition",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let shard_changes = IntCounterVec::new(
            Opts::new(
                "group_coordinator_shard_changes_total",
                "Coordinator shards loaded or unloaded, by reason (startup, elected, reconciled, lost_leadership, append_failed)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // Registration fails only if another runtime in this process registered first.
        let _ = registry.register(Box::new(append_seconds.clone()));
        let _ = registry.register(Box::new(shards_loaded.clone()));
        let _ = registry.register(Box::new(shard_groups.clone()));
        let _ = registry.register(Box::new(shard_changes.clone()));
        CoordinatorMetrics {
            append_seconds,
            shards_loaded,
            shard_groups,
            shard_changes,
        }
    }
}

type AppendFuture = Pin<Box<dyn Future<Output = Result<AppendInfo, AppendRejection>> + Send>>;

/// Records queued on their partitions' I/O threads, not yet known to be written.
#[derive(Default)]
struct QueuedAppend {
    parts: Vec<(Arc<Partition>, AppendFuture)>,
    /// The records could not even be queued (no such partition, encoding failed).
    failed: Option<ErrorCode>,
}

/// An operation whose state change is made and whose records are queued: what is left to do
/// once the append completes (take back offsets if it failed, wake parked requests).
struct Pending {
    shard: Arc<Shard>,
    generation: u64,
    append: QueuedAppend,
    replies: Vec<(Token, Reply)>,
    commits: Vec<PendingCommit>,
    queued_at: Instant,
    metrics: CoordinatorMetrics,
}

impl Pending {
    /// Wait for the append, then settle; with offset commits, also wait for the ISR and then
    /// make them visible (or drop them). Runs as a task of its own when there is something to
    /// wait for, so a caller that goes away (a closed connection) cannot leave commits pending.
    async fn complete(self) -> Written {
        if self.append.parts.is_empty() {
            return self.settle(Vec::new());
        }
        let task = tokio::spawn(async move {
            let mut pending = self;
            let mut results = Vec::with_capacity(pending.append.parts.len());
            for (p, append) in std::mem::take(&mut pending.append.parts) {
                results.push((p, append.await));
            }
            pending
                .metrics
                .append_seconds
                .observe(pending.queued_at.elapsed().as_secs_f64());
            let (shard, generation) = (pending.shard.clone(), pending.generation);
            let commits = std::mem::take(&mut pending.commits);
            let mut written = pending.settle_with(results, &commits);
            if written.failed.is_none() && !commits.is_empty() {
                let replicated = written.replicated().await;
                let mut s = shard.state.lock();
                if s.generation == generation {
                    if let Some(c) = s.coordinator.as_mut() {
                        match replicated {
                            Ok(()) => c.commits_replicated(commits),
                            Err(_) => c.commits_failed(commits),
                        }
                    }
                }
                written.replication = Some(replicated);
            }
            written
        });
        task.await.unwrap_or_else(|_| Written {
            ends: Vec::new(),
            failed: Some(ErrorCode::UnknownServerError),
            replication: None,
        })
    }

    /// Apply the append's outcome to the shard and deliver the parked replies.
    fn settle(
        mut self,
        results: Vec<(Arc<Partition>, Result<AppendInfo, AppendRejection>)>,
    ) -> Written {
        let commits = std::mem::take(&mut self.commits);
        self.settle_with(results, &commits)
    }

    /// [`Pending::settle`] with the operation's offset commits taken out: dropped here if the
    /// append failed (the caller makes them visible once replicated).
    fn settle_with(
        self,
        results: Vec<(Arc<Partition>, Result<AppendInfo, AppendRejection>)>,
        commits: &[PendingCommit],
    ) -> Written {
        let mut written = Written {
            ends: Vec::new(),
            failed: self.append.failed,
            replication: None,
        };
        // Only a record the partition refused (too large, invalid) is this operation's own
        // problem; anything else fails every later append as well.
        let mut unusable = false;
        for (p, result) in results {
            match result {
                Ok(info) => written.ends.push((p, info.last_offset + 1)),
                Err(e) => {
                    let code = e.error_code();
                    if code == ErrorCode::InvalidProducerEpoch {
                        // A fenced transactional producer's offset commit: its own problem,
                        // and its answer.
                        tracing::debug!(partition = p.index, error = %e.message(),
                            "transactional offset commit of a fenced producer refused");
                        written.failed = Some(code);
                        continue;
                    }
                    tracing::error!(partition = p.index, error = %e.message(),
                        "append to {OFFSETS_TOPIC} failed");
                    unusable |= !matches!(&e, AppendRejection::Storage(s)
                        if s.error_code() != ErrorCode::KafkaStorageError);
                    written.failed = Some(ErrorCode::CoordinatorNotAvailable);
                }
            }
        }
        let mut s = self.shard.state.lock();
        if written.failed.is_some() && s.generation == self.generation {
            if unusable {
                drop(s);
                unload(
                    &self.shard,
                    Change::AppendFailed,
                    &self.metrics,
                    Some(self.generation),
                );
                return written;
            }
            // The log does not hold these commits: memory must not show them either.
            if let Some(c) = s.coordinator.as_mut() {
                c.commits_failed(commits.to_vec());
            }
        }
        for (token, reply) in self.replies {
            if let Some(tx) = s.waiters.remove(&token) {
                let _ = tx.send(Delivered {
                    reply,
                    written: written.clone(),
                });
            }
        }
        written
    }
}

pub struct GroupRuntime {
    config: fjord_group::Config,
    /// One shard per `__consumer_offsets` partition, by partition index.
    shards: Vec<Arc<Shard>>,
    /// The topics as the assignors see them (partitions and their replicas' racks), kept by
    /// [`GroupRuntime::update_topics`] as metadata is published rather than rebuilt for every
    /// heartbeat. Readers take the `Arc`; an update copies the map only while one is held.
    topics: parking_lot::RwLock<GroupTopics>,
    /// The startup load has begun: from then on an election loads its shard itself.
    started: AtomicBool,
    next_token: AtomicU64,
    metrics: OnceLock<CoordinatorMetrics>,
    /// Consumer lag windows (Burrow's evaluation, [`crate::group_lag`]), behind their own lock
    /// so commits and evaluations never wait on the coordinator.
    pub(crate) lag: Mutex<fjord_group::lag::LagWindows>,
    pub(crate) lag_metrics: std::sync::OnceLock<crate::group_lag::LagMetrics>,
    /// Log ends of partitions with commits here but no replica, polled from their leaders.
    pub(crate) remote_ends: crate::log_ends::RemoteEnds,
}

impl GroupRuntime {
    pub fn new(config: fjord_group::Config) -> GroupRuntime {
        let shards = (0..config.offsets_partitions.max(1))
            .map(|index| {
                Arc::new(Shard {
                    index,
                    state: Mutex::new(ShardState::default()),
                    loading: Mutex::new(()),
                    load_queued: AtomicBool::new(false),
                    groups: AtomicI64::new(0),
                    members: AtomicI64::new(0),
                })
            })
            .collect();
        GroupRuntime {
            lag: Mutex::new(fjord_group::lag::LagWindows::new(config.lag)),
            lag_metrics: std::sync::OnceLock::new(),
            remote_ends: Default::default(),
            config,
            shards,
            topics: parking_lot::RwLock::new(GroupTopics::default()),
            started: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
            metrics: OnceLock::new(),
        }
    }

    fn metrics(&self, broker: &Broker) -> &CoordinatorMetrics {
        self.metrics
            .get_or_init(|| CoordinatorMetrics::new(&broker.metrics.registry))
    }

    /// The shard of `group_id` (its `__consumer_offsets` partition, as records are keyed).
    fn shard(&self, group_id: &str) -> &Arc<Shard> {
        let i = fjord_group::offsets_partition(group_id, self.shards.len() as i32);
        &self.shards[i as usize]
    }

    /// The assignors' view of the topics (a snapshot).
    pub fn topics(&self) -> Arc<TopicsView> {
        self.topics.read().view.clone()
    }

    /// Bring the assignors' view in line with `image` for the topics published in one batch:
    /// `touched` topics are rebuilt from the image, `removed` ones dropped; `all` (a whole new
    /// image, or a broker registered — its rack may be new) rebuilds every topic.
    pub fn update_topics(
        &self,
        image: &fjord_metadata::ClusterImage,
        touched: &BTreeSet<uuid::Uuid>,
        removed: &[uuid::Uuid],
        all: bool,
    ) {
        let mut g = self.topics.write();
        let GroupTopics { view, names } = &mut *g;
        let view = Arc::make_mut(view);
        let ids: Vec<uuid::Uuid> = if all {
            view.clear();
            names.clear();
            image.topics().map(|t| t.id).collect()
        } else {
            for id in removed.iter().chain(touched) {
                if let Some(name) = names.remove(id) {
                    view.remove(&name);
                }
            }
            touched.iter().copied().collect()
        };
        for id in ids {
            let Some(t) = image.topic_by_id(&id) else {
                continue;
            };
            if fjord_metadata::internal::is_internal(&t.name) {
                continue;
            }
            let rack_of = |node: i32| image.broker(node).and_then(|b| b.rack.clone());
            let racks = (0..t.partitions)
                .map(|p| {
                    image
                        .partition(&id, p)
                        .map(|s| s.replicas.iter().filter_map(|r| rack_of(*r)).collect())
                        .unwrap_or_default()
                })
                .collect();
            names.insert(id, t.name.clone());
            view.insert(t.name.clone(), TopicInfo::new(t.name.clone(), id, racks));
        }
    }

    /// Lock `shard`, run `op`, queue its records, unlock. `waiter` is parked in the shard
    /// first (its reply may come from this very operation).
    fn start<T>(
        &self,
        broker: &Broker,
        shard: &Arc<Shard>,
        waiter: Option<(Token, oneshot::Sender<Delivered>)>,
        op: impl FnOnce(&mut Coordinator, i64) -> (T, Effects),
    ) -> Result<(T, Pending), ErrorCode> {
        let now = now_ms();
        let metrics = self.metrics(broker).clone();
        let (out, fx, append, generation) = {
            let mut s = shard.state.lock();
            let ShardState {
                coordinator,
                generation,
                waiters,
            } = &mut *s;
            let Some(c) = coordinator.as_mut() else {
                drop(s);
                return Err(unavailable(broker, shard.index));
            };
            if let Some((token, tx)) = waiter {
                waiters.insert(token, tx);
            }
            let (out, fx) = op(c, now);
            // Queued under the lock: the log gets the shard's records in state-machine order.
            let append = queue_append(broker, &fx.records, now);
            (out, fx, append, *generation)
        };
        for e in fx.events {
            log_event(broker, e);
        }
        Ok((
            out,
            Pending {
                shard: shard.clone(),
                generation,
                append,
                replies: fx.replies,
                commits: fx.commits,
                queued_at: Instant::now(),
                metrics,
            },
        ))
    }

    /// Run one coordinator operation on the shard of `group_id`: state machine and queued
    /// append under the shard's lock, then (lock released) wait for the append and deliver
    /// replies. Returns the operation's own answer and what it appended (to wait for before
    /// answering), or NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS.
    pub async fn run<T>(
        &self,
        broker: &Broker,
        group_id: &str,
        op: impl FnOnce(&mut Coordinator, &TopicsView, i64) -> (T, Effects),
    ) -> Result<(T, Written), ErrorCode> {
        let topics = self.topics();
        let (out, pending) = self.start(broker, self.shard(group_id), None, |c, now| {
            op(c, &topics, now)
        })?;
        Ok((out, pending.complete().await))
    }

    /// Run an operation that may have to wait for the rest of its group (JoinGroup,
    /// SyncGroup): `op` gets the token its reply is delivered under, now or by a later
    /// operation. Resolves with that reply; NOT_COORDINATOR if the shard was unloaded first.
    pub async fn run_parked(
        &self,
        broker: &Broker,
        group_id: &str,
        op: impl FnOnce(&mut Coordinator, Token, i64) -> Effects,
    ) -> Result<Delivered, ErrorCode> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let ((), pending) =
            self.start(broker, self.shard(group_id), Some((token, tx)), |c, now| {
                ((), op(c, token, now))
            })?;
        pending.complete().await;
        rx.await.map_err(|_| ErrorCode::NotCoordinator)
    }

    /// A transaction's marker for `producer_id` is written and replicated in
    /// `__consumer_offsets` partition `partition` (WriteTxnMarkers): its offsets become
    /// committed (`commit`) or are dropped. A shard not loaded here has nothing to complete
    /// (its load replays the marker).
    pub fn complete_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        let Some(shard) = usize::try_from(partition)
            .ok()
            .and_then(|i| self.shards.get(i))
        else {
            return;
        };
        if let Some(c) = shard.state.lock().coordinator.as_mut() {
            let applied = c.complete_txn(producer_id, commit);
            tracing::debug!(
                partition,
                producer_id,
                commit,
                applied,
                "transactional offset commits completed by their marker"
            );
        }
    }

    /// An operation that changes state but never appends (a classic Heartbeat).
    pub fn update<T>(
        &self,
        broker: &Broker,
        group_id: &str,
        op: impl FnOnce(&mut Coordinator, i64) -> T,
    ) -> Result<T, ErrorCode> {
        let shard = self.shard(group_id);
        let mut s = shard.state.lock();
        match s.coordinator.as_mut() {
            Some(c) => Ok(op(c, now_ms())),
            None => {
                drop(s);
                Err(unavailable(broker, shard.index))
            }
        }
    }

    /// Read the shard of `group_id` (fetches, describes).
    pub fn read<T>(
        &self,
        broker: &Broker,
        group_id: &str,
        f: impl FnOnce(&Coordinator, &TopicsView) -> T,
    ) -> Result<T, ErrorCode> {
        let topics = self.topics();
        let shard = self.shard(group_id);
        let s = shard.state.lock();
        match s.coordinator.as_ref() {
            Some(c) => Ok(f(c, &topics)),
            None => {
                drop(s);
                Err(unavailable(broker, shard.index))
            }
        }
    }

    /// Read every loaded shard in turn (lists), one lock at a time.
    pub fn read_each(&self, mut f: impl FnMut(&Coordinator, &TopicsView)) {
        let topics = self.topics();
        for shard in &self.shards {
            if let Some(c) = shard.state.lock().coordinator.as_ref() {
                f(c, &topics);
            }
        }
    }

    /// Replay the partitions of `__consumer_offsets` this broker leads (startup), then start
    /// every loaded member's session. Unreadable batches and records are skipped (ERROR,
    /// counted): a damaged partition costs the groups on it what was in the damaged part,
    /// never the broker's startup. Partitions this broker comes to lead later are loaded on
    /// election ([`GroupRuntime::leadership_changing`]) or by the tick.
    pub fn load(&self, broker: &Broker) -> anyhow::Result<()> {
        // First: an election published while this runs loads its own shard.
        self.started.store(true, Ordering::Release);
        let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut total = Replayed::default();
        let mut shards = 0;
        for p in &topic.partitions {
            if p.is_leader() && p.has_log() {
                if let Some(r) = self.load_shard(broker, p, false, Change::Startup) {
                    total.add(broker, p, r);
                    shards += 1;
                }
            }
        }
        tracing::info!(
            shards,
            records = total.records,
            skipped_batches = total.skipped_batches,
            skipped_records = total.skipped_records,
            groups = self.group_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "groups loaded from {OFFSETS_TOPIC}"
        );
        self.update_gauges(broker);
        Ok(())
    }

    /// Groups in every loaded shard, as of their last tick or load.
    fn group_count(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.groups.load(Ordering::Relaxed))
            .sum()
    }

    /// Replay partition `p` into a new coordinator and install it as its shard's state
    /// (reads the log: a blocking thread). `Startup` and `Reconciled` keep a shard that is
    /// already loaded; `Elected` replaces it (the log is the new leadership's truth).
    /// Returns what was replayed, `None` if nothing was loaded.
    fn load_shard(
        &self,
        broker: &Broker,
        p: &Partition,
        to_log_end: bool,
        why: Change,
    ) -> Option<Replayed> {
        let shard = self.shards.get(usize::try_from(p.index).ok()?)?;
        let _loading = shard.loading.lock();
        if !matches!(why, Change::Elected) && shard.state.lock().coordinator.is_some() {
            return None;
        }
        let started = Instant::now();
        let mut c = Coordinator::new(self.config.clone());
        let replayed = match replay_partition(&mut c, p, now_ms(), to_log_end) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition = p.index, error = %e,
                    "cannot read {OFFSETS_TOPIC}; its groups start without their state");
                Replayed::default()
            }
        };
        shard.count(&c);
        let groups = c.group_count();
        {
            let mut s = shard.state.lock();
            s.generation += 1;
            s.coordinator = Some(c);
            // Requests parked on an earlier load: their handlers answer NOT_COORDINATOR.
            s.waiters.clear();
        }
        let metrics = self.metrics(broker);
        metrics
            .shard_changes
            .with_label_values(&[why.label()])
            .inc();
        if !matches!(why, Change::Startup) {
            tracing::info!(
                partition = p.index,
                reason = why.label(),
                groups,
                records = replayed.records,
                skipped_batches = replayed.skipped_batches,
                skipped_records = replayed.skipped_records,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "group coordinator shard loaded: this broker coordinates the groups of this {OFFSETS_TOPIC} partition"
            );
            Replayed::default().add(broker, p, replayed);
        }
        self.update_gauges(broker);
        Some(replayed)
    }

    /// Called as the metadata publisher sets a new state on `p`, a partition of
    /// `__consumer_offsets`, before the state is set. About to lead it: replay the partition's
    /// log (replicated here while it was a follower) so the groups' committed offsets and
    /// metadata are current before the first request is answered (Kafka's group loading on
    /// election); until then their requests still get NOT_COORDINATOR. Not leading it: unload
    /// its groups. Loads wait for the startup load, which covers them.
    pub fn leadership_changing(&self, broker: &Broker, p: &Partition, leads: bool) {
        if !leads {
            if let Some(shard) = usize::try_from(p.index)
                .ok()
                .and_then(|i| self.shards.get(i))
            {
                if unload(shard, Change::LostLeadership, self.metrics(broker), None) {
                    self.update_gauges(broker);
                }
            }
            return;
        }
        if !p.is_leader() && p.has_log() && self.started.load(Ordering::Acquire) {
            self.load_shard(broker, p, true, Change::Elected);
        }
    }

    /// One timer pass: unload shards whose partition this broker stopped leading, load the
    /// ones it leads but has not loaded (on a blocking thread), and tick every loaded shard.
    /// A shard whose tick appended completes in a task of its own, so a slow append in one
    /// shard never holds up the timers of another.
    fn tick(&self, broker: &Arc<Broker>) {
        let offsets = broker.topic(OFFSETS_TOPIC);
        let topics = self.topics();
        let started = self.started.load(Ordering::Acquire);
        for shard in &self.shards {
            let partition = offsets
                .as_ref()
                .and_then(|t| t.partitions.get(shard.index as usize));
            let leads = partition.is_some_and(|p| p.is_leader() && p.has_log());
            let loaded = shard.state.lock().coordinator.is_some();
            if !leads {
                if loaded {
                    unload(shard, Change::LostLeadership, self.metrics(broker), None);
                }
                continue;
            }
            if !loaded {
                if started && !shard.load_queued.swap(true, Ordering::AcqRel) {
                    let (b, p, shard) = (broker.clone(), partition.cloned(), shard.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Some(p) = p {
                            b.groups.load_shard(&b, &p, true, Change::Reconciled);
                        }
                        shard.load_queued.store(false, Ordering::Release);
                    });
                }
                continue;
            }
            let ticked = self.start(broker, shard, None, |c, now| {
                let fx = c.tick(now, &topics);
                shard.count(c);
                ((), fx)
            });
            if let Ok(((), pending)) = ticked {
                if pending.append.parts.is_empty() {
                    pending.settle(Vec::new());
                } else {
                    tokio::spawn(pending.complete());
                }
            }
        }
        self.update_gauges(broker);
    }

    /// Set the group, member and shard gauges from the shards' counts.
    fn update_gauges(&self, broker: &Broker) {
        let metrics = self.metrics(broker);
        let (mut groups, mut members, mut loaded) = (0, 0, 0);
        for shard in &self.shards {
            let label = shard.index.to_string();
            if shard.state.lock().coordinator.is_some() {
                let g = shard.groups.load(Ordering::Relaxed);
                groups += g;
                members += shard.members.load(Ordering::Relaxed);
                loaded += 1;
                metrics.shard_groups.with_label_values(&[&label]).set(g);
            } else {
                let _ = metrics.shard_groups.remove_label_values(&[&label]);
            }
        }
        metrics.shards_loaded.set(loaded);
        broker.metrics.groups.set(groups);
        broker.metrics.group_members.set(members);
    }

    /// Fire the coordinator's timers periodically until shutdown.
    pub async fn tick_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            broker.groups.tick(&broker);
            ticks += 1;
            // Every 5 s: drop lag windows of gone groups/offsets and refresh the lag gauges,
            // off the async workers (a pass over every window).
            if ticks.is_multiple_of(100) {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || crate::group_lag::refresh(&b)).await;
            }
        }
    }
}

/// Drop a shard's groups (this broker stopped leading its partition, or cannot write it).
/// Parked requests are dropped with them: their handlers answer NOT_COORDINATOR. False if
/// the shard was not loaded (or, with `generation`, was loaded again since).
fn unload(
    shard: &Shard,
    why: Change,
    metrics: &CoordinatorMetrics,
    generation: Option<u64>,
) -> bool {
    let groups = {
        let mut s = shard.state.lock();
        if generation.is_some_and(|g| g != s.generation) {
            return false;
        }
        let Some(c) = s.coordinator.take() else {
            return false;
        };
        s.generation += 1;
        s.waiters.clear();
        c.group_count()
    };
    shard.groups.store(0, Ordering::Relaxed);
    shard.members.store(0, Ordering::Relaxed);
    metrics
        .shard_changes
        .with_label_values(&[why.label()])
        .inc();
    tracing::info!(
        partition = shard.index,
        reason = why.label(),
        groups,
        "group coordinator shard unloaded: this broker no longer coordinates the groups of this {OFFSETS_TOPIC} partition"
    );
    true
}

/// Why a shard cannot serve: this broker leads its partition but has not loaded it yet
/// (COORDINATOR_LOAD_IN_PROGRESS, as Kafka), or does not lead it (NOT_COORDINATOR).
fn unavailable(broker: &Broker, index: i32) -> ErrorCode {
    let leads = broker.topic(OFFSETS_TOPIC).is_some_and(|t| {
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

/// What replaying a `__consumer_offsets` partition read and skipped.
#[derive(Debug, Default, Clone, Copy)]
struct Replayed {
    records: usize,
    /// Batches that did not decode (bad framing, CRC, compression): skipped whole.
    skipped_batches: usize,
    /// Records whose key or value the coordinator could not read.
    skipped_records: usize,
}

impl Replayed {
    /// Add `r` (partition `p`'s) to the total and count what it skipped.
    fn add(&mut self, broker: &Broker, p: &Partition, r: Replayed) {
        self.records += r.records;
        self.skipped_batches += r.skipped_batches;
        self.skipped_records += r.skipped_records;
        let skipped = r.skipped_batches + r.skipped_records;
        if skipped > 0 {
            tracing::error!(
                partition = p.index,
                skipped_batches = r.skipped_batches,
                skipped_records = r.skipped_records,
                "{OFFSETS_TOPIC} held unreadable data; its groups were replayed without it"
            );
            broker
                .metrics
                .corrupt_data_skipped
                .with_label_values(&["consumer_offsets"])
                .inc_by(skipped as u64);
        }
    }
}

/// Replay one `__consumer_offsets` partition into the coordinator: up to the high watermark,
/// or with `to_log_end` up to the log end (a new leader's log is the partition's truth).
/// A batch that does not decode is skipped whole, a record the coordinator cannot read
/// alone; an error is returned only when the log cannot be read at all.
fn replay_partition(
    c: &mut Coordinator,
    p: &Partition,
    now: i64,
    to_log_end: bool,
) -> anyhow::Result<Replayed> {
    let mut out = Replayed::default();
    let Some((mut offset, hw)) = p.offsets() else {
        return Ok(out);
    };
    let end = if to_log_end {
        p.log_end_offset().unwrap_or(hw)
    } else {
        hw
    };
    while offset < end {
        let read = if to_log_end {
            p.read_for_follower(offset, 8 << 20, true)
        } else {
            p.read(offset, 8 << 20, true)
        }
        .map_err(|e| {
            anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {:?}", p.index, e.error_code())
        })?;
        let Some(range) = read.records else {
            break;
        };
        let raw = range
            .read()
            .map_err(|e| anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {e}", p.index))?;
        let before = offset;
        for batch in BatchIter::new(&raw) {
            // The log holds whole batches: a header that does not frame within what was
            // read is damage, and what follows cannot be framed: stop here.
            let b = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(partition = p.index, offset, error = %e,
                        "{OFFSETS_TOPIC}: unframeable batch; replay of this partition stops here");
                    out.skipped_batches += 1;
                    return Ok(out);
                }
            };
            let (base, delta) = (b.header.base_offset, b.header.last_offset_delta);
            offset = offset.max(base.saturating_add(delta as i64).saturating_add(1));
            let set = match RecordBatchDecoder::decode(&mut raw.slice(b.position..b.end())) {
                Ok(set) => set,
                Err(e) => {
                    tracing::error!(partition = p.index, base_offset = base, error = %e,
                        "skipping undecodable {OFFSETS_TOPIC} batch");
                    out.skipped_batches += 1;
                    continue;
                }
            };
            if b.header.is_control() {
                // A transaction's marker: the offsets its producer committed in it become
                // committed (or are dropped).
                if let Ok(Some(m)) = fjord_protocol::control::read_marker(b.bytes) {
                    c.complete_txn(b.header.producer_id, m.commit);
                }
                continue;
            }
            let producer = b.header.is_transactional().then_some(b.header.producer_id);
            for r in set.records {
                if r.control {
                    continue;
                }
                let Some(key) = r.key else { continue };
                let replayed = match producer {
                    Some(pid) => c.replay_txn(pid, &key, r.value.as_deref(), now),
                    None => c.replay(&key, r.value.as_deref(), now),
                };
                match replayed {
                    Ok(()) => out.records += 1,
                    Err(e) => {
                        tracing::error!(partition = p.index, offset = r.offset, error = %e,
                            "skipping unreadable {OFFSETS_TOPIC} record");
                        out.skipped_records += 1;
                    }
                }
            }
        }
        if offset == before {
            break;
        }
    }
    Ok(out)
}

/// Whether another broker coordinates `group_id`: the leader of the group's
/// `__consumer_offsets` partition coordinates it (NOT_COORDINATOR makes clients look it up).
pub fn not_coordinator(broker: &Broker, group_id: &str) -> bool {
    let Some(t) = broker.topic(OFFSETS_TOPIC) else {
        return false;
    };
    let p = fjord_group::offsets_partition(group_id, t.partitions.len() as i32);
    t.partitions.get(p as usize).is_some_and(|p| !p.is_leader())
}

/// Create `__consumer_offsets` (compacted, `offsets.topic.num.partitions` partitions) if it does
/// not exist yet, with `offsets.topic.replication.factor` replicas or as many as there are live
/// brokers, whichever is smaller (Kafka would refuse until enough brokers are up; a single
/// node must work out of the box).
pub async fn ensure_offsets_topic(broker: &Broker) -> Result<Arc<crate::broker::Topic>, String> {
    if let Some(t) = broker.topic(OFFSETS_TOPIC) {
        return Ok(t);
    }
    let live = broker
        .with_image(|i| i.brokers().filter(|b| !b.fenced).count())
        .max(1);
    let rf = (broker.config.cluster.offsets_topic_replication_factor as usize).min(live) as i16;
    let mut cfg = BTreeMap::new();
    cfg.insert("cleanup.policy".to_string(), "compact".to_string());
    cfg.insert("segment.bytes".to_string(), (100 << 20).to_string());
    let partitions = broker.config.group.offsets_partitions;
    match broker
        .create_topic(
            OFFSETS_TOPIC,
            partitions,
            rf,
            cfg,
            false,
            crate::control::Deadline::standard(),
        )
        .await
    {
        Ok((_, _, Some(t))) => Ok(t),
        Ok((_, _, None)) => Err(format!("{OFFSETS_TOPIC} was not created")),
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => broker
            .topic(OFFSETS_TOPIC)
            .ok_or_else(|| format!("{OFFSETS_TOPIC} is not known here yet")),
        Err(e) => {
            tracing::error!(error = %e.message, "cannot create {OFFSETS_TOPIC}");
            Err(format!("cannot create {OFFSETS_TOPIC}: {}", e.message))
        }
    }
}

/// Queue the records on their `__consumer_offsets` partitions' I/O threads (in call order;
/// the caller holds its shard's lock so the log keeps the state machine's order).
fn queue_append(broker: &Broker, records: &[Record], now: i64) -> QueuedAppend {
    let mut queued = QueuedAppend::default();
    if records.is_empty() {
        return queued;
    }
    // FindCoordinator creates the topic before any group can reach this point.
    let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
        queued.failed = Some(ErrorCode::CoordinatorNotAvailable);
        return queued;
    };
    // One batch per partition and producer: a transactional offset commit's records go in a
    // transactional batch of its producer (its transaction's marker ends it).
    type Producer = Option<(i64, i16)>;
    let mut by_partition: BTreeMap<(i32, Producer), Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_partition
            .entry((r.partition, r.producer))
            .or_default()
            .push(r);
    }
    for ((p, producer), recs) in by_partition {
        let Some(partition) = usize::try_from(p)
            .ok()
            .and_then(|i| topic.partitions.get(i))
        else {
            queued.failed = Some(ErrorCode::CoordinatorNotAvailable);
            continue;
        };
        let krecs: Vec<KRecord> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| KRecord {
                transactional: producer.is_some(),
                control: false,
                partition_leader_epoch: 0,
                producer_id: producer.map_or(-1, |p| p.0),
                producer_epoch: producer.map_or(-1, |p| p.1),
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: Some(r.key.clone()),
                value: r.value.clone(),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        if let Err(e) = RecordBatchEncoder::encode(
            &mut buf,
            krecs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        ) {
            tracing::error!(error = %e, "cannot encode {OFFSETS_TOPIC} records");
            queued.failed = Some(ErrorCode::UnknownServerError);
            continue;
        }
        let append =
            partition.append_async(&broker.io, buf.freeze(), AppendOrigin::Coordinator, now);
        queued.parts.push((partition.clone(), Box::pin(append)));
    }
    queued
}

fn log_event(broker: &Broker, e: Event) {
    match e {
        Event::Rebalance {
            group,
            group_type,
            generation,
            members,
            reason,
        } => {
            broker
                .metrics
                .group_rebalances
                .with_label_values(&[group_type])
                .inc();
            tracing::info!(%group, group_type, generation, members, %reason, "group rebalance");
        }
        Event::Generation {
            group,
            group_type,
            generation,
            members,
            protocol,
        } => {
            tracing::info!(%group, group_type, generation, members = members.len(),
                member_ids = ?members, protocol = protocol.as_deref().unwrap_or(""),
                "group generation assigned");
        }
        Event::MemberExpired { group, member } => {
            tracing::info!(%group, %member, "group member session expired");
        }
        Event::OffsetsExpired { group, count } => {
            tracing::info!(%group, count, "committed offsets expired (offsets.retention.minutes)");
        }
    }
}
