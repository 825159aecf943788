//! Produce (v3-13): the wire side. Requests that can be refused from the request alone
//! (acks, internal or unknown topic, null records, topic GC, transactional batches of more
//! than one producer) are refused here; everything else — leadership, `min.insync.replicas`,
//! the append on the partition's disk I/O thread, the acks=all wait — is
//! [`crate::replica_manager::append_to_leader`]'s.
//!
//! A produce with a transactional id may carry transactional batches. Before the first one of
//! a producer opens a transaction in a partition, the partition is verified with the
//! transaction coordinator (KIP-890 part 1, [`crate::replica_manager::txn::verify`]), once
//! per request for all its partitions that need it; a partition not in the transaction gets
//! the coordinator's TRANSACTION_ABORTABLE (v11+; INVALID_TXN_STATE before), a coordinator that
//! cannot answer NOT_ENOUGH_REPLICAS (retriable), as in Kafka.
//!
//! The response is deferred: the connection goes on reading (and queueing the appends of) its
//! next requests, and responses still leave in order. acks=0 gets no response unless a
//! partition failed, which closes the connection (the only way to tell such a producer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_metadata::internal::is_internal;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use super::{sb, Ctx, Outcome};
use crate::authz;
use crate::broker::{Broker, Topic};
use crate::partition::{Partition, TxnTurn};
use crate::replica_manager::produce::append_to_leader_as;
use crate::replica_manager::txn::{verify, Verified};
use crate::replica_manager::{append_to_leader, ProduceError};
use fjord_protocol::records::AppendOrigin;
use fjord_security::acl::AclOperation;
use fjord_storage::TxnCheck;

/// The verification of one transactional produce, run by the first partition that needs it.
struct Verification {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    /// Filled while the request is read, before any partition's future runs.
    partitions: parking_lot::Mutex<Vec<(String, Arc<Partition>)>>,
    deadline: Instant,
    /// The client knows TRANSACTION_ABORTABLE (Produce v11+).
    abortable_known: bool,
    result: tokio::sync::OnceCell<std::collections::HashMap<(String, i32), Verified>>,
}

impl Verification {
    async fn of(&self, b: &Arc<Broker>, topic: &str, index: i32) -> Option<Verified> {
        let all = self
            .result
            .get_or_init(|| {
                verify(
                    b,
                    &self.transactional_id,
                    self.producer_id,
                    self.producer_epoch,
                    self.partitions.lock().clone(),
                    self.deadline,
                    self.abortable_known,
                )
            })
            .await;
        all.get(&(topic.to_string(), index)).copied()
    }
}

/// In the producer's `turn`: verify the partition (with the request's other partitions that
/// need it) when `v` is given, then append with the verification's guard.
#[allow(clippy::too_many_arguments)]
async fn verified_append(
    b: Arc<Broker>,
    t: Arc<Topic>,
    p: Arc<Partition>,
    records: bytes::Bytes,
    acks: i16,
    deadline: Instant,
    v: Option<Arc<Verification>>,
    mut turn: TxnTurn,
) -> Result<fjord_storage::AppendInfo, ProduceError> {
    turn.wait().await;
    let guard = match v {
        Some(v) => match v.of(&b, &t.name, p.index).await {
            Some(Err(code)) => {
                turn.done();
                return Err(ProduceError::new(code, verification_message(code)));
            }
            Some(Ok(guard)) => guard,
            None => None,
        },
        None => None,
    };
    // Queued when called: the producer's next append may go once this one is in line.
    let append = append_to_leader_as(
        &b,
        &t,
        &p,
        records,
        acks,
        deadline,
        AppendOrigin::TransactionalClient,
        TxnCheck::Verified(guard),
    );
    turn.done();
    append.await
}

/// The message of a verification error, as Kafka's.
fn verification_message(code: ErrorCode) -> String {
    match code {
        ErrorCode::InvalidTxnState => "Partition was not added to the transaction".into(),
        ErrorCode::NotEnoughReplicas => {
            "Unable to verify the partition has been added to the transaction".into()
        }
        other => format!("transaction verification failed: {other:?}"),
    }
}

