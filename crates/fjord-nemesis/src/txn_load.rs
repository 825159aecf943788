//! Transactional producers in the load: each runs transactions of a few batches over two
//! partitions of their own topic (`<topic>-txn`), committing most and aborting some, as the
//! Java producer drives the protocol (FindCoordinator with key type 1, InitProducerId with a
//! transactional id, AddPartitionsToTxn v3, transactional Produce, EndTxn). Each transaction's
//! fate as the client saw it goes into the history ([`OpKind::TxnEnd`]); the checker
//! ([`crate::check::check_txns`]) reads the topic with read_committed afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::{Client, Connection, Error, ProduceRecord};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, InitProducerIdRequest, ProduceRequest,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::history::{OpKind, Outcome};
use crate::load::{Conns, Env, BROKER_TIMEOUT, CLIENT_GRACE};

/// The transaction timeout the producers ask for: an abandoned transaction is aborted by the
/// coordinator this long after it started (plus its abort interval).
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a producer keeps retrying one step of a transaction before it gives it up (and
/// starts over with InitProducerId, which fences and ends whatever it left open).
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// Records per partition in one transaction.
const PER_PARTITION: usize = 3;

const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

/// The topic of the transactional load.
pub fn txn_topic(env: &Env) -> String {
    format!("{}-txn", env.topic)
}

/// Whether every node serves the transactional APIs (EndTxn); before transactions existed
/// the load skips its transactional producers.
pub async fn supported(env: &Env) -> bool {
    let Ok(conn) = Connection::connect(&env.nodes[0], crate::load::conn_config("probe")).await
    else {
        return false;
    };
    conn.version(ApiKey::EndTxn).is_some() && conn.version(ApiKey::AddPartitionsToTxn).is_some()
}

fn sb(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// Where a transaction stands while its producer drives it.
struct Producer {
    name: String,
    transactional_id: String,
    coordinator: Option<usize>,
    /// (producer id, epoch) from InitProducerId.
    pid: Option<(i64, i16)>,
    /// Next sequence number per partition under the current epoch.
    seqs: HashMap<i32, i32>,
    leaders: HashMap<i32, usize>,
    topic_id: Uuid,
    conns: Conns,
    rng: StdRng,
}

/// How one step ended.
enum Step {
    Done,
    /// Give the transaction up (the producer starts over with InitProducerId).
    GiveUp,
}

/// A transactional producer: transactions until the load stops.
pub async fn txn_producer(env: Env, index: usize, seed: u64) {
    let name = format!("txn-producer-{index}");
    let mut p = Producer {
        transactional_id: format!("{}-txn-{index}", env.run_tag),
        name: name.clone(),
        coordinator: None,
        pid: None,
        seqs: HashMap::new(),
        leaders: HashMap::new(),
        topic_id: Uuid::nil(),
        conns: Conns::new(&name),
        rng: StdRng::seed_from_u64(seed),
    };
    let topic = txn_topic(&env);
    let mut txn = 0u64;
    while !env.stopped() {
        if p.pid.is_none() && !p.init(&env).await {
            continue;
        }
        txn += 1;
        let first = p.rng.gen_range(0..env.partitions);
        let second = (first + p.rng.gen_range(1..env.partitions.max(2))) % env.partitions;
        let mut partitions = vec![first];
        if second != first {
            partitions.push(second);
        }
        let values: Vec<(i32, Vec<String>)> = partitions
            .iter()
            .map(|&part| {
                (
                    part,
                    (0..PER_PARTITION)
                        .map(|j| format!("t{index}-{txn}-{part}-{j}"))
                        .collect(),
                )
            })
            .collect();
        let all: Vec<String> = values.iter().flat_map(|(_, v)| v.clone()).collect();
        if let Step::GiveUp = p.add_partitions(&env, &topic, &partitions, txn).await {
            // Nothing was produced; the next InitProducerId ends the transaction.
            p.pid = None;
            continue;
        }
        let mut commit = p.rng.gen_bool(0.75);
        for (part, vals) in &values {
            if let Step::GiveUp = p.produce(&env, &topic, *part, vals, txn).await {
                commit = false;
                break;
            }
        }
        p.end(&env, txn, commit, all).await;
        tokio::time::sleep(Duration::from_millis(p.rng.gen_range(20..100))).await;
    }
}

impl Producer {
    fn failed(&mut self, env: &Env, op: u64, node: usize, e: &Error) {
        env.history.finish(op, crate::load::outcome_of(e));
        if !matches!(e, Error::Kafka { .. }) {
            self.conns.forget(node);
        }
        if matches!(e.code(), Some(15) | Some(16)) {
            // COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: find it again.
            self.coordinator = None;
        }
    }

    async fn backoff(&mut self) {
        tokio::time::sleep(Duration::from_millis(self.rng.gen_range(100..300))).await;
    }

    /// The transaction coordinator's node (FindCoordinator, key type 1, at a random node).
    async fn coordinator(&mut self, env: &Env) -> Option<usize> {
        if let Some(c) = self.coordinator {
            return Some(c);
        }
        let ask = self.rng.gen_range(1..=env.nodes.len());
        let r = crate::load::find_coordinator(&mut self.conns, env, ask, 1, &self.transactional_id)
            .await;
        match r {
            Ok(n) => {
                self.coordinator = Some(n);
                Some(n)
            }
            Err(e) => {
                if !matches!(e, Error::Kafka { .. }) {
                    self.conns.forget(ask);
                }
                self.backoff().await;
                None
            }
        }
    }

    /// InitProducerId with the transactional id: a new epoch, which fences an older one and
    /// ends (aborts, or completes a prepared commit of) whatever transaction it left open.
    async fn init(&mut self, env: &Env) -> bool {
        let Some(node) = self.coordinator(env).await else {
            return false;
        };
        let op = env.history.begin(&self.name, OpKind::TxnInit, Some(node));
        let r = async {
            let conn = self.conns.get(env, node).await?;
            let req = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(sb(&self.transactional_id))))
                .with_transaction_timeout_ms(TXN_TIMEOUT.as_millis() as i32)
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
            Ok(pid) => {
                env.history.finish(op, Outcome::Ok { offset: None });
                self.pid = Some(pid);
                self.seqs.clear();
                true
            }
            Err(e) => {
                self.failed(env, op, node, &e);
                self.backoff().await;
                false
            }
        }
    }

    async fn add_partitions(
        &mut self,
        env: &Env,
        topic: &str,
        partitions: &[i32],
        txn: u64,
    ) -> Step {
        let started = Instant::now();
        let (pid, epoch) = self.pid.expect("initialised");
        while started.elapsed() < STEP_DEADLINE {
            let Some(node) = self.coordinator(env).await else {
                continue;
            };
            let op = env.history.begin(
                &self.name,
                OpKind::TxnAdd {
                    txn,
                    partitions: partitions.to_vec(),
                },
                Some(node),
            );
            let r = async {
                let conn = self.conns.get(env, node).await?;
                let req = AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(sb(&self.transactional_id)))
                    .with_v3_and_below_producer_id(ProducerId(pid))
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(sb(topic)))
                        .with_partitions(partitions.to_vec())]);
                let version = conn.version(ApiKey::AddPartitionsToTxn).unwrap_or(3).min(3);
                let resp = tokio::time::timeout(
                    BROKER_TIMEOUT + CLIENT_GRACE,
                    conn.send_at(&req, version),
                )
                .await
                .map_err(|_| Error::Timeout {
                    what: "AddPartitionsToTxn".into(),
                    after: BROKER_TIMEOUT + CLIENT_GRACE,
                })??;
                let code = resp
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code)
                    .find(|c| *c != 0)
                    .unwrap_or(resp.error_code);
                if code != 0 {
                    return Err(Error::kafka(code, "AddPartitionsToTxn", None));
                }
                Ok(())
            }
            .await;
            match r {
                Ok(()) => {
                    env.history.finish(op, Outcome::Ok { offset: None });
                    return Step::Done;
                }
                Err(e) => {
                    self.failed(env, op, node, &e);
                    if !e.is_retriable() {
                        return Step::GiveUp;
                    }
                    self.backoff().await;
                }
            }
        }
        Step::GiveUp
    }

    async fn produce(
        &mut self,
        env: &Env,
        topic: &str,
        partition: i32,
        values: &[String],
        txn: u64,
    ) -> Step {
        let (pid, epoch) = self.pid.expect("initialised");
        let base_sequence = *self.seqs.get(&partition).unwrap_or(&0);
        let records: Vec<ProduceRecord> = values
            .iter()
            .map(|v| ProduceRecord::new(None::<Bytes>, Bytes::from(v.clone())))
            .collect();
        let batch = Client::encode_transactional_batch(
            &records,
            Compression::None,
            (pid, epoch, base_sequence),
        )
        .expect("encoding a record batch");
        let started = Instant::now();
        while started.elapsed() < STEP_DEADLINE {
            let Some(leader) = self.leader(env, topic, partition).await else {
                continue;
            };
            let op = env.history.begin(
                &self.name,
                OpKind::TxnProduce {
                    txn,
                    partition,
                    values: values.to_vec(),
                },
                Some(leader),
            );
            let r = async {
                let conn = self.conns.get(env, leader).await?;
                let req = ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(sb(&self.transactional_id))))
                    .with_acks(-1)
                    .with_timeout_ms(BROKER_TIMEOUT.as_millis() as i32)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(sb(topic)))
                        .with_topic_id(self.topic_id)
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch.clone()))])]);
                let resp = conn
                    .send_with_timeout(&req, BROKER_TIMEOUT + CLIENT_GRACE)
                    .await?;
                let p = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == partition)
                    .ok_or_else(|| Error::Protocol("no partition in Produce answer".into()))?;
                if p.error_code != 0 && p.error_code != DUPLICATE_SEQUENCE_NUMBER {
                    return Err(Error::kafka(
                        p.error_code,
                        format!("transactional produce to {partition}"),
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
                            offset: (offset >= 0).then_some(offset),
                        },
                    );
                    self.seqs
                        .insert(partition, base_sequence.wrapping_add(values.len() as i32));
                    return Step::Done;
                }
                Err(e) => {
                    self.failed(env, op, leader, &e);
                    if !e.is_retriable() {
                        return Step::GiveUp;
                    }
                    self.leaders.remove(&partition);
                    self.backoff().await;
                }
            }
        }
        Step::GiveUp
    }

    /// EndTxn, retried until answered; its last answer is the transaction's fate as the
    /// client knows it. A producer that could not end it starts over with InitProducerId.
    async fn end(&mut self, env: &Env, txn: u64, commit: bool, values: Vec<String>) {
        let (pid, epoch) = self.pid.expect("initialised");
        let started = Instant::now();
        while started.elapsed() < STEP_DEADLINE {
            let Some(node) = self.coordinator(env).await else {
                continue;
            };
            let op = env.history.begin(
                &self.name,
                OpKind::TxnEnd {
                    txn,
                    commit,
                    values: values.clone(),
                },
                Some(node),
            );
            let r = async {
                let conn = self.conns.get(env, node).await?;
                let req = EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(sb(&self.transactional_id)))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_committed(commit);
                let resp = conn
                    .send_with_timeout(&req, BROKER_TIMEOUT + CLIENT_GRACE)
                    .await?;
                if resp.error_code != 0 {
                    return Err(Error::kafka(resp.error_code, "EndTxn", None));
                }
                Ok(())
            }
            .await;
            match r {
                Ok(()) => {
                    env.history.finish(op, Outcome::Ok { offset: None });
                    return;
                }
                Err(e) => {
                    self.failed(env, op, node, &e);
                    if !e.is_retriable() {
                        break;
                    }
                    self.backoff().await;
                }
            }
        }
        self.pid = None;
    }

    async fn leader(&mut self, env: &Env, topic: &str, partition: i32) -> Option<usize> {
        if let Some(l) = self.leaders.get(&partition) {
            return Some(*l);
        }
        let node = self.rng.gen_range(1..=env.nodes.len());
        let meta = async {
            let conn = self.conns.get(env, node).await?;
            crate::load::topic_metadata(&conn, topic).await
        }
        .await;
        match meta {
            Ok((id, parts)) => {
                self.topic_id = id;
                for p in parts {
                    if p.leader > 0 {
                        self.leaders.insert(p.partition, p.leader as usize);
                    }
                }
            }
            Err(_) => self.conns.forget(node),
        }
        if !self.leaders.contains_key(&partition) {
            self.backoff().await;
        }
        self.leaders.get(&partition).copied()
    }
}

