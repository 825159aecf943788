//! A consumer group's committed offsets survive the loss of its coordinator: `__consumer_offsets`
//! is replicated (RF 3), and the broker elected leader of the group's partition replays it
//! before it answers for the group. Real processes, kill -9, a librdkafka consumer group.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{parse_json_lines, python, unique};

/// One run of `group_ck_member.py`: read `max` records of `topic` in group `group`, committing
/// after each; returns the offsets read (partition 0).
fn consume(c: &Cluster, topic: &str, group: &str, max: usize, tag: &str) -> Vec<i64> {
    let out = c.scratch().join(format!("{tag}.jsonl"));
    let _ = std::fs::remove_file(&out);
    let max_s = max.to_string();
    let bootstrap = c.bootstrap_all();
    let r = python(
        "group_ck_member.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--out",
            out.to_str().unwrap(),
            "--max-messages",
            &max_s,
            "--commit",
            "--timeout",
            "60",
        ],
        Duration::from_secs(90),
    );
    assert!(r.ok(), "consumer {tag}: {}", r.describe());
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    parse_json_lines(&text)
        .iter()
        .filter(|e| e["ev"] == "msg")
        .map(|e| e["o"].as_i64().unwrap())
        .collect()
}

#[test]
fn committed_offsets_survive_a_coordinator_kill() {
    let mut c = Cluster::builder()
        .roles(&["broker", "broker", "broker", "controller"])
        .config(
            "replica.lag.time.max.ms = 2000\n\
             offsets.topic.num.partitions = 1\n\
             offsets.topic.replication.factor = 3",
        )
        .start();
    let topic = format!("gf-{}", unique());
    let group = format!("g-{}", unique());
    let r = c.node(1).cli(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "1",
        "--replication-factor",
        "3",
    ]);
    assert!(r.ok(), "{}", r.describe());
    c.wait_isr(&topic, None, 3);
    let records: String = (0..100).map(|i| format!("r{i}\n")).collect();
    let r = c.node(1).kcat(
        &["-t", &topic, "-P", "-X", "acks=all"],
        Some(records.as_bytes()),
    );
    assert!(r.ok(), "{}", r.describe());

    let first = consume(&c, &topic, &group, 40, "first");
    assert_eq!(first, (0..40).collect::<Vec<i64>>(), "first consumer");

    // The coordinator is the leader of __consumer_offsets-0 (one partition); wait until all
    // three replicas have the commits, then kill it.
    c.wait_isr("__consumer_offsets", Some(0), 3);
    let coordinator = c.leader("__consumer_offsets", 0) as usize;
    c.kill9(coordinator);
    c.wait_layout("__consumer_offsets", "a new offsets leader", |l| {
        l.get(&0)
            .is_some_and(|p| p.leader >= 0 && p.leader as usize != coordinator)
    });

    // A consumer of the same group resumes at the committed offset, not at the beginning.
    let second = consume(&c, &topic, &group, 60, "second");
    assert_eq!(
        second.first().copied(),
        Some(40),
        "after the coordinator was killed the group restarted at {:?}, not at its committed offset 40",
        second.first()
    );
    assert_eq!(second, (40..100).collect::<Vec<i64>>(), "second consumer");
    c.start_node(coordinator);
    c.assert_no_panic_in_logs();
}

/// The coordinator answers a join only once the group's records are on every in-sync replica
/// of its `__consumer_offsets` partition (Kafka appends them with acks=all): with the two
/// followers frozen (still in the ISR: neither fenced nor out of the ISR for a minute), a new
/// member is not told it joined; once they resume, it is. Before, the answer came from the leader's log alone, and a member told it joined
/// could lose its membership when the coordinator moved.
#[test]
fn a_join_is_answered_only_once_the_isr_has_it() {
    let mut c = Cluster::builder()
        .roles(&["broker", "broker", "broker", "controller"])
        .config(
            "replica.lag.time.max.ms = 60000\n\
             broker.session.timeout.ms = 60000\n\
             offsets.topic.num.partitions = 1\n\
             offsets.topic.replication.factor = 3\n\
             group.initial.rebalance.delay.ms = 0",
        )
        .start();
    let topic = format!("gj-{}", unique());
    let group = format!("g-{}", unique());
    let r = c
        .node(1)
        .cli(&["topic", "create", &topic, "--partitions", "1"]);
    assert!(r.ok(), "{}", r.describe());
    // FindCoordinator creates __consumer_offsets.
    let _ = c.node(1).cli(&["group", "describe", &group]);
    c.wait_isr("__consumer_offsets", Some(0), 3);
    let coordinator = c.leader("__consumer_offsets", 0) as usize;
    let followers: Vec<usize> = [1, 2, 3]
        .into_iter()
        .filter(|&n| n != coordinator)
        .collect();
    for &f in &followers {
        c.freeze(f);
    }
    let member = common::member::Member::start_at(
        c.node(coordinator).bootstrap(),
        &c.scratch(),
        "joiner",
        &topic,
        &group,
        &["--timeout", "120"],
    );
    // Within the coordinator's 5 s replication timeout nothing may be answered.
    let early = common::wait_until(Duration::from_secs(4), || !member.of("assign").is_empty());
    for &f in &followers {
        c.thaw(f);
    }
    assert!(
        !early,
        "the member was told it joined while its group's record was only on the leader: {:?}\n{}",
        member.events(),
        c.node(coordinator).log_tail(40)
    );
    let joined = common::wait_until(Duration::from_secs(60), || !member.of("assign").is_empty());
    assert!(
        joined,
        "no assignment after the followers resumed: {:?}",
        member.events()
    );
    drop(member);
    c.assert_no_panic_in_logs();
}
