//! Unused topics and topic GC on the broker (the decisions are `fjord_metadata::topic_gc`'s):
//! activity flags on the hot path, their periodic report to the controller, the admin
//! endpoints, produce refusal for marked topics and the metrics.
//!
//! - Hot path: every hosted partition has a [`PartitionActivity`], two flags set by an
//!   accepted produce and by a consumer fetch (replica fetches do not count). Setting a flag
//!   that is already set is one relaxed load: no clock, no lock.
//! - Every `topic.activity.flush.ms` [`flush_loop`] takes the flags and reports, for each
//!   topic with a flag set, "produced/fetched at about now" to the controller
//!   (`ControllerRequest::TopicActivity`), which writes a `TopicActivity` record only for
//!   times that advanced; times are therefore accurate to the flush interval. A report that
//!   fails is kept and merged into the next one; a controlled shutdown reports once more.
//! - `GET /v1/topics/unused?idle_ms=N`: topics idle (no produce and no consumer fetch) for at
//!   least N ms — never-used ones counted from their creation — with partitions, bytes on disk
//!   (every replica, from every broker), last produce and fetch, GC mark and the groups with
//!   committed offsets on them (from every broker's group coordinator).
//! - `GET /v1/topics/gc?idle_ms=N` (dry run) and `POST /v1/topics/gc?idle_ms=N` (carried out
//!   by the active controller): topic GC's decisions with reasons. Both first ask every broker
//!   to report its activity, so a topic used a moment ago is not taken for idle.
//! - `GET /v1/topics/local-usage[?flush=true]`: what this broker knows (bytes per topic,
//!   groups per topic); what the two above gather.
//!
//! Produce to a marked topic is refused with POLICY_VIOLATION (44) and a message when
//! `topic.gc.reject.produce=true`: a non-retriable error, so clients fail the send at once
//! with the message instead of retrying until their delivery timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use fjord_metadata::topic_gc::{self, ActivityUpdate, GcAction, GcParams, Protected};
use fjord_metadata::{ControllerReply, ControllerRequest, Uuid};
use fjord_protocol::clock::now_ms;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::accounting::http::{answer, bad_request, gather};
use crate::broker::{Broker, Topic};

/// `topic.activity.flush.ms` and `topic.gc.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicGcConfig {
    /// `topic.activity.flush.ms`: how often activity is reported to the controller.
    pub flush_ms: u64,
    /// `topic.gc.grace.ms`: a marked topic is deleted once marked this long and still idle.
    pub grace_ms: i64,
    /// `topic.gc.exclude`: comma-separated shell patterns of topics GC never touches.
    pub exclude: Vec<String>,
    /// `topic.gc.reject.produce`: refuse produce to marked topics.
    pub reject_produce: bool,
}

impl TopicGcConfig {
    pub(crate) fn parse(get: &dyn Fn(&str) -> String) -> Result<TopicGcConfig, String> {
        use crate::config::{parse_bool, parse_int};
        let exclude = topic_gc::split_patterns(&get("topic.gc.exclude"));
        topic_gc::compile_patterns(&exclude)?;
        Ok(TopicGcConfig {
            flush_ms: parse_int(
                &get("topic.activity.flush.ms"),
                "topic.activity.flush.ms",
                10,
                i32::MAX as i64,
            )? as u64,
            grace_ms: parse_int(&get("topic.gc.grace.ms"), "topic.gc.grace.ms", 0, i64::MAX)?,
            exclude,
            reject_produce: parse_bool(&get("topic.gc.reject.produce"), "topic.gc.reject.produce")?,
        })
    }
}

/// A partition's use since the last report: set on the hot path, taken by the flusher.
#[derive(Debug, Default)]
pub struct PartitionActivity {
    produced: AtomicBool,
    fetched: AtomicBool,
}

impl PartitionActivity {
    /// An accepted produce. Only the first since the last report writes the cache line.
    #[inline]
    pub fn produced(&self) {
        if !self.produced.load(Relaxed) {
            self.produced.store(true, Relaxed);
        }
    }

    /// A consumer fetch (with or without data: a consumer polling an idle topic uses it).
    #[inline]
    pub fn fetched(&self) {
        if !self.fetched.load(Relaxed) {
            self.fetched.store(true, Relaxed);
        }
    }

