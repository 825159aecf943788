//! Go clients against a real broker: franz-go (with kadm) and IBM/sarama, driven by the program
//! in `tests/clients/go` (built into `tests/clients/go/bin/fjord-go-clients` by
//! `scripts/setup-go-clients.sh`, which `scripts/setup-test-deps.sh` runs). Each scenario checks
//! what it reads itself and prints one JSON line; the tests here assert on that line.
//!
//! - franz-go: produce with acks all (idempotent) / leader / none and all four codecs, keys and
//!   headers, read back in order; consumer groups with the cooperative-sticky and range
//!   balancers and with the KIP-848 protocol (broker-side range and uniform assignors); kadm over
//!   the admin APIs and their error paths; acks=all while the leader of an RF-3 topic is killed.
//! - sarama: SyncProducer and AsyncProducer (idempotent, all codecs), partition consumers,
//!   ConsumerGroup (range, sticky, cooperative-sticky), ClusterAdmin; with `Version` = 4.0.0
//!   and with sarama's default version.
//!
//! Known gaps are asserted as such (see docs/compatibility.md, "Go clients"), so that closing
//! one makes its test point at the doc to update.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Background, Cluster};
use common::{count_lines, repo_root, run, wait_until, FjordProcess};
use serde_json::Value;

/// A single-node broker as the tests here want it: no delay before a new group's first
/// rebalance (Kafka's default of 3 s would only slow the group scenarios down).
fn broker() -> FjordProcess {
    FjordProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"])
}

/// The scenario program, built by scripts/setup-go-clients.sh; fails the test if it is missing
/// or older than its sources.
fn go_bin() -> PathBuf {
    let module = repo_root().join("tests/clients/go");
    let p = module.join("bin/fjord-go-clients");
    assert!(
        p.is_file(),
        "{} not found: run scripts/setup-test-deps.sh (it builds tests/clients/go with \
         scripts/setup-go-clients.sh)",
        p.display()
    );
    let modified = |f: &std::path::Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let built = modified(&p).expect("binary mtime");
    for entry in std::fs::read_dir(&module).expect("read tests/clients/go") {
        let f = entry.expect("dir entry").path();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".go") || name == "go.mod" || name == "go.sum" {
            assert!(
                modified(&f).is_some_and(|m| m <= built),
                "{} is newer than {}: run scripts/setup-go-clients.sh",
                f.display(),
                p.display()
            );
        }
    }
    p
}

fn go_command(bootstrap: &str, client: &str, scenario: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(go_bin());
    cmd.args([client, scenario, "--bootstrap", bootstrap])
        .args(args);
    cmd
}

/// Runs a scenario to success and returns its JSON line.
fn go(bootstrap: &str, client: &str, scenario: &str, args: &[&str]) -> Value {
    let t0 = Instant::now();
    let what = format!("{client} {scenario} {}", args.join(" "));
    let r = run(
        go_command(bootstrap, client, scenario, args),
        None,
        Duration::from_secs(150),
    )
    .success(&what);
    let line = r
        .stdout()
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{what}: no output\n{}", r.describe()))
        .to_string();
    let v: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{what}: bad JSON {line:?}: {e}\n{}", r.describe()));
    assert_eq!(v["ok"], true, "{what}: {v}");
    eprintln!("{what} ({:.1?}): {v}", t0.elapsed());
    v
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Two members' assignments: neither empty, no partition in both, all `n` covered.
fn assert_divided(res: &Value, n: i64) {
    let a = ints(&res["assignment_a"]);
    let b = ints(&res["assignment_b"]);
    assert!(!a.is_empty() && !b.is_empty(), "{res}");
    let mut all: Vec<i64> = a.iter().chain(b.iter()).copied().collect();
    all.sort();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "overlap or gap: {res}");
}

