mod common;

use common::*;
use fjord_storage::{CleanupPolicy, Log, LogConfig};
use kafka_protocol::records::Compression;
use std::collections::BTreeMap;

fn cfg() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 600,
        index_interval_bytes: 64,
        min_cleanable_dirty_ratio: 0.01,
        delete_retention_ms: 1000,
        ..LogConfig::default()
    }
}

/// key → (offset, value) of what a consumer reading the whole log sees last, and all offsets.
fn view(log: &Log) -> (BTreeMap<String, Option<String>>, Vec<i64>) {
    let mut m = BTreeMap::new();
    let mut offs = Vec::new();
    for (o, _, k, v) in read_all(log, log.log_start_offset()) {
        offs.push(o);
        m.insert(
            String::from_utf8(k.unwrap().to_vec()).unwrap(),
            v.map(|v| String::from_utf8(v.to_vec()).unwrap()),
        );
    }
    (m, offs)
}

fn fill(log: &mut Log, c: Compression, ts: i64) {
    // 30 writes over 5 keys, 3 records per batch, then a tombstone for k0.
    for i in 0..10 {
        let kv: Vec<(String, String)> = (0..3)
            .map(|j| (format!("k{}", (i * 3 + j) % 5), format!("v{}", i * 3 + j)))
            .collect();
        let refs: Vec<(Option<&str>, Option<&str>)> = kv
            .iter()
            .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
            .collect();
        log.append(&records_kv(&refs, ts + i, c), 0, ts).unwrap();
    }
    log.append(&records_kv(&[(Some("k0"), None)], ts + 20, c), 0, ts)
        .unwrap();
}

#[test]
fn keeps_latest_per_key_for_every_codec() {
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), cfg()).unwrap();
        fill(&mut log, c, 1000);
        log.roll(1000).unwrap();
        let (before, offs_before) = view(&log);
        let leo = log.log_end_offset();
        let rep = log.maintain(2000).unwrap().cleaned.expect("cleaning due");
        assert!(rep.records_removed > 0, "{c:?}");
        let (after, offs) = view(&log);
        assert_eq!(before, after, "{c:?}: latest values unchanged");
        // One record per key (k0 as a tombstone), offsets kept and increasing.
        assert_eq!(offs.len(), 5, "{c:?}: {offs:?}");
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
        assert!(offs.iter().all(|o| offs_before.contains(o)));
        assert_eq!(log.log_end_offset(), leo);
        // Compression preserved.
        let r = log
            .read(log.log_start_offset(), 1 << 20, i64::MAX, true)
            .unwrap();
        let h = fjord_protocol::batch::parse_header(&r.records).unwrap();
        assert_eq!(h.compression(), c as i16, "{c:?}");
        // Tombstone still present until delete.retention.ms after the first clean.
        assert_eq!(after.get("k0"), Some(&None));
        log.maintain(2500).unwrap();
        assert_eq!(view(&log).0.get("k0"), Some(&None));
        log.maintain(3001).unwrap();
        let (gone, _) = view(&log);
        assert!(!gone.contains_key("k0"), "{c:?}: tombstone removed");
        assert_eq!(gone.len(), 4);
        // Survives reopen (clean and crash).
        log.close().unwrap();
        let log = Log::open(d.path(), cfg()).unwrap();
        assert_eq!(view(&log).0, gone);
        assert_eq!(log.log_end_offset(), leo);
        drop(log);
        let mut log = Log::open(d.path(), cfg()).unwrap();
        assert_eq!(view(&log).0, gone);
        let next = log
            .append(&records_kv(&[(Some("k9"), Some("x"))], 5000, c), 0, 0)
            .unwrap();
        assert_eq!(next.base_offset, leo);
    }
}

#[test]
fn min_lag_protects_recent_and_max_lag_forces() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        d.path(),
        LogConfig {
            min_compaction_lag_ms: 10_000,
            min_cleanable_dirty_ratio: 1.0,
            // Keep tombstone expiry from triggering a pass in this test.
            delete_retention_ms: 1_000_000,
            ..cfg()
        },
    )
    .unwrap();
    fill(&mut log, Compression::None, 1000);
    log.roll(1000).unwrap();
    // Records are younger than the min lag: nothing cleanable.
    assert!(log.maintain(5000).unwrap().cleaned.is_none());
    // Old enough, but the dirty ratio 1.0 is only reached with no clean bytes: first pass runs.
    let rep = log.maintain(20_000).unwrap().cleaned;
    assert!(rep.is_some());
    // New dirty data: ratio < 1.0, so not due...
    fill(&mut log, Compression::None, 30_000);
    log.roll(30_000).unwrap();
    assert!(log.maintain(45_000).unwrap().cleaned.is_none());
    // ...until max.compaction.lag.ms forces it.
    let mut c = log.config().clone();
    c.max_compaction_lag_ms = 12_000;
    log.update_config(c);
    let rep = log
        .maintain(45_000)
        .unwrap()
        .cleaned
        .expect("forced by max lag");
    assert!(rep.records_removed > 0);
    assert_eq!(view(&log).1.len(), 5);
}

#[test]
fn interrupted_swap_is_completed_or_discarded() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    fill(&mut log, Compression::None, 1000);
    log.roll(1000).unwrap();
    let (expected, _) = view(&log);
    log.close().unwrap();
    // Simulate a crash after `.cleaned` → `.swap` of a rewritten first segment: the swap
    // holds a valid segment (here: the original bytes), the old `.log` is gone.
    let live = d.path().join("00000000000000000000.log");
    let swap = d.path().join("00000000000000000000.log.swap");
    std::fs::rename(&live, &swap).unwrap();
    std::fs::write(
        d.path().join("00000000000000000003.log.cleaned"),
        b"partial",
    )
    .unwrap();
    let log = Log::open(d.path(), cfg()).unwrap();
    assert!(live.exists() && !swap.exists());
    assert!(!d.path().join("00000000000000000003.log.cleaned").exists());
    assert_eq!(view(&log).0, expected);
}

#[test]
fn compact_delete_also_applies_retention() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        d.path(),
        LogConfig {
            cleanup_policy: CleanupPolicy::CompactDelete,
            retention_ms: 100_000,
            ..cfg()
        },
    )
    .unwrap();
    fill(&mut log, Compression::None, 1000);
    log.roll(1000).unwrap();
    log.maintain(2000).unwrap();
    assert!(log.log_start_offset() == 0);
    let rep = log.maintain(1000 + 200_000).unwrap();
    assert!(rep.segments_deleted > 0);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
}
