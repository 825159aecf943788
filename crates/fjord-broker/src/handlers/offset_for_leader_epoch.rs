//! OffsetForLeaderEpoch (v2-4): the end offset of a leader epoch, from the log's epoch cache.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Ctx;
use crate::broker::Broker;

pub fn handle(
    b: &Arc<Broker>,
    _ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(part) = b.partition(&t.topic, p.partition) else {
                        return r.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    if let Err(code) = part.check_leader_epoch(p.current_leader_epoch) {
                        return r.with_error_code(code.code());
                    }
                    match part.with_log(|l| l.end_offset_for_epoch(p.leader_epoch)) {
                        None => r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                        Some(None) => r,
                        Some(Some((epoch, end))) => r.with_leader_epoch(epoch).with_end_offset(end),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
