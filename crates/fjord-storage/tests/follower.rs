//! Follower appends (`Log::append_as_follower`) and the high watermark: a follower log built
//! from a leader's bytes is byte-for-byte the leader's, carries its epochs and producer state,
//! and resumes after truncation.

mod common;

use common::*;
use fjord_protocol::batch::BatchIter;
use fjord_protocol::error::ErrorCode;
use fjord_storage::log::{CLEAN_SHUTDOWN_FILE, HIGH_WATERMARK_FILE, RECOVERY_POINT_FILE};
use fjord_storage::{AppendError, CleanupPolicy, Log, LogConfig};
use proptest::prelude::*;
use std::path::Path;

fn pb(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    batch(B {
        n,
        producer_id: pid,
        epoch,
        seq,
        ..Default::default()
    })
}

/// Every byte of the log from its start, batch by batch (as a fetcher would read it).
fn log_bytes(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        for b in BatchIter::new(&r.records) {
            next = b.unwrap().header.last_offset() + 1;
        }
        out.extend_from_slice(&r.records);
    }
    out
}

/// The follower's fetch loop: read from the leader at the follower's log end and append,
/// `max_bytes` at a time, until caught up.
fn replicate(leader: &Log, follower: &mut Log, max_bytes: usize) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let r = leader
            .read(follower.log_end_offset(), max_bytes, i64::MAX, true)
            .unwrap();
        follower.append_as_follower(&r.records, 0).unwrap();
    }
}

/// Batches of the leader's log, each as its own bytes.
fn batches_of(log: &Log) -> Vec<Vec<u8>> {
    let bytes = log_bytes(log);
    BatchIter::new(&bytes)
        .map(|b| b.unwrap().bytes.to_vec())
        .collect()
}

fn leader_with_epochs(dir: &Path) -> Log {
    let mut a = Log::open(dir, LogConfig::default()).unwrap();
    for (i, epoch) in [0, 0, 2, 2, 2, 5, 7].into_iter().enumerate() {
        a.append(&simple(1 + i % 3, 1_000 + i as i64), epoch, 0)
            .unwrap();
    }
    a
}

#[test]
fn follower_append_keeps_offsets_and_epochs() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = leader_with_epochs(da.path());
    let mut b = Log::open(db.path(), LogConfig::default()).unwrap();
    // Empty fetch: nothing happens.
    let info = b.append_as_follower(&[], 0).unwrap();
    assert_eq!(
        (info.record_count, info.bytes, b.log_end_offset()),
        (0, 0, 0)
    );

    let all = a.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    let info = b.append_as_follower(&all, 0).unwrap();
    assert_eq!(info.base_offset, 0);
    assert_eq!(info.last_offset, a.log_end_offset() - 1);
    assert_eq!(info.record_count as i64, a.log_end_offset());
    assert_eq!(info.bytes, all.len());
    assert!(!info.duplicate);
    assert_eq!(log_bytes(&b), log_bytes(&a));
    assert_eq!(b.latest_epoch(), Some(7));
    for epoch in -1..9 {
        assert_eq!(
            b.end_offset_for_epoch(epoch),
            a.end_offset_for_epoch(epoch),
            "epoch {epoch}"
        );
    }
    assert_eq!(
        b.end_offset_for_epoch(2),
        Some((2, a.end_offset_for_epoch(2).unwrap().1))
    );
    // Epochs and bytes survive a reopen.
    b.close().unwrap();
    let b = Log::open(db.path(), LogConfig::default()).unwrap();
    assert_eq!(log_bytes(&b), log_bytes(&a));
    assert_eq!(b.end_offset_for_epoch(5), a.end_offset_for_epoch(5));
}

#[test]
fn follower_append_rejects_gap_and_overlap() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = leader_with_epochs(da.path());
    let bs = batches_of(&a);
    let mut b = Log::open(db.path(), LogConfig::default()).unwrap();

    // Gap at the log end.
    let e = b.append_as_follower(&bs[1], 0).unwrap_err();
    assert!(
        matches!(
            e,
            AppendError::OutOfOrderOffsets {
                expected: 0,
                got: 1
            }
        ),
        "{e}"
    );
    assert_eq!(e.error_code(), ErrorCode::UnknownServerError);
    b.append_as_follower(&bs[0], 0).unwrap();
    assert_eq!(b.log_end_offset(), 1);
    // Overlap: the same batch again.
    let e = b.append_as_follower(&bs[0], 0).unwrap_err();
    assert!(
        matches!(
            e,
            AppendError::OutOfOrderOffsets {
                expected: 1,
                got: 0
            }
        ),
        "{e}"
    );
    // A gap inside one fetch: nothing of it is written.
    let size = b.size_bytes();
    let e = b
        .append_as_follower(&[bs[1].clone(), bs[3].clone()].concat(), 0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            AppendError::OutOfOrderOffsets {
                expected: 3,
                got: 6
            }
        ),
        "{e}"
    );
    assert_eq!((b.log_end_offset(), b.size_bytes()), (1, size));
    // A corrupt batch is refused like on the leader.
    let mut bad = bs[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let e = b.append_as_follower(&bad, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::CorruptMessage);
    b.append_as_follower(&[bs[1].clone(), bs[2].clone()].concat(), 0)
        .unwrap();
    assert_eq!(log_bytes(&b), bs[..3].concat());
}

