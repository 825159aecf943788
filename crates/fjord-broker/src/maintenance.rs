//! Maintenance mode on the admin port (the decisions are the controller's,
//! `fjord_metadata::maintenance`): thin handlers that submit the request and answer JSON, the
//! cluster-wide progress of drains, and the maintenance metrics.
//!
//! - `POST /v1/brokers/{id}/cordon`, `POST /v1/brokers/{id}/uncordon`
//! - `POST /v1/brokers/{id}/maintenance[?drain_replicas=true][&throttle=BYTES_PER_S]`,
//!   `DELETE /v1/brokers/{id}/maintenance`
//! - `DELETE /v1/brokers/{id}`: remove (UnregisterBroker) a stopped, drained broker
//! - `GET /v1/maintenance[?node_id=N]`: for every broker in maintenance (or broker N) what it
//!   still holds, the bytes left to copy and whether it is safe to remove
//!   ([`fjord_metadata::maintenance::broker_status`] plus log sizes from every broker)
//! - `GET /v1/maintenance/replica-sizes?brokers=N[,M]`: this broker's log sizes of the
//!   partitions with a replica on those brokers (what `/v1/maintenance` gathers)
//!
//! A refusal answers `{"error", "error_code", "error_name"}` with Kafka's code: 404 for
//! BROKER_ID_NOT_REGISTERED, 409 for a refused state change, 503 when no controller answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use fjord_metadata::maintenance::{broker_status, MaintenanceRequest};
use fjord_metadata::{ClusterImage, ControllerReply, ControllerRequest, MetadataRecord, NodeId};
use fjord_protocol::error::ErrorCode;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};

use crate::accounting::http::{peer_admins, peer_get};
use crate::broker::{Broker, TopicError};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/maintenance", get(status))
        .route("/v1/maintenance/replica-sizes", get(replica_sizes))
        .route("/v1/brokers/:id/cordon", post(cordon))
        .route("/v1/brokers/:id/uncordon", post(uncordon))
        .route(
            "/v1/brokers/:id/maintenance",
            post(enable_maintenance).delete(disable_maintenance),
        )
        .route("/v1/brokers/:id", delete(remove))
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn bad_request(message: String) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({ "error": message, "error_code": ErrorCode::InvalidRequest.code(),
                "error_name": fjord_client::error_name(ErrorCode::InvalidRequest.code()) }),
    )
}

/// A controller refusal (or failure) with Kafka's code.
fn refused(e: TopicError) -> Response {
    let status = match e.code {
        ErrorCode::BrokerIdNotRegistered => StatusCode::NOT_FOUND,
        ErrorCode::NotController | ErrorCode::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UnknownServerError | ErrorCode::KafkaStorageError => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::CONFLICT,
    };
    let code = e.code.code();
    answer(
        status,
        json!({ "error": e.message, "error_code": code, "error_name": fjord_client::error_name(code) }),
    )
}

/// The query string's `key=value` pairs (the values used here need no percent-decoding).
fn params(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn submit(b: &Broker, req: ControllerRequest) -> Result<ControllerReply, Response> {
    b.submit(req).await.map_err(refused)
}

async fn cordon(State(b): State<Arc<Broker>>, Path(id): Path<NodeId>) -> Response {
    set_cordon(&b, id, true).await
}

async fn uncordon(State(b): State<Arc<Broker>>, Path(id): Path<NodeId>) -> Response {
    set_cordon(&b, id, false).await
}

async fn set_cordon(b: &Broker, node_id: NodeId, cordoned: bool) -> Response {
    match submit(b, ControllerRequest::Cordon { node_id, cordoned }).await {
        Ok(_) => answer(
            StatusCode::OK,
            json!({ "node_id": node_id, "cordoned": cordoned }),
        ),
        Err(r) => r,
    }
}

async fn enable_maintenance(
    State(b): State<Arc<Broker>>,
    Path(id): Path<NodeId>,
    uri: Uri,
) -> Response {
    let p = params(&uri);
    let drain_replicas = match p.get("drain_replicas").map(String::as_str) {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return bad_request(format!(
                "drain_replicas must be true or false, got {other:?}"
            ))
        }
    };
    let throttle_bytes_per_s = match p.get("throttle") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return bad_request(format!(
                    "throttle must be a rate in bytes per second (a positive integer), got {v:?}"
                ))
            }
        },
    };
    let req = ControllerRequest::Maintenance {
        node_id: id,
        enable: Some(MaintenanceRequest {
            drain_replicas,
            throttle_bytes_per_s,
        }),
    };
    maintenance_answer(&b, id, req).await
}

