//! Metadata (v0-13): brokers with rack, topics with ids, partitions, auto-creation.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{sb, Ctx};
use crate::broker::{Broker, Topic};

/// "Authorized operations not requested" marker.
const OPS_OMITTED: i32 = i32::MIN;

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: MetadataRequest) -> MetadataResponse {
    let (host, port) = b.advertised();
    let node = BrokerId(b.node_id());
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(sb(host))
        .with_port(port as i32)
        .with_rack(b.config.rack.clone().map(sb))];
    let auto_create =
        b.config.auto_create_topics_enable && (ctx.version < 4 || req.allow_auto_topic_creation);
    let topics = match req.topics {
        None => all_topics(b),
        Some(list) if list.is_empty() && ctx.version == 0 => all_topics(b),
        Some(list) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => by_name(b, &name, auto_create),
                None => by_id(b, t.topic_id),
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(b.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(OPS_OMITTED)
}

fn all_topics(b: &Broker) -> Vec<MetadataResponseTopic> {
    b.topics().iter().map(|t| describe(b, t)).collect()
}

fn by_name(b: &Broker, name: &TopicName, auto_create: bool) -> MetadataResponseTopic {
    if let Some(t) = b.topic(name) {
        return describe(b, &t);
    }
    let error = if auto_create {
        match b.create_topic(name, -1, -1, BTreeMap::new()) {
            Ok(t) => {
                tracing::info!(topic = %&**name, "topic auto-created by a Metadata request");
                return describe(b, &t);
            }
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => match b.topic(name) {
                Some(t) => return describe(b, &t),
                None => ErrorCode::LeaderNotAvailable,
            },
            Err(e) => e.code,
        }
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(name.clone()))
        .with_topic_authorized_operations(OPS_OMITTED)
}

fn by_id(b: &Broker, id: Uuid) -> MetadataResponseTopic {
    match b.topic_by_id(&id) {
        Some(t) => describe(b, &t),
        None => MetadataResponseTopic::default()
            .with_error_code(ErrorCode::UnknownTopicId.code())
            .with_topic_id(id)
            .with_topic_authorized_operations(OPS_OMITTED),
    }
}

fn describe(b: &Broker, t: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(b.node_id());
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(t.name.to_string()))))
        .with_topic_id(t.id)
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_OMITTED)
}
