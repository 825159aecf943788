//! `GET /v1/traffic` and `GET /v1/usage` on the admin port.
//!
//! Both answer for the whole cluster by default: the answering broker adds its own numbers to
//! those of every other registered broker, which it asks at the admin address that broker
//! registered beside its Kafka listener (an endpoint named [`ADMIN_ENDPOINT`]) with
//! `scope=local`. A broker that does not answer within [`PEER_TIMEOUT`] is listed under
//! `errors`, and the others are still shown. `scope=local` answers for this broker only.
//!
//! - `/v1/traffic[?scope=local]`: `{"brokers":[{"node_id":1,"rack":"a","enabled":true,
//!   "flows":[{"client_rack":"b","kind":"produce","bytes":123,"bytes_in":100,"bytes_out":23}]}],
//!   "errors":[]}` — bytes since each broker started.
//! - `/v1/usage?by=topic|client&since=24h[&scope=local]`: per broker the window it covers and
//!   its rows; `rows` merges them by name (`bytes_stored`, for topics, adds up every replica).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fjord_protocol::clock::now_ms;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::usage::{parse_since, By, InOut, HOURS_KEPT, HOUR_MS};
use crate::broker::Broker;

/// The name of the endpoint a broker registers for its admin listener (HTTP).
pub const ADMIN_ENDPOINT: &str = "FJORD_ADMIN";
/// How long a peer broker has to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read from a peer.
const MAX_PEER_ANSWER: u64 = 16 << 20;
/// The default `since` of `/v1/usage`.
pub const DEFAULT_SINCE: &str = "24h";

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/traffic", get(traffic))
        .route("/v1/usage", get(usage))
}

pub(crate) fn answer(code: StatusCode, body: Value) -> Response {
    (code, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(crate) fn bad_request(message: String) -> Response {
    answer(StatusCode::BAD_REQUEST, json!({ "error": message }))
}

/// The query string's `key=value` pairs (no percent-decoding: the values used here need none).
pub(crate) fn params(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// `scope`: true for `local`, false for `cluster` (the default).
pub(crate) fn local_scope(p: &BTreeMap<String, String>) -> Result<bool, String> {
    match p.get("scope").map(String::as_str) {
        None | Some("cluster") => Ok(false),
        Some("local") => Ok(true),
        Some(other) => Err(format!("scope must be local or cluster, got {other:?}")),
    }
}

fn local_traffic(b: &Broker) -> Value {
    let acct = &b.accounting;
    json!({
        "node_id": b.node_id(),
        "rack": acct.traffic.broker_rack(),
        "enabled": acct.enabled(),
        "flows": acct.traffic.flows(),
    })
}

async fn traffic(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let p = params(&uri);
    let local = match local_scope(&p) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let mut brokers = vec![local_traffic(&b)];
    let mut errors = Vec::new();
    if !local {
        gather(&b, "/v1/traffic?scope=local", &mut brokers, &mut errors).await;
    }
    answer(
        StatusCode::OK,
        json!({ "brokers": brokers, "errors": errors }),
    )
}

async fn usage(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let p = params(&uri);
    let local = match local_scope(&p) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let by = match By::parse(p.get("by").map_or("topic", String::as_str)) {
        Ok(by) => by,
        Err(e) => return bad_request(e),
    };
    let since = p.get("since").map_or(DEFAULT_SINCE, String::as_str);
    let since_ms = match parse_since(since) {
        Ok(ms) if ms <= HOURS_KEPT * HOUR_MS => ms,
        Ok(_) => {
            return bad_request(format!(
            "since must be at most {HOURS_KEPT}h: usage is kept in memory for {HOURS_KEPT} hours"
        ))
        }
        Err(e) => return bad_request(e),
    };
    let now = now_ms();
    let me = {
        let b = b.clone();
        match off_workers(move || local_usage(&b, by, since_ms, now)).await {
            Ok(v) => v,
            Err(e) => return e,
        }
    };
    let mut brokers = vec![me];
    let mut errors = Vec::new();
    if !local {
        let path = format!(
            "/v1/usage?scope=local&by={}&since={}s",
            by_label(by),
            since_ms / 1000
        );
        gather(&b, &path, &mut brokers, &mut errors).await;
    }
    let rows = merge_usage_rows(&brokers);
    answer(
        StatusCode::OK,
        json!({
            "by": by_label(by),
            "since_ms": since_ms,
            "from_ms": now - since_ms,
            "to_ms": now,
            "rows": rows,
            "brokers": brokers,
            "errors": errors,
        }),
    )
}

fn by_label(by: By) -> &'static str {
    match by {
        By::Topic => "topic",
        By::Client => "client",
    }
}

/// This broker's usage window, with the bytes stored per topic (all replicas hosted here).
/// Reads every partition's size: run off the async workers.
fn local_usage(b: &Broker, by: By, since_ms: i64, now: i64) -> Value {
    let w = b.accounting.usage.query(by, since_ms, now);
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    if by == By::Topic {
        for t in b.topics() {
            let size: u64 = t
                .partitions
                .iter()
                .filter_map(|p| p.with_log(|l| l.size_bytes()))
                .sum();
            stored.insert(t.name.to_string(), size);
        }
    }
    let mut names: Vec<&String> = w.rows.keys().chain(stored.keys()).collect();
    names.sort();
    names.dedup();
    let rows: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let io = w.rows.get(name).copied().unwrap_or_default();
            let mut row = json!({
                "name": name,
                "bytes_in": io.bytes_in,
                "bytes_out": io.bytes_out,
            });
            if by == By::Topic {
                row["bytes_stored"] = json!(stored.get(name).copied().unwrap_or(0));
            }
            row
        })
        .collect();
    json!({
        "node_id": b.node_id(),
        "enabled": b.accounting.enabled(),
        "covered_from_ms": w.covered_from_ms,
        "resolution": w.resolution,
        "rows": rows,
    })
}

