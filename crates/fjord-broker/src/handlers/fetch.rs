//! Fetch (v4-18): reads whole batches, long-polls for `min_bytes` until `max_wait_ms` (woken
//! by appends and high-watermark moves, no busy waiting), and runs incremental fetch sessions
//! (KIP-227) through [`crate::fetch_session`].
//!
//! Three kinds of fetcher:
//! - a follower (replica id >= 0, in `replica_state` from v15): served by the leader only, up
//!   to the log end; its fetch offset is its progress, which advances the high watermark and
//!   may bring it back into the ISR ([`crate::replication::propose_isr`]);
//! - a consumer of the leader: up to the high watermark; with `replica.selector.class` set to
//!   the rack-aware selector and a `rack_id` (v11+), the leader may answer with a preferred
//!   read replica in the consumer's rack instead of records (KIP-392);
//! - a consumer of a follower (v11+): served by any replica up to its high watermark.
//!
//! Records leave the log as file ranges ([`FileRange`]): the reads under the partition lock
//! touch batch headers only. A range of at least [`SENDFILE_MIN_BYTES`] goes to the connection
//! as it is and is sent with `sendfile` — record bytes never pass through user space, as in
//! Kafka's `FileRecords.writeTo`; a smaller one is read into memory after the lock is released,
//! where one copy is cheaper than a system call of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{sb, Ctx};
use crate::broker::{now_ms, Broker};
use crate::fetch_session::{FetchPlan, PartitionFetch, PartitionOutcome, SessionKey};
use crate::partition::Partition;
use crate::throttle::FetchAllowance;
use fjord_storage::FileRange;

/// Record data of at least this size is sent from the file with `sendfile`; below it, it is
/// read into the response (the writer then coalesces it with other responses in one `writev`).
pub const SENDFILE_MIN_BYTES: usize = 16 * 1024;

/// A Fetch response and, beside it, the record data to send from segment files:
/// `records[i]` belongs to the i-th partition of `response` (whose `records` field is then
/// `None`).
pub struct FetchReply {
    pub response: FetchResponse,
    pub records: Vec<Option<FileRange>>,
}

/// One partition of the plan, resolved.
struct Target {
    key: SessionKey,
    fetch: PartitionFetch,
    partition: Result<Arc<Partition>, ErrorCode>,
}

