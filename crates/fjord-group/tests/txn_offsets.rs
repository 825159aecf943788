//! Offsets committed in a transaction (TxnOffsetCommit, Kafka's
//! `pendingTransactionalOffsetCommits`): invisible to OffsetFetch until the transaction's
//! commit marker, dropped by an abort, kept in log order against plain commits, and replayed
//! the same way from `__consumer_offsets` (records of a transactional batch, then the marker).

use fjord_group::coordinator::{CommitPartition, CommitRequest, TxnCommitRequest};
use fjord_group::{Config, Coordinator, ErrorCode};

fn part(offset: i64) -> CommitPartition {
    CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: None,
    }
}

fn txn(pid: i64, offset: i64) -> TxnCommitRequest {
    TxnCommitRequest {
        transactional_id: "tx".into(),
        group_id: "g".into(),
        producer_id: pid,
        producer_epoch: 0,
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![part(offset)],
    }
}

fn plain(offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![part(offset)],
    }
}

fn fetched(c: &Coordinator) -> Option<i64> {
    c.fetch_offsets("g", None)
        .into_iter()
        .find_map(|(t, p, o)| (t == "t" && p == 0).then_some(o?.offset))
}

fn unstable(c: &Coordinator) -> bool {
    c.group("g")
        .is_some_and(|g| g.has_pending_txn_offset("t", 0))
}

#[test]
fn a_transactional_commit_shows_only_after_its_commit_marker() {
    let mut c = Coordinator::new(Config::default());
    let (errors, fx) = c.txn_commit_offsets(txn(7, 10), 0);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(fx.records.len(), 1);
    assert_eq!(
        fx.records[0].producer,
        Some((7, 0)),
        "a transactional batch"
    );
    assert!(unstable(&c));
    c.commits_replicated(fx.commits);
    assert_eq!(fetched(&c), None, "replicated, but the transaction is open");
    assert_eq!(c.complete_txn(8, true), 0, "another producer's marker");
    assert_eq!(fetched(&c), None);
    assert_eq!(c.complete_txn(7, true), 1);
    assert_eq!(fetched(&c), Some(10));
    assert!(!unstable(&c));

    // An abort drops them.
    let (_, fx) = c.txn_commit_offsets(txn(7, 20), 1);
    c.commits_replicated(fx.commits);
    assert_eq!(c.complete_txn(7, false), 0);
    assert_eq!(fetched(&c), Some(10));
    assert!(!unstable(&c));

    // A failed append takes the transactional commit back.
    let (_, fx) = c.txn_commit_offsets(txn(7, 30), 2);
    c.commits_failed(fx.commits);
    assert!(!unstable(&c));
    assert_eq!(c.complete_txn(7, true), 0);
    assert_eq!(fetched(&c), Some(10));

    // A plain commit written after the transactional one wins over it, marker or not.
    let (_, t) = c.txn_commit_offsets(txn(7, 40), 3);
    let (_, p) = c.commit_offsets(plain(50), 3);
    c.commits_replicated(t.commits);
    c.commits_replicated(p.commits);
    assert_eq!(fetched(&c), Some(50));
    c.complete_txn(7, true);
    assert_eq!(
        fetched(&c),
        Some(50),
        "the transactional commit is older in the log"
    );

    // A bad producer id is refused.
    let (errors, fx) = c.txn_commit_offsets(txn(-1, 1), 4);
    assert_eq!(errors, vec![ErrorCode::InvalidProducerIdMapping]);
    assert!(fx.records.is_empty());
}

/// Replay: the records of a transactional batch wait for the marker that follows them in the
/// log; a commit marker makes them committed (unless a later plain commit is), an abort drops
/// them, and an open transaction's offsets stay pending after the load.
#[test]
fn replay_applies_transactional_offsets_at_their_marker() {
    let mut c = Coordinator::new(Config::default());
    let (_, a) = c.txn_commit_offsets(txn(1, 5), 0);
    let (_, b) = c.txn_commit_offsets(
        TxnCommitRequest {
            group_id: "h".into(),
            ..txn(2, 6)
        },
        0,
    );
    let (_, p) = c.commit_offsets(plain(4), 0);
    let (_, d) = c.txn_commit_offsets(txn(3, 9), 0);

    let mut r = Coordinator::new(Config::default());
    r.replay_txn(1, &a.records[0].key, a.records[0].value.as_deref(), 0)
        .unwrap();
    r.replay_txn(2, &b.records[0].key, b.records[0].value.as_deref(), 0)
        .unwrap();
    assert_eq!(fetched(&r), None);
    r.replay(&p.records[0].key, p.records[0].value.as_deref(), 0)
        .unwrap();
    assert_eq!(fetched(&r), Some(4));
    // Producer 1 commits: its offset 5 is older in the log than the plain commit of 4.
    r.complete_txn(1, true);
    assert_eq!(fetched(&r), Some(4));
    r.complete_txn(2, false);
    assert!(r.fetch_offsets("h", None).is_empty(), "aborted");
    r.replay_txn(3, &d.records[0].key, d.records[0].value.as_deref(), 0)
        .unwrap();
    assert!(unstable(&r), "open at the end of the log");
    r.complete_txn(3, true);
    assert_eq!(fetched(&r), Some(9));
}
