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

/// Per round: produce continuously (new keys each round), kill the broker with SIGKILL once
/// `kill_after` records of the round are acknowledged, restart. Then every acknowledged record
/// of every round must be where the broker said, and the log must keep working.
fn kill9_under_load(acks: &str, rounds: u64, kill_after: usize, server_args: &[&str]) {
    let mut broker = FjordProcess::start(server_args);
    let topic = "kill9";
    broker.create_topic(topic, 3, &[]);
    let scratch = broker.scratch_dir();
    let pad = 100;
    let mut acked = Vec::new();
    for round in 0..rounds {
        let acks_path = scratch.join(format!("acks-{round}.jsonl"));
        let out_path = scratch.join(format!("producer-{round}.out"));
        let err_path = scratch.join(format!("producer-{round}.err"));
        let mut producer = common::python_command("ck_produce.py")
            .args(["--bootstrap", broker.bootstrap(), "--topic", topic])
            .args(["--count", "0", "--acks", acks, "--stop-on-error"])
            .args(["--start-index", &(round * 10_000_000).to_string()])
            .args(["--value-pad", &pad.to_string()])
            .args(["--message-timeout-ms", "5000", "--timeout", "120"])
            .arg("--acks-out")
            .arg(&acks_path)
            .stdout(Stdio::from(common::append_file(&out_path)))
            .stderr(Stdio::from(common::append_file(&err_path)))
            .spawn()
            .expect("spawn ck_produce.py");
        let producer_log = || {
            format!(
                "producer stdout: {}\nproducer stderr: {}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            )
        };

        let reached = common::wait_until(Duration::from_secs(60), || {
            count_lines(&acks_path) >= kill_after || matches!(producer.try_wait(), Ok(Some(_)))
        });
        if !reached || count_lines(&acks_path) < kill_after {
            common::send_signal(producer.id(), "KILL");
            let _ = producer.wait();
            panic!(
                "round {round}: producer did not reach {kill_after} acknowledged records within \
                 60 s (got {})\n{}",
                count_lines(&acks_path),
                producer_log()
            );
        }
        broker.kill9();

        // The producer sees its in-flight deliveries fail (message.timeout.ms=5000) and exits.
        let status = wait_timeout(&mut producer, Duration::from_secs(60));
        if status.is_none() {
            common::send_signal(producer.id(), "KILL");
            let _ = producer.wait();
            panic!(
                "round {round}: producer did not exit after the broker died\n{}",
                producer_log()
            );
        }
        assert!(
            status.unwrap().success(),
            "round {round}: producer failed\n{}",
            producer_log()
        );
        let round_acks = records::parse_acks(&read_json_lines(&acks_path));
        assert!(round_acks.len() >= kill_after, "acks file shrank?");
        acked.extend(round_acks);
        broker.restart();
    }

    let dump = ck_consume(&broker, topic, acked.len() as u64);
    records::assert_offsets_contiguous(&dump);
    records::assert_acks_present(&acked, &dump, pad);

    // The recovered log takes new writes after everything that survived.
    let mut end = [0i64; 3];
    for r in &dump {
        end[r.partition as usize] = end[r.partition as usize].max(r.offset + 1);
    }
    let more = ck_produce(
        &broker,
        topic,
        1000,
        &["--start-index", "900000000", "--value-pad", "100"],
    );
    for p in 0..3i64 {
        if let Some(first) = more
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset)
            .min()
        {
            assert_eq!(
                first, end[p as usize],
                "partition {p}: first offset produced after recovery"
            );
        }
    }
    let all = ck_consume(&broker, topic, (dump.len() + 1000) as u64);
    assert_eq!(all.len(), dump.len() + 1000);
    records::assert_offsets_contiguous(&all);
    records::assert_acks_present(&acked, &all, pad);
    broker.assert_no_panic_in_log();
}

#[test]
fn kill9_under_load_acks_1_loses_no_acknowledged_record() {
    kill9_under_load("1", 1, 30_000, &[]);
}

#[test]
fn kill9_under_load_acks_all_loses_no_acknowledged_record() {
    kill9_under_load("all", 1, 30_000, &[]);
}

/// Small segments so recovery spans many of them, and a kill in each of three rounds
/// (the later ones hit a log that was itself recovered).
#[test]
fn kill9_three_times_with_small_segments_loses_no_acknowledged_record() {
    kill9_under_load("all", 3, 10_000, &["--set", "log.segment.bytes=1048576"]);
}
