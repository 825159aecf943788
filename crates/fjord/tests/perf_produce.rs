//! `fjord perf produce` sends one pre-built batch over and over (re-stamped as the clock moves):
//! every record must still arrive, with its value, in order, stamped with the time it was sent.

mod common;

use common::{parse_json_lines, FjordProcess};
use fjord_protocol::clock::now_ms;

#[test]
fn perf_produce_delivers_every_record_with_a_current_timestamp() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("perf-rt", 1, &[]);
    // 10 records per batch: 300 full batches and a last one of 7 (a shorter batch of its own).
    let n = 3_007;
    let before = now_ms();
    let out = broker
        .cli(&[
            "perf",
            "produce",
            "--topic",
            "perf-rt",
            "--record-size",
            "100",
            "--batch-size",
            "1000",
            "--num-records",
            &n.to_string(),
            "--acks",
            "1",
        ])
        .success("fjord perf produce");
    assert!(
        out.stdout()
            .lines()
            .any(|l| l.starts_with(&format!("{n} records sent, "))),
        "{}",
        out.describe()
    );
    let after = now_ms();
    let out = broker
        .cli(&[
            "consume",
            "perf-rt",
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            "json",
            "--timeout-ms",
            "10000",
        ])
        .success("fjord consume");
    let recs = parse_json_lines(&out.stdout());
    assert_eq!(recs.len(), n, "records consumed: {}", out.describe());
    let first_value = recs[0]["value"].as_str().expect("value").to_string();
    assert_eq!(first_value.len(), 100);
    assert!(first_value.bytes().all(|b| b.is_ascii_uppercase()));
    let mut last_ts = 0;
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["offset"], i, "offset of record {i}: {r}");
        assert_eq!(r["value"], first_value.as_str(), "value of record {i}");
        let ts = r["timestamp"].as_i64().expect("timestamp");
        assert!(
            (before..=after).contains(&ts),
            "record {i} stamped {ts}, outside the run {before}..={after}"
        );
        assert!(ts >= last_ts, "record {i} stamped {ts} before {last_ts}");
        last_ts = ts;
    }
    broker.assert_no_panic_in_log();
}
