//! Apache Kafka's own command-line tools (`bin/kafka-*.sh` of a Kafka release from Maven
//! Central, laid out by `bench/kafka/fetch.sh`) against real `fjord` processes: topics,
//! configs, consumer groups, the console producer and consumer, the perf tools, offsets,
//! DeleteRecords, ApiVersions, the metadata quorum, and preferred leader election in a
//! three-node cluster. Every outcome is checked, not just the exit status: what the tool
//! printed, and where it matters the same state read back through kcat or the `fjord` CLI.
//!
//! The tools are found in `$FJORD_KAFKA_HOME`, or `~/.cache/fjord/kafka-VERSION` with VERSION
//! from `$FJORD_KAFKA_VERSION` or `bench/kafka/VERSION` — where `scripts/setup-kafka.sh` (run
//! by `scripts/setup-test-deps.sh`) puts them. Missing tools fail the test with that hint.
//! What differs from Apache Kafka, and why: docs/compatibility.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::kafka::Tools;
use common::{CmdResult, FjordProcess};
use serde_json::Value;

/// `kafka-topics --describe` of one topic: the header's fields and one map per partition.
struct TopicDescription {
    header: BTreeMap<String, String>,
    partitions: Vec<BTreeMap<String, String>>,
}

impl TopicDescription {
    fn parse(text: &str) -> TopicDescription {
        // "Topic: t\tTopicId: x\tPartitionCount: 3\t...\tConfigs: a=b,c=d" then one
        // "\tTopic: t\tPartition: 0\tLeader: 1\tReplicas: 1,2\tIsr: 1,2\t..." per partition.
        let fields = |line: &str| -> BTreeMap<String, String> {
            line.trim()
                .split('\t')
                .filter_map(|f| f.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        };
        let mut header = None;
        let mut partitions = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("Topic:"))
        {
            if line.starts_with('\t') || line.starts_with(' ') {
                partitions.push(fields(line));
            } else {
                header = Some(fields(line));
            }
        }
        TopicDescription {
            header: header.unwrap_or_else(|| panic!("no topic header in {text:?}")),
            partitions,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.header
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in {:?}", self.header))
    }

    /// The `Configs:` field as a map.
    fn configs(&self) -> BTreeMap<String, String> {
        self.get("Configs")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// `kafka-configs --describe` lines: `  key=value sensitive=false synonyms={...}`.
fn described_configs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().split(' ').next()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, PartialEq)]
struct GroupOffset {
    topic: String,
    partition: i32,
    current: Option<i64>,
    log_end: i64,
    lag: Option<i64>,
}

fn group_offsets(text: &str, group: &str) -> Vec<GroupOffset> {
    let num = |s: &str| s.parse::<i64>().ok();
    let mut rows: Vec<GroupOffset> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 6 && f[0] == group)
        .map(|f| GroupOffset {
            topic: f[1].to_string(),
            partition: f[2]
                .parse()
                .unwrap_or_else(|_| panic!("partition in {f:?}")),
            current: num(f[3]),
            log_end: num(f[4]).unwrap_or_else(|| panic!("log end in {f:?}")),
            lag: num(f[5]),
        })
        .collect();
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    rows
}

/// `kafka-get-offsets` lines `topic:partition:offset`.
fn get_offsets(text: &str) -> BTreeMap<(String, i32), i64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().rsplitn(3, ':');
            let offset = it.next()?.parse().ok()?;
            let partition = it.next()?.parse().ok()?;
            Some(((it.next()?.to_string(), partition), offset))
        })
        .collect()
}

/// `fjord topic describe --output json` (read back independently of Kafka's tools).
fn fjord_topic(broker: &FjordProcess, topic: &str) -> Value {
    let out = broker
        .cli(&["topic", "describe", topic, "--output", "json"])
        .success("fjord topic describe");
    serde_json::from_str(&out.stdout()).expect("topic describe JSON")
}

