//! InitProducerId (v0-5): producer ids for idempotent producers, and for transactional ones
//! the transaction coordinator's answer (epoch bumps, fencing, KIP-360 recovery).

use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{producer_fenced_for, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &req.transactional_id {
        if !authz::transactional_id(b, ctx, AclOperation::Write, id) {
            return resp.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
        }
        let expected = match (req.producer_id.0, req.producer_epoch) {
            (-1, -1) => None,
            (-1, _) | (_, -1) => return resp.with_error_code(ErrorCode::InvalidRequest.code()),
            (pid, epoch) => Some((pid, epoch)),
        };
        return match b
            .txns
            .init_producer_id(b, id, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(e) => resp.with_error_code(producer_fenced_for(e, ctx.version >= 4).code()),
        };
    }
    // Idempotence: IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679).
    if !authz::idempotent_write(b, ctx) {
        return resp.with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    // An idempotent producer that asks to bump its epoch (KIP-360) gets a fresh id instead:
    // equally safe, since sequence state is per producer id.
    match b.allocate_producer_id().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => resp.with_error_code(e.code.code()),
    }
}
