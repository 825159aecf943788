//! Durability across restarts: clean shutdown (SIGTERM) and kill -9 under produce load.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::records::{self, Expect};
use common::{ck_consume, ck_produce, count_lines, read_json_lines, wait_timeout, FjordProcess};

#[test]
fn restart_after_sigterm_keeps_all_records_at_same_offsets() {
    let mut broker = FjordProcess::start(&[]);
    let topic = "restart";
    broker.create_topic(topic, 3, &[]);
    let base = records::timestamp_base();
    let base_s = base.to_string();
    let produce_args = [
        "--headers",
        "--timestamp-base",
        &base_s,
        "--compression",
        "lz4",
    ];
    ck_produce(&broker, topic, 20_000, &produce_args);
    let mut before = ck_consume(&broker, topic, 20_000);
    // Partitions interleave differently on every read; compare in (partition, offset) order.
    before.sort_by_key(|r| (r.partition, r.offset));

    let status = broker.terminate();
    assert!(
        status.success(),
        "SIGTERM should shut the broker down cleanly, got {status}\n{}",
        broker.log_tail(40)
    );
    broker.restart();

    let mut after = ck_consume(&broker, topic, 20_000);
    after.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        after.len(),
        before.len(),
        "record count changed across restart"
    );
    for (a, b) in before.iter().zip(&after) {
        assert!(
            (
                a.partition,
                a.offset,
                &a.key,
                &a.value,
                &a.headers,
                a.timestamp
            ) == (
                b.partition,
                b.offset,
                &b.key,
                &b.value,
                &b.headers,
                b.timestamp
            ),
            "record changed across restart:\nbefore {a:?}\nafter  {b:?}"
        );
    }

    // New records continue each partition's offsets where they left off.
    let mut next = [0i64; 3];
    for r in &before {
        next[r.partition as usize] = next[r.partition as usize].max(r.offset + 1);
    }
    let more = ck_produce(
        &broker,
        topic,
        1000,
        &[
            "--start-index",
            "20000",
            "--headers",
            "--timestamp-base",
            &base_s,
        ],
    );
    for p in 0..3i64 {
        if let Some(first) = more
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset)
            .min()
        {
            assert_eq!(
                first, next[p as usize],
                "partition {p}: first offset after restart"
            );
        }
    }
    let all = ck_consume(&broker, topic, 21_000);
    records::assert_dump_matches(
        &all,
        &Expect {
            count: 21_000,
            pad: 0,
            headers: true,
            timestamp_base: Some(base),
        },
    );
    broker.assert_no_panic_in_log();
}

/// Produces continuously, kills the broker with SIGKILL once `kill_after` records are
/// acknowledged, restarts it, and checks every acknowledged record is where the broker said.
fn kill9_under_load(acks: &str, kill_after: usize) {
    let mut broker = FjordProcess::start(&[]);
    let topic = "kill9";
    broker.create_topic(topic, 3, &[]);
    let scratch = broker.scratch_dir();
    let acks_path = scratch.join("acks.jsonl");
    let pad = 100;
    let mut producer = common::python_command("ck_produce.py")
        .args(["--bootstrap", broker.bootstrap(), "--topic", topic])
        .args(["--count", "0", "--acks", acks, "--stop-on-error"])
        .args(["--value-pad", &pad.to_string()])
        .args(["--message-timeout-ms", "5000", "--timeout", "120"])
        .arg("--acks-out")
        .arg(&acks_path)
        .stdout(Stdio::from(common::append_file(
            &scratch.join("producer.out"),
        )))
        .stderr(Stdio::from(common::append_file(
            &scratch.join("producer.err"),
        )))
        .spawn()
        .expect("spawn ck_produce.py");
    let producer_log = || {
        format!(
            "producer stdout: {}\nproducer stderr: {}",
            fs::read_to_string(scratch.join("producer.out")).unwrap_or_default(),
            fs::read_to_string(scratch.join("producer.err")).unwrap_or_default()
        )
    };

    let reached = common::wait_until(Duration::from_secs(60), || {
        count_lines(&acks_path) >= kill_after || matches!(producer.try_wait(), Ok(Some(_)))
    });
    if !reached || count_lines(&acks_path) < kill_after {
        common::send_signal(producer.id(), "KILL");
        let _ = producer.wait();
        panic!(
            "producer did not reach {kill_after} acknowledged records within 60 s (got {})\n{}",
            count_lines(&acks_path),
            producer_log()
        );
    }
    broker.kill9();

    // The producer notices the failed deliveries (message.timeout.ms=5000) and exits.
    let status = wait_timeout(&mut producer, Duration::from_secs(60));
    if status.is_none() {
        common::send_signal(producer.id(), "KILL");
        let _ = producer.wait();
        panic!(
            "producer did not exit after the broker died\n{}",
            producer_log()
        );
    }
    assert!(
        status.unwrap().success(),
        "producer failed\n{}",
        producer_log()
    );
    let acked = records::parse_acks(&read_json_lines(&acks_path));
    assert!(acked.len() >= kill_after, "acks file shrank?");

    broker.restart();
    let dump = ck_consume(&broker, topic, acked.len() as u64);
    records::assert_offsets_contiguous(&dump);
    records::assert_acks_present(&acked, &dump, pad);
    broker.assert_no_panic_in_log();
}

#[test]
fn kill9_under_load_acks_1_loses_no_acknowledged_record() {
    kill9_under_load("1", 30_000);
}

#[test]
fn kill9_under_load_acks_all_loses_no_acknowledged_record() {
    kill9_under_load("all", 30_000);
}
