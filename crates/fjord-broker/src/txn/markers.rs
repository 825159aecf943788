//! Sending a prepared transaction's commit or abort markers (Kafka's
//! `TransactionMarkerChannelManager`): WriteTxnMarkers to the leader of every partition in the
//! transaction, grouped by leader, retried on retriable errors, moved leaders and unknown
//! leaders (looked up again in the metadata image each round) until every partition has its
//! marker or this broker stops coordinating the id; then the CompleteCommit / CompleteAbort
//! record. A partition whose topic was deleted counts as done. Partitions led here go through
//! the same path (a connection to this broker's own listener), so there is one way markers are
//! written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_client::{Connection, ConnectionConfig};
use fjord_protocol::error::ErrorCode;
use fjord_txn::Markers;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::shard::Shard;
use crate::broker::Broker;

/// What a partition leader's answer means for one partition's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (or nothing to write there any more).
    Done,
    /// Try again (after looking the leader up again).
    Retry,
    /// The leader refused this coordinator or producer epoch: a newer coordinator or producer
    /// has taken over, and this job stops (as Kafka's completion handler).
    Fenced,
}

/// Kafka's `TransactionMarkerRequestCompletionHandler`, per partition error code. Codes Kafka
/// treats as a broken invariant (a corrupt or oversized marker) are retried here with a
/// WARN, never a crash.
pub fn outcome(code: i16) -> Outcome {
    const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = ErrorCode::UnsupportedForMessageFormat.code();
    const INVALID_PRODUCER_EPOCH: i16 = ErrorCode::InvalidProducerEpoch.code();
    const COORDINATOR_FENCED: i16 = ErrorCode::TransactionCoordinatorFenced.code();
    match code {
        0 | UNSUPPORTED_FOR_MESSAGE_FORMAT => Outcome::Done,
        INVALID_PRODUCER_EPOCH | COORDINATOR_FENCED => Outcome::Fenced,
        _ => Outcome::Retry,
    }
}

/// Connections to the brokers markers go to, one per broker, reopened when its address
/// changes or a send on it fails.
#[derive(Default)]
pub struct Connections {
    conns: Mutex<HashMap<i32, (String, Arc<Connection>)>>,
}

impl Connections {
    async fn get(&self, broker: &Broker, node: i32) -> Result<Arc<Connection>, String> {
        let (host, port) = broker
            .broker_address(node)
            .ok_or_else(|| format!("broker {node} has no live address"))?;
        let addr = format!("{host}:{port}");
        if let Some((a, c)) = self.conns.lock().get(&node) {
            if *a == addr {
                return Ok(c.clone());
            }
        }
        let config = ConnectionConfig {
            client_id: format!("fjord-txn-markers-{}", broker.node_id()),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            sasl: crate::sasl::inter_broker_credentials(broker),
            tls: crate::tls::inter_broker(broker),
            ..ConnectionConfig::default()
        };
        let conn = Arc::new(
            Connection::connect(&addr, config)
                .await
                .map_err(|e| e.to_string())?,
        );
        self.conns.lock().insert(node, (addr, conn.clone()));
        Ok(conn)
    }

    fn forget(&self, node: i32) {
        self.conns.lock().remove(&node);
    }
}

/// Start sending `m` (the state of `shard` at `generation`) in a task of its own.
pub fn spawn(broker: &Arc<Broker>, shard: &Arc<Shard>, generation: u64, m: Markers) {
    let (b, s) = (broker.clone(), shard.clone());
    tokio::spawn(async move { run(b, s, generation, m).await });
}