/// The transactional topic read from offset 0 with read_committed, once every transaction in
/// it has ended (the last stable offset reached the high watermark of every partition);
/// an error when one stays open past `deadline` (the coordinator aborts an abandoned one
/// after [`TXN_TIMEOUT`] plus its abort interval).
pub async fn read_committed(
    env: &Env,
    deadline: Duration,
) -> anyhow::Result<std::collections::BTreeMap<i32, Vec<(i64, String)>>> {
    let topic = txn_topic(env);
    let client = Client::connect_with(
        &env.nodes.join(","),
        fjord_client::ClientConfig {
            connection: crate::load::conn_config("txn-reader"),
        },
    )
    .await?;
    let until = Instant::now() + deadline;
    let options = fjord_client::FetchOptions {
        isolation_level: 1,
        ..fjord_client::FetchOptions::default()
    };
    let mut out = std::collections::BTreeMap::new();
    for p in 0..env.partitions {
        // Wait until nothing is open in the partition.
        loop {
            let f = client.fetch(&topic, p, 0, options).await;
            match f {
                Ok(f) if f.last_stable_offset == f.high_watermark => break,
                Ok(f) if Instant::now() >= until => anyhow::bail!(
                    "{topic}-{p}: a transaction still open {:.0} s after the load stopped \
                     (last stable offset {} < high watermark {})",
                    deadline.as_secs_f64(),
                    f.last_stable_offset,
                    f.high_watermark
                ),
                Err(e) if Instant::now() >= until => {
                    anyhow::bail!("{topic}-{p}: {e}")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let mut records = Vec::new();
        let mut offset = 0i64;
        let mut empty = 0;
        loop {
            let f = client.fetch(&topic, p, offset, options).await?;
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
            if offset >= f.last_stable_offset {
                break;
            }
            if f.records.is_empty() && f.next_offset <= offset {
                empty += 1;
                if empty > 50 {
                    anyhow::bail!(
                        "{topic}-{p}: no progress at offset {offset} (last stable offset {})",
                        f.last_stable_offset
                    );
                }
            }
        }
        out.insert(p, records);
    }
    Ok(out)
}