/// Who is fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetcher {
    Follower(i32),
    /// `from_follower`: the request may be served by a follower (KIP-392, v11+).
    Consumer {
        from_follower: bool,
    },
}

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: FetchRequest) -> FetchReply {
    let by_id = ctx.version >= 13;
    let replica_id = if ctx.version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let fetcher = if replica_id >= 0 {
        Fetcher::Follower(replica_id)
    } else {
        Fetcher::Consumer {
            from_follower: ctx.version >= 11,
        }
    };
    let client_rack =
        (ctx.version >= 11 && !req.rack_id.is_empty()).then(|| req.rack_id.to_string());
    let mut requested = Vec::new();
    for t in &req.topics {
        let (name, id) = resolve(b, by_id, &t.topic, t.topic_id);
        for p in &t.partitions {
            requested.push((
                SessionKey {
                    topic: name.clone(),
                    topic_id: id,
                    partition: p.partition,
                    by_id,
                },
                PartitionFetch {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                },
            ));
        }
    }
    let mut forgotten = Vec::new();
    for f in &req.forgotten_topics_data {
        let (name, id) = resolve(b, by_id, &f.topic, f.topic_id);
        for &p in &f.partitions {
            forgotten.push(SessionKey {
                topic: name.clone(),
                topic_id: id,
                partition: p,
                by_id,
            });
        }
    }
    // KIP-903: a follower's fetch from an older incarnation of its broker is refused before it
    // can count for the ISR or the high watermark.
    if let Fetcher::Follower(replica) = fetcher {
        if ctx.version >= 15 {
            let epoch = req.replica_state.replica_epoch;
            if let Err(code) = crate::replication::check_follower_broker_epoch(b, replica, epoch) {
                return refused(code);
            }
        }
    }
    let plan = {
        let mut sessions = b.fetch_sessions.lock();
        let evictions = sessions.evictions();
        let plan = sessions.begin(
            req.session_id,
            req.session_epoch,
            requested,
            &forgotten,
            matches!(fetcher, Fetcher::Follower(_)),
            Instant::now(),
        );
        b.metrics.fetch_sessions.observe(&sessions, evictions);
        plan
    };
    let plan = match plan {
        Ok(p) => p,
        Err(code) => return refused(code),
    };
    // Leader epochs are checked on every partition the session reads, listed or not.
    let targets: Vec<Target> = plan
        .partitions
        .iter()
        .map(|(key, fetch)| {
            let partition = lookup(b, key, by_id).and_then(|p| {
                match fetcher {
                    Fetcher::Consumer {
                        from_follower: true,
                    } => p.check_replica_epoch(fetch.current_leader_epoch),
                    _ => p.check_leader_epoch(fetch.current_leader_epoch),
                }
                .map(|()| p)
            });
            Target {
                key: key.clone(),
                fetch: *fetch,
                partition,
            }
        })
        .collect();

    if let Fetcher::Follower(replica) = fetcher {
        let now = now_ms();
        for t in &targets {
            if let Ok(p) = &t.partition {
                match p.on_follower_fetch(replica, t.fetch.fetch_offset, now) {
                    Ok(effect) => {
                        if let Some(isr) = effect.propose_isr {
                            tracing::warn!(topic = %p.topic, partition = p.index, replica,
                                fetch_offset = t.fetch.fetch_offset, new_isr = ?isr,
                                "ISR expand proposed: follower caught up with the high watermark");
                            crate::replication::propose_isr(b, p, isr);
                        }
                    }
                    Err(_) => tracing::debug!(topic = %p.topic, partition = p.index, replica,
                        "fetch from a broker that is not a replica"),
                }
            }
        }
    }
    if let Fetcher::Consumer { .. } = fetcher {
        // A consumer polling, with or without data, uses the topic (`crate::topic_activity`).
        for p in targets.iter().filter_map(|t| t.partition.as_ref().ok()) {
            p.activity.fetched();
        }
    }
    // KIP-392: a consumer in another rack than the leader is sent to an in-sync replica in
    // its own rack.
    let redirects: Vec<Option<i32>> = targets
        .iter()
        .map(|t| match (&t.partition, &client_rack, fetcher) {
            (
                Ok(p),
                Some(rack),
                Fetcher::Consumer {
                    from_follower: true,
                },
            ) if b.config.replication.rack_aware_selector && p.is_leader() => {
                preferred_read_replica(b, p, rack, t.fetch.fetch_offset)
            }
            _ => None,
        })
        .collect();
    // Reassignment throttle (leader side): partitions this follower is being added to, when
    // the topic's leader list names this broker, share `leader.replication.throttled.rate`.
    let throttled: Vec<bool> = match fetcher {
        Fetcher::Follower(replica) => targets
            .iter()
            .map(|t| {
                t.partition
                    .as_ref()
                    .is_ok_and(|p| p.leader_throttles(replica))
            })
            .collect(),
        Fetcher::Consumer { .. } => Vec::new(),
    };
    let throttle = Throttle {
        throttled: &throttled,
        quota: &b.replication_quotas.leader,
    };
    let throttle = throttled.iter().any(|t| *t).then_some(&throttle);
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let waiter = Arc::new(Notify::new());
    let mut registered = false;
    let results = loop {
        let (results, bytes, any_error) =
            read_all(&targets, &redirects, req.max_bytes, fetcher, throttle);
        let now = Instant::now();
        if bytes >= req.min_bytes.max(0) as usize || any_error || now >= deadline {
            break results;
        }
        if !registered {
            // Register, then read again: an append between the read and the registration
            // would otherwise be missed until the deadline.
            for t in &targets {
                if let Ok(p) = &t.partition {
                    p.register_waiter(&waiter);
                }
            }
            registered = true;
            continue;
        }
        if tokio::time::timeout(deadline - now, waiter.notified())
            .await
            .is_err()
        {
            let (results, _, _) = read_all(&targets, &redirects, req.max_bytes, fetcher, throttle);
            break results;
        }
        for t in &targets {
            if let Ok(p) = &t.partition {
                p.register_waiter(&waiter);
            }
        }
    };
    if registered {
        for t in &targets {
            if let Ok(p) = &t.partition {
                p.unregister_waiter(&waiter);
            }
        }
    }
    if let Some(t) = throttle {
        t.charge(b, &results);
    }
    if !redirects.iter().all(Option::is_none) {
        b.metrics
            .preferred_replica_redirects
            .inc_by(redirects.iter().flatten().count() as u64);
    }
    build_response(b, ctx, &req, &plan, &targets, results, fetcher)
}

