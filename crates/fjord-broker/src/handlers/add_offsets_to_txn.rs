//! AddOffsetsToTxn (v0-4): the group's `__consumer_offsets` partition joins the transaction,
//! so its transactional offset commits are committed or aborted with it.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{producer_fenced_for, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    // WRITE on the transactional id, READ on the group.
    if !authz::transactional_id(b, ctx, AclOperation::Write, &req.transactional_id) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
    }
    if !authz::group(b, ctx, AclOperation::Read, &req.group_id) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let result = b
        .txns
        .add_offsets(
            b,
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id,
        )
        .await;
    let code = result
        .err()
        .map_or(0, |e| producer_fenced_for(e, ctx.version >= 2).code());
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
