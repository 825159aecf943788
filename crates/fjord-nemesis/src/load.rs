//! The load during the faults, over `fjord-client` connections: idempotent acks=all producers
//! of unique sequence-numbered values, consumers of one group committing offsets, admin
//! create/delete of topics, and samplers of every node's Metadata and the group's committed
//! offsets. Every request is one [`crate::history::Op`] with its outcome.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::{
    create_topics_request, Client, ClientConfig, Connection, ConnectionConfig, Error, FetchOptions,
    NewTopic, ProduceRecord,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    offset_commit_request, offset_fetch_request, ApiKey, DeleteTopicsRequest,
    FindCoordinatorRequest, GroupId, InitProducerIdRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::history::{CommitSample, History, MetaSample, OpKind, Outcome};

/// How long a broker may take to answer (the produce and admin `timeout_ms`).
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for an answer beyond [`BROKER_TIMEOUT`] before it calls the request
/// unanswered.
pub const CLIENT_GRACE: Duration = Duration::from_secs(10);
/// How long a producer retries one batch (same sequence numbers) before it gives up on it.
const BATCH_DEADLINE: Duration = Duration::from_secs(25);

const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// What every load task shares.
#[derive(Clone)]
pub struct Env {
    pub history: History,
    /// Kafka `host:port` of node N at index N-1 (node ids are 1..).
    pub nodes: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    pub stop: Arc<AtomicBool>,
    /// A prefix for names that must be unique per run (admin topics).
    pub run_tag: String,
}

impl Env {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Record error `e` as the outcome of `op`; a broken connection to `node` is dropped so
    /// the next request opens a new one.
    fn failed(&self, op: u64, conns: &mut Conns, node: usize, e: &Error) {
        self.history.finish(op, outcome_of(e));
        if !matches!(e, Error::Kafka { .. }) {
            conns.forget(node);
        }
    }

    /// The node whose Kafka listener is `addr`.
    pub fn node_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|a| a == addr).map(|i| i + 1)
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn conn_config(client: &str) -> ConnectionConfig {
    ConnectionConfig {
        client_id: format!("fjord-nemesis-{client}"),
        request_timeout: BROKER_TIMEOUT + CLIENT_GRACE,
        connect_timeout: Duration::from_secs(3),
        ..ConnectionConfig::default()
    }
}

/// The outcome a client error stands for.
pub fn outcome_of(e: &Error) -> Outcome {
    match e {
        Error::Kafka { code, .. } => Outcome::Error {
            code: Some(*code),
            message: e.to_string(),
        },
        Error::Timeout { .. } => Outcome::Timeout,
        Error::Io { .. } | Error::Disconnected { .. } | Error::Connect { .. } => {
            Outcome::Disconnected {
                message: e.to_string(),
            }
        }
        _ => Outcome::Error {
            code: None,
            message: e.to_string(),
        },
    }
}

/// One connection per node, reopened after a failure.
pub(crate) struct Conns {
    client: String,
    map: HashMap<usize, Arc<Connection>>,
}

impl Conns {
    pub(crate) fn new(client: &str) -> Conns {
        Conns {
            client: client.to_string(),
            map: HashMap::new(),
        }
    }

    pub(crate) async fn get(&mut self, env: &Env, node: usize) -> Result<Arc<Connection>, Error> {
        if let Some(c) = self.map.get(&node) {
            return Ok(c.clone());
        }
        let c =
            Arc::new(Connection::connect(&env.nodes[node - 1], conn_config(&self.client)).await?);
        self.map.insert(node, c.clone());
        Ok(c)
    }

    pub(crate) fn forget(&mut self, node: usize) {
        self.map.remove(&node);
    }
}

/// A partition as one node's Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Metadata of `topic` from one connection: the topic id and its partitions.
pub(crate) async fn topic_metadata(
    conn: &Connection,
    topic: &str,
) -> Result<(Uuid, Vec<PartitionView>), Error> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(sb(topic))))
        ]))
        .with_allow_auto_topic_creation(false);
    let resp = conn.send_with_timeout(&req, BROKER_TIMEOUT).await?;
    let t = resp
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| Error::Protocol(format!("no metadata for {topic}")))?;
    if t.error_code != 0 {
        return Err(Error::kafka(
            t.error_code,
            format!("metadata of {topic}"),
            None,
        ));
    }
    let mut parts: Vec<PartitionView> = t
        .partitions
        .into_iter()
        .map(|p| PartitionView {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
        })
        .collect();
    parts.sort_by_key(|p| p.partition);
    Ok((t.topic_id, parts))
}

