//! Heartbeat v0-4 (classic groups).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Ctx;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub fn handle(b: &Broker, ctx: &Ctx, r: HeartbeatRequest) -> HeartbeatResponse {
    if !crate::authz::group(b, ctx, AclOperation::Read, &r.group_id.0) {
        return HeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let group = r.group_id.0.to_string();
    if crate::groups::not_coordinator(b, &group) {
        return HeartbeatResponse::default()
            .with_error_code(fjord_protocol::error::ErrorCode::NotCoordinator.code());
    }
    let code = b
        .groups
        .update(b, &group, |c, now| {
            c.heartbeat(
                &group,
                &r.member_id,
                r.group_instance_id.as_deref(),
                r.generation_id,
                now,
            )
        })
        .unwrap_or_else(|e| e);
    HeartbeatResponse::default().with_error_code(code.code())
}
