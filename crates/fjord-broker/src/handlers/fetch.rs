//! Fetch (v4-18): translates between the wire and [`crate::replica_manager::fetch()`], which
//! owns the reading — leader epochs, follower progress and ISR proposals, KIP-392 redirects,
//! high-watermark limits and byte budgets, the reassignment throttle and the long poll for
//! `min_bytes`. The handler decodes the request into a [`FetchParams`] and session keys, runs
//! the KIP-903 broker-epoch check and the incremental fetch session (KIP-227, through
//! [`crate::fetch_session`]) around the read, and builds the response.
//!
//! Records come back as file ranges ([`FileRange`]). A range of at least
//! [`SENDFILE_MIN_BYTES`] goes to the connection as it is and is sent with `sendfile` — record
//! bytes never pass through user space, as in Kafka's `FileRecords.writeTo`; a smaller one is
//! read into memory here, after the partition lock is released, where one copy is cheaper
//! than a system call of its own. Either way the bytes come from the page cache on the async
//! worker; ranges that are not all cached ([`fjord_storage::page_cache`]: a consumer catching
//! up from old segments, a restarted follower) are read on a blocking thread first and sent
//! from memory, so a cold read never holds up a worker's other connections.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use uuid::Uuid;

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use crate::fetch_session::{FetchPlan, PartitionFetch, PartitionOutcome, SessionKey};
use crate::replica_manager::{self, FetchParams, Fetcher, PartitionRead};
use fjord_security::acl::{AclOperation, ResourceType};
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
            read_committed: req.isolation_level == 1,
        }
    };
    let params = FetchParams {
        fetcher,
        client_rack: (ctx.version >= 11 && !req.rack_id.is_empty())
            .then(|| req.rack_id.to_string()),
        max_bytes: req.max_bytes,
        min_bytes: req.min_bytes,
        max_wait_ms: req.max_wait_ms,
        by_id,
    };
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
    // KIP-903, before the session: a stale follower's fetch must not touch it.
    if let Fetcher::Follower(replica) = fetcher {
        if ctx.version >= 15 {
            let epoch = req.replica_state.replica_epoch;
            if let Err(code) = replica_manager::check_follower_broker_epoch(b, replica, epoch) {
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
    // Every partition the session reads, listed in this request or not.
    let mut results = read_authorized(b, ctx, &params, &plan).await;
    let cold = read_cold(b, &mut results).await;
    build_response(b, ctx, &req, &plan, results, cold, fetcher)
}

/// [`replica_manager::fetch`] of the partitions the fetcher may read: a follower needs
/// CLUSTER_ACTION on the cluster, a consumer READ on each topic; the others get
/// TOPIC_AUTHORIZATION_FAILED without being read, as in Kafka.
async fn read_authorized(
    b: &Arc<Broker>,
    ctx: &Ctx,
    params: &FetchParams,
    plan: &FetchPlan,
) -> Vec<PartitionRead> {
    if !authz::enabled(b) {
        return replica_manager::fetch(b, params, &plan.partitions).await;
    }
    let denied: Vec<bool> = match params.fetcher {
        Fetcher::Follower(_) => {
            let ok = authz::cluster(b, ctx, AclOperation::ClusterAction);
            vec![!ok; plan.partitions.len()]
        }
        Fetcher::Consumer { .. } => {
            let names = plan.partitions.iter().map(|(k, _)| &*k.topic);
            let ok = authz::filter(b, ctx, AclOperation::Read, ResourceType::Topic, names);
            // An unknown topic id (no name) stays UNKNOWN_TOPIC_ID.
            plan.partitions
                .iter()
                .map(|(k, _)| !k.topic.is_empty() && !ok.contains(&*k.topic))
                .collect()
        }
    };
    if !denied.contains(&true) {
        return replica_manager::fetch(b, params, &plan.partitions).await;
    }
    let allowed: Vec<_> = plan
        .partitions
        .iter()
        .zip(&denied)
        .filter(|(_, d)| !**d)
        .map(|(p, _)| p.clone())
        .collect();
    let mut reads = replica_manager::fetch(b, params, &allowed)
        .await
        .into_iter();
    denied
        .iter()
        .map(|d| match d {
            true => PartitionRead::failed(ErrorCode::TopicAuthorizationFailed, -1, -1),
            false => reads.next().expect("one read per allowed partition"),
        })
        .collect()
}

/// Read the record ranges of `results` that are not all in the page cache, on a blocking
/// thread (`sendfile` or `pread` of them on this worker would wait for the disk). Returns,
/// per result, the bytes read (its `records` then taken), or `None` for a range left to send
/// or read as usual.
async fn read_cold(
    b: &Broker,
    results: &mut [PartitionRead],
) -> Vec<Option<std::io::Result<Bytes>>> {
    let mut out: Vec<Option<std::io::Result<Bytes>>> = Vec::new();
    let mut cold: Vec<(usize, FileRange)> = Vec::new();
    for (i, r) in results.iter_mut().enumerate() {
        let Some(range) = &r.records else { continue };
        let cached = fjord_storage::page_cache::is_cached(
            range.file(),
            range.position(),
            range.len() as u64,
        );
        if cached == Some(false) {
            cold.push((i, r.records.take().expect("checked")));
        }
    }
    if cold.is_empty() {
        return out;
    }
    out.resize_with(results.len(), || None);
    let bytes: u64 = cold.iter().map(|(_, r)| r.len() as u64).sum();
    b.metrics.fetch_cold_read_bytes.inc_by(bytes);
    let indexes: Vec<usize> = cold.iter().map(|(i, _)| *i).collect();
    let read = tokio::task::spawn_blocking(move || {
        cold.into_iter()
            .map(|(_, range)| range.read())
            .collect::<Vec<_>>()
    })
    .await;
    match read {
        Ok(read) => {
            for (i, r) in indexes.into_iter().zip(read) {
                out[i] = Some(r);
            }
        }
        Err(e) => {
            // The read panicked (it does not): a storage error for the cold partitions only.
            tracing::error!(error = %e, "reading cold fetch ranges failed");
            for i in indexes {
                out[i] = Some(Err(std::io::Error::other("cold read failed")));
            }
        }
    }
    out
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

/// A response with only a top-level error (the request's partitions are not read).
fn refused(code: ErrorCode) -> FetchReply {
    FetchReply {
        response: FetchResponse::default()
            .with_error_code(code.code())
            .with_session_id(0),
        records: Vec::new(),
    }
}

fn build_response(
    b: &Broker,
    ctx: &Ctx,
    req: &FetchRequest,
    plan: &FetchPlan,
    results: Vec<PartitionRead>,
    mut cold: Vec<Option<std::io::Result<Bytes>>>,
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
    cold.resize_with(results.len(), || None);
    for ((((key, _), mut r), inc), cold) in
        plan.partitions.iter().zip(results).zip(include).zip(cold)
    {
        if !inc {
            continue;
        }
        // Small record sets are read now, outside the partition lock; large ones are sent
        // from the file by the connection; cold ones were read already.
        let read = match (r.records.take(), cold) {
            (_, Some(read)) => read.map(Some),
            (Some(range), None) if range.len() >= SENDFILE_MIN_BYTES => {
                file_records.push(Some(range));
                Ok(None)
            }
            (Some(range), None) => range.read().map(Some),
            (None, None) => Ok(Some(Bytes::new())),
        };
        let inline = match read {
            Ok(inline) => inline,
            Err(e) => {
                tracing::error!(topic = %key.topic, partition = key.partition, error = %e,
                    "cannot read records for a fetch");
                r.error = ErrorCode::KafkaStorageError;
                Some(Bytes::new())
            }
        };
        if inline.is_some() {
            file_records.push(None);
        }
        let from_file = file_records.last().and_then(Option::as_ref);
        let sent_from_file = from_file.map_or(0, FileRange::len);
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
                .with_label_values(&[&key.topic])
                .inc_by(n);
            b.accounting.topic_out(&key.topic, n);
            let role = if r.leader { "leader" } else { "follower" };
            b.metrics
                .consumer_fetch_bytes
                .with_label_values(&[role])
                .inc_by(n);
        }
        let data = PartitionData::default()
            .with_partition_index(key.partition)
            .with_error_code(r.error.code())
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.last_stable_offset)
            .with_log_start_offset(r.log_start_offset)
            .with_aborted_transactions((req.isolation_level == 1).then(|| {
                r.aborted
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(producer_id, first_offset)| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(producer_id))
                            .with_first_offset(first_offset)
                    })
                    .collect()
            }))
            .with_preferred_read_replica(BrokerId(r.preferred_read_replica))
            .with_records(inline);
        let same_topic = topics.last().is_some_and(|last| {
            if ctx.version >= 13 {
                last.topic_id == key.topic_id
            } else {
                *last.topic == *key.topic
            }
        });
        if same_topic {
            topics.last_mut().expect("checked").partitions.push(data);
        } else {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(sb(key.topic.to_string())))
                    .with_topic_id(key.topic_id)
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