/// Every partition's marker, then the completion record.
async fn run(broker: Arc<Broker>, shard: Arc<Shard>, generation: u64, m: Markers) {
    let started = Instant::now();
    let metrics = broker.txns.metrics(&broker).clone();
    let mut remaining = m.partitions.clone();
    let mut backoff = Duration::from_millis(20);
    let mut last_warn: Option<Instant> = None;
    while !remaining.is_empty() {
        if !shard.is_current(generation) {
            tracing::info!(transactional_id = %m.transactional_id, left = remaining.len(),
                "transaction markers stopped: this broker no longer coordinates the id (the new coordinator sends them)");
            return;
        }
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        let mut gone = Vec::new();
        for (topic, index) in &remaining {
            let Some(t) = broker.topic(topic) else {
                gone.push((topic.clone(), *index));
                continue;
            };
            let Some(p) = usize::try_from(*index)
                .ok()
                .and_then(|i| t.partitions.get(i))
            else {
                gone.push((topic.clone(), *index));
                continue;
            };
            let leader = p.state().leader;
            if leader >= 0 {
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), *index));
            }
        }
        for tp in gone {
            tracing::info!(transactional_id = %m.transactional_id, topic = %tp.0, partition = tp.1,
                "transaction marker not needed: the partition's topic was deleted");
            remaining.remove(&tp);
        }
        let mut sends = tokio::task::JoinSet::new();
        for (leader, parts) in by_leader {
            let (b, m) = (broker.clone(), m.clone());
            sends.spawn(async move { (leader, send(&b, leader, &m, &parts).await) });
        }
        let mut errors: Vec<String> = Vec::new();
        while let Some(Ok((leader, result))) = sends.join_next().await {
            match result {
                Ok(results) => {
                    for (tp, code) in results {
                        match outcome(code) {
                            Outcome::Done => {
                                remaining.remove(&tp);
                            }
                            Outcome::Fenced => {
                                tracing::warn!(transactional_id = %m.transactional_id,
                                    topic = %tp.0, partition = tp.1, leader,
                                    error = %fjord_client::error_name(code),
                                    coordinator_epoch = m.coordinator_epoch,
                                    producer_epoch = m.producer_epoch,
                                    "transaction marker refused as stale: a newer coordinator or producer has taken over; this coordinator stops sending");
                                return;
                            }
                            Outcome::Retry => {
                                metrics
                                    .markers_failed
                                    .with_label_values(&[&fjord_client::error_name(code)])
                                    .inc();
                                errors.push(format!(
                                    "{}-{} on broker {leader}: {}",
                                    tp.0,
                                    tp.1,
                                    fjord_client::error_name(code)
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    broker.txns.marker_conns.forget(leader);
                    metrics
                        .markers_failed
                        .with_label_values(&["connection"])
                        .inc();
                    errors.push(format!("broker {leader}: {e}"));
                }
            }
        }
        if remaining.is_empty() {
            break;
        }
        // One WARN per 10 s per transaction: a leader down for minutes costs a few lines.
        if !errors.is_empty() && last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_warn = Some(Instant::now());
            tracing::warn!(transactional_id = %m.transactional_id, commit = m.commit,
                left = remaining.len(), errors = %errors.join("; "),
                "transaction markers not written yet; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    metrics
        .marker_seconds
        .observe(started.elapsed().as_secs_f64());
    complete(&broker, &shard, generation, &m).await;
}

/// WriteTxnMarkers for `parts` of `m` to broker `leader`: each partition's error code.
async fn send(
    broker: &Arc<Broker>,
    leader: i32,
    m: &Markers,
    parts: &[(String, i32)],
) -> Result<Vec<((String, i32), i16)>, String> {
    let conn = broker.txns.marker_conns.get(broker, leader).await?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t).or_default().push(*p);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_transaction_result(m.commit)
            .with_coordinator_epoch(m.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let response = conn.send(&request).await.map_err(|e| e.to_string())?;
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for marker in response
        .markers
        .iter()
        .filter(|r| r.producer_id.0 == m.producer_id)
    {
        for t in &marker.topics {
            for p in &t.partitions {
                answered.insert((t.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    // A partition the answer leaves out is tried again.
    Ok(parts
        .iter()
        .map(|tp| {
            let code = answered
                .get(tp)
                .copied()
                .unwrap_or(ErrorCode::UnknownServerError.code());
            (tp.clone(), code)
        })
        .collect())
}

/// Every marker is written: append the completion record (retried until written or the shard
/// is no longer this state).
async fn complete(broker: &Arc<Broker>, shard: &Arc<Shard>, generation: u64, m: &Markers) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if !shard.is_current(generation) {
            return;
        }
        let id = m.transactional_id.as_str();
        let started = shard.start(broker, |c, now| Ok(c.markers_written(id, now)));
        let result = match started {
            Ok(None) => return,
            Ok(Some(pending)) => pending.complete(broker).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let label = if m.commit { "commit" } else { "abort" };
                broker
                    .txns
                    .metrics(broker)
                    .completed
                    .with_label_values(&[label])
                    .inc();
                tracing::debug!(transactional_id = %id, result = label, "transaction completed");
                return;
            }
            Err(ErrorCode::NotCoordinator) => return,
            Err(e) => {
                tracing::warn!(transactional_id = %id, error = ?e,
                    "cannot write the transaction's completion record yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_answers_are_kafkas() {
        assert_eq!(outcome(0), Outcome::Done);
        assert_eq!(
            outcome(ErrorCode::UnsupportedForMessageFormat.code()),
            Outcome::Done
        );
        for fenced in [
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::TransactionCoordinatorFenced,
        ] {
            assert_eq!(outcome(fenced.code()), Outcome::Fenced);
        }
        for retry in [
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::RequestTimedOut,
            ErrorCode::KafkaStorageError,
            ErrorCode::CorruptMessage,
            ErrorCode::UnknownServerError,
        ] {
            assert_eq!(outcome(retry.code()), Outcome::Retry, "{retry:?}");
        }
    }
}
