//! The `fjord` CLI against a real broker: topic admin with clear errors, produce and consume.

mod common;

use std::time::Duration;

use common::{parse_json_lines, CmdResult, FjordProcess};

/// A failed CLI command must say what went wrong in one line naming the Kafka error.
fn assert_one_line_error(r: &CmdResult, error_name: &str) {
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].contains(error_name),
        "expected a one-line error naming {error_name}, got: {}",
        r.describe()
    );
    assert!(!err.contains("panicked"), "CLI panicked: {}", r.describe());
}

fn admin_topics(broker: &FjordProcess) -> serde_json::Value {
    let out = broker
        .python("admin.py", &["list"])
        .success("admin.py list");
    serde_json::from_str(out.stdout().trim()).expect("admin.py list JSON")
}

fn topic_config(broker: &FjordProcess, topic: &str, key: &str) -> Option<String> {
    let out = broker
        .python("admin.py", &["describe-configs", "topic", topic])
        .success("admin.py describe-configs");
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
    v[key]["value"].as_str().map(str::to_string)
}

#[test]
fn cli_topic_create_list_describe_alter_delete() {
    let broker = FjordProcess::start(&[]);
    broker
        .cli(&["topic", "create", "cli-topic", "--partitions", "3"])
        .success("topic create");
    assert_eq!(
        admin_topics(&broker)["topics"]["cli-topic"],
        3,
        "cli-topic should exist with 3 partitions"
    );

    let list = broker.cli(&["topic", "list"]).success("topic list");
    assert!(
        list.stdout()
            .lines()
            .any(|l| l.trim() == "cli-topic" || l.split_whitespace().next() == Some("cli-topic")),
        "topic list should show cli-topic: {}",
        list.describe()
    );

    let describe = broker
        .cli(&["topic", "describe", "cli-topic"])
        .success("topic describe");
    let text = describe.stdout();
    assert!(text.contains("cli-topic"), "{}", describe.describe());
    assert!(
        text.contains('3'),
        "topic describe should show the partition count 3: {}",
        describe.describe()
    );

    // Errors: one line, naming the Kafka error code.
    let again = broker
        .cli(&["topic", "create", "cli-topic", "--partitions", "3"])
        .failure("creating an existing topic");
    assert_one_line_error(&again, "TOPIC_ALREADY_EXISTS");
    let bad = broker
        .cli(&[
            "topic",
            "create",
            "cli-bad",
            "--partitions",
            "1",
            "--config",
            "retention.ms=abc",
        ])
        .failure("creating a topic with a bad config value");
    assert_one_line_error(&bad, "INVALID_CONFIG");
    assert!(
        admin_topics(&broker)["topics"].get("cli-bad").is_none(),
        "a topic with an invalid config must not be created"
    );

    // Create with a config, then alter it.
    broker
        .cli(&[
            "topic",
            "create",
            "cli-cfg",
            "--partitions",
            "1",
            "--config",
            "retention.ms=7200000",
        ])
        .success("topic create with config");
    assert_eq!(
        topic_config(&broker, "cli-cfg", "retention.ms").as_deref(),
        Some("7200000")
    );
    broker
        .cli(&[
            "topic",
            "alter-config",
            "cli-cfg",
            "--set",
            "retention.ms=3600000",
        ])
        .success("topic alter-config");
    assert_eq!(
        topic_config(&broker, "cli-cfg", "retention.ms").as_deref(),
        Some("3600000"),
        "retention.ms after alter-config"
    );
    let describe = broker
        .cli(&["topic", "describe", "cli-cfg"])
        .success("topic describe");
    assert!(
        describe.stdout().contains("3600000"),
        "topic describe should show the altered retention.ms: {}",
        describe.describe()
    );
    let bad_alter = broker
        .cli(&[
            "topic",
            "alter-config",
            "cli-cfg",
            "--set",
            "retention.ms=soon",
        ])
        .failure("alter-config with a bad value");
    assert_one_line_error(&bad_alter, "INVALID_CONFIG");
    assert_eq!(
        topic_config(&broker, "cli-cfg", "retention.ms").as_deref(),
        Some("3600000"),
        "a rejected alter-config must not change the config"
    );
    broker
        .cli(&[
            "topic",
            "alter-config",
            "cli-cfg",
            "--delete",
            "retention.ms",
        ])
        .success("topic alter-config --delete");
    assert_eq!(
        topic_config(&broker, "cli-cfg", "retention.ms").as_deref(),
        Some("604800000"),
        "retention.ms should revert to the default (7 days) after --delete"
    );

    // Delete.
    broker
        .cli(&["topic", "delete", "cli-topic"])
        .success("topic delete");
    assert!(
        common::wait_until(Duration::from_secs(15), || admin_topics(&broker)["topics"]
            .get("cli-topic")
            .is_none()),
        "cli-topic still listed 15 s after delete"
    );
    let list = broker.cli(&["topic", "list"]).success("topic list");
    assert!(
        !list.stdout().contains("cli-topic"),
        "deleted topic still listed: {}",
        list.describe()
    );
    let missing = broker
        .cli(&["topic", "delete", "cli-topic"])
        .failure("deleting a missing topic");
    assert_one_line_error(&missing, "UNKNOWN_TOPIC_OR_PARTITION");
    broker.assert_no_panic_in_log();
}