fn resolve(b: &Broker, by_id: bool, name: &TopicName, id: Uuid) -> (Arc<str>, Uuid) {
    if by_id {
        match b.topic_by_id(&id) {
            Some(t) => (t.name.clone(), id),
            None => (Arc::from(""), id),
        }
    } else {
        match b.topic(name) {
            Some(t) => (t.name.clone(), t.id),
            None => (Arc::from(&***name), Uuid::nil()),
        }
    }
}

fn lookup(b: &Broker, key: &SessionKey, by_id: bool) -> Result<Arc<Partition>, ErrorCode> {
    let topic = if by_id {
        b.topic_by_id(&key.topic_id)
            .ok_or(ErrorCode::UnknownTopicId)?
    } else {
        b.topic(&key.topic)
            .ok_or(ErrorCode::UnknownTopicOrPartition)?
    };
    usize::try_from(key.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i).cloned())
        .ok_or(ErrorCode::UnknownTopicOrPartition)
}

/// A response with only a top-level error (the request's partitions are not read).
fn refused(code: ErrorCode) -> FetchReply {
    FetchReply {
        response: FetchResponse::default()
            .with_error_code(code.code())
            .with_session_id(0),
        records: Vec::new(),
    }
}

/// The rack-aware replica selector (Kafka's `RackAwareReplicaSelector`): `None` keeps the
/// consumer on the leader (the leader is in its rack, or no in-sync replica there has the
/// offset); otherwise the in-sync, unfenced replica in the consumer's rack that is furthest
/// ahead.
fn preferred_read_replica(b: &Broker, p: &Partition, rack: &str, fetch_offset: i64) -> Option<i32> {
    let state = p.state();
    let rack_of = |id: i32| -> Option<(Option<String>, bool)> {
        b.with_image(|img| img.broker(id).map(|x| (x.rack.clone(), x.fenced)))
    };
    if rack_of(state.leader).is_some_and(|(r, _)| r.as_deref() == Some(rack)) {
        return None;
    }
    state
        .isr
        .iter()
        .copied()
        .filter(|r| *r != state.leader)
        .filter(|r| rack_of(*r).is_some_and(|(x, fenced)| !fenced && x.as_deref() == Some(rack)))
        .filter_map(|r| {
            let leo = p.with_replica(|x| x.follower(r))?.log_end_offset;
            (leo >= fetch_offset).then_some((leo, r))
        })
        .max_by_key(|(leo, r)| (*leo, -*r))
        .map(|(_, r)| r)
}

struct ReadOutcome {
    error: ErrorCode,
    records: Option<FileRange>,
    high_watermark: i64,
    log_start_offset: i64,
    preferred_read_replica: i32,
    /// Served as the partition's leader (else as a follower).
    leader: bool,
    /// Left out by the reassignment throttle.
    throttled: bool,
}

