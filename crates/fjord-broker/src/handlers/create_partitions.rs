//! CreatePartitions (v0-3): grow a topic's partition count.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{sb, Ctx};
use crate::broker::Broker;

pub fn handle(
    b: &Arc<Broker>,
    _ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = b.node_id();
    let results =
        req.topics
            .into_iter()
            .map(|t| {
                let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                if let Some(assignments) = &t.assignments {
                    if assignments.iter().any(|a| {
                        a.broker_ids.is_empty() || a.broker_ids.iter().any(|id| id.0 != node)
                    }) {
                        return r
                            .with_error_code(ErrorCode::InvalidReplicaAssignment.code())
                            .with_error_message(Some(sb(format!(
                                "Replica assignments may only name broker {node}."
                            ))));
                    }
                }
                match b.create_partitions(&t.name, t.count, req.validate_only) {
                    Ok(()) => r,
                    Err(e) => r
                        .with_error_code(e.code.code())
                        .with_error_message(Some(sb(e.message))),
                }
            })
            .collect();
    CreatePartitionsResponse::default().with_results(results)
}
