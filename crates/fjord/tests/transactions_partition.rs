//! Transactions on the partition side against a real `fjord` process, spoken to with raw
//! requests (fjord-client): WriteTxnMarkers for partitions that do not exist and from a
//! deposed coordinator, a transactional produce to a partition not added to the transaction
//! (KIP-890 part 1 verification: INVALID_TXN_STATE), read_committed fetches around ABORT and
//! COMMIT markers, TxnOffsetCommit invisible until the commit marker (and UNSTABLE_OFFSET_COMMIT
//! with `require_stable`), and DescribeProducers.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{unique, FjordProcess};
use fjord_client::{Client, Compression, Connection, FetchOptions, ProduceRecord};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LOAD_IN_PROGRESS: i16 = 14;
const NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_TXN_STATE: i16 = 48;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const TRANSACTION_ABORTABLE: i16 = 120;

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

/// Codes to ask again on: a coordinator loading or not there yet, a transition in flight, a
/// verification that could not reach its coordinator.
fn retriable(code: i16) -> bool {
    matches!(
        code,
        LOAD_IN_PROGRESS
            | NOT_AVAILABLE
            | NOT_COORDINATOR
            | CONCURRENT_TRANSACTIONS
            | NOT_ENOUGH_REPLICAS
    )
}

/// Run `f` until its code is not [`retriable`] (within 30 s); returns that code and answer.
async fn until_settled<T, Fut: Future<Output = (i16, T)>>(
    what: &str,
    f: impl Fn() -> Fut,
) -> (i16, T) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, answer) = f().await;
        if !retriable(code) {
            return (code, answer);
        }
        assert!(Instant::now() < deadline, "{what}: still {code} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (up to 30 s) for `cond`.
async fn eventually<Fut: Future<Output = bool>>(what: &str, cond: impl Fn() -> Fut) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Node {
    client: Client,
    conn: Arc<Connection>,
}

impl Node {
    async fn connect(bootstrap: &str) -> Node {
        let client = Client::connect(bootstrap).await.expect("connect");
        let conn = client.bootstrap_connection().clone();
        Node { client, conn }
    }

    async fn init(&self, id: &str) -> (i64, i16) {
        // FindCoordinator creates `__transaction_state` on first need.
        self.client
            .transaction_coordinator(id)
            .await
            .expect("FindCoordinator");
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(sb(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let (code, r) = until_settled("InitProducerId", || async {
            let r = self.conn.send(&req).await.expect("InitProducerId");
            (r.error_code, r)
        })
        .await;
        assert_eq!(code, 0, "InitProducerId");
        (r.producer_id.0, r.producer_epoch)
    }

    async fn add_partition(&self, id: &str, pid: i64, epoch: i16, topic: &str, p: i32) {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(sb(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(vec![p])]);
        let (code, _) = until_settled("AddPartitionsToTxn", || async {
            let r = self
                .conn
                .send_at(&req, 3)
                .await
                .expect("AddPartitionsToTxn");
            let code = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter())
                .map(|p| p.partition_error_code)
                .max()
                .unwrap_or(0);
            (code, ())
        })
        .await;
        assert_eq!(code, 0, "AddPartitionsToTxn");
    }

    async fn add_offsets(&self, id: &str, pid: i64, epoch: i16, group: &str) {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(sb(group)));
        let (code, _) = until_settled("AddOffsetsToTxn", || async {
            let r = self.conn.send(&req).await.expect("AddOffsetsToTxn");
            (r.error_code, ())
        })
        .await;
        assert_eq!(code, 0, "AddOffsetsToTxn");
    }

    async fn end(&self, id: &str, pid: i64, epoch: i16, commit: bool) {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let (code, _) = until_settled("EndTxn", || async {
            let r = self.conn.send(&req).await.expect("EndTxn");
            (r.error_code, ())
        })
        .await;
        assert_eq!(code, 0, "EndTxn");
    }

    /// [`Node::produce_at`] v12 (the last to name topics by name).
    async fn produce(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        seq: i32,
        topic: &str,
        values: &[&str],
    ) -> i16 {
        self.produce_at(12, id, pid, epoch, seq, topic, values)
            .await
    }

    /// A transactional produce (Produce `version`) of `values` to `topic`-0 (sequence from
    /// `seq`): its code.
    #[allow(clippy::too_many_arguments)]
    async fn produce_at(
        &self,
        version: i16,
        id: &str,
        pid: i64,
        epoch: i16,
        seq: i32,
        topic: &str,
        values: &[&str],
    ) -> i16 {
        let records: Vec<ProduceRecord> = values
            .iter()
            .map(|v| ProduceRecord::new(None::<Bytes>, Bytes::from(v.to_string())))
            .collect();
        let batch =
            Client::encode_transactional_batch(&records, Compression::None, (pid, epoch, seq))
                .unwrap();
        let req = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(sb(id))))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(sb(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let (code, _) = until_settled("Produce", || async {
            let r = self.conn.send_at(&req, version).await.expect("Produce");
            (r.responses[0].partition_responses[0].error_code, ())
        })
        .await;
        code
    }

    /// Values read from `topic`-0 from offset 0 with `isolation_level`, and the LSO.
    async fn read(&self, topic: &str, isolation_level: i8) -> (Vec<String>, i64) {
        let options = FetchOptions {
            isolation_level,
            max_wait: Duration::from_millis(10),
            ..FetchOptions::default()
        };
        let f = self
            .client
            .fetch(topic, 0, 0, options)
            .await
            .expect("fetch");
        let values = f
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string())
            .collect();
        (values, f.last_stable_offset)
    }

    /// WriteTxnMarkers for `parts` of `pid`: each partition's code.
    async fn markers(
        &self,
        pid: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        parts: &[(&str, i32)],
    ) -> Vec<i16> {
        let topics = parts
            .iter()
            .map(|(t, p)| {
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(sb(t)))
                    .with_partition_indexes(vec![*p])
            })
            .collect();
        let req =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_transaction_result(commit)
                .with_coordinator_epoch(coordinator_epoch)
                .with_topics(topics)]);
        let r = self.conn.send(&req).await.expect("WriteTxnMarkers");
        r.markers[0]
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }

    /// OffsetFetch (v7) of `topic`-0 for `group`: (code, offset).
    async fn committed(&self, group: &str, topic: &str, require_stable: bool) -> (i16, i64) {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_require_stable(require_stable)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partition_indexes(vec![0])]));
        let (_, p) = until_settled("OffsetFetch", || async {
            let r = self.conn.send_at(&req, 7).await.expect("OffsetFetch");
            let p = r.topics[0].partitions[0].clone();
            (r.error_code, p)
        })
        .await;
        (p.error_code, p.committed_offset)
    }
}