/// Every node's view of `topic` (None for a node that did not answer).
pub async fn views(env: &Env, topic: &str) -> Vec<Option<Vec<PartitionView>>> {
    let mut out = Vec::new();
    for addr in &env.nodes {
        let one = async {
            let conn = Connection::connect(addr, conn_config("probe")).await?;
            topic_metadata(&conn, topic).await
        };
        out.push(
            tokio::time::timeout(BROKER_TIMEOUT, one)
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|(_, p)| p),
        );
    }
    out
}

/// Whether every node answers and agrees that every partition of `topic` has a leader and a
/// full ISR; the reason when not.
pub async fn converged(env: &Env, topic: &str, rf: usize) -> Result<(), String> {
    let views = views(env, topic).await;
    let mut first: Option<&Vec<PartitionView>> = None;
    for (i, v) in views.iter().enumerate() {
        let Some(v) = v else {
            return Err(format!("node {} does not answer Metadata", i + 1));
        };
        if v.len() != env.partitions as usize {
            return Err(format!("node {} knows {} partitions", i + 1, v.len()));
        }
        for p in v {
            if p.leader < 0 {
                return Err(format!(
                    "node {}: partition {} has no leader",
                    i + 1,
                    p.partition
                ));
            }
            if p.isr.len() < rf || p.replicas.len() < rf {
                return Err(format!(
                    "node {}: partition {} isr {:?} of replicas {:?}",
                    i + 1,
                    p.partition,
                    p.isr,
                    p.replicas
                ));
            }
        }
        match first {
            None => first = Some(v),
            Some(f) => {
                for (a, b) in f.iter().zip(v) {
                    if (a.leader, a.leader_epoch) != (b.leader, b.leader_epoch) {
                        return Err(format!(
                            "nodes disagree on partition {}: leader {} epoch {} vs leader {} epoch {}",
                            a.partition, a.leader, a.leader_epoch, b.leader, b.leader_epoch
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The active controller as the nodes report it (Metadata `controller_id`), if they agree.
pub async fn controller(env: &Env) -> Option<usize> {
    let mut seen = BTreeMap::new();
    for addr in &env.nodes {
        let one = async {
            let conn = Connection::connect(addr, conn_config("probe")).await?;
            let r = conn
                .send_with_timeout(
                    &MetadataRequest::default().with_topics(Some(vec![])),
                    BROKER_TIMEOUT,
                )
                .await?;
            Ok::<i32, Error>(r.controller_id.0)
        };
        if let Ok(Ok(c)) = tokio::time::timeout(BROKER_TIMEOUT, one).await {
            if c > 0 {
                *seen.entry(c).or_insert(0) += 1;
            }
        }
    }
    seen.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c as usize)
}

/// CreateTopics to node `node`: Ok, or the error (TOPIC_ALREADY_EXISTS counts as Ok when
/// `exists_ok`).
async fn create_topic(
    conn: &Connection,
    topic: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
    exists_ok: bool,
) -> Result<(), Error> {
    let resp = conn
        .send_with_timeout(
            &create_topics_request(
                &NewTopic {
                    name: topic.to_string(),
                    partitions,
                    replication_factor: rf,
                    configs: configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
                BROKER_TIMEOUT.as_millis() as i32,
                false,
            ),
            BROKER_TIMEOUT + CLIENT_GRACE,
        )
        .await?;
    let r = resp
        .topics
        .first()
        .ok_or_else(|| Error::Protocol("empty CreateTopics answer".into()))?;
    if r.error_code == 0 || (exists_ok && r.error_code == TOPIC_ALREADY_EXISTS) {
        return Ok(());
    }
    Err(Error::kafka(
        r.error_code,
        format!("create {topic}"),
        r.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// Create the load's topic (retrying across nodes until `deadline`).
pub async fn create_main_topic(env: &Env, deadline: Duration) -> anyhow::Result<()> {
    create_topic_retrying(env, &env.topic, deadline).await
}

/// Create `topic` like the load's topic (its partitions, RF 3, `min.insync.replicas=2`),
/// retrying across nodes until `deadline`.
pub async fn create_topic_retrying(
    env: &Env,
    topic: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    let mut last = String::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let node = n % env.nodes.len() + 1;
        let r = async {
            let conn = Connection::connect(&env.nodes[node - 1], conn_config("setup")).await?;
            create_topic(
                &conn,
                topic,
                env.partitions,
                3,
                &[("min.insync.replicas", "2")],
                true,
            )
            .await
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("node {node}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("creating topic {topic}: {last}")
}

fn encode_batch(values: &[String], producer: (i64, i16), base_sequence: i32) -> Bytes {
    let records: Vec<ProduceRecord> = values
        .iter()
        .map(|v| ProduceRecord::new(None::<Bytes>, Bytes::from(v.clone())))
        .collect();
    Client::encode_idempotent_batch(
        &records,
        Compression::None,
        Some((producer.0, producer.1, base_sequence)),
    )
    .expect("encoding a record batch")
}

/// An idempotent acks=all producer: batches of `batch` unique values round-robin over the
/// partitions (`pause` between batches), one batch in flight, each retried with its sequence numbers until answered
/// (or given up after [`BATCH_DEADLINE`], when the producer takes a new producer id).
pub async fn producer(env: Env, index: usize, batch: usize, pause: Duration, seed: u64) {
    let name = format!("producer-{index}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Conns::new(&name);
    let mut counter = 0u64;
    let mut pid: Option<(i64, i16)> = None;
    let mut seqs: HashMap<i32, i32> = HashMap::new();
    let mut leaders: HashMap<i32, usize> = HashMap::new();
    let mut topic_id = Uuid::nil();
    let mut partition = index as i32 % env.partitions;
    while !env.stopped() {
        // A producer id first.
        let Some(producer_id) = pid else {
            let node = rng.gen_range(1..=env.nodes.len());
            let op = env.history.begin(&name, OpKind::InitProducer, Some(node));
            let r = async {
                let conn = conns.get(&env, node).await?;
                let req = InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
                let resp = conn
                    .send_with_timeout(&req, BROKER_TIMEOUT + CLIENT_GRACE)
                    .await?;
                if resp.error_code != 0 {
                    return Err(Error::kafka(resp.error_code, "InitProducerId", None));
                }
                Ok((resp.producer_id.0, resp.producer_epoch))
            }
            .await;
            match r {
                Ok(p) => {
                    env.history.finish(op, Outcome::Ok { offset: None });
                    pid = Some(p);
                    seqs.clear();
                }
                Err(e) => {
                    env.failed(op, &mut conns, node, &e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        partition = (partition + 1) % env.partitions;
        let values: Vec<String> = (0..batch)
            .map(|_| {
                counter += 1;
                format!("p{index}-{counter}")
            })
            .collect();
        let base_sequence = *seqs.get(&partition).unwrap_or(&0);
        let records = encode_batch(&values, producer_id, base_sequence);
        let started = Instant::now();
        loop {
            if started.elapsed() > BATCH_DEADLINE {
                // The batch's fate is unknown; a new producer id makes the next ones safe.
                pid = None;
                break;
            }
            let leader = match leaders.get(&partition) {
                Some(l) => *l,
                None => {
                    let node = rng.gen_range(1..=env.nodes.len());
                    let meta = async {
                        let conn = conns.get(&env, node).await?;
                        topic_metadata(&conn, &env.topic).await
                    }
                    .await;
                    match meta {
                        Ok((id, parts)) => {
                            topic_id = id;
                            for p in parts {
                                if p.leader > 0 {
                                    leaders.insert(p.partition, p.leader as usize);
                                }
                            }
                        }
                        Err(_) => conns.forget(node),
                    }
                    if !leaders.contains_key(&partition) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            };
            let op = env.history.begin(
                &name,
                OpKind::Produce {
                    partition,
                    values: values.clone(),
                },
                Some(leader),
            );
            let r = async {
                let conn = conns.get(&env, leader).await?;
                let req = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(BROKER_TIMEOUT.as_millis() as i32)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(sb(&env.topic)))
                        .with_topic_id(topic_id)
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records.clone()))])]);
                let resp = conn
                    .send_with_timeout(&req, BROKER_TIMEOUT + CLIENT_GRACE)
                    .await?;
                let p = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == partition)
                    .ok_or_else(|| Error::Protocol("no partition in Produce answer".into()))?;
                if p.error_code != 0 {
                    return Err(Error::kafka(
                        p.error_code,
                        format!("produce to {}", partition),
                        p.error_message.as_ref().map(|m| m.to_string()),
                    ));
                }
                Ok(p.base_offset)
            }
            .await;
            match r {
                Ok(offset) => {
                    env.history.finish(
                        op,
                        Outcome::Ok {
                            offset: Some(offset),
                        },
                    );
                    seqs.insert(partition, base_sequence.wrapping_add(batch as i32));
                    break;
                }
                Err(e) if e.code() == Some(DUPLICATE_SEQUENCE_NUMBER) => {
                    // Written before: acknowledged, offset unknown.
                    env.history.finish(op, Outcome::Ok { offset: None });
                    seqs.insert(partition, base_sequence.wrapping_add(batch as i32));
                    break;
                }
                Err(e) => {
                    env.failed(op, &mut conns, leader, &e);
                    if e.is_retriable() {
                        leaders.remove(&partition);
                        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..300))).await;
                    } else {
                        // OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, ...: start over.
                        pid = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }
}

/// The group coordinator's node, from node `ask`.
async fn coordinator(conns: &mut Conns, env: &Env, ask: usize) -> Result<usize, Error> {
    find_coordinator(conns, env, ask, 0, &env.group).await
}

/// FindCoordinator of `key` with `key_type` (0 group, 1 transaction) at node `ask`: the
/// coordinator's node.
pub(crate) async fn find_coordinator(
    conns: &mut Conns,
    env: &Env,
    ask: usize,
    key_type: i8,
    key: &str,
) -> Result<usize, Error> {
    let conn = conns.get(env, ask).await?;
    let batched = conn
        .version(ApiKey::FindCoordinator)
        .is_some_and(|v| v >= 4);
    let req = if batched {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![sb(key)])
    } else {
        FindCoordinatorRequest::default().with_key(sb(key))
    }
    .with_key_type(key_type);
    let resp = conn.send_with_timeout(&req, BROKER_TIMEOUT).await?;
    let (code, node) = match resp.coordinators.first() {
        Some(c) => (c.error_code, c.node_id.0),
        None => (resp.error_code, resp.node_id.0),
    };
    if code != 0 {
        return Err(Error::kafka(code, "FindCoordinator", None));
    }
    if node < 1 || node as usize > env.nodes.len() {
        return Err(Error::Protocol(format!("coordinator {node} is not a node")));
    }
    Ok(node as usize)
}

/// The group's committed offsets of the load's topic, from the coordinator `node`.
async fn fetch_committed(
    conns: &mut Conns,
    env: &Env,
    node: usize,
) -> Result<BTreeMap<i32, i64>, Error> {
    let conn = conns.get(env, node).await?;
    let resp = conn
        .send_with_timeout(
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(sb(&env.group)))
                    .with_topics(None),
            ]),
            BROKER_TIMEOUT,
        )
        .await?;
    let mut out = BTreeMap::new();
    for g in resp.groups {
        if g.error_code != 0 {
            return Err(Error::kafka(g.error_code, "OffsetFetch", None));
        }
        for t in g.topics {
            if t.name.0.as_str() != env.topic {
                continue;
            }
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(Error::kafka(p.error_code, "OffsetFetch partition", None));
                }
                if p.committed_offset >= 0 {
                    out.insert(p.partition_index, p.committed_offset);
                }
            }
        }
    }
    Ok(out)
}

/// A consumer of the group with a fixed share of the partitions (`assign()` style): reads
/// from the committed offsets on, commits its position after every fetch (standalone commits,
/// generation -1).
pub async fn consumer(env: Env, index: usize, count: usize, seed: u64) {
    let name = format!("consumer-{index}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Conns::new(&name);
    let mine: Vec<i32> = (0..env.partitions)
        .filter(|p| *p as usize % count == index)
        .collect();
    let mut client: Option<Client> = None;
    let mut positions: Option<BTreeMap<i32, i64>> = None;
    let mut coord: Option<usize> = None;
    while !env.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..350))).await;
        let coord_node = match coord {
            Some(c) => c,
            None => {
                let ask = rng.gen_range(1..=env.nodes.len());
                match coordinator(&mut conns, &env, ask).await {
                    Ok(c) => {
                        coord = Some(c);
                        c
                    }
                    Err(e) => {
                        if !matches!(e, Error::Kafka { .. }) {
                            conns.forget(ask);
                        }
                        continue;
                    }
                }
            }
        };
        let pos = match &mut positions {
            Some(p) => p,
            None => match fetch_committed(&mut conns, &env, coord_node).await {
                Ok(c) => {
                    positions.insert(mine.iter().map(|p| (*p, *c.get(p).unwrap_or(&0))).collect())
                }
                Err(e) => {
                    if !matches!(e, Error::Kafka { .. }) {
                        conns.forget(coord_node);
                    }
                    coord = None;
                    continue;
                }
            },
        };
        if client.is_none() {
            let bootstrap = env.nodes.join(",");
            let cfg = ClientConfig {
                connection: conn_config(&name),
            };
            match Client::connect_with(&bootstrap, cfg).await {
                Ok(c) => client = Some(c),
                Err(_) => continue,
            }
        }
        let c = client.as_ref().expect("client");
        for &p in &mine {
            let from = pos[&p];
            let op = env.history.begin(
                &name,
                OpKind::Fetch {
                    partition: p,
                    offset: from,
                },
                None,
            );
            let opts = FetchOptions {
                max_wait: Duration::from_millis(200),
                ..FetchOptions::default()
            };
            match c.fetch(&env.topic, p, from, opts).await {
                Ok(f) => {
                    env.history.finish(
                        op,
                        Outcome::Ok {
                            offset: Some(f.next_offset),
                        },
                    );
                    if f.next_offset > from {
                        pos.insert(p, f.next_offset);
                    }
                }
                Err(e) => {
                    env.history.finish(op, outcome_of(&e));
                    if !matches!(e, Error::Kafka { .. }) {
                        client = None;
                        break;
                    }
                    c.invalidate(&env.topic);
                }
            }
        }
        // Commit every position (also unchanged ones: the coordinator must keep them).
        for &p in &mine {
            let offset = pos[&p];
            let op = env.history.begin(
                &name,
                OpKind::Commit {
                    partition: p,
                    offset,
                },
                Some(coord_node),
            );
            let r = async {
                let conn = conns.get(&env, coord_node).await?;
                let resp = conn
                    .send_with_timeout(
                        &OffsetCommitRequest::default()
                            .with_group_id(GroupId(sb(&env.group)))
                            .with_generation_id_or_member_epoch(-1)
                            .with_topics(vec![
                                offset_commit_request::OffsetCommitRequestTopic::default()
                                    .with_name(TopicName(sb(&env.topic)))
                                    .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1),
                                ]),
                            ]),
                        BROKER_TIMEOUT + CLIENT_GRACE,
                    )
                    .await?;
                let code = resp
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(0, |p| p.error_code);
                if code != 0 {
                    return Err(Error::kafka(code, "OffsetCommit", None));
                }
                Ok(())
            }
            .await;
            match r {
                Ok(()) => env.history.finish(op, Outcome::Ok { offset: None }),
                Err(e) => {
                    env.failed(op, &mut conns, coord_node, &e);
                    coord = None;
                    break;
                }
            }
        }
    }
}

