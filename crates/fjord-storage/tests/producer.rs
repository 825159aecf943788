mod common;

use common::*;
use fjord_protocol::error::ErrorCode;
use fjord_storage::{Log, LogConfig};

fn pb(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    batch(B {
        n,
        producer_id: pid,
        epoch,
        seq,
        ..Default::default()
    })
}

#[test]
fn idempotent_producer_rules() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    log.append(&simple(3, 0), 0, 0).unwrap(); // offsets 0..2, non-idempotent
    let a = log.append(&pb(7, 0, 0, 2), 0, 0).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (3, 4));
    let b = log.append(&pb(7, 0, 2, 3), 0, 0).unwrap();
    assert_eq!((b.base_offset, b.last_offset), (5, 7));
    // Retry of the first batch: original offsets, nothing written.
    let size = log.size_bytes();
    let dup = log.append(&pb(7, 0, 0, 2), 0, 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (3, 4));
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.log_end_offset(), 8);
    // Gap.
    let e = log.append(&pb(7, 0, 9, 1), 0, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    // Unknown producer not starting at 0.
    let e = log.append(&pb(8, 0, 4, 1), 0, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    // New epoch must start at 0.
    let e = log.append(&pb(7, 1, 5, 1), 0, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    log.append(&pb(7, 1, 0, 1), 0, 0).unwrap();
    // Old epoch fenced.
    let e = log.append(&pb(7, 0, 5, 1), 0, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::InvalidProducerEpoch);
}

fn check_state_after_reopen(clean: bool) {
    let d = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let mut log = Log::open(d.path(), cfg.clone()).unwrap();
    let mut seq = 0;
    let mut first = None;
    for i in 0..40 {
        let info = log.append(&pb(42, 3, seq, 2), 0, 0).unwrap();
        if i == 0 {
            first = Some(info);
        }
        seq += 2;
    }
    let last = log.append(&pb(42, 3, seq, 2), 0, 0).unwrap();
    assert!(log.segment_count() > 2);
    if clean {
        log.close().unwrap();
    } else {
        drop(log);
    }
    let mut log = Log::open(d.path(), cfg).unwrap();
    let dup = log.append(&pb(42, 3, seq, 2), 0, 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!(
        (dup.base_offset, dup.last_offset),
        (last.base_offset, last.last_offset)
    );
    // Only the last 5 batches are remembered: the very first is now out of order.
    let _ = first;
    assert_eq!(
        log.append(&pb(42, 3, 0, 2), 0, 0).unwrap_err().error_code(),
        ErrorCode::OutOfOrderSequenceNumber
    );
    assert_eq!(
        log.append(&pb(42, 2, 0, 2), 0, 0).unwrap_err().error_code(),
        ErrorCode::InvalidProducerEpoch
    );
    let next = log.append(&pb(42, 3, seq + 2, 1), 0, 0).unwrap();
    assert_eq!(next.base_offset, last.last_offset + 1);
}

#[test]
fn producer_state_survives_clean_reopen() {
    check_state_after_reopen(true);
}

#[test]
fn producer_state_survives_crash() {
    check_state_after_reopen(false);
}

#[test]
fn producer_state_survives_snapshot_loss_and_expires() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    for s in 0..20 {
        log.append(&pb(5, 0, s, 1), 0, 0).unwrap();
    }
    log.close().unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut log = Log::open(d.path(), small_config()).unwrap();
    assert!(log.append(&pb(5, 0, 19, 1), 0, 0).unwrap().duplicate);
    // Timestamps of the batches are 1000; expire after 1 day of inactivity.
    let rep = log.maintain(1000 + 86_400_000 + 1).unwrap();
    assert_eq!(rep.producers_expired, 1);
    assert_eq!(
        log.append(&pb(5, 0, 20, 1), 0, 0).unwrap_err().error_code(),
        ErrorCode::OutOfOrderSequenceNumber
    );
}
