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
use crate::broker::Broker;

pub fn handle(b: &Arc<Broker>, _ctx: &Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if is_internal(&t.name) {
                        return r.with_error_code(ErrorCode::InvalidTopicException.code());
                    }
                    let Some(part) = b.partition(&t.name, p.partition_index) else {
                        return r.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    if let Err(code) = part.check_leader_epoch(-1) {
                        return r.with_error_code(code.code());
                    }
                    let result = part.with_log_mut(|log| {
                        let target = if p.offset == -1 {
                            log.log_end_offset()
                        } else {
                            p.offset
                        };
                        if target < 0 || target > log.log_end_offset() {
                            return Err(ErrorCode::OffsetOutOfRange);
                        }
                        log.delete_records_before(target)
                            .map_err(|e| e.error_code())
                    });
                    match result {
                        Some(Ok(low)) => {
                            tracing::info!(topic = %&*t.name, partition = p.partition_index, low_watermark = low, "records deleted");
                            r.with_low_watermark(low)
                        }
                        Some(Err(code)) => r.with_error_code(code.code()),
                        None => r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