impl ReadOutcome {
    fn failed(error: ErrorCode, high_watermark: i64, log_start_offset: i64) -> ReadOutcome {
        ReadOutcome {
            error,
            records: None,
            high_watermark,
            log_start_offset,
            preferred_read_replica: -1,
            leader: true,
            throttled: false,
        }
    }
}

/// The leader's reassignment throttle over one follower fetch.
struct Throttle<'a> {
    /// Per target: is it throttled?
    throttled: &'a [bool],
    quota: &'a parking_lot::Mutex<crate::throttle::TokenBucket>,
}

impl Throttle<'_> {
    fn is_throttled(&self, i: usize) -> bool {
        self.throttled.get(i).copied().unwrap_or(false)
    }

    /// The rate's balance for one answer: its throttled targets share it.
    fn allowance(&self) -> FetchAllowance {
        FetchAllowance::new(self.quota.lock().available(now_ms()))
    }

    /// Charge the throttled bytes of the answer sent to the rate.
    fn charge(&self, b: &Broker, results: &[ReadOutcome]) {
        let bytes: u64 = results
            .iter()
            .zip(self.throttled)
            .filter(|(_, t)| **t)
            .filter_map(|(r, _)| r.records.as_ref().map(|f| f.len() as u64))
            .sum();
        let left_out = results
            .iter()
            .zip(self.throttled)
            .any(|(r, t)| *t && r.throttled);
        if bytes > 0 {
            self.quota.lock().record(bytes, now_ms());
            b.metrics
                .replication_throttled_bytes
                .with_label_values(&["leader"])
                .inc_by(bytes);
        }
        if left_out {
            b.metrics
                .replication_throttled_fetches
                .with_label_values(&["leader"])
                .inc();
        }
    }
}

fn read_all(
    targets: &[Target],
    redirects: &[Option<i32>],
    max_bytes: i32,
    fetcher: Fetcher,
    throttle: Option<&Throttle<'_>>,
) -> (Vec<ReadOutcome>, usize, bool) {
    let mut remaining = max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let mut first_data = true;
    let mut allowance = throttle.map(Throttle::allowance);
    let out = targets
        .iter()
        .zip(redirects)
        .enumerate()
        .map(|(i, (t, redirect))| {
            let p = match &t.partition {
                Ok(p) => p,
                Err(code) => {
                    any_error = true;
                    return ReadOutcome::failed(*code, -1, -1);
                }
            };
            if let Some(replica) = redirect {
                // Answer at once, with no records: the consumer moves to that replica.
                any_error = true;
                let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                return ReadOutcome {
                    preferred_read_replica: *replica,
                    ..ReadOutcome::failed(ErrorCode::None, hw, ls)
                };
            }
            let mut budget = (t.fetch.max_bytes.max(0) as usize).min(remaining);
            let throttled = throttle.is_some_and(|th| th.is_throttled(i));
            if let (true, Some(a)) = (throttled, &allowance) {
                match a.grant(budget) {
                    Some(n) => budget = n,
                    None => {
                        // Rate spent: answer without records (not an error, so the fetch
                        // still waits for others' data).
                        let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                        return ReadOutcome {
                            error: ErrorCode::None,
                            throttled: true,
                            leader: p.is_leader(),
                            ..ReadOutcome::failed(ErrorCode::None, hw, ls)
                        };
                    }
                }
            }
            let read = match fetcher {
                // Only the first partition with records may go over the budget (with one
                // batch): a batch read past it for a later partition is left out.
                Fetcher::Follower(_) => {
                    p.read_for_follower(t.fetch.fetch_offset, budget)
                        .map(|mut r| {
                            if !first_data && r.records.as_ref().is_some_and(|f| f.len() > budget) {
                                r.records = None;
                            }
                            r
                        })
                }
                Fetcher::Consumer { .. } => p.read(t.fetch.fetch_offset, budget, first_data),
            };
            match read {
                Ok(r) => {
                    if let Some(range) = &r.records {
                        first_data = false;
                        total += range.len();
                        remaining = remaining.saturating_sub(range.len());
                        if let (true, Some(a)) = (throttled, &mut allowance) {
                            a.take(range.len() as u64);
                        }
                    }
                    ReadOutcome {
                        error: ErrorCode::None,
                        records: r.records,
                        high_watermark: r.log_end_offset,
                        log_start_offset: r.log_start_offset,
                        preferred_read_replica: -1,
                        leader: p.is_leader(),
                        throttled: false,
                    }
                }
                Err(e) => {
                    any_error = true;
                    let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                    ReadOutcome::failed(e.error_code(), hw, ls)
                }
            }
        })
        .collect();
    (out, total, any_error)
}

