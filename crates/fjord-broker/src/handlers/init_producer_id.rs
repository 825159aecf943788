//! InitProducerId (v0-5): producer ids for idempotent producers. Transactions are not
//! supported yet, so a transactional id is refused with a clear error.

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;
use crate::broker::Broker;

pub async fn handle(
    b: &Arc<Broker>,
    _ctx: &Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return resp.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
    }
    // An idempotent producer that asks to bump its epoch (KIP-360) gets a fresh id instead:
    // equally safe, since sequence state is per producer id.
    match b.allocate_producer_id().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => resp.with_error_code(e.code.code()),
    }
}
