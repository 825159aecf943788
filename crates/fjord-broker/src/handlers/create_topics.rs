//! CreateTopics (v2-7): validate every topic (name, partitions, replication factor, configs),
//! honour validate_only, and report errors per topic. Internal topics are the broker's to create.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_metadata::internal::is_internal;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::{Broker, TopicError};
use crate::config_view;
use crate::control::Deadline;
use fjord_security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    // One deadline for every topic of the request: the client waits for all of them.
    let deadline = Deadline::from_timeout_ms(req.timeout_ms);
    let mut seen = std::collections::HashSet::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    // CREATE on the cluster allows every topic; otherwise CREATE on each topic.
    let cluster_create = authz::allowed_quietly(
        b,
        ctx,
        AclOperation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    // controller_mutation_rate (KIP-599): strict from v6.
    let mutations = crate::quota::Mutations::new(
        &b.quotas,
        crate::quota::QuotaClient {
            user: &ctx.principal.name,
            client_id: &ctx.client_id,
        },
        ctx.version >= 6,
        "CreateTopics",
    );
    for t in req.topics {
        if !cluster_create && !authz::topic(b, ctx, AclOperation::Create, &t.name) {
            topics.push(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    .with_error_message(Some(sb("Authorization failed."))),
            );
            continue;
        }
        if !req.validate_only && !mutations.admit() {
            topics.push(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(crate::quota::THROTTLING_QUOTA_EXCEEDED)
                    .with_error_message(Some(sb(crate::quota::THROTTLED_MESSAGE))),
            );
            continue;
        }
        let partitions = match (t.num_partitions, t.assignments.len()) {
            (n, _) if n > 0 => n as i64,
            (_, 0) => b.config.num_partitions as i64,
            (_, n) => n as i64,
        };
        let result = create_one(b, ctx, t, req.validate_only, deadline, &mut seen).await;
        if !req.validate_only && result.error_code == 0 {
            mutations.record(partitions);
        }
        topics.push(result);
    }
    CreateTopicsResponse::default()
        .with_topics(topics)
        .with_throttle_time_ms(mutations.throttle_time_ms())
}

async fn create_one(
    b: &Arc<Broker>,
    ctx: &Ctx,
    t: kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
    deadline: Deadline,
    seen: &mut std::collections::HashSet<String>,
) -> CreatableTopicResult {
    {
        let name = t.name.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        if !seen.insert(name.clone()) {
            return fail(
                result,
                TopicError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("Topic '{name}' appears more than once in the request."),
                },
            );
        }
        // The broker creates its coordinators' topics with the settings they need; a client
        // creating one first (with a partition count or cleanup policy of its choosing) would
        // break the coordinator. Kafka answers the same for its metadata topic.
        if is_internal(&name) {
            let (code, message) = if b.topic(&name).is_some() {
                (
                    ErrorCode::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                )
            } else {
                (
                    ErrorCode::InvalidRequest,
                    format!("Creation of internal topic {name} is prohibited: the broker creates it when first needed."),
                )
            };
            return fail(result, TopicError { code, message });
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => {
                    return fail(
                        result,
                        TopicError {
                            code: ErrorCode::InvalidConfig,
                            message: format!(
                                "Null value not supported for topic config '{}'",
                                &*c.name
                            ),
                        },
                    )
                }
            }
        }
        let assignments = if t.assignments.is_empty() {
            None
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return fail(
                        result,
                        TopicError {
                            code: ErrorCode::InvalidRequest,
                            message: "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                        },
                    );
            }
            let bad = |message: String| TopicError {
                code: ErrorCode::InvalidReplicaAssignment,
                message,
            };
            let mut by_index = std::collections::BTreeMap::new();
            for a in &t.assignments {
                let replicas: Vec<i32> = a.broker_ids.iter().map(|id| id.0).collect();
                if by_index.insert(a.partition_index, replicas).is_some() {
                    return fail(
                        result,
                        bad(format!(
                            "Partition {} is assigned more than once.",
                            a.partition_index
                        )),
                    );
                }
            }
            // In any order (clients send a map), but numbered 0..n, as Kafka requires.
            if !by_index.keys().copied().eq(0..by_index.len() as i32) {
                return fail(
                    result,
                    bad("Partitions must be numbered 0, 1, 2, ... without gaps.".into()),
                );
            }
            // Brokers, duplicates and equal replication factors: the controller's checks.
            Some(by_index.into_values().collect::<Vec<_>>())
        };
        let outcome = match assignments {
            Some(a) => {
                b.create_topic_assigned(&name, a, configs, validate_only, deadline)
                    .await
            }
            None => {
                b.create_topic(
                    &name,
                    t.num_partitions,
                    t.replication_factor,
                    configs,
                    validate_only,
                    deadline,
                )
                .await
            }
        };
        match outcome {
            Ok((n, rf, topic)) => {
                let mut r = result;
                // num_partitions, replication_factor and configs exist from v5.
                if ctx.version >= 5 {
                    r = r
                        .with_num_partitions(n as i32)
                        .with_replication_factor(rf as i16);
                }
                if let Some(topic) = topic {
                    r = r.with_topic_id(topic.id);
                    if ctx.version >= 5 {
                        let entries =
                            config_view::topic_entries(b, &topic.config, &topic.overrides);
                        r = r.with_configs(Some(
                            entries
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(sb(e.name))
                                        .with_value(Some(sb(e.value)))
                                        .with_config_source(e.source as i8)
                                })
                                .collect(),
                        ));
                    }
                }
                r
            }
            Err(e) => fail(result, e),
        }
    }
}

fn fail(r: CreatableTopicResult, e: TopicError) -> CreatableTopicResult {
    r.with_error_code(e.code.code())
        .with_error_message(Some(sb(e.message)))
}
