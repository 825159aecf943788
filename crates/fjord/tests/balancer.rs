//! The continuous balancer (`balancer.mode=continuous`) on four real processes, nodes 1-3 in
//! racks a, b, c (controllers too) and node 4 in rack a, without any rebalance command:
//! - node 4 joins empty while acks=all producers run: the active controller moves replicas onto
//!   it until every broker holds within one of its fair share, each RF-3 partition still spans
//!   three racks, and every acknowledged record is read back; `fjord cluster rebalance
//!   --status`, `/v1/balancer` and the `fjord_balancer_*` metrics show the rounds;
//! - node 4 is killed: once it has been fenced for `balancer.broker.gone.ms`, its replicas of
//!   the RF-3 topic are re-replicated onto the live brokers (three replicas, all in sync, three
//!   racks);
//! - a cordoned broker shows as such in `fjord cluster info` and `fjord cluster status`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{Cluster, Layout};
use common::{ck_consume, ck_produce, records, wait_until};

/// Rack of a node: 4 shares rack a with 1.
fn rack(b: i64) -> i64 {
    if b == 4 {
        1
    } else {
        b
    }
}

fn per_broker(layouts: &[&Layout]) -> BTreeMap<i64, u64> {
    let mut n: BTreeMap<i64, u64> = (1..=4).map(|b| (b, 0)).collect();
    for l in layouts {
        for p in l.values() {
            for r in &p.replicas {
                *n.entry(*r).or_default() += 1;
            }
        }
    }
    n
}