/// What every group scenario reports: 4 rounds of 300 records read exactly once, the new
/// member after the group emptied read only the 300 records produced meanwhile, the group was
/// Empty once everyone left.
fn assert_group_run(res: &Value) {
    assert_divided(res, 6);
    assert_eq!(res["expected"], 1200, "{res}");
    assert_eq!(res["consumed"], 1200, "{res}");
    assert_eq!(res["duplicates"], 0, "{res}");
    assert_eq!(res["resumed_records"], 300, "{res}");
    assert_eq!(res["resumed_read"], 300, "re-read committed records: {res}");
    assert_eq!(res["state_after_leave"], "Empty", "{res}");
}

#[test]
fn franz_go_produce_every_acks_and_codec_then_consume() {
    let broker = broker();
    let res = go(broker.bootstrap(), "franz", "produce", &["--count", "300"]);
    assert_eq!(res["configs"].as_array().unwrap().len(), 15, "{res}");
    assert_eq!(res["expected"], 4500, "{res}");
    assert_eq!(res["consumed"], 4500, "{res}");
    assert_eq!(res["end_offsets_total"], 4500, "{res}");
    assert_eq!(res["duplicates"], 0, "{res}");
    // acks=all and acks=1 report offsets, which the consumer found the records at.
    assert_eq!(res["acked"], 3000, "{res}");
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        assert!(
            res["batches_read"][codec].as_i64().unwrap_or(0) > 0,
            "no {codec} batch read back: {res}"
        );
    }
    broker.assert_no_panic_in_log();
}

#[test]
fn franz_go_consumer_groups_classic_and_kip848() {
    let broker = broker();
    for (balancer, protocol, api, assignor) in [
        (
            "cooperative-sticky",
            "classic",
            "DescribeGroups",
            "cooperative-sticky",
        ),
        ("range", "classic", "DescribeGroups", "range"),
        ("848-range", "consumer", "ConsumerGroupDescribe", "range"),
        (
            "848-uniform",
            "consumer",
            "ConsumerGroupDescribe",
            "uniform",
        ),
    ] {
        let res = go(
            broker.bootstrap(),
            "franz",
            "group",
            &["--balancer", balancer],
        );
        assert_group_run(&res);
        assert_eq!(res["protocol"], protocol, "{res}");
        let d = &res["described"];
        assert_eq!(d["api"], api, "{res}");
        assert_eq!(d["assignor"], assignor, "{res}");
        assert_eq!(d["members"], 2, "{res}");
        // ListGroups v5 tells the group's type.
        assert_eq!(d["type"], protocol, "{res}");
        assert_eq!(d["listed_state"], "Stable", "{res}");
        assert_eq!(res["lost_events"], 0, "{res}");
        assert!(
            res["commit_errors"].as_array().is_none_or(|e| e.is_empty()),
            "{res}"
        );
    }
    broker.assert_no_panic_in_log();
}

#[test]
fn franz_go_kadm_admin_and_error_paths() {
    let broker = broker();
    let res = go(broker.bootstrap(), "franz", "admin", &[]);
    let brokers = ints(&res["brokers"]);
    assert_eq!(brokers.len(), 1, "{res}");
    assert_eq!(res["controller"], brokers[0], "{res}");
    assert_eq!(res["create_existing"], "TOPIC_ALREADY_EXISTS", "{res}");
    assert_eq!(
        res["describe_unknown"], "UNKNOWN_TOPIC_OR_PARTITION",
        "{res}"
    );
    assert_eq!(res["alter_unknown_config"], "INVALID_CONFIG", "{res}");
    assert_eq!(res["shrink_partitions"], "INVALID_PARTITIONS", "{res}");
    assert_eq!(
        res["offsets"],
        serde_json::json!({"start": 0, "end": 10, "by_time": 5}),
        "{res}"
    );
    assert_eq!(res["low_watermark"], 4, "{res}");
    assert_eq!(res["offset_delete"], "ok", "{res}");
    assert_eq!(res["live_group"]["state"], "Stable", "{res}");
    assert_eq!(res["delete_live_group"], "NON_EMPTY_GROUP", "{res}");
    for (p, e) in res["elect_leaders"].as_object().unwrap() {
        assert_eq!(e, "ELECTION_NOT_NEEDED", "{p}: {res}");
    }
    assert_eq!(
        res["produce_unknown"], "UNKNOWN_TOPIC_OR_PARTITION",
        "{res}"
    );
    assert_eq!(res["delete_unknown"], "UNKNOWN_TOPIC_OR_PARTITION", "{res}");
    // AlterConfigs (API 33, the non-incremental one): the given set replaces the topic's
    // dynamic configs (the scenario checks that a key left out is back to its default).
    assert_eq!(res["alter_configs_whole_set"], "ok", "{res}");
    broker.assert_no_panic_in_log();
}