fn build_response(
    b: &Broker,
    ctx: &Ctx,
    req: &FetchRequest,
    plan: &FetchPlan,
    targets: &[Target],
    results: Vec<ReadOutcome>,
    fetcher: Fetcher,
) -> FetchReply {
    let outcomes: Vec<PartitionOutcome> = results
        .iter()
        .map(|r| PartitionOutcome {
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
            has_records: r.records.is_some(),
            error: r.error != ErrorCode::None,
        })
        .collect();
    let include = b.fetch_sessions.lock().finish(plan, &outcomes);
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut file_records = Vec::new();
    for ((t, mut r), inc) in targets.iter().zip(results).zip(include) {
        if !inc {
            continue;
        }
        // Small record sets are read now, outside the partition lock; large ones are sent
        // from the file by the connection.
        let (inline, from_file) = match r.records.take() {
            Some(range) if range.len() >= SENDFILE_MIN_BYTES => (None, Some(range)),
            Some(range) => match range.read() {
                Ok(bytes) => (Some(bytes), None),
                Err(e) => {
                    tracing::error!(topic = %t.key.topic, partition = t.key.partition, error = %e,
                        "cannot read records for a fetch");
                    r.error = ErrorCode::KafkaStorageError;
                    (Some(Bytes::new()), None)
                }
            },
            None => (Some(Bytes::new()), None),
        };
        let sent_from_file = from_file.as_ref().map_or(0, FileRange::len);
        b.metrics
            .fetch_zero_copy_bytes
            .inc_by(sent_from_file as u64);
        let len = inline.as_ref().map_or(0, Bytes::len) + sent_from_file;
        if r.error != ErrorCode::None {
            b.metrics
                .request_errors
                .with_label_values(&["Fetch", &r.error.code().to_string()])
                .inc();
        } else if len > 0 && matches!(fetcher, Fetcher::Consumer { .. }) {
            let n = len as u64;
            b.metrics
                .bytes_out
                .with_label_values(&[&t.key.topic])
                .inc_by(n);
            b.accounting.topic_out(&t.key.topic, n);
            let role = if r.leader { "leader" } else { "follower" };
            b.metrics
                .consumer_fetch_bytes
                .with_label_values(&[role])
                .inc_by(n);
        }
        let data = PartitionData::default()
            .with_partition_index(t.key.partition)
            .with_error_code(r.error.code())
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.high_watermark)
            .with_log_start_offset(r.log_start_offset)
            .with_aborted_transactions((req.isolation_level == 1).then(Vec::new))
            .with_preferred_read_replica(BrokerId(r.preferred_read_replica))
            .with_records(inline);
        file_records.push(from_file);
        let same_topic = topics.last().is_some_and(|last| {
            if ctx.version >= 13 {
                last.topic_id == t.key.topic_id
            } else {
                *last.topic == *t.key.topic
            }
        });
        if same_topic {
            topics.last_mut().expect("checked").partitions.push(data);
        } else {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(sb(t.key.topic.to_string())))
                    .with_topic_id(t.key.topic_id)
                    .with_partitions(vec![data]),
            );
        }
    }
    FetchReply {
        response: FetchResponse::default()
            .with_session_id(plan.session_id)
            .with_responses(topics),
        records: file_records,
    }
}