    /// Take both flags (produced, fetched), clearing them.
    fn take(&self) -> (bool, bool) {
        let p = self.produced.load(Relaxed) && self.produced.swap(false, Relaxed);
        let f = self.fetched.load(Relaxed) && self.fetched.swap(false, Relaxed);
        (p, f)
    }
}

/// Per topic id: (last produce, last consumer fetch) seen here and not yet reported.
type Pending = HashMap<Uuid, (Option<i64>, Option<i64>)>;

/// Reports not yet accepted by the controller, and the metrics.
pub struct TopicActivity {
    pending: Mutex<Pending>,
    /// One report at a time (the loop and `flush=true` requests).
    reporting: tokio::sync::Mutex<()>,
    /// `fjord_topic_gc_actions_total{action}`: mark, unmark, delete, wait, skip.
    pub actions: IntCounterVec,
    /// `fjord_topic_idle_seconds{topic}`: seconds since each topic's last produce or consumer
    /// fetch (or creation), set at scrape time from the image.
    idle_seconds: IntGaugeVec,
}

impl TopicActivity {
    pub fn new(registry: &Registry) -> TopicActivity {
        let actions = IntCounterVec::new(
            Opts::new(
                "topic_gc_actions_total",
                "Topic GC decisions carried out, by action (mark, unmark, delete, wait, skip)",
            ),
            &["action"],
        )
        .expect("metric");
        let idle_seconds = IntGaugeVec::new(
            Opts::new(
                "topic_idle_seconds",
                "Seconds since the topic's last produce or consumer fetch (its creation if never used), as the metadata image knows it",
            ),
            &["topic"],
        )
        .expect("metric");
        // Registration fails only if another broker in this process registered first.
        let _ = registry.register(Box::new(actions.clone()));
        let _ = registry.register(Box::new(idle_seconds.clone()));
        TopicActivity {
            pending: Mutex::new(HashMap::new()),
            reporting: tokio::sync::Mutex::new(()),
            actions,
            idle_seconds,
        }
    }

    fn count(&self, action: GcAction) {
        self.actions.with_label_values(&[action.name()]).inc();
    }
}

/// Why produce to `t` is refused, when `topic.gc.reject.produce` is on and GC marked it.
pub fn produce_refusal(b: &Broker, t: &Topic) -> Option<String> {
    if !b.config.topic_gc.reject_produce {
        return None;
    }
    let marked = b.with_image(|i| i.topic_usage(&t.id).marked_ms)?;
    Some(format!(
        "Topic {} was marked for deletion as unused by topic GC {} ago; produce is refused \
         (topic.gc.reject.produce=true). A consumer fetch from the topic lifts the mark; an \
         operator can exclude it with topic.gc.exclude.",
        t.name,
        topic_gc::human_ms(now_ms() - marked)
    ))
}

/// Take every partition's flags into the pending report (stamped `now`).
fn sample(b: &Broker, now: i64) {
    let mut seen = Vec::new();
    for t in b.topics() {
        let (mut produced, mut fetched) = (false, false);
        for p in &t.partitions {
            let (pr, fe) = p.activity.take();
            produced |= pr;
            fetched |= fe;
        }
        if produced || fetched {
            seen.push((t.id, produced.then_some(now), fetched.then_some(now)));
        }
    }
    if seen.is_empty() {
        return;
    }
    let mut pending = b.topic_activity.pending.lock();
    for (id, p, f) in seen {
        let e = pending.entry(id).or_default();
        e.0 = e.0.max(p);
        e.1 = e.1.max(f);
    }
}