#[test]
fn compacted_follower_accepts_holes_left_by_the_cleaner() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = leader_with_epochs(da.path());
    let bs = batches_of(&a);
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    };
    let mut b = Log::open(db.path(), cfg).unwrap();
    // Batch 1 was removed by the leader's cleaner: offsets 1..3 are a hole.
    b.append_as_follower(&bs[0], 0).unwrap();
    b.append_as_follower(&[bs[2].clone(), bs[4].clone()].concat(), 0)
        .unwrap();
    assert_eq!(
        log_bytes(&b),
        [bs[0].clone(), bs[2].clone(), bs[4].clone()].concat()
    );
    // Still no overlap.
    assert!(matches!(
        b.append_as_follower(&bs[3], 0),
        Err(AppendError::OutOfOrderOffsets { .. })
    ));
}

#[test]
fn follower_fetch_larger_than_a_segment_is_split_over_segments() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::open(da.path(), LogConfig::default()).unwrap();
    for i in 0..60 {
        a.append(&simple(2, 1_000 + i), 3, 0).unwrap();
    }
    let all = a.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    let small = small_config();
    assert!(all.len() as u64 > 3 * small.segment_bytes);
    let mut b = Log::open(db.path(), small.clone()).unwrap();
    b.append_as_follower(&all, 0).unwrap();
    assert!(b.segment_count() > 3);
    assert_eq!(log_bytes(&b), log_bytes(&a));
    // Every segment stays within segment.bytes, and the result survives recovery.
    assert!(b.size_bytes() / b.segment_count() as u64 <= small.segment_bytes);
    drop(b);
    let b = Log::open(db.path(), small).unwrap();
    assert_eq!(log_bytes(&b), log_bytes(&a));
    assert_eq!(read_all(&b, 0).len(), 120);
}

#[test]
fn producer_state_follows_so_a_new_leader_deduplicates() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::open(da.path(), small_config()).unwrap();
    a.append(&simple(3, 0), 0, 0).unwrap();
    let first = a.append(&pb(7, 0, 0, 2), 0, 0).unwrap();
    let second = a.append(&pb(7, 0, 2, 3), 0, 0).unwrap();
    a.append(&pb(9, 4, 0, 1), 0, 0).unwrap();
    let mut b = Log::open(db.path(), small_config()).unwrap();
    replicate(&a, &mut b, 1 << 20);
    assert_eq!(b.producer_state(), a.producer_state());

    // Leadership moves to b (epoch 1); the producer retries its last two batches.
    for (retry, original) in [(pb(7, 0, 2, 3), &second), (pb(7, 0, 0, 2), &first)] {
        let dup = b.append(&retry, 1, 0).unwrap();
        assert!(dup.duplicate);
        assert_eq!(
            (dup.base_offset, dup.last_offset),
            (original.base_offset, original.last_offset)
        );
    }
    // A gap is still refused, the next sequence accepted.
    let e = b.append(&pb(7, 0, 9, 1), 1, 0).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    let next = b.append(&pb(7, 0, 5, 1), 1, 0).unwrap();
    assert_eq!(next.base_offset, a.log_end_offset());

    // Also after a crash of the follower (state replayed from the log).
    let dc = tempfile::tempdir().unwrap();
    let mut c = Log::open(dc.path(), small_config()).unwrap();
    replicate(&a, &mut c, 100);
    drop(c);
    let mut c = Log::open(dc.path(), small_config()).unwrap();
    assert!(c.append(&pb(7, 0, 2, 3), 1, 0).unwrap().duplicate);
}

#[test]
fn truncate_then_follower_append_resumes() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::open(da.path(), small_config()).unwrap();
    for i in 0..40 {
        let epoch = i / 10;
        a.append(&pb(5, 0, 3 * i, 3), epoch, 0).unwrap();
    }
    let mut b = Log::open(db.path(), small_config()).unwrap();
    replicate(&a, &mut b, 500);
    assert_eq!(log_bytes(&b), log_bytes(&a));
    // To a batch boundary, into a batch (cut at its start), into an older segment.
    for to in [90, 61, 7] {
        b.truncate_to(to).unwrap();
        assert!(b.log_end_offset() <= to);
        assert!(b.latest_epoch().unwrap() <= a.latest_epoch().unwrap());
        replicate(&a, &mut b, 700);
        assert_eq!(log_bytes(&b), log_bytes(&a), "after truncate_to({to})");
        assert_eq!(b.producer_state(), a.producer_state());
        for e in 0..5 {
            assert_eq!(b.end_offset_for_epoch(e), a.end_offset_for_epoch(e));
        }
    }
}