async fn disable_maintenance(State(b): State<Arc<Broker>>, Path(id): Path<NodeId>) -> Response {
    let req = ControllerRequest::Maintenance {
        node_id: id,
        enable: None,
    };
    maintenance_answer(&b, id, req).await
}

async fn maintenance_answer(b: &Broker, node_id: NodeId, req: ControllerRequest) -> Response {
    match submit(b, req).await {
        Ok(ControllerReply::MaintenanceChanged { outcome }) => answer(
            StatusCode::OK,
            json!({ "node_id": node_id, "outcome": outcome }),
        ),
        Ok(other) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": format!("unexpected controller reply {other:?}") }),
        ),
        Err(r) => r,
    }
}

async fn remove(State(b): State<Arc<Broker>>, Path(id): Path<NodeId>) -> Response {
    match submit(&b, ControllerRequest::UnregisterBroker { node_id: id }).await {
        Ok(_) => answer(StatusCode::OK, json!({ "node_id": id, "removed": true })),
        Err(r) => r,
    }
}

/// `brokers=4,5`: node ids.
fn broker_list(p: &BTreeMap<String, String>) -> Result<BTreeSet<NodeId>, String> {
    p.get("brokers")
        .map_or("", String::as_str)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("brokers must be node ids separated by commas, got {s:?}"))
        })
        .collect()
}

/// This broker's log sizes of the partitions it hosts that have a replica on `brokers`.
fn local_sizes(b: &Broker, brokers: &BTreeSet<NodeId>) -> Vec<Value> {
    let hosted: Vec<(String, u32)> = b.with_image(|image| {
        image
            .all_partitions()
            .filter(|(_, _, s)| s.replicas.iter().any(|r| brokers.contains(r)))
            .filter_map(|(t, p, _)| Some((image.topic_by_id(&t)?.name.clone(), p)))
            .collect()
    });
    hosted
        .into_iter()
        .filter_map(|(topic, p)| {
            let size = b
                .partition(&topic, p as i32)?
                .with_log(|l| l.size_bytes())?;
            Some(json!({ "topic": topic, "partition": p, "bytes": size }))
        })
        .collect()
}

