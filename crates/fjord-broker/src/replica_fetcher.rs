//! Follower fetchers (Kafka's ReplicaFetcherThread): one task per leader broker this broker
//! follows partitions of, on one connection to that leader.
//!
//! A partition handed to a fetcher starts in the *truncating* phase: the fetcher asks the
//! leader (OffsetForLeaderEpoch, with this broker's replica id) where the follower's latest
//! leader epoch ends in the leader's log and truncates divergent records
//! (`fjord_replication::truncation`), then *fetches* from its log end with long-polling Fetch
//! requests carrying its replica id, appending what comes back as the leader wrote it and
//! taking the leader's high watermark. The leader learns the follower's progress from the
//! fetch offsets. Fetches run in an incremental fetch session with the leader (KIP-227,
//! [`crate::fetch_session::ClientSession`]): after a full fetch, a request lists only the
//! partitions whose fetch position changed, added ones, and removed ones as forgotten, so a
//! long poll over thousands of idle partitions lists none; a session error or a failed
//! request makes the next fetch full again. Each request carries this broker's epoch (KIP-903,
//! Fetch v15+); a leader refuses it with STALE_BROKER_EPOCH if it registered a newer one.
//! Partitions this broker is being added to by a reassignment may be throttled
//! (`crate::throttle`): while `follower.replication.throttled.rate` is spent they are left out
//! of fetches. Errors pause one partition for `replica.fetch.backoff.ms`; a lost connection
//! pauses the fetcher. Role changes come from [`crate::broker::Broker::publish`] as commands.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::{Connection, ConnectionConfig};
use fjord_protocol::batch::BatchIter;
use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use fjord_replication::truncation::{self, Decision};
use fjord_storage::io::IoGone;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::broker::Broker;
use crate::fetch_session::{ClientSession, NextFetch};
use crate::partition::{AppendRejection, Partition};
use crate::throttle::FetchAllowance;

type Key = (Uuid, i32);

enum Command {
    /// Follow the partition in this leader epoch (truncate first).
    Follow(Arc<Partition>, i32),
    Stop(Key),
}

/// The fetchers of this broker, by leader.
#[derive(Default)]
pub struct ReplicaFetchers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set by [`ReplicaFetchers::start`]; before that, commands wait in `early`.
    started: Option<(Arc<Broker>, watch::Receiver<bool>)>,
    early: Vec<(i32, Command)>,
    by_leader: HashMap<i32, mpsc::UnboundedSender<Command>>,
    /// Which leader each followed partition is fetched from.
    assigned: HashMap<Key, i32>,
}

impl ReplicaFetchers {
    /// Follow `p` from `leader` in `leader_epoch` (moving it off another leader's fetcher).
    pub fn follow(&self, p: &Arc<Partition>, leader: i32, leader_epoch: i32) {
        let key = (p.topic_id, p.index);
        let mut inner = self.inner.lock();
        if let Some(old) = inner.assigned.insert(key, leader) {
            if old != leader {
                inner.send(old, Command::Stop(key));
            }
        }
        inner.send(leader, Command::Follow(p.clone(), leader_epoch));
    }

    /// Stop following `p` (it became leader, lost its leader, or moved away).
    pub fn stop(&self, p: &Partition) {
        let key = (p.topic_id, p.index);
        let mut inner = self.inner.lock();
        if let Some(old) = inner.assigned.remove(&key) {
            inner.send(old, Command::Stop(key));
        }
    }

    /// Partitions being followed (for metrics and tests).
    pub fn followed(&self) -> usize {
        self.inner.lock().assigned.len()
    }

    /// Start fetching (once the broker serves); commands given before wait until now.
    pub fn start(&self, broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
        let mut inner = self.inner.lock();
        inner.started = Some((broker, shutdown));
        for (leader, cmd) in std::mem::take(&mut inner.early) {
            inner.send(leader, cmd);
        }
    }
}

