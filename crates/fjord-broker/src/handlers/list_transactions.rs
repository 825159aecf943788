//! ListTransactions (v0-1): the transactional ids this broker coordinates, filtered by state
//! name, producer id and (v1, KIP-994) by running longer than a duration, as Kafka's
//! `listTransactionStates`. Unknown state names are echoed in `unknown_state_filters`.

use std::collections::BTreeSet;

use fjord_protocol::clock::now_ms;
use fjord_txn::TxnState;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType};

pub fn handle(b: &Broker, ctx: &Ctx, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let resp = ListTransactionsResponse::default();
    let ids = match b.txns.list(b) {
        Ok(ids) => ids,
        Err(e) => return resp.with_error_code(e.code()),
    };
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in &req.state_filters {
        match TxnState::from_name(name) {
            Some(s) => {
                states.insert(s);
            }
            None => unknown.push(name.clone()),
        }
    }
    let pids: BTreeSet<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if ctx.version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    let now = now_ms();
    let listed = ids
        .into_iter()
        .filter(|(_, v)| pids.is_empty() || pids.contains(&v.producer_id))
        .filter(|(_, v)| req.state_filters.is_empty() || states.contains(&v.state))
        .filter(|(_, v)| duration < 0 || now - v.start_ms > duration)
        // Only the transactional ids the principal may DESCRIBE (unlogged, as in Kafka).
        .filter(|(id, _)| {
            authz::allowed_quietly(
                b,
                ctx,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                id,
            )
        })
        .map(|(id, v)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_producer_id(ProducerId(v.producer_id))
                .with_transaction_state(sb(v.state.name()))
        })
        .collect();
    resp.with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
