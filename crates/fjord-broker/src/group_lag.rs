//! Consumer lag with Burrow's rules ([`fjord_group::lag`]) on the broker: samples taken on
//! every accepted OffsetCommit (committed offset, the partition's high watermark, time), the
//! admin HTTP endpoints in the shape of Burrow's v3 consumer answers, and the lag gauges.
//!
//! - `GET /v1/groups`: every group with commits, from every broker (each coordinator knows its
//!   own; `?scope=local` answers for this broker only).
//! - `GET /v1/groups/{group}/status`: Burrow's consumer status (`status`, `complete`, the
//!   partitions that are not OK with their `start`/`end` samples, `maxlag`, `totallag`).
//! - `GET /v1/groups/{group}/lag`: the same with every partition (Burrow's `/lag`).
//!
//! A broker that is not the group's coordinator forwards the last two to the coordinator's
//! admin endpoint (the `FJORD_ADMIN` endpoint it registered, as `/v1/traffic` does).
//! Groups that only commit (no members: Spark, Flink, `assign()` consumers) are evaluated too —
//! the windows come from commits alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fjord_group::lag::{GroupStatus, Status};
use fjord_protocol::clock::now_ms;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};

use crate::accounting::http::{admin_of, peer_admins, peer_get};
use crate::broker::Broker;

/// The partition's log end as consumers see it (high watermark): the local replica's, or
/// the one its leader last told [`crate::log_ends`] (asked for from now on if not yet known).
fn log_end(b: &Broker, topic: &str, partition: i32, now: i64) -> Option<i64> {
    let t = b.topic(topic)?;
    let p = t.partitions.get(usize::try_from(partition).ok()?)?;
    if p.is_replica() {
        return Some(p.high_watermark());
    }
    b.groups.remote_ends.get(topic, partition, now)
}

/// Record the accepted commits of one OffsetCommit (called by the handler after the append).
/// A partition whose log end is not known yet (no replica here and no fresh answer from its
/// leader) gets no sample, rather than a sample that would claim it has no lag; its leader is
/// asked from now on, so the next commits are sampled.
pub fn record_commits<'a>(
    b: &Broker,
    group: &str,
    commits: impl Iterator<Item = (&'a str, i32, i64)>,
) {
    let now = now_ms();
    let samples: Vec<(&str, i32, i64, i64)> = commits
        .filter_map(|(t, p, o)| log_end(b, t, p, now).map(|end| (t, p, o, end)))
        .collect();
    let mut lag = b.groups.lag.lock();
    for (t, p, o, end) in samples {
        lag.record(group, t, p, o, end, now);
    }
}

/// Evaluate one group on this broker.
pub fn evaluate(b: &Broker, group: &str) -> GroupStatus {
    let now = now_ms();
    let lag = b.groups.lag.lock();
    lag.evaluate(group, |t, p| log_end(b, t, p, now), now)
}

/// The lag gauges, registered on first use.
pub struct LagMetrics {
    status: IntGaugeVec,
    lag: IntGaugeVec,
    time_lag: IntGaugeVec,
    /// Log-end polls of remote leaders ([`crate::log_ends`]), by result.
    pub(crate) end_polls: IntCounterVec,
    /// Label sets set at the last refresh, to remove the ones that disappear.
    seen: parking_lot::Mutex<(BTreeSet<String>, BTreeSet<[String; 3]>)>,
}

