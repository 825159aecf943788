//! Client quotas (KIP-13, KIP-219, KIP-546) against a real `fjord` process with real clients:
//! AlterClientQuotas / DescribeClientQuotas through the `fjord quota` CLI and Kafka's own
//! `kafka-configs`, defaults and precedence, Kafka's error codes for bad input; a
//! confluent-kafka producer limited to 1 MB/s measured by the broker near 1 MB/s over 30 s
//! (± 10 %, [`RATE_TOLERANCE`]) with no errors while an unlimited one beside it runs much faster,
//! a consumer byte-rate quota likewise, and the throttle time reported to the clients
//! (librdkafka's statistics).

mod common;

/// How far a throttled client's rate over 30 s may be from its quota: issue 16's ± 10 %.
/// Kafka's algorithm alone would not meet it (a saturating client sends ~10 s worth at once
/// whenever its window empties, so a 30 s window read 0.91-0.92 MB/s); fjord also paces byte
/// rates within each one-second sample (`quota::Rate::sample_pace_ms`).
const RATE_TOLERANCE: f64 = 0.10;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{metric_value, Background};
use common::kafka::Tools;
use common::{python_bin, repo_root, FjordProcess};
use fjord_client::{Connection, ConnectionConfig};
use kafka_protocol::messages::{
    alter_client_quotas_request, describe_client_quotas_request, AlterClientQuotasRequest,
    DescribeClientQuotasRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

const MB: f64 = 1_048_576.0;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `fjord -o json quota describe ARGS`: entity → quotas.
fn describe(broker: &FjordProcess, args: &[&str]) -> Vec<(String, Value)> {
    let mut full = vec!["-o", "json", "quota", "describe"];
    full.extend_from_slice(args);
    let out = json(&broker.cli(&full).success("fjord quota describe").stdout());
    out["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["entity"].as_str().unwrap().to_string(),
                q["quotas"].clone(),
            )
        })
        .collect()
}

fn metric(broker: &FjordProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&broker.http_get("/metrics").body, name, labels).unwrap_or(0.0)
}

/// Send raw AlterClientQuotas / DescribeClientQuotas (for input the tools refuse to send).
fn raw<T>(bootstrap: &str, f: impl AsyncFnOnce(Connection) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(bootstrap, ConnectionConfig::default())
            .await
            .expect("connect");
        f(conn).await
    })
}

fn alter_entry(
    entity: &[(&str, Option<&str>)],
    key: &str,
    value: f64,
) -> alter_client_quotas_request::EntryData {
    alter_client_quotas_request::EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(sb(t))
                        .with_entity_name(n.map(sb))
                })
                .collect(),
        )
        .with_ops(vec![alter_client_quotas_request::OpData::default()
            .with_key(sb(key))
            .with_value(value)])
}

