//! A 3-controller quorum in one process on 127.0.0.1 ephemeral ports: form it, write controller
//! batches, stop the leader, elect a new one, keep writing, restart the old leader from its
//! directory, and check that every node converges on the same image. Snapshots are taken every
//! few entries so restart and catch-up go through snapshot load and install as well as the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fjord_metadata::controller::{
    BrokerHeartbeat, BrokerRegistration, Controller, ControllerConfig, CreateTopic,
};
use fjord_metadata::quorum::{raft_config, LogBounds, QuorumError, QuorumNode, RaftNodeId};
use fjord_metadata::{MetadataRecord, Uuid};
use tokio::net::TcpListener;

/// A bound for waits on conditions (elections, replication, snapshots): generous, as a loaded
/// 2-core CI machine with slow fsyncs can take seconds per step.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start(id: RaftNodeId, dir: PathBuf, addr: SocketAddr) -> QuorumNode {
    let listener = TcpListener::bind(addr).await.unwrap();
    QuorumNode::start(id, &dir, listener, snapshot_every_4())
        .await
        .unwrap()
}

/// A snapshot every 4 entries and no log kept behind it, so catching up goes through
/// installing a snapshot too.
fn snapshot_every_4() -> std::sync::Arc<openraft::Config> {
    let mut c = (*raft_config(50, 500, 4)).clone();
    c.max_in_snapshot_log_to_keep = 0;
    std::sync::Arc::new(c)
}

