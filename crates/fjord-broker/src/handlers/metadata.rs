//! Metadata (v0-13): live brokers with racks, the active controller, topics with ids and
//! partitions (leader, epoch, replicas, ISR) from this broker's cluster image, auto-creation.
//! With ACLs: DESCRIBE on each topic (a full listing leaves the others out), CREATE on the
//! cluster or topic to auto-create, KIP-430 authorized operations when asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{sb, Ctx};
use crate::authz;
use crate::broker::{Broker, Topic};
use fjord_security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

/// "Authorized operations not requested" marker.
const OPS_OMITTED: i32 = i32::MIN;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: MetadataRequest) -> MetadataResponse {
    let brokers = b
        .live_brokers()
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(sb(host))
                .with_port(port as i32)
                .with_rack(rack.map(sb))
        })
        .collect();
    let auto_create =
        b.config.auto_create_topics_enable && (ctx.version < 4 || req.allow_auto_topic_creation);
    let mut topics = match req.topics {
        None => all_topics(b, ctx),
        Some(list) if list.is_empty() && ctx.version == 0 => all_topics(b, ctx),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                // A non-zero topic id wins over the name, as in Kafka: the Java Admin's
                // describeTopics(TopicCollection.ofTopicIds(..)) sends the id with name "".
                out.push(match t.name {
                    Some(name) if t.topic_id.is_nil() => by_name(b, ctx, &name, auto_create).await,
                    _ => by_id(b, ctx, t.topic_id),
                });
            }
            out
        }
    };
    // KIP-430 (v8+): what the principal may do on each topic and on the cluster.
    if ctx.version >= 8 && req.include_topic_authorized_operations {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = t.name.as_deref().map_or("", |n| &**n);
            t.topic_authorized_operations =
                authz::authorized_operations(b, ctx, ResourceType::Topic, name);
        }
    }
    let cluster_ops =
        if (8..=10).contains(&ctx.version) && req.include_cluster_authorized_operations {
            if authz::allowed_quietly(
                b,
                ctx,
                AclOperation::Describe,
                ResourceType::Cluster,
                CLUSTER_NAME,
            ) {
                authz::authorized_operations(b, ctx, ResourceType::Cluster, CLUSTER_NAME)
            } else {
                0
            }
        } else {
            OPS_OMITTED
        };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(b.cluster_id.clone())))
        .with_controller_id(BrokerId(b.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}

/// Every topic the principal may DESCRIBE (the others are left out, unlogged, as in Kafka).
fn all_topics(b: &Broker, ctx: &Ctx) -> Vec<MetadataResponseTopic> {
    b.topics()
        .iter()
        .filter(|t| {
            authz::allowed_quietly(b, ctx, AclOperation::Describe, ResourceType::Topic, &t.name)
        })
        .map(|t| describe(t))
        .collect()
}

fn unauthorized(name: Option<TopicName>, id: Uuid) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
        .with_name(name)
        .with_topic_id(id)
        .with_topic_authorized_operations(OPS_OMITTED)
}

async fn by_name(
    b: &Broker,
    ctx: &Ctx,
    name: &TopicName,
    auto_create: bool,
) -> MetadataResponseTopic {
    // Asked for by name: TOPIC_AUTHORIZATION_FAILED whether or not the topic exists.
    if !authz::topic(b, ctx, AclOperation::Describe, name) {
        return unauthorized(Some(name.clone()), Uuid::nil());
    }
    if let Some(t) = b.topic(name) {
        return describe(&t);
    }
    // Auto-creation needs CREATE on the cluster or on the topic.
    if auto_create
        && authz::enabled(b)
        && !authz::allowed_quietly(
            b,
            ctx,
            AclOperation::Create,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )
        && !authz::topic(b, ctx, AclOperation::Create, name)
    {
        return unauthorized(Some(name.clone()), Uuid::nil());
    }
    let error = if auto_create {
        match b
            .create_topic(
                name,
                -1,
                -1,
                BTreeMap::new(),
                false,
                crate::control::Deadline::standard(),
            )
            .await
        {
            Ok((_, _, Some(t))) => {
                tracing::info!(topic = %&**name, "topic auto-created by a Metadata request");
                return describe(&t);
            }
            Ok((_, _, None)) => ErrorCode::LeaderNotAvailable,
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => match b.topic(name) {
                Some(t) => return describe(&t),
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

fn by_id(b: &Broker, ctx: &Ctx, id: Uuid) -> MetadataResponseTopic {
    match b.topic_by_id(&id) {
        Some(t) if !authz::topic(b, ctx, AclOperation::Describe, &t.name) => unauthorized(None, id),
        Some(t) => describe(&t),
        None => MetadataResponseTopic::default()
            .with_error_code(ErrorCode::UnknownTopicId.code())
            .with_topic_id(id)
            .with_topic_authorized_operations(OPS_OMITTED),
    }
}

fn describe(t: &Topic) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let s = p.state();
            let error = if s.leader < 0 {
                ErrorCode::LeaderNotAvailable
            } else {
                ErrorCode::None
            };
            MetadataResponsePartition::default()
                .with_error_code(error.code())
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(s.leader))
                .with_leader_epoch(s.leader_epoch)
                .with_replica_nodes(ids(&s.replicas))
                .with_isr_nodes(ids(&s.isr))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(t.name.to_string()))))
        .with_topic_id(t.id)
        .with_is_internal(fjord_metadata::internal::is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_OMITTED)
}
