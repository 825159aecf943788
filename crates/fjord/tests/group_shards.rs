//! The group coordinator is sharded per `__consumer_offsets` partition: while one group's
//! commits wait on a slow disk (every fsync sleeps, `flush.messages=1`), a group on another
//! partition is answered at once. With one coordinator lock held across the append, the other
//! group waited for the slow fsync too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::FjordProcess;
use fjord_client::{Client, Connection};
use kafka_protocol::messages::{
    offset_commit_request, offset_fetch_request, GroupId, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

const FSYNC_DELAY: Duration = Duration::from_millis(400);
const OFFSETS_PARTITIONS: i32 = 4;

/// Commit `offset` for partition 0 of topic `t` as a standalone (member-less) commit.
async fn commit(conn: &Connection, group: &str, offset: i64) -> Duration {
    let started = Instant::now();
    let resp = conn
        .send(
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.into())))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1),
                        ]),
                ]),
        )
        .await
        .expect("OffsetCommit");
    let code = resp.topics[0].partitions[0].error_code;
    assert_eq!(code, 0, "OffsetCommit of {group} failed with {code}");
    started.elapsed()
}

/// The committed offset of partition 0 of `t`, and how long the answer took.
async fn fetch(conn: &Connection, group: &str) -> (i64, Duration) {
    let started = Instant::now();
    let resp = conn
        .send(&OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.into())))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partition_indexes(vec![0]),
                    ])),
            ]))
        .await
        .expect("OffsetFetch");
    let elapsed = started.elapsed();
    let g = &resp.groups[0];
    assert_eq!(g.error_code, 0, "OffsetFetch of {group}");
    let offset = g
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.committed_offset);
    (offset, elapsed)
}

#[test]
fn a_group_on_another_offsets_partition_is_answered_while_one_partitions_appends_are_slow() {
    let delay_ms = FSYNC_DELAY.as_millis().to_string();
    let partitions = OFFSETS_PARTITIONS.to_string();
    let broker = FjordProcess::start_with_env(
        &[
            "--set",
            "log.flush.interval.messages=1",
            "--set",
            &format!("offsets.topic.num.partitions={partitions}"),
        ],
        &[("FJORD_DEBUG_FSYNC_DELAY_MS", &delay_ms)],
    );
    broker.create_topic("t", 1, &[]);
    let slow = "slow-group";
    let fast = (0..)
        .map(|i| format!("fast-group-{i}"))
        .find(|g| {
            fjord_group::offsets_partition(g, OFFSETS_PARTITIONS)
                != fjord_group::offsets_partition(slow, OFFSETS_PARTITIONS)
        })
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // One client (so one connection) per workload: a connection answers in order.
        let connect = || async {
            let client = Client::connect(broker.bootstrap()).await.expect("connect");
            // FindCoordinator creates __consumer_offsets on first use.
            let conn = client.group_coordinator(slow).await.expect("coordinator");
            (client, conn)
        };
        let (_fast_client, fast_conn) = connect().await;
        // Both shards have their group before the measurement.
        commit(&fast_conn, &fast, 1).await;
        let first = commit(&fast_conn, slow, 1).await;
        assert!(
            first >= FSYNC_DELAY,
            "a commit took {first:?}: the fsync delay of {FSYNC_DELAY:?} is not in effect"
        );

        // Four connections keep the slow group's partition appending (each commit waits for
        // a slow fsync).
        let stop = Arc::new(AtomicBool::new(false));
        let slow_commits = Arc::new(AtomicU64::new(0));
        let mut committers = Vec::new();
        for _ in 0..4 {
            let (client, conn) = connect().await;
            let (stop, slow_commits) = (stop.clone(), slow_commits.clone());
            committers.push(tokio::spawn(async move {
                let _client = client;
                let mut offset = 2;
                while !stop.load(Ordering::Relaxed) {
                    commit(&conn, slow, offset).await;
                    slow_commits.fetch_add(1, Ordering::Relaxed);
                    offset += 1;
                }
            }));
        }
        // Wait until the slow group's appends are under way.
        let deadline = Instant::now() + Duration::from_secs(30);
        while slow_commits.load(Ordering::Relaxed) < 4 {
            assert!(Instant::now() < deadline, "the slow group's commits made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The other group's reads never wait for the slow partition's fsyncs, and its own
        // commits keep going.
        let mut fetches = Vec::new();
        let mut fast_commits = Vec::new();
        for i in 0..20 {
            let (offset, took) = fetch(&fast_conn, &fast).await;
            assert_eq!(offset, 1 + i / 4, "{fast}'s committed offset");
            fetches.push(took);
            if i % 4 == 3 {
                fast_commits.push(commit(&fast_conn, &fast, 2 + i / 4).await);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for c in committers {
            c.await.unwrap();
        }
        let slowest = fetches.iter().max().unwrap();
        eprintln!(
            "{fast} OffsetFetch latencies {fetches:?}, commits {fast_commits:?}; {slow} commits: {}",
            slow_commits.load(Ordering::Relaxed)
        );
        assert!(
            *slowest < FSYNC_DELAY / 2,
            "an OffsetFetch of {fast} took {slowest:?} while {slow}'s appends waited on {FSYNC_DELAY:?} fsyncs: the groups are not independent"
        );
    });
    broker.assert_no_panic_in_log();
}
