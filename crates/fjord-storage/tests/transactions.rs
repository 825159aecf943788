//! Transactions in a partition's log (issue 15, in progress): a producer's first
//! transactional batch opens its transaction, its marker (a control batch) ends it, and the
//! last stable offset stops at the oldest open transaction — also after a restart, from the
//! producer snapshot or from the log's batch headers.

mod common;

use common::{batch, small_config, B};
use fjord_protocol::batch::set_base_offset;
use fjord_protocol::control::{marker_batch, EndTxnMarker};
use fjord_storage::Log;

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
