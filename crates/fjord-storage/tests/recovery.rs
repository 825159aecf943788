mod common;

use common::*;
use fjord_storage::log::CLEAN_SHUTDOWN_FILE;
use fjord_storage::{CleanupPolicy, Log, LogConfig};
use kafka_protocol::records::Compression;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn seg0(d: &std::path::Path) -> std::path::PathBuf {
    d.join("00000000000000000000.log")
}

/// Write `n` batches of 2 records and crash (no close: no clean-shutdown marker).
fn crashed_log(d: &std::path::Path, n: usize) -> Vec<u64> {
    let mut log = Log::open(d, LogConfig::default()).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        log.append(&simple(2, 100 + i as i64), 1, 0).unwrap();
        ends.push(log.size_bytes());
    }
    drop(log); // crash
    ends
}

#[test]
fn recovery_at_every_cut_of_last_batch() {
    let d = tempfile::tempdir().unwrap();
    let ends = crashed_log(d.path(), 4);
    let full = std::fs::read(seg0(d.path())).unwrap();
    let last_start = ends[2];
    for cut in last_start..=ends[3] {
        let d2 = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(d.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d2.path().join(e.file_name())).unwrap();
        }
        let f = OpenOptions::new()
            .write(true)
            .open(seg0(d2.path()))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let mut log = Log::open(d2.path(), LogConfig::default()).unwrap();
        let complete = if cut == ends[3] { 4 } else { 3 };
        assert_eq!(log.log_end_offset(), complete * 2, "cut at {cut}");
        assert_eq!(
            log.size_bytes(),
            ends[complete as usize - 1],
            "cut at {cut}"
        );
        assert_eq!(read_all(&log, 0).len() as i64, complete * 2);
        let info = log.append(&simple(1, 500), 1, 0).unwrap();
        assert_eq!(info.base_offset, complete * 2);
        assert_eq!(read_all(&log, 0).len() as i64, complete * 2 + 1);
    }
    // A corrupted byte anywhere in the last batch (inside its CRC range or its length).
    for at in [
        last_start as usize + 9,
        last_start as usize + 30,
        full.len() - 1,
    ] {
        let d2 = tempfile::tempdir().unwrap();
        let mut bytes = full.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(seg0(d2.path()), &bytes).unwrap();
        let log = Log::open(d2.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 6, "corrupt byte {at}");
        assert_eq!(log.size_bytes(), last_start);
    }
}

#[test]
fn clean_shutdown_skips_recovery_and_stray_files_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    for i in 0..50 {
        log.append(&simple(2, i), 0, 0).unwrap();
    }
    let leo = log.log_end_offset();
    let segs = log.segment_count();
    log.close().unwrap();
    assert!(d.path().join("clean-shutdown").exists());
    for stray in [
        "00000000000000000000.log.cleaned",
        "00000000000000000000.log.deleted",
        "00000000000000000000.index.tmp",
    ] {
        std::fs::write(d.path().join(stray), b"junk").unwrap();
    }
    // Corrupt a sealed segment's index: it must be rebuilt lazily.
    std::fs::write(d.path().join("00000000000000000000.index"), [1u8, 2, 3]).unwrap();
    let log = Log::open(d.path(), small_config()).unwrap();
    // Nothing changed the log yet: the marker stays until the first change.
    assert!(d.path().join("clean-shutdown").exists());
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(log.segment_count(), segs);
    assert_eq!(read_all(&log, 0).len() as i64, leo);
    for stray in [
        "00000000000000000000.log.cleaned",
        "00000000000000000000.log.deleted",
        "00000000000000000000.index.tmp",
    ] {
        assert!(!d.path().join(stray).exists(), "{stray}");
    }
    // Index files missing entirely for every segment.
    log.close().unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "index" || x == "timeindex")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).len() as i64, leo);
    // Batch i holds timestamps i and i+1 at offsets 2i, 2i+1.
    assert_eq!(log.offset_for_timestamp(10).unwrap().map(|x| x.0), Some(19));
}

#[test]
fn unclean_with_many_segments_recovers_tail() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    for i in 0..60 {
        log.append(&simple(2, i), 0, 0).unwrap();
    }
    let leo = log.log_end_offset();
    drop(log);
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(read_all(&log, 0).len() as i64, leo);
}

