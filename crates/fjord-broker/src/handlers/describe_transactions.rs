//! DescribeTransactions (v0): each id's state as its coordinator holds it (NOT_COORDINATOR
//! from another broker, TRANSACTIONAL_ID_NOT_FOUND for an id it does not know).

use std::collections::BTreeMap;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::AclOperation;

pub fn handle(
    b: &Broker,
    ctx: &Ctx,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let state = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(sb(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !authz::transactional_id(b, ctx, AclOperation::Describe, id) {
                return state.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
            }
            match b.txns.describe(b, id) {
                Err(e) => state.with_error_code(e.code()),
                Ok(None) => state.with_error_code(ErrorCode::TransactionalIdNotFound.code()),
                Ok(Some(v)) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (t, p) in &v.partitions {
                        topics.entry(t).or_default().push(*p);
                    }
                    state
                        .with_transaction_state(sb(v.state.name()))
                        .with_transaction_timeout_ms(v.timeout_ms)
                        .with_transaction_start_time_ms(v.start_ms)
                        .with_producer_id(ProducerId(v.producer_id))
                        .with_producer_epoch(v.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(t, ps)| {
                                    TopicData::default()
                                        .with_topic(TopicName(sb(t)))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
