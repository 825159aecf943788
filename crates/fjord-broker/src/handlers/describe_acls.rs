//! DescribeAcls (v1-3): DESCRIBE on the cluster; the ACLs the filter matches, from this
//! broker's image, grouped by resource pattern as Kafka answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{
    AccessControlEntryFilter, AclBindingFilter, AclOperation, PatternType, PermissionType,
    ResourcePatternFilter, ResourceType,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let fail = |code: ErrorCode, msg: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(sb(msg)))
    };
    if !authz::enabled(b) {
        return fail(ErrorCode::SecurityDisabled, "No Authorizer is configured.");
    }
    if !authz::cluster(b, ctx, AclOperation::Describe) {
        return fail(
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    let filter = binding_filter(
        [
            req.resource_type_filter,
            req.pattern_type_filter,
            req.operation,
            req.permission_type,
        ],
        &req.resource_name_filter,
        &req.principal_filter,
        &req.host_filter,
    );
    if let Err(e) = filter.validate() {
        return fail(ErrorCode::InvalidRequest, &e.0);
    }
    let mut by_pattern: BTreeMap<_, Vec<AclDescription>> = BTreeMap::new();
    b.with_image(|img| {
        for (_, a) in img.acls().matching(&filter) {
            by_pattern.entry(a.pattern.clone()).or_default().push(
                AclDescription::default()
                    .with_principal(sb(a.entry.principal.clone()))
                    .with_host(sb(a.entry.host.clone()))
                    .with_operation(a.entry.operation.code())
                    .with_permission_type(a.entry.permission.code()),
            );
        }
    });
    let resources = by_pattern
        .into_iter()
        .map(|(p, acls)| {
            DescribeAclsResource::default()
                .with_resource_type(p.resource_type.code())
                .with_resource_name(sb(p.name))
                .with_pattern_type(p.pattern_type.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

/// A filter from the wire: `codes` are the resource type, pattern type, operation and
/// permission codes (DescribeAcls and DeleteAcls carry the same fields).
pub(super) fn binding_filter(
    codes: [i8; 4],
    name: &Option<StrBytes>,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
) -> AclBindingFilter {
    let [rt, pt, op, perm] = codes;
    let owned = |s: &Option<StrBytes>| s.as_ref().map(|s| s.to_string());
    AclBindingFilter {
        pattern: ResourcePatternFilter {
            resource_type: ResourceType::from_code(rt),
            name: owned(name),
            pattern_type: PatternType::from_code(pt),
        },
        entry: AccessControlEntryFilter {
            principal: owned(principal),
            host: owned(host),
            operation: AclOperation::from_code(op),
            permission: PermissionType::from_code(perm),
        },
    }
}
