//! DescribeCluster (v0-2): this node, as broker and controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, Ctx};
use crate::broker::Broker;

pub fn handle(b: &Arc<Broker>, _ctx: &Ctx, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = b.advertised();
    let node = BrokerId(b.node_id());
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(sb(b.cluster_id.clone()))
        .with_controller_id(node)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(sb(host))
            .with_port(port as i32)
            .with_rack(b.config.rack.clone().map(sb))])
        .with_cluster_authorized_operations(i32::MIN)
}
