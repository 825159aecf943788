//! Transactions on the partition side (issue 15), as Kafka's ReplicaManager and
//! `AddPartitionsToTxnManager` do them: writing a transaction coordinator's commit or abort
//! marker into a partition led here ([`write_marker`]), and KIP-890 part 1 verification of a
//! transactional produce ([`verify`]): before a producer's first transactional batch opens a
//! transaction in a partition, the leader asks the transaction coordinator (AddPartitionsToTxn
//! v4+ with `verify_only`) whether the partition is in the producer's transaction.
//!
//! Nothing here is cached past one request: the verification guard lives in the partition's
//! producer state ([`fjord_storage::producer_state`]) and a marker written meanwhile voids it,
//! so a late append never reopens a transaction that has ended.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::{Connection, ConnectionConfig};
use fjord_protocol::clock::now_ms;
use fjord_protocol::control::{marker_batch, EndTxnMarker};
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::AppendOrigin;
use fjord_storage::{AppendInfo, TxnCheck};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::produce::{append_to_leader_as, ProduceError};
use crate::broker::{Broker, Topic};
use crate::partition::Partition;

/// Append the marker ending `producer_id`'s transaction (`commit` or abort, from coordinator
/// epoch `coordinator_epoch`) to partition `p` of `t` as its leader, and wait until every
/// in-sync replica has it (Kafka appends markers with acks=all). The append is queued when
/// this is called. Refusals: NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
/// TRANSACTION_COORDINATOR_FENCED (a marker older than the producer's last),
/// INVALID_PRODUCER_EPOCH, REQUEST_TIMED_OUT.
pub fn write_marker(
    b: &Arc<Broker>,
    t: &Arc<Topic>,
    p: &Arc<Partition>,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    deadline: Instant,
) -> impl Future<Output = Result<AppendInfo, ProduceError>> + Send + 'static {
    // The leader epoch is set by the append; the batch's own is a placeholder.
    let batch = marker_batch(producer_id, producer_epoch, marker, now_ms(), -1);
    append_to_leader_as(
        b,
        t,
        p,
        Bytes::from(batch),
        -1,
        deadline,
        AppendOrigin::Coordinator,
        TxnCheck::Exempt,
    )
}

/// What a transactional produce to one partition may append with: the guard of its
/// verification (`None`: the producer already had a transaction open there), or the error
/// to answer instead.
pub type Verified = Result<Option<u64>, ErrorCode>;

/// Verify that `partitions` (led here) are in the transaction of `transactional_id` /
/// `producer_id` at `producer_epoch` (KIP-890 part 1): start a verification in each, then ask
/// the coordinator once about those where the producer has no transaction open. Bounded by
/// `deadline`. Errors as Kafka's ReplicaManager gives them to the producer: the coordinator's
/// answer (INVALID_TXN_STATE: not in the transaction; PRODUCER_FENCED as
/// INVALID_PRODUCER_EPOCH), and NOT_ENOUGH_REPLICAS — retriable without a metadata refresh —
/// for a coordinator that is unknown, moving, loading, busy or out of reach. The coordinator's
/// TRANSACTION_ABORTABLE reaches only clients that know it (`abortable_known`: Produce v11+,
/// Kafka's `genericError`); older ones get INVALID_TXN_STATE.
pub async fn verify(
    b: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, Arc<Partition>)>,
    deadline: Instant,
    abortable_known: bool,
) -> HashMap<(String, i32), Verified> {
    let mut out: HashMap<(String, i32), Verified> = HashMap::new();
    let mut ask: Vec<(String, i32, u64)> = Vec::new();
    for (topic, p) in &partitions {
        match p
            .start_verification(&b.io, producer_id, producer_epoch)
            .await
        {
            Ok(Some(guard)) => ask.push((topic.clone(), p.index, guard)),
            other => {
                out.insert((topic.clone(), p.index), other);
            }
        }
    }
    if ask.is_empty() {
        return out;
    }
    let asked: Vec<(String, i32)> = ask.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let errors = match ask_coordinator(
        b,
        transactional_id,
        producer_id,
        producer_epoch,
        &asked,
        deadline,
    )
    .await
    {
        Ok(errors) => errors,
        Err(code) => asked.iter().map(|tp| (tp.clone(), code)).collect(),
    };
    for (topic, index, guard) in ask {
        let verdict = match errors.get(&(topic.clone(), index)) {
            None | Some(ErrorCode::None) => Ok(Some(guard)),
            Some(ErrorCode::TransactionAbortable) if !abortable_known => {
                Err(ErrorCode::InvalidTxnState)
            }
            Some(code) => Err(produce_error(*code)),
        };
        out.insert((topic, index), verdict);
    }
    out
}