impl Inner {
    fn send(&mut self, leader: i32, cmd: Command) {
        let Some((broker, shutdown)) = self.started.clone() else {
            self.early.push((leader, cmd));
            return;
        };
        let cmd = match self.by_leader.get(&leader) {
            Some(tx) => match tx.send(cmd) {
                Ok(()) => return,
                // The fetcher ended (shutdown): start a new one below.
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        if matches!(cmd, Command::Stop(_)) {
            return; // nothing to stop on a fetcher that is not running
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(cmd);
        self.by_leader.insert(leader, tx);
        tokio::spawn(run(broker, leader, rx, shutdown));
    }
}

enum Phase {
    /// Ask the leader where this epoch ends (`None`: start with the log's latest epoch).
    Truncating {
        asked: Option<i32>,
    },
    Fetching,
}

struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
    phase: Phase,
    paused_until: Option<Instant>,
}

impl Followed {
    fn ready(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|t| t <= now)
    }
}

/// What this follower asks of one partition; the session lists it again when it changes.
#[derive(Debug, Clone, PartialEq)]
struct FetchState {
    topic: Arc<str>,
    fetch_offset: i64,
    log_start_offset: i64,
    max_bytes: i32,
    leader_epoch: i32,
}

/// The fetcher's session with its leader.
#[derive(Default)]
struct Session {
    client: ClientSession<Key, FetchState>,
    /// The last partition that returned records: the next request starts after it, so that in
    /// a full fetch a partition later in the order is not starved by the response budget.
    rotate_after: Option<Key>,
}

impl Session {
    /// The request failed or was refused: the next fetch is full. `error` labels the metric.
    fn reset(&mut self, broker: &Broker, error: &str) {
        self.client.failed();
        broker
            .metrics
            .fetch_sessions
            .replica_fetch_session_resets
            .with_label_values(&[error])
            .inc();
    }
}

/// `parts` from just after `after` round to it.
fn rotated<V>(parts: &BTreeMap<Key, V>, after: Option<Key>) -> impl Iterator<Item = (&Key, &V)> {
    let tail = match after {
        Some(k) => parts.range((Bound::Excluded(k), Bound::Unbounded)),
        None => parts.range(..),
    };
    tail.chain(after.into_iter().flat_map(|k| parts.range(..=k)))
}

/// Consecutive items of one topic in one group, in order (a topic may come twice when the
/// order wraps round; Kafka accepts that).
fn by_topic<T>(
    items: impl IntoIterator<Item = (Uuid, Arc<str>, T)>,
) -> Vec<(Uuid, Arc<str>, Vec<T>)> {
    let mut out: Vec<(Uuid, Arc<str>, Vec<T>)> = Vec::new();
    for (id, name, item) in items {
        match out.last_mut() {
            Some((last, _, v)) if *last == id => v.push(item),
            _ => out.push((id, name, vec![item])),
        }
    }
    out
}

async fn run(
    broker: Arc<Broker>,
    leader: i32,
    mut rx: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = broker.config.replication.clone();
    let backoff = Duration::from_millis(cfg.fetch_backoff_ms.max(10));
    let mut parts: BTreeMap<Key, Followed> = BTreeMap::new();
    let mut conn: Option<Connection> = None;
    let mut session = Session::default();
    tracing::debug!(leader, "replica fetcher started");
    loop {
        while let Ok(cmd) = rx.try_recv() {
            apply(&mut parts, cmd);
        }
        if *shutdown.borrow() {
            break;
        }
        // A deleted partition (its log taken out) is not fetched any more.
        parts.retain(|_, f| f.partition.has_log());
        let now = Instant::now();
        let next_ready = parts
            .values()
            .filter_map(|f| f.paused_until)
            .filter(|t| *t > now)
            .min();
        if parts.is_empty() || !parts.values().any(|f| f.ready(now)) {
            let sleep = next_ready.map_or(Duration::from_secs(3600), |t| t - now);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => apply(&mut parts, cmd),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let c = match &conn {
            Some(c) => c,
            None => match connect(&broker, leader).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "cannot reach the leader; retrying");
                    if pause(&mut shutdown, backoff).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let result = if parts
            .values()
            .any(|f| f.ready(now) && matches!(f.phase, Phase::Truncating { .. }))
        {
            truncate_round(&broker, c, &mut parts, backoff).await
        } else {
            fetch_round(&broker, c, &mut parts, &mut session, backoff, &mut shutdown).await
        };
        // Every round awaits the network, but make sure a round that found nothing to send
        // can never turn this loop into a busy one on a runtime thread.
        tokio::task::yield_now().await;
        if let Err(e) = result {
            tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            session.reset(&broker, "request_failed");
            if pause(&mut shutdown, backoff).await {
                break;
            }
        }
    }
    tracing::debug!(leader, "replica fetcher stopped");
}

/// Sleep `d` unless shutdown comes first (then `true`).
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

fn apply(parts: &mut BTreeMap<Key, Followed>, cmd: Command) {
    match cmd {
        Command::Follow(p, leader_epoch) => {
            parts.insert(
                (p.topic_id, p.index),
                Followed {
                    partition: p,
                    leader_epoch,
                    phase: Phase::Truncating { asked: None },
                    paused_until: None,
                },
            );
        }
        Command::Stop(key) => {
            parts.remove(&key);
        }
    }
}

async fn connect(broker: &Broker, leader: i32) -> fjord_client::Result<Connection> {
    connect_peer(broker, leader, "replica-fetcher").await
}

/// A Kafka-protocol connection from this broker to broker `node` (its client listener),
/// with client id `fjord-{role}-{this broker's id}`.
pub(crate) async fn connect_peer(
    broker: &Broker,
    node: i32,
    role: &str,
) -> fjord_client::Result<Connection> {
    let Some((host, port)) = broker.broker_address(node) else {
        return Err(fjord_client::Error::Protocol(format!(
            "broker {node} has no live endpoint in the metadata"
        )));
    };
    // The rack tag lets the peer's traffic accounting place this connection's requests
    // (ApiVersions, OffsetForLeaderEpoch) in this broker's rack too, not only its fetches.
    let client_id = match &broker.config.rack {
        Some(rack) => format!(
            "fjord-{role}-{},{}={rack}",
            broker.node_id(),
            crate::accounting::config::CLIENT_ID_TAG
        ),
        None => format!("fjord-{role}-{}", broker.node_id()),
    };
    let config = ConnectionConfig {
        client_id,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(3),
        max_in_flight: 2,
        sasl: crate::sasl::inter_broker_credentials(broker),
        tls: crate::tls::inter_broker(broker),
        ..ConnectionConfig::default()
    };
    Connection::connect(&format!("{host}:{port}"), config).await
}

/// One OffsetForLeaderEpoch round for every partition that must truncate.
async fn truncate_round(
    broker: &Broker,
    conn: &Connection,
    parts: &mut BTreeMap<Key, Followed>,
    backoff: Duration,
) -> fjord_client::Result<()> {
    let now = Instant::now();
    let mut asks: BTreeMap<Arc<str>, Vec<(Key, i32, i32)>> = BTreeMap::new();
    for (key, f) in parts.iter_mut() {
        let Phase::Truncating { asked } = f.phase else {
            continue;
        };
        if !f.ready(now) {
            continue;
        }
        let p = &f.partition;
        let latest = asked.or_else(|| p.with_log(|l| l.latest_epoch()).flatten());
        match latest {
            Some(epoch) => {
                asks.entry(p.topic.clone())
                    .or_default()
                    .push((*key, epoch, f.leader_epoch))
            }
            None => {
                // No epochs in the log (empty): keep what is committed, fetch the rest.
                let (leo, hw) = (p.log_end_offset().unwrap_or(0), p.high_watermark());
                truncate(broker, p, truncation::no_epochs(leo, hw)).await;
                f.phase = Phase::Fetching;
            }
        }
    }
    if asks.is_empty() {
        return Ok(());
    }
    let topics = asks
        .iter()
        .map(|(topic, ps)| {
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    ps.iter()
                        .map(|((_, idx), asked, current)| {
                            OffsetForLeaderPartition::default()
                                .with_partition(*idx)
                                .with_current_leader_epoch(*current)
                                .with_leader_epoch(*asked)
                        })
                        .collect(),
                )
        })
        .collect();
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.node_id()))
        .with_topics(topics);
    let resp = conn.send(&req).await?;
    let asked_by_key: HashMap<(Arc<str>, i32), (Key, i32)> = asks
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |(k, a, _)| ((t.clone(), k.1), (*k, *a))))
        .collect();
    for t in resp.topics {
        for r in t.partitions {
            let name: Arc<str> = Arc::from(&**t.topic);
            let Some((key, asked)) = asked_by_key.get(&(name, r.partition)).copied() else {
                continue;
            };
            let Some(f) = parts.get_mut(&key) else {
                continue;
            };
            let p = f.partition.clone();
            if r.error_code != 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, error = r.error_code,
                    "OffsetForLeaderEpoch refused; retrying");
                f.paused_until = Some(Instant::now() + backoff);
                continue;
            }
            let answer = (r.leader_epoch >= 0 && r.end_offset >= 0)
                .then_some((r.leader_epoch, r.end_offset));
            let leo = p.log_end_offset().unwrap_or(0);
            let decision = truncation::decide(
                asked,
                answer,
                |e| p.with_log(|l| l.end_offset_for_epoch(e)).flatten(),
                leo,
                p.high_watermark(),
            );
            match decision {
                Decision::TruncateTo(offset) => {
                    truncate(broker, &p, offset).await;
                    f.phase = Phase::Fetching;
                }
                Decision::AskAgain { epoch } => f.phase = Phase::Truncating { asked: Some(epoch) },
            }
        }
    }
    Ok(())
}

