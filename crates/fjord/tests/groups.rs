//! Consumer groups with real clients against a real `fjord` process: librdkafka (classic with
//! range and cooperative-sticky, static membership, KIP-848), kafka-python and aiokafka, the
//! `fjord group` CLI, and offsets surviving consumer and broker restarts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::member::Member;
use common::FjordProcess;
use serde_json::Value;

const NO_DELAY: &[&str] = &["--set", "group.initial.rebalance.delay.ms=0"];

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn produce(broker: &FjordProcess, topic: &str, start: usize, count: usize) {
    let acks = broker.scratch_dir().join(format!("acks-{start}"));
    broker
        .python(
            "ck_produce.py",
            &[
                "--topic",
                topic,
                "--count",
                &count.to_string(),
                "--start-index",
                &start.to_string(),
                "--acks-out",
                acks.to_str().unwrap(),
            ],
        )
        .success("produce");
}

fn value_set(start: usize, count: usize) -> BTreeSet<String> {
    // The value prefix of records.py's record i is "value-<i>-".
    (start..start + count)
        .map(|i| format!("value-{i}-"))
        .collect()
}

fn prefixes(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            let mut it = v.splitn(3, '-');
            format!("{}-{}-", it.next().unwrap(), it.next().unwrap())
        })
        .collect()
}

fn rebalances(broker: &FjordProcess, kind: &str) -> u64 {
    let m = broker.http_get("/metrics").body;
    m.lines()
        .find(|l| l.starts_with(&format!("fjord_group_rebalances_total{{type=\"{kind}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_consumers_share_six_partitions_and_resume_after_consumer_and_broker_restarts() {
    let mut broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("orders", 6, &[]);
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::start(&broker, &format!("m{i}"), "orders", "g1", &[]))
        .collect();
    wait_for(
        "three members with two partitions each",
        Duration::from_secs(30),
        || members.iter().all(|m| m.owned().len() == 2),
    );
    let all: BTreeSet<i64> = members.iter().flat_map(|m| m.owned()).collect();
    assert_eq!(all, (0..6).collect());

    produce(&broker, "orders", 0, 600);
    wait_for("600 records consumed", Duration::from_secs(30), || {
        members.iter().map(|m| m.of("msg").len()).sum::<usize>() >= 600
    });
    let mut seen: Vec<String> = members.iter().flat_map(|m| prefixes(&m.values())).collect();
    seen.sort();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 600, "every record consumed exactly once");
    assert_eq!(unique, value_set(0, 600));
    for m in &members {
        for e in m.of("msg") {
            assert!(m.owned().contains(&e["p"].as_i64().unwrap()));
        }
    }

    // One leaves: the other two take over its partitions.
    members[2].stop();
    wait_for(
        "two members with three partitions each",
        Duration::from_secs(30),
        || members[..2].iter().all(|m| m.owned().len() == 3),
    );

    // Kill the rest without committing anything more; produce; restart the broker.
    for m in members.iter_mut() {
        m.kill9();
    }
    produce(&broker, "orders", 600, 60);
    broker.restart();
    let again = Member::start(&broker, "after", "orders", "g1", &[]);
    wait_for(
        "the 60 new records after the restarts",
        Duration::from_secs(40),
        || again.of("msg").len() >= 60,
    );
    std::thread::sleep(Duration::from_secs(1));
    let got: BTreeSet<String> = prefixes(&again.values()).into_iter().collect();
    assert_eq!(
        again.of("msg").len(),
        60,
        "resumed at the committed offsets"
    );
    assert_eq!(got, value_set(600, 60));
    drop(again);
    broker.assert_no_panic_in_log();
}

#[test]
fn static_member_restart_keeps_its_partitions_without_rebalance_and_expiry_rebalances() {
    let broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("st", 6, &[]);
    let args_a = ["--instance-id", "pod-a", "--session-timeout-ms", "6000"];
    let args_b = ["--instance-id", "pod-b", "--session-timeout-ms", "6000"];
    let mut a = Member::start(&broker, "a1", "st", "gs", &args_a);
    let b = Member::start(&broker, "b1", "st", "gs", &args_b);
    wait_for(
        "both static members assigned",
        Duration::from_secs(30),
        || a.owned().len() == 3 && b.owned().len() == 3,
    );
    let before = rebalances(&broker, "classic");
    let a_parts = a.owned();
    let b_revokes = b.of("revoke").len();

    // Restart pod-a within its session timeout: same partitions, no rebalance.
    a.kill9();
    let a2 = Member::start(&broker, "a2", "st", "gs", &args_a);
    wait_for("pod-a back", Duration::from_secs(20), || {
        a2.owned().len() == 3
    });
    assert_eq!(a2.owned(), a_parts, "static member got its partitions back");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rebalances(&broker, "classic"),
        before,
        "no rebalance for a static rejoin"
    );
    assert_eq!(
        b.of("revoke").len(),
        b_revokes,
        "pod-b kept its partitions while pod-a restarted"
    );

    // pod-a goes away for longer than the session timeout: the group rebalances.
    drop(a2);
    wait_for(
        "pod-b owns all six after pod-a's session expired",
        Duration::from_secs(30),
        || b.owned().len() == 6,
    );
    assert!(rebalances(&broker, "classic") > before);
    broker.assert_no_panic_in_log();
}