/// A verification error as the producer gets it (Kafka's `handleProduceAppend`).
fn produce_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        ErrorCode::ConcurrentTransactions
        | ErrorCode::NetworkException
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotCoordinator
        | ErrorCode::RequestTimedOut => ErrorCode::NotEnoughReplicas,
        ErrorCode::ClusterAuthorizationFailed => ErrorCode::InvalidTxnState,
        other => other,
    }
}

/// Connections to transaction coordinators, by address (one per coordinator broker, reopened
/// after a failed request).
fn connections() -> &'static Mutex<BTreeMap<String, Arc<Connection>>> {
    static CONNS: OnceLock<Mutex<BTreeMap<String, Arc<Connection>>>> = OnceLock::new();
    CONNS.get_or_init(Default::default)
}

/// AddPartitionsToTxn v4+ (`verify_only`) to the leader of the id's `__transaction_state`
/// partition: the partitions the coordinator does not have in the transaction, with why.
/// `Err`: no answer at all (the code for every partition).
async fn ask_coordinator(
    b: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    deadline: Instant,
) -> Result<HashMap<(String, i32), ErrorCode>, ErrorCode> {
    let state = b
        .topic(fjord_metadata::internal::TRANSACTION_STATE_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let index = fjord_txn::txn_partition(transactional_id, state.partitions.len() as i32);
    let leader = usize::try_from(index)
        .ok()
        .and_then(|i| state.partitions.get(i))
        .map(|p| p.state().leader)
        .filter(|l| *l >= 0)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let (host, port) = b
        .broker_address(leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let addr = format!("{host}:{port}");
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ErrorCode::RequestTimedOut);
    }
    let cached = connections().lock().get(&addr).cloned();
    let conn = match cached {
        Some(c) => c,
        None => {
            let config = ConnectionConfig {
                client_id: format!("fjord-txn-verify-{}", b.node_id()),
                request_timeout: Duration::from_secs(30),
                connect_timeout: remaining.min(Duration::from_secs(5)),
                sasl: crate::sasl::inter_broker_credentials(b),
                tls: crate::tls::inter_broker(b),
                ..ConnectionConfig::default()
            };
            let c = match tokio::time::timeout(remaining, Connection::connect(&addr, config)).await
            {
                Ok(Ok(c)) => Arc::new(c),
                _ => return Err(ErrorCode::NetworkException),
            };
            connections().lock().insert(addr.clone(), c.clone());
            c
        }
    };
    if conn.version(ApiKey::AddPartitionsToTxn).unwrap_or(-1) < 4 {
        // A coordinator that cannot verify (Kafka goes on without verification).
        return Ok(HashMap::new());
    }
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        topics.entry(t).or_default().push(*p);
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            ),
    ]);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let response = match conn.send_with_timeout(&request, remaining).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(coordinator = leader, error = %e, "transaction verification failed");
            connections().lock().remove(&addr);
            return Err(ErrorCode::NetworkException);
        }
    };
    if response.error_code != 0 {
        return Err(ErrorCode::from_i16(response.error_code));
    }
    let mut out = HashMap::new();
    for txn in response
        .results_by_transaction
        .iter()
        .filter(|r| r.transactional_id.0.as_str() == transactional_id)
    {
        for t in &txn.topic_results {
            for p in &t.results_by_partition {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    ErrorCode::from_i16(p.partition_error_code),
                );
            }
        }
    }
    // As Kafka's: only the partitions answered with an error are unverified.
    Ok(out)
}
