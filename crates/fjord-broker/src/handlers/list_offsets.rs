//! ListOffsets (v1-10): earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest
//! local (-4) and by timestamp.
//!
//! Lookups by timestamp read segment indexes and batches from the disk (an old segment's
//! index is loaded on first use), so a request with any of them is answered on a blocking
//! thread; earliest and latest come from memory and are answered on the worker.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Ctx;
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// Kafka's `ListOffsetsRequest.DEBUGGING_REPLICA_ID`: any replica answers, with its own log.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// `replica_id` of a consumer: only the leader answers, and only up to the high watermark.
const CONSUMER_REPLICA_ID: i32 = -1;

/// DESCRIBE on each topic; the others get TOPIC_AUTHORIZATION_FAILED.
pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    mut req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let (allowed, denied) = authz::split(
        b,
        ctx,
        AclOperation::Describe,
        ResourceType::Topic,
        std::mem::take(&mut req.topics),
        |t| &t.name,
    );
    req.topics = allowed;
    let mut resp = handle_authorized(b, ctx, req).await;
    if !denied.is_empty() {
        let denied = ListOffsetsRequest::default().with_topics(denied);
        resp.topics
            .extend(failed(&denied, ErrorCode::TopicAuthorizationFailed).topics);
    }
    resp
}

async fn handle_authorized(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let reads_disk = req.topics.iter().any(|t| {
        t.partitions
            .iter()
            .any(|p| p.timestamp == MAX_TIMESTAMP || p.timestamp >= 0)
    });
    if !reads_disk {
        return answer(b, ctx.version, req);
    }
    // Should the lookup panic, every partition asked for still gets an answer.
    let failed = failed(&req, ErrorCode::KafkaStorageError);
    let (b, version) = (b.clone(), ctx.version);
    tokio::task::spawn_blocking(move || answer(&b, version, req))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "ListOffsets lookup failed");
            failed
        })
}

/// `code` for every partition of `req`.
fn failed(req: &ListOffsetsRequest, code: ErrorCode) -> ListOffsetsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.code())
                                .with_timestamp(-1)
                                .with_offset(-1)
                                .with_leader_epoch(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn answer(b: &Broker, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    // As in Kafka: a debugging request may be answered by a follower, and any request that is
    // not a consumer's sees the whole log (LATEST is the log end offset, not the high watermark).
    let any_replica = req.replica_id.0 == DEBUGGING_REPLICA_ID;
    let whole_log = req.replica_id.0 != CONSUMER_REPLICA_ID;
    // A read_committed consumer's LATEST is the last stable offset.
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let Some(part) = b.partition(&t.name, p.partition_index) else {
                        return r.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let allowed = if any_replica {
                        part.check_replica_epoch(p.current_leader_epoch)
                    } else {
                        part.check_leader_epoch(p.current_leader_epoch)
                    };
                    if let Err(code) = allowed {
                        return r.with_error_code(code.code());
                    }
                    let epoch = part.leader_epoch();
                    // Consumers see the log up to the high watermark (read_committed ones, up
                    // to the oldest open transaction).
                    let hw = part.high_watermark();
                    let found = part.with_log(|log| match p.timestamp {
                        LATEST if whole_log => Ok(Some((log.log_end_offset(), -1, epoch))),
                        LATEST if read_committed => {
                            Ok(Some((log.last_stable_offset(hw), -1, epoch)))
                        }
                        LATEST => Ok(Some((hw, -1, epoch))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1, epoch))),
                        LATEST_TIERED => Ok(Some((-1, -1, -1))),
                        MAX_TIMESTAMP => Ok(log.max_timestamp()),
                        ts if ts >= 0 => log.offset_for_timestamp(ts).map_err(|e| e.error_code()),
                        _ => Err(ErrorCode::InvalidRequest),
                    });
                    match found {
                        None => r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                        Some(Err(code)) => r.with_error_code(code.code()),
                        Some(Ok(None)) => r,
                        Some(Ok(Some((offset, ts, epoch)))) => {
                            let r = r.with_offset(offset).with_timestamp(ts);
                            // The field exists from v4; older versions must leave it unset.
                            if version >= 4 {
                                r.with_leader_epoch(epoch)
                            } else {
                                r
                            }
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
