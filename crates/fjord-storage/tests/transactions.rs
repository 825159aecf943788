//! Transactions in a partition's log (issue 15, in progress): a producer's first
//! transactional batch opens its transaction, its marker (a control batch) ends it, and the
//! last stable offset stops at the oldest open transaction — also after a restart, from the
//! producer snapshot or from the log's batch headers.

mod common;

use common::{batch, small_config, B};
use fjord_protocol::batch::set_base_offset;
use fjord_protocol::control::{marker_batch, EndTxnMarker};
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::{self, AppendOrigin};
use fjord_storage::{AppendError, Log, TxnCheck};

/// A transactional batch of `n` records at `base`.
fn txn_batch(pid: i64, seq: i32, n: usize, base: i64) -> Vec<u8> {
    let mut b = batch(B {
        n,
        producer_id: pid,
        epoch: 0,
        seq,
        transactional: true,
        ..Default::default()
    });
    set_base_offset(&mut b, base);
    b
}

fn marker(pid: i64, commit: bool, base: i64) -> Vec<u8> {
    let mut b = marker_batch(
        pid,
        0,
        EndTxnMarker {
            commit,
            coordinator_epoch: 1,
        },
        2_000,
        0,
    );
    set_base_offset(&mut b, base);
    b
}

fn append(log: &mut Log, b: Vec<u8>) {
    log.append_as_follower(&b, 0).unwrap();
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
}

#[test]
fn the_last_stable_offset_stops_at_the_oldest_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, txn_batch(1, 0, 2, 0)); // 0-1: producer 1 opens at 0
    append(&mut log, txn_batch(2, 0, 3, 2)); // 2-4: producer 2 opens at 2
    append(&mut log, txn_batch(1, 2, 1, 5)); // 5
    assert_eq!(log.high_watermark(), 6);
    assert_eq!(log.last_stable_offset(log.high_watermark()), 0);
    append(&mut log, marker(1, true, 6)); // producer 1 commits
    assert_eq!(log.last_stable_offset(log.high_watermark()), 2);
    // A reopened log knows the open transaction (from the snapshot taken on close).
    log.close().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.last_stable_offset(log.high_watermark()), 2);
    assert_eq!(log.producer_state().ongoing().collect::<Vec<_>>(), [(2, 2)]);
    append(&mut log, marker(2, false, 7)); // producer 2 aborts
    assert_eq!(
        log.last_stable_offset(log.high_watermark()),
        log.high_watermark()
    );
    assert_eq!(log.producer_state().first_unstable_offset(), None);
    // A read_committed fetch over its data learns of the abort; one past its marker does not.
    assert_eq!(log.aborted_transactions(0, 8), [(2, 2)]);
    assert_eq!(log.aborted_transactions(3, 4), [(2, 2)]);
    assert!(log.aborted_transactions(8, 20).is_empty());
    assert!(
        log.aborted_transactions(0, 2).is_empty(),
        "ends before its data"
    );
}

#[test]
fn a_log_rebuilt_from_its_batches_knows_its_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    append(&mut log, txn_batch(1, 0, 2, 0));
    append(&mut log, marker(1, false, 2));
    append(&mut log, txn_batch(3, 0, 2, 3));
    drop(log); // no clean shutdown, no snapshot: the producer state comes from the headers
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producer_state().ongoing().collect::<Vec<_>>(), [(3, 3)]);
    assert_eq!(log.producer_state().first_unstable_offset(), Some(3));
    // The abort was read back from the marker's bytes.
    assert_eq!(log.aborted_transactions(0, 5), [(1, 0)]);
    // Once the log start passes the marker, the abort is forgotten.
    log.set_high_watermark(5);
    log.delete_records_before(3).unwrap();
    assert!(log.aborted_transactions(0, 5).is_empty());
}

/// A leader's marker of `pid` from coordinator epoch `coordinator_epoch`.
fn leader_marker(pid: i64, commit: bool, coordinator_epoch: i32) -> Vec<u8> {
    marker_batch(
        pid,
        0,
        EndTxnMarker {
            commit,
            coordinator_epoch,
        },
        2_000,
        0,
    )
}

