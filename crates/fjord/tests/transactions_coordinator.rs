//! The transaction coordinator against real `fjord` processes, spoken to with raw requests
//! (fjord-client): InitProducerId with a transactional id, fencing, Kafka's error codes,
//! DescribeTransactions and ListTransactions, the timeout abort, the state across a restart,
//! and a coordinator killed mid-transaction on a 3-node cluster.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{unique, FjordProcess};
use fjord_client::{Client, Connection};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const LOAD_IN_PROGRESS: i16 = 14;
const NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
const TRANSACTION_ABORTABLE: i16 = 120;

/// Each partition's error code.
type Codes = BTreeMap<(String, i32), i16>;
/// A listed transaction: id, producer id, state.
type Listed = (String, i64, String);

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Codes that mean "ask again, maybe elsewhere": the coordinator is loading, moved or not
/// reachable yet.
fn retriable(code: i16) -> bool {
    matches!(code, LOAD_IN_PROGRESS | NOT_AVAILABLE | NOT_COORDINATOR)
}

/// A client of the transaction coordinator that finds it again whenever it moves.
struct Txns {
    bootstrap: String,
}

impl Txns {
    async fn client(&self) -> Client {
        Client::connect(&self.bootstrap).await.expect("connect")
    }

    /// Run `f` on the coordinator of `id` until it answers with a code that is not
    /// [`retriable`] (within 60 s); returns its answer.
    async fn ask<T, Fut>(&self, id: &str, f: impl Fn(Arc<Connection>) -> Fut) -> T
    where
        Fut: Future<Output = (i16, T)>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let client = self.client().await;
            let last = match client.transaction_coordinator(id).await {
                Ok(conn) => match tokio::time::timeout(Duration::from_secs(20), f(conn)).await {
                    Ok((code, answer)) if !retriable(code) => return answer,
                    Ok((code, _)) => format!("code {code}"),
                    Err(_) => "timed out".to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "no coordinator for {id:?} answered: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn init_raw(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> InitProducerIdResponse {
        let (pid, epoch) = expected.unwrap_or((-1, -1));
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(sb(id))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch);
        self.ask(id, |c| {
            let req = req.clone();
            async move {
                let r = c.send(&req).await.expect("InitProducerId");
                (r.error_code, r)
            }
        })
        .await
    }

    /// InitProducerId until it succeeds (CONCURRENT_TRANSACTIONS while an abort completes).
    async fn init(&self, id: &str, timeout_ms: i32) -> (i64, i16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.init_raw(id, timeout_ms, None).await;
            if r.error_code == 0 {
                return (r.producer_id.0, r.producer_epoch);
            }
            assert!(
                r.error_code == CONCURRENT_TRANSACTIONS && Instant::now() < deadline,
                "InitProducerId({id}): {}",
                r.error_code
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// AddPartitionsToTxn as a producer sends it (`version` 0-3): each partition's code.
    async fn add(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
        version: i16,
    ) -> Codes {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(sb(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(topics(parts));
        self.ask(id, |c| {
            let req = req.clone();
            async move {
                let r = c.send_at(&req, version).await.expect("AddPartitionsToTxn");
                let codes: Codes = r
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| {
                        t.results_by_partition.iter().map(|p| {
                            (
                                (t.name.0.to_string(), p.partition_index),
                                p.partition_error_code,
                            )
                        })
                    })
                    .collect();
                (codes.values().copied().max().unwrap_or(0), codes)
            }
        })
        .await
    }

    /// AddPartitionsToTxn v4+ with `verify_only`, as a partition leader asks.
    async fn verify(&self, id: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Codes {
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_verify_only(true)
                .with_topics(topics(parts)),
        ]);
        self.ask(id, |c| {
            let req = req.clone();
            async move {
                let r = c.send_at(&req, 5).await.expect("AddPartitionsToTxn v5");
                let codes: Codes = r
                    .results_by_transaction
                    .iter()
                    .flat_map(|t| t.topic_results.iter())
                    .flat_map(|t| {
                        t.results_by_partition.iter().map(|p| {
                            (
                                (t.name.0.to_string(), p.partition_index),
                                p.partition_error_code,
                            )
                        })
                    })
                    .collect();
                let first = codes.values().next().copied().unwrap_or(0);
                (first, codes)
            }
        })
        .await
    }

    async fn end(&self, id: &str, pid: i64, epoch: i16, commit: bool, version: Option<i16>) -> i16 {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        self.ask(id, |c| {
            let req = req.clone();
            async move {
                let r = match version {
                    Some(v) => c.send_at(&req, v).await,
                    None => c.send(&req).await,
                }
                .expect("EndTxn");
                (r.error_code, r.error_code)
            }
        })
        .await
    }

    async fn describe(&self, id: &str) -> TransactionState {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(sb(id))]);
        self.ask(id, |c| {
            let req = req.clone();
            async move {
                let r = c.send(&req).await.expect("DescribeTransactions");
                let s = r.transaction_states.into_iter().next().expect("one state");
                (s.error_code, s)
            }
        })
        .await
    }

