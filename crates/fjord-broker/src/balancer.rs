//! The continuous balancer on the broker side (its decisions are the active controller's,
//! `fjord_metadata::balancer::continuous`): what it needs from the brokers, what it shows.
//!
//! - [`load_source`]: the replica sizes (every broker's log sizes, as `/v1/maintenance` gathers
//!   them) and per-partition traffic (every broker's usage by topic over the last
//!   [`RATE_WINDOW_S`] seconds, split evenly over the partitions of the topic it leads, since
//!   usage is counted per topic) the controller's balancer plans with;
//! - `GET /v1/balancer`: the active controller's balancer status (mode, state, rounds, moves
//!   in progress, fenced brokers, the last round, the imbalance);
//! - [`BalancerMetrics`]: `fjord_balancer_*`, set at scrape time on the node that is the active
//!   controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fjord_metadata::balancer::continuous::{BalancerLoads, BalancerStatus};
use fjord_metadata::balancer::PartitionRate;
use fjord_metadata::quorum::{BalancerLoadSource, ControllerService};
use fjord_metadata::NodeId;
use fjord_protocol::clock::now_ms;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};

use crate::accounting::http::{admin_of, peer_get};
use crate::broker::Broker;
use crate::control::ControlPlane;

/// The traffic window the balancer's rates are averaged over.
pub const RATE_WINDOW_S: i64 = 300;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/v1/balancer", get(status))
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /v1/balancer`: asked of the active controller (a single node has nothing to balance).
async fn status(State(b): State<Arc<Broker>>) -> Response {
    match &b.control {
        ControlPlane::Local(_) => answer(
            StatusCode::OK,
            json!({ "active_controller": b.node_id(), "balancer": null,
                    "note": "a single node has nothing to balance" }),
        ),
        ControlPlane::Quorum { client, .. } => {
            match client.status(std::time::Duration::from_secs(5)).await {
                Ok(s) => answer(
                    StatusCode::OK,
                    json!({ "active_controller": s.active_controller, "balancer": s.balancer }),
                ),
                Err(e) => answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": e.to_string() }),
                ),
            }
        }
    }
}

/// Where the controller's balancer learns sizes and rates: this broker asks every broker.
pub fn load_source(broker: Weak<Broker>) -> BalancerLoadSource {
    Arc::new(move || {
        let broker = broker.clone();
        Box::pin(async move {
            let b = broker.upgrade()?;
            Some(gather_loads(&b).await)
        })
    })
}

async fn gather_loads(b: &Arc<Broker>) -> BalancerLoads {
    let all: BTreeSet<NodeId> = b.with_image(|i| i.brokers().map(|x| x.node_id).collect());
    let (by_replica, _) = crate::maintenance::gather_sizes(b, &all).await;
    let mut sizes: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for ((t, p, _), bytes) in by_replica {
        let e = sizes.entry((t, p)).or_insert(0);
        *e = (*e).max(bytes);
    }
    // Usage by topic from every broker (this broker's admin endpoint merges the cluster).
    let me = b.with_image(|i| i.broker(b.node_id()).and_then(admin_of));
    let usage = match me {
        Some((host, port)) => peer_get(
            &host,
            port,
            &format!("/v1/usage?by=topic&since={RATE_WINDOW_S}s"),
        )
        .await
        .ok(),
        None => None,
    };
    let rates = usage.map(|u| rates_from_usage(b, &u)).unwrap_or_default();
    BalancerLoads { sizes, rates }
}

/// Per-partition rates from `/v1/usage` (per broker, per topic bytes in and out over its
/// window): each broker's topic bytes split evenly over the partitions of the topic it leads.
/// A partition whose leader did not answer gets no rate (the network goal then stays off).
fn rates_from_usage(b: &Broker, usage: &Value) -> BTreeMap<(String, u32), PartitionRate> {
    let now = now_ms();
    let mut per_broker: BTreeMap<(NodeId, String), (u64, u64)> = BTreeMap::new();
    let mut answered: BTreeSet<NodeId> = BTreeSet::new();
    for broker in usage["brokers"].as_array().into_iter().flatten() {
        let Some(node) = broker["node_id"].as_i64() else {
            continue;
        };
        let node = node as NodeId;
        answered.insert(node);
        let from = broker["covered_from_ms"]
            .as_i64()
            .unwrap_or(now)
            .max(now - RATE_WINDOW_S * 1000);
        let secs = ((now - from) / 1000).max(1) as u64;
        for row in broker["rows"].as_array().into_iter().flatten() {
            let (Some(name), Some(i), Some(o)) = (
                row["name"].as_str(),
                row["bytes_in"].as_u64(),
                row["bytes_out"].as_u64(),
            ) else {
                continue;
            };
            per_broker.insert((node, name.to_string()), (i / secs, o / secs));
        }
    }
    b.with_image(|image| {
        let mut led: BTreeMap<(NodeId, String), u64> = BTreeMap::new();
        let mut leaders: Vec<(String, u32, NodeId)> = Vec::new();
        for (t, p, s) in image.all_partitions() {
            let Some(topic) = image.topic_by_id(&t) else {
                continue;
            };
            *led.entry((s.leader, topic.name.clone())).or_default() += 1;
            leaders.push((topic.name.clone(), p, s.leader));
        }
        leaders
            .into_iter()
            .filter(|(_, _, l)| answered.contains(l))
            .map(|(topic, p, l)| {
                let n = led[&(l, topic.clone())].max(1);
                let (i, o) = per_broker
                    .get(&(l, topic.clone()))
                    .copied()
                    .unwrap_or((0, 0));
                let rate = PartitionRate {
                    bytes_in_per_s: i / n,
                    bytes_out_per_s: o / n,
                };
                ((topic, p), rate)
            })
            .collect()
    })
}

/// The balancer's metrics (registered with the broker's registry).
pub struct BalancerMetrics {
    /// Rounds and data moves the balancer started on this node (while it was the active
    /// controller).
    pub rounds: IntCounter,
    pub moves: IntCounter,
    /// 1 on the active controller while `balancer.mode=continuous`.
    pub active: IntGauge,
    /// Partitions the balancer is moving now (active controller only).
    pub moves_in_progress: IntGauge,
    /// The imbalance at the last check, by `quantity` (replicas, leaders, disk_bytes,
    /// network_bytes_per_s) and `bound` (min, max over eligible brokers).
    pub imbalance: IntGaugeVec,
    /// Partitions below the rack spread the racks allow, at the last check.
    pub rack_violations: IntGauge,
}

impl BalancerMetrics {
    pub fn new(registry: &Registry) -> BalancerMetrics {
        let m = BalancerMetrics {
            rounds: IntCounter::new(
                "balancer_rounds_total",
                "Rounds the continuous balancer started on this node (as the active controller)",
            )
            .expect("metric"),
            moves: IntCounter::new(
                "balancer_moves_total",
                "Partitions the continuous balancer started moving (new replicas) on this node",
            )
            .expect("metric"),
            active: IntGauge::new(
                "balancer_active",
                "1 on the active controller while balancer.mode=continuous",
            )
            .expect("metric"),
            moves_in_progress: IntGauge::new(
                "balancer_moves_in_progress",
                "Partitions the continuous balancer is moving now (active controller only)",
            )
            .expect("metric"),
            imbalance: IntGaugeVec::new(
                Opts::new(
                    "balancer_imbalance",
                    "Spread over eligible brokers at the balancer's last check, by quantity and bound",
                ),
                &["quantity", "bound"],
            )
            .expect("metric"),
            rack_violations: IntGauge::new(
                "balancer_rack_violations",
                "Partitions below the rack spread the racks allow, at the balancer's last check",
            )
            .expect("metric"),
        };
        registry
            .register(Box::new(m.rounds.clone()))
            .expect("register");
        registry
            .register(Box::new(m.moves.clone()))
            .expect("register");
        registry
            .register(Box::new(m.active.clone()))
            .expect("register");
        registry
            .register(Box::new(m.moves_in_progress.clone()))
            .expect("register");
        registry
            .register(Box::new(m.imbalance.clone()))
            .expect("register");
        registry
            .register(Box::new(m.rack_violations.clone()))
            .expect("register");
        m
    }

    /// Set from this node's controller service, if it has one (at scrape time).
    pub fn update(&self, service: Option<&ControllerService>) {
        let Some(svc) = service else {
            return;
        };
        // The service's totals only grow: the counters follow them.
        let (rounds, moves) = svc.balancer_totals();
        self.rounds.inc_by(rounds.saturating_sub(self.rounds.get()));
        self.moves.inc_by(moves.saturating_sub(self.moves.get()));
        let status: Option<BalancerStatus> = svc.balancer_status();
        let on = status.as_ref().is_some_and(|s| s.state != "off");
        self.active.set(i64::from(on));
        self.moves_in_progress
            .set(status.as_ref().map_or(0, |s| s.moves_in_progress as i64));
        self.imbalance.reset();
        let Some(i) = status.and_then(|s| s.imbalance) else {
            self.rack_violations.set(0);
            return;
        };
        let set = |q: &str, min: Option<u64>, max: Option<u64>| {
            for (bound, v) in [("min", min), ("max", max)] {
                if let Some(v) = v {
                    self.imbalance
                        .with_label_values(&[q, bound])
                        .set(v.min(i64::MAX as u64) as i64);
                }
            }
        };
        set("replicas", Some(i.replicas_min), Some(i.replicas_max));
        set("leaders", Some(i.leaders_min), Some(i.leaders_max));
        set("disk_bytes", i.disk_bytes_min, i.disk_bytes_max);
        set(
            "network_bytes_per_s",
            i.network_bytes_per_s_min,
            i.network_bytes_per_s_max,
        );
        self.rack_violations.set(i.rack_violations as i64);
    }
}

/// Set the balancer metrics of `b` (its own controller service, if any).
pub fn update_metrics(b: &Broker) {
    if let ControlPlane::Quorum {
        service: Some(svc), ..
    } = &b.control
    {
        b.metrics.balancer.update(Some(svc));
    }
}
