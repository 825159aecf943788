//! DescribeProducers (v0): the active producers of partitions this broker leads, from the
//! partition's producer state (Kafka's `activeProducers`): id, epoch, last sequence, last
//! timestamp, the coordinator epoch of its last marker and the first offset of its open
//! transaction (-1 for none). UNKNOWN_TOPIC_OR_PARTITION for a partition that does not exist,
//! NOT_LEADER_OR_FOLLOWER where this broker does not lead it.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub fn handle(b: &Broker, ctx: &Ctx, r: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            // READ on the topic.
            let denied = !authz::topic(b, ctx, AclOperation::Read, &t.name);
            let topic = b.topic(&t.name).filter(|_| !denied);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let resp = PartitionResponse::default().with_partition_index(index);
                    let p = topic.as_ref().and_then(|topic| {
                        usize::try_from(index)
                            .ok()
                            .and_then(|i| topic.partitions.get(i))
                    });
                    if denied {
                        return resp.with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    }
                    let Some(p) = p else {
                        return resp.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    if !p.is_leader() {
                        return resp
                            .with_error_code(ErrorCode::NotLeaderOrFollower.code())
                            .with_error_message(Some(sb(format!(
                                "broker {} does not lead this partition",
                                b.node_id()
                            ))));
                    }
                    let producers = p.with_log(|log| {
                        let mut v: Vec<ProducerState> = log
                            .producer_state()
                            .producers()
                            .map(|e| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(e.producer_id))
                                    .with_producer_epoch(e.epoch as i32)
                                    .with_last_sequence(e.batches.back().map_or(-1, |b| b.last_seq))
                                    .with_last_timestamp(e.last_timestamp)
                                    .with_coordinator_epoch(e.coordinator_epoch)
                                    .with_current_txn_start_offset(e.txn_first_offset.unwrap_or(-1))
                            })
                            .collect();
                        v.sort_by_key(|s| s.producer_id.0);
                        v
                    });
                    match producers {
                        Some(v) => resp.with_active_producers(v),
                        None => resp.with_error_code(ErrorCode::NotLeaderOrFollower.code()),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
