//! JoinGroup v0-9: park until the group's join phase completes (this connection only).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use crate::groups::Delivered;
use fjord_group::coordinator::{JoinRequest, JoinResult};
use fjord_group::Reply;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Broker, ctx: &Ctx, r: JoinGroupRequest) -> JoinGroupResponse {
    if !crate::authz::group(b, ctx, AclOperation::Read, &r.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let req = JoinRequest {
        group_id: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|s| s.to_string()),
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout_ms: r.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        version: ctx.version,
        reason: r.reason.map(|s| s.to_string()),
    };
    let member_id = req.member_id.clone();
    if crate::groups::not_coordinator(b, &req.group_id) {
        return encode(
            ctx,
            JoinResult::error(ErrorCode::NotCoordinator, &member_id),
        );
    }
    let group_id = req.group_id.clone();
    let delivered = b
        .groups
        .run_parked(b, &group_id, |c, token, now| c.join_group(token, req, now))
        .await;
    let result = match delivered {
        Ok(Delivered {
            reply: Reply::Join(mut j),
            written,
        }) => {
            // The membership this answer reports must survive a coordinator move.
            if let (ErrorCode::None, Err(e)) = (j.error, written.replicated().await) {
                j.error = e;
            }
            j
        }
        Ok(_) => JoinResult::error(ErrorCode::UnknownServerError, &member_id),
        Err(e) => JoinResult::error(e, &member_id),
    };
    encode(ctx, result)
}

fn encode(ctx: &Ctx, j: JoinResult) -> JoinGroupResponse {
    let resp = JoinGroupResponse::default()
        .with_error_code(j.error.code())
        .with_generation_id(j.generation_id)
        // Non-nullable before v7.
        .with_protocol_name(Some(sb(j.protocol_name.unwrap_or_default())))
        .with_leader(sb(j.leader))
        .with_member_id(sb(j.member_id))
        .with_members(
            j.members
                .into_iter()
                .map(|m| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(sb(m.member_id))
                        .with_metadata(m.metadata);
                    if ctx.version >= 5 {
                        member.with_group_instance_id(m.group_instance_id.map(sb))
                    } else {
                        member
                    }
                })
                .collect(),
        );
    let resp = if ctx.version >= 7 {
        resp.with_protocol_type(j.protocol_type.map(sb))
    } else {
        resp
    };
    if ctx.version >= 9 {
        resp.with_skip_assignment(j.skip_assignment)
    } else {
        resp
    }
}
