//! ListGroups v0-5, with state (v4+) and type (v5+) filters.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

pub fn handle(b: &Broker, ctx: &Ctx, r: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_string()).collect();
    let types: Vec<String> = r.types_filter.iter().map(|s| s.to_string()).collect();
    let mut listed = Vec::new();
    b.groups
        .read_each(|c, _| listed.extend(c.list_groups(&states, &types)));
    // DESCRIBE on the cluster lists every group; otherwise those the principal may DESCRIBE.
    if !authz::allowed_quietly(
        b,
        ctx,
        AclOperation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        listed.retain(|g| {
            authz::allowed_quietly(
                b,
                ctx,
                AclOperation::Describe,
                ResourceType::Group,
                &g.group_id,
            )
        });
    }
    ListGroupsResponse::default().with_groups(
        listed
            .into_iter()
            .map(|g| {
                let l = ListedGroup::default()
                    .with_group_id(GroupId(sb(g.group_id)))
                    .with_protocol_type(sb(g.protocol_type));
                let l = if ctx.version >= 4 {
                    l.with_group_state(sb(g.state))
                } else {
                    l
                };
                if ctx.version >= 5 {
                    l.with_group_type(sb(g.group_type))
                } else {
                    l
                }
            })
            .collect(),
    )
}