impl LagMetrics {
    fn new(registry: &Registry) -> LagMetrics {
        let status = IntGaugeVec::new(
            Opts::new(
                "group_status",
                "Burrow status of each group with commits: 1 OK, 2 WARN, 3 ERR (0 NOTFOUND)",
            ),
            &["group"],
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "group_lag",
                "Consumer lag in offsets (high watermark - committed offset)",
            ),
            &["group", "topic", "partition"],
        )
        .expect("valid metric");
        let time_lag = IntGaugeVec::new(
            Opts::new(
                "group_time_lag_seconds",
                "How far behind in time the group's slowest partition is (estimated from commit samples)",
            ),
            &["group"],
        )
        .expect("valid metric");
        let end_polls = IntCounterVec::new(
            Opts::new(
                "group_lag_end_polls_total",
                "ListOffsets polls of partition leaders for the log ends of partitions with commits here but no replica, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(end_polls.clone()));
        for m in [&status, &lag, &time_lag] {
            // Registration fails only if another runtime in this process registered first.
            let _ = registry.register(Box::new(m.clone()));
        }
        LagMetrics {
            status,
            lag,
            time_lag,
            end_polls,
            seen: parking_lot::Mutex::new(Default::default()),
        }
    }
}

/// The lag metrics, registered on first use.
pub(crate) fn metrics(b: &Broker) -> &LagMetrics {
    b.groups
        .lag_metrics
        .get_or_init(|| LagMetrics::new(&b.metrics.registry))
}

/// Periodic upkeep (a blocking thread): drop windows whose group or committed offset is gone
/// (deleted, expired, or the coordinator moved), then set the gauges for the groups that are
/// left and remove the label sets of the others, so labels are bounded by what exists.
pub fn refresh(b: &Broker) {
    let metrics = metrics(b);
    // Never wait for a coordinator shard's lock holding the windows' lock (commits would
    // queue behind it). Find what is gone (a group in a shard no longer loaded here is gone:
    // its coordinator moved), then drop it.
    let keys: Vec<(String, String, i32)> = b
        .groups
        .lag
        .lock()
        .keys()
        .map(|(g, t, p)| (g.to_string(), t.to_string(), p))
        .collect();
    let gone: std::collections::HashSet<(String, String, i32)> = keys
        .into_iter()
        .filter(|(g, t, p)| {
            let kept = b.groups.read(b, g, |c, _| {
                c.group(g)
                    .is_some_and(|g| g.offsets.contains_key(&(t.clone(), *p)))
            });
            !kept.unwrap_or(false)
        })
        .collect();
    let groups: Vec<String> = {
        let mut lag = b.groups.lag.lock();
        if !gone.is_empty() {
            lag.retain(|g, t, p| !gone.contains(&(g.to_string(), t.to_string(), p)));
        }
        lag.groups().map(str::to_string).collect()
    };
    let mut groups_now = BTreeSet::new();
    let mut partitions_now = BTreeSet::new();
    for g in groups {
        let s = evaluate(b, &g);
        metrics.status.with_label_values(&[&g]).set(s.status as i64);
        let time_lag = s
            .partitions
            .iter()
            .map(|p| p.time_lag_ms)
            .max()
            .unwrap_or(0);
        metrics
            .time_lag
            .with_label_values(&[&g])
            .set(time_lag / 1000);
        for p in &s.partitions {
            let labels = [g.clone(), p.topic.clone(), p.partition.to_string()];
            metrics
                .lag
                .with_label_values(&[&labels[0], &labels[1], &labels[2]])
                .set(p.current_lag);
            partitions_now.insert(labels);
        }
        groups_now.insert(g);
    }
    let mut seen = metrics.seen.lock();
    for g in seen.0.difference(&groups_now) {
        let _ = metrics.status.remove_label_values(&[g]);
        let _ = metrics.time_lag.remove_label_values(&[g]);
    }
    for l in seen.1.difference(&partitions_now) {
        let _ = metrics.lag.remove_label_values(&[&l[0], &l[1], &l[2]]);
    }
    *seen = (groups_now, partitions_now);
}

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/groups", get(list))
        .route("/v1/groups/:group/status", get(status))
        .route("/v1/groups/:group/lag", get(lag))
}

