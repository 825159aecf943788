mod common;

use common::*;
use fjord_protocol::error::ErrorCode;
use fjord_storage::{Log, LogConfig};

fn cfg() -> LogConfig {
    let b = simple(1, 0);
    LogConfig {
        segment_bytes: (b.len() * 2) as u64,
        index_interval_bytes: 1,
        ..LogConfig::default()
    }
}

#[test]
fn retention_by_time() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        d.path(),
        LogConfig {
            retention_ms: 1000,
            ..cfg()
        },
    )
    .unwrap();
    for i in 0..10 {
        log.append(&simple(1, 1000 + i * 100), 0, 0).unwrap();
    }
    assert_eq!(log.segment_count(), 5);
    // Segment [0,1] has max ts 1100, [2,3] 1300, ...
    let rep = log.maintain(2350).unwrap();
    assert_eq!(rep.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), 4);
    let e = log.read(3, 100, i64::MAX, true).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OffsetOutOfRange);
    assert_eq!(read_all(&log, 4).len(), 6);
    // Everything expired: the active segment is rolled and deleted too (Kafka behaviour).
    let rep = log.maintain(100_000).unwrap();
    assert_eq!(rep.segments_deleted, 3);
    assert_eq!(log.log_start_offset(), 10);
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.segment_count(), 1);
    log.append(&simple(1, 100_000), 0, 0).unwrap();
    assert_eq!(read_all(&log, 10).len(), 1);
    // Survives reopen.
    log.close().unwrap();
    let log = Log::open(d.path(), cfg()).unwrap();
    assert_eq!(log.log_start_offset(), 10);
}

#[test]
fn retention_by_size() {
    let d = tempfile::tempdir().unwrap();
    let b = simple(1, 0);
    let mut log = Log::open(
        d.path(),
        LogConfig {
            retention_bytes: (b.len() * 5) as i64,
            retention_ms: -1,
            ..cfg()
        },
    )
    .unwrap();
    for _ in 0..10 {
        log.append(&b, 0, 0).unwrap();
    }
    let rep = log.maintain(0).unwrap();
    // 10 batches, limit 5: delete segments while the rest still holds >= 5 batches.
    assert_eq!(rep.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.size_bytes(), (b.len() * 6) as u64);
}

#[test]
fn delete_records_before_persists() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    for i in 0..10 {
        log.append(&simple(1, i), 0, 0).unwrap();
    }
    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    // Segment [4,5] stays (it holds offset 5); [0,1], [2,3] are gone.
    assert_eq!(log.segment_base_offsets()[0], 4);
    assert_eq!(
        log.read(4, 100, i64::MAX, true).unwrap_err().error_code(),
        ErrorCode::OffsetOutOfRange
    );
    let r = read_all(&log, 5);
    assert_eq!(r[0].0, 5);
    assert_eq!(log.delete_records_before(3).unwrap(), 5);
    assert_eq!(
        log.delete_records_before(11).unwrap_err().error_code(),
        ErrorCode::OffsetOutOfRange
    );
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|x| x.0), Some(5));
    drop(log); // crash
    let mut log = Log::open(d.path(), cfg()).unwrap();
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(log.delete_records_before(10).unwrap(), 10);
    assert!(log
        .read(10, 100, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
}

#[test]
fn leader_epochs_and_truncation() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    for (epoch, n) in [(1, 3), (3, 4), (5, 2)] {
        for _ in 0..n {
            log.append(&simple(1, 0), epoch, 0).unwrap();
        }
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 3)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 3)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 7)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 9)));
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));
    assert_eq!(log.end_offset_for_epoch(6), None);
    log.truncate_to(5).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.end_offset_for_epoch(5), None);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 5)));
    assert_eq!(read_all(&log, 0).len(), 5);
    let info = log.append(&simple(1, 0), 7, 0).unwrap();
    assert_eq!(info.base_offset, 5);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 5)));
    assert_eq!(log.end_offset_for_epoch(7), Some((7, 6)));
    log.close().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 5)));
    assert_eq!(log.log_end_offset(), 6);
    log.delete_records_before(4).unwrap();
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 5)));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 4)));
    // Truncate below the log start: start over there.
    log.truncate_to(2).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
    log.append(&simple(1, 0), 8, 0).unwrap();
    assert_eq!(read_all(&log, 2).len(), 1);
}