/// `f`'s answer, run off the async workers (it reads disk or walks large tables); a 500
/// answer if it panicked.
pub(crate) async fn off_workers(
    f: impl FnOnce() -> Value + Send + 'static,
) -> Result<Value, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        )
    })
}

/// Rows of every broker's answer added up by name, largest traffic first.
pub fn merge_usage_rows(brokers: &[Value]) -> Vec<Value> {
    let mut merged: BTreeMap<String, (InOut, Option<u64>)> = BTreeMap::new();
    for b in brokers {
        for r in b["rows"].as_array().into_iter().flatten() {
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            let e = merged.entry(name.to_string()).or_default();
            e.0.bytes_in += r["bytes_in"].as_u64().unwrap_or(0);
            e.0.bytes_out += r["bytes_out"].as_u64().unwrap_or(0);
            if let Some(s) = r["bytes_stored"].as_u64() {
                *e.1.get_or_insert(0) += s;
            }
        }
    }
    let mut rows: Vec<(String, InOut, Option<u64>)> =
        merged.into_iter().map(|(k, (io, s))| (k, io, s)).collect();
    rows.sort_by(|a, b| {
        let key =
            |r: &(String, InOut, Option<u64>)| (r.1.bytes_in + r.1.bytes_out, r.2.unwrap_or(0));
        key(b).cmp(&key(a)).then_with(|| a.0.cmp(&b.0))
    });
    rows.into_iter()
        .map(|(name, io, stored)| {
            let mut row = json!({
                "name": name,
                "bytes_in": io.bytes_in,
                "bytes_out": io.bytes_out,
            });
            if let Some(s) = stored {
                row["bytes_stored"] = json!(s);
            }
            row
        })
        .collect()
}

