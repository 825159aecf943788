//! The admin HTTP endpoint: `/metrics` (Prometheus), `/health`, and `/v1/cluster` (the cluster
//! as the active controller sees it: voters, brokers with racks, epochs, fencing and metadata
//! offsets, plus partition health — under-replicated, offline, leaders and replicas per broker
//! — from the answering broker's image; what `fjord cluster status` prints), and
//! `/v1/traffic` and `/v1/usage` ([`crate::accounting::http`]: traffic by client rack, usage per
//! topic and client id, for the whole cluster).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;

/// The admin endpoint of a controller-only node: `/health`, `/metrics` (controller gauges)
/// and `/v1/cluster`.
pub fn controller_router(
    service: Arc<fjord_metadata::quorum::ControllerService>,
    client: fjord_metadata::quorum::ControllerClient,
) -> Router {
    type St = (
        Arc<fjord_metadata::quorum::ControllerService>,
        fjord_metadata::quorum::ControllerClient,
    );
    async fn health(State((svc, _)): State<St>) -> impl IntoResponse {
        let body = serde_json::json!({
            "status": "ok",
            "node_id": svc.node_id(),
            "roles": "controller",
            "active_controller": svc.active_controller(),
        });
        ([(CONTENT_TYPE, "application/json")], body.to_string())
    }
    async fn metrics(State((svc, _)): State<St>) -> impl IntoResponse {
        let text = format!(
            "# HELP fjord_controller_active 1 while this node is the active controller\n# TYPE fjord_controller_active gauge\nfjord_controller_active {}\n# HELP fjord_metadata_applied_offset Metadata records applied by this node\n# TYPE fjord_metadata_applied_offset gauge\nfjord_metadata_applied_offset {}\n",
            svc.is_active() as i64,
            svc.feed().offset()
        );
        ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
    }
    async fn cluster(State((_, client)): State<St>) -> impl IntoResponse {
        cluster_answer(
            client
                .status(std::time::Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string()),
            None,
            None,
        )
    }
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/v1/cluster", get(cluster))
        .with_state((service, client))
}

fn cluster_answer(
    status: Result<fjord_metadata::quorum::QuorumStatus, String>,
    broker: Option<&Broker>,
    partitions: Option<fjord_metadata::PartitionHealth>,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    match status {
        Ok(status) => {
            let body = serde_json::json!({
                "cluster_id": broker.map(|b| b.cluster_id.clone()),
                "answered_by": broker.map(|b| b.node_id()),
                "status": status,
                "partitions": partitions,
            });
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": e }).to_string(),
        ),
    }
}

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/v1/cluster", get(cluster))
        .merge(crate::accounting::http::routes())
        .merge(crate::maintenance::routes())
        .merge(crate::balancer::routes())
        .merge(crate::group_lag::routes())
        .merge(crate::skew::http::routes())
        .merge(crate::topic_activity::routes())
        .with_state(broker)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    // Log sizes are read at scrape time rather than updated on every append.
    let b = broker.clone();
    let text = tokio::task::spawn_blocking(move || {
        if let crate::control::ControlPlane::Quorum {
            service: Some(svc), ..
        } = &b.control
        {
            b.metrics.controller_active.set(svc.is_active() as i64);
        } else {
            b.metrics.controller_active.set(1);
        }
        b.with_image(|i| b.metrics.maintenance.update(i));
        crate::topic_activity::refresh_gauges(&b);
        crate::balancer::update_metrics(&b);
        b.disk.update(&b.io);
        b.metrics.log_size.reset();
        for t in b.topics() {
            let size: u64 = t
                .partitions
                .iter()
                .filter_map(|p| p.with_log(|l| l.size_bytes()))
                .sum();
            b.metrics
                .log_size
                .with_label_values(&[&t.name])
                .set(size as i64);
        }
        b.metrics.render()
    })
    .await
    .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn health(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let body = serde_json::json!({
        "status": "ok",
        "node_id": broker.node_id(),
        "cluster_id": broker.cluster_id,
        "topics": broker.topics().len(),
    });
    ([(CONTENT_TYPE, "application/json")], body.to_string())
}

async fn cluster(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    use fjord_metadata::quorum::{BrokerStatus, QuorumStatus, VoterStatus};
    let status = match &broker.control {
        crate::control::ControlPlane::Local(local) => {
            let me = broker.node_id();
            let l = local.lock();
            let offset = l.controller.next_offset();
            let brokers = l
                .controller
                .image()
                .brokers()
                .map(|b| BrokerStatus {
                    node_id: b.node_id,
                    rack: b.rack.clone(),
                    broker_epoch: b.broker_epoch,
                    incarnation_id: b.incarnation_id,
                    fenced: b.fenced,
                    cordoned: b.cordoned,
                    maintenance: b.maintenance.clone(),
                    // A single node registers before its listener is bound: it is always
                    // this process, so show where it listens now.
                    endpoints: if b.endpoints.is_empty() && b.node_id == me {
                        crate::cluster::endpoints(&broker)
                    } else {
                        b.endpoints.clone()
                    },
                    metadata_offset: Some(broker.applied_offset() - 1),
                    ms_since_heartbeat: None,
                })
                .collect();
            Ok(QuorumStatus {
                active_controller: Some(me),
                metadata_offset: offset,
                voters: vec![VoterStatus {
                    node_id: me,
                    addr: "(single node: its own controller)".into(),
                    is_active: true,
                    applied_log_index: None,
                }],
                brokers,
                // A single node has nothing to balance.
                balancer: None,
            })
        }
        crate::control::ControlPlane::Quorum { client, .. } => client
            .status(std::time::Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string()),
    };
    // Partition health from this broker's metadata image (a controller-only node keeps none):
    // a scan of every partition, so off the async workers.
    let b = broker.clone();
    let partitions = tokio::task::spawn_blocking(move || b.with_image(|i| i.partition_health()))
        .await
        .ok();
    cluster_answer(status, Some(&broker), partitions)
}
