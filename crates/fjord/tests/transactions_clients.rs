//! Transactions (issue 15) with real clients against real `fjord` processes: the Java client
//! (`tests/clients/java`, scenarios `transactions` and `streams-eos`) and confluent-kafka
//! (`tests/clients/ck_txn.py`). Each scenario was written against Apache Kafka first and passes
//! there unchanged; the checks are what a Kafka user relies on:
//!
//! - commit and abort over 3 partitions: read_committed sees exactly the committed records in
//!   order, read_uncommitted every record, an open transaction's records stay past the last
//!   stable offset until it commits;
//! - a second producer with the same transactional.id fences the first;
//! - consume-transform-produce with sendOffsetsToTransaction: the group's offsets move only on
//!   commit, the output holds every input exactly once;
//! - Kafka Streams exactly_once_v2 (a mapValues and a count with its changelog) and a
//!   confluent-kafka consume-transform-produce loop on 3 nodes while the test kill -9s a
//!   partition leader and the transaction coordinator: the output read with read_committed has
//!   every input exactly once (and every count is right).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{Background, Cluster};
use common::java::{client_json, int, java_command, progress, scenario_json, wait_progress};
use common::{python_command, run, wait_until, CmdResult, FjordProcess};

/// How long one scenario may run (each also stops itself a little earlier).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// The broker log lines worth reading when a transactional client failed: warnings, errors
/// and transaction lines (not the per-partition load lines), the last 60.
fn txn_log_excerpt(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains("txn")
                || l.contains("transaction"))
                && !l.contains("shard loaded")
        })
        .collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A single-node client run's output and the broker's transaction log lines.
fn failure_details(r: &CmdResult, broker: &FjordProcess) -> String {
    format!(
        "{}\n--- broker log ---\n{}",
        r.describe(),
        txn_log_excerpt(&broker.all_logs())
    )
}