#[test]
fn markers_verification_read_committed_and_transactional_offsets() {
    let broker = FjordProcess::start(&[]);
    let topic = format!("t{}", unique());
    broker.create_topic(&topic, 1, &[]);
    let id = format!("app-{}", unique());
    let group = format!("g-{}", unique());
    let pid_of = block_on(async {
        let n = Node::connect(broker.bootstrap()).await;
        // A marker for partitions that do not exist here.
        let codes = n
            .markers(7, 0, true, 0, &[("no-such-topic", 0), (&topic, 9)])
            .await;
        assert_eq!(codes, vec![UNKNOWN_TOPIC_OR_PARTITION; 2]);

        let (pid, epoch) = n.init(&id).await;
        // A transactional produce to a partition the transaction does not hold: the leader
        // asks the coordinator (AddPartitionsToTxn verify_only), which says no. As Kafka 4:
        // TRANSACTION_ABORTABLE for Produce v11+, INVALID_TXN_STATE for older clients.
        assert_eq!(
            n.produce(&id, pid, epoch, 0, &topic, &["stray"]).await,
            TRANSACTION_ABORTABLE
        );
        assert_eq!(
            n.produce_at(10, &id, pid, epoch, 0, &topic, &["stray"])
                .await,
            INVALID_TXN_STATE
        );
        assert_eq!(
            n.read(&topic, 0).await.0,
            Vec::<String>::new(),
            "nothing written"
        );

        // Transaction 1: added, produced, aborted.
        n.add_partition(&id, pid, epoch, &topic, 0).await;
        assert_eq!(
            n.produce(&id, pid, epoch, 0, &topic, &["a1", "a2"]).await,
            0
        );
        assert_eq!(
            n.read(&topic, 0).await.0,
            ["a1", "a2"],
            "read_uncommitted sees it"
        );
        let (committed, lso) = n.read(&topic, 1).await;
        assert!(
            committed.is_empty() && lso == 0,
            "open: {committed:?} lso {lso}"
        );
        n.end(&id, pid, epoch, false).await;
        eventually("the abort marker", || async {
            n.read(&topic, 1).await.1 == 3
        })
        .await;
        assert!(
            n.read(&topic, 1).await.0.is_empty(),
            "aborted records hidden"
        );

        // Transaction 2: records and a transactional offset commit, committed.
        n.add_partition(&id, pid, epoch, &topic, 0).await;
        assert_eq!(n.produce(&id, pid, epoch, 2, &topic, &["c1"]).await, 0);
        // FindCoordinator creates `__consumer_offsets` on first need.
        n.client
            .group_coordinator(&group)
            .await
            .expect("FindCoordinator");
        n.add_offsets(&id, pid, epoch, &group).await;
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(sb(&id)))
            .with_group_id(GroupId(sb(&group)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(sb(&topic)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(-1)])]);
        let (code, _) = until_settled("TxnOffsetCommit", || async {
            let r = n.conn.send(&req).await.expect("TxnOffsetCommit");
            (r.topics[0].partitions[0].error_code, ())
        })
        .await;
        assert_eq!(code, 0, "TxnOffsetCommit");
        assert_eq!(
            n.committed(&group, &topic, false).await,
            (0, -1),
            "not before the marker"
        );
        assert_eq!(
            n.committed(&group, &topic, true).await.0,
            UNSTABLE_OFFSET_COMMIT
        );
        n.end(&id, pid, epoch, true).await;
        eventually("the commit marker", || async {
            n.read(&topic, 1).await.0 == ["c1"]
        })
        .await;
        eventually("the committed offset", || async {
            n.committed(&group, &topic, true).await == (0, 42)
        })
        .await;

        // DescribeProducers: the producer, its epoch, the coordinator epoch of its markers,
        // no transaction open.
        let r = n
            .conn
            .send(&DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_partition_indexes(vec![0]),
            ]))
            .await
            .expect("DescribeProducers");
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let s = p
            .active_producers
            .iter()
            .find(|s| s.producer_id.0 == pid)
            .expect("the producer");
        assert_eq!(s.producer_epoch, epoch as i32);
        assert_eq!(s.current_txn_start_offset, -1);
        assert!(s.coordinator_epoch >= 0, "{}", s.coordinator_epoch);

        // A marker from an older coordinator than the producer's last one is fenced.
        let codes = n
            .markers(pid, epoch, false, s.coordinator_epoch - 1, &[(&topic, 0)])
            .await;
        assert_eq!(codes, vec![TRANSACTION_COORDINATOR_FENCED]);
        pid
    });
    // The CLI shows the same producer.
    let out = broker
        .cli(&[
            "topic",
            "describe",
            &topic,
            "--producers",
            "--output",
            "json",
        ])
        .success("fjord topic describe --producers");
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).expect("JSON");
    let producers = &v["partitions"][0]["producers"];
    assert!(
        producers
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["producer_id"] == pid_of)),
        "{v}"
    );
    let table = broker
        .cli(&["topic", "describe", &topic, "--producers"])
        .success("fjord topic describe --producers");
    assert!(table.stdout().contains("PRODUCER ID"), "{}", table.stdout());
}
