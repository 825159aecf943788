//! Maintenance mode (issue 17) on four real `fjord` processes in racks a, b, c, a (nodes 1-3
//! broker and controller, node 4 a broker), under continuous acks=all idempotent produce and a
//! consumer group:
//!
//! - `fjord broker maintenance enable 4 --drain-replicas --throttle 1MB` moves leadership off
//!   broker 4 at once and every replica off it (each partition keeps its three racks, so rack
//!   a's other broker, 1, takes them); the active controller is killed and broker 4 restarted
//!   mid-drain, and the drain still completes; `maintenance status 4 --wait` ends with "safe
//!   to remove: yes", the throttle configs are gone, the metrics say so;
//! - refusals, each one line with Kafka's error name: draining broker 2 (the last of rack b,
//!   RF 3 = racks), removing broker 3 (holds data; also through Kafka's UnregisterBroker, and
//!   BROKER_ID_NOT_REGISTERED for an unknown id), removing broker 4 while it runs; once
//!   stopped, `fjord broker remove 4` unregisters it;
//! - the producer saw only retriable errors and every acknowledged record is read back; the
//!   group member saw only retriable errors and kept consuming.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{Background, Cluster};
use common::member::Member;
use common::records;
use common::{count_lines, python, python_command, read_json_lines, CmdResult, CMD_TIMEOUT};
use fjord_client::{Connection, ConnectionConfig};
use kafka_protocol::messages::{BrokerId, UnregisterBrokerRequest};
use serde_json::Value;

const TOPIC: &str = "orders";
/// Value padding: ~1 KB records, so the drain has megabytes to copy.
const PAD: usize = 1000;
/// Records produced before the drain.
const PRELOAD: u64 = 8000;

/// Errors a producer retries while leaders move and brokers come and go.
const RETRIABLE: &[&str] = &[
    "NOT_LEADER_OR_FOLLOWER",
    "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "REQUEST_TIMED_OUT",
];

/// Errors a group member may report while its coordinator moves or a broker is killed.
const MEMBER_RETRIABLE: &[&str] = &[
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "REQUEST_TIMED_OUT",
    "_TRANSPORT",
    "_TIMED_OUT",
    "NOT_LEADER_OR_FOLLOWER",
    "REBALANCE_IN_PROGRESS",
];

/// After a coordinator is killed with kill -9 a dynamic member may also have to rejoin (its
/// commit answered UNKNOWN_MEMBER_ID; librdkafka rejoins at once) — not maintenance's doing.
const MEMBER_REJOIN: &[&str] = &["UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION"];

/// The member's errors that are none of `allowed`.
fn unexpected(errors: &[Value], allowed: &[&[&str]]) -> Vec<Value> {
    errors
        .iter()
        .filter(|e| {
            let err = e["err"].as_str().unwrap_or("");
            !allowed
                .iter()
                .any(|names| names.iter().any(|n| err.contains(n)))
        })
        .cloned()
        .collect()
}

fn rack(node: i64) -> &'static str {
    ["a", "b", "c", "a"][node as usize - 1]
}

/// `fjord broker --admin <node via's admin> <args>`.
fn broker_cli(c: &Cluster, via: usize, args: &[&str]) -> CmdResult {
    let mut all = vec!["broker", "--admin", c.node(via).admin()];
    all.extend_from_slice(args);
    c.node(via).cli(&all)
}

/// The failure's single stderr line.
fn refusal(r: CmdResult, what: &str) -> String {
    let r = r.failure(what);
    let err = r.stderr();
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    err
}

/// Kafka's UnregisterBroker (API 64) for `node` sent to `bootstrap`: (error code, message).
fn unregister_directly(bootstrap: &str, node: i32) -> (i16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(bootstrap, ConnectionConfig::default())
            .await
            .expect("connect");
        let resp = conn
            .send(&UnregisterBrokerRequest::default().with_broker_id(BrokerId(node)))
            .await
            .expect("UnregisterBroker");
        (
            resp.error_code,
            resp.error_message
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )
    })
}

