//! DeleteAcls (v1-3): ALTER on the cluster, then the controller removes every ACL a filter
//! matches (Kafka's `AclBindingFilter`), reporting per filter what it deleted.

use std::sync::Arc;

use fjord_metadata::{ControllerReply, ControllerRequest};
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let n = req.filters.len();
    let fail = |code: ErrorCode, msg: &str| {
        DeleteAclsResponse::default().with_filter_results(
            (0..n)
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(code.code())
                        .with_error_message(Some(sb(msg)))
                })
                .collect(),
        )
    };
    if let Some((code, msg)) = authz::acl_admin_refusal(b, ctx) {
        return fail(code, msg);
    }
    let filters = req
        .filters
        .iter()
        .map(|f| {
            super::describe_acls::binding_filter(
                [
                    f.resource_type_filter,
                    f.pattern_type_filter,
                    f.operation,
                    f.permission_type,
                ],
                &f.resource_name_filter,
                &f.principal_filter,
                &f.host_filter,
            )
        })
        .collect();
    match b.submit(ControllerRequest::DeleteAcls { filters }).await {
        Ok(ControllerReply::AclsDeleted { results }) => {
            let results = results
                .into_iter()
                .map(|r| match r.error {
                    Some(msg) => DeleteAclsFilterResult::default()
                        .with_error_code(ErrorCode::InvalidRequest.code())
                        .with_error_message(Some(sb(msg))),
                    None => DeleteAclsFilterResult::default().with_matching_acls(
                        r.deleted
                            .iter()
                            .map(|a| {
                                tracing::info!(principal = %ctx.principal, acl = %a, "ACL deleted");
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(a.pattern.resource_type.code())
                                    .with_resource_name(sb(a.pattern.name.clone()))
                                    .with_pattern_type(a.pattern.pattern_type.code())
                                    .with_principal(sb(a.entry.principal.clone()))
                                    .with_host(sb(a.entry.host.clone()))
                                    .with_operation(a.entry.operation.code())
                                    .with_permission_type(a.entry.permission.code())
                            })
                            .collect(),
                    ),
                })
                .collect();
            DeleteAclsResponse::default().with_filter_results(results)
        }
        Ok(other) => fail(
            ErrorCode::UnknownServerError,
            &format!("unexpected controller reply {other:?}"),
        ),
        Err(e) => fail(e.code, &e.message),
    }
}