/// Wait until every node agrees on one leader among them; returns it.
async fn leader(nodes: &[QuorumNode]) -> RaftNodeId {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push(n.current_leader().await);
        }
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) && nodes.iter().any(|n| n.node_id() == *l) {
                return *l;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no leader elected: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write through whichever node leads, retrying while an election is under way.
async fn write(nodes: &[QuorumNode], records: Vec<MetadataRecord>) {
    let start = Instant::now();
    loop {
        let l = leader(nodes).await;
        let node = nodes.iter().find(|n| n.node_id() == l).unwrap();
        match node.write(records.clone()).await {
            Ok(applied) => {
                assert_eq!(applied.rejected, 0);
                return;
            }
            Err(QuorumError::NotLeader { .. }) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

async fn converge(nodes: &[QuorumNode], offset: i64) {
    let start = Instant::now();
    while !nodes.iter().all(|n| n.applied_offset() == offset) {
        let offsets: Vec<_> = nodes.iter().map(|n| n.applied_offset()).collect();
        assert!(
            start.elapsed() < DEADLINE,
            "offsets {offsets:?}, want {offset}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = nodes[0].image();
    for n in &nodes[1..] {
        assert_eq!(n.image(), first, "node {} diverged", n.node_id());
    }
}

fn create(c: &mut Controller, name: &str) -> Vec<MetadataRecord> {
    let req = CreateTopic {
        name: name.into(),
        partitions: 3,
        replication_factor: 3,
        configs: BTreeMap::new(),
    };
    c.create_topic(req, Uuid::new_v4()).unwrap().records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_survive_losing_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut addrs = BTreeMap::new();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, listener.local_addr().unwrap());
        let dir = root.path().join(format!("node-{id}"));
        nodes.push(
            QuorumNode::start(id, &dir, listener, snapshot_every_4())
                .await
                .unwrap(),
        );
    }
    nodes[0].initialize(&addrs).await.unwrap();

    // The controller state machine generates real batches; each is one Raft entry.
    let mut c = Controller::new(ControllerConfig::default());
    for id in 1..=3 {
        let r = c
            .register_broker(
                BrokerRegistration {
                    node_id: id,
                    incarnation_id: Uuid::new_v4(),
                    rack: Some(["a", "b", "c"][id as usize - 1].into()),
                    endpoints: vec![],
                },
                0,
            )
            .unwrap();
        write(&nodes, r.records).await;
        let hb = BrokerHeartbeat {
            node_id: id,
            broker_epoch: r.response,
            current_metadata_offset: c.next_offset() - 1,
            want_fence: false,
        };
        write(&nodes, c.heartbeat(hb, 0).unwrap().records).await;
    }
    write(&nodes, create(&mut c, "before")).await;
    converge(&nodes, c.next_offset()).await;
    assert_eq!(&nodes[0].image(), c.image());

    // Stop the leader; the other two elect a new one and keep taking writes.
    let old = leader(&nodes).await;
    let idx = nodes.iter().position(|n| n.node_id() == old).unwrap();
    let stopped = nodes.remove(idx);
    stopped.shutdown().await;
    let new = leader(&nodes).await;
    assert_ne!(new, old);
    // The new active controller starts from the image its state machine built.
    let node = nodes.iter().find(|n| n.node_id() == new).unwrap();
    let (image, offset) = (node.image(), node.applied_offset());
    assert_eq!((&image, offset), (c.image(), c.next_offset()));
    c = Controller::from_image(*c.config(), image, offset);
    c.activate(0);
    for i in 0..5 {
        write(&nodes, create(&mut c, &format!("after-{i}"))).await;
    }
    converge(&nodes, c.next_offset()).await;

    // The old leader comes back from its directory and catches up.
    let dir = root.path().join(format!("node-{old}"));
    nodes.push(start(old, dir, addrs[&old]).await);
    converge(&nodes, c.next_offset()).await;
    assert_eq!(&nodes[0].image(), c.image());
    let topics: Vec<String> = nodes[0].image().topics().map(|t| t.name.clone()).collect();
    assert_eq!(topics.len(), 6, "{topics:?}");
    // Snapshots were taken (every 4 entries) and the log was purged behind them.
    for id in 1..=3 {
        let dir = root.path().join(format!("node-{id}"));
        assert!(
            dir.join("snapshot.json").exists(),
            "node {id} has no snapshot"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// A new leader probes each follower from the middle of its log, and openraft gives an
/// AppendEntries one heartbeat interval. With big entries (a CreateTopic of 1,000 partitions is
/// ~200 KB) and openraft's default of 300 entries per request, the probe never finished in time
/// and a failover never committed anything (the control-plane scale bench found it at 300k
/// replicas). Here: 120 entries of ~150 KB, the leader stopped, and the survivors must commit a
/// write within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_commits_with_big_entries_in_the_log() {
    let root = tempfile::tempdir().unwrap();
    let mut addrs = BTreeMap::new();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, listener.local_addr().unwrap());
        let dir = root.path().join(format!("node-{id}"));
        // No snapshot during the test: the new leader must replicate from its log.
        nodes.push(
            QuorumNode::start(id, &dir, listener, raft_config(50, 500, 100_000))
                .await
                .unwrap(),
        );
    }
    nodes[0].initialize(&addrs).await.unwrap();
    let mut next = 0i64;
    let mut big = || {
        (0..5_000)
            .map(|_| {
                next += 1;
                MetadataRecord::ProducerIds { next }
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..120 {
        write(&nodes, big()).await;
    }
    let old = leader(&nodes).await;
    let idx = nodes.iter().position(|n| n.node_id() == old).unwrap();
    nodes.remove(idx).shutdown().await;
    let committed = tokio::time::timeout(DEADLINE, write(&nodes, big())).await;
    assert!(
        committed.is_ok(),
        "no write committed within {DEADLINE:?} after the leader stopped"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// openraft snapshots every N entries, and one entry is a whole controller batch, so a log of
/// few big entries (1M replicas created 1,000 partitions at a time: ~700 entries, 58 MiB) was
/// never snapshotted. With `bound_log`, every node snapshots once the log applied since its
/// last snapshot passes the limit, and cuts the log it keeps behind the snapshot (openraft
/// keeps 1,000 entries, hundreds of MiB of such batches) to the retention bytes; a restarted
/// node loads the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_by_bytes_with_few_big_entries() {
    const MAX_BYTES: u64 = 64 * 1024;
    const RETAIN_BYTES: u64 = 40 * 1024;
    let root = tempfile::tempdir().unwrap();
    let mut addrs = BTreeMap::new();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, listener.local_addr().unwrap());
        let dir = root.path().join(format!("node-{id}"));
        // Never by entries within this test.
        let node = QuorumNode::start(id, &dir, listener, raft_config(50, 500, 100_000))
            .await
            .unwrap();
        node.bound_log(LogBounds {
            snapshot_every_bytes: MAX_BYTES,
            retain_bytes: Some(RETAIN_BYTES),
        });
        nodes.push(node);
    }
    nodes[0].initialize(&addrs).await.unwrap();
    let mut next = 0i64;
    let batch = |next: &mut i64| {
        (0..1_000)
            .map(|_| {
                *next += 1;
                MetadataRecord::ProducerIds { next: *next }
            })
            .collect::<Vec<_>>()
    };
    // One entry (~30 KB) stays under the limit: no snapshot.
    write(&nodes, batch(&mut next)).await;
    converge(&nodes, next).await;
    for n in &nodes {
        let bytes = n.log_bytes_since_snapshot();
        assert!(bytes > 10_000 && bytes < MAX_BYTES, "{bytes} bytes");
    }
    // A few more pass it: every node snapshots and purges.
    for _ in 0..4 {
        write(&nodes, batch(&mut next)).await;
    }
    converge(&nodes, next).await;
    let waited = Instant::now();
    loop {
        let pending: Vec<(RaftNodeId, u64)> = nodes
            .iter()
            .map(|n| (n.node_id(), n.log_bytes_since_snapshot()))
            .filter(|(id, bytes)| {
                *bytes >= MAX_BYTES
                    || nodes[*id as usize - 1].log_bytes_behind_snapshot() > RETAIN_BYTES
                    || !root
                        .path()
                        .join(format!("node-{id}/snapshot.json"))
                        .exists()
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            waited.elapsed() < DEADLINE,
            "no snapshot by bytes, or log behind it over the retention, on (node, log bytes since it): {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A restarted follower comes back from its snapshot with the same image.
    let l = leader(&nodes).await;
    let idx = nodes.iter().position(|n| n.node_id() != l).unwrap();
    let stopped = nodes.remove(idx);
    let id = stopped.node_id();
    stopped.shutdown().await;
    let dir = root.path().join(format!("node-{id}"));
    nodes.push(start(id, dir, addrs[&id]).await);
    converge(&nodes, next).await;
    for n in nodes {
        n.shutdown().await;
    }
}
