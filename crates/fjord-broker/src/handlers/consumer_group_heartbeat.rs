//! ConsumerGroupHeartbeat v0-1 (KIP-848): join, heartbeat, reconcile and leave in one API.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{sb, Ctx};
use crate::broker::Broker;
use fjord_group::consumer::HeartbeatRequest;
use fjord_security::acl::AclOperation;

pub async fn handle(
    b: &Broker,
    ctx: &Ctx,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    if !crate::authz::group(b, ctx, AclOperation::Read, &r.group_id.0) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(fjord_protocol::error::ErrorCode::GroupAuthorizationFailed.code());
    }
    let req = HeartbeatRequest {
        group_id: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.map(|s| s.to_string()),
        rack_id: r.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed_topic_names: r
            .subscribed_topic_names
            .map(|v| v.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: r.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: r.server_assignor.map(|s| s.to_string()),
        owned: r.topic_partitions.map(|tps| {
            let mut m: BTreeMap<uuid::Uuid, BTreeSet<i32>> = BTreeMap::new();
            for tp in tps {
                m.entry(tp.topic_id).or_default().extend(tp.partitions);
            }
            m
        }),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
    };
    if crate::groups::not_coordinator(b, &req.group_id) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(fjord_protocol::error::ErrorCode::NotCoordinator.code());
    }
    let group_id = req.group_id.clone();
    let ran = b
        .groups
        .run(b, &group_id, |c, topics, now| {
            c.consumer_heartbeat(req, topics, now)
        })
        .await;
    let (mut res, written) = match ran {
        Ok(ran) => ran,
        Err(e) => return ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()),
    };
    // The epoch and assignment this answer gives must survive a coordinator move.
    if let (0, Err(e)) = (res.error.code(), written.replicated().await) {
        res.error = e;
        res.message = Some(format!(
            "the group's state did not reach the in-sync replicas of its {} partition",
            crate::groups::OFFSETS_TOPIC
        ));
        res.assignment = None;
    }
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(res.error.code())
        .with_error_message(res.message.map(sb))
        .with_member_id((!res.member_id.is_empty()).then(|| sb(res.member_id)))
        .with_member_epoch(res.member_epoch)
        .with_heartbeat_interval_ms(res.heartbeat_interval_ms)
        .with_assignment(res.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(id)
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}
