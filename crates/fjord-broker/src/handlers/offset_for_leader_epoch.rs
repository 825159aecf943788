//! OffsetForLeaderEpoch (v2-4): the end offset of a leader epoch, from the log's epoch cache.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Ctx;
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderTopic;

pub fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    // A follower (replica_id >= 0) needs CLUSTER_ACTION, a client DESCRIBE on each topic.
    let follower = req.replica_id.0 >= 0;
    let cluster_ok = !follower || authz::cluster(b, ctx, AclOperation::ClusterAction);
    let (allowed, denied) = if follower {
        (req.topics, Vec::new())
    } else {
        authz::split(
            b,
            ctx,
            AclOperation::Describe,
            ResourceType::Topic,
            req.topics,
            |t| &t.topic,
        )
    };
    let deny = |t: OffsetForLeaderTopic| {
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1)
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
            })
            .collect();
        OffsetForLeaderTopicResult::default()
            .with_topic(t.topic)
            .with_partitions(partitions)
    };
    if !cluster_ok {
        return OffsetForLeaderEpochResponse::default()
            .with_topics(allowed.into_iter().map(deny).collect());
    }
    let topics = allowed
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
        .chain(denied.into_iter().map(deny))
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