    /// ListTransactions on every broker: (id, producer id, state).
    async fn list(&self, states: &[&str], duration_ms: i64) -> (Vec<Listed>, Vec<String>) {
        let client = self.client().await;
        let md = client.metadata(Some(&[])).await.expect("metadata");
        let req = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| sb(s)).collect())
            .with_duration_filter(duration_ms);
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for b in &md.brokers {
            let conn = client.broker_connection(b.node_id).await.expect("broker");
            let r = conn.send(&req).await.expect("ListTransactions");
            assert_eq!(r.error_code, 0, "ListTransactions on broker {}", b.node_id);
            unknown.extend(r.unknown_state_filters.iter().map(|s| s.to_string()));
            out.extend(r.transaction_states.iter().map(|t| {
                (
                    t.transactional_id.0.to_string(),
                    t.producer_id.0,
                    t.transaction_state.to_string(),
                )
            }));
        }
        out.sort();
        unknown.dedup();
        (out, unknown)
    }
}

fn topics(parts: &[(&str, i32)]) -> Vec<AddPartitionsToTxnTopic> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(sb(t)))
                .with_partitions(ps)
        })
        .collect()
}

fn codes(parts: &[(&str, i32)], code: i16) -> Codes {
    parts
        .iter()
        .map(|(t, p)| ((t.to_string(), *p), code))
        .collect()
}

fn partitions(s: &TransactionState) -> Vec<(String, i32)> {
    let mut out: Vec<_> = s
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect();
    out.sort();
    out
}

/// Whether WriteTxnMarkers is served (the partition leaders' side of the markers): without
/// it a prepared transaction stays prepared until it is.
fn markers_served(bootstrap: &str) -> bool {
    block_on(async {
        let client = Client::connect(bootstrap).await.expect("connect");
        client
            .bootstrap_connection()
            .version(ApiKey::WriteTxnMarkers)
            .is_some()
    })
}

