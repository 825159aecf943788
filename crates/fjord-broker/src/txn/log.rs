//! Appending a coordinator record to `__transaction_state` and waiting for the ISR (the
//! coordinator answers only once its record is on every in-sync replica, as Kafka appends with
//! acks=all), and creating the topic on first need.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::AppendOrigin;
use fjord_replication::AckStatus;
use fjord_storage::AppendInfo;
use fjord_txn::records::Record;
use fjord_txn::Write;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::shard::Shard;
use super::TXN_TOPIC;
use crate::broker::{Broker, Topic};
use crate::partition::{AppendRejection, Partition};

/// How long an answer waits for its record to reach the ISR (as the group coordinator's).
pub const REPLICATION_TIMEOUT: std::time::Duration = crate::groups::REPLICATION_TIMEOUT;

type AppendFuture = Pin<Box<dyn Future<Output = Result<AppendInfo, AppendRejection>> + Send>>;

/// A record queued on its partition's disk I/O thread.
pub struct Queued {
    partition: Arc<Partition>,
    append: AppendFuture,
    min_isr: usize,
}

/// Why a write did not become durable: the code for the client, and whether every later
/// append to the partition fails as well (the shard is then dropped and replayed).
#[derive(Debug, Clone, Copy)]
pub struct WriteError {
    pub code: ErrorCode,
    pub unusable: bool,
}

impl Queued {
    /// Wait until the record is in the leader's log and on every in-sync replica.
    pub async fn replicated(self) -> Result<(), WriteError> {
        let fail = |code, unusable| WriteError { code, unusable };
        let info = match self.append.await {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(partition = self.partition.index, error = %e.message(),
                    "append to {TXN_TOPIC} failed");
                // As Kafka's TransactionStateManager: the partition is no longer writable
                // here → NOT_COORDINATOR; a record the log refused → UNKNOWN_SERVER_ERROR.
                return Err(match &e {
                    AppendRejection::Storage(s)
                        if s.error_code() != ErrorCode::KafkaStorageError =>
                    {
                        fail(ErrorCode::UnknownServerError, false)
                    }
                    _ => fail(ErrorCode::NotCoordinator, true),
                });
            }
        };
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        match self
            .partition
            .wait_acks_all(info.last_offset + 1, self.min_isr, deadline)
            .await
        {
            AckStatus::Done => Ok(()),
            AckStatus::NotLeader => Err(fail(ErrorCode::NotCoordinator, false)),
            AckStatus::Waiting | AckStatus::NotEnoughReplicasAfterAppend => {
                Err(fail(ErrorCode::CoordinatorNotAvailable, false))
            }
        }
    }
}

/// Queue `record` on `__transaction_state` partition `index` (the caller holds its shard's
/// lock, so the log gets the shard's records in the state machine's order). Refused before
/// anything is written when this broker does not lead the partition (NOT_COORDINATOR) or its
/// ISR is below `min.insync.replicas` (COORDINATOR_NOT_AVAILABLE, as Kafka maps
/// NOT_ENOUGH_REPLICAS).
pub fn queue(broker: &Broker, index: i32, record: &Record, now: i64) -> Result<Queued, ErrorCode> {
    let topic = broker
        .topic(TXN_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partition = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    if !partition.is_leader() {
        return Err(ErrorCode::NotCoordinator);
    }
    let min_isr = topic.config.min_insync_replicas.max(1) as usize;
    if partition.state().isr.len() < min_isr {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    let krec = KRecord {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now,
        key: Some(record.key.clone()),
        value: record.value.clone(),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [krec].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot encode a {TXN_TOPIC} record");
        ErrorCode::UnknownServerError
    })?;
    let append = partition.append_async(&broker.io, buf.freeze(), AppendOrigin::Coordinator, now);
    Ok(Queued {
        partition: partition.clone(),
        append: Box::pin(append),
        min_isr,
    })
}

/// A transition whose record is queued: what is left once the append completes.
pub struct Pending {
    pub shard: Arc<Shard>,
    pub generation: u64,
    pub write: Write,
    pub queued: Queued,
}

impl Pending {
    /// Wait for the record to be replicated, then settle the transition: on success it becomes
    /// the id's state (and a prepared transaction's markers start), on failure it is dropped
    /// (and the shard with it if its partition cannot be written any more).
    pub async fn complete(self, broker: &Arc<Broker>) -> Result<(), ErrorCode> {
        let Pending {
            shard,
            generation,
            write,
            queued,
        } = self;
        let result = queued.replicated().await;
        shard.settle(broker, generation, &write.transactional_id, result)
    }
}

/// Create `__transaction_state` (compacted, `transaction.state.log.num.partitions`
/// partitions, `transaction.state.log.segment.bytes`) if it does not exist yet, with
/// `transaction.state.log.replication.factor` replicas or as many as there are live brokers,
/// whichever is smaller, and `transaction.state.log.min.isr` capped by that (a single node must
/// work out of the box, as for `__consumer_offsets`).
pub async fn ensure_txn_topic(broker: &Broker) -> Result<Arc<Topic>, String> {
    if let Some(t) = broker.topic(TXN_TOPIC) {
        return Ok(t);
    }
    let cfg = &broker.config.txn;
    let live = broker
        .with_image(|i| i.brokers().filter(|b| !b.fenced).count())
        .max(1);
    let rf = (cfg.state_log_replication_factor as usize).min(live) as i16;
    let min_isr = cfg.state_log_min_isr.min(i32::from(rf)).max(1);
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        cfg.state_log_segment_bytes.to_string(),
    );
    configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
    configs.insert(
        "unclean.leader.election.enable".to_string(),
        "false".to_string(),
    );
    match broker
        .create_topic(
            TXN_TOPIC,
            cfg.coordinator.txn_partitions,
            rf,
            configs,
            false,
            crate::control::Deadline::standard(),
        )
        .await
    {
        Ok((_, _, Some(t))) => {
            tracing::info!(
                partitions = t.partitions.len(),
                replication_factor = rf,
                min_isr,
                "created {TXN_TOPIC}"
            );
            Ok(t)
        }
        Ok((_, _, None)) => Err(format!("{TXN_TOPIC} was not created")),
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => broker
            .topic(TXN_TOPIC)
            .ok_or_else(|| format!("{TXN_TOPIC} is not known here yet")),
        Err(e) => {
            tracing::error!(error = %e.message, "cannot create {TXN_TOPIC}");
            Err(format!("cannot create {TXN_TOPIC}: {}", e.message))
        }
    }
}
