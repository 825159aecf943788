//! A three-node cluster (every node broker and controller, racks a, b and c) on 127.0.0.1-3:
//! replicas spread over racks, metadata converging on every broker, the active controller
//! killed with SIGKILL and replaced, fencing of a broker that stops heartbeating, and a new
//! broker epoch for every restart, with the old epoch refused.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::send_signal;
use serde_json::Value;

fn broker(status: &Value, id: i64) -> &Value {
    status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node_id"] == id)
        .unwrap_or_else(|| panic!("broker {id} not in {status:#}"))
}

fn unfenced(status: &Value) -> usize {
    status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["fenced"] == false)
        .count()
}

#[test]
fn replicas_spread_over_racks_and_controller_failover() {
    let c = Cluster::start();
    c.wait_status(1, "three unfenced brokers", |s| unfenced(s) == 3);

    // RF 3 over 3 racks: every partition on all three brokers, leaders balanced.
    c.node(2)
        .cli(&[
            "topic",
            "create",
            "spread",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
        ])
        .success("create spread");
    let spread = c.converged(&[1, 2, 3], "spread", |l| l.len() == 6);
    let mut leads = BTreeMap::new();
    for (p, info) in &spread {
        let mut r = info.replicas.clone();
        r.sort_unstable();
        assert_eq!(
            r,
            vec![1, 2, 3],
            "partition {p} replicas {:?}",
            info.replicas
        );
        assert_eq!(info.isr.len(), 3);
        assert_eq!(
            info.leader, info.replicas[0],
            "preferred leader leads partition {p}"
        );
        *leads.entry(info.leader).or_insert(0) += 1;
    }
    assert_eq!(
        leads.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{leads:?}"
    );

    // Clients reach the leaders through any broker.
    let lines: String = (0..300).map(|i| format!("r{i}\n")).collect();
    c.node(1)
        .kcat(&["-P", "-t", "spread"], Some(lines.as_bytes()))
        .success("produce");
    let got = c
        .node(3)
        .kcat(&["-C", "-t", "spread", "-e", "-q"], None)
        .success("consume");
    assert_eq!(got.stdout().lines().count(), 300);

    // A consumer group: its coordinator is the leader of its __consumer_offsets partition,
    // found through any broker; committed offsets are there for the next member.
    let group = [
        "-G",
        "g1",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-q",
        "spread",
    ];
    let first = c.node(1).kcat(&group, None).success("group consume");
    assert_eq!(first.stdout().lines().count(), 300);
    let again = c.node(3).kcat(&group, None).success("group consume again");
    assert_eq!(again.stdout().lines().count(), 0, "offsets were committed");
    c.converged(&[1, 2, 3], "__consumer_offsets", |l| l.len() == 50);

    // Kill the active controller; the others elect a new one and admin keeps working.
    let s = c.wait_status(1, "an active controller", |s| {
        s["active_controller"].is_i64()
    });
    let old = s["status"]["active_controller"].as_i64().unwrap() as usize;
    let old_epoch = broker(&s["status"], old as i64)["broker_epoch"]
        .as_i64()
        .unwrap();
    let mut c = c;
    c.nodes[old - 1].kill9();
    let others: Vec<usize> = (1..=3).filter(|i| *i != old).collect();
    let via = others[0];
    let s = c.wait_status(via, "a new active controller", |s| {
        s["active_controller"]
            .as_i64()
            .is_some_and(|a| a as usize != old)
    });
    let new = s["status"]["active_controller"].as_i64().unwrap();
    assert_ne!(new as usize, old);
    // The dead broker is fenced after its session and leads nothing any more.
    c.wait_status(via, "the killed broker fenced", |s| {
        broker(s, old as i64)["fenced"] == true
    });
    c.node(others[1])
        .cli(&[
            "topic",
            "create",
            "after",
            "--partitions",
            "4",
            "--replication-factor",
            "2",
        ])
        .success("create after failover");
    let after = c.converged(&others, "after", |l| l.len() == 4);
    for (p, info) in &after {
        assert!(
            !info.replicas.contains(&(old as i64)),
            "partition {p} placed on the fenced broker"
        );
        assert!(others.contains(&(info.leader as usize)));
    }
    c.converged(&others, "spread", |l| {
        l.values()
            .all(|i| i.leader as usize != old && !i.isr.contains(&(old as i64)))
    });

    // It comes back with a new, larger epoch, is unfenced, and catches up.
    c.nodes[old - 1].restart();
    let s = c.wait_status(via, "the restarted broker unfenced", |s| {
        let b = broker(s, old as i64);
        b["fenced"] == false && b["broker_epoch"].as_i64().unwrap() > old_epoch
    });
    let new_epoch = broker(&s["status"], old as i64)["broker_epoch"]
        .as_i64()
        .unwrap();
    c.converged(&[1, 2, 3], "after", |l| l.len() == 4);
    c.converged(&[1, 2, 3], "spread", |l| l.len() == 6);

    // A heartbeat carrying the previous incarnation's epoch is refused.
    let voters = fjord_metadata::quorum::parse_quorum_voters(&c.voters).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = fjord_metadata::quorum::ControllerClient::new(voters);
    let stale = rt.block_on(client.submit(
        fjord_metadata::ControllerRequest::Heartbeat {
            node_id: old as i32,
            broker_epoch: old_epoch,
            current_metadata_offset: i64::MAX / 2,
            want_fence: false,
        },
        Duration::from_secs(10),
    ));
    match stale {
        Err(fjord_metadata::quorum::SubmitError::Refused { code, .. }) => assert_eq!(code, 77),
        other => panic!("stale epoch heartbeat: {other:?}"),
    }
    let s = c.status(via).unwrap();
    assert_eq!(
        broker(&s["status"], old as i64)["broker_epoch"]
            .as_i64()
            .unwrap(),
        new_epoch,
        "the stale heartbeat changed nothing"
    );
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}

