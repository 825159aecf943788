//! Partition reassignment (KIP-455) on a four-node cluster of real `fjord` processes, driven by
//! Apache Kafka's own `kafka-reassign-partitions` (from the Kafka release that
//! `scripts/setup-kafka.sh` lays out, as in kafka_tools.rs):
//!
//! - a move that adds a broker and drops the partition's leader: `--execute`, `--verify` until
//!   completed (which also clears the throttle configs), the leader handed to the added
//!   replica (the first of the target), the dropped broker's log deleted, and every record
//!   acknowledged with acks=all read back from the added replica;
//! - a throttled move (`--throttle`) that only creeps along while acks=all producers keep
//!   their pace, listed with `--list` (adding/removing replicas), then `--cancel`led: the
//!   original replicas, the half-copied log deleted, the throttle configs cleared;
//! - bad targets answered with Kafka's error codes (AlterPartitionReassignments sent
//!   directly), and the tool's one-line reason for one of them;
//! - a replica moved off a stopped broker: its log is deleted when the broker comes back.
//!
//! Node 4 is in rack a with node 1, so rack diversity can be lost (and is refused).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Layout};
use common::kafka::Tools;
use common::{ck_consume, ck_produce, records, wait_until, CmdResult};
use fjord_client::{Connection, ConnectionConfig};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "moves";
/// Value padding of the produced records: ~1 KB each.
const PAD: usize = 1000;

