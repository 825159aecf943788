//! ListPartitionReassignments (v0, KIP-455): the reassignments in progress — each partition's
//! replicas during the move and the replicas being added and removed — as the controller
//! knows them (so a reassignment just started through another broker is listed). Partitions
//! that are not being reassigned, and unknown topics, are left out, as in Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_metadata::{ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !authz::cluster(b, ctx, AclOperation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| {
                let parts = t
                    .partition_indexes
                    .iter()
                    .filter_map(|p| u32::try_from(*p).ok())
                    .collect();
                (t.name.to_string(), parts)
            })
            .collect()
    });
    let request = ControllerRequest::ListPartitionReassignments { topics };
    let submitted = b.submit_within(request, req.timeout_ms).await;
    let ongoing = match submitted {
        Ok(ControllerReply::Reassignments { ongoing }) => ongoing,
        Ok(other) => {
            return ListPartitionReassignmentsResponse::default()
                .with_error_code(ErrorCode::UnknownServerError.code())
                .with_error_message(Some(sb(format!("unexpected controller reply {other:?}"))))
        }
        Err(e) => {
            return ListPartitionReassignmentsResponse::default()
                .with_error_code(e.code.code())
                .with_error_message(Some(sb(e.message)))
        }
    };
    let ids = |v: &[i32]| v.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for o in ongoing {
        by_topic.entry(o.topic).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(o.partition as i32)
                .with_replicas(ids(&o.replicas))
                .with_adding_replicas(ids(&o.adding_replicas))
                .with_removing_replicas(ids(&o.removing_replicas)),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(sb(name)))
                .with_partitions(partitions)
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