/// The producer of `records`' first batch if it is transactional.
fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    let h = fjord_protocol::batch::parse_header_prefix(records).ok()?;
    (h.is_transactional() && h.has_producer_id()).then_some((h.producer_id, h.producer_epoch))
}

/// One partition's answer: decided now, or an append under way.
enum Pending {
    Done(PartitionProduceResponse),
    Appending(
        PartitionProduceResponse,
        std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<fjord_storage::AppendInfo, ProduceError>>
                    + Send,
            >,
        >,
    ),
}

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: ProduceRequest) -> Outcome {
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    let txn_id = req.transactional_id.as_ref().map(|s| s.to_string());
    // Transactional batches: one producer per request (Kafka: INVALID_PRODUCER_ID_MAPPING).
    let producers: std::collections::BTreeSet<(i64, i16)> = if txn_id.is_some() {
        req.topic_data
            .iter()
            .flat_map(|td| &td.partition_data)
            .filter_map(|pd| pd.records.as_deref().and_then(transactional_producer))
            .collect()
    } else {
        Default::default()
    };
    let mixed_producers = producers.len() > 1;
    // Transactional records need WRITE on the transactional id (every partition fails).
    let txn_denied = !producers.is_empty()
        && txn_id
            .as_ref()
            .is_some_and(|id| !authz::transactional_id(b, ctx, AclOperation::Write, id));
    let verification = match (&txn_id, producers.first()) {
        (Some(id), Some(&(producer_id, producer_epoch))) if !mixed_producers => {
            Some(Arc::new(Verification {
                transactional_id: id.clone(),
                producer_id,
                producer_epoch,
                partitions: Default::default(),
                deadline,
                abortable_known: ctx.version > 10,
                result: tokio::sync::OnceCell::new(),
            }))
        }
        _ => None,
    };
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for td in req.topic_data {
        let topic: Option<Arc<Topic>> = if ctx.version >= 13 {
            b.topic_by_id(&td.topic_id)
        } else {
            b.topic(&td.name)
        };
        let missing = if ctx.version >= 13 {
            ErrorCode::UnknownTopicId
        } else {
            ErrorCode::UnknownTopicOrPartition
        };
        // Only the broker writes its coordinators' topics (Kafka's ReplicaManager refuses the
        // same way, before looking the partition up).
        let internal = if ctx.version >= 13 {
            topic.as_ref().is_some_and(|t| is_internal(&t.name))
        } else {
            is_internal(&td.name)
        };
        // Topic GC's phase 1 may refuse produce to a marked topic (`topic.gc.reject.produce`).
        let gc_refusal = topic
            .as_ref()
            .and_then(|t| crate::topic_activity::produce_refusal(b, t));
        // WRITE on the topic, by name (v13+: a topic id nobody knows stays UNKNOWN_TOPIC_ID).
        let topic_denied = match (&topic, ctx.version >= 13) {
            (Some(t), _) => !authz::topic(b, ctx, AclOperation::Write, &t.name),
            (None, false) => !authz::topic(b, ctx, AclOperation::Write, &td.name),
            (None, true) => false,
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let fail = |code: ErrorCode, msg: Option<String>| {
                Pending::Done(
                    resp.clone()
                        .with_error_code(code.code())
                        .with_error_message(msg.map(sb)),
                )
            };
            let pending = if !acks_valid {
                fail(ErrorCode::InvalidRequiredAcks, None)
            } else if mixed_producers {
                fail(
                    ErrorCode::InvalidProducerIdMapping,
                    Some("Transactional records contained more than one producer ID".into()),
                )
            } else if txn_denied {
                fail(ErrorCode::TransactionalIdAuthorizationFailed, None)
            } else if topic_denied {
                fail(ErrorCode::TopicAuthorizationFailed, None)
            } else if internal {
                let name = topic
                    .as_ref()
                    .map_or_else(|| td.name.to_string(), |t| t.name.to_string());
                fail(
                    ErrorCode::InvalidTopicException,
                    Some(format!("Cannot append to internal topic {name}")),
                )
            } else if let Some(msg) = &gc_refusal {
                fail(ErrorCode::PolicyViolation, Some(msg.clone()))
            } else {
                match (&topic, pd.records) {
                    (None, _) => fail(missing, None),
                    (Some(_), None) => fail(
                        ErrorCode::InvalidRequest,
                        Some("produce request has null records".into()),
                    ),
                    (Some(t), Some(records)) => match usize::try_from(pd.index)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                    {
                        None => fail(ErrorCode::UnknownTopicOrPartition, None),
                        Some(p) if txn_id.is_none() => Pending::Appending(
                            resp,
                            Box::pin(append_to_leader(b, t, p, records, acks, deadline)),
                        ),
                        Some(p) => {
                            // A producer with its transaction open here needs no verification:
                            // its append is queued now, in request order (the log checks again
                            // that the transaction is still open when it writes).
                            let open = |pid: i64| {
                                p.with_log(|l| l.producer_state().has_ongoing_txn(&[], pid))
                                    .unwrap_or(false)
                            };
                            let producer = transactional_producer(&records).map(|(pid, _)| pid);
                            let verified = producer.is_some_and(|pid| p.is_leader() && !open(pid));
                            let v = verification.as_ref().filter(|_| verified);
                            // In request order with the producer's other appends here while
                            // any of them waits on a verification.
                            let turn = producer.and_then(|pid| p.txn_turn(pid, v.is_some()));
                            if let Some(turn) = turn {
                                if let Some(v) = v {
                                    v.partitions.lock().push((t.name.to_string(), p.clone()));
                                }
                                parts.push(Pending::Appending(
                                    resp,
                                    Box::pin(verified_append(
                                        b.clone(),
                                        t.clone(),
                                        p.clone(),
                                        records,
                                        acks,
                                        deadline,
                                        v.cloned(),
                                        turn,
                                    )),
                                ));
                                continue;
                            }
                            match v {
                                None => Pending::Appending(
                                    resp,
                                    Box::pin(append_to_leader_as(
                                        b,
                                        t,
                                        p,
                                        records,
                                        acks,
                                        deadline,
                                        AppendOrigin::TransactionalClient,
                                        TxnCheck::Verified(None),
                                    )),
                                ),
                                Some(_) => unreachable!("a verified append always has a turn"),
                            }
                        }
                    },
                }
            };
            parts.push(pending);
        }
        let name = match &topic {
            Some(t) if ctx.version >= 13 => TopicName(sb(t.name.to_string())),
            _ => td.name,
        };
        topics.push((name, td.topic_id, parts));
    }
    let b = b.clone();
    Outcome::Deferred(Box::pin(async move {
        let mut any_error = None;
        let mut responses = Vec::with_capacity(topics.len());
        for (name, topic_id, parts) in topics {
            let mut answers = Vec::with_capacity(parts.len());
            for part in parts {
                let result = match part {
                    Pending::Done(r) => r,
                    Pending::Appending(resp, append) => match append.await {
                        Ok(info) => resp
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(info.log_start_offset),
                        Err(e) => resp
                            .with_error_code(e.code.code())
                            .with_error_message(Some(sb(e.message)))
                            .with_record_errors(
                                e.record_errors
                                    .into_iter()
                                    .map(|r| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(r.batch_index)
                                            .with_batch_index_error_message(Some(sb(r.message)))
                                    })
                                    .collect(),
                            ),
                    },
                };
                if result.error_code != 0 {
                    any_error = Some(result.error_code);
                    b.metrics
                        .request_errors
                        .with_label_values(&["Produce", &result.error_code.to_string()])
                        .inc();
                }
                answers.push(result);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(answers),
            );
        }
        if acks == 0 {
            // The producer reads no response; closing is the only way to tell it something
            // failed.
            return match any_error {
                Some(code) => Outcome::Close(format!("acks=0 produce failed with error {code}")),
                None => Outcome::NoResponse,
            };
        }
        Outcome::Respond(Box::new(
            ProduceResponse::default().with_responses(responses).into(),
        ))
    }))
}
