//! Produce (v3-13): validate acks, look up each partition, append the record batches as sent.
//!
//! Records stay raw bytes: the storage layer checks batch headers and CRCs and assigns offsets
//! in place. acks=1 is answered after the leader's append; acks=all is refused with
//! NOT_ENOUGH_REPLICAS when the ISR is below `min.insync.replicas`, and otherwise answered once
//! every ISR member has the records (the high watermark passed them), with
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile and
//! REQUEST_TIMED_OUT after the request's timeout. The wait is deferred: the connection goes on
//! appending its next requests, and responses still leave in order.

use std::sync::Arc;

use fjord_metadata::internal::is_internal;
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::AppendOrigin;
use fjord_storage::AppendError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use std::time::{Duration, Instant};

use fjord_replication::AckStatus;

use super::{sb, Ctx, Outcome};
use crate::broker::{now_ms, Broker, Topic};
use crate::partition::{AppendRejection, Partition};

/// An acks=all partition waiting for its ISR: (topic index, partition index in the response,
/// partition, offset after its records, min.insync.replicas).
type AckWait = (usize, usize, Arc<Partition>, i64, usize);

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: ProduceRequest) -> Outcome {
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let mut any_error = None;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let now = now_ms();
    let mut waits: Vec<AckWait> = Vec::new();
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
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let fail = |code: ErrorCode, msg: Option<String>| {
                resp.clone()
                    .with_error_code(code.code())
                    .with_error_message(msg.map(sb))
            };
            let result = if !acks_valid {
                fail(ErrorCode::InvalidRequiredAcks, None)
            } else if req.transactional_id.is_some() {
                fail(
                    ErrorCode::TransactionalIdAuthorizationFailed,
                    Some("transactions are not supported by this broker".into()),
                )
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
                match (&topic, &pd.records) {
                    (None, _) => fail(missing, None),
                    (Some(_), None) => fail(
                        ErrorCode::InvalidRequest,
                        Some("produce request has null records".into()),
                    ),
                    (Some(t), Some(records)) => {
                        match usize::try_from(pd.index)
                            .ok()
                            .and_then(|i| t.partitions.get(i))
                        {
                            None => fail(ErrorCode::UnknownTopicOrPartition, None),
                            Some(p) if !p.is_leader() => fail(
                                ErrorCode::NotLeaderOrFollower,
                                Some(format!("broker {} does not lead this partition", b.node_id())),
                            ),
                            Some(p)
                                if acks == -1
                                    && isr_size(p) < t.config.min_insync_replicas as i64 =>
                            {
                                fail(
                                    ErrorCode::NotEnoughReplicas,
                                    Some(format!(
                                        "The size of the current ISR {} is insufficient to satisfy the min.isr requirement of {}",
                                        isr_size(p),
                                        t.config.min_insync_replicas
                                    )),
                                )
                            }
                            Some(p) => match p.append(records, AppendOrigin::Client, now) {
                                Ok(info) => {
                                    p.activity.produced();
                                    if !info.duplicate {
                                        let label = [&*t.name];
                                        b.metrics
                                            .bytes_in
                                            .with_label_values(&label)
                                            .inc_by(info.bytes as u64);
                                        b.metrics
                                            .messages_in
                                            .with_label_values(&label)
                                            .inc_by(info.record_count);
                                        b.accounting.topic_in(&t.name, info.bytes as u64);
                                        b.skew.on_produce(p, records, info.bytes as u64);
                                    }
                                    if acks == -1 {
                                        waits.push((
                                            responses.len(),
                                            parts.len(),
                                            p.clone(),
                                            info.last_offset + 1,
                                            t.config.min_insync_replicas.max(1) as usize,
                                        ));
                                    }
                                    resp.clone()
                                        .with_base_offset(info.base_offset)
                                        .with_log_append_time_ms(info.log_append_time)
                                        .with_log_start_offset(info.log_start_offset)
                                }
                                Err(e) => {
                                    tracing::debug!(topic = %t.name, partition = pd.index, error = %e.message(), "produce rejected");
                                    fail(e.error_code(), Some(e.message()))
                                        .with_record_errors(record_errors(&e))
                                }
                            },
                        }
                    }
                }
            };
            if result.error_code != 0 {
                any_error = Some(result.error_code);
                b.metrics
                    .request_errors
                    .with_label_values(&["Produce", &result.error_code.to_string()])
                    .inc();
            }
            parts.push(result);
        }
        let name = match &topic {
            Some(t) if ctx.version >= 13 => TopicName(sb(t.name.to_string())),
            _ => td.name,
        };
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(td.topic_id)
                .with_partition_responses(parts),
        );
    }
    if acks == 0 {
        // The producer reads no response; closing is the only way to tell it something failed.
        return match any_error {
            Some(code) => Outcome::Close(format!("acks=0 produce failed with error {code}")),
            None => Outcome::NoResponse,
        };
    }
    // acks=all: answer now what is already decided (always, with no other ISR member).
    waits.retain(|(ti, pi, p, required, min_isr)| {
        let status = p.acks_all_status(*required, *min_isr);
        if status == AckStatus::Waiting {
            return true;
        }
        set_ack_error(b, &mut responses[*ti].partition_responses[*pi], status);
        false
    });
    if waits.is_empty() {
        return Outcome::Respond(Box::new(
            ProduceResponse::default().with_responses(responses).into(),
        ));
    }
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    let b = b.clone();
    Outcome::Deferred(Box::pin(async move {
        for (ti, pi, p, required, min_isr) in waits {
            let status = p.wait_acks_all(required, min_isr, deadline).await;
            set_ack_error(&b, &mut responses[ti].partition_responses[pi], status);
        }
        Outcome::Respond(Box::new(
            ProduceResponse::default().with_responses(responses).into(),
        ))
    }))
}

/// KIP-467: the records that made a batch invalid, for clients to fail only those.
fn record_errors(e: &AppendRejection) -> Vec<BatchIndexAndErrorMessage> {
    let AppendRejection::Storage(AppendError::Invalid(invalid)) = e else {
        return Vec::new();
    };
    invalid
        .record_errors
        .iter()
        .map(|r| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(r.batch_index)
                .with_batch_index_error_message(Some(sb(r.message.clone())))
        })
        .collect()
}

/// The committed ISR's size, without copying the assignment.
fn isr_size(p: &Partition) -> i64 {
    p.with_replica(|r| r.assignment().isr.len() as i64)
}

/// Put the outcome of an acks=all wait into a partition's response.
fn set_ack_error(b: &Broker, resp: &mut PartitionProduceResponse, status: AckStatus) {
    let (code, message) = match status {
        AckStatus::Done => return,
        AckStatus::Waiting => {
            b.metrics.acks_all_timeouts.inc();
            (
                ErrorCode::RequestTimedOut,
                "the in-sync replicas did not all receive the records within the request timeout",
            )
        }
        AckStatus::NotEnoughReplicasAfterAppend => (
            ErrorCode::NotEnoughReplicasAfterAppend,
            "the records were written, but the ISR shrank below min.insync.replicas",
        ),
        AckStatus::NotLeader => (
            ErrorCode::NotLeaderOrFollower,
            "leadership moved before the records were replicated",
        ),
    };
    resp.error_code = code.code();
    resp.error_message = Some(sb(message.to_string()));
    b.metrics
        .request_errors
        .with_label_values(&["Produce", &code.code().to_string()])
        .inc();
}
