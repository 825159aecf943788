//! CreatePartitions (v0-3): grow a topic's partition count.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use crate::control::Deadline;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = b.node_id();
    let deadline = Deadline::from_timeout_ms(req.timeout_ms);
    let mut results = Vec::with_capacity(req.topics.len());
    // controller_mutation_rate (KIP-599): strict from v3.
    let mutations = crate::quota::Mutations::new(
        &b.quotas,
        crate::quota::QuotaClient {
            user: &ctx.principal.name,
            client_id: &ctx.client_id,
        },
        ctx.version >= 3,
        "CreatePartitions",
    );
    for t in req.topics {
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let manual_elsewhere = t.assignments.as_ref().is_some_and(|assignments| {
            assignments
                .iter()
                .any(|a| a.broker_ids.is_empty() || a.broker_ids.iter().any(|id| id.0 != node))
        });
        let r = if !authz::topic(b, ctx, AclOperation::Alter, &t.name) {
            r.with_error_code(ErrorCode::TopicAuthorizationFailed.code())
        } else if manual_elsewhere {
            r.with_error_code(ErrorCode::InvalidReplicaAssignment.code())
                .with_error_message(Some(sb(format!(
                    "Manual replica assignments may only name broker {node}; leave them out to let the controller place replicas."
                ))))
        } else if !req.validate_only && !mutations.admit() {
            r.with_error_code(crate::quota::THROTTLING_QUOTA_EXCEEDED)
                .with_error_message(Some(sb(crate::quota::THROTTLED_MESSAGE)))
        } else {
            let before = b.with_image(|i| i.topic(&t.name).map_or(0, |t| t.partitions as i64));
            match b
                .create_partitions(&t.name, t.count, req.validate_only, deadline)
                .await
            {
                Ok(()) => {
                    if !req.validate_only {
                        mutations.record(t.count as i64 - before);
                    }
                    r
                }
                Err(e) => r
                    .with_error_code(e.code.code())
                    .with_error_message(Some(sb(e.message))),
            }
        };
        results.push(r);
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(mutations.throttle_time_ms())
}
