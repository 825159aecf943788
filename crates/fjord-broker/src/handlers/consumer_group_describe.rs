//! ConsumerGroupDescribe v0-1 (KIP-848): epochs, members, assignments and targets.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_group::consumer::Partitions;
use fjord_group::coordinator::{GroupKind, TopicsView};
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType};

fn assignment(p: &Partitions, topics: &TopicsView) -> Assignment {
    Assignment::default().with_topic_partitions(
        p.iter()
            .map(|(id, ps)| {
                let name = topics
                    .values()
                    .find(|t| t.id == *id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(sb(name)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub fn handle(
    b: &Broker,
    ctx: &Ctx,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let groups = r
        .group_ids
        .iter()
        .map(|id| {
            if !authz::group(b, ctx, AclOperation::Describe, &id.0) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN);
            }
            let out = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(if r.include_authorized_operations {
                    authz::authorized_operations(b, ctx, ResourceType::Group, &id.0)
                } else {
                    i32::MIN
                });
            let described = b.groups.read(b, &id.0, |c, topics| {
                let out = out.clone();
                let Some(g) = c.group(&id.0) else {
                    return out
                        .with_error_code(ErrorCode::GroupIdNotFound.code())
                        .with_error_message(Some(sb(format!("Group {} not found.", id.0))));
                };
                let GroupKind::Consumer(cg) = &g.kind else {
                    return out
                        .with_error_code(ErrorCode::GroupIdNotFound.code())
                        .with_error_message(Some(sb(format!(
                            "Group {} is not a consumer group.",
                            id.0
                        ))));
                };
                let d = cg.describe_consumer();
                out.with_group_state(sb(d.state))
                    .with_group_epoch(d.group_epoch)
                    .with_assignment_epoch(d.assignment_epoch)
                    .with_assignor_name(sb(d
                        .assignor
                        .or_else(|| c.config.consumer_assignors.first().cloned())
                        .unwrap_or_default()))
                    .with_members(
                        d.members
                            .iter()
                            .map(|m| {
                                let member = Member::default()
                                    .with_member_id(sb(m.member_id.clone()))
                                    .with_instance_id(m.instance_id.clone().map(sb))
                                    .with_rack_id(m.rack.clone().map(sb))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(sb(m.client_id.clone()))
                                    .with_client_host(sb(m.client_host.clone()))
                                    .with_subscribed_topic_names(
                                        m.subscribed
                                            .iter()
                                            .map(|t| TopicName(sb(t.clone())))
                                            .collect(),
                                    )
                                    .with_assignment(assignment(&m.assignment, topics))
                                    .with_target_assignment(assignment(&m.target, topics));
                                if ctx.version >= 1 {
                                    member.with_member_type(1)
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    )
            });
            described.unwrap_or_else(|e| out.with_error_code(e.code()))
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
