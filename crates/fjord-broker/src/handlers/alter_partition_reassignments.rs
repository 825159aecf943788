//! AlterPartitionReassignments (v0-1, KIP-455; v1 carries `allow_replication_factor_change`,
//! KIP-860): start, replace or cancel (null replicas) partition reassignments, decided by the
//! controller (`fjord_metadata::reassignment`). Each partition gets its own error code; a
//! failure to reach the controller is the top-level error.

use std::sync::Arc;

use fjord_metadata::{ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no such field: a replication factor change is allowed, as it always was.
    let allow_rf_change = ctx.version < 1 || req.allow_replication_factor_change;
    // Echoed from v1 (v0 cannot carry anything but the default, true).
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    if !authz::cluster(b, ctx, AclOperation::Alter) {
        return response
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(sb("Cluster authorization failed.")));
    }
    // Each partition of the request in order: an error known here (a negative index), or
    // `None` to take the controller's answer (which comes in the order asked).
    let mut asked = Vec::new();
    let mut slots: Vec<Option<(i16, String)>> = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            match u32::try_from(p.partition_index) {
                Ok(index) => {
                    asked.push((
                        t.name.to_string(),
                        index,
                        p.replicas
                            .as_ref()
                            .map(|r| r.iter().map(|id| id.0).collect()),
                    ));
                    slots.push(None);
                }
                Err(_) => slots.push(Some((
                    ErrorCode::UnknownTopicOrPartition.code(),
                    format!("Partition {} does not exist.", p.partition_index),
                ))),
            }
        }
    }
    let request = ControllerRequest::AlterPartitionReassignments {
        partitions: asked,
        allow_replication_factor_change: allow_rf_change,
    };
    let submitted = b.submit_within(request, req.timeout_ms).await;
    let decided = match submitted {
        Ok(ControllerReply::ReassignmentResults { results }) => results,
        Ok(other) => {
            return response
                .with_error_code(ErrorCode::UnknownServerError.code())
                .with_error_message(Some(sb(format!("unexpected controller reply {other:?}"))))
        }
        Err(e) => {
            tracing::warn!(error = %e.message, "AlterPartitionReassignments failed");
            return response
                .with_error_code(e.code.code())
                .with_error_message(Some(sb(e.message)));
        }
    };
    let mut decided = decided.into_iter();
    let mut slots = slots.into_iter();
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, message) = match slots.next().flatten() {
                        Some(known) => known,
                        None => decided.next().map_or_else(
                            || (ErrorCode::UnknownServerError.code(), String::new()),
                            |r| (r.error, r.message),
                        ),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message((code != 0).then(|| sb(message)))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    response.with_responses(responses)
}
