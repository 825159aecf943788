//! Fetch (v4-18): reads whole batches up to the high watermark, long-polls for `min_bytes`
//! until `max_wait_ms` (woken by appends, no busy waiting), and runs incremental fetch sessions
//! (KIP-227) through [`crate::fetch_session`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{sb, Ctx};
use crate::broker::Broker;
use crate::fetch_session::{FetchPlan, PartitionFetch, PartitionOutcome, SessionKey};
use crate::partition::Partition;

/// One partition of the plan, resolved.
struct Target {
    key: SessionKey,
    fetch: PartitionFetch,
    partition: Result<Arc<Partition>, ErrorCode>,
}

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: FetchRequest) -> FetchResponse {
    let by_id = ctx.version >= 13;
    let mut requested = Vec::new();
    for t in &req.topics {
        let (name, id) = resolve(b, by_id, &t.topic, t.topic_id);
        for p in &t.partitions {
            requested.push((
                SessionKey {
                    topic: name.clone(),
                    topic_id: id,
                    partition: p.partition,
                },
                PartitionFetch {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                },
                p.current_leader_epoch,
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
            });
        }
    }
    // Leader-epoch checks happen per request, not per session.
    let epoch_errors: Vec<(SessionKey, ErrorCode)> = requested
        .iter()
        .filter_map(|(k, _, epoch)| leader_epoch_error(b, k, *epoch).map(|e| (k.clone(), e)))
        .collect();
    let plan = {
        let mut sessions = b.fetch_sessions.lock();
        sessions.begin(
            req.session_id,
            req.session_epoch,
            requested.into_iter().map(|(k, f, _)| (k, f)).collect(),
            &forgotten,
            Instant::now(),
        )
    };
    let plan = match plan {
        Ok(p) => p,
        Err(code) => {
            return FetchResponse::default()
                .with_error_code(code.code())
                .with_session_id(0);
        }
    };
    let targets: Vec<Target> = plan
        .partitions
        .iter()
        .map(|(key, fetch)| {
            let partition = if let Some((_, e)) = epoch_errors.iter().find(|(k, _)| k == key) {
                Err(*e)
            } else {
                lookup(b, key, by_id)
            };
            Target {
                key: key.clone(),
                fetch: *fetch,
                partition,
            }
        })
        .collect();

    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let waiter = Arc::new(Notify::new());
    let mut registered = false;
    let results = loop {
        let (results, bytes, any_error) = read_all(&targets, req.max_bytes);
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
            let (results, _, _) = read_all(&targets, req.max_bytes);
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
    build_response(b, ctx, &req, &plan, &targets, results)
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

/// The fencing rule of [`crate::partition::Partition::check_leader_epoch`] for one fetched
/// partition (`None` when the partition is unknown; the lookup reports that).
fn leader_epoch_error(b: &Broker, key: &SessionKey, client_epoch: i32) -> Option<ErrorCode> {
    b.partition(&key.topic, key.partition)?
        .check_leader_epoch(client_epoch)
        .err()
}

struct ReadOutcome {
    error: ErrorCode,
    records: Bytes,
    high_watermark: i64,
    log_start_offset: i64,
}

fn read_all(targets: &[Target], max_bytes: i32) -> (Vec<ReadOutcome>, usize, bool) {
    let mut remaining = max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let mut first_data = true;
    let out = targets
        .iter()
        .map(|t| {
            let p = match &t.partition {
                Ok(p) => p,
                Err(code) => {
                    any_error = true;
                    return ReadOutcome {
                        error: *code,
                        records: Bytes::new(),
                        high_watermark: -1,
                        log_start_offset: -1,
                    };
                }
            };
            let budget = (t.fetch.max_bytes.max(0) as usize).min(remaining);
            match p.read(t.fetch.fetch_offset, budget, first_data) {
                Ok(r) => {
                    if !r.records.is_empty() {
                        first_data = false;
                        total += r.records.len();
                        remaining = remaining.saturating_sub(r.records.len());
                    }
                    ReadOutcome {
                        error: ErrorCode::None,
                        records: r.records,
                        high_watermark: r.log_end_offset,
                        log_start_offset: r.log_start_offset,
                    }
                }
                Err(e) => {
                    any_error = true;
                    let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                    ReadOutcome {
                        error: e.error_code(),
                        records: Bytes::new(),
                        high_watermark: hw,
                        log_start_offset: ls,
                    }
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
) -> FetchResponse {
    let outcomes: Vec<PartitionOutcome> = results
        .iter()
        .map(|r| PartitionOutcome {
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
            has_records: !r.records.is_empty(),
            error: r.error != ErrorCode::None,
        })
        .collect();
    let include = b.fetch_sessions.lock().finish(plan, &outcomes);
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for ((t, r), inc) in targets.iter().zip(results).zip(include) {
        if !inc {
            continue;
        }
        if r.error != ErrorCode::None {
            b.metrics
                .request_errors
                .with_label_values(&["Fetch", &r.error.code().to_string()])
                .inc();
        } else if !r.records.is_empty() {
            b.metrics
                .bytes_out
                .with_label_values(&[&t.key.topic])
                .inc_by(r.records.len() as u64);
        }
        let data = PartitionData::default()
            .with_partition_index(t.key.partition)
            .with_error_code(r.error.code())
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.high_watermark)
            .with_log_start_offset(r.log_start_offset)
            .with_aborted_transactions((req.isolation_level == 1).then(Vec::new))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(r.records));
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
    FetchResponse::default()
        .with_session_id(plan.session_id)
        .with_responses(topics)
}
