//! Partition skew (docs/operations.md, "Partition skew"): a producer sending 80 % of its
//! records with one key makes that key's partition the hottest of its topic; `fjord topic
//! skew` shows it with its ratio to the mean and the key as its top key, the broker logs a WARN
//! and sets the skew metrics; a topic with evenly spread keys shows no skewed partition.

mod common;

use std::time::Duration;

use common::cluster::{metric_value, warn_lines, Cluster};
use common::{wait_until, FjordProcess};
use fjord_client::partitioner::partition_for_key;
use serde_json::Value;

const PARTITIONS: i32 = 4;

/// `count` lines `KEY:VALUE`; with `hot`, 4 in 5 records have that key, the rest distinct keys.
fn lines(count: usize, hot: Option<&str>) -> Vec<u8> {
    let value = "v".repeat(200);
    let mut out = String::new();
    for i in 0..count {
        let key = match hot {
            Some(h) if i % 5 != 4 => h.to_string(),
            _ => format!("user-{i}"),
        };
        out.push_str(&format!("{key}:{value}\n"));
    }
    out.into_bytes()
}

fn skew_json(broker: &FjordProcess, topic: &str) -> Value {
    let r = broker
        .cli(&["topic", "skew", topic, "--admin", broker.admin(), "--json"])
        .success("topic skew");
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout()))
}

fn metrics(broker: &FjordProcess) -> String {
    broker.http_get("/metrics").body
}

#[test]
fn one_hot_key_makes_its_partition_skewed_and_even_keys_do_not() {
    let broker = FjordProcess::start(&[
        "--set",
        "skew.check.interval.ms=300",
        "--set",
        "skew.window.ms=120000",
        "--set",
        "skew.warn.min.bytes.per.sec=100",
        "--set",
        "skew.sample.rate=1",
    ]);
    for t in ["hot", "hot-lz4", "even"] {
        broker
            .cli(&[
                "topic",
                "create",
                t,
                "--partitions",
                &PARTITIONS.to_string(),
            ])
            .success("create topic");
    }
    for (topic, compression, hot) in [
        ("hot", "none", Some("customer-42")),
        // Sampled compressed batches are inflated again for their keys.
        ("hot-lz4", "lz4", Some("customer-42")),
        ("even", "none", None),
    ] {
        broker
            .cli_with_stdin(
                &[
                    "produce",
                    topic,
                    "--key-separator",
                    ":",
                    "--compression",
                    compression,
                ],
                Some(&lines(4000, hot)),
            )
            .success("produce");
    }

    let hot_partition = partition_for_key(b"customer-42", PARTITIONS) as i64;
    let mut last = Value::Null;
    let found = wait_until(Duration::from_secs(30), || {
        last = skew_json(&broker, "hot");
        last["skewed"] == 1 && last["partitions"][0]["top_keys"][0]["key"] == "customer-42"
    });
    assert!(found, "no skewed partition with its hot key: {last:#}");
    let top = &last["partitions"][0];
    assert_eq!(top["partition"], hot_partition, "{last:#}");
    assert_eq!(top["leader"], 1);
    // ≥ 80 % of the topic's bytes against a mean of 25 %.
    let ratio = top["ratio"].as_f64().unwrap();
    assert!(ratio > 3.0, "ratio {ratio}: {last:#}");
    assert!(top["share"].as_f64().unwrap() >= 0.8, "{last:#}");
    // Of the partition's records, the hot key has 80 % / (80 % + its part of the other 20 %).
    let key = &top["top_keys"][0];
    let share = key["share"].as_f64().unwrap();
    assert!(share >= 0.85, "hot key share {share}: {last:#}");
    assert_eq!(key["encoding"], "utf8");
    assert_eq!(last["partition_count"], PARTITIONS);
    assert_eq!(
        last["partitions"].as_array().unwrap().len(),
        PARTITIONS as usize
    );
    for p in &last["partitions"].as_array().unwrap()[1..] {
        assert_eq!(p["skewed"], false, "{last:#}");
    }

    // Compressed: rates count the bytes appended (compressed), key shares the records' bytes.
    let lz4 = skew_json(&broker, "hot-lz4");
    let top = &lz4["partitions"][0];
    assert_eq!(top["partition"], hot_partition, "{lz4:#}");
    assert_eq!(top["top_keys"][0]["key"], "customer-42", "{lz4:#}");
    assert!(
        top["top_keys"][0]["share"].as_f64().unwrap() >= 0.85,
        "{lz4:#}"
    );

    // The WARN (once per episode) and the metrics.
    let p = hot_partition.to_string();
    let warned = wait_until(Duration::from_secs(20), || {
        let m = metrics(&broker);
        metric_value(&m, "fjord_skewed_partitions", &[]) == Some(2.0)
            && metric_value(
                &m,
                "fjord_partition_skew_ratio",
                &[("topic", "hot"), ("partition", &p)],
            )
            .is_some_and(|r| r > 3.0)
            && !warn_lines(&broker.all_logs(), "partition skew").is_empty()
    });
    let logs = broker.all_logs();
    assert!(
        warned,
        "no skew WARN or metrics:\n{}\n{}",
        metrics(&broker),
        broker.log_tail(50)
    );
    let warns = warn_lines(&logs, "topic=hot ");
    assert_eq!(warns.len(), 1, "one WARN per episode: {warns:#?}");
    let w = warns[0];
    assert!(
        w.contains("topic=hot") && w.contains(&format!("partition={p}")),
        "{w}"
    );
    assert!(w.contains("top_key=customer-42"), "{w}");
    let m = metrics(&broker);
    assert!(
        metric_value(
            &m,
            "fjord_partition_bytes_in_rate",
            &[("topic", "hot"), ("partition", &p)]
        )
        .is_some_and(|r| r > 0.0),
        "{m}"
    );
    assert!(metric_value(&m, "fjord_skew_sampled_batches_total", &[]).is_some_and(|n| n > 0.0));

    // Even keys: every partition has traffic, none is skewed, no WARN for that topic.
    let even = skew_json(&broker, "even");
    assert_eq!(even["skewed"], 0, "{even:#}");
    for p in even["partitions"].as_array().unwrap() {
        let r = p["ratio"].as_f64().unwrap();
        assert!(r > 0.5 && r < 1.5, "partition ratio {r}: {even:#}");
    }
    assert!(warn_lines(&broker.all_logs(), "topic=even").is_empty());

    // The table, and errors as one line.
    let table = broker
        .cli(&["topic", "skew", "hot", "--admin", broker.admin()])
        .success("topic skew table")
        .stdout();
    assert!(
        table.contains("customer-42") && table.contains("1 skewed"),
        "{table}"
    );
    let r = broker
        .cli(&["topic", "skew", "nope", "--admin", broker.admin()])
        .failure("unknown topic");
    assert!(
        r.stderr().contains("unknown topic \"nope\""),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr().trim().lines().count(), 1, "{}", r.describe());
    broker.assert_no_panic_in_log();
}