#[test]
fn sarama_produce_sync_and_async_with_newest_and_default_version() {
    let broker = broker();
    for (version, reported) in [("4.0.0", "4.0.0"), ("default", "2.8.0")] {
        let topic = format!("sarama-produce-{version}");
        let res = go(
            broker.bootstrap(),
            "sarama",
            "produce",
            &["--version", version, "--topic", &topic, "--count", "300"],
        );
        assert_eq!(res["version"], reported, "{res}");
        assert_eq!(res["configs"].as_array().unwrap().len(), 10, "{res}");
        assert_eq!(res["expected"], 3000, "{res}");
        assert_eq!(res["consumed"], 3000, "{res}");
        assert_eq!(res["acked"], 3000, "{res}");
        assert_eq!(res["duplicates"], 0, "{res}");
    }
    broker.assert_no_panic_in_log();
}

#[test]
fn sarama_consumer_groups_rebalance_and_resume() {
    let broker = broker();
    for (strategy, version) in [
        ("range", "4.0.0"),
        ("sticky", "4.0.0"),
        ("cooperative-sticky", "4.0.0"),
        ("range", "default"),
    ] {
        let name = format!("sarama-group-{strategy}-{version}");
        let res = go(
            broker.bootstrap(),
            "sarama",
            "group",
            &[
                "--strategy",
                strategy,
                "--version",
                version,
                "--topic",
                &name,
                "--group",
                &name,
            ],
        );
        assert_group_run(&res);
        assert!(
            res["errors"].as_array().is_none_or(|e| e.is_empty()),
            "{res}"
        );
    }
    broker.assert_no_panic_in_log();
}

#[test]
fn sarama_cluster_admin_with_newest_and_default_version() {
    let broker = broker();
    for version in ["4.0.0", "default"] {
        let prefix = format!("sarama-admin-{version}");
        let res = go(
            broker.bootstrap(),
            "sarama",
            "admin",
            &["--version", version, "--topic", &prefix],
        );
        assert_eq!(ints(&res["brokers"]).len(), 1, "{res}");
        assert_eq!(res["create_existing"], "TOPIC_ALREADY_EXISTS", "{res}");
        assert_eq!(
            res["describe_unknown"], "UNKNOWN_TOPIC_OR_PARTITION",
            "{res}"
        );
        assert_eq!(res["alter_unknown_config"], "INVALID_CONFIG", "{res}");
        assert_eq!(res["shrink_partitions"], "INVALID_PARTITIONS", "{res}");
        assert_eq!(
            res["offsets"],
            serde_json::json!({"oldest": 4, "newest": 10}),
            "{res}"
        );
        assert_eq!(
            res["delete_records_unknown"], "UNKNOWN_TOPIC_OR_PARTITION",
            "{res}"
        );
        assert_eq!(res["committed"], 7, "{res}");
        assert_eq!(res["offset_delete"], "ok", "{res}");
        assert_eq!(res["live_group"]["state"], "Stable", "{res}");
        assert_eq!(res["delete_live_group"], "NON_EMPTY_GROUP", "{res}");
        for (p, e) in res["elect_leaders"].as_object().unwrap() {
            assert_eq!(e, "ELECTION_NOT_NEEDED", "{p}: {res}");
        }
        assert_eq!(res["delete_unknown"], "UNKNOWN_TOPIC_OR_PARTITION", "{res}");
        // ClusterAdmin.AlterConfig sends AlterConfigs (API 33): the whole set is replaced.
        assert_eq!(res["alter_config"], "ok", "{res}");
    }
    broker.assert_no_panic_in_log();
}

