//! Unused topics and topic GC on a real broker, with real clients (the fjord CLI and
//! confluent-kafka): activity is tracked per topic (produce and consumer fetch apart), survives
//! a kill -9 and restart, `fjord topic unused` lists only idle topics, `fjord topic gc` dry-runs
//! without changing anything, marks, refuses produce to marked topics with POLICY_VIOLATION,
//! unmarks a topic used again, deletes after the grace, and leaves internal, excluded and
//! group-protected topics alone. Short configs (`--idle 2s`, 300 ms flushes) stand in for days.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::Cluster;
use common::member::Member;
use common::{wait_until, FjordProcess};
use serde_json::Value;

const IDLE: &str = "2s";

fn start() -> FjordProcess {
    FjordProcess::start(&[
        "--set",
        "topic.activity.flush.ms=300",
        "--set",
        "topic.gc.grace.ms=3000",
        "--set",
        "topic.gc.exclude=keep-*,other-*",
        "--set",
        "topic.gc.reject.produce=true",
    ])
}

fn json(r: common::CmdResult, what: &str) -> Value {
    let out = r.success(what).stdout();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
}

fn unused(b: &FjordProcess) -> BTreeMap<String, Value> {
    let v = json(
        b.cli(&[
            "-o",
            "json",
            "topic",
            "unused",
            "--idle",
            IDLE,
            "--admin",
            b.admin(),
        ]),
        "topic unused",
    );
    v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["topic"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

/// Every topic's GC decision (`--execute` or a dry run), by topic name.
fn gc(b: &FjordProcess, execute: bool) -> BTreeMap<String, Value> {
    let mut args = vec![
        "-o",
        "json",
        "topic",
        "gc",
        "--idle",
        IDLE,
        "--admin",
        b.admin(),
    ];
    args.push(if execute { "--execute" } else { "--dry-run" });
    let v = json(b.cli(&args), "topic gc");
    assert_eq!(v["executed"].as_bool(), Some(execute), "{v}");
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["topic"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

fn produce(b: &FjordProcess, topic: &str) -> common::CmdResult {
    b.cli_with_stdin(&["produce", topic], Some(b"x\n"))
}

/// Consumer fetches (no group) until nothing new came for 300 ms.
fn consume(b: &FjordProcess, topic: &str) {
    b.cli(&["consume", topic, "--from-beginning", "--timeout-ms", "300"])
        .success("fjord consume");
}

fn action(d: &BTreeMap<String, Value>, topic: &str) -> String {
    d.get(topic)
        .unwrap_or_else(|| panic!("no decision for {topic}: {d:?}"))["action"]
        .as_str()
        .unwrap()
        .to_string()
}

fn reason(d: &BTreeMap<String, Value>, topic: &str) -> String {
    d[topic]["reason"].as_str().unwrap().to_string()
}

fn metric(b: &FjordProcess, line_start: &str) -> Option<f64> {
    let body = b.http_get("/metrics").body;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn unused_topics_are_listed_marked_and_deleted_and_everything_else_is_left_alone() {
    let mut b = start();
    for t in [
        "produced",
        "consumed",
        "idle",
        "revived",
        "keep-idle",
        "__mine",
        "committed",
        "live",
    ] {
        b.cli(&["topic", "create", t, "--partitions", "2"])
            .success("create topic");
    }
    // "committed": a group's offsets on it, committed by a real consumer (this also creates
    // __consumer_offsets), then the group goes away.
    produce(&b, "committed").success("produce");
    let mut m = Member::start(&b, "m1", "committed", "gc-group", &[]);
    assert!(
        wait_until(Duration::from_secs(60), || !m.of("commit").is_empty()),
        "the member committed: {:?}",
        m.events()
    );
    m.stop();

    // Keep "produced" produced to and "consumed" fetched until "idle" is listed as unused.
    let mut listed = BTreeMap::new();
    let found = wait_until(Duration::from_secs(30), || {
        produce(&b, "produced").success("produce");
        consume(&b, "consumed");
        listed = unused(&b);
        listed.contains_key("idle")
    });
    assert!(found, "idle never listed: {listed:?}");
    for busy in ["produced", "consumed", "__mine", "__consumer_offsets"] {
        assert!(!listed.contains_key(busy), "{busy} listed: {listed:?}");
    }
    let idle = &listed["idle"];
    assert!(idle["created_ms"].as_i64().is_some(), "{idle}");
    assert!(
        idle["last_produce_ms"].is_null() && idle["last_fetch_ms"].is_null(),
        "{idle}"
    );
    assert_eq!(idle["partitions"].as_i64(), Some(2), "{idle}");
    // Committed offsets of a group are shown (its commit may be older than the window now).
    if let Some(c) = listed.get("committed") {
        assert_eq!(c["groups"], serde_json::json!(["gc-group"]), "{c}");
    }
    let table = b
        .cli(&["topic", "unused", "--idle", IDLE, "--admin", b.admin()])
        .success("topic unused table")
        .stdout();
    assert!(
        table.contains("LAST-PRODUCE") && table.lines().any(|l| l.starts_with("idle ")),
        "{table}"
    );

    // Produce and fetch are told apart, and survive a kill -9 (the listing above flushed).
    let before = gc(&b, false);
    let p = &before["produced"];
    let c = &before["consumed"];
    assert!(
        p["last_produce_ms"].as_i64().is_some() && p["last_fetch_ms"].is_null(),
        "{p}"
    );
    assert!(
        c["last_fetch_ms"].as_i64().is_some() && c["last_produce_ms"].is_null(),
        "{c}"
    );
    b.kill9();
    b.restart();
    let after = gc(&b, false);
    for (t, field) in [
        ("produced", "last_produce_ms"),
        ("consumed", "last_fetch_ms"),
    ] {
        assert!(
            after[t][field].as_i64() >= before[t][field].as_i64(),
            "{t}.{field} after restart: {} before: {}",
            after[t][field],
            before[t][field]
        );
    }

    // A commit within the idle window protects "committed" (committed again until a dry run
    // sees it within the window, however slow the machine); the dry run changes nothing.
    let mut dry = BTreeMap::new();
    let protected = wait_until(Duration::from_secs(30), || {
        b.cli(&[
            "group",
            "reset-offsets",
            "gc-group",
            "--topic",
            "committed",
            "--to-earliest",
            "--execute",
        ])
        .success("reset offsets");
        dry = gc(&b, false);
        reason(&dry, "committed").contains("gc-group committed offsets")
    });
    assert!(protected, "{:?}", dry.get("committed"));
    assert_eq!(action(&dry, "idle"), "mark", "{:?}", dry["idle"]);
    assert_eq!(action(&dry, "revived"), "mark");
    assert_eq!(action(&dry, "keep-idle"), "skip");
    assert!(reason(&dry, "keep-idle").contains("topic.gc.exclude"));
    assert_eq!(action(&dry, "__mine"), "skip");
    assert!(reason(&dry, "__mine").contains("internal"));
    assert_eq!(action(&dry, "__consumer_offsets"), "skip");
    assert_eq!(action(&dry, "committed"), "skip");
    assert!(
        gc(&b, false).values().all(|d| d["marked_ms"].is_null()),
        "a dry run marked something"
    );

    // Phase 1: mark. A group with live members protects its topic.
    let mut live = Member::start(&b, "m2", "live", "live-group", &[]);
    assert!(
        wait_until(Duration::from_secs(60), || !live.owned().is_empty()),
        "the live member got no assignment: {:?}",
        live.events()
    );
    let run = gc(&b, true);
    assert_eq!(action(&run, "live"), "skip");
    assert!(
        reason(&run, "live").contains("live-group has live members subscribed"),
        "{}",
        reason(&run, "live")
    );
    assert_eq!(action(&run, "idle"), "mark");
    assert_eq!(action(&run, "revived"), "mark");
    assert!(
        run["idle"]["marked_ms"].is_null(),
        "decisions show the state before the run"
    );
    let marked = gc(&b, false);
    assert!(marked["idle"]["marked_ms"].as_i64().is_some());
    assert_eq!(action(&marked, "idle"), "wait", "{:?}", marked["idle"]);
    assert!(metric(&b, "fjord_topic_gc_actions_total{action=\"mark\"}") >= Some(2.0));
    assert!(metric(&b, "fjord_topic_gc_actions_total{action=\"skip\"}") >= Some(3.0));
    assert!(metric(&b, "fjord_topic_idle_seconds{topic=\"idle\"}") >= Some(2.0));
    assert_eq!(
        metric(&b, "fjord_topic_idle_seconds{topic=\"__mine\"}"),
        None
    );

    // Produce to a marked topic is refused with POLICY_VIOLATION and the reason.
    let refused = produce(&b, "idle");
    assert!(!refused.ok(), "produce to a marked topic succeeded");
    let err = refused.stderr();
    assert!(
        err.contains("POLICY_VIOLATION") && err.contains("marked for deletion"),
        "{err}"
    );

    // A consumer fetch lifts the mark of "revived".
    consume(&b, "revived");
    assert!(
        wait_until(Duration::from_secs(10), || gc(&b, false)["revived"]
            ["marked_ms"]
            .is_null()),
        "revived still marked"
    );
    assert!(metric(&b, "fjord_topic_gc_actions_total{action=\"unmark\"}") >= Some(1.0));

    // Phase 2: after the grace, "idle" is deleted; "revived" is not.
    let mut last = BTreeMap::new();
    let deleted = wait_until(Duration::from_secs(30), || {
        last = gc(&b, true);
        last.get("idle").map(|d| d["action"].as_str()) == Some(Some("delete"))
    });
    assert!(deleted, "idle never deleted: {:?}", last.get("idle"));
    assert_ne!(action(&last, "revived"), "delete");
    let list = b.cli(&["topic", "list"]).success("topic list").stdout();
    assert!(!list.lines().any(|l| l.starts_with("idle ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("revived ")), "{list}");
    live.stop();

    let logs = b.all_logs();
    for line in ["topic GC", "mark lifted", "deleting topic"] {
        assert!(logs.contains(line), "no {line:?} in the log");
    }
    b.assert_no_panic_in_log();
}

/// Three nodes: activity and a GC mark written through one active controller are still there
/// once it is killed, and the next controller records new use (a consumer fetch unmarks).
#[test]
fn activity_and_marks_survive_controller_failover() {
    let mut c = Cluster::builder()
        .config("topic.activity.flush.ms = 300\ntopic.gc.grace.ms = 600000")
        .start();
    for t in ["used", "idle"] {
        c.node(1)
            .cli(&[
                "topic",
                "create",
                t,
                "--partitions",
                "3",
                "--replication-factor",
                "3",
            ])
            .success("create topic");
    }
    // "used" is produced to until "idle" is marked (through node 1's admin endpoint).
    let mut run = BTreeMap::new();
    let marked = wait_until(Duration::from_secs(60), || {
        let _ = produce(c.node(1), "used");
        run = gc(c.node(1), true);
        run.get("idle").map(|d| d["action"].as_str()) == Some(Some("mark"))
    });
    assert!(marked, "idle never marked: {:?}", run.get("idle"));
    let before = gc(c.node(2), false);
    assert!(
        before["used"]["last_produce_ms"].is_i64(),
        "{}",
        before["used"]
    );
    assert!(before["idle"]["marked_ms"].is_i64(), "{}", before["idle"]);

    let active = c.active_controller(1);
    c.kill9(active);
    let survivor = if active == 1 { 2 } else { 1 };
    c.wait_status(survivor, "a new active controller", |s| {
        s["active_controller"]
            .as_i64()
            .is_some_and(|a| a as usize != active)
    });
    let after = gc(c.node(survivor), false);
    assert!(
        after["used"]["last_produce_ms"].as_i64() >= before["used"]["last_produce_ms"].as_i64(),
        "{} vs {}",
        after["used"],
        before["used"]
    );
    assert_eq!(after["idle"]["marked_ms"], before["idle"]["marked_ms"]);

    // A consumer fetch through a survivor reaches the new controller and lifts the mark.
    let lifted = wait_until(Duration::from_secs(60), || {
        let _ =
            c.node(survivor)
                .cli(&["consume", "idle", "--from-beginning", "--timeout-ms", "300"]);
        gc(c.node(survivor), false)["idle"]["marked_ms"].is_null()
    });
    assert!(lifted, "idle still marked after a consumer fetch");
    c.start_node(active);
    c.assert_no_panic_in_logs();
}