/// Admin operations: create a small RF 3 topic at a random node, then delete it.
pub async fn admin(env: Env, seed: u64) {
    let name = "admin";
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Conns::new(name);
    let mut k = 0u64;
    while !env.stopped() {
        k += 1;
        let topic = format!("{}-adm-{k}", env.run_tag);
        for delete in [false, true] {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1500))).await;
            let node = rng.gen_range(1..=env.nodes.len());
            let kind = if delete {
                OpKind::DeleteTopic {
                    topic: topic.clone(),
                }
            } else {
                OpKind::CreateTopic {
                    topic: topic.clone(),
                }
            };
            let op = env.history.begin(name, kind, Some(node));
            let r = async {
                let conn = conns.get(&env, node).await?;
                if delete {
                    let resp = conn
                        .send_with_timeout(
                            &DeleteTopicsRequest::default()
                                .with_topics(vec![DeleteTopicState::default()
                                    .with_name(Some(TopicName(sb(&topic))))])
                                .with_topic_names(vec![TopicName(sb(&topic))])
                                .with_timeout_ms(BROKER_TIMEOUT.as_millis() as i32),
                            BROKER_TIMEOUT + CLIENT_GRACE,
                        )
                        .await?;
                    let code = resp.responses.first().map_or(0, |r| r.error_code);
                    if code != 0 {
                        return Err(Error::kafka(code, format!("delete {topic}"), None));
                    }
                    Ok(())
                } else {
                    create_topic(&conn, &topic, 1, 3, &[], false).await
                }
            }
            .await;
            match r {
                Ok(()) => env.history.finish(op, Outcome::Ok { offset: None }),
                Err(e) => env.failed(op, &mut conns, node, &e),
            }
        }
    }
}

