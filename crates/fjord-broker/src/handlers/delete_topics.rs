//! DeleteTopics (v1-6): by name, or by topic id from v6.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use crate::control::Deadline;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let deadline = Deadline::from_timeout_ms(req.timeout_ms);
    let mut responses = Vec::with_capacity(targets.len());
    // controller_mutation_rate (KIP-599): strict from v5.
    let mutations = crate::quota::Mutations::new(
        &b.quotas,
        crate::quota::QuotaClient {
            user: &ctx.principal.name,
            client_id: &ctx.client_id,
        },
        ctx.version >= 5,
        "DeleteTopics",
    );
    for (name, id) in targets {
        let topic = match &name {
            Some(n) => b.topic(n),
            None => b.topic_by_id(&id),
        };
        let r = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        // DELETE on the topic, by the name asked for or the name of the id.
        let checked = name
            .as_deref()
            .map(|n| &**n)
            .or(topic.as_ref().map(|t| &*t.name));
        if checked.is_some_and(|n| !authz::topic(b, ctx, AclOperation::Delete, n)) {
            responses.push(r.with_error_code(ErrorCode::TopicAuthorizationFailed.code()));
            continue;
        }
        let Some(topic) = topic else {
            let code = if name.is_some() {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::UnknownTopicId
            };
            responses.push(r.with_error_code(code.code()));
            continue;
        };
        let r = r
            .with_name(Some(TopicName(sb(topic.name.to_string()))))
            .with_topic_id(topic.id);
        if !mutations.admit() {
            responses.push(
                r.with_error_code(crate::quota::THROTTLING_QUOTA_EXCEEDED)
                    .with_error_message(Some(sb(crate::quota::THROTTLED_MESSAGE))),
            );
            continue;
        }
        let partitions = b.with_image(|i| i.topic(&topic.name).map_or(0, |t| t.partitions));
        responses.push(match b.delete_topic(&topic.name, deadline).await {
            Ok(()) => {
                mutations.record(partitions as i64);
                r
            }
            Err(e) => r
                .with_error_code(e.code.code())
                .with_error_message(Some(sb(e.message))),
        });
    }
    DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(mutations.throttle_time_ms())
}