#[test]
fn cooperative_sticky_rebalances_incrementally() {
    let broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("coop", 6, &[]);
    let coop = ["--assignor", "cooperative-sticky"];
    let a = Member::start(&broker, "a", "coop", "gc", &coop);
    wait_for(
        "first member owns everything",
        Duration::from_secs(30),
        || a.owned().len() == 6,
    );
    let b = Member::start(&broker, "b", "coop", "gc", &coop);
    wait_for("three partitions each", Duration::from_secs(30), || {
        a.owned().len() == 3 && b.owned().len() == 3
    });
    // Incremental: the first member only gave up what moved, never all six.
    for e in a.of("revoke") {
        assert!(
            e["parts"].as_array().unwrap().len() <= 3,
            "stop-the-world revoke: {e}"
        );
    }
    produce(&broker, "coop", 0, 100);
    wait_for("100 records", Duration::from_secs(30), || {
        a.of("msg").len() + b.of("msg").len() >= 100
    });
    broker.assert_no_panic_in_log();
}

#[test]
fn kip848_consumer_protocol_with_librdkafka() {
    let broker = FjordProcess::start(&["--set", "group.consumer.heartbeat.interval.ms=500"]);
    broker.create_topic("next", 6, &[]);
    let proto = ["--protocol", "consumer"];
    let mut a = Member::start(&broker, "a", "next", "g848", &proto);
    wait_for(
        "first member owns everything",
        Duration::from_secs(30),
        || a.owned().len() == 6,
    );
    let b = Member::start(&broker, "b", "next", "g848", &proto);
    wait_for("three partitions each", Duration::from_secs(30), || {
        a.owned().len() == 3 && b.owned().len() == 3
    });
    let (pa, pb) = (a.owned(), b.owned());
    assert!(pa.is_disjoint(&pb));
    produce(&broker, "next", 0, 300);
    wait_for("300 records", Duration::from_secs(30), || {
        a.of("msg").len() + b.of("msg").len() >= 300
    });
    let mut seen = prefixes(&a.values());
    seen.extend(prefixes(&b.values()));
    assert_eq!(seen.len(), 300, "each record once");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), value_set(0, 300));
    // A leaves: B takes everything.
    a.stop();
    wait_for("b owns all six", Duration::from_secs(30), || {
        b.owned().len() == 6
    });
    assert!(rebalances(&broker, "consumer") >= 3);
    broker.assert_no_panic_in_log();
}

#[test]
fn kafka_python_and_aiokafka_group_consumers_share_committed_offsets() {
    let broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("py", 3, &[]);
    produce(&broker, "py", 0, 90);
    let r = broker.python(
        "group_py_clients.py",
        &[
            "--topic", "py", "--group", "gpy", "--first", "50", "--total", "90",
        ],
    );
    let r = r.success("kafka-python then aiokafka in one group");
    let summary: BTreeMap<String, Value> = serde_json::from_str(r.stdout().trim()).unwrap();
    assert_eq!(summary["kafka_python"], 50);
    assert_eq!(
        summary["aiokafka"], 40,
        "aiokafka resumed at kafka-python's commits"
    );
    assert_eq!(summary["duplicates"], 0);
    broker.assert_no_panic_in_log();
}