fn answer(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn list(State(b): State<Arc<Broker>>, uri: axum::http::Uri) -> Response {
    let mut groups: BTreeSet<String> = b.groups.lag.lock().groups().map(str::to_string).collect();
    let mut errors = Vec::new();
    let local = uri.query().is_some_and(|q| q.contains("scope=local"));
    if !local {
        for (node_id, admin) in peer_admins(&b) {
            let r = match admin {
                None => Err("no admin address registered".to_string()),
                Some((host, port)) => peer_get(&host, port, "/v1/groups?scope=local").await,
            };
            match r {
                Ok(v) => groups.extend(
                    v["consumers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str().map(str::to_string)),
                ),
                Err(e) => errors.push(json!({ "node_id": node_id, "error": e })),
            }
        }
    }
    answer(
        StatusCode::OK,
        json!({
            "error": false,
            "message": "consumer list returned",
            "consumers": groups,
            "errors": errors,
            "request": { "url": uri.path(), "host": b.node_id().to_string() },
        }),
    )
}

async fn status(b: State<Arc<Broker>>, group: Path<String>, uri: axum::http::Uri) -> Response {
    group_answer(b, group, uri, false).await
}

async fn lag(b: State<Arc<Broker>>, group: Path<String>, uri: axum::http::Uri) -> Response {
    group_answer(b, group, uri, true).await
}

/// Burrow's consumer status answer, from the coordinator (forwarded there if it is not us).
async fn group_answer(
    State(b): State<Arc<Broker>>,
    Path(group): Path<String>,
    uri: axum::http::Uri,
    all: bool,
) -> Response {
    if crate::groups::not_coordinator(&b, &group) {
        let Some((host, port)) = coordinator_admin(&b, &group) else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": true, "message": "the group's coordinator has no admin address" }),
            );
        };
        return match peer_get(&host, port, uri.path()).await {
            Ok(v) => answer(StatusCode::OK, v),
            Err(e) if e.contains(" 404 ") => answer(
                StatusCode::NOT_FOUND,
                json!({ "error": true, "message": "cluster or consumer not found" }),
            ),
            Err(e) => answer(
                StatusCode::BAD_GATEWAY,
                json!({ "error": true, "message": e }),
            ),
        };
    }
    let s = evaluate(&b, &group);
    if s.status == Status::NotFound {
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": true, "message": "cluster or consumer not found",
                    "request": { "url": uri.path(), "host": b.node_id().to_string() } }),
        );
    }
    let partitions: Vec<_> = s
        .partitions
        .iter()
        .filter(|p| all || p.status != Status::Ok)
        .map(partition_json)
        .collect();
    answer(
        StatusCode::OK,
        json!({
            "error": false,
            "message": if all { "consumer lag returned" } else { "consumer status returned" },
            "status": {
                "cluster": b.cluster_id,
                "group": s.group,
                "status": s.status,
                "complete": s.complete,
                "partitions": partitions,
                "partition_count": s.partition_count,
                "maxlag": s.maxlag.as_ref().map(partition_json),
                "totallag": s.totallag,
            },
            "request": { "url": uri.path(), "host": b.node_id().to_string() },
        }),
    )
}

/// One partition as Burrow prints it (samples as `offset`, `timestamp`, `observedAt`, `lag`),
/// plus Fjord's `time_lag_ms`.
fn partition_json(p: &fjord_group::lag::PartitionStatus) -> Value {
    let sample = |s: &Option<fjord_group::lag::Sample>| {
        s.map(|s| {
            json!({ "offset": s.offset, "timestamp": s.timestamp, "observedAt": s.timestamp,
                    "lag": s.lag, "log_end_offset": s.log_end_offset })
        })
    };
    json!({
        "topic": p.topic,
        "partition": p.partition,
        "owner": "",
        "client_id": "",
        "status": p.status,
        "start": sample(&p.start),
        "end": sample(&p.end),
        "current_lag": p.current_lag,
        "complete": p.complete,
        "time_lag_ms": p.time_lag_ms,
    })
}

/// The admin address of the leader of the group's `__consumer_offsets` partition.
fn coordinator_admin(b: &Broker, group: &str) -> Option<(String, u16)> {
    let t = b.topic(crate::groups::OFFSETS_TOPIC)?;
    let p = fjord_group::offsets_partition(group, t.partitions.len() as i32);
    b.with_image(|i| {
        let topic = i.topic(crate::groups::OFFSETS_TOPIC)?;
        let leader = i.partition(&topic.id, p as u32)?.leader;
        admin_of(i.broker(leader)?)
    })
}
