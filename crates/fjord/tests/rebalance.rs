//! `fjord cluster rebalance` on real processes: three brokers in racks a, b, c hold two topics;
//! a fourth broker joins rack a; the dry run plans moves onto it, `--execute` (throttled, two
//! at a time) carries them out; afterwards every broker holds within one of its fair share of
//! replicas, every rack leads partitions of the RF-3 topic, and every record acknowledged with
//! acks=all before the moves is read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::Cluster;
use common::{ck_consume, ck_produce, records, wait_until};

#[test]
fn a_joining_broker_gets_its_share() {
    // Leadership moves only when the rebalance moves it; node 4 joins later, empty.
    let mut c = Cluster::with_an_empty_fourth_broker("auto.leader.rebalance.enable = false");
    let mut acks = ck_produce(c.node(1), "spread", 600, &["--acks", "all"]);
    acks.extend(ck_produce(
        c.node(1),
        "single",
        400,
        &["--acks", "all", "--start-index", "600"],
    ));

    c.start_node(4);
    // The dry run sees broker 4 once it is unfenced: an eligible broker holding nothing.
    let mut plan = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let r = c
                .node(1)
                .cli(&["-o", "json", "cluster", "rebalance", "--dry-run"]);
            if !r.ok() {
                return false;
            }
            plan = serde_json::from_str(&r.stdout()).expect("plan JSON");
            plan["before"]["replicas"]["min"] == 0
        }),
        "broker 4 never became eligible: {plan:#}"
    );
    assert!(plan["data_moves"].as_u64().unwrap() > 0, "{plan:#}");
    // Sizes from DescribeLogDirs: the moves copy the records produced above.
    assert_eq!(plan["sizes_known"], true, "{plan:#}");
    assert!(plan["bytes_to_move"].as_u64().unwrap() > 0, "{plan:#}");
    let after = &plan["after"]["replicas"];
    assert!(
        after["max"].as_u64().unwrap() - after["min"].as_u64().unwrap() <= 1,
        "{plan:#}"
    );
    let table = c
        .node(1)
        .cli(&["cluster", "rebalance", "--dry-run"])
        .success("rebalance --dry-run")
        .stdout();
    println!("{table}");
    assert!(table.contains("bytes to move: "), "{table}");
    assert!(table.contains("disk bytes"), "{table}");
    assert!(table.contains("Dry run: nothing changed"), "{table}");
    // The dry run changed nothing.
    let replicas = |c: &mut Cluster| {
        let mut per_broker: BTreeMap<i64, u64> = BTreeMap::new();
        for topic in ["spread", "single"] {
            for p in c.layout_any(topic).expect("layout").values() {
                for r in &p.replicas {
                    *per_broker.entry(*r).or_default() += 1;
                }
            }
        }
        per_broker
    };
    assert_eq!(replicas(&mut c).get(&4), None);

    let out = c
        .node(1)
        .cli(&[
            "cluster",
            "rebalance",
            "--execute",
            "--max-concurrent",
            "2",
            "--throttle",
            "50000000",
            "--timeout",
            "120",
        ])
        .success("rebalance --execute")
        .stdout();
    println!("{out}");
    assert!(out.contains("Rebalance done"), "{out}");

    // Every broker answers the new layout with full ISRs.
    let spread = c.wait_isr("spread", None, 3);
    c.wait_isr("single", None, 1);
    let per_broker = replicas(&mut c);
    let total: u64 = per_broker.values().sum();
    let fair = total as f64 / 4.0;
    for b in 1..=4 {
        let n = per_broker.get(&b).copied().unwrap_or(0) as f64;
        assert!(
            (n - fair).abs() <= 1.0,
            "broker {b} holds {n} replicas, fair {fair}: {per_broker:?}"
        );
    }
    let rack = |b: i64| if b == 4 { 1 } else { b };
    let leading_racks: BTreeSet<i64> = spread.values().map(|p| rack(p.leader)).collect();
    assert_eq!(leading_racks.len(), 3, "{spread:?}");
    for p in spread.values() {
        let racks: BTreeSet<i64> = p.replicas.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 3, "rack spread lost: {p:?}");
    }
    // Throttles are gone once the moves are done.
    let configs = c
        .node(1)
        .cli(&["-o", "json", "topic", "describe", "spread"])
        .stdout();
    assert!(!configs.contains("throttled.replicas"), "{configs}");

    // Nothing acknowledged was lost.
    for (topic, expect) in [("spread", 600u64), ("single", 400)] {
        let dump = ck_consume(c.node(2), topic, expect);
        let missing = records::acked_but_unread(&acks, &dump, |i| (i < 600) == (topic == "spread"));
        assert!(
            missing.is_empty(),
            "{topic}: acknowledged but lost {missing:?}"
        );
    }
    c.assert_no_panic_in_logs();
}