#[test]
fn truncate_fully_and_start_at_the_leader_log_start() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Log::open(da.path(), small_config()).unwrap();
    for i in 0..30 {
        a.append(&pb(5, 0, 10 * i, 10), 1, 0).unwrap();
    }
    a.delete_records_before(100).unwrap();
    let mut b = Log::open(db.path(), small_config()).unwrap();
    b.append_as_follower(&a.read(100, 1 << 20, i64::MAX, true).unwrap().records, 0)
        .unwrap_err();
    b.append(&simple(4, 0), 0, 0).unwrap(); // stale data of its own
    b.roll(0).unwrap();
    b.append(&pb(5, 0, 0, 1), 0, 0).unwrap();
    b.set_high_watermark(3);
    // Fetch out of range: the leader's log starts at 100.
    b.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(
        (b.log_start_offset(), b.log_end_offset(), b.high_watermark()),
        (100, 100, 100)
    );
    assert_eq!(b.latest_epoch(), None);
    assert!(b.producer_state().is_empty());
    assert_eq!(b.segment_base_offsets(), vec![100]);
    let mut next = 100;
    while next < a.log_end_offset() {
        let r = a.read(next, 2000, i64::MAX, true).unwrap();
        next = b.append_as_follower(&r.records, 0).unwrap().last_offset + 1;
    }
    assert_eq!(log_bytes(&b), log_bytes(&a));
    b.close().unwrap();
    let b = Log::open(db.path(), small_config()).unwrap();
    assert_eq!(b.log_start_offset(), 100);
    assert_eq!(b.producer_state(), a.producer_state());
}

#[test]
fn high_watermark_is_clamped_to_the_log() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 0);
    for i in 0..20 {
        log.append(&simple(5, 1_000 + i), 0, 0).unwrap();
    }
    log.set_high_watermark(1_000);
    assert_eq!(log.high_watermark(), 100);
    log.set_high_watermark(-5);
    assert_eq!(log.high_watermark(), 0);
    log.set_high_watermark(80);
    log.truncate_to(50).unwrap();
    assert_eq!(log.high_watermark(), 50);
    log.delete_records_before(30).unwrap();
    assert_eq!(log.high_watermark(), 50);
    log.delete_records_before(45).unwrap();
    log.set_high_watermark(10);
    assert_eq!(log.high_watermark(), 45);
    log.set_high_watermark(20);
    log.delete_records_before(48).unwrap();
    assert_eq!(log.high_watermark(), 48);
    // Truncation below the log start: everything goes, the watermark with it.
    log.truncate_to(10).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (10, 10));
}

fn hw_file(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(HIGH_WATERMARK_FILE)).ok()
}

#[test]
fn high_watermark_checkpoint_survives_close_and_crash() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    // An empty log needs no file.
    assert!(!log.checkpoint_high_watermark().unwrap());
    for i in 0..20 {
        log.append(&simple(5, 1_000 + i), 0, 0).unwrap();
    }
    log.set_high_watermark(42);
    assert!(log.checkpoint_high_watermark().unwrap());
    assert!(!log.checkpoint_high_watermark().unwrap());
    assert_eq!(hw_file(d.path()).as_deref(), Some("42"));
    log.set_high_watermark(60);
    log.close().unwrap();
    assert_eq!(hw_file(d.path()).as_deref(), Some("60"));

    let mut log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 60);
    // Crash after a checkpoint: the checkpointed value comes back, not the in-memory one.
    log.set_high_watermark(70);
    assert!(log.checkpoint_high_watermark().unwrap());
    log.set_high_watermark(90);
    drop(log);
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 70);
    drop(log);

    // A checkpoint beyond the log end (the tail was lost in a crash) is clamped on open.
    fjord_storage_write(d.path(), HIGH_WATERMARK_FILE, "500");
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 100);
    log.close().unwrap();
    assert_eq!(hw_file(d.path()).as_deref(), Some("100"));
}

fn fjord_storage_write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