/// The fjord CLI and Kafka's kafka-configs set and describe quotas of users, client ids and
/// both, `<default>` entities included; DescribeClientQuotas filters (exact, default, any,
/// strict); bad input gets Kafka's codes and changes nothing; `--validate-only` writes nothing;
/// the quotas survive a restart (they live in the metadata log).
#[test]
fn alter_and_describe_with_the_cli_and_kafka_configs() {
    let mut broker = FjordProcess::start(&[]);
    let tools = Tools::new();
    let b = broker.bootstrap().to_string();
    // kafka-configs with these space-separated arguments.
    let kafka_configs = |args: &str| -> String {
        let mut full = vec!["--bootstrap-server", &b];
        full.extend(args.split_whitespace());
        tools.ok("kafka-configs", &full)
    };

    // The fjord CLI: a user, a client id, (user, client id), and the defaults.
    for args in [
        &["--user", "alice", "--producer-byte-rate", "2048"][..],
        &[
            "--client-id",
            "app",
            "--consumer-byte-rate",
            "4096",
            "--request-percentage",
            "12.5",
        ],
        &[
            "--user",
            "alice",
            "--client-id",
            "app",
            "--producer-byte-rate",
            "1024",
        ],
        &["--default-user", "--controller-mutation-rate", "10"],
        &["--default-client-id", "--producer-byte-rate", "8192"],
        &[
            "--user",
            "ANONYMOUS",
            "--default-client-id",
            "--consumer-byte-rate",
            "512",
        ],
    ] {
        let mut full = vec!["quota", "set"];
        full.extend_from_slice(args);
        let out = broker.cli(&full).success("fjord quota set").stdout();
        assert!(out.contains("changed"), "{out}");
    }
    // --validate-only checks and writes nothing.
    broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "dry",
            "--producer-byte-rate",
            "1",
            "--validate-only",
        ])
        .success("validate only");
    let all = describe(&broker, &[]);
    let entities: Vec<&str> = all.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        entities,
        vec![
            "client-id=<default>",
            "client-id=app",
            "user=<default>",
            "user=ANONYMOUS,client-id=<default>",
            "user=alice",
            "user=alice,client-id=app",
        ],
        "{all:?}"
    );
    assert_eq!(all[1].1["consumer_byte_rate"], 4096.0);
    assert_eq!(all[1].1["request_percentage"], 12.5);
    // Filters: exact user (not strict: its (user, client id) entity too), strict, default.
    let alice: Vec<String> = describe(&broker, &["--user", "alice"])
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(alice, vec!["user=alice", "user=alice,client-id=app"]);
    let strict = describe(&broker, &["--user", "alice", "--strict"]);
    assert_eq!(strict.len(), 1);
    assert_eq!(strict[0].1["producer_byte_rate"], 2048.0);
    let defaults = describe(&broker, &["--default-client-id"]);
    assert_eq!(defaults.len(), 2, "{defaults:?}");

    // Kafka's kafka-configs: add, describe, delete on client ids, the default, and a (user,
    // client id) entity.
    kafka_configs("--alter --entity-type clients --entity-name kc --add-config producer_byte_rate=1048576,consumer_byte_rate=2097152");
    let described = kafka_configs("--describe --entity-type clients --entity-name kc");
    assert!(
        described.contains("client-id 'kc'")
            && described.contains("producer_byte_rate=1048576.0")
            && described.contains("consumer_byte_rate=2097152.0"),
        "{described}"
    );
    kafka_configs(
        "--alter --entity-type clients --entity-default --add-config producer_byte_rate=65536",
    );
    kafka_configs("--alter --entity-type users --entity-name bob --entity-type clients --entity-name tool --add-config request_percentage=50");
    kafka_configs(
        "--alter --entity-type clients --entity-name kc --delete-config consumer_byte_rate",
    );
    let listed = kafka_configs("--describe --entity-type clients");
    assert!(
        listed.contains("client-id 'kc'") && !listed.contains("consumer_byte_rate=2097152"),
        "{listed}"
    );
    assert!(
        listed.contains("default client-id") && listed.contains("producer_byte_rate=65536.0"),
        "{listed}"
    );
    let kc = describe(&broker, &["--client-id", "kc", "--strict"]);
    assert_eq!(kc.len(), 1);
    assert_eq!(
        kc[0].1,
        serde_json::json!({"producer_byte_rate": 1048576.0})
    );
    let bob = describe(&broker, &["--user", "bob", "--client-id", "tool"]);
    assert_eq!(bob[0].1["request_percentage"], 50.0);
    // The default client id's producer rate was replaced, not added.
    let d = describe(&broker, &["--default-client-id", "--strict"]);
    assert_eq!(d[0].1["producer_byte_rate"], 65536.0);
    // The CLI removes one key with --delete.
    broker
        .cli(&[
            "quota",
            "set",
            "--user",
            "bob",
            "--client-id",
            "tool",
            "--delete",
            "request_percentage",
        ])
        .success("delete");
    assert!(describe(&broker, &["--user", "bob"]).is_empty());

    // Bad input: Kafka's INVALID_REQUEST (42) per entry, UNSUPPORTED_VERSION (35) for an
    // unknown entity type in a filter; nothing changes.
    let bad = broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "neg",
            "--producer-byte-rate",
            "-5",
        ])
        .failure("negative rate");
    assert!(
        bad.stderr().contains("(42)") && bad.stderr().contains("greater than 0"),
        "{}",
        bad.stderr()
    );
    let frac = broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "neg",
            "--producer-byte-rate",
            "1.5",
        ])
        .failure("fractional byte rate");
    assert!(frac.stderr().contains("fractional"), "{}", frac.stderr());
    let (codes, filter_code) = raw(&b, async |conn: Connection| {
        let alter = AlterClientQuotasRequest::default().with_entries(vec![
            alter_entry(&[("client-id", Some("x"))], "no_such_quota", 1.0),
            alter_entry(&[("group", Some("x"))], "producer_byte_rate", 1.0),
            alter_entry(&[], "producer_byte_rate", 1.0),
            alter_entry(&[("user", Some(""))], "producer_byte_rate", 1.0),
            alter_entry(&[("client-id", Some("ok"))], "producer_byte_rate", 100.0),
        ]);
        let resp = conn.send(&alter).await.expect("AlterClientQuotas");
        let codes: Vec<i16> = resp.entries.iter().map(|e| e.error_code).collect();
        let describe = DescribeClientQuotasRequest::default().with_components(vec![
            describe_client_quotas_request::ComponentData::default()
                .with_entity_type(sb("group"))
                .with_match_type(2)
                .with_match(None),
        ]);
        let d = conn.send(&describe).await.expect("DescribeClientQuotas");
        (codes, d.error_code)
    });
    assert_eq!(codes, vec![42, 42, 42, 42, 0]);
    assert_eq!(filter_code, 35);
    let unknown = tools.run(
        "kafka-configs",
        &[
            "--bootstrap-server",
            &b,
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            "kc",
            "--add-config",
            "no_such_quota=1",
        ],
        None,
    );
    assert!(
        !unknown.output.status.success(),
        "kafka-configs accepted an unknown quota key"
    );
    let names: Vec<String> = describe(&broker, &[]).into_iter().map(|(e, _)| e).collect();
    assert!(
        !names
            .iter()
            .any(|e| e.contains("neg") || e.contains("dry") || e == "client-id=x"),
        "{names:?}"
    );
    assert!(names.contains(&"client-id=ok".to_string()), "{names:?}");

    // In the metadata log: the same after a restart.
    let before = describe(&broker, &[]);
    broker.restart();
    assert_eq!(describe(&broker, &[]), before);
    broker.assert_no_panic_in_log();
}

