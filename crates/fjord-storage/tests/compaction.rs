mod common;

use common::*;
use fjord_storage::{cleaner, CleanupPolicy, Log, LogConfig};
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

/// `.cleaned` files in `dir` (a pass's output not installed or removed).
fn cleaned_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned"))
        .collect()
}

fn segment_len(dir: &std::path::Path, base: i64) -> u64 {
    std::fs::metadata(dir.join(format!("{base:020}.log")))
        .unwrap()
        .len()
}

/// Unlink what install left for after the lock (as `Partition::change_log` does).
fn unlink_deferred(log: &mut Log) {
    fjord_storage::log::remove_deleted_files(log.take_deleted_files());
}

/// Follower truncation between build and install can cut a sealed segment and refill it to
/// the same size with other records: the build (made from the old bytes, and dropping records
/// superseded by truncated ones) must not be installed.
#[test]
fn install_refuses_a_build_the_log_was_truncated_under() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    fill(&mut log, Compression::None, 1000);
    log.roll(1000).unwrap();
    let (_, input) = log.maintain_and_plan_clean(2000).unwrap();
    let input = input.expect("cleaning due");
    let bases = input.segment_base_offsets();
    assert!(bases.len() >= 2, "{bases:?}");
    let sizes: Vec<u64> = bases.iter().map(|&b| segment_len(d.path(), b)).collect();
    let cleaned = cleaner::build(&input).unwrap();
    assert!(!cleaned_files(d.path()).is_empty());

    // Truncate the last batch of three (k2, k3, k4 at 27..30) and the k0 tombstone, then
    // write a batch of the same size with other keys and the same tombstone again.
    log.truncate_to(27).unwrap();
    log.append(
        &records_kv(
            &[
                (Some("k5"), Some("v27")),
                (Some("k6"), Some("v28")),
                (Some("k7"), Some("v29")),
            ],
            1009,
            Compression::None,
        ),
        0,
        1000,
    )
    .unwrap();
    log.append(
        &records_kv(&[(Some("k0"), None)], 1020, Compression::None),
        0,
        1000,
    )
    .unwrap();
    log.roll(1000).unwrap();
    let now: Vec<u64> = bases.iter().map(|&b| segment_len(d.path(), b)).collect();
    assert_eq!(now, sizes, "same sizes: only the generation tells");
    let (expected, offs) = view(&log);
    assert_eq!(
        expected.get("k2").cloned().flatten().as_deref(),
        Some("v22")
    );

    let report = cleaner::install(&mut log, &input, cleaned).unwrap();
    assert!(report.is_none(), "stale build installed: {report:?}");
    unlink_deferred(&mut log);
    assert_eq!(cleaned_files(d.path()), Vec::<String>::new());
    assert_eq!(view(&log), (expected.clone(), offs));

    // The next pass starts over from the log as it is.
    let rep = log.maintain(2000).unwrap();
    assert!(!rep.compaction_stale);
    assert!(rep.cleaned.expect("cleaning due").records_removed > 0);
    assert_eq!(view(&log).0, expected);
}

/// Appends (and rolls) between build and install do not touch the snapshot's sealed
/// segments: the pass is installed, and consumers see the latest value of every key, at its
/// original offset.
#[test]
fn install_keeps_a_build_the_log_grew_under() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    fill(&mut log, Compression::Gzip, 1000);
    log.roll(1000).unwrap();
    let (_, input) = log.maintain_and_plan_clean(2000).unwrap();
    let input = input.expect("cleaning due");
    let cleaned = cleaner::build(&input).unwrap();

    // New values for every key, several segments' worth.
    fill(&mut log, Compression::Gzip, 1500);
    let segments_before = log.segment_count();
    let (expected, offs_before) = view(&log);
    let leo = log.log_end_offset();

    let rep = cleaner::install(&mut log, &input, cleaned)
        .unwrap()
        .expect("not stale");
    assert!(
        rep.segments_rewritten > 0 && rep.records_removed > 0,
        "{rep:?}"
    );
    unlink_deferred(&mut log);
    assert_eq!(cleaned_files(d.path()), Vec::<String>::new());
    assert_eq!(log.segment_count(), segments_before);
    assert_eq!(log.log_end_offset(), leo);
    let (after, offs) = view(&log);
    assert_eq!(after, expected);
    assert!(offs.len() < offs_before.len());
    assert!(offs.iter().all(|o| offs_before.contains(o)));
    assert!(offs.windows(2).all(|w| w[0] < w[1]));
    // The installed indexes find every kept offset, also after reopening.
    for _ in 0..2 {
        for &o in &offs {
            assert_eq!(read_all(&log, o).first().map(|r| r.0), Some(o));
        }
        log.close().unwrap();
        log = Log::open(d.path(), cfg()).unwrap();
        assert_eq!(view(&log), (expected.clone(), offs.clone()));
    }
}

/// Retention or DeleteRecords removing snapshot segments from the front does not invalidate
/// the rest of the pass: those are skipped, the others installed.
#[test]
fn install_skips_segments_deleted_from_the_front() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), cfg()).unwrap();
    fill(&mut log, Compression::None, 1000);
    log.roll(1000).unwrap();
    let (_, input) = log.maintain_and_plan_clean(2000).unwrap();
    let input = input.expect("cleaning due");
    let bases = input.segment_base_offsets();
    assert!(bases.len() >= 2, "{bases:?}");
    let cleaned = cleaner::build(&input).unwrap();

    log.delete_records_before(bases[1]).unwrap();
    unlink_deferred(&mut log);
    let (expected, _) = view(&log);
    let rep = cleaner::install(&mut log, &input, cleaned)
        .unwrap()
        .expect("not stale");
    assert!(rep.records_removed > 0, "{rep:?}");
    unlink_deferred(&mut log);
    assert_eq!(cleaned_files(d.path()), Vec::<String>::new());
    assert_eq!(log.log_start_offset(), bases[1]);
    assert_eq!(view(&log).0, expected);
}