#[test]
fn the_balancer_fills_a_new_broker_and_re_replicates_a_gone_one() {
    // Node 4 joins later, empty.
    let mut c = Cluster::with_an_empty_fourth_broker(
        "balancer.mode = \"continuous\"\nbalancer.interval.ms = 1000\n\
         balancer.broker.gone.ms = 4000\nbalancer.max.concurrent.moves = 3\n\
         balancer.throttle.bytes.per.sec = 50000000\n",
    );
    let mut acks = ck_produce(c.node(1), "spread", 400, &["--acks", "all"]);
    acks.extend(ck_produce(
        c.node(1),
        "single",
        300,
        &["--acks", "all", "--start-index", "400"],
    ));

    c.start_node(4);
    // The balancer starts on its own; produce with acks=all while it moves replicas.
    acks.extend(ck_produce(
        c.node(2),
        "spread",
        400,
        &["--acks", "all", "--start-index", "700"],
    ));
    acks.extend(ck_produce(
        c.node(2),
        "single",
        300,
        &["--acks", "all", "--start-index", "1100"],
    ));
    let mut seen = BTreeMap::new();
    let balanced = wait_until(Duration::from_secs(120), || {
        let (Some(spread), Some(single)) = (c.layout(1, "spread"), c.layout(1, "single")) else {
            return false;
        };
        seen = per_broker(&[&spread, &single]);
        let total: u64 = seen.values().sum();
        let fair = total as f64 / 4.0;
        seen.values().all(|n| (*n as f64 - fair).abs() <= 1.0)
            && spread
                .values()
                .all(|p| p.replicas.len() == 3 && p.isr.len() == 3)
    });
    assert!(balanced, "replicas never reached the fair share: {seen:?}");
    let spread = c.wait_isr("spread", None, 3);
    c.wait_isr("single", None, 1);
    for p in spread.values() {
        let racks: BTreeSet<i64> = p.replicas.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 3, "rack spread lost: {p:?}");
    }
    // The moves finish: nothing in progress, throttles cleared.
    let active = c.active_controller(1);
    let mut status = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let r = c.node(2).cli(&[
                "-o",
                "json",
                "cluster",
                "rebalance",
                "--status",
                "--admin",
                c.node(2).admin(),
            ]);
            if !r.ok() {
                return false;
            }
            status = serde_json::from_str(&r.stdout()).expect("status JSON");
            status["balancer"]["moves_in_progress"] == 0 && status["balancer"]["state"] == "idle"
        }),
        "the balancer never settled: {status:#}"
    );
    let b = &status["balancer"];
    assert_eq!(b["mode"], "continuous", "{status:#}");
    assert_eq!(status["active_controller"], active as i64, "{status:#}");
    let text = c
        .node(3)
        .cli(&[
            "cluster",
            "rebalance",
            "--status",
            "--admin",
            c.node(3).admin(),
        ])
        .success("rebalance --status")
        .stdout();
    println!("{text}");
    assert!(text.contains("mode:              continuous"), "{text}");
    let rounds = c
        .metric(active, "fjord_balancer_rounds_total", &[])
        .unwrap_or(0.0);
    let moves = c
        .metric(active, "fjord_balancer_moves_total", &[])
        .unwrap_or(0.0);
    assert!(
        rounds >= 1.0 && moves >= 1.0,
        "rounds {rounds} moves {moves}"
    );
    assert_eq!(
        c.metric(active, "fjord_balancer_moves_in_progress", &[]),
        Some(0.0)
    );
    let described = c
        .node(1)
        .cli(&["-o", "json", "topic", "describe", "spread"])
        .stdout();
    assert!(!described.contains("throttled.replicas"), "{described}");
    // Nothing acknowledged was lost.
    for (topic, expect, range) in [
        ("spread", 800u64, [0..400, 700..1100]),
        ("single", 600, [400..700, 1100..1400]),
    ] {
        let dump = ck_consume(c.node(2), topic, expect);
        let missing =
            records::acked_but_unread(&acks, &dump, |i| range.iter().any(|r| r.contains(&i)));
        assert!(
            missing.is_empty(),
            "{topic}: acknowledged but lost {missing:?}"
        );
    }

    // A cordoned broker shows in the CLI's broker listings.
    let cordon = c
        .node(1)
        .cli(&["broker", "--admin", c.node(1).admin(), "cordon", "3"]);
    cordon.success("broker cordon 3");
    let info = c
        .node(1)
        .cli(&["cluster", "info", "--admin", c.node(1).admin()])
        .success("cluster info")
        .stdout();
    println!("{info}");
    let line3 = info
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .unwrap_or_default();
    assert!(line3.contains("(cordoned)"), "{info}");
    let st = c
        .node(1)
        .cli(&["cluster", "status", "--admin", c.node(1).admin()])
        .success("cluster status")
        .stdout();
    assert!(st.contains("yes"), "{st}");
    c.node(1)
        .cli(&["broker", "--admin", c.node(1).admin(), "uncordon", "3"])
        .success("broker uncordon 3");

    // Node 4 dies: after balancer.broker.gone.ms its RF-3 replicas move to live brokers.
    c.kill9(4);
    let mut last = None;
    let healed = wait_until(Duration::from_secs(120), || {
        let Some(l) = c.layout(1, "spread") else {
            return false;
        };
        let ok = l.values().all(|p| {
            p.replicas.len() == 3
                && !p.replicas.contains(&4)
                && p.isr.len() == 3
                && p.replicas
                    .iter()
                    .map(|b| rack(*b))
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 3
        });
        last = Some(l);
        ok
    });
    assert!(healed, "node 4's replicas never moved: {last:?}");
    // The RF-3 topic takes acks=all writes (min ISR met) and reads everything back.
    let more = ck_produce(
        c.node(1),
        "spread",
        100,
        &["--acks", "all", "--start-index", "2000"],
    );
    assert_eq!(more.len(), 100);
    let dump = ck_consume(c.node(3), "spread", 900);
    let lost = records::acked_but_unread(acks.iter().chain(more.iter()), &dump, |i| {
        i < 400 || (700..1100).contains(&i) || i >= 2000
    });
    assert!(lost.is_empty(), "spread: acknowledged but lost {lost:?}");
    let log = c.node(c.active_controller(1)).all_logs();
    assert!(
        log.contains("balancer round"),
        "no balancer round logged by the active controller"
    );
    c.assert_no_panic_in_logs();
}
