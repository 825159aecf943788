//! LeaveGroup v0-5: one member (v0-2) or a batch by member or instance id (v3+).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use fjord_group::coordinator::LeaveMember;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Broker, ctx: &Ctx, r: LeaveGroupRequest) -> LeaveGroupResponse {
    if !crate::authz::group(b, ctx, AclOperation::Read, &r.group_id.0) {
        return LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let group = r.group_id.0.to_string();
    if crate::groups::not_coordinator(b, &group) {
        return LeaveGroupResponse::default()
            .with_error_code(fjord_protocol::error::ErrorCode::NotCoordinator.code());
    }
    let members: Vec<LeaveMember> = if ctx.version >= 3 {
        r.members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: r.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let ran = b
        .groups
        .run(b, &group, |c, _, now| {
            let (top, errors, fx) = c.leave_group(&group, &members, now);
            ((top, errors), fx)
        })
        .await;
    let ((mut top, errors), written) = match ran {
        Ok(ran) => ran,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    if let (0, Err(e)) = (top.code(), written.replicated().await) {
        top = e;
    }
    if ctx.version < 3 {
        let code = errors.first().copied().unwrap_or(top);
        let code = if top.code() != 0 { top } else { code };
        return LeaveGroupResponse::default().with_error_code(code.code());
    }
    LeaveGroupResponse::default()
        .with_error_code(top.code())
        .with_members(
            members
                .iter()
                .zip(errors)
                .map(|(m, e)| {
                    MemberResponse::default()
                        .with_member_id(sb(m.member_id.clone()))
                        .with_group_instance_id(m.group_instance_id.clone().map(sb))
                        .with_error_code(e.code())
                })
                .collect(),
        )
}