/// Start a confluent-kafka client (tests/clients/ck_quota.py) in the background.
fn ck_quota(broker: &FjordProcess, name: &str, args: &[&str]) -> Background {
    let mut cmd = Command::new(python_bin());
    cmd.arg(repo_root().join("tests/clients/ck_quota.py"))
        .args(["--bootstrap", broker.bootstrap()])
        .args(args);
    Background::spawn(cmd, &broker.scratch_dir(), name)
}

/// Wait for a background client to finish and return its JSON summary (it must succeed).
fn finish(mut bg: Background) -> Value {
    let status = bg.wait(Duration::from_secs(120));
    assert!(status.success(), "client failed\n{}", bg.output());
    let out = bg.stdout();
    json(
        out.lines()
            .last()
            .unwrap_or_else(|| panic!("no output\n{}", bg.output())),
    )
}

/// Wait until `f` holds (polled every 100 ms) or fail with `what`.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes per second the broker took into `topic` (or gave out of it) over `window`, from its
/// own counters.
fn broker_rate(broker: &FjordProcess, counter: &str, topic: &str, window: Duration) -> f64 {
    let read = || metric(broker, counter, &[("topic", topic)]);
    let (start, t0) = (read(), Instant::now());
    std::thread::sleep(window);
    (read() - start) / t0.elapsed().as_secs_f64()
}