#[test]
fn group_cli_lists_describes_resets_and_deletes() {
    let broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("cli", 2, &[]);
    produce(&broker, "cli", 0, 40);
    let mut m = Member::start(&broker, "m", "cli", "gcli", &["--instance-id", "pod-1"]);
    wait_for("40 records", Duration::from_secs(30), || {
        m.of("commit").len() >= 40
    });

    let out = broker
        .cli(&["group", "list"])
        .success("group list")
        .stdout();
    assert!(
        out.contains("gcli") && out.contains("classic") && out.contains("Stable"),
        "{out}"
    );
    let out = broker
        .cli(&["group", "describe", "gcli"])
        .success("describe")
        .stdout();
    assert!(out.contains("state:         Stable"), "{out}");
    assert!(
        out.contains("instance=pod-1") && out.contains("host=/127.0.0.1"),
        "{out}"
    );
    assert!(out.contains("assignment: cli:0,1"), "{out}");
    let lag: Vec<&str> = out.lines().filter(|l| l.starts_with("cli ")).collect();
    assert_eq!(lag.len(), 2, "{out}");
    assert!(
        lag.iter().all(|l| l.trim_end().ends_with(" 0")),
        "no lag: {out}"
    );

    // Reset needs an empty group.
    let r = broker.cli(&[
        "group",
        "reset-offsets",
        "gcli",
        "--topic",
        "cli",
        "--to-earliest",
        "--execute",
    ]);
    assert!(!r.ok(), "reset of a live group must fail");
    let r = broker.cli(&["group", "delete", "gcli"]);
    assert!(
        !r.ok() && r.stderr().contains("NON_EMPTY_GROUP (68)"),
        "{}",
        r.describe()
    );
    m.stop();
    wait_for("group empty", Duration::from_secs(20), || {
        broker
            .cli(&["group", "list", "--state", "Empty"])
            .stdout()
            .contains("gcli")
    });
    broker
        .cli(&[
            "group",
            "reset-offsets",
            "gcli",
            "--topic",
            "cli",
            "--to-earliest",
            "--execute",
        ])
        .success("reset-offsets");
    let out = broker
        .cli(&["group", "describe", "gcli"])
        .success("describe")
        .stdout();
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("cli ")).collect();
    let total_lag: i64 = rows
        .iter()
        .map(|l| l.split_whitespace().last().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total_lag, 40, "{out}");
    broker.cli(&["group", "delete", "gcli"]).success("delete");
    let out = broker.cli(&["group", "list"]).success("list").stdout();
    assert!(!out.contains("gcli"), "{out}");
    broker.assert_no_panic_in_log();
}

/// librdkafka's `assign()` consumer commits to a group it never joins, with epoch -1, which
/// Kafka accepts while the group has no members. confluent-kafka 2.6.1 sends an empty member id
/// there; newer librdkafka (as bundled in rdkafka-sys, tests 0030/0130) sends its own, which got
/// UNKNOWN_MEMBER_ID — that case is `empty_consumer_group_takes_epoch_minus_one_commits_from_any_member_id`
/// in fjord-group's state-machine tests.
#[test]
fn assign_consumer_commits_without_membership_in_both_protocols() {
    let broker = FjordProcess::start(NO_DELAY);
    broker.create_topic("assigned", 1, &[]);
    for (protocol, group) in [("consumer", "ga848"), ("classic", "gaclassic")] {
        let r = broker
            .python(
                "ck_assign_commit.py",
                &[
                    "--topic",
                    "assigned",
                    "--group",
                    group,
                    "--protocol",
                    protocol,
                ],
            )
            .success("ck_assign_commit.py");
        let v: Value = serde_json::from_str(r.stdout().trim()).unwrap();
        assert_eq!(v["commit"], "OK", "{protocol}: {v}");
        assert!(v["consumed"].as_i64().unwrap() >= 10, "{protocol}: {v}");
        assert_eq!(v["committed"], v["consumed"], "{protocol}: {v}");
    }
    broker.assert_no_panic_in_log();
}