/// A cleanly closed log of 40 batches (2 records each) over several segments; returns the
/// log end offset.
fn closed_log(d: &Path, config: &LogConfig) -> i64 {
    let mut log = Log::open(d, config.clone()).unwrap();
    for i in 0..40 {
        log.append(&simple(2, 1_000 + i), 1, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    log.set_high_watermark(log.log_end_offset());
    let leo = log.log_end_offset();
    log.close().unwrap();
    leo
}

/// (inode, mtime ns) of the marker, if it is there.
fn marker(d: &Path) -> Option<(u64, i64)> {
    let m = std::fs::metadata(d.join(CLEAN_SHUTDOWN_FILE)).ok()?;
    Some((m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

/// Flip a byte inside the records of the last batch: its header and length stay valid, so
/// only a CRC check (recovery) notices.
fn corrupt_last_batch(d: &Path, log: &Log) {
    let base = *log.segment_base_offsets().last().unwrap();
    let path = d.join(format!("{base:020}.log"));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn clean_open_without_changes_keeps_the_marker_and_skips_recovery() {
    let d = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let leo = closed_log(d.path(), &cfg);
    let m = marker(d.path()).expect("clean close writes the marker");
    // Everything that only reads, or writes no segment data, leaves the marker alone.
    let mut log = Log::open(d.path(), cfg.clone()).unwrap();
    assert_eq!(read_all(&log, 0).len() as i64, leo);
    log.offset_for_timestamp(1_010).unwrap();
    log.max_timestamp();
    log.end_offset_for_epoch(1);
    log.set_high_watermark(leo - 10);
    assert!(log.checkpoint_high_watermark().unwrap());
    log.maintain(2_000).unwrap();
    log.flush().unwrap();
    assert_eq!(marker(d.path()), Some(m));
    log.close().unwrap();
    assert_eq!(
        marker(d.path()),
        Some(m),
        "close leaves the marker in place"
    );
    // The marker says the files are as a clean close left them: a crash of a log that was
    // not changed still opens without recovery. (Corruption the CRC would catch shows which
    // path ran: a clean open does not read the records.)
    let log = Log::open(d.path(), cfg.clone()).unwrap();
    corrupt_last_batch(d.path(), &log);
    drop(log);
    let log = Log::open(d.path(), cfg.clone()).unwrap();
    assert_eq!(log.log_end_offset(), leo, "clean: no recovery");
    assert_eq!(log.high_watermark(), leo - 10);
    drop(log);
    // Without the marker (a crash after a change), recovery runs and cuts the bad batch.
    std::fs::remove_file(d.path().join(CLEAN_SHUTDOWN_FILE)).unwrap();
    let log = Log::open(d.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), leo - 2, "unclean: recovered");
    assert_eq!(read_all(&log, 0).len() as i64, leo - 2);
}

#[test]
fn first_change_after_a_clean_open_removes_the_marker() {
    type Change = fn(&mut Log, i64);
    let changes: &[(&str, Change)] = &[
        ("append", |l, _| {
            l.append(&simple(1, 5_000), 1, 0).unwrap();
        }),
        ("append_as_follower", |l, leo| {
            let d = tempfile::tempdir().unwrap();
            let mut leader = Log::open(d.path(), small_config()).unwrap();
            leader.truncate_fully_and_start_at(leo).unwrap();
            leader.append(&simple(1, 5_000), 2, 0).unwrap();
            let r = leader.read(leo, 1 << 20, i64::MAX, true).unwrap();
            l.append_as_follower(&r.records, 0).unwrap();
        }),
        ("roll", |l, _| l.roll(0).unwrap()),
        ("truncate_to", |l, leo| l.truncate_to(leo - 5).unwrap()),
        ("truncate_fully_and_start_at", |l, leo| {
            l.truncate_fully_and_start_at(leo + 10).unwrap()
        }),
        ("delete_records_before", |l, _| {
            l.delete_records_before(30).unwrap();
        }),
        ("retention", |l, _| {
            let mut c = l.config().clone();
            c.retention_bytes = 1;
            l.update_config(c);
            assert!(l.maintain(0).unwrap().segments_deleted > 0);
        }),
    ];
    for (name, change) in changes {
        let d = tempfile::tempdir().unwrap();
        let leo = closed_log(d.path(), &small_config());
        let mut log = Log::open(d.path(), small_config()).unwrap();
        assert!(marker(d.path()).is_some(), "{name}");
        change(&mut log, leo);
        assert!(marker(d.path()).is_none(), "{name}: marker still there");
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        // A crash now is detected: the next open recovers, and a close marks it clean again
        // (unless the log is empty, as after truncate_fully_and_start_at: see the next test).
        drop(log);
        let log = Log::open(d.path(), small_config()).unwrap();
        assert_eq!(log.log_end_offset(), end, "{name}");
        assert_eq!(log.log_start_offset(), start, "{name}");
        let empty = log.segment_count() == 1 && log.size_bytes() == 0;
        log.close().unwrap();
        assert_eq!(marker(d.path()).is_some(), !empty, "{name}");
    }
}

#[test]
fn empty_log_closes_without_a_marker_and_reopens_the_same() {
    // New (never written), and emptied at an offset (a follower restarted at the leader's
    // log start): no marker, and opening without one reads and writes nothing.
    for start in [None, Some(1_234)] {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), small_config()).unwrap();
        if let Some(s) = start {
            log.append(&simple(2, 1_000), 1, 0).unwrap();
            log.truncate_fully_and_start_at(s).unwrap();
        }
        let (start, hw) = (log.log_start_offset(), log.high_watermark());
        log.close().unwrap();
        assert!(marker(d.path()).is_none());
        let files = |d: &Path| -> Vec<(String, u64, i64)> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let m = e.metadata().unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
                })
                .collect();
            v.sort();
            v
        };
        for _ in 0..2 {
            let before = files(d.path());
            let log = Log::open(d.path(), small_config()).unwrap();
            assert_eq!(files(d.path()), before);
            assert_eq!(log.log_start_offset(), start);
            assert_eq!(log.log_end_offset(), start);
            assert_eq!(log.high_watermark(), hw);
            assert_eq!(log.latest_epoch(), None);
            log.close().unwrap();
            assert_eq!(files(d.path()), before);
            // Still a working log.
            let mut log = Log::open(d.path(), small_config()).unwrap();
            let info = log.append(&simple(1, 2_000), 3, 0).unwrap();
            assert_eq!(info.base_offset, start);
            log.truncate_fully_and_start_at(start).unwrap();
            log.close().unwrap();
            assert!(marker(d.path()).is_none());
        }
    }
}

