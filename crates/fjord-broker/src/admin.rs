//! The admin HTTP endpoint: `/metrics` (Prometheus) and `/health`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(broker)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    // Log sizes are read at scrape time rather than updated on every append.
    let b = broker.clone();
    let text = tokio::task::spawn_blocking(move || {
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
