//! SyncGroup v0-5: park until the leader's assignment arrives.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use crate::groups::Delivered;
use fjord_group::coordinator::{SyncRequest, SyncResult};
use fjord_group::Reply;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Broker, ctx: &Ctx, r: SyncGroupRequest) -> SyncGroupResponse {
    if !crate::authz::group(b, ctx, AclOperation::Read, &r.group_id.0) {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let req = SyncRequest {
        group_id: r.group_id.0.to_string(),
        generation_id: r.generation_id,
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|s| s.to_string()),
        protocol_type: r.protocol_type.map(|s| s.to_string()),
        protocol_name: r.protocol_name.map(|s| s.to_string()),
        assignments: r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    if crate::groups::not_coordinator(b, &req.group_id) {
        return SyncGroupResponse::default().with_error_code(ErrorCode::NotCoordinator.code());
    }
    let group_id = req.group_id.clone();
    let delivered = b
        .groups
        .run_parked(b, &group_id, |c, token, now| c.sync_group(token, req, now))
        .await;
    let s = match delivered {
        Ok(Delivered {
            reply: Reply::Sync(mut s),
            written,
        }) => {
            if let (ErrorCode::None, Err(e)) = (s.error, written.replicated().await) {
                s = SyncResult::error(e);
            }
            s
        }
        Ok(_) => SyncResult::error(ErrorCode::UnknownServerError),
        Err(e) => SyncResult::error(e),
    };
    let resp = SyncGroupResponse::default()
        .with_error_code(s.error.code())
        .with_assignment(s.assignment);
    if ctx.version >= 5 {
        resp.with_protocol_type(s.protocol_type.map(sb))
            .with_protocol_name(s.protocol_name.map(sb))
    } else {
        resp
    }
}
