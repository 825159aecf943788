//! AZ-local produce against a real 3-node cluster in racks a, b, c: `fjord produce --rack b`
//! puts every unkeyed record on a partition led in rack b (and the brokers, reading the
//! `fjord_az=b` tag of its client id, account that produce traffic to rack b, on rack b's
//! broker only), keyed records still go by key hash, and with nothing led in rack b (its broker
//! down) unkeyed records spread over every partition with a leader, as Kafka's KIP-1123
//! partitioner does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{Cluster, Layout};
use common::{wait_until, FjordProcess};
use fjord_client::partitioner::partition_for_key;
use serde_json::Value;

const TOPIC: &str = "az-local";
const PARTITIONS: i32 = 6;

/// Partition → its leader's log end offset, from `fjord topic describe -o json` (not the high
/// watermark: a just-elected leader's may lag until its followers fetch again).
fn log_end_offsets(node: &FjordProcess) -> BTreeMap<i64, i64> {
    let r = node
        .cli(&["-o", "json", "topic", "describe", TOPIC])
        .success("topic describe");
    let v: Value = serde_json::from_str(&r.stdout()).expect("describe JSON");
    v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["log_end_offset"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// What each partition gained between two readings.
fn gained(before: &BTreeMap<i64, i64>, after: &BTreeMap<i64, i64>) -> BTreeMap<i64, i64> {
    after
        .iter()
        .map(|(p, hw)| (*p, hw - before.get(p).copied().unwrap_or(0)))
        .collect()
}

/// Broker id → produce bytes it accounted to clients in rack b (`GET /v1/traffic`, which
/// covers the whole cluster).
fn produce_bytes_from_rack_b(node: &FjordProcess) -> BTreeMap<i64, i64> {
    let r = node.http_get("/v1/traffic");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("traffic JSON");
    v["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| {
            let bytes = b["flows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["client_rack"] == "b" && f["kind"] == "produce")
                .filter_map(|f| f["bytes"].as_i64())
                .sum();
            (b["node_id"].as_i64().unwrap(), bytes)
        })
        .collect()
}

fn led_by(layout: &Layout, broker: i64) -> BTreeSet<i64> {
    layout
        .iter()
        .filter(|(_, p)| p.leader == broker)
        .map(|(id, _)| *id)
        .collect()
}

/// `fjord produce TOPIC --rack b` of `input` in batches of 10 lines; returns its stderr.
fn produce_in_rack_b(node: &FjordProcess, input: &str, extra: &[&str]) -> String {
    let mut args = vec!["produce", TOPIC, "--rack", "b", "--batch-size", "10"];
    args.extend_from_slice(extra);
    node.cli_with_stdin(&args, Some(input.as_bytes()))
        .success("fjord produce --rack b")
        .stderr()
}

#[test]
fn produce_with_a_rack_stays_on_partitions_led_there() {
    let mut c = Cluster::builder().start();
    c.node(1)
        .cli(&[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            &PARTITIONS.to_string(),
            "--replication-factor",
            "3",
        ])
        .success("topic create");
    let layout = c.wait_isr(TOPIC, None, 3);
    // Node 2 is in rack b; rack-aware placement spreads leadership over the three brokers.
    let in_b = led_by(&layout, 2);
    assert!(
        !in_b.is_empty() && in_b.len() < PARTITIONS as usize,
        "rack b should lead some partitions, not all: {layout:?}"
    );

    // Unkeyed: 30 batches, every one on a partition led in rack b, round-robin over them.
    let before = log_end_offsets(c.node(1));
    let input: String = (0..300).map(|i| format!("value {i}\n")).collect();
    let stderr = produce_in_rack_b(c.node(1), &input, &[]);
    let in_b_list = in_b
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        stderr.contains(&format!("unkeyed records go to partitions {in_b_list} ")),
        "{stderr}"
    );
    assert_eq!(
        c.layout(1, TOPIC).as_ref(),
        Some(&layout),
        "leadership moved during the test"
    );
    let got = gained(&before, &log_end_offsets(c.node(1)));
    for (p, n) in &got {
        if in_b.contains(p) {
            assert!(*n > 0, "partition {p} (led in b) got nothing: {got:?}");
        } else {
            assert_eq!(*n, 0, "partition {p} is not led in rack b: {got:?}");
        }
    }
    assert_eq!(got.values().sum::<i64>(), 300, "{got:?}");
    // The client id said rack b: every produce byte went to rack b's broker.
    assert!(
        wait_until(Duration::from_secs(10), || produce_bytes_from_rack_b(
            c.node(1)
        )
        .get(&2)
        .is_some_and(|b| *b > 0)),
        "{:?}",
        produce_bytes_from_rack_b(c.node(1))
    );
    let traffic = produce_bytes_from_rack_b(c.node(1));
    assert!(
        traffic.iter().all(|(id, b)| *id == 2 || *b == 0),
        "produce from rack b reached other racks: {traffic:?}"
    );

    // Keyed records keep Kafka's murmur2 placement, whatever the rack.
    let before = log_end_offsets(c.node(1));
    let keys: Vec<String> = (0..120).map(|i| format!("key-{i}")).collect();
    let input: String = keys.iter().map(|k| format!("{k}=v\n")).collect();
    produce_in_rack_b(c.node(1), &input, &["--key-separator", "="]);
    let mut want: BTreeMap<i64, i64> = (0..PARTITIONS as i64).map(|p| (p, 0)).collect();
    for k in &keys {
        *want
            .get_mut(&(partition_for_key(k.as_bytes(), PARTITIONS) as i64))
            .unwrap() += 1;
    }
    assert_eq!(gained(&before, &log_end_offsets(c.node(1))), want);

    // Rack b's broker is down: nothing is led there, so unkeyed records go to every
    // partition with a leader.
    c.kill9(2);
    let layout = c.wait_layout(TOPIC, "leaders off node 2", |l| {
        l.values().all(|p| p.leader > 0 && p.leader != 2)
    });
    let before = log_end_offsets(c.node(1));
    let input: String = (0..120).map(|i| format!("fallback {i}\n")).collect();
    let stderr = produce_in_rack_b(c.node(1), &input, &[]);
    assert!(
        stderr.contains("no partition of topic \"az-local\" is led in rack b"),
        "{stderr}"
    );
    let got = gained(&before, &log_end_offsets(c.node(1)));
    assert_eq!(got.values().sum::<i64>(), 120, "{got:?}");
    // 12 batches round-robin over all 6 partitions: each gets two.
    assert!(got.values().all(|n| *n == 20), "{got:?} with {layout:?}");
    c.assert_no_panic_in_logs();
}