#[test]
fn a_broker_that_stops_heartbeating_is_fenced_until_it_returns() {
    let c = Cluster::start();
    c.wait_status(1, "three unfenced brokers", |s| unfenced(s) == 3);
    c.node(1)
        .cli(&[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ])
        .success("create t");
    c.converged(&[1, 2, 3], "t", |l| l.len() == 3);
    let s = c.wait_status(1, "an active controller", |s| {
        s["active_controller"].is_i64()
    });
    let active = s["status"]["active_controller"].as_i64().unwrap() as usize;
    // Freeze a broker that is not the active controller.
    let frozen = (1..=3).find(|i| *i != active).unwrap();
    let epoch = broker(&s["status"], frozen as i64)["broker_epoch"].clone();
    send_signal(c.node(frozen).pid(), "STOP");
    c.wait_status(active, "the frozen broker fenced", |s| {
        broker(s, frozen as i64)["fenced"] == true
    });
    let live: Vec<usize> = (1..=3).filter(|i| *i != frozen).collect();
    c.converged(&live, "t", |l| {
        l.values()
            .all(|i| i.leader as usize != frozen && !i.isr.contains(&(frozen as i64)))
    });
    // Thawed, it heartbeats again with the same epoch and is unfenced.
    send_signal(c.node(frozen).pid(), "CONT");
    let s = c.wait_status(active, "the thawed broker unfenced", |s| {
        broker(s, frozen as i64)["fenced"] == false
    });
    assert_eq!(broker(&s["status"], frozen as i64)["broker_epoch"], epoch);
    let text = c.node(frozen).http_get("/metrics").body;
    assert!(text.contains("fjord_broker_epoch"), "{text}");
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}

#[test]
fn broker_only_and_controller_only_nodes() {
    // Nodes 1 and 2: broker and controller; node 3: controller only; node 4: broker only,
    // which follows the metadata log over the controller listener.
    let c = Cluster::start_with(&[
        "broker,controller",
        "broker,controller",
        "controller",
        "broker",
    ]);
    let s = c.wait_status(4, "three unfenced brokers", |s| unfenced(s) == 3);
    let ids: Vec<i64> = s["status"]["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["node_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 4], "the controller-only node is no broker");
    assert_eq!(s["status"]["voters"].as_array().unwrap().len(), 3);
    assert_eq!(
        c.node(3).bootstrap(),
        "-",
        "a controller-only node has no Kafka listener"
    );
    c.wait_status(3, "status from the controller-only node", |s| {
        unfenced(s) == 3
    });

    // Created through the broker-only node: replicas on brokers 1, 2 and 4 (racks a, b, d).
    c.node(4)
        .cli(&[
            "topic",
            "create",
            "mixed",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ])
        .success("create through the broker-only node");
    let l = c.converged(&[1, 2, 4], "mixed", |l| l.len() == 3);
    for info in l.values() {
        let mut r = info.replicas.clone();
        r.sort_unstable();
        assert_eq!(r, vec![1, 2, 4]);
    }
    let lines: String = (0..50).map(|i| format!("m{i}\n")).collect();
    c.node(4)
        .kcat(&["-P", "-t", "mixed"], Some(lines.as_bytes()))
        .success("produce via node 4");
    let got = c
        .node(1)
        .kcat(&["-C", "-t", "mixed", "-e", "-q"], None)
        .success("consume via node 1");
    assert_eq!(got.stdout().lines().count(), 50);

    // Deleted through node 1: every broker forgets it and removes its directories.
    c.node(1)
        .cli(&["topic", "delete", "mixed"])
        .success("delete");
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in [1, 2, 4] {
        loop {
            // (A Metadata request naming the topic would auto-create it again.)
            let r = c.node(i).cli(&["topic", "list"]);
            let gone = r.ok()
                && !r
                    .stdout()
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some("mixed"));
            let dirs_left = std::fs::read_dir(c.node(i).data_dir())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("mixed-"));
            if gone && !dirs_left {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} still has topic mixed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}
