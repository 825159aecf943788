//! The group coordinator's runtime: feeds requests and timer ticks to the I/O-free
//! [`fjord_group::Coordinator`], appends the records it returns to `__consumer_offsets` (before
//! any reply computed in the same step is sent), parks JoinGroup/SyncGroup requests until the
//! state machine releases them, and replays `__consumer_offsets` at startup.
//!
//! The coordinator lock is never held across an `.await`: an operation locks, runs the state
//! machine, appends synchronously (so records reach the log in the order the state machine
//! produced them), unlocks, and only then wakes parked requests.
//!
//! As Kafka's coordinator, nothing is answered before the records it depends on are on every
//! in-sync replica of their `__consumer_offsets` partition (acks=all): an operation returns
//! what it appended as [`Written`], parked requests get it with their reply ([`Delivered`]),
//! and the handlers wait for [`Written::replicated`] before answering. A member told it joined
//! therefore stays joined when the coordinator moves; if replication does not happen within
//! [`REPLICATION_TIMEOUT`] the answer is COORDINATOR_NOT_AVAILABLE (NOT_COORDINATOR when
//! leadership moved), which clients retry after finding the coordinator again.

use fjord_protocol::records::AppendOrigin;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fjord_group::coordinator::{Record, TopicInfo, TopicsView};
use fjord_group::{Coordinator, Effects, Event, Reply, Token};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::broker::{now_ms, Broker};
use crate::partition::Partition;
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
}

impl Written {
    /// Whether the append itself succeeded (its records are in the leader's log).
    pub fn appended(&self) -> Result<(), ErrorCode> {
        self.failed.map_or(Ok(()), Err)
    }

    /// Wait until the records are on every in-sync replica (at most [`REPLICATION_TIMEOUT`]).
    pub async fn replicated(&self) -> Result<(), ErrorCode> {
        self.appended()?;
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

pub struct GroupRuntime {
    coordinator: Mutex<Coordinator>,
    /// The topics as the assignors see them (partitions and their replicas' racks), kept by
    /// [`GroupRuntime::update_topics`] as metadata is published rather than rebuilt for every
    /// heartbeat. Readers take the `Arc`; an update copies the map only while one is held.
    topics: parking_lot::RwLock<GroupTopics>,
    /// The startup replay is done (later elections replay one partition each).
    loaded: AtomicBool,
    waiters: Mutex<HashMap<Token, oneshot::Sender<Delivered>>>,
    next_token: AtomicU64,
    /// Consumer lag windows (Burrow's evaluation, [`crate::group_lag`]), behind their own lock
    /// so commits and evaluations never wait on the coordinator.
    pub(crate) lag: Mutex<fjord_group::lag::LagWindows>,
    pub(crate) lag_metrics: std::sync::OnceLock<crate::group_lag::LagMetrics>,
    /// Log ends of partitions with commits here but no replica, polled from their leaders.
    pub(crate) remote_ends: crate::log_ends::RemoteEnds,
}

impl GroupRuntime {
    pub fn new(config: fjord_group::Config) -> GroupRuntime {
        GroupRuntime {
            lag: Mutex::new(fjord_group::lag::LagWindows::new(config.lag)),
            lag_metrics: std::sync::OnceLock::new(),
            remote_ends: Default::default(),
            coordinator: Mutex::new(Coordinator::new(config)),
            topics: parking_lot::RwLock::new(GroupTopics::default()),
            loaded: AtomicBool::new(false),
            waiters: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        }
    }

    /// A token for a request that may have to wait, and where its reply will arrive.
    pub fn park(&self) -> (Token, oneshot::Receiver<Delivered>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(token, tx);
        (token, rx)
    }

    /// Forget a parked request whose connection went away.
    pub fn unpark(&self, token: Token) {
        self.waiters.lock().remove(&token);
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

    /// Run one coordinator operation: state machine, then append, then replies. Returns the
    /// operation's own answer and what it appended (to wait for before answering).
    pub fn run<T>(
        &self,
        broker: &Broker,
        op: impl FnOnce(&mut Coordinator, &TopicsView, i64) -> (T, Effects),
    ) -> (T, Written) {
        let now = now_ms();
        let topics = self.topics();
        let (out, fx, appended, members, groups) = {
            let mut c = self.coordinator.lock();
            let (out, mut fx) = op(&mut c, &topics, now);
            let appended = append(broker, &c, &fx.records, now);
            if appended.failed.is_some() {
                // The log does not hold these commits: memory must not show them either.
                c.undo(std::mem::take(&mut fx.undo));
            }
            (out, fx, appended, c.member_count(), c.group_count())
        };
        broker.metrics.group_members.set(members as i64);
        broker.metrics.groups.set(groups as i64);
        self.deliver(broker, fx, &appended);
        (out, appended)
    }

    /// Read-only access (fetches, describes, lists).
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator, &TopicsView) -> T) -> T {
        let topics = self.topics();
        let c = self.coordinator.lock();
        f(&c, &topics)
    }

    fn deliver(&self, broker: &Broker, fx: Effects, written: &Written) {
        for e in fx.events {
            log_event(broker, e);
        }
        let mut waiters = self.waiters.lock();
        for (token, reply) in fx.replies {
            if let Some(tx) = waiters.remove(&token) {
                let _ = tx.send(Delivered {
                    reply,
                    written: written.clone(),
                });
            }
        }
    }

    /// Replay `__consumer_offsets` (startup), then start every loaded member's session.
    /// Unreadable batches and records are skipped (ERROR, counted): a damaged partition costs
    /// the groups on it what was in the damaged part, never the broker's startup.
    pub fn load(&self, broker: &Broker) -> anyhow::Result<()> {
        let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
            self.loaded.store(true, Ordering::Release);
            return Ok(());
        };
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut c = self.coordinator.lock();
        let mut total = Replayed::default();
        for p in &topic.partitions {
            match replay_partition(&mut c, p, now, false) {
                Ok(r) => total.add(broker, p, r),
                Err(e) => tracing::error!(partition = p.index, error = %e,
                    "cannot read {OFFSETS_TOPIC}; its groups start without their state"),
            }
        }
        self.loaded.store(true, Ordering::Release);
        tracing::info!(
            records = total.records,
            skipped_batches = total.skipped_batches,
            skipped_records = total.skipped_records,
            groups = c.group_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "groups loaded from {OFFSETS_TOPIC}"
        );
        broker.metrics.groups.set(c.group_count() as i64);
        Ok(())
    }

