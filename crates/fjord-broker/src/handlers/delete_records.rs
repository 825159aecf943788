//! DeleteRecords (v0-2): raise a partition's log start offset (-1 means the high watermark).
//! Internal topics are refused with INVALID_TOPIC_EXCEPTION, as Kafka does.

use std::sync::Arc;

use fjord_metadata::internal::is_internal;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Ctx;
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    // Deleting segments is disk work: each partition's runs on its I/O thread, all at once.
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        let denied = !authz::topic(b, ctx, AclOperation::Delete, &t.name);
        for p in &t.partitions {
            let r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            if denied {
                partitions.push((
                    r.with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
                    None,
                ));
                continue;
            }
            if is_internal(&t.name) {
                partitions.push((
                    r.with_error_code(ErrorCode::InvalidTopicException.code()),
                    None,
                ));
                continue;
            }
            let Some(part) = b.partition(&t.name, p.partition_index) else {
                partitions.push((
                    r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                    None,
                ));
                continue;
            };
            if let Err(code) = part.check_leader_epoch(-1) {
                partitions.push((r.with_error_code(code.code()), None));
                continue;
            }
            let offset = p.offset;
            let deleting = part.on_io(&b.io, move |part| {
                part.change_log(|log| {
                    let target = if offset == -1 {
                        log.log_end_offset()
                    } else {
                        offset
                    };
                    if target < 0 || target > log.log_end_offset() {
                        return Err(ErrorCode::OffsetOutOfRange);
                    }
                    log.delete_records_before(target)
                        .map_err(|e| e.error_code())
                })
            });
            partitions.push((r, Some(deleting)));
        }
        topics.push((t.name, partitions));
    }
    let mut results = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut answers = Vec::with_capacity(partitions.len());
        for (r, deleting) in partitions {
            let Some(deleting) = deleting else {
                answers.push(r);
                continue;
            };
            answers.push(match deleting.await {
                Ok(Some(Ok(low))) => {
                    tracing::info!(topic = %&*name, partition = r.partition_index,
                        low_watermark = low, "records deleted");
                    r.with_low_watermark(low)
                }
                Ok(Some(Err(code))) => r.with_error_code(code.code()),
                Ok(None) => r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                Err(_) => r.with_error_code(ErrorCode::KafkaStorageError.code()),
            });
        }
        results.push(
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(answers),
        );
    }
    DeleteRecordsResponse::default().with_topics(results)
}
