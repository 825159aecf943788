mod common;

use common::*;
use fjord_protocol::batch::{parse_header, BatchIter};
use fjord_protocol::error::ErrorCode;
use fjord_storage::{Log, LogConfig, ReadError};

#[test]
fn append_read_roundtrip_across_rolls() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    let mut expected = Vec::new();
    for i in 0..100i64 {
        let n = (i % 5 + 1) as usize;
        let info = log.append(&simple(n, 1000 + i), 3, 5000).unwrap();
        assert_eq!(info.base_offset, expected.len() as i64);
        assert_eq!(info.last_offset, info.base_offset + n as i64 - 1);
        assert_eq!(info.record_count, n as u64);
        assert!(!info.duplicate);
        for _ in 0..n {
            expected.push(info.base_offset);
        }
    }
    assert!(log.segment_count() > 5, "{}", log.segment_count());
    assert_eq!(log.log_end_offset(), expected.len() as i64);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), expected.len());
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.0, i as i64);
    }
    // Every offset reads starting with the batch that contains it.
    for o in 0..log.log_end_offset() {
        let r = log.read(o, 1, i64::MAX, true).unwrap();
        let h = parse_header(&r.records).unwrap();
        assert!(h.base_offset <= o && h.last_offset() >= o, "offset {o}");
        assert_eq!(h.partition_leader_epoch, 3);
        // Without min_one_batch and a tiny max_bytes nothing fits.
        assert!(log.read(o, 1, i64::MAX, false).unwrap().records.is_empty());
    }
    // Reopen (clean) and read again.
    log.close().unwrap();
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).len(), expected.len());
}

#[test]
fn read_respects_max_bytes_and_max_offset() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    let b = simple(2, 1);
    for _ in 0..10 {
        log.append(&b, 0, 0).unwrap();
    }
    let r = log.read(0, b.len() * 3 + 5, i64::MAX, false).unwrap();
    assert_eq!(r.records.len(), b.len() * 3);
    let r = log.read(0, 1 << 20, 6, false).unwrap();
    let bases: Vec<i64> = BatchIter::new(&r.records)
        .map(|x| x.unwrap().header.base_offset)
        .collect();
    assert_eq!(bases, vec![0, 2, 4]);
    assert!(log.read(6, 1 << 20, 6, true).unwrap().records.is_empty());
    assert!(log
        .read(20, 1 << 20, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
    let e = log.read(21, 100, i64::MAX, true).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OffsetOutOfRange);
    assert!(matches!(e, ReadError::OffsetOutOfRange { .. }));
}

#[test]
fn append_validation_errors() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        d.path(),
        LogConfig {
            max_message_bytes: 2000,
            ..small_config()
        },
    )
    .unwrap();
    let good = simple(2, 1);
    let code = |r: Result<fjord_storage::AppendInfo, fjord_storage::AppendError>| {
        r.unwrap_err().error_code()
    };
    assert_eq!(code(log.append(&[], 0, 0)), ErrorCode::CorruptMessage);
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    assert_eq!(code(log.append(&bad_crc, 0, 0)), ErrorCode::CorruptMessage);
    let mut magic = good.clone();
    magic[16] = 1;
    assert_eq!(
        code(log.append(&magic, 0, 0)),
        ErrorCode::UnsupportedForMessageFormat
    );
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert_eq!(code(log.append(&trailing, 0, 0)), ErrorCode::CorruptMessage);
    assert_eq!(
        code(log.append(&good[..good.len() - 1], 0, 0)),
        ErrorCode::CorruptMessage
    );
    let big = batch(B {
        n: 1,
        value_len: 3000,
        ..Default::default()
    });
    assert_eq!(code(log.append(&big, 0, 0)), ErrorCode::MessageTooLarge);
    let many: Vec<u8> = (0..40).flat_map(|_| good.clone()).collect();
    assert_eq!(code(log.append(&many, 0, 0)), ErrorCode::RecordListTooLarge);
    let mut codec = good.clone();
    codec[22] |= 0x07; // compression id 7
    let crc = fjord_protocol::batch::compute_crc(&codec);
    codec[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        code(log.append(&codec, 0, 0)),
        ErrorCode::UnsupportedCompressionType
    );
    // Nothing was written by the failures.
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    log.append(&good, 0, 0).unwrap();
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn compacted_topic_requires_keys() {
    let d = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        cleanup_policy: fjord_storage::CleanupPolicy::Compact,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg).unwrap();
    for c in [
        kafka_protocol::records::Compression::None,
        kafka_protocol::records::Compression::Zstd,
    ] {
        let b = records_kv(&[(Some("a"), Some("1")), (None, Some("2"))], 1, c);
        assert_eq!(
            log.append(&b, 0, 0).unwrap_err().error_code(),
            ErrorCode::InvalidRecord
        );
        log.append(&records_kv(&[(Some("a"), None)], 1, c), 0, 0)
            .unwrap();
    }
}