/// Ask every other registered broker for `path` (which answers `{"brokers":[...]}`) and add
/// its brokers to `brokers`, or a line to `errors`; `brokers` ends sorted by node id.
pub(crate) async fn gather(
    b: &Broker,
    path: &str,
    brokers: &mut Vec<Value>,
    errors: &mut Vec<Value>,
) {
    let peers = peer_admins(b);
    let mut asks = tokio::task::JoinSet::new();
    for (node_id, admin) in peers {
        let path = path.to_string();
        asks.spawn(async move {
            let r = match admin {
                None => Err("no admin address registered (a broker of an older version?)".into()),
                Some((host, port)) => peer_get(&host, port, &path).await,
            };
            (node_id, r)
        });
    }
    while let Some(done) = asks.join_next().await {
        let Ok((node_id, r)) = done else { continue };
        match r {
            Ok(v) => brokers.extend(v["brokers"].as_array().cloned().unwrap_or_default()),
            Err(e) => {
                tracing::debug!(node_id, error = %e, "peer admin endpoint did not answer");
                errors.push(json!({ "node_id": node_id, "error": e }));
            }
        }
    }
    brokers.sort_by_key(|v| v["node_id"].as_i64().unwrap_or(i64::MAX));
    errors.sort_by_key(|v| v["node_id"].as_i64().unwrap_or(i64::MAX));
}

/// GET `path` from a peer's admin endpoint (HTTP/1.1, one request per connection), within
/// [`PEER_TIMEOUT`] and [`MAX_PEER_ANSWER`] bytes; the JSON body of a 200 answer.
/// Every other registered broker with the admin address it registered (the
/// [`ADMIN_ENDPOINT`] endpoint), if any.
#[allow(clippy::type_complexity)]
pub fn peer_admins(b: &Broker) -> Vec<(i32, Option<(String, u16)>)> {
    let me = b.node_id();
    b.with_image(|i| {
        i.brokers()
            .filter(|x| x.node_id != me)
            .map(|x| (x.node_id, admin_of(x)))
            .collect()
    })
}

/// The admin address broker `x` registered, if any.
pub fn admin_of(x: &fjord_metadata::image::BrokerImage) -> Option<(String, u16)> {
    x.endpoints
        .iter()
        .find(|e| e.name == ADMIN_ENDPOINT)
        .map(|e| (e.host.clone(), e.port))
}

pub async fn peer_get(host: &str, port: u16, path: &str) -> Result<Value, String> {
    let at = format!("{host}:{port}");
    let ask = async {
        let mut s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("admin endpoint {at}: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("admin endpoint {at}: {e}"))?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_PEER_ANSWER + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("admin endpoint {at}: {e}"))?;
        if raw.len() as u64 > MAX_PEER_ANSWER {
            return Err(format!(
                "admin endpoint {at}: answer larger than {MAX_PEER_ANSWER} bytes"
            ));
        }
        Ok(raw)
    };
    let raw = tokio::time::timeout(PEER_TIMEOUT, ask)
        .await
        .map_err(|_| format!("admin endpoint {at}: no answer in {PEER_TIMEOUT:?}"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("admin endpoint {at}: malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("admin endpoint {at}: malformed status line"))?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("admin endpoint {at}: answer is not JSON ({e})"))?;
    if code != 200 {
        return Err(format!(
            "admin endpoint {at}: {code} {}",
            v["error"].as_str().unwrap_or("")
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_rows_merge_by_name_largest_first() {
        let brokers = vec![
            json!({"node_id": 1, "rows": [
                {"name": "a", "bytes_in": 10, "bytes_out": 0, "bytes_stored": 100},
                {"name": "b", "bytes_in": 1, "bytes_out": 1, "bytes_stored": 5},
            ]}),
            json!({"node_id": 2, "rows": [
                {"name": "b", "bytes_in": 50, "bytes_out": 0, "bytes_stored": 5},
            ]}),
        ];
        let rows = merge_usage_rows(&brokers);
        assert_eq!(
            rows,
            vec![
                json!({"name": "b", "bytes_in": 51, "bytes_out": 1, "bytes_stored": 10}),
                json!({"name": "a", "bytes_in": 10, "bytes_out": 0, "bytes_stored": 100}),
            ]
        );
    }

    #[test]
    fn query_parameters() {
        let p = params(&"/v1/usage?by=client&since=2h&scope=local".parse().unwrap());
        assert_eq!(p["by"], "client");
        assert_eq!(p["since"], "2h");
        assert_eq!(local_scope(&p), Ok(true));
        assert_eq!(local_scope(&BTreeMap::new()), Ok(false));
        let p = params(&"/v1/traffic?scope=everywhere".parse().unwrap());
        assert!(local_scope(&p).is_err());
    }
}