/// `maintenance status N -o json` through `via`: the broker's entry.
fn status(c: &Cluster, via: usize, node: usize) -> Value {
    let r = broker_cli(
        c,
        via,
        &["maintenance", "status", &node.to_string(), "-o", "json"],
    )
    .success("maintenance status");
    let v: Value = serde_json::from_str(&r.stdout()).expect("status JSON");
    v["brokers"][0].clone()
}

fn producer_args(c: &Cluster, acks: &str, errors: &str) -> Vec<String> {
    [
        "--bootstrap",
        &c.bootstrap_all(),
        "--topic",
        TOPIC,
        "--acks",
        "all",
        "--idempotence",
        "--value-pad",
        &PAD.to_string(),
        "--acks-out",
        acks,
        "--errors-out",
        errors,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn check_producer(summary: &Value, errors: &[Value], what: &str) {
    assert!(summary["fatal"].is_null(), "{what}: fatal error: {summary}");
    let bad: Vec<&Value> = errors
        .iter()
        .filter(|e| !RETRIABLE.contains(&e["name"].as_str().unwrap_or("")))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: errors that are not retriable: {:?}; summary {summary}",
        &bad[..bad.len().min(3)]
    );
    assert_eq!(summary["unflushed"], 0, "{what}: undelivered: {summary}");
}

#[test]
fn drain_and_remove_a_broker_under_load_with_a_controller_failover() {
    let t0 = Instant::now();
    let mut c = Cluster::builder()
        .roles(&[
            "broker,controller",
            "broker,controller",
            "broker,controller",
            "broker",
        ])
        .config("replica.lag.time.max.ms = 2000")
        .node_config(4, "broker.rack = \"a\"")
        .start();
    c.node(1)
        .cli(&[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "6",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ])
        .success("create topic");
    let layout = c.wait_isr(TOPIC, None, 3);
    let on_4 = layout.values().filter(|p| p.replicas.contains(&4)).count();
    assert!(on_4 > 0, "placement put nothing on broker 4: {layout:#?}");
    for p in layout.values() {
        let racks: BTreeSet<&str> = p.replicas.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 3, "{layout:#?}");
    }

    // Data to move, then continuous produce and a consumer group.
    let dir = c.scratch();
    let (acks0, errors0) = (dir.join("preload.acks"), dir.join("preload.errors"));
    let mut args = producer_args(&c, acks0.to_str().unwrap(), errors0.to_str().unwrap());
    args.extend(["--count".into(), PRELOAD.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = python("repl_produce.py", &args, CMD_TIMEOUT).success("preload");
    let summary: Value = serde_json::from_str(r.stdout().trim()).expect("summary");
    check_producer(&summary, &read_json_lines(&errors0), "preload");
    let (acks, errors, stop) = (
        dir.join("live.acks"),
        dir.join("live.errors"),
        dir.join("live.stop"),
    );
    let mut cmd = python_command("repl_produce.py");
    cmd.args(producer_args(
        &c,
        acks.to_str().unwrap(),
        errors.to_str().unwrap(),
    ))
    .args(["--start-index", &PRELOAD.to_string(), "--rate", "300"])
    .arg("--stop-file")
    .arg(&stop);
    let mut producer = Background::spawn(cmd, &dir, "producer");
    // The group coordinators' topic exists before the group's first join (a join racing the
    // creation of `__consumer_offsets` can lose the group's membership record, which shows
    // only when the coordinator moves: a group-coordinator issue, not maintenance's).
    let _ = c.node(1).cli(&["group", "describe", "maintenance-group"]);
    c.wait_isr("__consumer_offsets", None, 3);
    let mut member = Member::start_at(
        &c.bootstrap_all(),
        &dir,
        "member",
        TOPIC,
        "maintenance-group",
        &["--timeout", "600"],
    );
    let waited = common::wait_until(Duration::from_secs(30), || count_lines(&acks) >= 300);
    assert!(waited, "producer not acknowledged\n{}", producer.output());

    // Refused, each with Kafka's code and a one-line reason, changing nothing.
    let err = refusal(
        broker_cli(&c, 1, &["maintenance", "enable", "2", "--drain-replicas"]),
        "draining the last broker of rack b",
    );
    assert!(
        err.contains("rack b") && err.contains("INVALID_REPLICA_ASSIGNMENT"),
        "{err}"
    );
    assert!(status(&c, 1, 2)["maintenance"].is_null());
    let err = refusal(
        broker_cli(&c, 1, &["remove", "3"]),
        "removing a broker with data",
    );
    assert!(
        err.contains("still holds") && err.contains("INVALID_REQUEST"),
        "{err}"
    );
    // The same through Kafka's UnregisterBroker, and an unknown id.
    let (code, message) = unregister_directly(c.node(2).bootstrap(), 3);
    assert_eq!(code, 42, "{message}");
    assert!(message.contains("still holds"), "{message}");
    assert_eq!(unregister_directly(c.node(2).bootstrap(), 9).0, 102);

    // The drain: leaderships leave at once, replicas at the throttled rate.
    let drain_started = Instant::now();
    let out = broker_cli(
        &c,
        1,
        &[
            "maintenance",
            "enable",
            "4",
            "--drain-replicas",
            "--throttle",
            "1MB",
        ],
    )
    .success("maintenance enable")
    .stdout();
    assert!(out.contains("moving off it"), "{out}");
    let s = status(&c, 2, 4);
    assert_eq!(s["leaders"], 0, "leaderships left on 4: {s}");
    // Clients ride over the leadership moves (the group's coordinator may be one of them):
    // the member goes on reading what the producer goes on writing.
    let read = member.of("msg").len();
    assert!(
        common::wait_until(Duration::from_secs(30), || member.of("msg").len()
            >= read + 100),
        "the member stopped reading after the leaderships moved: {:?}",
        member.of("error")
    );
    let member_errors = member.of("error");
    let bad = unexpected(&member_errors, &[MEMBER_RETRIABLE]);
    assert!(bad.is_empty(), "the group member saw {bad:?}");
    let errors_before_kill = member_errors.len();
    let s = status(&c, 2, 4);
    assert!(
        s["moving"].as_u64() > Some(0),
        "nothing moving any more: {s}"
    );
    assert_eq!(s["safe_to_remove"], false);

    // Kill the active controller mid-drain; the new one carries on.
    let active = c.active_controller(2);
    c.kill9(active);
    let follower = if active == 2 { 3 } else { 2 };
    c.wait_status(follower, "another active controller", |s| {
        s["active_controller"]
            .as_i64()
            .is_some_and(|n| n as usize != active)
    });
    c.start_node(active);
    // Broker 4 restarts mid-drain: it comes back in maintenance, cordoned, leading nothing.
    c.terminate(4, Duration::from_secs(30));
    c.start_node(4);
    let s = status(&c, follower, 4);
    assert!(
        s["maintenance"]["drain_replicas"] == true && s["cordoned"] == true,
        "{s}"
    );
    assert_eq!(s["leaders"], 0, "{s}");
    let table = c
        .node(follower)
        .cli(&["cluster", "status", "--admin", c.node(follower).admin()])
        .success("cluster status")
        .stdout();
    assert!(
        table.contains("yes (draining)") || table.contains("yes (drained)"),
        "{table}"
    );
    let r = broker_cli(
        &c,
        follower,
        &["maintenance", "status", "4", "--wait", "--timeout", "90"],
    )
    .success("waiting for the drain");
    let out = r.stdout();
    eprintln!(
        "drain: {:?} (active controller {active} killed mid-drain)\n{out}",
        drain_started.elapsed()
    );
    let throttled: f64 = (1..=3)
        .filter_map(|n| c.metric(n, "fjord_replication_throttled_bytes_total", &[]))
        .sum();
    assert!(throttled > 0.0, "the drain was not throttled");
    assert!(out.contains("safe to remove: yes"), "{out}");
    assert!(out.contains("partitions left"), "progress lines: {out}");

    let layout = c.wait_layout(TOPIC, "replicas off broker 4", |l| {
        l.values()
            .all(|p| !p.replicas.contains(&4) && p.leader >= 0)
    });
    for (p, info) in &layout {
        let racks: BTreeSet<&str> = info.replicas.iter().map(|b| rack(*b)).collect();
        assert_eq!(
            racks.len(),
            3,
            "partition {p} lost rack spread: {layout:#?}"
        );
    }
    let described = c
        .node(follower)
        .cli(&["topic", "describe", TOPIC, "-o", "json"])
        .success("describe")
        .stdout();
    assert!(
        !described.contains("throttled"),
        "throttles left: {described}"
    );
    let metric = |name: &str, labels: &[(&str, &str)]| c.metric(follower, name, labels);
    assert_eq!(
        metric("fjord_broker_maintenance", &[("node_id", "4")]),
        Some(1.0)
    );
    assert_eq!(
        metric("fjord_broker_maintenance_replicas", &[("node_id", "4")]),
        Some(0.0)
    );
    assert!(
        metric(
            "fjord_broker_maintenance_changes_total",
            &[("change", "drain_completed")]
        ) >= Some(1.0)
    );

    // Removal: refused while it runs, done once it is stopped.
    let err = refusal(
        broker_cli(&c, follower, &["remove", "4"]),
        "removing a running broker",
    );
    assert!(err.contains("running"), "{err}");
    c.terminate(4, Duration::from_secs(30));
    let out = broker_cli(&c, follower, &["remove", "4"])
        .success("remove 4")
        .stdout();
    assert!(out.contains("removed"), "{out}");
    let cluster = c.wait_status(follower, "broker 4 gone", |s| {
        s["brokers"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["node_id"] != 4))
    });
    assert_eq!(cluster["partitions"]["offline"], 0, "{cluster}");

    // Clients: only retriable errors, nothing acknowledged lost, the group kept reading.
    let read_before_stop = member.values().len();
    std::fs::write(&stop, b"").unwrap();
    let exit = producer.wait(Duration::from_secs(120));
    assert!(exit.success(), "{}", producer.output());
    let summary: Value = producer
        .stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("producer summary");
    check_producer(&summary, &read_json_lines(&errors), "live producer");
    member.stop();
    let member_errors = member.of("error");
    let bad = unexpected(
        &member_errors[errors_before_kill..],
        &[MEMBER_RETRIABLE, MEMBER_REJOIN],
    );
    assert!(bad.is_empty(), "the group member saw {bad:?}");
    assert!(
        read_before_stop > 300,
        "the group member read {read_before_stop}"
    );

    let mut all_acks = records::parse_acks(&read_json_lines(&acks0));
    all_acks.extend(records::parse_acks(&read_json_lines(&acks)));
    let dump = consume_all(&c, all_acks.len());
    records::assert_acks_present(&all_acks, &dump, PAD);
    c.assert_no_panic_in_logs();
    eprintln!(
        "maintenance test: {} records acknowledged, {} s",
        all_acks.len(),
        t0.elapsed().as_secs()
    );
}

/// Every record of the topic, read through the brokers still running.
fn consume_all(c: &Cluster, expect: usize) -> Vec<records::Dumped> {
    let out = c.scratch().join("dump.jsonl");
    let bootstrap = (1..=3)
        .map(|i| c.node(i).bootstrap().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let expect = expect.to_string();
    python(
        "ck_consume.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            TOPIC,
            "--out",
            out.to_str().unwrap(),
            "--expect",
            &expect,
        ],
        CMD_TIMEOUT,
    )
    .success("consume");
    records::parse_dump(&read_json_lines(&out))
}
