use super::*;

/// A coordinator leading every partition, the records it wrote (its `__transaction_state`),
/// and producer ids from 1000 up.
struct Harness {
    c: Coordinator,
    log: Vec<Record>,
    next_pid: i64,
}

impl Harness {
    fn new() -> Harness {
        let mut c = Coordinator::new(Config::default());
        for p in 0..c.config().txn_partitions {
            c.load_partition(p, 7);
        }
        Harness {
            c,
            log: Vec::new(),
            next_pid: 1000,
        }
    }

    /// Append `w` and report it written.
    fn durable(&mut self, w: Write) -> Option<Markers> {
        assert_eq!(w.partition, self.c.partition_for(&w.transactional_id));
        self.log.push(w.record.clone());
        self.c.written(&w.transactional_id)
    }

    fn init(&mut self, id: &str, expected: Option<(i64, i16)>) -> Result<Write, ErrorCode> {
        let mut pid = self.next_pid;
        let r = self.c.init_producer_id(id, 60_000, expected, 100, &mut || {
            pid += 1;
            Some(pid)
        });
        self.next_pid = pid;
        r
    }

    /// InitProducerId that succeeds: (producer id, epoch).
    fn init_ok(&mut self, id: &str, expected: Option<(i64, i16)>) -> (i64, i16) {
        let w = self.init(id, expected).expect("init");
        let Answer::ProducerId {
            producer_id,
            producer_epoch,
        } = w.answer
        else {
            panic!("{:?}", w.answer)
        };
        assert_eq!(self.durable(w), None);
        (producer_id, producer_epoch)
    }

    /// AddPartitionsToTxn that writes, made durable.
    fn add(&mut self, id: &str, pid: i64, epoch: i16, ps: &[(&str, i32)], now: i64) {
        let w = self
            .c
            .add_partitions(id, pid, epoch, &parts(ps), now)
            .unwrap()
            .expect("a write");
        assert_eq!(w.answer, Answer::Ok);
        self.durable(w);
    }

    fn state(&self, id: &str) -> TxnState {
        self.c.get(id).expect("known id").state
    }
}

fn parts(ps: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
    ps.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

#[test]
fn a_commit_goes_through_prepare_markers_and_complete() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("app", None);
    assert_eq!((pid, epoch), (1001, 0));
    assert_eq!(h.state("app"), TxnState::Empty);

    let w =
        h.c.add_partitions("app", pid, epoch, &parts(&[("t", 0), ("t", 1)]), 200)
            .unwrap()
            .expect("a write");
    assert_eq!(w.answer, Answer::Ok);
    h.durable(w);
    assert_eq!(h.state("app"), TxnState::Ongoing);
    assert_eq!(h.c.get("app").unwrap().start_ms, 200);
    // Already in the transaction: nothing to write.
    assert_eq!(
        h.c.add_partitions("app", pid, epoch, &parts(&[("t", 1)]), 210),
        Ok(None)
    );
    let w =
        h.c.add_offsets("app", pid, epoch, "group-1", 220)
            .unwrap()
            .unwrap();
    h.durable(w);
    let offsets_p = fjord_protocol::coordinator_key::coordinator_partition("group-1", 50);
    assert!(h
        .c
        .get("app")
        .unwrap()
        .partitions
        .contains(&(OFFSETS_TOPIC.to_string(), offsets_p)));

    let w = h.c.end_txn("app", pid, epoch, true, 300).unwrap().unwrap();
    // While the prepare is in flight, the id is busy.
    assert_eq!(
        h.c.add_partitions("app", pid, epoch, &parts(&[("u", 0)]), 301),
        Err(ErrorCode::ConcurrentTransactions)
    );
    let markers = h.durable(w).expect("markers after the prepare");
    assert!(markers.commit);
    assert_eq!((markers.producer_id, markers.producer_epoch), (pid, epoch));
    assert_eq!(markers.coordinator_epoch, 7);
    assert_eq!(markers.partitions.len(), 3);
    assert_eq!(h.state("app"), TxnState::PrepareCommit);
    // Until the markers are written, another transaction cannot start.
    assert_eq!(
        h.c.add_partitions("app", pid, epoch, &parts(&[("u", 0)]), 310),
        Err(ErrorCode::ConcurrentTransactions)
    );
    // A retried EndTxn(commit) is told to wait; an abort now is a state error.
    assert_eq!(
        h.c.end_txn("app", pid, epoch, true, 311),
        Err(ErrorCode::ConcurrentTransactions)
    );
    assert_eq!(
        h.c.end_txn("app", pid, epoch, false, 311),
        Err(ErrorCode::InvalidTxnState)
    );

    let w = h.c.markers_written("app", 400).expect("complete");
    assert_eq!(w.answer, Answer::None);
    assert_eq!(h.durable(w), None);
    let v = h.c.get("app").unwrap();
    assert_eq!((v.state, v.partitions.len()), (TxnState::CompleteCommit, 0));
    // A retry of the commit after it completed succeeds without a write.
    assert_eq!(h.c.end_txn("app", pid, epoch, true, 401), Ok(None));
    assert_eq!(
        h.c.end_txn("app", pid, epoch, false, 401),
        Err(ErrorCode::InvalidTxnState)
    );
    // The next transaction starts at its first AddPartitions.
    h.add("app", pid, epoch, &[("t", 0)], 500);
    assert_eq!(h.c.get("app").unwrap().start_ms, 500);
}

