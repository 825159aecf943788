//! Followers fetch in incremental fetch sessions (KIP-227) and are fenced by their broker epoch
//! (KIP-903), on a real three-node cluster with 2,000 partitions:
//!
//! - in steady state a follower's fetch requests list (almost) no partitions, read from its
//!   `fjord_replica_fetch_request_partitions_total` / `fjord_replica_fetch_requests_total`;
//! - a Fetch carrying an older broker epoch than the one registered for that broker is refused
//!   with STALE_BROKER_EPOCH (a raw request from the test), one with the current epoch is not;
//! - after the leader of many partitions is killed, every acknowledged record is still there,
//!   the restarted broker catches up in all 2,000 partitions, and its new sessions are
//!   incremental again.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Layout, PartitionInfo, WAIT_TIMEOUT};
use common::{ck_consume, ck_produce, records, wait_until};
use fjord_client::{Connection, ConnectionConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

const TOPIC: &str = "wide";
const PARTITIONS: u32 = 2000;
const STALE_BROKER_EPOCH: i16 = 77;

/// A follower fetch counter on `node`, for one `kind` (full, incremental).
fn follower_counter(c: &Cluster, node: usize, name: &str, kind: &str) -> f64 {
    c.metric(node, name, &[("kind", kind)]).unwrap_or(0.0)
}

/// Follower fetch requests and the partitions they listed, by kind.
#[derive(Clone, Copy, Default)]
struct Window {
    full: f64,
    full_partitions: f64,
    incremental: f64,
    incremental_partitions: f64,
}

fn follower_counts(c: &Cluster, node: usize) -> Window {
    let req = "fjord_replica_fetch_requests_total";
    let parts = "fjord_replica_fetch_request_partitions_total";
    Window {
        full: follower_counter(c, node, req, "full"),
        full_partitions: follower_counter(c, node, parts, "full"),
        incremental: follower_counter(c, node, req, "incremental"),
        incremental_partitions: follower_counter(c, node, parts, "incremental"),
    }
}

/// The follower fetches `node` sends over the next `requests` requests (after those already
/// sent), by kind.
fn follower_window(c: &Cluster, node: usize, requests: f64) -> Window {
    let a = follower_counts(c, node);
    assert!(
        wait_until(WAIT_TIMEOUT, || {
            let b = follower_counts(c, node);
            b.full + b.incremental >= a.full + a.incremental + requests
        }),
        "node {node} sent fewer than {requests} follower fetches in {WAIT_TIMEOUT:?}"
    );
    let b = follower_counts(c, node);
    Window {
        full: b.full - a.full,
        full_partitions: b.full_partitions - a.full_partitions,
        incremental: b.incremental - a.incremental,
        incremental_partitions: b.incremental_partitions - a.incremental_partitions,
    }
}

/// Wait (up to three minutes: 2,000 partitions) until every running broker answers a
/// layout of all partitions for which `ok` holds for each partition.
fn wait_all(c: &mut Cluster, what: &str, ok: impl Fn(&PartitionInfo) -> bool) -> Layout {
    c.wait_layout_for(TOPIC, what, Duration::from_secs(180), |l| {
        l.len() == PARTITIONS as usize && l.values().all(&ok)
    })
}

/// Steady state: the followers on every broker send incremental fetches that list almost
/// nothing (without sessions each request lists every partition followed from that leader,
/// ~330 here). A new topic's partitions start with a full ISR, so the layout is "in sync"
/// before the fetchers have settled (a partition a leader did not know yet is backed off and
/// listed again); and on a loaded machine a follower fetch can time out, after which the
/// follower starts a new session with a full request. So: windows of 40 requests are measured
/// one after another until one is steady — most requests incremental, listing almost nothing
/// — and at most six windows (about a minute) may pass before that.
fn assert_incremental(c: &Cluster, nodes: &[usize], what: &str) {
    for &n in nodes {
        let mut steady = false;
        for _ in 0..6 {
            let w = follower_window(c, n, 40.0);
            let resets = c
                .metric(n, "fjord_replica_fetch_session_resets_total", &[])
                .unwrap_or(0.0);
            let per_incremental = w.incremental_partitions / w.incremental.max(1.0);
            eprintln!(
                "{what}: node {n}: {} incremental follower fetches listing {per_incremental:.2} \
                 partitions each, {} full ones listing {} partitions; {resets} session resets so far",
                w.incremental, w.full, w.full_partitions
            );
            if w.incremental >= 3.0 * w.full && per_incremental < 2.0 {
                steady = true;
                break;
            }
        }
        assert!(
            steady,
            "{what}: node {n}'s follower fetches never settled into incremental ones listing \
             almost nothing (see the windows above)"
        );
    }
}

/// A sessionless follower Fetch (v15+) sent to `leader` as broker `replica` with
/// `replica_epoch`, for `partitions` from offset 0 in this order, answering at most
/// `max_bytes`: the top-level error code and, per partition, the record bytes returned.
fn raw_follower_fetch(
    c: &Cluster,
    leader: usize,
    (replica, replica_epoch): (i32, i64),
    partitions: &[i32],
    max_bytes: i32,
) -> (i16, Vec<(i32, usize)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = c.node(leader).bootstrap().to_string();
    rt.block_on(async {
        let conn = Connection::connect(&bootstrap, ConnectionConfig::default())
            .await
            .expect("connect");
        assert!(
            conn.version(ApiKey::Fetch).is_some_and(|v| v >= 15),
            "the broker offers Fetch v15+ (KIP-903)"
        );
        let meta = conn
            .send(&MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC)))),
            ])))
            .await
            .expect("Metadata");
        let topic_id: Uuid = meta.topics[0].topic_id;
        assert!(!topic_id.is_nil(), "topic id of {TOPIC}");
        let fetch = |p: &i32| {
            FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
        };
        let req = FetchRequest::default()
            .with_replica_state(
                ReplicaState::default()
                    .with_replica_id(BrokerId(replica))
                    .with_replica_epoch(replica_epoch),
            )
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(partitions.iter().map(fetch).collect())]);
        let resp = conn.send(&req).await.expect("Fetch");
        let records = resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|d| (d.partition_index, d.records.as_ref().map_or(0, |r| r.len())))
            .collect();
        (resp.error_code, records)
    })
}

