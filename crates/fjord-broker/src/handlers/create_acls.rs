//! CreateAcls (v1-3): ALTER on the cluster, then the controller stores each valid ACL with a
//! new id (`fjord_metadata::acls`); an ACL already present is a success, an invalid one
//! INVALID_REQUEST, as Kafka's `AclControlManager`.

use std::sync::Arc;

use fjord_metadata::{ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{
    AccessControlEntry, AclBinding, AclOperation, PatternType, PermissionType, ResourcePattern,
    ResourceType,
};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: CreateAclsRequest) -> CreateAclsResponse {
    let n = req.creations.len();
    let fail = |code: ErrorCode, msg: &str| {
        CreateAclsResponse::default().with_results(
            (0..n)
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code.code())
                        .with_error_message(Some(sb(msg)))
                })
                .collect(),
        )
    };
    if let Some((code, msg)) = authz::acl_admin_refusal(b, ctx) {
        return fail(code, msg);
    }
    let acls: Vec<_> = req
        .creations
        .iter()
        .map(|c| {
            (
                uuid::Uuid::new_v4(),
                AclBinding {
                    pattern: ResourcePattern::new(
                        ResourceType::from_code(c.resource_type),
                        c.resource_name.to_string(),
                        PatternType::from_code(c.resource_pattern_type),
                    ),
                    entry: AccessControlEntry {
                        principal: c.principal.to_string(),
                        host: c.host.to_string(),
                        operation: AclOperation::from_code(c.operation),
                        permission: PermissionType::from_code(c.permission_type),
                    },
                },
            )
        })
        .collect();
    let created: Vec<String> = acls.iter().map(|(_, a)| a.to_string()).collect();
    match b.submit(ControllerRequest::CreateAcls { acls }).await {
        Ok(ControllerReply::AclsCreated { results }) => {
            let results = results
                .into_iter()
                .zip(created)
                .map(|(r, acl)| match r {
                    None => {
                        tracing::info!(principal = %ctx.principal, acl, "ACL created");
                        AclCreationResult::default()
                    }
                    Some(msg) => AclCreationResult::default()
                        .with_error_code(ErrorCode::InvalidRequest.code())
                        .with_error_message(Some(sb(msg))),
                })
                .collect();
            CreateAclsResponse::default().with_results(results)
        }
        Ok(other) => fail(
            ErrorCode::UnknownServerError,
            &format!("unexpected controller reply {other:?}"),
        ),
        Err(e) => fail(e.code, &e.message),
    }
}