#[test]
fn log_append_time() {
    let d = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        message_timestamp_type: fjord_storage::TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg).unwrap();
    let info = log.append(&simple(3, 5), 0, 777_000).unwrap();
    assert_eq!(info.log_append_time, 777_000);
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    let h = parse_header(&r.records).unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 777_000);
    fjord_protocol::batch::verify_crc(&r.records, &h).unwrap();
    assert_eq!(
        log.offset_for_timestamp(700_000).unwrap(),
        Some((0, 777_000, 0))
    );
    assert_eq!(log.max_timestamp().map(|m| m.1), Some(777_000));
}

#[test]
fn roll_by_time_and_index_full() {
    let d = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg).unwrap();
    log.append(&simple(1, 10_000), 0, 0).unwrap();
    log.append(&simple(1, 10_500), 0, 0).unwrap();
    assert_eq!(log.segment_count(), 1);
    // Kafka measures segment.ms from the first batch's timestamp.
    log.append(&simple(1, 11_001), 0, 0).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    // maintain rolls an idle segment by wall clock.
    let rep = log.maintain(11_001 + 1001).unwrap();
    assert!(rep.rolled);
    assert_eq!(log.segment_count(), 3);

    let d = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_index_bytes: 8 * 4,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg).unwrap();
    for i in 0..20 {
        log.append(&simple(1, i), 0, 0).unwrap();
    }
    assert!(log.segment_count() >= 5, "{}", log.segment_count());
    assert_eq!(read_all(&log, 0).len(), 20);
}

#[test]
fn roll_by_size() {
    let d = tempfile::tempdir().unwrap();
    let b = simple(1, 0);
    let cfg = LogConfig {
        segment_bytes: (b.len() * 3) as u64,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg).unwrap();
    for _ in 0..9 {
        log.append(&b, 0, 0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 6]);
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"00000000000000000003.log".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"00000000000000000000.index".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"00000000000000000000.timeindex".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"00000000000000000003.snapshot".to_string()),
        "{names:?}"
    );
}

/// Rewrite header fields of an encoded batch and fix its CRC (an attacker can do the same).
fn forge(mut b: Vec<u8>, at: usize, field: &[u8]) -> Vec<u8> {
    b[at..at + field.len()].copy_from_slice(field);
    let crc = fjord_protocol::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn a_batch_claiming_i32_max_records_is_refused_and_nothing_moves() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    let b = forge(simple(1, 1000), 23, &(i32::MAX - 1).to_be_bytes());
    let b = forge(b, 57, &i32::MAX.to_be_bytes());
    let e = log.append(&b, 0, 5000).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::InvalidRecord, "{e}");
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    // Compacted topics refuse it the same way (this aborted the broker before).
    let compacted = LogConfig {
        cleanup_policy: fjord_storage::CleanupPolicy::Compact,
        ..LogConfig::default()
    };
    let d2 = tempfile::tempdir().unwrap();
    let mut log = Log::open(d2.path(), compacted).unwrap();
    assert_eq!(
        log.append(&b, 0, 5000).unwrap_err().error_code(),
        ErrorCode::InvalidRecord
    );
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_lying_max_timestamp_is_rewritten_from_the_records() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    let honest = simple(3, 1000);
    let truth = parse_header(&honest).unwrap().max_timestamp;
    let lying = forge(honest, 35, &4_000_000_000_000i64.to_be_bytes());
    log.append(&lying, 0, 5000).unwrap();
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    let h = parse_header(&r.records).unwrap();
    assert_eq!(h.max_timestamp, truth);
    fjord_protocol::batch::verify_crc(&r.records[..h.total_size()], &h).unwrap();
    assert_eq!(log.max_timestamp().map(|m| m.1), Some(truth));
}