#[test]
fn fencing_errors_describe_and_list() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("t", 2, &[]);
    let txns = Txns {
        bootstrap: broker.bootstrap().to_string(),
    };
    let id = format!("app-{}", unique());
    let markers = markers_served(broker.bootstrap());
    block_on(async {
        // Kafka's checks before anything else: a timeout above transaction.max.timeout.ms.
        let r = txns.init_raw(&id, 900_001, None).await;
        assert_eq!(r.error_code, INVALID_TRANSACTION_TIMEOUT);
        // An id nobody initialized: EndTxn and AddPartitions get INVALID_PRODUCER_ID_MAPPING,
        // DescribeTransactions TRANSACTIONAL_ID_NOT_FOUND.
        assert_eq!(
            txns.end("never-initialized", 7, 0, true, None).await,
            INVALID_PRODUCER_ID_MAPPING
        );
        assert_eq!(
            txns.describe("never-initialized").await.error_code,
            TRANSACTIONAL_ID_NOT_FOUND
        );

        let (pid, e0) = txns.init(&id, 60_000).await;
        assert!(pid >= 0 && e0 == 0, "{pid} {e0}");
        let s = txns.describe(&id).await;
        assert_eq!(
            (
                s.transaction_state.as_str(),
                s.producer_id.0,
                s.producer_epoch
            ),
            ("Empty", pid, e0)
        );
        // Nothing to end yet.
        assert_eq!(txns.end(&id, pid, e0, true, None).await, INVALID_TXN_STATE);
        // A second producer with the same id: the epoch is bumped, the first one is fenced.
        let (pid2, e1) = txns.init(&id, 60_000).await;
        assert_eq!((pid2, e1), (pid, e0 + 1), "same producer id, next epoch");
        let parts = [("t", 0)];
        assert_eq!(
            txns.add(&id, pid, e0, &parts, 3).await,
            codes(&parts, PRODUCER_FENCED)
        );
        assert_eq!(
            txns.add(&id, pid, e0, &parts, 1).await,
            codes(&parts, INVALID_PRODUCER_EPOCH),
            "v0-1 clients do not know PRODUCER_FENCED"
        );
        assert_eq!(txns.end(&id, pid, e0, true, None).await, PRODUCER_FENCED);
        assert_eq!(
            txns.end(&id, pid, e0, true, Some(1)).await,
            INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            txns.end(&id, pid + 1, e1, true, None).await,
            INVALID_PRODUCER_ID_MAPPING
        );
        // A topic that does not exist fails the whole request.
        let with_unknown = [("t", 0), ("no-such-topic", 0)];
        let r = txns.add(&id, pid, e1, &with_unknown, 3).await;
        assert_eq!(
            r[&("no-such-topic".to_string(), 0)],
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(r[&("t".to_string(), 0)], OPERATION_NOT_ATTEMPTED);
        assert_eq!(txns.describe(&id).await.transaction_state.as_str(), "Empty");

        // The new producer's transaction.
        let both = [("t", 0), ("t", 1)];
        assert_eq!(
            txns.add(&id, pid, e1, &[("t", 0)], 3).await,
            codes(&[("t", 0)], 0)
        );
        let s = txns.describe(&id).await;
        assert_eq!(s.transaction_state.as_str(), "Ongoing");
        assert_eq!(s.transaction_timeout_ms, 60_000);
        assert!(s.transaction_start_time_ms > 0);
        assert_eq!(partitions(&s), [("t".to_string(), 0)]);
        // A partition leader's verification (AddPartitionsToTxn v4+, verify_only).
        let v = txns.verify(&id, pid, e1, &both).await;
        assert_eq!(v[&("t".to_string(), 0)], 0);
        assert_eq!(v[&("t".to_string(), 1)], TRANSACTION_ABORTABLE);
        assert_eq!(
            txns.verify(&id, pid, e0, &both).await,
            codes(&both, PRODUCER_FENCED)
        );

        // ListTransactions: state filters, unknown states echoed, the duration filter.
        let (listed, unknown) = txns.list(&["Ongoing", "Bogus"], -1).await;
        assert!(
            listed.contains(&(id.clone(), pid, "Ongoing".to_string())),
            "{listed:?}"
        );
        assert_eq!(unknown, ["Bogus"]);
        let (listed, _) = txns.list(&["Empty"], -1).await;
        assert!(!listed.iter().any(|(i, _, _)| *i == id), "{listed:?}");
        let (listed, _) = txns.list(&[], 3_600_000).await;
        assert!(
            !listed.iter().any(|(i, _, _)| *i == id),
            "not open for an hour: {listed:?}"
        );

        // Commit: answered once the prepare record is replicated; the id is busy until the
        // markers are written, then CompleteCommit.
        assert_eq!(txns.end(&id, pid, e1, true, None).await, 0);
        if markers {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let s = txns.describe(&id).await;
                match s.transaction_state.as_str() {
                    "CompleteCommit" => break,
                    "PrepareCommit" => {}
                    other => panic!("the commit became {other}"),
                }
                assert!(Instant::now() < deadline, "the commit did not complete");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                txns.end(&id, pid, e1, true, None).await,
                0,
                "a retried commit"
            );
            assert_eq!(txns.end(&id, pid, e1, false, None).await, INVALID_TXN_STATE);
        } else {
            let s = txns.describe(&id).await;
            assert_eq!(s.transaction_state.as_str(), "PrepareCommit", "{s:?}");
            let busy = txns.add(&id, pid, e1, &parts, 3).await;
            assert_eq!(busy, codes(&parts, CONCURRENT_TRANSACTIONS));
            assert_eq!(txns.end(&id, pid, e1, false, None).await, INVALID_TXN_STATE);
        }
    });
    // The CLI prints what the coordinator holds.
    let out = broker
        .cli(&["transaction", "describe", &id])
        .success("transaction describe")
        .stdout();
    assert!(out.contains(&id) && out.contains("Commit"), "{out}");
    let out = broker
        .cli(&["transaction", "list"])
        .success("transaction list")
        .stdout();
    assert!(out.contains(&id), "{out}");
    let r = broker.cli(&["transaction", "describe", "never-initialized"]);
    assert!(
        !r.ok() && r.stderr().contains("TRANSACTIONAL_ID_NOT_FOUND"),
        "{}",
        r.describe()
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn a_transaction_left_open_is_aborted_at_its_timeout() {
    let broker = FjordProcess::start(&[
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    ]);
    broker.create_topic("t", 1, &[]);
    let txns = Txns {
        bootstrap: broker.bootstrap().to_string(),
    };
    let id = format!("late-{}", unique());
    let markers = markers_served(broker.bootstrap());
    block_on(async {
        let (pid, epoch) = txns.init(&id, 1_000).await;
        assert_eq!(
            txns.add(&id, pid, epoch, &[("t", 0)], 3).await,
            codes(&[("t", 0)], 0)
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        let s = loop {
            let s = txns.describe(&id).await;
            if s.transaction_state.as_str() != "Ongoing" {
                break s;
            }
            assert!(Instant::now() < deadline, "still open after 20 s: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            ["PrepareAbort", "CompleteAbort"].contains(&s.transaction_state.as_str()),
            "{s:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "aborted too early"
        );
        assert_eq!(s.producer_epoch, epoch + 1, "the late producer is fenced");
        assert_eq!(txns.end(&id, pid, epoch, true, None).await, PRODUCER_FENCED);
        if markers {
            let deadline = Instant::now() + Duration::from_secs(20);
            while txns.describe(&id).await.transaction_state.as_str() != "CompleteAbort" {
                assert!(Instant::now() < deadline, "the abort did not complete");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The next producer of the id starts afresh.
            assert_eq!(txns.init(&id, 1_000).await, (pid, epoch + 2));
        }
    });
    let metrics = broker.http_get("/metrics").body;
    assert_eq!(
        common::cluster::metric_value(&metrics, "fjord_transactions_timed_out_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    assert!(broker.all_logs().contains("transaction timed out"));
    broker.assert_no_panic_in_log();
}

#[test]
fn coordinator_state_survives_a_restart() {
    let mut broker = FjordProcess::start(&[]);
    broker.create_topic("t", 2, &[]);
    let id = format!("durable-{}", unique());
    let (pid, epoch) = block_on(async {
        let txns = Txns {
            bootstrap: broker.bootstrap().to_string(),
        };
        let (pid, epoch) = txns.init(&id, 120_000).await;
        let parts = [("t", 0), ("t", 1)];
        assert_eq!(txns.add(&id, pid, epoch, &parts, 3).await, codes(&parts, 0));
        (pid, epoch)
    });
    broker.kill9();
    broker.restart();
    block_on(async {
        let txns = Txns {
            bootstrap: broker.bootstrap().to_string(),
        };
        let s = txns.describe(&id).await;
        assert_eq!(
            (
                s.transaction_state.as_str(),
                s.producer_id.0,
                s.producer_epoch
            ),
            ("Ongoing", pid, epoch),
            "{s:?}"
        );
        assert_eq!(partitions(&s), [("t".to_string(), 0), ("t".to_string(), 1)]);
        // The producer goes on where it was.
        assert_eq!(txns.end(&id, pid, epoch, false, None).await, 0);
    });
    assert!(broker
        .all_logs()
        .contains("transaction coordinator shard loaded"));
    broker.assert_no_panic_in_log();
}

/// EndTxn(commit) is answered once the PrepareCommit record is on the ISR; the coordinator is
/// then killed while the transaction's partition leader is frozen, so no marker can have been
/// written: the next coordinator loads the prepared commit, keeps sending its marker, and
/// completes the commit once the leader is back.
#[test]
fn a_new_coordinator_finishes_a_transaction_its_predecessor_prepared() {
    let mut c = Cluster::builder()
        .roles(&["broker", "broker", "broker", "controller"])
        .config(
            "replica.lag.time.max.ms = 2000\n\
             transaction.state.log.num.partitions = 1\n\
             transaction.state.log.replication.factor = 3",
        )
        .start();
    // One partition per broker (RF 1): the transaction's partition has one replica, so its
    // leader frozen means no leader at all.
    c.create_topics(&[("t", 3, 1)]);
    let txns = Txns {
        bootstrap: c.bootstrap_all(),
    };
    let id = format!("moving-{}", unique());
    let (pid, epoch) = block_on(txns.init(&id, 60_000));
    c.wait_isr("__transaction_state", Some(0), 3);
    let coordinator = c.leader("__transaction_state", 0) as usize;
    let layout = c.wait_layout("t", "leaders", |l| {
        l.len() == 3 && l.values().all(|p| p.leader >= 0)
    });
    let (&partition, info) = layout
        .iter()
        .find(|(_, p)| p.leader as usize != coordinator)
        .expect("a partition led by another broker");
    let frozen = info.leader as usize;
    let survivor = *c
        .brokers()
        .iter()
        .find(|b| **b != coordinator && **b != frozen)
        .unwrap();
    let part = [("t", partition as i32)];
    block_on(async {
        assert_eq!(txns.add(&id, pid, epoch, &part, 3).await, codes(&part, 0));
    });
    c.freeze(frozen);
    block_on(async {
        // Answered once the frozen broker has left the ISR of __transaction_state-0.
        assert_eq!(txns.end(&id, pid, epoch, true, None).await, 0);
    });
    c.kill9(coordinator);
    c.wait_layout("__transaction_state", "a new coordinator", |l| {
        l.get(&0).is_some_and(|p| p.leader as usize == survivor)
    });
    let bootstrap = c.node(survivor).bootstrap().to_string();
    let markers = markers_served(&bootstrap);
    let txns = Txns { bootstrap };
    block_on(async {
        let s = txns.describe(&id).await;
        assert_eq!(
            (
                s.transaction_state.as_str(),
                s.producer_id.0,
                s.producer_epoch
            ),
            ("PrepareCommit", pid, epoch),
            "the new coordinator has the prepared commit, its marker not written"
        );
    });
    c.thaw(frozen);
    block_on(async {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let s = txns.describe(&id).await;
            assert_eq!((s.producer_id.0, s.producer_epoch), (pid, epoch), "{s:?}");
            match s.transaction_state.as_str() {
                "CompleteCommit" => break,
                // Without the partition leaders' WriteTxnMarkers the new coordinator keeps the
                // commit prepared (and keeps sending): it must never turn into an abort.
                "PrepareCommit" if !markers => break,
                "PrepareCommit" => {}
                other => panic!("the prepared commit became {other}"),
            }
            assert!(
                Instant::now() < deadline,
                "the new coordinator did not finish the commit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The producer carries on with the next transaction at the new coordinator.
        if markers {
            assert_eq!(txns.add(&id, pid, epoch, &part, 3).await, codes(&part, 0));
        }
    });
    c.start_node(coordinator);
    c.assert_no_panic_in_logs();
}

#[test]
fn a_new_coordinator_aborts_an_open_transaction_at_its_timeout() {
    let mut c = Cluster::builder()
        .roles(&["broker", "broker", "broker", "controller"])
        .config(
            "replica.lag.time.max.ms = 2000\n\
             transaction.state.log.num.partitions = 1\n\
             transaction.state.log.replication.factor = 3\n\
             transaction.abort.timed.out.transaction.cleanup.interval.ms = 200",
        )
        .start();
    c.create_topics(&[("t", 1, 3)]);
    let txns = Txns {
        bootstrap: c.bootstrap_all(),
    };
    let id = format!("orphan-{}", unique());
    let (pid, epoch) = block_on(async {
        let (pid, epoch) = txns.init(&id, 5_000).await;
        assert_eq!(
            txns.add(&id, pid, epoch, &[("t", 0)], 3).await,
            codes(&[("t", 0)], 0)
        );
        (pid, epoch)
    });
    let coordinator = c.leader("__transaction_state", 0) as usize;
    c.kill9(coordinator);
    let survivor = *c.brokers().iter().find(|b| **b != coordinator).unwrap();
    let bootstrap = c.node(survivor).bootstrap().to_string();
    let markers = markers_served(&bootstrap);
    let txns = Txns { bootstrap };
    block_on(async {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let s = txns.describe(&id).await;
            assert_eq!(s.producer_id.0, pid);
            // With the partition leaders' WriteTxnMarkers the abort completes; without it the
            // new coordinator keeps it prepared (and keeps sending).
            let state = s.transaction_state.as_str();
            if state == "CompleteAbort" || (state == "PrepareAbort" && !markers) {
                assert_eq!(
                    s.producer_epoch,
                    epoch + 1,
                    "the orphaned producer is fenced"
                );
                break;
            }
            if state == "PrepareAbort" {
                assert_eq!(
                    s.producer_epoch,
                    epoch + 1,
                    "the orphaned producer is fenced"
                );
                assert!(Instant::now() < deadline, "the abort did not complete");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(s.transaction_state.as_str(), "Ongoing", "{s:?}");
            assert!(
                Instant::now() < deadline,
                "the new coordinator never aborted it"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(txns.end(&id, pid, epoch, true, None).await, PRODUCER_FENCED);
    });
    c.start_node(coordinator);
    c.assert_no_panic_in_logs();
}