/// Java's `String.hashCode` (what Kafka hashes a transactional id with).
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The node leading the `__transaction_state` partition of `transactional_id` (50
/// partitions, as Kafka: `abs(hashCode) % partitions`).
fn txn_coordinator(c: &mut Cluster, transactional_id: &str) -> usize {
    let p = (java_hash(transactional_id) & 0x7fff_ffff) % 50;
    let leader = c.leader("__transaction_state", p as i64);
    assert!(leader > 0, "__transaction_state-{p} has no leader");
    leader as usize
}

#[test]
fn java_transactions_commit_abort_fencing_and_consume_transform_produce() {
    let broker = FjordProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let r = run(
        java_command("transactions", broker.bootstrap(), &[]),
        None,
        SCENARIO_TIMEOUT,
    );
    let details = failure_details(&r, &broker);
    let v = scenario_json("transactions", r.ok(), &r.stdout(), &details);
    eprintln!("transactions: {v}");
    let ca = &v["commit_abort"];
    // 12 transactions of 30 records, 4 aborted, then one open transaction of 3 records that
    // commits: 8 x 30 + 3 committed, 12 x 30 + 3 sent.
    assert_eq!((int(&ca["commits"]), int(&ca["aborts"])), (8, 4), "{ca}");
    assert_eq!(int(&ca["read_committed"]), 243, "{ca}");
    assert_eq!(int(&ca["committed_sent"]), 243, "{ca}");
    assert_eq!(int(&ca["aborted_seen_read_committed"]), 0, "{ca}");
    assert_eq!(int(&ca["read_uncommitted"]), 363, "{ca}");
    // A marker per partition per transaction: 13 x 3.
    assert_eq!(int(&ca["end_offsets_sum"]), 363 + 39, "{ca}");
    assert_eq!(int(&ca["open_visible_read_committed"]), 0, "{ca}");
    assert_eq!(ca["describe_state"], "Ongoing", "{ca}");
    let fencing = &v["fencing"];
    let err = fencing["fenced_error"].as_str().unwrap_or("");
    assert!(
        err.starts_with("ProducerFencedException") || err.starts_with("InvalidProducerEpoch"),
        "{fencing}"
    );
    assert_eq!(fencing["read_committed"], serde_json::json!(["second-1"]));
    let ctp = &v["consume_transform_produce"];
    assert_eq!(ctp["offsets_after_abort"], serde_json::json!({}), "{ctp}");
    assert_eq!(ctp["offsets_while_open"], serde_json::json!({}), "{ctp}");
    assert_eq!(int(&ctp["processed"]), 300, "{ctp}");
    assert_eq!(int(&ctp["output_read_committed"]), 300, "{ctp}");
    assert_eq!(int(&ctp["output_missing"]), 0, "{ctp}");
    assert_eq!(int(&ctp["output_duplicates"]), 0, "{ctp}");
    assert!(int(&ctp["output_read_uncommitted"]) > 300, "{ctp}");
    for p in 0..3 {
        assert_eq!(
            int(&ctp["final_offsets"][format!("java-txn-in-{p}")]),
            100,
            "{ctp}"
        );
    }
    broker.assert_no_panic_in_log();
}

#[test]
fn confluent_kafka_transactions_commit_abort_and_send_offsets() {
    let broker = FjordProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let r = broker.python("ck_txn.py", &["basic"]);
    let details = failure_details(&r, &broker);
    let v = client_json("ck_txn basic", r.ok(), &r.stdout(), &details);
    eprintln!("ck_txn basic: {v}");
    assert_eq!((int(&v["commits"]), int(&v["aborts"])), (6, 3), "{v}");
    assert_eq!(int(&v["read_committed"]), 180, "{v}");
    assert_eq!(int(&v["read_uncommitted"]), 270, "{v}");
    assert_eq!(v["offsets_after_abort"], serde_json::json!({}), "{v}");
    assert_eq!(
        v["final_offsets"],
        serde_json::json!({"0": 100, "1": 100, "2": 100}),
        "{v}"
    );
    assert_eq!(int(&v["output_read_committed"]), 300, "{v}");
    assert!(int(&v["output_read_uncommitted"]) > 300, "{v}");
    broker.assert_no_panic_in_log();
}

/// kill -9 node `id` while the client in `bg` runs: its progress `key` must grow by 500
/// without the node, and by 200 more once the node is back and `topic` has its full ISR.
fn kill9_and_restart(
    c: &mut Cluster,
    bg: &mut Background,
    progress_file: &Path,
    (key, topic): (&str, &str),
    id: usize,
    what: &str,
) {
    c.kill9(id);
    let after = format!("after kill -9 of {what} (node {id})");
    wait_progress(progress_file, bg, key, 500, &after);
    c.start_node(id);
    c.wait_isr(topic, None, 3);
    let back = format!("after {what} (node {id}) came back");
    wait_progress(progress_file, bg, key, 200, &back);
}

/// [`kill9_and_restart`] of the transaction coordinator `id`.
fn kill9_coordinator(
    c: &mut Cluster,
    bg: &mut Background,
    progress_file: &Path,
    watch: (&str, &str),
    id: usize,
) {
    kill9_and_restart(
        c,
        bg,
        progress_file,
        watch,
        id,
        "the transaction coordinator",
    );
}

/// Tell the client in `bg` to stop (it then drains and checks); its success, stdout, and
/// what to show if it failed (its output, the coordinator's transaction log lines).
fn stop_client(
    c: &Cluster,
    bg: &mut Background,
    stop_file: &Path,
    coordinator: usize,
) -> (bool, String, String) {
    fs::write(stop_file, b"stop").unwrap();
    let status = bg.wait(SCENARIO_TIMEOUT);
    let details = format!(
        "{}\n--- node {coordinator} (coordinator) log ---\n{}",
        bg.output(),
        txn_log_excerpt(&c.node(coordinator).all_logs())
    );
    (status.success(), bg.stdout(), details)
}

/// Three nodes for the kill -9 runs (followers drop out of the ISR within 2 s), with the
/// scratch dir and the client's progress and stop files `<name>.progress`, `<name>.stop`.
fn cluster(name: &str) -> (Cluster, PathBuf, PathBuf, PathBuf) {
    let c = Cluster::builder()
        .config("replica.lag.time.max.ms = 2000")
        .config("group.initial.rebalance.delay.ms = 0")
        .start();
    let dir = c.scratch();
    let progress = dir.join(format!("{name}.progress"));
    let stop = dir.join(format!("{name}.stop"));
    (c, dir, progress, stop)
}

#[test]
fn kafka_streams_exactly_once_v2_survives_kill9_of_a_leader_and_the_coordinator() {
    let (mut c, dir, progress_file, stop_file) = cluster("streams");
    let app = "java-streams-eos";
    let input = format!("{app}-in");
    let cmd = java_command(
        "streams-eos",
        &c.bootstrap_all(),
        &[
            "--application-id",
            app,
            "--progress-file",
            progress_file.to_str().unwrap(),
            "--stop-file",
            stop_file.to_str().unwrap(),
            "--timeout-sec",
            "280",
        ],
    );
    let mut bg = Background::spawn(cmd, &dir, "streams-eos");
    // Running and committing (output visible to read_committed) before anything fails.
    wait_progress(&progress_file, &mut bg, "output", 500, "start");
    c.wait_isr(&input, None, 3);
    let watch = ("output", input.as_str());

    // kill -9 the leader of input partition 0; the app goes on; the node comes back.
    let leader = c.leader(&input, 0);
    assert!(leader > 0, "{input}-0 has a leader");
    let leader = leader as usize;
    kill9_and_restart(&mut c, &mut bg, &progress_file, watch, leader, "a leader");

    // kill -9 the transaction coordinator of the app's transactional ids (the scenario asks
    // DescribeTransactions for it).
    assert!(
        wait_until(Duration::from_secs(30), || progress(
            &progress_file,
            "coordinator"
        ) > 0),
        "no coordinator in {:?}",
        fs::read_to_string(&progress_file)
    );
    let coordinator = progress(&progress_file, "coordinator") as usize;
    kill9_coordinator(&mut c, &mut bg, &progress_file, watch, coordinator);

    let (ok, stdout, details) = stop_client(&c, &mut bg, &stop_file, coordinator);
    let v = scenario_json("streams-eos", ok, &stdout, &details);
    eprintln!("streams-eos (killed leader {leader}, coordinator {coordinator}): {v}");
    assert!(int(&v["sent"]) >= 1500, "{v}");
    assert_eq!(int(&v["acked"]), int(&v["sent"]), "{v}");
    assert_eq!(int(&v["output_missing"]), 0, "{v}");
    assert_eq!(int(&v["output_duplicates"]), 0, "{v}");
    assert_eq!(int(&v["output_read_committed"]), int(&v["sent"]), "{v}");
    assert_eq!(int(&v["count_wrong"]), 0, "{v}");
    assert_eq!(int(&v["count_keys"]), 50, "{v}");
    c.assert_no_panic_in_logs();
}

#[test]
fn confluent_kafka_transactional_loop_survives_kill9_of_the_coordinator_and_a_leader() {
    let (mut c, dir, progress_file, stop_file) = cluster("ck-txn");
    let prefix = "ck-txn";
    let output = format!("{prefix}-out");
    let mut cmd = python_command("ck_txn.py");
    cmd.args([
        "--bootstrap",
        &c.bootstrap_all(),
        "loop",
        "--prefix",
        prefix,
        "--replication-factor",
        "3",
        "--progress-file",
        progress_file.to_str().unwrap(),
        "--stop-file",
        stop_file.to_str().unwrap(),
    ]);
    let mut bg = Background::spawn(cmd, &dir, "ck-txn-loop");
    wait_progress(&progress_file, &mut bg, "committed", 500, "start");
    c.wait_isr(&output, None, 3);
    let watch = ("committed", output.as_str());

    // kill -9 the transaction coordinator of the loop's transactional id.
    let coordinator = txn_coordinator(&mut c, &format!("{prefix}-loop-id"));
    kill9_coordinator(&mut c, &mut bg, &progress_file, watch, coordinator);

    // kill -9 the leader of output partition 0.
    let leader = c.leader(&output, 0);
    assert!(leader > 0, "{output}-0 has a leader");
    let leader = leader as usize;
    kill9_and_restart(&mut c, &mut bg, &progress_file, watch, leader, "a leader");

    let (ok, stdout, details) = stop_client(&c, &mut bg, &stop_file, coordinator);
    let v = client_json("ck_txn loop", ok, &stdout, &details);
    eprintln!("ck_txn loop (killed coordinator {coordinator}, leader {leader}): {v}");
    assert!(int(&v["acked"]) >= 1500, "{v}");
    assert_eq!(int(&v["feed_errors"]), 0, "{v}");
    assert_eq!(int(&v["output_missing"]), 0, "{v}");
    assert_eq!(int(&v["output_duplicates"]), 0, "{v}");
    assert_eq!(int(&v["output_unexpected"]), 0, "{v}");
    assert_eq!(int(&v["output_read_committed"]), int(&v["acked"]), "{v}");
    c.assert_no_panic_in_logs();
}