#[test]
fn high_watermark_without_a_checkpoint_file() {
    let d = tempfile::tempdir().unwrap();
    let mut log = Log::open(d.path(), small_config()).unwrap();
    for i in 0..20 {
        log.append(&simple(5, 1_000 + i), 0, 0).unwrap();
    }
    log.close().unwrap();
    // A log from before the checkpoint existed, shut down cleanly: all of it.
    std::fs::remove_file(d.path().join(HIGH_WATERMARK_FILE)).ok();
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 100);
    drop(log);
    std::fs::remove_file(d.path().join(HIGH_WATERMARK_FILE)).ok();
    // Crashed after a change (which removes the marker): only what was fsynced (the
    // recovery point). A crash without a change leaves the marker, and the log as closed.
    assert!(d.path().join(CLEAN_SHUTDOWN_FILE).exists());
    std::fs::remove_file(d.path().join(CLEAN_SHUTDOWN_FILE)).unwrap();
    fjord_storage_write(d.path(), RECOVERY_POINT_FILE, "35");
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 35);
    assert_eq!(log.log_end_offset(), 100);
    drop(log);
    // Crashed with no recovery point either: the log start.
    std::fs::remove_file(d.path().join(RECOVERY_POINT_FILE)).unwrap();
    std::fs::remove_file(d.path().join(HIGH_WATERMARK_FILE)).ok();
    let log = Log::open(d.path(), small_config()).unwrap();
    assert_eq!(log.high_watermark(), 0);
}

#[test]
fn unchanged_high_watermark_is_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    // A fresh empty log closes without a file.
    Log::open(d.path(), small_config())
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(hw_file(d.path()), None);
    let mut log = Log::open(d.path(), small_config()).unwrap();
    log.append(&simple(5, 0), 0, 0).unwrap();
    log.set_high_watermark(5);
    log.close().unwrap();
    let stat = |d: &Path| {
        let m = std::fs::metadata(d.join(HIGH_WATERMARK_FILE)).unwrap();
        (m.ino(), m.mtime_nsec(), m.ctime_nsec())
    };
    let before = stat(d.path());
    for crash in [false, true, false] {
        let mut log = Log::open(d.path(), small_config()).unwrap();
        log.set_high_watermark(5);
        if crash {
            drop(log);
        } else {
            log.close().unwrap();
        }
        assert_eq!(stat(d.path()), before);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Leader appends `n` records (idempotent producer if `idem`); `bump` starts a new epoch.
    Leader { n: usize, idem: bool, bump: bool },
    /// Follower fetches once with this many bytes.
    Fetch(usize),
    /// Follower truncates to this fraction (per mille) of its log end.
    Truncate(u16),
    /// Follower restarts, cleanly or not.
    Restart { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6, any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(n, idem, bump)| Op::Leader { n, idem, bump }),
        4 => (1usize..3000).prop_map(Op::Fetch),
        1 => (0u16..1000).prop_map(Op::Truncate),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Follower B copies leader A through fetches of random sizes, truncations to random
    /// points and restarts: B is always a prefix of A, and equal to A (bytes, epochs,
    /// producer state) once caught up.
    #[test]
    fn follower_is_always_a_prefix_of_the_leader(ops in proptest::collection::vec(op(), 1..80)) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = LogConfig { segment_bytes: 1500, index_interval_bytes: 200, ..LogConfig::default() };
        let mut a = Log::open(da.path(), cfg.clone()).unwrap();
        let mut b = Some(Log::open(db.path(), cfg.clone()).unwrap());
        let (mut epoch, mut seq) = (0, 0);
        for op in ops {
            let f = b.as_mut().unwrap();
            match op {
                Op::Leader { n, idem, bump } => {
                    epoch += bump as i32;
                    let records = if idem { pb(11, 0, seq, n) } else { simple(n, 1_000) };
                    seq += if idem { n as i32 } else { 0 };
                    a.append(&records, epoch, 0).unwrap();
                }
                Op::Fetch(max) => {
                    let r = a.read(f.log_end_offset(), max, i64::MAX, true).unwrap();
                    f.append_as_follower(&r.records, 0).unwrap();
                }
                Op::Truncate(per_mille) => {
                    let to = f.log_end_offset() * per_mille as i64 / 1000;
                    f.truncate_to(to).unwrap();
                }
                Op::Restart { clean } => {
                    let f = b.take().unwrap();
                    if clean { f.close().unwrap() } else { drop(f) }
                    b = Some(Log::open(db.path(), cfg.clone()).unwrap());
                }
            }
            let f = b.as_ref().unwrap();
            let (fb, ab) = (log_bytes(f), log_bytes(&a));
            prop_assert!(fb.len() <= ab.len());
            prop_assert_eq!(&fb[..], &ab[..fb.len()]);
        }
        let f = b.as_mut().unwrap();
        replicate(&a, f, 1000);
        prop_assert_eq!(log_bytes(f), log_bytes(&a));
        prop_assert_eq!(f.producer_state(), a.producer_state());
        prop_assert_eq!(f.latest_epoch(), a.latest_epoch());
        for e in 0..=epoch + 1 {
            prop_assert_eq!(f.end_offset_for_epoch(e), a.end_offset_for_epoch(e));
        }
    }
}