async fn replica_sizes(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let brokers = match broker_list(&params(&uri)) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let me = b.clone();
    // Reading log sizes touches every hosted log: off the async workers.
    match tokio::task::spawn_blocking(move || local_sizes(&me, &brokers)).await {
        Ok(sizes) => answer(
            StatusCode::OK,
            json!({ "node_id": b.node_id(), "sizes": sizes }),
        ),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// Log sizes by (topic, partition, broker), from every registered broker; brokers that did
/// not answer are listed in the errors.
pub(crate) async fn gather_sizes(
    b: &Arc<Broker>,
    brokers: &BTreeSet<NodeId>,
) -> (BTreeMap<(String, u32, NodeId), u64>, Vec<Value>) {
    let list = brokers
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let path = format!("/v1/maintenance/replica-sizes?brokers={list}");
    let peers = peer_admins(b);
    let mut asks = tokio::task::JoinSet::new();
    for (node_id, admin) in peers {
        let path = path.clone();
        asks.spawn(async move {
            let r = match admin {
                None => Err("no admin address registered".to_string()),
                Some((host, port)) => peer_get(&host, port, &path).await,
            };
            (node_id, r.map(|v| v["sizes"].clone()))
        });
    }
    let me = b.clone();
    let wanted = brokers.clone();
    let mine = tokio::task::spawn_blocking(move || local_sizes(&me, &wanted))
        .await
        .unwrap_or_default();
    let mut answers = vec![(b.node_id(), Ok(Value::Array(mine)))];
    while let Some(done) = asks.join_next().await {
        if let Ok(a) = done {
            answers.push(a);
        }
    }
    let mut sizes = BTreeMap::new();
    let mut errors = Vec::new();
    for (node_id, r) in answers {
        match r {
            Ok(list) => {
                for s in list.as_array().into_iter().flatten() {
                    if let (Some(t), Some(p), Some(bytes)) = (
                        s["topic"].as_str(),
                        s["partition"].as_u64(),
                        s["bytes"].as_u64(),
                    ) {
                        sizes.insert((t.to_string(), p as u32, node_id), bytes);
                    }
                }
            }
            Err(e) => errors.push(json!({ "node_id": node_id, "error": e })),
        }
    }
    errors.sort_by_key(|v| v["node_id"].as_i64());
    (sizes, errors)
}

/// Bytes still to copy off `node_id`: per partition with a replica on it, the leader's log
/// size (its own if the leader did not answer) less what the slowest replica being added
/// already has. `None` when no size is known for some partition.
fn bytes_left(
    image: &ClusterImage,
    node_id: NodeId,
    sizes: &BTreeMap<(String, u32, NodeId), u64>,
) -> Option<u64> {
    let mut left = 0u64;
    for (t, p, s) in image.all_partitions() {
        if !s.replicas.contains(&node_id) {
            continue;
        }
        let name = &image.topic_by_id(&t)?.name;
        let size = |b: NodeId| sizes.get(&(name.clone(), p, b)).copied();
        let total = size(s.leader).or_else(|| size(node_id))?;
        let copied = s
            .adding_replicas
            .iter()
            .map(|b| size(*b).unwrap_or(0))
            .min()
            .unwrap_or(0);
        left += total.saturating_sub(copied);
    }
    Some(left)
}

async fn status(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let node = match params(&uri).get("node_id").map(|v| v.parse::<NodeId>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad_request("node_id must be a broker id".into()),
    };
    let me = b.clone();
    let statuses = match tokio::task::spawn_blocking(move || {
        me.with_image(|i| broker_status(i, node))
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            )
        }
    };
    if let (Some(n), true) = (node, statuses.is_empty()) {
        let code = ErrorCode::BrokerIdNotRegistered.code();
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("broker {n} is not registered"), "error_code": code,
                    "error_name": fjord_client::error_name(code) }),
        );
    }
    let ids: BTreeSet<NodeId> = statuses.iter().map(|s| s.node_id).collect();
    let (sizes, errors) = if ids.is_empty() {
        Default::default()
    } else {
        gather_sizes(&b, &ids).await
    };
    let me = b.clone();
    let brokers: Vec<Value> = tokio::task::spawn_blocking(move || {
        me.with_image(|i| {
            statuses
                .into_iter()
                .map(|s| {
                    let bytes = bytes_left(i, s.node_id, &sizes);
                    let mut v = serde_json::to_value(&s).unwrap_or_default();
                    v["bytes_left"] = json!(bytes);
                    v
                })
                .collect()
        })
    })
    .await
    .unwrap_or_default();
    answer(
        StatusCode::OK,
        json!({ "answered_by": b.node_id(), "brokers": brokers, "errors": errors }),
    )
}

/// The maintenance metrics (registered with the broker's registry).
pub struct MaintenanceMetrics {
    /// 1 while a broker is in maintenance, by `node_id`, in this broker's view.
    pub in_maintenance: IntGaugeVec,
    /// 1 while a broker's drain runs.
    pub draining: IntGaugeVec,
    /// Replicas still on a broker in maintenance.
    pub replicas: IntGaugeVec,
    /// Partitions a broker in maintenance still leads.
    pub leaders: IntGaugeVec,
    /// Maintenance changes seen in the metadata log, by `change`: `cordon`, `uncordon`,
    /// `enter`, `update`, `drain_completed`, `leave`, `unregister`.
    pub changes: IntCounterVec,
}