#[test]
fn follower_fetch_sessions_list_few_partitions_fence_stale_epochs_and_survive_a_leader_kill() {
    // No preferred-leader elections: they would move leaderships (and so partitions between
    // fetchers) while the test measures steady state.
    let mut c = Cluster::builder()
        .config("auto.leader.rebalance.enable = false")
        .start();
    c.create_topics(&[(TOPIC, PARTITIONS, 2)]);
    let full_isr = |p: &PartitionInfo| p.leader >= 0 && p.isr.len() == 2;
    let layout = wait_all(&mut c, "a leader and two in-sync replicas", full_isr);

    // 1. Steady state, idle topic: incremental fetches list nothing.
    assert_incremental(&c, &[1, 2, 3], "idle");
    for n in [1, 2, 3] {
        let sessions = c
            .metric(n, "fjord_fetch_sessions", &[("kind", "follower")])
            .unwrap_or(0.0);
        assert!(
            sessions >= 1.0,
            "node {n} holds {sessions} follower sessions"
        );
    }

    // 2. KIP-903: a follower fetch from an older incarnation of a broker is refused. A broker
    // epoch is the offset of its registration record, so one broker may hold epoch 0, below
    // which there is no older one (-1 means "unknown" and is let through): use a follower
    // whose epoch is at least 1.
    let (leader, follower, epoch) = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]
        .into_iter()
        .find_map(|(l, f): (usize, usize)| {
            let e = c.metric(f, "fjord_broker_epoch", &[])? as i64;
            (e >= 1).then_some((l, f, e))
        })
        .expect("a registered broker with epoch >= 1");
    let (partition, _) = layout
        .iter()
        .find(|(_, p)| p.leader == leader as i64 && p.replicas.contains(&(follower as i64)))
        .expect("a partition led by the leader and followed by the follower");
    let partition = *partition as i32;
    assert_eq!(
        raw_follower_fetch(
            &c,
            leader,
            (follower as i32, epoch - 1),
            &[partition],
            1 << 20
        )
        .0,
        STALE_BROKER_EPOCH,
        "a follower fetch with an older broker epoch"
    );
    assert_eq!(
        c.metric(leader, "fjord_fetch_stale_broker_epoch_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        raw_follower_fetch(&c, leader, (follower as i32, epoch), &[partition], 1 << 20).0,
        0,
        "a follower fetch with the current broker epoch"
    );

    // 3. The response budget: two partitions led by 1 and followed by 2, one 5 KB batch each,
    // asked for with 1 KB: only the first partition listed may go over, with its one batch.
    let pair: Vec<i32> = layout
        .iter()
        .filter(|(_, p)| p.leader == 1 && p.replicas.contains(&2))
        .map(|(p, _)| *p as i32)
        .take(2)
        .collect();
    for (i, p) in pair.iter().enumerate() {
        let start = (100_000 + i).to_string();
        ck_produce(
            c.node(1),
            TOPIC,
            1,
            &[
                "--partition",
                &p.to_string(),
                "--start-index",
                &start,
                "--value-pad",
                "5000",
            ],
        );
    }
    for order in [[pair[0], pair[1]], [pair[1], pair[0]]] {
        let (error, records) = raw_follower_fetch(&c, 1, (2, epoch), &order, 1000);
        assert_eq!(error, 0);
        let bytes = |p: i32| records.iter().find(|(x, _)| *x == p).map_or(0, |(_, n)| *n);
        assert!(
            bytes(order[0]) > 5000 && bytes(order[1]) == 0,
            "a 1,000-byte follower fetch of {order:?} answered {records:?}"
        );
    }

    // 4. Records acknowledged by all in-sync replicas survive the loss of a leader, and the
    // restarted broker catches up through new sessions.
    let first = ck_produce(c.node(1), TOPIC, 4000, &["--value-pad", "200"]);
    c.kill9(3);
    wait_all(&mut c, "leaders and ISRs without the killed broker", |p| {
        p.leader >= 0 && p.leader != 3 && !p.isr.contains(&3)
    });
    let second = ck_produce(
        c.node(1),
        TOPIC,
        4000,
        &["--start-index", "4000", "--value-pad", "200"],
    );
    c.start_node(3);
    wait_all(&mut c, "the restarted broker back in every ISR", full_isr);
    assert_incremental(&c, &[1, 2, 3], "after the restart");
    let acks: Vec<records::Ack> = first.into_iter().chain(second).collect();
    let dump = ck_consume(c.node(1), TOPIC, acks.len() as u64);
    records::assert_acks_present(&acks, &dump, 200);
    let resets = c
        .metric(1, "fjord_replica_fetch_session_resets_total", &[])
        .unwrap_or(0.0)
        + c.metric(2, "fjord_replica_fetch_session_resets_total", &[])
            .unwrap_or(0.0);
    eprintln!("session resets on the surviving brokers: {resets}");
    c.assert_no_panic_in_logs();
}