#[test]
fn compaction_after_a_clean_open_removes_the_marker() {
    let d = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 600,
        index_interval_bytes: 64,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), cfg.clone()).unwrap();
    for i in 0..30 {
        let k = format!("k{}", i % 3);
        log.append(
            &records_kv(&[(Some(&k), Some("v"))], 1_000 + i, Compression::None),
            0,
            0,
        )
        .unwrap();
    }
    log.roll(0).unwrap();
    log.close().unwrap();
    let mut log = Log::open(d.path(), cfg).unwrap();
    assert!(marker(d.path()).is_some());
    let report = log.maintain(10_000).unwrap();
    assert!(report.cleaned.is_some_and(|r| r.records_removed > 0));
    assert!(marker(d.path()).is_none());
}

/// Every checkpoint file garbled after a clean close: the log still opens (recovered as after a
/// crash), reports each file, and keeps every record and its epochs rebuilt from nothing.
#[test]
fn corrupt_checkpoint_files_are_reported_and_ignored() {
    use fjord_storage::log::{HIGH_WATERMARK_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append(&simple(2, 100 + i), 1, 0).unwrap();
    }
    log.set_high_watermark(20);
    log.close().unwrap();
    assert!(d.path().join(CLEAN_SHUTDOWN_FILE).exists());
    let garbled = [
        LOG_START_FILE,
        RECOVERY_POINT_FILE,
        HIGH_WATERMARK_FILE,
        fjord_storage::epoch::CHECKPOINT_FILE,
        fjord_storage::cleaner::CHECKPOINT_FILE,
    ];
    for name in garbled {
        std::fs::write(d.path().join(name), b"\x00\xffnot a checkpoint\n-7 x\n").unwrap();
    }
    let (mut log, report) = Log::open_with_report(d.path(), LogConfig::default()).unwrap();
    let mut names: Vec<String> = report
        .corrupt_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = garbled.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "{report:?}");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(read_all(&log, 0).len(), 20);
    log.append(&simple(1, 500), 1, 0).unwrap();
    log.close().unwrap();
    // The files are rewritten: the next open finds nothing wrong.
    let (log, report) = Log::open_with_report(d.path(), LogConfig::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(log.log_end_offset(), 21);
}

/// A flipped byte in the middle of the first of several segments (found by recovery after a
/// crash): the segment is cut at the bad batch, the later ones are deleted, both reported, and
/// the log takes appends again.
#[test]
fn a_corrupt_batch_in_an_early_segment_truncates_the_log_there() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1000,
        ..LogConfig::default()
    };
    let mut log = Log::open(d.path(), config.clone()).unwrap();
    for i in 0..12 {
        log.append(&simple(2, 100 + i), 1, 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 3, "{segments} segments");
    drop(log); // crash
    std::fs::remove_file(d.path().join(fjord_storage::log::RECOVERY_POINT_FILE)).ok();
    // The second batch of the first segment: its first record's value.
    let seg = seg0(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let first_len = fjord_protocol::batch::parse_header(&bytes)
        .unwrap()
        .total_size();
    bytes[first_len + 70] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let (mut log, report) = Log::open_with_report(d.path(), config).unwrap();
    assert_eq!(
        report.truncated_bytes,
        (bytes.len() - first_len) as u64,
        "{report:?}"
    );
    assert_eq!(report.deleted_segments, segments as u64 - 1, "{report:?}");
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log, 0).len(), 2);
    assert_eq!(log.append(&simple(1, 500), 1, 0).unwrap().base_offset, 2);
}