/// Append `b` as the leader (the broker's own origin) with `check`.
fn lead(
    log: &mut Log,
    b: &[u8],
    check: TxnCheck,
) -> Result<fjord_storage::AppendInfo, AppendError> {
    let rules = log.config().record_rules(2_000, AppendOrigin::Coordinator);
    let v = records::validate(b, &rules).unwrap();
    let r = log
        .append_validated_many_checked(&[(b, &v)], &[check], 0, 2_000)
        .pop()
        .unwrap();
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
    r
}

/// A leader writes a WriteTxnMarkers marker: it ends the transaction and, for an abort, adds
/// it to the aborted transactions (as the follower path does); a marker from an older
/// coordinator than the producer's last is refused with TRANSACTION_COORDINATOR_FENCED and
/// changes nothing; the epoch survives a restart.
#[test]
fn a_leader_marker_ends_the_transaction_and_an_older_coordinator_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    lead(&mut log, &txn_batch(1, 0, 2, 0), TxnCheck::Exempt).unwrap();
    assert_eq!(log.last_stable_offset(log.high_watermark()), 0);
    let m = lead(&mut log, &leader_marker(1, false, 5), TxnCheck::Exempt).unwrap();
    assert_eq!(m.base_offset, 2);
    assert_eq!(log.last_stable_offset(log.high_watermark()), 3);
    assert_eq!(log.aborted_transactions(0, 3), [(1, 0)]);
    assert_eq!(log.producer_state().get(1).unwrap().coordinator_epoch, 5);
    // The next transaction; an older coordinator's marker is fenced.
    lead(&mut log, &txn_batch(1, 2, 1, 0), TxnCheck::Exempt).unwrap();
    let e = lead(&mut log, &leader_marker(1, true, 4), TxnCheck::Exempt).unwrap_err();
    assert!(
        matches!(e, AppendError::TransactionCoordinatorFenced { .. }),
        "{e}"
    );
    assert_eq!(e.error_code(), ErrorCode::TransactionCoordinatorFenced);
    assert_eq!(
        log.last_stable_offset(log.high_watermark()),
        3,
        "still open"
    );
    // The same coordinator epoch is accepted (a retried marker of a new coordinator).
    lead(&mut log, &leader_marker(1, true, 5), TxnCheck::Exempt).unwrap();
    assert_eq!(
        log.last_stable_offset(log.high_watermark()),
        log.high_watermark()
    );
    log.close().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producer_state().get(1).unwrap().coordinator_epoch, 5);
    let e = lead(&mut log, &leader_marker(1, false, 3), TxnCheck::Exempt).unwrap_err();
    assert!(matches!(
        e,
        AppendError::TransactionCoordinatorFenced { .. }
    ));
}

/// KIP-890 part 1: a client's transactional batch opens a transaction only with the guard
/// of a verification that no marker ended meanwhile; once open, later batches need none.
#[test]
fn a_transaction_opens_only_with_a_current_verification_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let e = lead(&mut log, &txn_batch(7, 0, 1, 0), TxnCheck::Verified(None)).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::InvalidTxnState, "never verified");
    let guard = log.start_verification(7, 0, 2_000);
    assert!(guard.is_some());
    let e = lead(
        &mut log,
        &txn_batch(7, 0, 1, 0),
        TxnCheck::Verified(Some(999)),
    )
    .unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::InvalidTxnState, "another guard");
    lead(&mut log, &txn_batch(7, 0, 1, 0), TxnCheck::Verified(guard)).unwrap();
    // Open now: no verification needed for its next batches.
    assert_eq!(log.start_verification(7, 0, 2_000), None);
    lead(&mut log, &txn_batch(7, 1, 1, 0), TxnCheck::Verified(None)).unwrap();
    // A verification that a marker overtakes is void: the late append is refused.
    lead(&mut log, &leader_marker(7, false, 1), TxnCheck::Exempt).unwrap();
    let late = log.start_verification(7, 0, 2_000);
    lead(&mut log, &leader_marker(7, false, 1), TxnCheck::Exempt).unwrap();
    let e = lead(&mut log, &txn_batch(7, 2, 1, 0), TxnCheck::Verified(late)).unwrap_err();
    assert_eq!(e.error_code(), ErrorCode::InvalidTxnState);
    assert_eq!(
        log.last_stable_offset(log.high_watermark()),
        log.high_watermark(),
        "no hanging transaction"
    );
}

