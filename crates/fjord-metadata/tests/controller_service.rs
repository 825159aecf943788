//! Controller services on 127.0.0.1 ephemeral ports, driven through the control RPC as brokers
//! drive them: a [`ControllerClient`] registers brokers, heartbeats and creates topics, follows
//! "not the controller" hints and survives the loss of the active controller; every voter serves
//! the committed metadata log to fetches (records from its window, a snapshot for readers behind
//! it); brokers that stop heartbeating are fenced; garbage on the controller port is harmless.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_metadata::controller::ControllerConfig;
use fjord_metadata::quorum::network::{read_frame, write_frame, Reply, Request};
use fjord_metadata::quorum::{
    raft_config, Committed, ControllerClient, ControllerService, ControllerServiceConfig,
    MetadataChunk, RaftNodeId, SubmitError,
};
use fjord_metadata::{ClusterImage, ControllerReply, ControllerRequest, Endpoint, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(15);
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

type Services = BTreeMap<RaftNodeId, Arc<ControllerService>>;

/// Bind a listener per node first, so the voters map holds real addresses.
async fn bind(
    ids: &[RaftNodeId],
) -> (
    BTreeMap<RaftNodeId, TcpListener>,
    BTreeMap<RaftNodeId, String>,
) {
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in ids {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        voters.insert(*id, l.local_addr().unwrap().to_string());
        listeners.insert(*id, l);
    }
    (listeners, voters)
}

fn config(
    id: RaftNodeId,
    root: &Path,
    voters: &BTreeMap<RaftNodeId, String>,
    session_timeout_ms: i64,
    window_records: usize,
) -> ControllerServiceConfig {
    ControllerServiceConfig {
        controller: ControllerConfig {
            session_timeout_ms,
            ..ControllerConfig::default()
        },
        raft: raft_config(50, 300, 1_000),
        leader_rebalance_interval: None,
        window_records,
        ..ControllerServiceConfig::new(id, root.join(format!("node-{id}")), voters.clone())
    }
}

/// Wait until exactly one service is active and every service names it; returns its id.
async fn active(services: &Services) -> RaftNodeId {
    let start = Instant::now();
    loop {
        let actives: Vec<RaftNodeId> = services
            .iter()
            .filter(|(_, s)| s.is_active())
            .map(|(id, _)| *id)
            .collect();
        if let [a] = actives[..] {
            if services
                .values()
                .all(|s| s.active_controller() == Some(a as i32))
            {
                return a;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no single active controller: {actives:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(client: &ControllerClient, req: ControllerRequest) -> Committed {
    let what = format!("{req:?}");
    client
        .submit(req, SUBMIT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

fn endpoint(node_id: i32) -> Endpoint {
    Endpoint {
        name: "PLAINTEXT".into(),
        host: "127.0.0.1".into(),
        port: 9000 + node_id as u16,
        security_protocol: "PLAINTEXT".into(),
    }
}

/// Register a broker and heartbeat it unfenced; returns (incarnation, broker epoch).
async fn join(client: &ControllerClient, node_id: i32) -> (Uuid, i64) {
    let incarnation_id = Uuid::new_v4();
    let r = submit(
        client,
        ControllerRequest::RegisterBroker {
            node_id,
            incarnation_id,
            rack: Some(format!("rack-{node_id}")),
            endpoints: vec![endpoint(node_id)],
        },
    )
    .await;
    let ControllerReply::Registered { broker_epoch } = r.reply else {
        panic!("{r:?}")
    };
    assert_eq!(
        r.offset,
        broker_epoch + 1,
        "the epoch is the registration's offset"
    );
    let hb = submit(client, heartbeat(node_id, broker_epoch, r.offset - 1)).await;
    assert_eq!(
        hb.reply,
        ControllerReply::Heartbeat {
            is_caught_up: true,
            is_fenced: false
        }
    );
    (incarnation_id, broker_epoch)
}

fn heartbeat(node_id: i32, broker_epoch: i64, applied: i64) -> ControllerRequest {
    ControllerRequest::Heartbeat {
        node_id,
        broker_epoch,
        current_metadata_offset: applied,
        want_fence: false,
    }
}

fn create_topic(name: &str, partitions: u32, replication_factor: u16) -> ControllerRequest {
    ControllerRequest::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
        validate_only: false,
    }
}

/// A client that talks to one voter only.
fn client_of(voters: &BTreeMap<RaftNodeId, String>, id: RaftNodeId) -> ControllerClient {
    ControllerClient::new(BTreeMap::from([(id, voters[&id].clone())]))
}

/// Follow one voter's log from offset 0 to `offset` through the RPC, as a broker does.
async fn follow(client: &ControllerClient, offset: i64) -> ClusterImage {
    let start = Instant::now();
    let mut image = ClusterImage::default();
    let mut at = 0;
    while at < offset {
        assert!(start.elapsed() < DEADLINE, "stuck at {at} of {offset}");
        match client
            .fetch_metadata(at, Duration::from_millis(200))
            .await
            .unwrap()
        {
            MetadataChunk::Records { base, records } => {
                assert_eq!(base, at);
                for r in &records {
                    image.apply(r);
                }
                at += records.len() as i64;
            }
            MetadataChunk::Image { offset, image: i } => {
                image = *i;
                at = offset;
            }
        }
    }
    assert_eq!(at, offset, "read past the committed offset");
    image
}

/// Wait until every service has applied `offset`; their images must then be equal.
async fn converge(services: &Services, offset: i64) -> ClusterImage {
    let start = Instant::now();
    loop {
        let (image, at) = settle(services).await;
        if at == offset {
            return image;
        }
        assert!(at < offset, "applied {at}, past {offset}");
        assert!(start.elapsed() < DEADLINE, "offset {at}, want {offset}");
    }
}

/// Wait until every service has applied the same offset; returns their (equal) image and it.
async fn settle(services: &Services) -> (ClusterImage, i64) {
    let start = Instant::now();
    loop {
        let images: Vec<(ClusterImage, i64)> =
            services.values().map(|s| s.feed().image()).collect();
        if images.iter().all(|(_, o)| *o == images[0].1) {
            for (image, _) in &images[1..] {
                assert_eq!(image, &images[0].0, "voters diverged");
            }
            return images[0].clone();
        }
        let offsets: Vec<i64> = images.iter().map(|(_, o)| *o).collect();
        assert!(start.elapsed() < DEADLINE, "offsets {offsets:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request and its reply on a raw controller connection.
async fn ask(conn: &mut TcpStream, req: Request) -> Reply {
    write_frame(conn, &req).await.unwrap();
    read_frame(conn).await.unwrap().expect("a reply")
}

/// Send raw bytes to the controller port; the server must close that connection.
async fn send_garbage(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "no reply to garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_register_create_topics_and_survive_losing_the_active_controller() {
    let root = tempfile::tempdir().unwrap();
    let (mut listeners, voters) = bind(&[1, 2, 3]).await;
    let cfg = |id| config(id, root.path(), &voters, 30_000, 100_000);

    // Nodes 2 and 3 form the quorum (two of three) and elect one of them; node 1 joins late, so
    // the client's first choice (the lowest id) is not the active controller.
    let mut services = Services::new();
    for id in [2, 3] {
        let l = listeners.remove(&id).unwrap();
        services.insert(id, ControllerService::start(cfg(id), l).await.unwrap());
    }
    let first_active = active(&services).await;
    let l = listeners.remove(&1).unwrap();
    services.insert(1, ControllerService::start(cfg(1), l).await.unwrap());
    assert_eq!(active(&services).await, first_active);

    // A non-active voter answers a control request with a hint.
    let mut raw = TcpStream::connect(&voters[&1]).await.unwrap();
    write_frame(
        &mut raw,
        &Request::Submit(ControllerRequest::ElectPreferredLeaders),
    )
    .await
    .unwrap();
    match read_frame::<_, Reply>(&mut raw).await.unwrap() {
        Some(Reply::Submitted(Err(SubmitError::NotController { leader }))) => {
            assert_eq!(leader, Some(first_active as i32))
        }
        other => panic!("{other:?}"),
    }

    // The client starts at node 1, follows the hint and remembers the active controller.
    let client = ControllerClient::new(voters.clone());
    assert_eq!(client.last_known_controller(), None);
    let mut epochs = BTreeMap::new();
    for node_id in 1..=3 {
        epochs.insert(node_id, join(&client, node_id).await);
    }
    assert_eq!(client.last_known_controller(), Some(first_active as i32));

    let created = submit(&client, create_topic("orders", 3, 3)).await;
    let ControllerReply::TopicCreated { assignments, .. } = &created.reply else {
        panic!("{created:?}")
    };
    assert_eq!(assignments.len(), 3);
    for replicas in assignments {
        let mut r = replicas.clone();
        r.sort();
        assert_eq!(r, vec![1, 2, 3]);
    }
    let refused = client
        .submit(create_topic("orders", 1, 1), SUBMIT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SubmitError::Refused { code: 36, .. }),
        "{refused:?}"
    );

    // Every voter serves the same committed log, and it rebuilds the voters' image.
    let image = converge(&services, created.offset).await;
    assert_eq!(image.topic("orders").unwrap().partitions, 3);
    for id in services.keys() {
        let followed = follow(&client_of(&voters, *id), created.offset).await;
        assert_eq!(followed, image, "log of node {id}");
    }

    // The status comes from the active controller, with what heartbeats reported.
    let status = client.status(SUBMIT_TIMEOUT).await.unwrap();
    assert_eq!(status.active_controller, Some(first_active as i32));
    assert_eq!(status.voters.len(), 3);
    for v in &status.voters {
        assert_eq!(v.is_active, v.node_id == first_active as i32);
        assert!(v.applied_log_index.is_some(), "{v:?}");
        assert_eq!(v.addr, voters[&(v.node_id as u64)]);
    }
    assert_eq!(status.brokers.len(), 3);
    for b in &status.brokers {
        let (incarnation, epoch) = epochs[&b.node_id];
        assert_eq!((b.broker_epoch, b.incarnation_id), (epoch, incarnation));
        assert!(!b.fenced && !b.cordoned);
        assert_eq!(b.endpoints, vec![endpoint(b.node_id)]);
        assert!(b.metadata_offset.is_some_and(|o| o >= epoch), "{b:?}");
        assert!(b.ms_since_heartbeat.is_some(), "{b:?}");
    }

    // Garbage on the controller port closes that connection only.
    send_garbage(&voters[&first_active], b"GET / HTTP/1.1\r\n\r\n").await;
    send_garbage(&voters[&first_active], b"\0\0\0\x05hello").await;
    submit(&client, create_topic("after-garbage", 1, 3)).await;

    // Stop the active controller: another becomes active and the client finds it.
    let stopped = services.remove(&first_active).unwrap();
    stopped.shutdown().await;
    let stop_time = Instant::now();
    let new_active = active(&services).await;
    assert_ne!(new_active, first_active);
    assert!(stop_time.elapsed() < Duration::from_secs(5));
    let after = submit(&client, create_topic("after-failover", 3, 3)).await;
    assert!(matches!(after.reply, ControllerReply::TopicCreated { .. }));
    assert_eq!(client.last_known_controller(), Some(new_active as i32));
    let image = converge(&services, after.offset).await;
    assert_eq!(image.topic_count(), 3);

    // Broker 1 registers again (same incarnation, a restart): its old epoch is now stale.
    let (incarnation, old_epoch) = epochs[&1];
    let r = submit(
        &client,
        ControllerRequest::RegisterBroker {
            node_id: 1,
            incarnation_id: incarnation,
            rack: Some("rack-1".into()),
            endpoints: vec![endpoint(1)],
        },
    )
    .await;
    let ControllerReply::Registered { broker_epoch } = r.reply else {
        panic!("{r:?}")
    };
    assert!(broker_epoch > old_epoch);
    let stale = client
        .submit(heartbeat(1, old_epoch, r.offset), SUBMIT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, SubmitError::Refused { code: 77, .. }),
        "{stale:?}"
    );

    for s in services.values() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_brokers_are_fenced_and_readers_behind_the_window_get_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let (listeners, voters) = bind(&[1, 2, 3]).await;
    let mut services = Services::new();
    for (id, l) in listeners {
        // Images go out in parts of one record each: readers behind the window assemble them.
        let cfg = ControllerServiceConfig {
            image_part_bytes: 64,
            ..config(id, root.path(), &voters, 1_000, 4)
        };
        services.insert(id, ControllerService::start(cfg, l).await.unwrap());
    }
    active(&services).await;
    let client = ControllerClient::new(voters.clone());
    let (_, epoch1) = join(&client, 1).await;
    join(&client, 2).await;
    let silent_since = Instant::now();

    // Broker 1 keeps heartbeating; broker 2 goes silent.
    let beating = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                let _ = client
                    .submit(heartbeat(1, epoch1, i64::MAX), Duration::from_secs(1))
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let fenced = |s: &ControllerService, id| s.feed().image().0.broker(id).unwrap().fenced;
    loop {
        let a = services[&active(&services).await].clone();
        if fenced(&a, 2) && !fenced(&a, 1) {
            break;
        }
        assert!(
            silent_since.elapsed() < DEADLINE,
            "broker 2 not fenced (or broker 1 fenced)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        silent_since.elapsed() >= Duration::from_millis(900),
        "fenced before its session expired"
    );
    // The active controller knows when each broker last heartbeated (after a change of
    // controller, once broker 1 heartbeats again).
    loop {
        let status = client.status(SUBMIT_TIMEOUT).await.unwrap();
        let broker = |id| status.brokers.iter().find(|b| b.node_id == id).unwrap();
        assert!(broker(2).fenced);
        assert!(broker(2).ms_since_heartbeat.is_none_or(|ms| ms >= 1_000));
        if !broker(1).fenced && broker(1).ms_since_heartbeat.is_some_and(|ms| ms < 1_000) {
            break;
        }
        assert!(silent_since.elapsed() < DEADLINE, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each voter keeps 4 records: a reader at 0 gets the image as a snapshot, a recent reader
    // gets records. (Retried if a change of controller under load wrote records meanwhile.)
    let offset = 'check: loop {
        assert!(silent_since.elapsed() < DEADLINE, "voters never settled");
        let (image, offset) = settle(&services).await;
        assert!(offset > 4);
        for id in services.keys() {
            let one = client_of(&voters, *id);
            let MetadataChunk::Image {
                offset: o,
                image: got,
            } = one.fetch_metadata(0, Duration::ZERO).await.unwrap()
            else {
                panic!("node {id}: no image for a reader behind the window")
            };
            let recent = one
                .fetch_metadata(offset - 2, Duration::ZERO)
                .await
                .unwrap();
            if o != offset || recent.next_offset() != offset {
                continue 'check;
            }
            assert_eq!(*got, image, "node {id}");
            let MetadataChunk::Records { base, records } = recent else {
                panic!("node {id}: {recent:?}")
            };
            assert_eq!((base, records.len()), (offset - 2, 2));
        }
        break offset;
    };

    // On the wire: the first part answers the fetch, the others are asked for by the image's
    // offset; an image the voter no longer holds is `None`, not an error. (Asked again if new
    // records pushed the image out of the window meanwhile.)
    let mut conn = TcpStream::connect(&voters[&1]).await.unwrap();
    loop {
        assert!(
            silent_since.elapsed() < DEADLINE,
            "no whole image on the wire"
        );
        let req = Request::FetchMetadata {
            from: 0,
            max_wait_ms: 0,
        };
        let Reply::ImagePart(Some(first)) = ask(&mut conn, req).await else {
            panic!("no image part for a reader behind the window")
        };
        assert!(first.parts > 1 && first.part == 0, "{first:?}");
        let gone = Request::FetchImagePart {
            offset: first.offset + 1_000,
            part: 1,
        };
        assert!(matches!(ask(&mut conn, gone).await, Reply::ImagePart(None)));
        let (offset, part) = (first.offset, first.parts - 1);
        match ask(&mut conn, Request::FetchImagePart { offset, part }).await {
            Reply::ImagePart(Some(p)) => {
                assert_eq!((p.offset, p.part, p.parts), (offset, part, first.parts));
                break;
            }
            Reply::ImagePart(None) => continue,
            _ => panic!("part {part} of the image at {offset}"),
        }
    }

    // A long poll at the end of a follower's log returns empty when nothing is committed, and
    // wakes up when a record is.
    let follower = *services
        .keys()
        .find(|id| !services[*id].is_active())
        .unwrap();
    let one = client_of(&voters, follower);
    let quiet = Instant::now();
    let chunk = one
        .fetch_metadata(offset, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(chunk.next_offset(), offset, "{chunk:?}");
    assert!(quiet.elapsed() >= Duration::from_millis(250));
    let poll =
        tokio::spawn(async move { one.fetch_metadata(offset, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let woke = Instant::now();
    submit(&client, create_topic("late", 1, 1)).await;
    match poll.await.unwrap().unwrap() {
        MetadataChunk::Records { base, records } => {
            assert_eq!(base, offset);
            assert!(!records.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(woke.elapsed() < Duration::from_secs(5));

    beating.abort();
    for s in services.values() {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_single_controller_keeps_its_metadata() {
    let root = tempfile::tempdir().unwrap();
    let (mut listeners, voters) = bind(&[7]).await;
    let addr = voters[&7].clone();
    let cfg = || config(7, root.path(), &voters, 30_000, 100);
    let service = ControllerService::start(cfg(), listeners.remove(&7).unwrap())
        .await
        .unwrap();
    let client = ControllerClient::new(voters.clone());
    let (_, epoch) = join(&client, 1).await;
    let created = submit(&client, create_topic("kept", 2, 1)).await;
    service.shutdown().await;
    drop(service);

    // Same directory, same address: `initialize` is refused (already formed) and ignored.
    let listener = TcpListener::bind(&addr).await.unwrap();
    let service = ControllerService::start(cfg(), listener).await.unwrap();
    let start = Instant::now();
    while service.feed().offset() < created.offset {
        assert!(start.elapsed() < DEADLINE, "log not replayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.feed().image().0.topic("kept").is_some());
    let hb = submit(&client, heartbeat(1, epoch, created.offset)).await;
    assert!(matches!(hb.reply, ControllerReply::Heartbeat { .. }));
    submit(&client, create_topic("new", 1, 1)).await;
    service.shutdown().await;
}
