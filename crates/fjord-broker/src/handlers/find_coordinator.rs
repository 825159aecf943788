//! FindCoordinator v0-6: this broker coordinates every group (single node). v4+ batches keys.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;

/// key_type 0 = group; 1 = transaction (not supported yet).
fn answer(b: &Broker, key_type: i8) -> (ErrorCode, Option<&'static str>, i32, String, i32) {
    if key_type != 0 {
        return (
            ErrorCode::CoordinatorNotAvailable,
            Some("transactions are not supported yet"),
            -1,
            String::new(),
            -1,
        );
    }
    let (host, port) = b.advertised();
    (ErrorCode::None, None, b.node_id(), host, port as i32)
}

pub fn handle(b: &Broker, ctx: &Ctx, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let (e, msg, node, host, port) = answer(b, r.key_type);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(sb(host))
                    .with_port(port)
                    .with_error_code(e.code())
                    .with_error_message(msg.map(sb))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (e, msg, node, host, port) = answer(b, if ctx.version >= 1 { r.key_type } else { 0 });
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