/// An idempotent franz-go producer with acks=all keeps producing to an RF-3 topic with
/// min.insync.replicas=2 while the leader of partition 0 is killed with SIGKILL: it goes on
/// against the new leader, and every record it was told is stored is read back at the offset
/// it was acknowledged at, once.
#[test]
fn franz_go_acks_all_loses_nothing_when_the_leader_is_killed() {
    let t0 = Instant::now();
    let mut c = Cluster::builder()
        .config("replica.lag.time.max.ms = 2000")
        .start();
    let topic = "go-kill-leader";
    c.node(1)
        .cli(&[
            "topic",
            "create",
            topic,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ])
        .success("create topic");
    let layout = c.wait_isr(topic, None, 3);
    let bootstrap = c.bootstrap_all();

    // kadm against the cluster: three brokers, the controller among them, RF 3 topics.
    let admin = go(&bootstrap, "franz", "admin", &["--topic", "kadm-cluster"]);
    assert_eq!(ints(&admin["brokers"]), vec![1, 2, 3], "{admin}");

    let scratch = c.scratch();
    let acks = scratch.join("acks.txt");
    let stop = scratch.join("stop");
    let mut producer = Background::spawn(
        go_command(
            &bootstrap,
            "franz",
            "produce-acked",
            &[
                "--topic",
                topic,
                "--acks-out",
                acks.to_str().unwrap(),
                "--stop-file",
                stop.to_str().unwrap(),
                "--duration",
                "90s",
                "--timeout",
                "150s",
            ],
        ),
        &scratch,
        "franz-producer",
    );
    let wait_acked = |producer: &mut Background, n: usize, what: &str| {
        let ok = wait_until(Duration::from_secs(60), || {
            count_lines(&acks) >= n || !producer.is_running()
        });
        assert!(
            ok && count_lines(&acks) >= n,
            "{what}: {} acknowledged, want {n}\n{}",
            count_lines(&acks),
            producer.output()
        );
    };
    wait_acked(&mut producer, 500, "first records");

    let leader = layout[&0].leader as usize;
    let before = count_lines(&acks);
    let killed_at = Instant::now();
    c.kill9(leader);
    c.wait_layout(topic, "new leaders", |l| {
        l.values()
            .all(|i| i.leader >= 0 && i.leader as usize != leader)
    });
    let elected = killed_at.elapsed();
    // What was buffered during the election is acknowledged first, then new records go to
    // the new leaders (at about 500 a second).
    wait_acked(
        &mut producer,
        before + 500,
        "produce with the old leader down",
    );
    let resumed = killed_at.elapsed();
    let at_resume = count_lines(&acks);
    wait_acked(
        &mut producer,
        at_resume + 1500,
        "produce to the new leaders",
    );
    eprintln!(
        "killed node {leader} (leader of partition 0) after {before} acks; new leaders after \
         {elected:.2?}, produce resumed after {resumed:.2?}, {} acks after {:.2?}",
        count_lines(&acks),
        killed_at.elapsed()
    );
    std::fs::write(&stop, b"").expect("write stop file");
    let status = producer.wait(Duration::from_secs(150));
    assert!(status.success(), "producer failed\n{}", producer.output());
    let line = producer.stdout();
    let summary: Value = serde_json::from_str(line.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("producer summary: {e}\n{}", producer.output()));
    eprintln!("producer: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["acked"], summary["produced"], "{summary}");
    let acked = summary["acked"].as_i64().unwrap();
    assert_eq!(count_lines(&acks) as i64, acked, "{summary}");

    let verified = go(
        &bootstrap,
        "franz",
        "verify-acked",
        &["--topic", topic, "--acks-in", acks.to_str().unwrap()],
    );
    assert_eq!(verified["acked"], acked, "{verified}");
    assert_eq!(verified["lost"], 0, "{verified}");
    assert_eq!(verified["moved"], 0, "{verified}");
    assert_eq!(verified["duplicates"], 0, "{verified}");
    assert_eq!(
        verified["records_in_topic"], acked,
        "every record in the log was acknowledged exactly once: {verified}"
    );
    c.assert_no_panic_in_logs();
    eprintln!("test took {:?}", t0.elapsed());
}