/// librdkafka 0103 (`batch.num.messages=1`): the first batches of a transaction go to a
/// partition in several produce requests at once, each verified before any is appended;
/// every one of them must be appendable, as in Kafka, where they share one verification.
#[test]
fn concurrent_verifications_of_one_transaction_share_their_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let first = log.start_verification(7, 0, 2_000);
    let second = log.start_verification(7, 0, 2_001);
    assert!(first.is_some());
    lead(&mut log, &txn_batch(7, 0, 1, 0), TxnCheck::Verified(first)).unwrap();
    lead(&mut log, &txn_batch(7, 1, 1, 0), TxnCheck::Verified(second)).unwrap();
    assert_eq!(log.producer_state().ongoing().collect::<Vec<_>>(), [(0, 7)]);
}

/// A compacted topic's config with small segments, cleaning as soon as anything is dirty.
fn compacting() -> fjord_storage::LogConfig {
    fjord_storage::LogConfig {
        cleanup_policy: fjord_storage::CleanupPolicy::Compact,
        segment_bytes: 600,
        index_interval_bytes: 64,
        min_cleanable_dirty_ratio: 0.01,
        ..fjord_storage::LogConfig::default()
    }
}

/// A batch of one record with key `key` at `base` (transactional for `pid` >= 0).
fn keyed(key: &str, pid: i64, seq: i32, base: i64) -> Vec<u8> {
    let mut b = batch(B {
        n: 1,
        key: Some(key.to_string()),
        value_len: 20,
        producer_id: pid,
        epoch: if pid >= 0 { 0 } else { -1 },
        seq: if pid >= 0 { seq } else { -1 },
        transactional: pid >= 0,
        ..Default::default()
    });
    set_base_offset(&mut b, base);
    b
}

/// Non-transactional filler records from `base` on, enough to seal the segments before.
fn fill(log: &mut Log, mut base: i64) -> i64 {
    for i in 0..12 {
        append(log, keyed(&format!("filler-{i}"), -1, 0, base));
        base += 1;
    }
    base
}

fn offsets(log: &Log) -> Vec<i64> {
    common::read_all(log, log.log_start_offset())
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// Kafka's cleaner rules for transactions: an aborted transaction's records neither stay nor
/// supersede the key's committed value; its marker stays.
#[test]
fn compaction_drops_aborted_data_and_keeps_the_committed_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compacting()).unwrap();
    append(&mut log, keyed("k", -1, 0, 0)); // 0: committed value of k
    append(&mut log, keyed("k", 5, 0, 1)); // 1: producer 5 writes k in a transaction...
    append(&mut log, marker(5, false, 2)); // 2: ...and aborts it
    fill(&mut log, 3);
    assert!(fjord_storage::cleaner::maybe_clean(&mut log, 10_000)
        .unwrap()
        .is_some());
    let offs = offsets(&log);
    assert!(
        offs.contains(&0),
        "k's committed value was superseded by an aborted one: {offs:?}"
    );
    assert!(!offs.contains(&1), "aborted data kept: {offs:?}");
    assert!(offs.contains(&2), "the abort marker is kept: {offs:?}");
}

/// The cleaner stops before an open transaction: its records may still be aborted.
#[test]
fn compaction_stops_at_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compacting()).unwrap();
    append(&mut log, keyed("k", -1, 0, 0));
    append(&mut log, keyed("k", 6, 0, 1)); // open: no marker yet
    let next = fill(&mut log, 2);
    let _ = fjord_storage::cleaner::maybe_clean(&mut log, 10_000).unwrap();
    assert!(offsets(&log).contains(&0), "{:?}", offsets(&log));
    // Aborted later: the committed value is what a read_committed reader still finds.
    append(&mut log, marker(6, false, next));
    fill(&mut log, next + 1);
    assert!(fjord_storage::cleaner::maybe_clean(&mut log, 10_000)
        .unwrap()
        .is_some());
    let offs = offsets(&log);
    assert!(offs.contains(&0) && !offs.contains(&1), "{offs:?}");
}