/// Every `every`, each node's Metadata of the load's topic (for the two-leaders checker) and
/// the group's committed offsets from its coordinator (for the commits checker).
pub async fn sampler(env: Env, every: Duration) {
    let mut conns = Conns::new("sampler");
    let mut coord: Option<usize> = None;
    let mut ask = 0usize;
    while !env.stopped() {
        for node in 1..=env.nodes.len() {
            let r = async {
                let conn = conns.get(&env, node).await?;
                topic_metadata(&conn, &env.topic).await
            };
            match tokio::time::timeout(BROKER_TIMEOUT, r).await {
                Ok(Ok((_, parts))) => {
                    let at = env.history.now();
                    for p in parts {
                        env.history.meta(MetaSample {
                            at,
                            from_node: node,
                            partition: p.partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            isr: p.isr,
                        });
                    }
                }
                _ => conns.forget(node),
            }
        }
        let c = match coord {
            Some(c) => Some(c),
            None => {
                ask = ask % env.nodes.len() + 1;
                tokio::time::timeout(BROKER_TIMEOUT, coordinator(&mut conns, &env, ask))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
        };
        coord = c;
        if let Some(c) = c {
            let start = env.history.now();
            match tokio::time::timeout(BROKER_TIMEOUT, fetch_committed(&mut conns, &env, c)).await {
                Ok(Ok(offsets)) => {
                    let end = env.history.now();
                    for (partition, offset) in offsets {
                        env.history.committed(CommitSample {
                            node: c,
                            start,
                            end,
                            partition,
                            offset,
                        });
                    }
                }
                _ => {
                    conns.forget(c);
                    coord = None;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The group's committed offsets from its coordinator, as a fresh consumer would read them
/// (coordinator looked up anew, a few tries): the node asked and the offsets.
pub async fn final_committed(env: &Env) -> anyhow::Result<(usize, BTreeMap<i32, i64>)> {
    let mut conns = Conns::new("final");
    let mut last = String::new();
    for attempt in 0..20 {
        let ask = attempt % env.nodes.len() + 1;
        match coordinator(&mut conns, env, ask).await {
            Ok(c) => match fetch_committed(&mut conns, env, c).await {
                Ok(offsets) => return Ok((c, offsets)),
                Err(e) => last = format!("OffsetFetch at node {c}: {e}"),
            },
            Err(e) => last = format!("FindCoordinator at node {ask}: {e}"),
        }
        conns.map.clear();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("reading the group's committed offsets: {last}")
}

/// Read every partition of the load's topic from offset 0 to its high watermark with a fresh
/// client: (offset, value) per partition.
pub async fn read_all(env: &Env) -> anyhow::Result<BTreeMap<i32, Vec<(i64, String)>>> {
    let client = Client::connect_with(
        &env.nodes.join(","),
        ClientConfig {
            connection: conn_config("reader"),
        },
    )
    .await?;
    let mut out = BTreeMap::new();
    for p in 0..env.partitions {
        let mut records = Vec::new();
        let mut offset = 0i64;
        let mut empty = 0;
        loop {
            let f = client
                .fetch(&env.topic, p, offset, FetchOptions::default())
                .await?;
            for r in &f.records {
                let v = r
                    .value
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                records.push((r.offset, v));
            }
            if f.next_offset > offset {
                offset = f.next_offset;
            }
            if offset >= f.high_watermark {
                break;
            }
            if f.records.is_empty() {
                empty += 1;
                if empty > 50 {
                    anyhow::bail!(
                        "partition {p}: no progress at offset {offset} (high watermark {})",
                        f.high_watermark
                    );
                }
            }
        }
        out.insert(p, records);
    }
    Ok(out)
}