/// What a tool printed on stdout and stderr (Kafka's tools print errors on either).
fn all_output(r: &CmdResult) -> String {
    format!("{}\n{}", r.stdout(), r.stderr())
}

fn lines_set(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `kafka-metadata-quorum describe --status`: a quorum summary if the broker serves
/// DescribeQuorum (as `kafka-broker-api-versions` says), otherwise Kafka's own clear error,
/// as against an Apache Kafka broker without the API — quickly, and the broker keeps serving.
fn check_metadata_quorum(tools: &Tools, bootstrap: &str, api_versions: &str) {
    let t0 = Instant::now();
    let r = tools.run(
        "kafka-metadata-quorum",
        &["--bootstrap-server", bootstrap, "describe", "--status"],
        None,
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "kafka-metadata-quorum took {:?}: {}",
        t0.elapsed(),
        r.describe()
    );
    if api_versions.contains("DescribeQuorum(55): UNSUPPORTED") {
        let r = r.failure("metadata-quorum against a broker without DescribeQuorum");
        assert!(
            r.stderr()
                .contains("UnsupportedVersionException: The node does not support DESCRIBE_QUORUM"),
            "expected Kafka's clear error: {}",
            r.describe()
        );
    } else {
        let out = r.success("metadata-quorum describe --status").stdout();
        assert!(out.contains("LeaderId:"), "{out}");
    }
}

#[test]
fn kafka_topics_configs_api_versions_and_quorum() {
    let tools = Tools::new();
    let mut broker = FjordProcess::start(&[]);
    let b = broker.bootstrap().to_string();
    let b = b.as_str();

    // kafka-topics --create with partitions, replication factor and configs.
    let out = tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            b,
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy=compact",
        ],
    );
    assert!(out.contains("Created topic orders."), "{out}");
    let again = tools
        .run(
            "kafka-topics",
            &["--bootstrap-server", b, "--create", "--topic", "orders"],
            None,
        )
        .failure("creating orders twice");
    assert!(
        all_output(&again).contains("TopicExistsException: Topic 'orders' already exists."),
        "{}",
        again.describe()
    );
    let t = fjord_topic(&broker, "orders");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3, "{t:#}");
    assert_eq!(t["configs"]["retention.ms"], "3600000", "{t:#}");
    assert_eq!(t["configs"]["cleanup.policy"], "compact", "{t:#}");

    let list = tools.ok("kafka-topics", &["--bootstrap-server", b, "--list"]);
    assert!(lines_set(&list).contains("orders"), "{list}");

    let d = TopicDescription::parse(&tools.ok(
        "kafka-topics",
        &["--bootstrap-server", b, "--describe", "--topic", "orders"],
    ));
    assert_eq!(d.get("PartitionCount"), "3");
    assert_eq!(d.get("ReplicationFactor"), "1");
    let configs = d.configs();
    assert_eq!(configs["retention.ms"], "3600000", "{configs:?}");
    assert_eq!(configs["cleanup.policy"], "compact", "{configs:?}");
    assert_eq!(d.partitions.len(), 3);
    for (i, p) in d.partitions.iter().enumerate() {
        assert_eq!(p["Partition"], i.to_string(), "{p:?}");
        assert_eq!(p["Leader"], "1", "{p:?}");
        assert_eq!(p["Replicas"], "1", "{p:?}");
        assert_eq!(p["Isr"], "1", "{p:?}");
    }

    // --alter --partitions: more is fine, fewer is refused as Kafka refuses it.
    tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            b,
            "--alter",
            "--topic",
            "orders",
            "--partitions",
            "6",
        ],
    );
    let d = TopicDescription::parse(&tools.ok(
        "kafka-topics",
        &["--bootstrap-server", b, "--describe", "--topic", "orders"],
    ));
    assert_eq!(d.get("PartitionCount"), "6");
    assert_eq!(d.partitions.len(), 6);
    assert_eq!(
        fjord_topic(&broker, "orders")["partitions"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let fewer = tools
        .run(
            "kafka-topics",
            &[
                "--bootstrap-server",
                b,
                "--alter",
                "--topic",
                "orders",
                "--partitions",
                "2",
            ],
            None,
        )
        .failure("fewer partitions");
    assert!(
        all_output(&fewer).contains("InvalidPartitionsException"),
        "{}",
        fewer.describe()
    );

    // kafka-configs on the topic: describe, add, delete, and an unknown key refused.
    let topic_cfg = ["--bootstrap-server", b, "--entity-type", "topics"];
    let describe = |tools: &Tools| -> String {
        let mut args = topic_cfg.to_vec();
        args.extend_from_slice(&["--entity-name", "orders", "--describe"]);
        tools.ok("kafka-configs", &args)
    };
    let out = describe(&tools);
    assert!(
        out.contains("Dynamic configs for topic orders are:"),
        "{out}"
    );
    assert!(
        out.contains(
            "retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000"
        ),
        "{out}"
    );
    let c = described_configs(&out);
    assert_eq!(
        c,
        BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "3600000".to_string()),
        ])
    );
    let alter = |tools: &Tools, what: &[&str]| -> CmdResult {
        let mut args = topic_cfg.to_vec();
        args.extend_from_slice(&["--entity-name", "orders", "--alter"]);
        args.extend_from_slice(what);
        tools.run("kafka-configs", &args, None)
    };
    let out = alter(
        &tools,
        &[
            "--add-config",
            "retention.ms=7200000,max.message.bytes=2000000",
        ],
    )
    .success("add-config")
    .stdout();
    assert!(
        out.contains("Completed updating config for topic orders."),
        "{out}"
    );
    alter(&tools, &["--delete-config", "cleanup.policy"]).success("delete-config");
    let c = described_configs(&describe(&tools));
    assert_eq!(
        c,
        BTreeMap::from([
            ("max.message.bytes".to_string(), "2000000".to_string()),
            ("retention.ms".to_string(), "7200000".to_string()),
        ])
    );
    let t = fjord_topic(&broker, "orders");
    assert_eq!(t["configs"]["retention.ms"], "7200000", "{t:#}");
    assert_eq!(t["configs"]["max.message.bytes"], "2000000", "{t:#}");
    assert!(t["configs"]["cleanup.policy"].is_null(), "{t:#}");
    let bad = alter(&tools, &["--add-config", "no.such.config=1"]).failure("unknown config");
    assert!(
        all_output(&bad).contains("InvalidConfigurationException"),
        "{}",
        bad.describe()
    );

    // kafka-configs on the broker: no dynamic configs; --all lists the static ones.
    let out = tools.ok(
        "kafka-configs",
        &[
            "--bootstrap-server",
            b,
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--describe",
        ],
    );
    assert!(out.contains("Dynamic configs for broker 1 are:"), "{out}");
    let out = tools.ok(
        "kafka-configs",
        &[
            "--bootstrap-server",
            b,
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--describe",
            "--all",
        ],
    );
    assert!(out.contains("All configs for broker 1 are:"), "{out}");
    let all = described_configs(&out);
    assert_eq!(
        all.get("log.dirs").map(String::as_str),
        Some(broker.data_dir().to_str().unwrap()),
        "{out}"
    );
    assert_eq!(
        all.get("auto.create.topics.enable").map(String::as_str),
        Some("true"),
        "{out}"
    );

    // kafka-broker-api-versions: one broker, node 1, the core APIs usable.
    let versions = tools.ok("kafka-broker-api-versions", &["--bootstrap-server", b]);
    assert!(
        versions.contains(&format!("{b} (id: 1 rack: null")),
        "{versions}"
    );
    for api in [
        "Produce(0)",
        "Fetch(1)",
        "ListOffsets(2)",
        "Metadata(3)",
        "ApiVersions(18)",
        "CreateTopics(19)",
        "DeleteRecords(21)",
        "DescribeConfigs(32)",
        "ElectLeaders(43)",
        "IncrementalAlterConfigs(44)",
    ] {
        let line = versions
            .lines()
            .find(|l| l.trim_start().starts_with(api))
            .unwrap_or_else(|| panic!("{api} not listed:\n{versions}"));
        assert!(line.contains("[usable: "), "{line}");
    }
    check_metadata_quorum(&tools, b, &versions);
    assert!(
        broker.is_running(),
        "broker exited after kafka-metadata-quorum"
    );
    broker
        .kcat(&["-L", "-m", "10"], None)
        .success("broker still answers after kafka-metadata-quorum");

    // kafka-topics --delete.
    tools.ok(
        "kafka-topics",
        &["--bootstrap-server", b, "--delete", "--topic", "orders"],
    );
    let list = tools.ok("kafka-topics", &["--bootstrap-server", b, "--list"]);
    assert!(!lines_set(&list).contains("orders"), "{list}");
    let gone = tools
        .run(
            "kafka-topics",
            &["--bootstrap-server", b, "--describe", "--topic", "orders"],
            None,
        )
        .failure("describe a deleted topic");
    assert!(
        all_output(&gone).contains("Topic 'orders' does not exist as expected"),
        "{}",
        gone.describe()
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn kafka_console_clients_groups_offsets_and_perf() {
    let tools = Tools::new();
    let mut broker = FjordProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let b = broker.bootstrap();

    // Console producer with keys into three partitions; console consumer back, with keys.
    tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            b,
            "--create",
            "--topic",
            "events",
            "--partitions",
            "3",
        ],
    );
    let input: String = (1..=20).map(|i| format!("user{i}:login {i}\n")).collect();
    tools
        .run(
            "kafka-console-producer",
            &[
                "--bootstrap-server",
                b,
                "--topic",
                "events",
                tools.renamed("--property", "--reader-property"),
                "parse.key=true",
                tools.renamed("--property", "--reader-property"),
                "key.separator=:",
            ],
            Some(input.as_bytes()),
        )
        .success("console producer");
    let want: BTreeSet<String> = (1..=20).map(|i| format!("user{i}\tlogin {i}")).collect();
    let out = tools.ok(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            b,
            "--topic",
            "events",
            "--from-beginning",
            "--max-messages",
            "20",
            "--group",
            "events-readers",
            tools.renamed("--property", "--formatter-property"),
            "print.key=true",
        ],
    );
    assert_eq!(lines_set(&out), want, "console consumer output:\n{out}");
    // The same records as kcat sees them: keyed, spread by key over the partitions.
    let k = broker
        .kcat(
            &["-C", "-t", "events", "-e", "-q", "-f", "%k\t%s\t%p\n"],
            None,
        )
        .success("kcat consume events");
    let mut by_partition = BTreeMap::<String, usize>::new();
    let mut seen = BTreeSet::new();
    for line in k.stdout().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        seen.insert(format!("{}\t{}", f[0], f[1]));
        *by_partition.entry(f[2].to_string()).or_default() += 1;
    }
    assert_eq!(seen, want);
    assert!(by_partition.len() > 1, "keys spread: {by_partition:?}");
    // The console consumer's group committed everything it read: no lag on any partition.
    let rows = group_offsets(
        &tools.ok(
            "kafka-consumer-groups",
            &[
                "--bootstrap-server",
                b,
                "--describe",
                "--group",
                "events-readers",
            ],
        ),
        "events-readers",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.log_end).sum::<i64>(), 20, "{rows:?}");
    for r in &rows {
        assert_eq!(r.current, Some(r.log_end), "{r:?}");
        assert_eq!(r.lag, Some(0), "{r:?}");
    }

    // A group that consumed 4 of 10 records (one record per poll, so the committed position
    // is exactly what was printed): lag 6.
    tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            b,
            "--create",
            "--topic",
            "lagged",
            "--partitions",
            "1",
        ],
    );
    let ten: String = (1..=10).map(|i| format!("v{i}\n")).collect();
    broker
        .kcat(&["-P", "-t", "lagged"], Some(ten.as_bytes()))
        .success("kcat produce lagged");
    let out = tools.ok(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            b,
            "--topic",
            "lagged",
            "--from-beginning",
            "--max-messages",
            "4",
            "--group",
            "g1",
            tools.renamed("--consumer-property", "--command-property"),
            "max.poll.records=1",
        ],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["v1", "v2", "v3", "v4"]);
    let groups = tools.ok(
        "kafka-consumer-groups",
        &["--bootstrap-server", b, "--list"],
    );
    let groups = lines_set(&groups);
    assert!(
        groups.contains("g1") && groups.contains("events-readers"),
        "{groups:?}"
    );
    let describe_g1 = |tools: &Tools| {
        group_offsets(
            &tools.ok(
                "kafka-consumer-groups",
                &["--bootstrap-server", b, "--describe", "--group", "g1"],
            ),
            "g1",
        )
    };
    let lagged = |current, lag| GroupOffset {
        topic: "lagged".to_string(),
        partition: 0,
        current: Some(current),
        log_end: 10,
        lag: Some(lag),
    };
    assert_eq!(describe_g1(&tools), [lagged(4, 6)]);

    // --reset-offsets --to-earliest --execute on the (now empty) group.
    let out = tools.ok(
        "kafka-consumer-groups",
        &[
            "--bootstrap-server",
            b,
            "--reset-offsets",
            "--to-earliest",
            "--execute",
            "--group",
            "g1",
            "--topic",
            "lagged",
        ],
    );
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("g1 "))
        .unwrap_or_else(|| panic!("no reset row:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["g1", "lagged", "0", "0"], "{out}");
    assert_eq!(describe_g1(&tools), [lagged(0, 10)]);

    // --delete the group.
    let out = tools.ok(
        "kafka-consumer-groups",
        &["--bootstrap-server", b, "--delete", "--group", "g1"],
    );
    assert!(
        out.contains("Deletion of requested consumer groups ('g1') was successful."),
        "{out}"
    );
    let groups = tools.ok(
        "kafka-consumer-groups",
        &["--bootstrap-server", b, "--list"],
    );
    assert!(!lines_set(&groups).contains("g1"), "{groups}");

    // kafka-get-offsets and kafka-delete-records.
    let latest = get_offsets(&tools.ok(
        "kafka-get-offsets",
        &["--bootstrap-server", b, "--topic", "lagged"],
    ));
    assert_eq!(latest, BTreeMap::from([(("lagged".to_string(), 0), 10)]));
    let json = broker.scratch_dir().join("delete-records.json");
    fs::write(
        &json,
        r#"{"partitions":[{"topic":"lagged","partition":0,"offset":3}],"version":1}"#,
    )
    .unwrap();
    let out = tools.ok(
        "kafka-delete-records",
        &[
            "--bootstrap-server",
            b,
            "--offset-json-file",
            json.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("partition: lagged-0\tlow_watermark: 3"),
        "{out}"
    );
    let earliest = get_offsets(&tools.ok(
        "kafka-get-offsets",
        &[
            "--bootstrap-server",
            b,
            "--topic-partitions",
            "lagged:0,events:0-3", // a range's upper bound is exclusive
            "--time",
            "-2",
        ],
    ));
    let mut want_earliest = BTreeMap::from([(("lagged".to_string(), 0), 3)]);
    want_earliest.extend((0..3).map(|p| (("events".to_string(), p), 0)));
    assert_eq!(earliest, want_earliest);
    let rest = broker
        .kcat(&["-C", "-t", "lagged", "-o", "beginning", "-e", "-q"], None)
        .success("kcat after delete-records");
    assert_eq!(
        rest.stdout().lines().collect::<Vec<_>>(),
        ["v4", "v5", "v6", "v7", "v8", "v9", "v10"]
    );

    // A KIP-848 group (group.protocol=consumer): listed with its type, described with its lag,
    // its offsets deleted with --delete-offsets (OffsetDelete).
    let out = tools.ok(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            b,
            "--topic",
            "lagged",
            "--from-beginning",
            "--max-messages",
            "2",
            "--group",
            "g848",
            tools.renamed("--consumer-property", "--command-property"),
            "group.protocol=consumer",
            tools.renamed("--consumer-property", "--command-property"),
            "max.poll.records=1",
        ],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["v4", "v5"]);
    let types = tools.ok(
        "kafka-consumer-groups",
        &["--bootstrap-server", b, "--list", "--type"],
    );
    let types: BTreeSet<Vec<&str>> = types
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(types.contains(&vec!["g848", "Consumer"]), "{types:?}");
    assert!(
        types.contains(&vec!["events-readers", "Classic"]),
        "{types:?}"
    );
    let describe_g848 = |tools: &Tools| {
        group_offsets(
            &tools.ok(
                "kafka-consumer-groups",
                &["--bootstrap-server", b, "--describe", "--group", "g848"],
            ),
            "g848",
        )
    };
    assert_eq!(describe_g848(&tools), [lagged(5, 5)]);
    let out = tools.ok(
        "kafka-consumer-groups",
        &[
            "--bootstrap-server",
            b,
            "--delete-offsets",
            "--group",
            "g848",
            "--topic",
            "lagged",
        ],
    );
    assert!(
        out.contains("Request succeeded for deleting offsets from group g848."),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["lagged", "0", "Successful"]),
        "{out}"
    );
    assert_eq!(describe_g848(&tools), []);

    // The perf tools: 10,000 records of 100 bytes with acks=all, then read back.
    let out = tools.ok(
        "kafka-producer-perf-test",
        &[
            "--topic",
            "perf",
            "--num-records",
            "10000",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            tools.renamed("--producer-props", "--command-property"),
            &format!("bootstrap.servers={b}"),
            "acks=all",
        ],
    );
    assert!(
        out.lines().any(|l| l.starts_with("10000 records sent, ")),
        "{out}"
    );
    let perf = get_offsets(&tools.ok(
        "kafka-get-offsets",
        &["--bootstrap-server", b, "--topic", "perf"],
    ));
    assert_eq!(perf.values().sum::<i64>(), 10000, "{perf:?}");
    let out = tools.ok(
        "kafka-consumer-perf-test",
        &[
            "--bootstrap-server",
            b,
            "--topic",
            "perf",
            tools.renamed("--messages", "--num-records"),
            "10000",
        ],
    );
    // A CSV header line then one data line; data.consumed.in.nMsg is the fifth column.
    let mut csv = out.lines().filter(|l| l.contains(", "));
    let header: Vec<&str> = csv.next().expect("header").split(", ").collect();
    let data: Vec<&str> = csv.next().expect("data line").split(", ").collect();
    let col = header
        .iter()
        .position(|h| *h == "data.consumed.in.nMsg")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(data[col], "10000", "{out}");

    // Partition data is Kafka's on-disk format: kafka-dump-log reads Fjord's segments (after a
    // clean shutdown) and finds the console producer's keyed records.
    broker.terminate();
    let mut dumped = BTreeSet::new();
    for p in 0..3 {
        let segment = broker
            .data_dir()
            .join(format!("events-{p}"))
            .join("00000000000000000000.log");
        if !segment.exists() {
            continue;
        }
        let out = tools.ok(
            "kafka-dump-log",
            &["--files", segment.to_str().unwrap(), "--print-data-log"],
        );
        for line in out.lines().filter(|l| l.starts_with("| offset: ")) {
            let (_, kv) = line
                .split_once(" key: ")
                .unwrap_or_else(|| panic!("no key in {line:?}"));
            let (key, value) = kv
                .split_once(" payload: ")
                .unwrap_or_else(|| panic!("no payload in {line:?}"));
            dumped.insert(format!("{key}\t{value}"));
        }
    }
    assert_eq!(dumped, want, "kafka-dump-log of events-*");
    broker.assert_no_panic_in_log();
}