/// Truncate and say so loudly when records go: they were never committed, but a producer with
/// acks=1 (or an unclean election) may have been told they were written.
async fn truncate(broker: &Broker, p: &Arc<Partition>, offset: i64) {
    let truncated = p.on_io(&broker.io, move |p| p.truncate_to(offset)).await;
    match truncated.unwrap_or(Err(AppendRejection::IoGone)) {
        Ok((before, after)) if after < before => {
            tracing::warn!(topic = %p.topic, partition = p.index, from_offset = after,
                to_offset = before - 1, records = before - after, leader_epoch = p.leader_epoch(),
                "truncated divergent records that the new leader does not have");
            broker
                .metrics
                .truncated_offsets
                .inc_by((before - after) as u64);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(topic = %p.topic, partition = p.index, error = %e.message(),
            "cannot truncate the follower's log"),
    }
}

/// One Fetch from the leader for every partition ready to fetch (in the session, only those
/// whose fetch state changed are listed).
async fn fetch_round(
    broker: &Broker,
    conn: &Connection,
    parts: &mut BTreeMap<Key, Followed>,
    session: &mut Session,
    backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> fjord_client::Result<()> {
    let cfg = &broker.config.replication;
    let version = conn.version(ApiKey::Fetch).unwrap_or(12);
    let now = Instant::now();
    let mut wanted: Vec<(Key, FetchState)> = Vec::new();
    // Reassignment throttle (follower side): partitions this broker is being added to share
    // `follower.replication.throttled.rate`; while it is spent they are not asked for, and
    // one request asks them together for at most the balance.
    let mut allowance: Option<FetchAllowance> = None;
    let mut held_back = false;
    for (key, f) in rotated(parts, session.rotate_after) {
        if !f.ready(now) || !matches!(f.phase, Phase::Fetching) {
            continue;
        }
        let p = &f.partition;
        let mut max_bytes = cfg.fetch_max_bytes;
        if p.follower_throttled() {
            let a = allowance.get_or_insert_with(|| {
                FetchAllowance::new(
                    broker
                        .replication_quotas
                        .follower
                        .lock()
                        .available(now_ms()),
                )
            });
            match a.grant(max_bytes.max(0) as usize) {
                None => {
                    held_back = true;
                    continue;
                }
                Some(n) => {
                    a.take(n as u64);
                    max_bytes = n.min(i32::MAX as usize) as i32;
                }
            }
        }
        let Some((log_start, leo)) = p.with_log(|l| (l.log_start_offset(), l.log_end_offset()))
        else {
            continue;
        };
        wanted.push((
            *key,
            FetchState {
                topic: p.topic.clone(),
                fetch_offset: leo,
                log_start_offset: log_start,
                max_bytes,
                leader_epoch: f.leader_epoch,
            },
        ));
    }
    if held_back {
        broker
            .metrics
            .replication_throttled_fetches
            .with_label_values(&["follower"])
            .inc();
    }
    if wanted.is_empty() {
        // Nothing fetchable (logs closing, or only throttled partitions with the rate spent):
        // wait instead of asking again at once — for a throttle, about until the allowance is
        // back (a tenth of a second's worth).
        let wait = if held_back {
            backoff.min(Duration::from_millis(100))
        } else {
            backoff
        };
        let _ = pause(shutdown, wait).await;
        return Ok(());
    }
    let next = session.client.next_fetch(wanted);
    let req = fetch_request(broker, version, &next);
    broker
        .metrics
        .fetch_sessions
        .replica_fetch_sent(next.is_full(), next.listed.len());
    let timeout =
        Duration::from_millis(cfg.fetch_wait_max_ms.max(0) as u64) + conn.request_timeout();
    let resp = tokio::select! {
        r = conn.send_with_timeout(&req, timeout) => r?,
        _ = shutdown.changed() => return Ok(()),
    };
    if resp.error_code != 0 {
        let code = resp.error_code;
        let session_lost = [
            ErrorCode::FetchSessionIdNotFound,
            ErrorCode::InvalidFetchSessionEpoch,
        ]
        .iter()
        .any(|c| c.code() == code);
        session.reset(broker, session_error_label(code));
        if session_lost {
            // The leader lost our session (restarted, evicted it) or saw a request twice: a
            // full fetch now opens a new one.
            tracing::debug!(
                error = code,
                session_id = next.session_id,
                "replica fetch session lost; fetching in full"
            );
            return Ok(());
        }
        if code == ErrorCode::StaleBrokerEpoch.code() {
            tracing::warn!(broker_epoch = broker.broker_epoch(),
                "leader refused this broker's fetch for a stale broker epoch (KIP-903); backing off");
        } else {
            tracing::debug!(error = code, "replica fetch refused; backing off");
        }
        for f in parts.values_mut() {
            f.paused_until = Some(Instant::now() + backoff);
        }
        return Ok(());
    }
    session.client.answered(next, resp.session_id);
    let by_name: HashMap<Arc<str>, Uuid> = parts
        .values()
        .map(|f| (f.partition.topic.clone(), f.partition.topic_id))
        .collect();
    let now_wall = now_ms();
    // Appends under way on the partitions' I/O threads, answered after the loop.
    type Appending = std::pin::Pin<
        Box<dyn Future<Output = Result<Result<usize, AppendRejection>, IoGone>> + Send>,
    >;
    let mut appends: Vec<(Key, Appending)> = Vec::new();
    for t in resp.responses {
        let topic_id = if version >= 13 {
            t.topic_id
        } else {
            match by_name.get(&**t.topic) {
                Some(id) => *id,
                None => continue,
            }
        };
        for d in t.partitions {
            let Some(f) = parts.get_mut(&(topic_id, d.partition_index)) else {
                continue;
            };
            if d.records.as_ref().is_some_and(|r| !r.is_empty()) {
                session.rotate_after = Some((topic_id, d.partition_index));
            }
            let p = f.partition.clone();
            match d.error_code {
                0 => {
                    let records = whole_batches(d.records.unwrap_or_default());
                    let (epoch, hw, ls) = (f.leader_epoch, d.high_watermark, d.log_start_offset);
                    // Writing (or following the leader's log start) is disk work, done on the
                    // partition's I/O thread; taking only the high watermark is not.
                    let needs_disk = !records.is_empty()
                        || p.with_log(|l| l.log_start_offset() < ls).unwrap_or(false);
                    let append = move |p: &Partition| {
                        p.append_as_follower(&records, epoch, hw, ls, now_wall)
                    };
                    if needs_disk {
                        appends.push((
                            (topic_id, d.partition_index),
                            Box::pin(p.on_io(&broker.io, append)),
                        ));
                    } else {
                        let result = append(&p);
                        on_follower_append(broker, f, &p, result, backoff);
                    }
                }
                code if code == ErrorCode::OffsetOutOfRange.code() => {
                    let leo = p.log_end_offset().unwrap_or(0);
                    if leo < d.log_start_offset {
                        tracing::warn!(topic = %p.topic, partition = p.index, log_end_offset = leo,
                            leader_log_start_offset = d.log_start_offset,
                            "follower is behind the leader's log start; restarting its log there");
                        let ls = d.log_start_offset;
                        let restarted = p.on_io(&broker.io, move |p| p.restart_at(ls)).await;
                        if let Err(e) = restarted.unwrap_or(Err(AppendRejection::IoGone)) {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e.message(),
                                "cannot restart the follower's log");
                            f.paused_until = Some(Instant::now() + backoff);
                        }
                    } else {
                        f.phase = Phase::Truncating { asked: None };
                    }
                }
                code => {
                    tracing::debug!(topic = %p.topic, partition = p.index, error = code,
                        "replica fetch of a partition refused; backing off");
                    // The leader has not applied the metadata this follower acts on yet (a new
                    // topic, a new leader epoch): that lasts milliseconds, so retry soon
                    // rather than after a full backoff (it delayed a new topic's first acks=all
                    // produce by ~200 ms).
                    let not_yet = [
                        ErrorCode::UnknownTopicId,
                        ErrorCode::UnknownTopicOrPartition,
                        ErrorCode::NotLeaderOrFollower,
                        ErrorCode::UnknownLeaderEpoch,
                    ]
                    .iter()
                    .any(|c| c.code() == code);
                    let wait = if not_yet {
                        backoff.min(Duration::from_millis(20))
                    } else {
                        backoff
                    };
                    f.paused_until = Some(Instant::now() + wait);
                }
            }
        }
    }
    for (key, done) in appends {
        let result = done.await.unwrap_or(Err(AppendRejection::IoGone));
        if let Some(f) = parts.get_mut(&key) {
            let p = f.partition.clone();
            on_follower_append(broker, f, &p, result, backoff);
        }
    }
    Ok(())
}

/// Account for a follower append, or back off / truncate again after a refusal.
fn on_follower_append(
    broker: &Broker,
    f: &mut Followed,
    p: &Partition,
    result: Result<usize, AppendRejection>,
    backoff: Duration,
) {
    match result {
        Ok(n) => {
            if n > 0 {
                broker.metrics.replica_fetch_bytes.inc_by(n as u64);
                if p.follower_throttled() {
                    broker
                        .replication_quotas
                        .follower
                        .lock()
                        .record(n as u64, now_ms());
                    broker
                        .metrics
                        .replication_throttled_bytes
                        .with_label_values(&["follower"])
                        .inc_by(n as u64);
                }
            }
        }
        Err(AppendRejection::NotLeader) | Err(AppendRejection::Deleted) => {
            // A role change is on its way as a command.
            f.paused_until = Some(Instant::now() + backoff);
        }
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.index, error = %e.message(),
                "cannot append fetched records; truncating against the leader again");
            f.phase = Phase::Truncating { asked: None };
            f.paused_until = Some(Instant::now() + backoff);
        }
    }
}

