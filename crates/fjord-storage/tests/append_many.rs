//! Pipelined produce requests written together (`Log::append_validated_many`), and the flush
//! split that lets the broker fsync with the partition's lock released.

mod common;

use common::*;
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::{self, AppendOrigin, ValidatedRecords};
use fjord_storage::{Log, LogConfig};

fn pb(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    batch(B {
        n,
        producer_id: pid,
        epoch: 0,
        seq,
        ..Default::default()
    })
}

fn validated(log: &Log, bytes: &[u8]) -> ValidatedRecords {
    records::validate(bytes, &log.config().record_rules(0, AppendOrigin::Client)).unwrap()
}

#[test]
fn requests_queued_together_are_each_decided_and_written_in_order() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    let reqs = [
        pb(7, 0, 2),     // offsets 0..1
        pb(7, 5, 1),     // sequence gap: refused alone
        pb(7, 2, 3),     // follows the first: offsets 2..4
        simple(4, 1000), // not idempotent: offsets 5..8
        pb(7, 2, 3),     // a retry of the third, queued with it: answered as a duplicate
    ];
    let vals: Vec<ValidatedRecords> = reqs.iter().map(|r| validated(&log, r)).collect();
    let items: Vec<(&[u8], &ValidatedRecords)> =
        reqs.iter().map(|r| &r[..]).zip(vals.iter()).collect();
    let results = log.append_validated_many(&items, 3, 0);
    let offsets = |i: usize| {
        let r = results[i].as_ref().unwrap();
        (r.base_offset, r.last_offset, r.duplicate)
    };
    assert_eq!(offsets(0), (0, 1, false));
    assert_eq!(
        results[1].as_ref().unwrap_err().error_code(),
        ErrorCode::OutOfOrderSequenceNumber
    );
    assert_eq!(offsets(2), (2, 4, false));
    assert_eq!(offsets(3), (5, 8, false));
    assert_eq!(offsets(4), (2, 4, true));
    assert_eq!(log.log_end_offset(), 9);
    // Read back: contiguous offsets, the leader epoch patched into every batch.
    let read = read_all(&log, 0);
    assert_eq!(
        read.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(log.latest_epoch(), Some(3));
}

#[test]
fn a_segment_roll_between_queued_requests_splits_the_write() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    // Each request ~1.3 KB; segment.bytes 4096: the fourth cannot join the first three.
    let reqs: Vec<Vec<u8>> = (0..6).map(|i| simple(10, 1000 + i)).collect();
    let vals: Vec<ValidatedRecords> = reqs.iter().map(|r| validated(&log, r)).collect();
    let items: Vec<(&[u8], &ValidatedRecords)> =
        reqs.iter().map(|r| &r[..]).zip(vals.iter()).collect();
    let results = log.append_validated_many(&items, 0, 0);
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!(r.base_offset, i as i64 * 10);
    }
    assert!(log.segment_count() >= 2, "{:?}", log.segment_base_offsets());
    assert_eq!(read_all(&log, 0).len(), 60);
    // Every segment within segment.bytes.
    for base in log.segment_base_offsets() {
        let len = std::fs::metadata(d.path().join(format!("{base:020}.log")))
            .unwrap()
            .len();
        assert!(len <= 4096, "segment {base} has {len} bytes");
    }
}

#[test]
fn a_roll_asks_for_a_flush_and_the_recovery_point_waits_for_it() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    while log.segment_count() < 2 {
        log.append(&simple(10, 1000), 0, 0).unwrap();
    }
    assert!(
        log.flush_due(),
        "a roll must ask for the old segment's fsync"
    );
    let rp_file = d.path().join("recovery-point-offset-checkpoint");
    let before = std::fs::read_to_string(&rp_file).unwrap_or_default();
    let plan = log.prepare_flush().unwrap();
    assert!(!plan.is_empty());
    assert!(!log.flush_due());
    // Nothing synced yet: the recovery point has not moved.
    assert_eq!(
        std::fs::read_to_string(&rp_file).unwrap_or_default(),
        before
    );
    plan.sync().unwrap();
    log.finish_flush(&plan).unwrap();
    let after = std::fs::read_to_string(&rp_file).unwrap();
    assert_eq!(after.trim(), log.log_end_offset().to_string());
}

#[test]
fn flush_messages_asks_for_a_flush_after_that_many_records() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_messages: 5,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), config).unwrap();
    log.append(&simple(3, 1000), 0, 0).unwrap();
    assert!(!log.flush_due());
    log.append(&simple(3, 1000), 0, 0).unwrap();
    assert!(log.flush_due());
    log.flush().unwrap();
    assert!(!log.flush_due());
}

/// Leader appends write the callers' bytes and copy only what they patch: on disk, every batch
/// carries its assigned base offset and the leader epoch, keeps a valid CRC, and holds the
/// producer's bytes unchanged past the patched prefix — for requests queued together, and
/// with LogAppendTime (whose batches are copied and re-checksummed).
#[test]
fn written_batches_are_the_requests_bytes_with_offsets_and_epoch_patched() {
    use fjord_protocol::batch;
    for log_append in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let mut config = LogConfig::default();
        if log_append {
            config.message_timestamp_type = fjord_storage::TimestampType::LogAppendTime;
        }
        let mut log = Log::open(d.path(), config).unwrap();
        // Five requests (one batch each, as Kafka requires), queued together.
        let reqs: Vec<Vec<u8>> = (0..5).map(|i| simple(2 + i, 1_000 + i as i64)).collect();
        let vals: Vec<ValidatedRecords> = reqs.iter().map(|r| validated(&log, r)).collect();
        let items: Vec<(&[u8], &ValidatedRecords)> =
            reqs.iter().map(|r| &r[..]).zip(vals.iter()).collect();
        let results = log.append_validated_many(&items, 9, 5_000);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let sent: Vec<&[u8]> = reqs
            .iter()
            .flat_map(|r| batch::BatchIter::new(r).map(|b| b.unwrap().bytes))
            .collect();
        let file = std::fs::read(d.path().join(format!("{:020}.log", 0))).unwrap();
        let mut next = 0i64;
        let mut found = 0;
        for (i, b) in batch::BatchIter::new(&file).enumerate() {
            let b = b.unwrap();
            let (h, on_disk) = (b.header, b.bytes);
            assert_eq!(h.base_offset, next, "batch {i}");
            assert_eq!(h.partition_leader_epoch, 9, "batch {i}");
            batch::verify_crc(on_disk, &h).unwrap_or_else(|e| panic!("batch {i}: {e}"));
            assert_eq!(on_disk.len(), sent[i].len());
            if log_append {
                assert_eq!(h.max_timestamp, 5_000, "batch {i}");
            } else {
                assert_eq!(&on_disk[16..], &sent[i][16..], "batch {i} past the prefix");
            }
            next += h.offset_count();
            found += 1;
        }
        assert_eq!(found, sent.len());
        assert_eq!(next, log.log_end_offset());
        // And the log reopens (recovery checks every batch) with the same end.
        drop(log);
        let log = Log::open(d.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), next);
        assert_eq!(read_all(&log, 0).len() as i64, next);
    }
}