impl MaintenanceMetrics {
    pub fn new(registry: &Registry) -> MaintenanceMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["node_id"]).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let m = MaintenanceMetrics {
            in_maintenance: gauge(
                "broker_maintenance",
                "1 while the broker is in maintenance mode (cordoned, leads nothing another replica can lead)",
            ),
            draining: gauge(
                "broker_maintenance_draining",
                "1 while the controller moves every replica off the broker",
            ),
            replicas: gauge(
                "broker_maintenance_replicas",
                "Replicas still on a broker in maintenance",
            ),
            leaders: gauge(
                "broker_maintenance_leaders",
                "Partitions a broker in maintenance still leads",
            ),
            changes: IntCounterVec::new(
                Opts::new(
                    "broker_maintenance_changes_total",
                    "Cordon, maintenance and removal changes seen in the metadata log, by change",
                ),
                &["change"],
            )
            .expect("metric"),
        };
        registry
            .register(Box::new(m.changes.clone()))
            .expect("register");
        m
    }

    /// Set the gauges from the image (at scrape time: a few brokers, indexed lookups).
    pub fn update(&self, image: &ClusterImage) {
        for g in [
            &self.in_maintenance,
            &self.draining,
            &self.replicas,
            &self.leaders,
        ] {
            g.reset();
        }
        for b in image.brokers().filter(|b| b.in_maintenance()) {
            let id = b.node_id.to_string();
            let replicas = image.load().get(&b.node_id).map_or(0, |l| l.replicas);
            self.in_maintenance.with_label_values(&[&id]).set(1);
            self.draining
                .with_label_values(&[&id])
                .set(i64::from(b.draining()));
            self.replicas
                .with_label_values(&[&id])
                .set(i64::from(replicas));
            self.leaders
                .with_label_values(&[&id])
                .set(image.partitions_led_by(b.node_id).count() as i64);
        }
    }
}

/// Log and count a maintenance change as this broker applies it (`before`: the image before
/// the record).
pub fn observe(metrics: &MaintenanceMetrics, before: &ClusterImage, record: &MetadataRecord) {
    let change = match record {
        MetadataRecord::CordonBroker { node_id } => {
            tracing::info!(
                node_id,
                "broker {node_id} cordoned: no new replicas go to it"
            );
            "cordon"
        }
        MetadataRecord::UncordonBroker { node_id } => {
            tracing::info!(node_id, "broker {node_id} uncordoned");
            "uncordon"
        }
        MetadataRecord::BrokerMaintenance { node_id, state } => {
            let old = before.broker(*node_id).and_then(|b| b.maintenance.clone());
            match (old, state) {
                (None, Some(m)) => {
                    tracing::info!(node_id, drain_replicas = m.drain_replicas,
                        throttle_bytes_per_s = ?m.throttle_bytes_per_s,
                        "broker {node_id} entered maintenance");
                    "enter"
                }
                (Some(old), Some(m)) if m.drain_completed && !old.drain_completed => {
                    tracing::info!(node_id, "drain of broker {node_id} completed");
                    "drain_completed"
                }
                (Some(_), Some(m)) => {
                    tracing::info!(node_id, drain_replicas = m.drain_replicas,
                        throttle_bytes_per_s = ?m.throttle_bytes_per_s,
                        "broker {node_id}: maintenance settings changed");
                    "update"
                }
                (_, None) => {
                    tracing::info!(node_id, "broker {node_id} left maintenance");
                    "leave"
                }
            }
        }
        MetadataRecord::UnregisterBroker { node_id, .. } => {
            tracing::info!(node_id, "broker {node_id} unregistered");
            "unregister"
        }
        _ => return,
    };
    metrics.changes.with_label_values(&[change]).inc();
}