/// The Fetch request for `next` in Fetch `version`, from this broker as a replica.
fn fetch_request(broker: &Broker, version: i16, next: &NextFetch<Key, FetchState>) -> FetchRequest {
    let cfg = &broker.config.replication;
    let named = |topic_id: Uuid, name: &str| -> (Uuid, TopicName) {
        if version >= 13 {
            (topic_id, TopicName::default())
        } else {
            (
                Uuid::nil(),
                TopicName(StrBytes::from_string(name.to_string())),
            )
        }
    };
    let topics = by_topic(next.listed.iter().map(|((id, idx), s)| {
        let mut fp = FetchPartition::default()
            .with_partition(*idx)
            .with_fetch_offset(s.fetch_offset)
            .with_partition_max_bytes(s.max_bytes);
        if version >= 5 {
            fp = fp.with_log_start_offset(s.log_start_offset);
        }
        if version >= 9 {
            fp = fp.with_current_leader_epoch(s.leader_epoch);
        }
        (*id, s.topic.clone(), fp)
    }))
    .into_iter()
    .map(|(id, name, partitions)| {
        let (topic_id, topic) = named(id, &name);
        FetchTopic::default()
            .with_topic_id(topic_id)
            .with_topic(topic)
            .with_partitions(partitions)
    })
    .collect();
    let mut req = FetchRequest::default()
        .with_max_wait_ms(cfg.fetch_wait_max_ms)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_topics(topics);
    if version >= 3 {
        req = req.with_max_bytes(cfg.fetch_response_max_bytes);
    }
    if version >= 7 {
        let forgotten = by_topic(
            next.forgotten
                .iter()
                .map(|((id, idx), s)| (*id, s.topic.clone(), *idx)),
        )
        .into_iter()
        .map(|(id, name, partitions)| {
            let (topic_id, topic) = named(id, &name);
            ForgottenTopic::default()
                .with_topic_id(topic_id)
                .with_topic(topic)
                .with_partitions(partitions)
        })
        .collect();
        req = req
            .with_session_id(next.session_id)
            .with_session_epoch(next.session_epoch)
            .with_forgotten_topics_data(forgotten);
    }
    if version >= 15 {
        req.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(broker.node_id()))
                .with_replica_epoch(broker.broker_epoch()),
        )
    } else {
        req.with_replica_id(BrokerId(broker.node_id()))
    }
}

