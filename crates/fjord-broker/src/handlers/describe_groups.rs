//! DescribeGroups v0-6: state, protocol and members (with their assignment once Stable).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType};

pub fn handle(b: &Broker, ctx: &Ctx, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = r
        .groups
        .iter()
        .map(|id| {
            let group = DescribedGroup::default().with_group_id(id.clone());
            if !authz::group(b, ctx, AclOperation::Describe, &id.0) {
                return group
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN);
            }
            let d = match b
                .groups
                .read(b, &id.0, |c, topics| c.describe_group(&id.0, topics))
            {
                Ok(d) => d,
                Err(e) => return group.with_error_code(e.code()),
            };
            let Some(d) = d else {
                // Kafka 4 answers GROUP_ID_NOT_FOUND from v6; older versions see a Dead group.
                return if ctx.version >= 6 {
                    group
                        .with_error_code(ErrorCode::GroupIdNotFound.code())
                        .with_error_message(Some(sb(format!("Group {} not found.", id.0))))
                        .with_group_state(sb("Dead"))
                } else {
                    group.with_group_state(sb("Dead"))
                };
            };
            // KIP-430: what the principal may do on the group, when asked.
            let ops = if ctx.version >= 3 && r.include_authorized_operations {
                authz::authorized_operations(b, ctx, ResourceType::Group, &id.0)
            } else {
                i32::MIN
            };
            group
                .with_authorized_operations(ops)
                .with_group_state(sb(d.state))
                .with_protocol_type(sb(d.protocol_type))
                .with_protocol_data(sb(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(sb(m.member_id))
                                .with_client_id(sb(m.client_id))
                                .with_client_host(sb(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if ctx.version >= 4 {
                                member.with_group_instance_id(m.group_instance_id.map(sb))
                            } else {
                                member
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