#[test]
fn kafka_leader_election_in_a_three_node_cluster() {
    let tools = Tools::new();
    // No periodic preferred-leader election: the moved leader stays until the tool moves it.
    let mut c = Cluster::builder()
        .config("auto.leader.rebalance.enable = false")
        .start();
    let b = c.bootstrap_all();

    let versions = tools.ok("kafka-broker-api-versions", &["--bootstrap-server", &b]);
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c")] {
        assert!(
            versions.contains(&format!("(id: {id} rack: {rack} ")),
            "broker {id} in rack {rack}:\n{versions}"
        );
    }

    let out = tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &b,
            "--create",
            "--topic",
            "rf3",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
    );
    assert!(out.contains("Created topic rf3."), "{out}");
    let layout = c.wait_isr("rf3", None, 3);
    let d = TopicDescription::parse(&tools.ok(
        "kafka-topics",
        &["--bootstrap-server", &b, "--describe", "--topic", "rf3"],
    ));
    assert_eq!(d.get("PartitionCount"), "3");
    assert_eq!(d.get("ReplicationFactor"), "3");
    assert_eq!(d.configs()["min.insync.replicas"], "2");
    for p in &d.partitions {
        let info = &layout[&p["Partition"].parse::<i64>().unwrap()];
        let ids = |v: &[i64]| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(p["Leader"], info.leader.to_string(), "{p:?} vs {info:?}");
        assert_eq!(p["Replicas"], ids(&info.replicas), "{p:?} vs {info:?}");
        assert_eq!(info.leader, info.replicas[0], "preferred leaders first");
    }

    // Records in with acks=all (the Java producer's default), so every replica has them.
    let input: String = (0..30).map(|i| format!("r{i}\n")).collect();
    tools
        .run(
            "kafka-console-producer",
            &["--bootstrap-server", &b, "--topic", "rf3"],
            Some(input.as_bytes()),
        )
        .success("console producer");

    // Move leadership off node 2: stop it (controlled shutdown) and start it again.
    let moved: Vec<i64> = layout
        .iter()
        .filter(|(_, i)| i.replicas[0] == 2)
        .map(|(p, _)| *p)
        .collect();
    assert!(!moved.is_empty(), "node 2 leads nothing: {layout:?}");
    c.terminate(2, Duration::from_secs(30));
    c.start_node(2);
    let layout = c.wait_isr("rf3", None, 3);
    for p in &moved {
        assert_ne!(layout[p].leader, 2, "partition {p} moved back by itself");
    }

    let out = tools.ok(
        "kafka-leader-election",
        &[
            "--bootstrap-server",
            &b,
            "--election-type",
            "preferred",
            "--all-topic-partitions",
        ],
    );
    let elected: BTreeSet<String> = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Successfully completed leader election (PREFERRED) for partitions ")
        })
        .unwrap_or_else(|| panic!("no election reported:\n{out}"))
        .split(", ")
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = moved.iter().map(|p| format!("rf3-{p}")).collect();
    assert_eq!(elected, want, "{out}");
    let layout = c.wait_layout("rf3", "preferred leaders back", |l| {
        l.values().all(|i| i.leader == i.replicas[0])
    });
    assert_eq!(layout[&moved[0]].leader, 2);

    // Nothing lost on the way, read with the console consumer through the new leaders.
    let out = tools.ok(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "rf3",
            "--from-beginning",
            "--max-messages",
            "30",
        ],
    );
    assert_eq!(lines_set(&out), lines_set(&input));

    check_metadata_quorum(&tools, &b, &versions);
    c.assert_no_panic_in_logs();
}