/// The `error` label of a session reset for a top-level Fetch error.
fn session_error_label(code: i16) -> &'static str {
    [
        (
            ErrorCode::FetchSessionIdNotFound,
            "fetch_session_id_not_found",
        ),
        (
            ErrorCode::InvalidFetchSessionEpoch,
            "invalid_fetch_session_epoch",
        ),
        (ErrorCode::StaleBrokerEpoch, "stale_broker_epoch"),
    ]
    .iter()
    .find(|(c, _)| c.code() == code)
    .map_or("other", |(_, label)| label)
}

/// The prefix of `records` made of whole batches: a leader may cut the last one short at
/// `max_bytes` (Kafka's follower ignores such a tail too), and the next fetch starts there.
/// A malformed header is left in, so the follower's append rejects the fetch with the error
/// ([`fjord_storage::Log::append_as_follower`]) instead of the follower stalling silently.
fn whole_batches(mut records: Bytes) -> Bytes {
    let mut batches = BatchIter::new(&records);
    if let Some(Err(e)) = batches.by_ref().find(Result::is_err) {
        if e.is_truncated() {
            let whole = batches.position();
            records.truncate(whole);
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One v2 batch of one record.
    fn batch() -> Vec<u8> {
        crate::test_batches::batch(0, 5)
    }

    #[test]
    fn partial_last_batch_is_dropped() {
        let mut b = batch();
        b.extend(batch());
        let full = b.len();
        let last = batch();
        // Cut anywhere in the last batch, even inside its length or before its magic.
        for cut in 1..last.len() {
            let mut cut_short = b.clone();
            cut_short.extend_from_slice(&last[..cut]);
            assert_eq!(
                whole_batches(Bytes::from(cut_short)),
                &b[..],
                "cut at {cut}"
            );
        }
        assert_eq!(whole_batches(Bytes::from(b.clone())).len(), full);
        assert!(whole_batches(Bytes::from_static(&[0u8; 5])).is_empty());
        assert!(whole_batches(Bytes::new()).is_empty());
    }

    #[test]
    fn malformed_header_is_left_for_the_append_to_reject() {
        let mut b = batch();
        let mut bad = batch();
        bad[8..12].copy_from_slice(&0i32.to_be_bytes());
        b.extend(&bad[..20]);
        assert_eq!(whole_batches(Bytes::from(b.clone())), &b[..]);
    }

    #[test]
    fn partitions_rotate_after_the_last_one_that_returned_records() {
        let t = Uuid::from_u128(7);
        let parts: BTreeMap<Key, ()> = (0..4).map(|i| ((t, i), ())).collect();
        let order = |after| rotated(&parts, after).map(|(k, _)| k.1).collect::<Vec<_>>();
        assert_eq!(order(None), vec![0, 1, 2, 3]);
        assert_eq!(order(Some((t, 1))), vec![2, 3, 0, 1]);
        assert_eq!(order(Some((t, 3))), vec![0, 1, 2, 3]);
        // A partition no longer followed still marks the place.
        assert_eq!(order(Some((t, 9))), vec![0, 1, 2, 3]);
    }

    #[test]
    fn consecutive_partitions_of_a_topic_share_an_entry() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let name: Arc<str> = Arc::from("x");
        let groups = by_topic([
            (a, name.clone(), 0),
            (a, name.clone(), 1),
            (b, name.clone(), 0),
            (a, name, 2),
        ]);
        let shape: Vec<(Uuid, Vec<i32>)> = groups.into_iter().map(|(id, _, v)| (id, v)).collect();
        assert_eq!(shape, vec![(a, vec![0, 1]), (b, vec![0]), (a, vec![2])]);
    }
}