    /// This broker is about to lead `p`, a partition of `__consumer_offsets`, so it becomes the
    /// coordinator of its groups: replay the partition's log (replicated here while it was a
    /// follower) so their committed offsets and metadata are current before the first request
    /// is answered (Kafka's group loading on election). Called before the partition's new
    /// state is set, so until the replay is done requests for these groups still get
    /// NOT_COORDINATOR. Skipped before the startup load, which replays everything.
    pub fn load_partition(&self, broker: &Broker, p: &Partition) {
        if !self.loaded.load(Ordering::Acquire) {
            return;
        }
        let started = std::time::Instant::now();
        let mut c = self.coordinator.lock();
        match replay_partition(&mut c, p, now_ms(), true) {
            Ok(r) => {
                tracing::info!(
                    partition = p.index,
                    records = r.records,
                    skipped_batches = r.skipped_batches,
                    skipped_records = r.skipped_records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "elected leader of {OFFSETS_TOPIC}: groups of this partition replayed"
                );
                Replayed::default().add(broker, p, r);
            }
            Err(e) => tracing::error!(partition = p.index, error = %e,
                "cannot replay {OFFSETS_TOPIC} for the groups this broker now coordinates"),
        }
        broker.metrics.groups.set(c.group_count() as i64);
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
            let _ = broker
                .groups
                .run(&broker, |c, topics, now| ((), c.tick(now, topics)));
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
            p.read_for_follower(offset, 8 << 20)
        } else {
            p.read(offset, 8 << 20, true)
        }
        .map_err(|e| {
            anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {:?}", p.index, e.error_code())
        })?;
        let Some(range) = read.records else {
            break;
        };
        let mut raw = range
            .read()
            .map_err(|e| anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {e}", p.index))?;
        let before = offset;
        while raw.len() >= 12 {
            // The log holds whole batches; a length that does not fit what was read is
            // damage: stop here (what follows cannot be framed).
            let len = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
            let Some(total) = usize::try_from(len)
                .ok()
                .and_then(|l| l.checked_add(12))
                .filter(|&t| t <= raw.len() && t >= 27)
            else {
                tracing::error!(
                    partition = p.index,
                    offset,
                    length = len,
                    "{OFFSETS_TOPIC}: unframeable batch; replay of this partition stops here"
                );
                out.skipped_batches += 1;
                return Ok(out);
            };
            let mut batch = raw.split_to(total);
            let base = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
            let delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
            offset = offset.max(base.saturating_add(delta as i64).saturating_add(1));
            let set = match RecordBatchDecoder::decode(&mut batch) {
                Ok(set) => set,
                Err(e) => {
                    tracing::error!(partition = p.index, base_offset = base, error = %e,
                        "skipping undecodable {OFFSETS_TOPIC} batch");
                    out.skipped_batches += 1;
                    continue;
                }
            };
            for r in set.records {
                if r.control {
                    continue;
                }
                let Some(key) = r.key else { continue };
                match c.replay(&key, r.value.as_deref(), now) {
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
        .create_topic(OFFSETS_TOPIC, partitions, rf, cfg, false)
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

/// Append the records to their `__consumer_offsets` partitions.
fn append(broker: &Broker, c: &Coordinator, records: &[Record], now: i64) -> Written {
    let mut written = Written::default();
    if records.is_empty() {
        return written;
    }
    // FindCoordinator creates the topic before any group can reach this point.
    let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
        written.failed = Some(ErrorCode::CoordinatorNotAvailable);
        return written;
    };
    let _ = c;
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, recs) in by_partition {
        let Some(partition) = usize::try_from(p)
            .ok()
            .and_then(|i| topic.partitions.get(i))
        else {
            written.failed = Some(ErrorCode::CoordinatorNotAvailable);
            continue;
        };
        let krecs: Vec<KRecord> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| KRecord {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
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
            written.failed = Some(ErrorCode::UnknownServerError);
            continue;
        }
        match partition.append(&buf, AppendOrigin::Coordinator, now) {
            Ok(info) => written.ends.push((partition.clone(), info.last_offset + 1)),
            Err(e) => {
                tracing::error!(partition = p, error = %e.message(), "append to {OFFSETS_TOPIC} failed");
                written.failed = Some(ErrorCode::CoordinatorNotAvailable);
            }
        }
    }
    written
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
