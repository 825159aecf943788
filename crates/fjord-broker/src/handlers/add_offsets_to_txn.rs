//! AddOffsetsToTxn (v0-4): the group's `__consumer_offsets` partition joins the transaction,
//! so its transactional offset commits are committed or aborted with it.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{producer_fenced_for, Ctx};
use crate::broker::Broker;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
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
