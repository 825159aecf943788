mod common;

use common::*;
use fjord_storage::{Log, LogConfig};
use std::fs::OpenOptions;

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
    assert!(!d.path().join("clean-shutdown").exists());
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