/// A producer whose client id is limited to 1 MB/s is measured by the broker at 1 MB/s
/// (± [`RATE_TOLERANCE`]) over 30 s once it is throttled, with no error on the client and the
/// throttle time visible in librdkafka's statistics; a producer with another client id beside
/// it runs several times faster and is never throttled.
#[test]
fn producer_byte_rate_holds_a_producer_to_its_quota() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("limited", 1, &[]);
    broker.create_topic("free", 1, &[]);
    broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "limited",
            "--producer-byte-rate",
            "1048576",
        ])
        .success("set quota");
    let limited = ck_quota(
        &broker,
        "limited",
        &[
            "--topic",
            "limited",
            "--client-id",
            "limited",
            "--duration",
            "45",
        ],
    );
    // The unlimited one is capped by the client at 8 MB/s, to spare the disk; the broker must
    // not slow it.
    let free = ck_quota(
        &broker,
        "free",
        &[
            "--topic",
            "free",
            "--client-id",
            "free",
            "--duration",
            "45",
            "--max-rate",
            "8388608",
        ],
    );
    // Once the broker throttles, the rate is measured.
    wait_for(
        "the first produce throttle",
        Duration::from_secs(30),
        || {
            metric(
                &broker,
                "fjord_quota_throttled_requests_total",
                &[("quota_type", "produce")],
            ) > 0.0
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let read = |topic: &str| metric(&broker, "fjord_bytes_in_total", &[("topic", topic)]);
    let (l0, f0, t0) = (read("limited"), read("free"), Instant::now());
    let mut per_second = Vec::new();
    let mut last = l0;
    for s in 1..=30 {
        std::thread::sleep((t0 + Duration::from_secs(s)).saturating_duration_since(Instant::now()));
        let now = read("limited");
        per_second.push(((now - last) / 1024.0).round() as i64);
        last = now;
    }
    eprintln!("limited producer, KiB per second: {per_second:?}");
    let secs = t0.elapsed().as_secs_f64();
    let limited_rate = (read("limited") - l0) / secs;
    let free_rate = (read("free") - f0) / secs;
    let limited = finish(limited);
    let free = finish(free);
    eprintln!(
        "limited {:.3} MB/s, free {:.3} MB/s over {secs:.1} s; limited client {limited}; free client {free}",
        limited_rate / MB,
        free_rate / MB
    );
    assert!(
        (limited_rate - MB).abs() <= RATE_TOLERANCE * MB,
        "the limited producer ran at {:.3} MB/s, not 1 MB/s ± {RATE_TOLERANCE}",
        limited_rate / MB
    );
    assert!(
        free_rate > 4.0 * limited_rate,
        "the unlimited producer ran at {:.3} MB/s beside {:.3} MB/s",
        free_rate / MB,
        limited_rate / MB
    );
    assert_eq!(limited["failed"], 0);
    assert!(
        limited["max_throttle_ms"].as_i64().unwrap() > 0,
        "{limited}"
    );
    assert_eq!(free["max_throttle_ms"], 0, "{free}");
    assert!(
        metric(
            &broker,
            "fjord_quota_throttle_time_ms_total",
            &[("quota_type", "produce")]
        ) > 0.0
    );
    broker.assert_no_panic_in_log();
}

/// A consumer whose client id has a `consumer_byte_rate` of 1 MB/s (a `<default>` client-id
/// quota, overridden for another client id) fetches at 1 MB/s (± [`RATE_TOLERANCE`]) once it
/// is throttled (over 30 s, from the broker's counters), with no error and the throttle time
/// in its statistics.
#[test]
fn consumer_byte_rate_holds_a_consumer_to_its_quota() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("backlog", 1, &[]);
    // Up to 64 MB to read, written as fast as possible (no quota applies to this producer).
    let fill = ck_quota(
        &broker,
        "fill",
        &[
            "--topic",
            "backlog",
            "--client-id",
            "filler",
            "--duration",
            "4",
            "--max-rate",
            "16000000",
        ],
    );
    let filled = finish(fill);
    assert!(filled["bytes"].as_f64().unwrap() > 32.0 * MB, "{filled}");
    broker
        .cli(&[
            "quota",
            "set",
            "--default-client-id",
            "--consumer-byte-rate",
            "1048576",
        ])
        .success("default consumer quota");
    broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "filler",
            "--consumer-byte-rate",
            "1000000000",
        ])
        .success("override");
    let consumer = ck_quota(
        &broker,
        "consumer",
        &[
            "--mode",
            "consume",
            "--topic",
            "backlog",
            "--client-id",
            "slow",
            "--duration",
            "42",
        ],
    );
    wait_for("the first fetch throttle", Duration::from_secs(30), || {
        metric(
            &broker,
            "fjord_quota_throttled_requests_total",
            &[("quota_type", "fetch")],
        ) > 0.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let rate = broker_rate(
        &broker,
        "fjord_bytes_out_total",
        "backlog",
        Duration::from_secs(30),
    );
    let consumer = finish(consumer);
    eprintln!("consumer {:.3} MB/s; client {consumer}", rate / MB);
    assert!(
        (rate - MB).abs() <= RATE_TOLERANCE * MB,
        "the limited consumer fetched {:.3} MB/s, not 1 MB/s ± {RATE_TOLERANCE}",
        rate / MB
    );
    assert!(
        consumer["max_throttle_ms"].as_i64().unwrap() > 0,
        "{consumer}"
    );
    broker.assert_no_panic_in_log();
}

/// `controller_mutation_rate` (KIP-599): a client id limited to 1 partition/s has a burst of
/// 11 (1 × quota.window.num × 1 s); a CreateTopics v7 that takes it into debt is still served,
/// the next topics are refused with THROTTLING_QUOTA_EXCEEDED (89) and a throttle time, and so
/// are CreatePartitions v3 and DeleteTopics v6; another client id is not limited.
#[test]
fn controller_mutation_rate_refuses_topics_once_exceeded() {
    use kafka_protocol::messages::{
        create_partitions_request, create_topics_request, delete_topics_request,
        CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, TopicName,
    };
    let broker = FjordProcess::start(&[]);
    broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "admin",
            "--controller-mutation-rate",
            "1",
        ])
        .success("set quota");
    let connect = |client_id: &str| {
        let config = ConnectionConfig {
            client_id: client_id.to_string(),
            ..ConnectionConfig::default()
        };
        let b = broker.bootstrap().to_string();
        async move { Connection::connect(&b, config).await.expect("connect") }
    };
    let create = |names: &[&str]| {
        CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(
                names
                    .iter()
                    .map(|n| {
                        create_topics_request::CreatableTopic::default()
                            .with_name(TopicName(sb(n)))
                            .with_num_partitions(10)
                            .with_replication_factor(1)
                    })
                    .collect(),
            )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = connect("admin").await;
        let r = admin.send(&create(&["m1", "m2", "m3"])).await.unwrap();
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        // 10 partitions, then 10 more into debt (-9), then refused.
        assert_eq!(codes, vec![0, 0, 89], "{r:?}");
        assert!(
            r.throttle_time_ms > 8000 && r.throttle_time_ms <= 9000,
            "{r:?}"
        );
        let more = admin
            .send(
                &CreatePartitionsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(TopicName(sb("m1")))
                            .with_count(12),
                    ]),
            )
            .await
            .unwrap();
        assert_eq!(more.results[0].error_code, 89, "{more:?}");
        assert!(more.throttle_time_ms > 0);
        let delete = admin
            .send(
                &DeleteTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(TopicName(sb("m1"))))]),
            )
            .await
            .unwrap();
        assert_eq!(delete.responses[0].error_code, 89, "{delete:?}");
        // Another client id has no quota.
        let other = connect("other").await;
        let r = other.send(&create(&["o1", "o2", "o3"])).await.unwrap();
        assert!(r.topics.iter().all(|t| t.error_code == 0), "{r:?}");
        assert_eq!(r.throttle_time_ms, 0);
    });
    let m = broker.http_get("/metrics").body;
    assert!(metric_value(&m, "fjord_quota_mutations_refused_total", &[]).unwrap_or(0.0) >= 3.0);
    broker.assert_no_panic_in_log();
}