#[test]
fn cli_produce_consume_json() {
    let broker = FjordProcess::start(&[]);
    broker
        .cli(&["topic", "create", "cli-rt", "--partitions", "1"])
        .success("topic create");
    let n = 500;
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("k{i}:value {i}:with colon ☃\n"));
    }
    broker
        .cli_with_stdin(
            &["produce", "cli-rt", "--key-separator", ":"],
            Some(input.as_bytes()),
        )
        .success("fjord produce");
    let out = broker
        .cli(&[
            "consume",
            "cli-rt",
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            "json",
        ])
        .success("fjord consume");
    let recs = parse_json_lines(&out.stdout());
    assert_eq!(recs.len(), n, "records consumed: {}", out.describe());
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["key"], format!("k{i}"), "key of record {i}: {r}");
        assert_eq!(
            r["value"],
            format!("value {i}:with colon ☃"),
            "value of record {i}: {r}"
        );
        if let Some(o) = r.get("offset") {
            assert_eq!(o, i, "offset of record {i}: {r}");
        }
        if let Some(p) = r.get("partition") {
            assert_eq!(p, 0, "partition of record {i}: {r}");
        }
    }

    // The same data through librdkafka, to check the CLI wrote real Kafka records.
    let dump = common::ck_consume(&broker, "cli-rt", n as u64);
    assert_eq!(dump.len(), n);
    assert_eq!(dump[7].key.as_deref(), Some("k7"));
    assert_eq!(dump[7].value.as_deref(), Some("value 7:with colon ☃"));
    broker.assert_no_panic_in_log();
}

#[test]
fn cli_cluster_info() {
    let broker = FjordProcess::start(&[]);
    let out = broker.cli(&["cluster", "info"]).success("cluster info");
    let port = broker.bootstrap().rsplit(':').next().unwrap();
    assert!(
        out.stdout().contains(port),
        "cluster info should show the broker's address {}: {}",
        broker.bootstrap(),
        out.describe()
    );
}

#[test]
fn cli_unreachable_broker_fails_fast_with_clear_error() {
    // Nothing listens on port 1.
    let mut cmd = std::process::Command::new(common::fjord_bin());
    cmd.args(["--bootstrap-server", "127.0.0.1:1", "topic", "list"]);
    let started = std::time::Instant::now();
    let r = common::run(cmd, None, Duration::from_secs(60)).failure("topic list, no broker");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?} to give up",
        started.elapsed()
    );
    assert!(
        !r.stderr().trim().is_empty(),
        "no error message: {}",
        r.describe()
    );
    assert!(!r.stderr().contains("panicked"), "{}", r.describe());
}

#[test]
fn cli_topic_elect_leaders_on_a_single_node() {
    let broker = FjordProcess::start(&[]);
    broker
        .cli(&["topic", "create", "el", "--partitions", "2"])
        .success("topic create");
    // Every partition is led by its preferred (only) replica: nothing to do, not a failure.
    let out = broker
        .cli(&["topic", "elect-leaders", "--topic", "el"])
        .success("topic elect-leaders --topic");
    let lines: Vec<String> = out.stdout().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "one line per partition: {}", out.describe());
    for (p, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("el-{p} ")) && line.contains("ELECTION_NOT_NEEDED"),
            "{}",
            out.describe()
        );
    }
    let out = broker
        .cli(&[
            "topic",
            "elect-leaders",
            "--type",
            "unclean",
            "--topic",
            "el",
            "--partition",
            "1",
        ])
        .success("topic elect-leaders --type unclean");
    assert!(
        out.stdout().contains("el-1 ") && out.stdout().contains("ELECTION_NOT_NEEDED"),
        "{}",
        out.describe()
    );
    // All partitions: none needed an election.
    let out = broker
        .cli(&["topic", "elect-leaders"])
        .success("topic elect-leaders");
    assert!(
        out.stdout().contains("no partition needed an election"),
        "{}",
        out.describe()
    );
    // A partition that does not exist fails the command.
    let out = broker
        .cli(&[
            "topic",
            "elect-leaders",
            "--topic",
            "el",
            "--partition",
            "7",
        ])
        .failure("elect-leaders for a missing partition");
    assert!(
        out.stdout().contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        out.describe()
    );
}
