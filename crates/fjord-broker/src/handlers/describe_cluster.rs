//! DescribeCluster (v0-2): the live brokers and the active controller, from the cluster image.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, req: DescribeClusterRequest) -> DescribeClusterResponse {
    // KIP-430: the cluster operations, for a principal that may DESCRIBE the cluster.
    let ops = if !req.include_cluster_authorized_operations {
        i32::MIN
    } else if authz::allowed_quietly(
        b,
        ctx,
        AclOperation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        authz::authorized_operations(b, ctx, ResourceType::Cluster, CLUSTER_NAME)
    } else {
        0
    };
    let brokers = b
        .live_brokers()
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(sb(host))
                .with_port(port as i32)
                .with_rack(rack.map(sb))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(sb(b.cluster_id.clone()))
        .with_controller_id(BrokerId(b.controller_id()))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(ops)
}
