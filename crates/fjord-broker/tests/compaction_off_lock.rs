//! Log compaction must not hold the partition's lock while it reads and rewrites segments:
//! produce (the write lock, on the partition's I/O thread) and fetch (the read lock, on async
//! workers) of a compacted partition go on during a pass. Its own test binary because the slow
//! disk it simulates ([`fjord_storage::fsync::set_debug_delay`]) is process-wide.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fjord_broker::partition::Partition;
use fjord_storage::{CleanupPolicy, Log, LogConfig};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Each fsync of a rewritten segment sleeps this long, so a pass over several segments takes
/// several times it.
const FSYNC_DELAY: Duration = Duration::from_millis(500);

fn batch(kvs: &[(String, String)], ts: i64) -> Vec<u8> {
    let recs: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts,
            key: Some(Bytes::from(k.clone())),
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// key → latest value, as a consumer reading the whole log sees it.
fn latest(log: &Log) -> BTreeMap<Bytes, Bytes> {
    let mut m = BTreeMap::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        let mut b = r.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            for rec in set.records {
                m.insert(rec.key.unwrap(), rec.value.unwrap());
            }
        }
        // A compacted batch keeps its last offset, maybe past its last record.
        for batch in fjord_protocol::batch::BatchIter::new(&r.records) {
            next = batch.unwrap().header.last_offset() + 1;
        }
    }
    m
}

fn cleaned_file_exists(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".log.cleaned")
    })
}

#[test]
fn produce_and_fetch_go_on_while_a_compaction_pass_is_built() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 2048,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    };
    let now = 1_000_000;
    let mut log = Log::open(d.path(), config).unwrap();
    // 10 keys rewritten over and over: every sealed segment has records to drop.
    for i in 0..30 {
        let kvs: Vec<(String, String)> = (0..5)
            .map(|j| {
                (
                    format!("k{}", (i * 5 + j) % 10),
                    format!("{i}-{j}-{:0>40}", 0),
                )
            })
            .collect();
        log.append(&batch(&kvs, now), 0, now).unwrap();
    }
    log.roll(now).unwrap();
    log.flush().unwrap();
    assert!(log.segment_count() >= 5, "{} segments", log.segment_count());
    let p = Arc::new(Partition::new("t".into(), uuid::Uuid::nil(), 0, 1));
    p.install_log(log);

    fjord_storage::fsync::set_debug_delay(FSYNC_DELAY);
    let maintenance = {
        let p = p.clone();
        std::thread::spawn(move || p.maintain(now + 1))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cleaned_file_exists(d.path()) {
        assert!(Instant::now() < deadline, "no compaction pass started");
        assert!(
            !maintenance.is_finished(),
            "maintenance ended without a pass"
        );
        std::thread::sleep(Duration::from_millis(2));
    }

    // The pass is writing its first segment and has several more to go.
    let produced = [("k3".to_string(), "during-the-build".to_string())];
    let start = Instant::now();
    let appended = p
        .with_log_mut(|l| l.append(&batch(&produced, now), 0, now))
        .unwrap()
        .unwrap();
    let fetched = p
        .with_log(|l| l.read(appended.base_offset, 1 << 20, i64::MAX, true))
        .unwrap()
        .unwrap();
    let took = start.elapsed();
    eprintln!("produce and fetch took {took:?} during the pass");
    assert!(
        took < FSYNC_DELAY,
        "produce and fetch waited {took:?} for the compaction pass"
    );
    assert!(!fetched.records.is_empty());
    assert!(
        !maintenance.is_finished(),
        "the pass ended before produce and fetch ran: the test proves nothing"
    );

    let report = maintenance.join().unwrap().unwrap().unwrap();
    fjord_storage::fsync::set_debug_delay(Duration::ZERO);
    assert!(
        !report.compaction_stale,
        "an append must not make a pass stale"
    );
    let cleaned = report.cleaned.expect("a pass was installed");
    assert!(cleaned.records_removed > 0, "{cleaned:?}");
    let m = p.with_log(latest).unwrap();
    assert_eq!(m.len(), 10);
    assert_eq!(m[&Bytes::from("k3")], Bytes::from("during-the-build"));
    assert_eq!(
        m[&Bytes::from("k9")],
        Bytes::from(format!("29-4-{:0>40}", 0))
    );
}
