//! DescribeCluster (v0-2): the live brokers and the active controller, from the cluster image.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, Ctx};
use crate::broker::Broker;

pub fn handle(b: &Arc<Broker>, _ctx: &Ctx, req: DescribeClusterRequest) -> DescribeClusterResponse {
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
        .with_cluster_authorized_operations(i32::MIN)
}
