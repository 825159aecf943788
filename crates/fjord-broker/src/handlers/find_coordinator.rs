//! FindCoordinator v0-6: a group's coordinator is the leader of its `__consumer_offsets`
//! partition, a transactional id's the leader of its `__transaction_state` partition (both
//! created on first use, as Kafka does). v4+ batches keys.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

type Answer = (ErrorCode, Option<String>, i32, String, i32);

/// key_type 0 = group (the leader of its `__consumer_offsets` partition); 1 = transaction
/// (the leader of its `__transaction_state` partition). Both topics are created on first use.
async fn answer(b: &Broker, ctx: &Ctx, key_type: i8, key: &str) -> Answer {
    // DESCRIBE on the group or transactional id.
    let denied = match key_type {
        0 => (!authz::group(b, ctx, AclOperation::Describe, key))
            .then_some(ErrorCode::GroupAuthorizationFailed),
        1 => (!authz::transactional_id(b, ctx, AclOperation::Describe, key))
            .then_some(ErrorCode::TransactionalIdAuthorizationFailed),
        _ => None,
    };
    if let Some(code) = denied {
        return (code, None, -1, String::new(), -1);
    }
    let unavailable = |why: String| {
        (
            ErrorCode::CoordinatorNotAvailable,
            Some(why),
            -1,
            String::new(),
            -1,
        )
    };
    let (topic, name, p) = match key_type {
        0 => match crate::groups::ensure_offsets_topic(b).await {
            Ok(t) => {
                let p = fjord_group::offsets_partition(key, t.partitions.len() as i32);
                (t, crate::groups::OFFSETS_TOPIC, p)
            }
            Err(e) => return unavailable(e),
        },
        1 => match crate::txn::log::ensure_txn_topic(b).await {
            Ok(t) => {
                let p = fjord_txn::txn_partition(key, t.partitions.len() as i32);
                (t, crate::txn::TXN_TOPIC, p)
            }
            Err(e) => return unavailable(e),
        },
        _ => {
            return (
                ErrorCode::InvalidRequest,
                Some(format!("coordinator type {key_type} is not supported")),
                -1,
                String::new(),
                -1,
            )
        }
    };
    let leader = topic.partitions[p as usize].state().leader;
    match b.broker_address(leader) {
        Some((host, port)) => (ErrorCode::None, None, leader, host, port as i32),
        None => unavailable(format!(
            "the coordinator's {name}-{p} partition has no live leader"
        )),
    }
}

pub async fn handle(b: &Broker, ctx: &Ctx, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let mut coordinators = Vec::with_capacity(r.coordinator_keys.len());
        for k in &r.coordinator_keys {
            let (e, msg, node, host, port) = answer(b, ctx, r.key_type, k).await;
            coordinators.push(
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(sb(host))
                    .with_port(port)
                    .with_error_code(e.code())
                    .with_error_message(msg.map(sb)),
            );
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let key_type = if ctx.version >= 1 { r.key_type } else { 0 };
    let (e, msg, node, host, port) = answer(b, ctx, key_type, &r.key).await;
    let resp = FindCoordinatorResponse::default()
        .with_error_code(e.code())
        .with_node_id(BrokerId(node))
        .with_host(sb(host))
        .with_port(port);
    if ctx.version >= 1 {
        resp.with_error_message(msg.map(sb))
    } else {
        resp
    }
}