#[test]
fn with_the_sketch_off_rates_still_count_and_no_keys_are_sampled() {
    let broker = FjordProcess::start(&[
        "--set",
        "skew.sketch.enable=false",
        "--set",
        "skew.check.interval.ms=300",
        "--set",
        "skew.warn.min.bytes.per.sec=100",
    ]);
    broker
        .cli(&["topic", "create", "hot", "--partitions", "4"])
        .success("create topic");
    broker
        .cli_with_stdin(
            &["produce", "hot", "--key-separator", ":"],
            Some(&lines(2000, Some("customer-42"))),
        )
        .success("produce");
    let mut last = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            last = skew_json(&broker, "hot");
            last["skewed"] == 1
        }),
        "{last:#}"
    );
    assert_eq!(last["partitions"][0]["top_keys"], serde_json::json!([]));
    let m = metrics(&broker);
    assert_eq!(
        metric_value(&m, "fjord_skew_sampled_batches_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&m, "fjord_skew_sketch_enabled", &[]),
        Some(0.0)
    );
}

/// Three brokers: any broker's admin endpoint answers for the topic, gathering every leader's
/// rates and keys; the WARN comes from the hot partition's leader only.
#[test]
fn in_a_cluster_any_broker_answers_and_the_leader_warns() {
    let mut c = Cluster::builder()
        .config(
            "skew.check.interval.ms = 300\nskew.warn.min.bytes.per.sec = 100\nskew.sample.rate = 1",
        )
        .start();
    c.create_topics(&[("spread", 6, 1)]);
    c.node(1)
        .cli_with_stdin(
            &["produce", "spread", "--key-separator", ":"],
            Some(&lines(4000, Some("customer-42"))),
        )
        .success("produce");
    let hot = partition_for_key(b"customer-42", 6) as i64;
    let leader = c.leader("spread", hot);
    let via = *c
        .brokers()
        .iter()
        .find(|&&b| b as i64 != leader)
        .expect("another broker");
    let mut last = Value::Null;
    let found = wait_until(Duration::from_secs(30), || {
        last = skew_json(c.node(via), "spread");
        last["skewed"] == 1
    });
    assert!(found, "{last:#}");
    let top = &last["partitions"][0];
    assert_eq!(top["partition"], hot, "{last:#}");
    assert_eq!(top["leader"], leader, "{last:#}");
    assert!(top["ratio"].as_f64().unwrap() > 4.0, "{last:#}");
    assert_eq!(top["top_keys"][0]["key"], "customer-42", "{last:#}");
    assert_eq!(last["partitions"].as_array().unwrap().len(), 6, "{last:#}");
    assert_eq!(last["missing"], serde_json::json!([]), "{last:#}");
    assert_eq!(last["errors"], serde_json::json!([]), "{last:#}");
    // Partitions led by every broker had traffic: the answer came from all three.
    let leaders: std::collections::BTreeSet<i64> = last["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["rate"].as_f64().unwrap() > 0.0)
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    assert_eq!(leaders.len(), 3, "{last:#}");
    assert!(
        wait_until(Duration::from_secs(20), || !warn_lines(
            &c.node(leader as usize).all_logs(),
            "topic=spread "
        )
        .is_empty()),
        "no WARN on the leader {leader}"
    );
    for b in c.brokers().to_vec() {
        if b as i64 != leader {
            assert!(warn_lines(&c.node(b).all_logs(), "topic=spread ").is_empty());
        }
    }
}
