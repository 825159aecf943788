//! EndTxn (v0-4, the first transaction protocol): commit or abort, answered once the prepare
//! record is on every in-sync replica of the id's `__transaction_state` partition; the
//! markers follow ([`crate::txn`]).

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{producer_fenced_for, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

pub async fn handle(b: &Arc<Broker>, ctx: &Ctx, req: EndTxnRequest) -> EndTxnResponse {
    if !authz::transactional_id(b, ctx, AclOperation::Write, &req.transactional_id) {
        return EndTxnResponse::default()
            .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
    }
    let result = b
        .txns
        .end_txn(
            b,
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
    let code = result
        .err()
        .map_or(0, |e| producer_fenced_for(e, ctx.version >= 2).code());
    EndTxnResponse::default().with_error_code(code)
}