/// How long one report may take before it is kept for the next.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for the last report of a controlled shutdown, which must not hold the stop up.
const SHUTDOWN_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sample the flags and report what is pending to the controller. Returns whether nothing is
/// left pending.
pub async fn flush(b: &Broker) -> bool {
    let _one = b.topic_activity.reporting.lock().await;
    sample(b, now_ms());
    let taken = std::mem::take(&mut *b.topic_activity.pending.lock());
    if taken.is_empty() {
        return true;
    }
    let updates: Vec<ActivityUpdate> = taken
        .iter()
        .map(|(id, (p, f))| ActivityUpdate {
            topic_id: *id,
            last_produce_ms: *p,
            last_fetch_ms: *f,
        })
        .collect();
    let limit = if b.is_shutting_down() {
        SHUTDOWN_REPORT_TIMEOUT
    } else {
        REPORT_TIMEOUT
    };
    let reported = tokio::time::timeout(
        limit,
        b.submit(ControllerRequest::TopicActivity { updates }),
    )
    .await;
    match reported {
        Ok(Ok(ControllerReply::TopicsUnmarked { topics })) => {
            for t in topics {
                tracing::info!(topic = %t, "topic GC: topic used after it was marked; mark lifted");
                b.topic_activity.count(GcAction::Unmark);
            }
            true
        }
        other => {
            let error = match other {
                Ok(Err(e)) => e.message,
                Ok(Ok(reply)) => format!("unexpected reply {reply:?}"),
                Err(_) => format!("no answer within {limit:?}"),
            };
            tracing::debug!(topics = taken.len(), %error, "topic activity report failed; kept for the next");
            let mut pending = b.topic_activity.pending.lock();
            for (id, (p, f)) in taken {
                let e = pending.entry(id).or_default();
                e.0 = e.0.max(p);
                e.1 = e.1.max(f);
            }
            false
        }
    }
}

/// Report activity every `topic.activity.flush.ms`. The last report of a clean stop is
/// `RunningBroker::shutdown`'s, made while the metadata follower still runs (after the
/// shutdown signal a report could wait for an apply that never comes).
pub async fn flush_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    // A period measured from the end of the last report: no catching up after a slow one.
    let period = Duration::from_millis(broker.config.topic_gc.flush_ms);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(period) => {
                flush(&broker).await;
            }
        }
    }
}

/// Set `fjord_topic_idle_seconds` from the image (at scrape time; a scan of the topics).
pub fn refresh_gauges(b: &Broker) {
    let now = now_ms();
    let g = &b.topic_activity.idle_seconds;
    g.reset();
    b.with_image(|i| {
        for t in i.topics().filter(|t| !topic_gc::is_reserved(&t.name)) {
            if let Some(idle) = i.topic_usage(&t.id).idle_ms(now) {
                g.with_label_values(&[&t.name]).set(idle / 1000);
            }
        }
    });
}

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/topics/unused", get(unused))
        .route("/v1/topics/gc", get(gc_dry_run).post(gc_execute))
        .route("/v1/topics/local-usage", get(local_usage))
}

/// `idle_ms` from the query string: required, positive.
fn idle_param(uri: &Uri) -> Result<i64, String> {
    let v = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("idle_ms="))
        .ok_or("idle_ms is required (milliseconds a topic must have been idle)")?;
    match v.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("idle_ms must be a positive integer, got {v:?}")),
    }
}

/// One group's use of one topic on this broker's coordinator.
fn local_groups(b: &Broker) -> Vec<Value> {
    let mut out = Vec::new();
    b.groups.read_each(|c, _| {
        for listing in c.list_groups(&[], &[]) {
            let Some(g) = c.group(&listing.group_id) else {
                continue;
            };
            let subscribed = g.subscribed_topics();
            let mut commits: BTreeMap<&str, i64> = BTreeMap::new();
            for ((topic, _), o) in &g.offsets {
                let e = commits.entry(topic.as_str()).or_insert(i64::MIN);
                *e = (*e).max(o.commit_timestamp);
            }
            let mut topics: Vec<&str> = commits.keys().copied().collect();
            topics.extend(subscribed.iter().map(String::as_str));
            topics.sort_unstable();
            topics.dedup();
            for t in topics {
                out.push(json!({
                    "group": g.id,
                    "topic": t,
                    "live_members_subscribed": subscribed.contains(t),
                    "last_commit_ms": commits.get(t),
                }));
            }
        }
    });
    out
}

/// This broker's bytes per topic (its replicas) and groups per topic. Reads log sizes: run
/// off the async workers.
fn local_answer(b: &Broker) -> Value {
    let sizes: BTreeMap<String, u64> = b
        .topics()
        .iter()
        .map(|t| {
            let size = t
                .partitions
                .iter()
                .filter_map(|p| p.with_log(|l| l.size_bytes()))
                .sum();
            (t.name.to_string(), size)
        })
        .collect();
    json!({ "node_id": b.node_id(), "sizes": sizes, "groups": local_groups(b) })
}