#[test]
fn a_failed_write_leaves_the_id_as_it_was() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("app", None);
    let w =
        h.c.add_partitions("app", pid, epoch, &parts(&[("t", 0)]), 200)
            .unwrap()
            .unwrap();
    assert_eq!(
        h.c.end_txn("app", pid, epoch, true, 201),
        Err(ErrorCode::ConcurrentTransactions)
    );
    h.c.write_failed(&w.transactional_id);
    assert_eq!(h.state("app"), TxnState::Empty);
    assert_eq!(
        h.c.end_txn("app", pid, epoch, true, 202),
        Err(ErrorCode::InvalidTxnState)
    );
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let mut h = Harness::new();
    let (pid, e0) = h.init_ok("app", None);
    h.add("app", pid, e0, &[("t", 0)], 200);

    // A second instance starts: the open transaction is aborted under a bumped epoch and the
    // new instance is told to retry.
    let w = h.init("app", None).unwrap();
    assert_eq!(w.answer, Answer::Error(ErrorCode::ConcurrentTransactions));
    let markers = h.durable(w).expect("abort markers");
    assert!(!markers.commit);
    assert_eq!(markers.producer_epoch, e0 + 1);
    // The zombie is fenced from here on.
    assert_eq!(
        h.c.end_txn("app", pid, e0, true, 300),
        Err(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        h.c.add_partitions("app", pid, e0, &parts(&[("t", 1)]), 300),
        Err(ErrorCode::ProducerFenced)
    );
    // Retrying before the abort completed: wait.
    assert_eq!(
        h.init("app", None).map(|w| w.answer),
        Err(ErrorCode::ConcurrentTransactions)
    );
    let w = h.c.markers_written("app", 400).unwrap();
    h.durable(w);
    assert_eq!(h.state("app"), TxnState::CompleteAbort);
    let (pid2, e2) = h.init_ok("app", None);
    assert_eq!((pid2, e2), (pid, e0 + 2));
}

#[test]
fn kip_360_bumps_with_the_expected_epoch_and_recognizes_retries() {
    let mut h = Harness::new();
    let (pid, e0) = h.init_ok("app", None);
    // The producer recovers from an abortable error: it names the id and epoch it had.
    let (p1, e1) = h.init_ok("app", Some((pid, e0)));
    assert_eq!((p1, e1), (pid, e0 + 1));
    assert_eq!(h.c.get("app").unwrap().last_producer_epoch, e0);
    // Its answer was lost and it retries with the old epoch: the same epoch again.
    assert_eq!(h.init_ok("app", Some((pid, e0))), (pid, e1));
    // An epoch older than both is a fenced producer.
    let (_, e2) = h.init_ok("app", Some((pid, e1)));
    assert_eq!(e2, e1 + 1);
    assert_eq!(
        h.init("app", Some((pid, e0))).map(|w| w.answer),
        Err(ErrorCode::ProducerFenced)
    );
    // So is a producer id this transactional id never had.
    assert_eq!(
        h.init("app", Some((pid + 77, 0))).map(|w| w.answer),
        Err(ErrorCode::ProducerFenced)
    );
}

#[test]
fn exhausted_epochs_rotate_the_producer_id() {
    let mut h = Harness::new();
    let (pid, _) = h.init_ok("app", None);
    let mut v = h.c.get("app").unwrap().clone();
    v.producer_epoch = i16::MAX - 1;
    let r = records::record("app", Some(&v));
    h.c.replay(&r.key, r.value.as_deref()).unwrap();
    let (p2, e2) = h.init_ok("app", Some((pid, i16::MAX - 1)));
    assert_ne!(p2, pid);
    assert_eq!(e2, 0);
    let v = h.c.get("app").unwrap();
    assert_eq!(
        (v.previous_producer_id, v.last_producer_epoch),
        (pid, i16::MAX - 1)
    );
}