/// `kafka-reassign-partitions --bootstrap-server B <args>`.
fn reassign(tools: &Tools, bootstrap: &str, args: &[&str]) -> CmdResult {
    let mut all = vec!["--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    tools.run("kafka-reassign-partitions", &all, None)
}

/// A reassignment JSON file for the tool (version 1).
fn plan_file(dir: &Path, name: &str, moves: &[(i64, &[i64])]) -> String {
    let partitions: Vec<serde_json::Value> = moves
        .iter()
        .map(|(p, replicas)| {
            serde_json::json!({"topic": TOPIC, "partition": p, "replicas": replicas})
        })
        .collect();
    let path = dir.join(name);
    fs::write(
        &path,
        serde_json::json!({"version": 1, "partitions": partitions}).to_string(),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// The topic's overrides as `kafka-configs --describe` prints them.
fn topic_configs(tools: &Tools, bootstrap: &str) -> String {
    tools.ok(
        "kafka-configs",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            TOPIC,
        ],
    )
}

fn set(v: &[i64]) -> BTreeSet<i64> {
    v.iter().copied().collect()
}

/// Sends AlterPartitionReassignments (v1) to `bootstrap` and returns (error code, message)
/// per partition, in request order.
fn alter_directly(bootstrap: &str, targets: &[(i32, Option<Vec<i32>>)]) -> Vec<(i16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(bootstrap, ConnectionConfig::default())
            .await
            .expect("connect");
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(
                    targets
                        .iter()
                        .map(|(p, r)| {
                            ReassignablePartition::default()
                                .with_partition_index(*p)
                                .with_replicas(
                                    r.as_ref().map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
                                )
                        })
                        .collect(),
                )]);
        let resp = conn.send(&req).await.expect("AlterPartitionReassignments");
        assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
        let list = conn
            .send(&ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000))
            .await
            .expect("ListPartitionReassignments");
        assert_eq!(list.error_code, 0);
        resp.responses[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.error_code,
                    p.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// Wait until node `id` has no directory for partition `p` of the topic.
fn wait_log_gone(c: &Cluster, id: usize, p: i64) {
    let dir = c.node(id).data_dir().join(format!("{TOPIC}-{p}"));
    assert!(
        wait_until(Duration::from_secs(30), || !dir.exists()),
        "node {id} still has {}",
        dir.display()
    );
}

#[test]
fn kafka_reassign_partitions_moves_throttles_and_cancels() {
    let tools = Tools::new();
    let mut c = Cluster::builder()
        .roles(&[
            "broker,controller",
            "broker,controller",
            "broker,controller",
            "broker",
        ])
        // Leadership moves only when this test moves it.
        .config("auto.leader.rebalance.enable = false")
        .node_config(4, "broker.rack = \"a\"")
        .start();
    let b = c.bootstrap_all();
    let scratch = c.scratch();

    // Three partitions of RF 3 over racks a (nodes 1, 4), b (2), c (3): each partition has
    // one replica in rack a, and one partition is led from rack a.
    let out = tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &b,
            "--create",
            "--topic",
            TOPIC,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    assert!(out.contains("Created topic moves."), "{out}");
    let layout = c.wait_isr(TOPIC, None, 3);
    let in_rack_a = |r: &i64| *r == 1 || *r == 4;
    let other_in_a = |r: i64| if r == 1 { 4 } else { 1 };
    let moved = *layout
        .iter()
        .find(|(_, i)| in_rack_a(&i.leader))
        .expect("a partition led in rack a")
        .0;
    let cancelled = *layout.keys().find(|p| **p != moved).unwrap();
    let probe = *layout
        .keys()
        .find(|p| **p != moved && **p != cancelled)
        .unwrap();

    // ~1 MB in every partition, acknowledged by all in-sync replicas.
    let pad = PAD.to_string();
    let mut acks = Vec::new();
    for p in 0..3 {
        let start = (p * 1000).to_string();
        let part = p.to_string();
        acks.extend(ck_produce(
            c.node(1),
            TOPIC,
            1000,
            &[
                "--partition",
                &part,
                "--start-index",
                &start,
                "--value-pad",
                &pad,
                "--acks",
                "all",
                // Small batches, so a throttled copy goes batch by batch.
                "-X",
                "batch.size=16384",
            ],
        ));
    }

    // 1. Move `moved` off its leader (rack a) onto the other rack-a broker.
    let before = layout[&moved].clone();
    let dropped = before.leader;
    let added = other_in_a(dropped);
    let target: Vec<i64> = std::iter::once(added)
        .chain(before.replicas.iter().copied().filter(|r| *r != dropped))
        .collect();
    let file = plan_file(&scratch, "move.json", &[(moved, &target)]);
    let out = reassign(
        &tools,
        &b,
        &["--reassignment-json-file", &file, "--execute"],
    )
    .success("reassign --execute")
    .stdout();
    assert!(
        out.contains(&format!(
            "Successfully started partition reassignment for {TOPIC}-{moved}"
        )),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let verified = loop {
        let out = reassign(&tools, &b, &["--reassignment-json-file", &file, "--verify"])
            .success("reassign --verify")
            .stdout();
        if out.contains(&format!(
            "Reassignment of partition {TOPIC}-{moved} is completed."
        )) {
            break out;
        }
        assert!(Instant::now() < deadline, "never completed: {out}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        verified.contains("Clearing broker-level throttles"),
        "{verified}"
    );
    let layout = c.wait_layout(TOPIC, "the move on every broker", |l: &Layout| {
        let i = &l[&moved];
        i.replicas == target && set(&i.isr) == set(&target)
    });
    // The dropped leader handed over to the first target replica in the ISR: the added one.
    assert_eq!(layout[&moved].leader, added, "{layout:?}");
    wait_log_gone(&c, dropped as usize, moved);
    assert!(c
        .node(added as usize)
        .data_dir()
        .join(format!("{TOPIC}-{moved}"))
        .is_dir());
    assert_eq!(
        c.metric(dropped as usize, "fjord_replicas_deleted_total", &[]),
        Some(1.0)
    );
    for id in 1..=4 {
        assert_eq!(
            c.metric(id, "fjord_reassignments_total", &[("result", "completed")]),
            Some(1.0),
            "node {id}"
        );
    }
    // The added broker leads, so reading everything back reads its copy.
    let dump = ck_consume(c.node(2), TOPIC, acks.len() as u64);
    records::assert_acks_present(&acks, &dump, PAD);

    // 2. A throttled move of `cancelled` creeps (20 KB/s for ~1 MB), clients keep their pace.
    let before = c.layout_any(TOPIC).unwrap()[&cancelled].clone();
    let removed = *before.replicas.iter().find(|r| in_rack_a(r)).unwrap();
    let adding = other_in_a(removed);
    let slow: Vec<i64> = before
        .replicas
        .iter()
        .map(|r| if *r == removed { adding } else { *r })
        .collect();
    let file = plan_file(&scratch, "slow.json", &[(cancelled, &slow)]);
    let throttle_start = Instant::now();
    let out = reassign(
        &tools,
        &b,
        &[
            "--reassignment-json-file",
            &file,
            "--execute",
            "--throttle",
            "20000",
        ],
    )
    .success("reassign --execute --throttle")
    .stdout();
    assert!(
        out.contains("The inter-broker throttle limit was set to 20000 B/s"),
        "{out}"
    );
    let configs = topic_configs(&tools, &b);
    assert!(
        configs.contains(&format!(
            "follower.replication.throttled.replicas={cancelled}:{adding}"
        )),
        "{configs}"
    );
    assert!(
        configs.contains("leader.replication.throttled.replicas="),
        "{configs}"
    );
    let listed = reassign(&tools, &b, &["--list"])
        .success("reassign --list")
        .stdout();
    assert!(
        listed.contains(&format!(
            "{TOPIC}-{cancelled}: replicas: {}. adding: {adding}. removing: {removed}.",
            slow.iter()
                .chain(std::iter::once(&removed))
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )),
        "{listed}"
    );
    // acks=all on the partition being moved is not held up by the throttled copy.
    let t0 = Instant::now();
    let part = cancelled.to_string();
    acks.extend(ck_produce(
        c.node(2),
        TOPIC,
        200,
        &[
            "--partition",
            &part,
            "--start-index",
            "5000",
            "--value-pad",
            &pad,
            "--acks",
            "all",
            "-X",
            "batch.size=16384",
        ],
    ));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "acks=all took {:?} during a throttled move",
        t0.elapsed()
    );
    // Wait until the throttled copy has started (the checks below need throttled bytes).
    let leader = before.leader as usize;
    let throttled_sent = |c: &Cluster| {
        c.metric(
            leader,
            "fjord_replication_throttled_bytes_total",
            &[("side", "leader")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || throttled_sent(&c) > 0.0),
        "the leader sent no throttled bytes within 30 s"
    );
    let out = reassign(&tools, &b, &["--reassignment-json-file", &file, "--verify"])
        .success("reassign --verify (in progress)")
        .stdout();
    assert!(
        out.contains(&format!(
            "Reassignment of partition {TOPIC}-{cancelled} is still in progress."
        )),
        "the throttled move finished too soon: {out}"
    );
    let throttled = throttled_sent(&c);
    // At most the rate over the time so far, plus a second's allowance and a batch or two
    // of overdraft.
    let bound = 20_000.0 * (throttle_start.elapsed().as_secs_f64() + 1.0) + 64_000.0;
    assert!(
        throttled > 0.0 && throttled < bound,
        "leader {leader} sent {throttled} throttled bytes (bound {bound})"
    );
    assert_eq!(
        c.metric(1, "fjord_reassignments_in_progress", &[]),
        Some(1.0)
    );

    let out = reassign(&tools, &b, &["--reassignment-json-file", &file, "--cancel"])
        .success("reassign --cancel")
        .stdout();
    assert!(
        out.contains(&format!(
            "Successfully cancelled partition reassignment for: {TOPIC}-{cancelled}"
        )),
        "{out}"
    );
    c.wait_layout(TOPIC, "the cancelled move back on its replicas", |l| {
        set(&l[&cancelled].replicas) == set(&before.replicas)
            && set(&l[&cancelled].isr) == set(&before.replicas)
    });
    wait_log_gone(&c, adding as usize, cancelled);
    let configs = topic_configs(&tools, &b);
    assert!(!configs.contains("throttled.replicas"), "{configs}");
    assert_eq!(
        c.metric(1, "fjord_reassignments_total", &[("result", "cancelled")]),
        Some(1.0)
    );
    assert_eq!(
        c.metric(1, "fjord_reassignments_in_progress", &[]),
        Some(0.0)
    );
    // Each step is logged at INFO by the active controller.
    let logs: String = (1..=4).map(|id| c.node(id).all_logs()).collect();
    for step in ["started", "completed", "cancelled"] {
        assert!(
            logs.contains(&format!("partition reassignment {step}")),
            "no '{step}' line in the logs"
        );
    }
    // Nothing acknowledged was lost by the move or the cancellation.
    let dump = ck_consume(c.node(3), TOPIC, acks.len() as u64);
    records::assert_acks_present(&acks, &dump, PAD);

    // 3. Bad targets, with Kafka's error codes.
    let p = probe as i32;
    let replicas: Vec<i32> = c.layout_any(TOPIC).unwrap()[&probe]
        .replicas
        .iter()
        .map(|r| *r as i32)
        .collect();
    let in_a = *replicas.iter().find(|r| **r == 1 || **r == 4).unwrap();
    let spare = if in_a == 1 { 4 } else { 1 };
    let not_a: Vec<i32> = replicas.iter().copied().filter(|r| *r != in_a).collect();
    let answers = alter_directly(
        c.node(3).bootstrap(),
        &[
            (p, Some(vec![not_a[0], not_a[1], 9])),
            (p, Some(vec![not_a[0], not_a[0], not_a[1]])),
            (p, Some(vec![])),
            (p, Some(vec![in_a, spare, not_a[0]])),
            (p, None),
            (7, Some(replicas.clone())),
        ],
    );
    let codes: Vec<i16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(codes, vec![39, 39, 39, 39, 85, 3], "{answers:#?}");
    assert!(
        answers[0].1.contains("broker 9 is not registered"),
        "{answers:?}"
    );
    assert!(answers[3].1.contains("rack"), "{answers:?}");
    // The same lost rack spread through the tool: its one-line reason, exit status 1.
    let file = plan_file(
        &scratch,
        "bad.json",
        &[(probe, &[in_a as i64, spare as i64, not_a[0] as i64])],
    );
    let r = reassign(
        &tools,
        &b,
        &["--reassignment-json-file", &file, "--execute"],
    )
    .failure("reassign --execute losing rack spread");
    let out = r.stdout();
    assert!(
        out.contains(&format!("{TOPIC}-{probe}: Invalid target replicas")) && out.contains("rack"),
        "{}",
        r.describe()
    );
    // A fenced broker takes no new replica.
    c.terminate(spare as usize, Duration::from_secs(30));
    let answers = alter_directly(
        c.node(2).bootstrap(),
        &[(p, Some(vec![spare, not_a[0], not_a[1]]))],
    );
    assert_eq!(answers[0].0, 39, "{answers:?}");
    assert!(answers[0].1.contains("fenced"), "{answers:?}");
    assert_eq!(
        set(&c.layout_any(TOPIC).unwrap()[&probe].replicas),
        replicas.iter().map(|r| *r as i64).collect(),
        "a refused target changes nothing"
    );

    // 4. A replica moved away while its broker is down: the broker deletes the stray log once
    // it has caught up after its restart. (The replacement had this partition before step 1,
    // so it also starts a fresh copy of a log it once deleted.)
    c.start_node(spare as usize);
    c.wait_isr(TOPIC, None, 3);
    let victim = added;
    let replacement = other_in_a(victim);
    c.terminate(victim as usize, Duration::from_secs(30));
    let now = c.layout_any(TOPIC).unwrap()[&moved].clone();
    let away: Vec<i32> = now
        .replicas
        .iter()
        .map(|r| if *r == victim { replacement } else { *r } as i32)
        .collect();
    let answers = alter_directly(c.node(2).bootstrap(), &[(moved as i32, Some(away.clone()))]);
    assert_eq!(answers[0].0, 0, "{answers:?}");
    let away: Vec<i64> = away.iter().map(|r| *r as i64).collect();
    c.wait_layout(TOPIC, "moved off the stopped broker", |l| {
        l[&moved].replicas == away && set(&l[&moved].isr) == set(&away)
    });
    let stray = c
        .node(victim as usize)
        .data_dir()
        .join(format!("{TOPIC}-{moved}"));
    assert!(stray.is_dir(), "nobody touches a stopped broker's files");
    c.start_node(victim as usize);
    wait_log_gone(&c, victim as usize, moved);
    assert_eq!(
        c.metric(victim as usize, "fjord_replicas_deleted_total", &[]),
        Some(1.0)
    );
    let dump = ck_consume(c.node(3), TOPIC, acks.len() as u64);
    records::assert_acks_present(&acks, &dump, PAD);

    // 5. A topic created with its replicas given (`kafka-topics --replica-assignment`): as
    // asked, preferred leader first; an unknown broker is refused with Kafka's reason.
    let out = tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &b,
            "--create",
            "--topic",
            "assigned",
            "--replica-assignment",
            "4:2:3,2:3:1",
        ],
    );
    assert!(out.contains("Created topic assigned."), "{out}");
    let l = c.wait_isr("assigned", None, 3);
    assert_eq!(l[&0].replicas, vec![4, 2, 3], "{l:?}");
    assert_eq!(l[&1].replicas, vec![2, 3, 1], "{l:?}");
    assert_eq!((l[&0].leader, l[&1].leader), (4, 2), "{l:?}");
    let r = tools
        .run(
            "kafka-topics",
            &[
                "--bootstrap-server",
                &b,
                "--create",
                "--topic",
                "assigned-bad",
                "--replica-assignment",
                "9:1",
            ],
            None,
        )
        .failure("kafka-topics --replica-assignment with an unknown broker");
    assert!(
        r.describe().contains("no such broker is registered"),
        "{}",
        r.describe()
    );
    c.assert_no_panic_in_logs();
}
