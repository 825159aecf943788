//! DeleteGroups v0-2: empty groups only; their offsets and metadata become tombstones.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Broker, ctx: &Ctx, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    // Each group is deleted in its own coordinator shard; every answer waits for its
    // tombstones to reach the in-sync replicas.
    let mut results = Vec::with_capacity(r.groups_names.len());
    for g in &r.groups_names {
        let id = [g.0.to_string()];
        if !authz::group(b, ctx, AclOperation::Delete, &id[0]) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let code = match b
            .groups
            .run(b, &id[0], |c, _, _| c.delete_groups(&id))
            .await
        {
            Ok((codes, written)) => match (codes.first().copied(), written.replicated().await) {
                (Some(ErrorCode::None), Err(e)) => e,
                (code, _) => code.unwrap_or(ErrorCode::UnknownServerError),
            },
            Err(e) => e,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