async fn local_usage(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    if uri.query().is_some_and(|q| q.contains("flush=true")) {
        flush(&b).await;
    }
    let me = b.clone();
    match tokio::task::spawn_blocking(move || local_answer(&me)).await {
        Ok(v) => answer(StatusCode::OK, json!({ "brokers": [v] })),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// What every broker knows, after each reported its activity: sizes summed per topic, group
/// uses, and the brokers that did not answer.
struct Gathered {
    sizes: BTreeMap<String, u64>,
    groups: Vec<Value>,
    errors: Vec<Value>,
}

async fn gather_all(b: &Arc<Broker>) -> Gathered {
    flush(b).await;
    let me = b.clone();
    let mine = tokio::task::spawn_blocking(move || local_answer(&me))
        .await
        .unwrap_or(Value::Null);
    let mut brokers = vec![mine];
    let mut errors = Vec::new();
    gather(
        b,
        "/v1/topics/local-usage?flush=true",
        &mut brokers,
        &mut errors,
    )
    .await;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut groups = Vec::new();
    for v in &brokers {
        for (t, n) in v["sizes"].as_object().into_iter().flatten() {
            *sizes.entry(t.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
        groups.extend(v["groups"].as_array().cloned().unwrap_or_default());
    }
    Gathered {
        sizes,
        groups,
        errors,
    }
}

/// Topics that consumer groups keep alive: live members subscribed, or offsets committed
/// within the idle window.
fn protected(groups: &[Value], now: i64, idle_ms: i64) -> Protected {
    let mut out = Protected::new();
    for g in groups {
        let (Some(group), Some(topic)) = (g["group"].as_str(), g["topic"].as_str()) else {
            continue;
        };
        let why = if g["live_members_subscribed"].as_bool() == Some(true) {
            format!("group {group} has live members subscribed")
        } else {
            match g["last_commit_ms"].as_i64() {
                Some(at) if now - at < idle_ms => format!(
                    "group {group} committed offsets {} ago",
                    topic_gc::human_ms(now - at)
                ),
                _ => continue,
            }
        };
        out.entry(topic.to_string()).or_insert(why);
    }
    out
}

/// Group names with committed offsets or members on `topic`.
fn groups_of(groups: &[Value], topic: &str) -> Vec<String> {
    let mut out: Vec<String> = groups
        .iter()
        .filter(|g| g["topic"].as_str() == Some(topic))
        .filter_map(|g| g["group"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `idle_ms` from the query, and what every broker knows once each reported its activity.
async fn begin(b: &Arc<Broker>, uri: &Uri) -> Result<(i64, Gathered), Response> {
    let idle_ms = idle_param(uri).map_err(bad_request)?;
    Ok((idle_ms, gather_all(b).await))
}

async fn unused(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let (idle_ms, all) = match begin(&b, &uri).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = now_ms();
    let topics: Vec<Value> = b.with_image(|i| {
        i.topics()
            .filter(|t| !topic_gc::is_reserved(&t.name))
            .filter_map(|t| {
                let u = i.topic_usage(&t.id);
                let idle = u.idle_ms(now).filter(|idle| *idle >= idle_ms)?;
                Some(json!({
                    "topic": t.name,
                    "topic_id": t.id,
                    "partitions": t.partitions,
                    "size_bytes": all.sizes.get(&t.name).copied().unwrap_or(0),
                    "created_ms": u.created_ms,
                    "last_produce_ms": u.last_produce_ms,
                    "last_fetch_ms": u.last_fetch_ms,
                    "marked_ms": u.marked_ms,
                    "idle_ms": idle,
                    "groups": groups_of(&all.groups, &t.name),
                }))
            })
            .collect()
    });
    answer(
        StatusCode::OK,
        json!({ "idle_ms": idle_ms, "now_ms": now, "topics": topics, "errors": all.errors }),
    )
}

/// The GC run's parameters from the query and this broker's config.
fn gc_params(b: &Broker, idle_ms: i64) -> GcParams {
    let c = &b.config.topic_gc;
    GcParams {
        idle_ms,
        grace_ms: c.grace_ms,
        exclude: c.exclude.clone(),
        delete_enabled: b.config.delete_topic_enable,
    }
}

fn gc_answer(
    params: &GcParams,
    executed: bool,
    decisions: Vec<topic_gc::GcDecision>,
    all: &Gathered,
) -> Response {
    let decisions: Vec<Value> = decisions
        .into_iter()
        .map(|d| {
            let mut v = json!(d);
            v["size_bytes"] = json!(all.sizes.get(&d.topic).copied().unwrap_or(0));
            v["groups"] = json!(groups_of(&all.groups, &d.topic));
            v
        })
        .collect();
    answer(
        StatusCode::OK,
        json!({
            "executed": executed,
            "now_ms": now_ms(),
            "idle_ms": params.idle_ms,
            "grace_ms": params.grace_ms,
            "exclude": params.exclude,
            "decisions": decisions,
            "errors": all.errors,
        }),
    )
}

async fn gc_dry_run(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let (idle_ms, all) = match begin(&b, &uri).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = now_ms();
    let params = gc_params(&b, idle_ms);
    let prot = protected(&all.groups, now, idle_ms);
    match b.with_image(|i| topic_gc::plan(i, now, &params, &prot)) {
        Ok(d) => gc_answer(&params, false, d, &all),
        Err(e) => bad_request(e),
    }
}

async fn gc_execute(State(b): State<Arc<Broker>>, uri: Uri) -> Response {
    let (idle_ms, all) = match begin(&b, &uri).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !all.errors.is_empty() {
        // A broker that did not answer may hold the only group using a topic.
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "not every broker answered; topic GC needs every group coordinator's groups", "errors": all.errors }),
        );
    }
    let params = gc_params(&b, idle_ms);
    let req = ControllerRequest::TopicGc {
        params: params.clone(),
        protected: protected(&all.groups, now_ms(), idle_ms),
        execute: true,
    };
    match b.submit(req).await {
        Ok(ControllerReply::TopicGc { decisions }) => {
            for d in &decisions {
                b.topic_activity.count(d.action);
                if matches!(
                    d.action,
                    GcAction::Mark | GcAction::Unmark | GcAction::Delete
                ) {
                    tracing::info!(topic = %d.topic, action = d.action.name(), reason = %d.reason, "topic GC");
                }
            }
            gc_answer(&params, true, decisions, &all)
        }
        Ok(other) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": format!("unexpected controller reply {other:?}") }),
        ),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.message, "error_code": e.code.code() }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_taken_once() {
        let a = PartitionActivity::default();
        assert_eq!(a.take(), (false, false));
        a.produced();
        a.produced();
        a.fetched();
        assert_eq!(a.take(), (true, true));
        assert_eq!(a.take(), (false, false));
    }

    #[test]
    fn groups_protect_topics_while_live_or_recently_committed() {
        let groups = vec![
            json!({"group": "live", "topic": "a", "live_members_subscribed": true, "last_commit_ms": null}),
            json!({"group": "recent", "topic": "b", "live_members_subscribed": false, "last_commit_ms": 9_500}),
            json!({"group": "old", "topic": "c", "live_members_subscribed": false, "last_commit_ms": 1_000}),
        ];
        let p = protected(&groups, 10_000, 2_000);
        assert!(p["a"].contains("live members"));
        assert!(p["b"].contains("committed offsets"));
        assert!(!p.contains_key("c"));
        assert_eq!(groups_of(&groups, "c"), vec!["old".to_string()]);
    }

    /// What the hot path costs: `cargo test -p fjord-broker --release --lib
    /// topic_activity::tests::hot_path_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn hot_path_cost() {
        let a = PartitionActivity::default();
        let n = 100_000_000u64;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(&a).produced();
            std::hint::black_box(&a).fetched();
        }
        let per = start.elapsed().as_nanos() as f64 / (2 * n) as f64;
        // With the flags taken every 100,000 calls (far more often than once per flush
        // interval at any real request rate), so the store after a take is paid too.
        let start = std::time::Instant::now();
        for i in 0..n {
            std::hint::black_box(&a).produced();
            if i % 100_000 == 0 {
                std::hint::black_box(a.take());
            }
        }
        let with_take = start.elapsed().as_nanos() as f64 / n as f64;
        println!("activity flag: {per:.2} ns per call (set), {with_take:.2} ns per call with periodic take");
        assert!(per < 50.0, "{per} ns per call");
    }
}