#[test]
fn bad_requests_get_kafkas_errors() {
    let mut h = Harness::new();
    assert_eq!(
        h.init("", None).map(|w| w.answer),
        Err(ErrorCode::InvalidRequest)
    );
    let mut none = || None;
    assert_eq!(
        h.c.init_producer_id("app", 900_001, None, 0, &mut none)
            .map(|w| w.answer),
        Err(ErrorCode::InvalidTransactionTimeout)
    );
    assert_eq!(
        h.c.init_producer_id("app", 0, None, 0, &mut none)
            .map(|w| w.answer),
        Err(ErrorCode::InvalidTransactionTimeout)
    );
    assert_eq!(
        h.c.end_txn("unknown", 1, 0, true, 0),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    let (pid, epoch) = h.init_ok("app", None);
    assert_eq!(
        h.c.end_txn("app", pid + 1, epoch, true, 0),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.end_txn("app", pid, epoch + 1, true, 0),
        Err(ErrorCode::ProducerFenced)
    );
    // Nothing to end.
    assert_eq!(
        h.c.end_txn("app", pid, epoch, false, 0),
        Err(ErrorCode::InvalidTxnState)
    );
    assert_eq!(
        h.c.add_partitions("", pid, epoch, &parts(&[("t", 0)]), 0),
        Err(ErrorCode::InvalidRequest)
    );
}

#[test]
fn timers_abort_late_transactions_and_expire_idle_ids() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("late", None);
    h.add("late", pid, epoch, &[("t", 0)], 1_000);
    h.init_ok("idle", None);
    assert!(h.c.tick(1_000 + 60_000).is_empty(), "not late yet");
    let writes = h.c.tick(1_000 + 60_001);
    assert_eq!(writes.len(), 1);
    let w = writes.into_iter().next().unwrap();
    assert_eq!(
        (w.transactional_id.as_str(), w.answer),
        ("late", Answer::None)
    );
    let markers = h.durable(w).unwrap();
    assert!(!markers.commit);
    assert_eq!(
        markers.producer_epoch,
        epoch + 1,
        "the late producer is fenced"
    );
    assert_eq!(
        h.c.end_txn("late", pid, epoch, true, 70_000),
        Err(ErrorCode::ProducerFenced)
    );
    let w = h.c.markers_written("late", 70_000).unwrap();
    h.durable(w);

    // Seven days idle (Kafka's default): both ids go, with tombstones.
    let week = 604_800_000;
    let writes = h.c.tick(70_000 + week + 1);
    let ids: Vec<_> = writes.iter().map(|w| w.transactional_id.clone()).collect();
    assert_eq!(ids, ["idle", "late"]);
    for w in writes {
        assert!(w.record.value.is_none());
        h.durable(w);
    }
    assert!(h.c.get("idle").is_none() && h.c.get("late").is_none());
}

#[test]
fn replaying_the_log_rebuilds_the_ids_and_their_unfinished_markers() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("a", None);
    h.add("a", pid, epoch, &[("t", 0)], 200);
    let w = h.c.end_txn("a", pid, epoch, true, 300).unwrap().unwrap();
    h.durable(w);
    h.init_ok("b", None);
    // A record written but never confirmed (the coordinator died) is in the log too.
    let w = h.init("c", None).unwrap();
    h.log.push(w.record);

    // A new coordinator loads the partitions from the log.
    let mut c = Coordinator::new(Config::default());
    for p in 0..50 {
        c.load_partition(p, 8);
    }
    for r in &h.log {
        c.replay(&r.key, r.value.as_deref()).unwrap();
    }
    assert_eq!(c.get("a"), h.c.get("a"));
    assert_eq!(c.get("b"), h.c.get("b"));
    assert_eq!(c.get("c").unwrap().producer_epoch, 0);
    let unfinished = c.unfinished();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(
        (
            unfinished[0].transactional_id.as_str(),
            unfinished[0].commit
        ),
        ("a", true)
    );
    assert_eq!(unfinished[0].coordinator_epoch, 8);
    // Losing a partition forgets its ids.
    let pa = c.partition_for("a");
    c.unload_partition(pa);
    assert!(c.get("a").is_none() && !c.owns("a"));
}

#[test]
fn verification_says_whether_a_partition_is_in_the_ongoing_transaction() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("v", None);
    let ps = parts(&[("t", 0), ("t", 1)]);
    // Nothing added yet: the produce would start a transaction the coordinator does not know.
    assert_eq!(
        h.c.verify_partitions("v", pid, epoch, &ps).unwrap(),
        vec![
            (("t".into(), 0), ErrorCode::TransactionAbortable),
            (("t".into(), 1), ErrorCode::TransactionAbortable)
        ]
    );
    h.add("v", pid, epoch, &[("t", 0)], 10);
    assert_eq!(
        h.c.verify_partitions("v", pid, epoch, &ps).unwrap(),
        vec![
            (("t".into(), 0), ErrorCode::None),
            (("t".into(), 1), ErrorCode::TransactionAbortable)
        ]
    );
    assert_eq!(
        h.c.verify_partitions("v", pid, epoch + 1, &ps),
        Err(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        h.c.verify_partitions("v", pid + 1, epoch, &ps),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.verify_partitions("nope", pid, epoch, &ps),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.verify_partitions("", pid, epoch, &ps),
        Err(ErrorCode::InvalidRequest)
    );
    let w = h.c.end_txn("v", pid, epoch, true, 20).unwrap().unwrap();
    h.durable(w);
    assert_eq!(
        h.c.verify_partitions("v", pid, epoch, &ps),
        Err(ErrorCode::ConcurrentTransactions)
    );
}

#[test]
fn the_two_timers_run_apart() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init_ok("late", None);
    h.add("late", pid, epoch, &[("t", 0)], 1_000);
    h.init_ok("idle", None);
    let week = 604_800_000;
    let later = 1_000 + week + 1;
    let expired = h.c.expire_ids(later);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].transactional_id, "idle");
    h.durable(expired.into_iter().next().unwrap());
    let aborted = h.c.abort_timed_out(later);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].transactional_id, "late");
}