/// The Java client sees the throttle: Kafka's `kafka-producer-perf-test` with a client id
/// limited to 512 KiB/s sends every record without error and reports a
/// `produce-throttle-time-avg` above zero.
#[test]
fn java_producer_reports_the_throttle_time() {
    let broker = FjordProcess::start(&[]);
    let tools = Tools::new();
    broker.create_topic("perf-quota", 1, &[]);
    broker
        .cli(&[
            "quota",
            "set",
            "--client-id",
            "perf",
            "--producer-byte-rate",
            "524288",
        ])
        .success("set quota");
    let bootstrap = format!("bootstrap.servers={}", broker.bootstrap());
    let out = tools.ok(
        "kafka-producer-perf-test",
        &[
            "--topic",
            "perf-quota",
            "--num-records",
            "9000",
            "--record-size",
            "1000",
            "--throughput",
            "-1",
            "--print-metrics",
            tools.renamed("--producer-props", "--command-property"),
            &bootstrap,
            "client.id=perf",
            "acks=all",
        ],
    );
    assert!(
        out.lines().any(|l| l.starts_with("9000 records sent, ")),
        "{out}"
    );
    let throttle: f64 = out
        .lines()
        .find(|l| l.starts_with("producer-metrics:produce-throttle-time-avg:{client-id=perf}"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no produce-throttle-time-avg in\n{out}"));
    assert!(
        throttle > 0.0,
        "produce-throttle-time-avg {throttle}\n{out}"
    );
    assert!(
        metric(
            &broker,
            "fjord_quota_throttled_requests_total",
            &[("quota_type", "produce")]
        ) > 0.0
    );
}
