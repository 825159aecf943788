//! `GET /v1/skew?topic=T[&keys=N][&scope=local]` on the admin port.
//!
//! With `topic`, the answering broker gathers every leader's partitions of the topic (their
//! rates over `skew.window.ms` and top keys) and answers the topic's view: partitions hottest
//! first with their ratio to the topic's mean per partition and share of its bytes. With
//! `scope=local` it answers only for itself, as `{"brokers":[...]}` (what peers and the
//! periodic check ask); without `topic` a local answer covers every topic with traffic here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{topic_rates, DEFAULT_TOP_KEYS};
use crate::accounting::http::{answer, bad_request, gather, local_scope, off_workers, params};
use crate::broker::Broker;

/// Most top keys a caller may ask for per partition (the sketch has at most 256 counters).
const MAX_TOP_KEYS: usize = 64;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/v1/skew", get(skew))
}

async fn skew(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let p = params(&uri);
    let local = match local_scope(&p) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let keys = match p.get("keys").map(|k| k.parse::<usize>()) {
        None => DEFAULT_TOP_KEYS,
        Some(Ok(n)) if n <= MAX_TOP_KEYS => n,
        Some(_) => return bad_request(format!("keys must be 0 to {MAX_TOP_KEYS}")),
    };
    let topic = p.get("topic").cloned().filter(|t| !t.is_empty());
    if !local && topic.is_none() {
        return bad_request("topic is required (or scope=local)".into());
    }
    if let Some(t) = &topic {
        if b.topic(t).is_none() {
            return answer(
                StatusCode::NOT_FOUND,
                json!({ "error": format!("unknown topic {t:?}") }),
            );
        }
    }
    let me = {
        let (b, topic) = (b.clone(), topic.clone());
        match off_workers(move || b.skew.local_report(&b, topic.as_deref(), keys)).await {
            Ok(v) => v,
            Err(e) => return e,
        }
    };
    let mut brokers = vec![me];
    let mut errors = Vec::new();
    if local {
        return answer(StatusCode::OK, json!({ "brokers": brokers, "errors": [] }));
    }
    let topic = topic.expect("checked above");
    gather(
        &b,
        &format!("/v1/skew?scope=local&topic={topic}&keys={keys}"),
        &mut brokers,
        &mut errors,
    )
    .await;
    answer(StatusCode::OK, topic_view(&b, &topic, &brokers, &errors))
}

/// The topic's partitions, hottest first, against the topic's mean per partition.
fn topic_view(b: &Broker, topic: &str, brokers: &[Value], errors: &[Value]) -> Value {
    let cfg = &b.skew.config;
    let answered: BTreeSet<i32> = brokers
        .iter()
        .filter_map(|v| v["node_id"].as_i64().map(|n| n as i32))
        .collect();
    let rates = topic_rates(b, brokers, &answered, Some(topic));
    let parts = rates.get(topic).cloned().unwrap_or_default();
    let total: f64 = parts.iter().map(|p| p.rate).sum();
    let total_bytes: u64 = parts.iter().map(|p| p.bytes).sum();
    // The leaders' rows, for top keys and leader ids.
    let mut rows: BTreeMap<i64, (i64, &Value)> = BTreeMap::new();
    for v in brokers {
        let node = v["node_id"].as_i64().unwrap_or(-1);
        for r in v["partitions"].as_array().into_iter().flatten() {
            if r["topic"] == topic {
                rows.insert(r["partition"].as_i64().unwrap_or(-1), (node, r));
            }
        }
    }
    let findings = super::detect::ratios(&rates);
    let mut out: Vec<Value> = findings
        .iter()
        .map(|f| {
            let row = rows.get(&(f.partition as i64));
            let bytes = parts
                .iter()
                .find(|p| p.partition == f.partition)
                .map_or(0, |p| p.bytes);
            json!({
                "partition": f.partition,
                "leader": row.map(|r| r.0),
                "rate": f.rate,
                "bytes": bytes,
                "ratio": f.ratio,
                "share": if total > 0.0 { f.rate / total } else { 0.0 },
                "skewed": f.rate >= cfg.min_rate && f.rate > 0.0 && f.ratio >= cfg.warn_ratio,
                "warned": row.is_some_and(|r| r.1["warned"] == true),
                "sampled_bytes": row.map_or(json!(0), |r| r.1["sampled_bytes"].clone()),
                "top_keys": row.map_or(json!([]), |r| r.1["top_keys"].clone()),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b["rate"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a["rate"].as_f64().unwrap_or(0.0))
            .then(a["partition"].as_i64().cmp(&b["partition"].as_i64()))
    });
    let count = b.topic(topic).map_or(0, |t| t.partitions.len());
    let known: BTreeSet<i32> = parts.iter().map(|p| p.partition).collect();
    let missing: Vec<i32> = (0..count as i32).filter(|p| !known.contains(p)).collect();
    json!({
        "topic": topic,
        "partition_count": count,
        "window_ms": cfg.window_ms,
        "warn_ratio": cfg.warn_ratio,
        "min_rate": cfg.min_rate,
        "total_rate": total,
        "total_bytes": total_bytes,
        "mean_rate": if parts.is_empty() { 0.0 } else { total / parts.len() as f64 },
        "skewed": out.iter().filter(|p| p["skewed"] == true).count(),
        "partitions": out,
        "missing": missing,
        "errors": errors,
    })
}
