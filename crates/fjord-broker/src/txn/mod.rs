//! The transaction coordinator's runtime (issue 15): feeds requests and timers to the I/O-free
//! [`fjord_txn::Coordinator`], appends the records it returns to `__transaction_state` and
//! answers once they are on every in-sync replica, sends the commit or abort markers of a
//! prepared transaction to its partitions' leaders, and replays `__transaction_state` to load
//! the transactional ids of the partitions this broker leads.
//!
//! As the group coordinator's runtime ([`crate::groups`]) and Kafka's, it is sharded by
//! `__transaction_state` partition: an id lives in the [`shard::Shard`] of its partition, with its
//! own lock and coordinator state, loaded while this broker leads the partition (the partition's
//! leader epoch is the coordinator epoch its markers carry) and dropped when it stops leading
//! it. A shard's lock is never held across an `.await` or disk I/O: an operation locks its
//! shard, runs the state machine, queues the record on the partition's disk I/O thread,
//! unlocks, and only then waits for the append and the ISR ([`log`]). Until the record is
//! replicated the id has a transition in flight (other requests for it get
//! CONCURRENT_TRANSACTIONS, as in Kafka); once it is, the transition becomes the id's state,
//! or is dropped if the write failed.
//!
//! Files: [`shard`] (shards, loading by replay, unloading, the timers), [`log`] (appending to
//! `__transaction_state` and waiting for the ISR, the topic's creation), [`markers`]
//! (WriteTxnMarkers to the partitions' leaders, then the completion record), [`metrics`].
//!
//! Protocol: the first transaction protocol (TV1; EndTxn up to v4), as librdkafka speaks it.
//! EndTxn is answered once the PrepareCommit / PrepareAbort record is replicated; the markers
//! follow, and until the completion record is written the id answers CONCURRENT_TRANSACTIONS.

pub mod log;
pub mod markers;
pub mod metrics;
pub mod shard;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fjord_protocol::error::ErrorCode;
use fjord_txn::coordinator::{epoch_exhausted, Answer, PartitionResult};
use fjord_txn::{Coordinator, TxnMetadata, TxnState, Write};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::TxnConfig;
use shard::Shard;

/// The internal topic holding the transactional ids' state.
pub const TXN_TOPIC: &str = fjord_metadata::internal::TRANSACTION_STATE_TOPIC;

pub struct TxnRuntime {
    config: TxnConfig,
    /// One shard per `__transaction_state` partition, by partition index.
    shards: Vec<Arc<Shard>>,
    metrics: OnceLock<metrics::TxnMetrics>,
    /// Connections to the brokers markers are sent to.
    pub(crate) marker_conns: markers::Connections,
    /// The timer loop has started: from then on shards are loaded.
    started: AtomicBool,
}

/// A transactional id's state for DescribeTransactions and ListTransactions.
pub type Described = TxnMetadata;

impl TxnRuntime {
    pub fn new(config: TxnConfig) -> TxnRuntime {
        let shards = (0..config.coordinator.txn_partitions.max(1))
            .map(|i| Arc::new(Shard::new(i)))
            .collect();
        TxnRuntime {
            config,
            shards,
            metrics: OnceLock::new(),
            marker_conns: Default::default(),
            started: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    pub(crate) fn metrics(&self, broker: &Broker) -> &metrics::TxnMetrics {
        self.metrics
            .get_or_init(|| metrics::TxnMetrics::new(&broker.metrics.registry))
    }

    /// The `__transaction_state` partition of `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        fjord_txn::txn_partition(transactional_id, self.shards.len() as i32)
    }

    fn shard(&self, transactional_id: &str) -> &Arc<Shard> {
        &self.shards[self.partition_for(transactional_id) as usize]
    }

    /// InitProducerId with a transactional id (KIP-360's `expected` producer id and epoch
    /// when the client sent them). Returns the producer id and epoch once the record is
    /// replicated.
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        // Checked before the coordinator is looked up, as Kafka's handleInitProducerId.
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.coordinator.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        // A producer id is allocated (possibly from the controller) before the shard is
        // locked, and only when the id is new or out of epochs.
        let needs_id = self
            .shard(id)
            .read(broker, |c| {
                c.get(id).is_none_or(|v| epoch_exhausted(v.producer_epoch))
            })
            .unwrap_or(false);
        let mut fresh = if needs_id {
            Some(broker.allocate_producer_id().await.map_err(|e| e.code)?)
        } else {
            None
        };
        let answer = self
            .run(broker, id, |c, now| {
                c.init_producer_id(id, timeout_ms, expected, now, &mut || fresh.take())
                    .map(Some)
            })
            .await?;
        match answer {
            Some(Answer::ProducerId {
                producer_id,
                producer_epoch,
            }) => Ok((producer_id, producer_epoch)),
            Some(Answer::Error(e)) => {
                if e == ErrorCode::ConcurrentTransactions {
                    tracing::info!(transactional_id = %id,
                        "a new producer fenced the open transaction of this transactional id: it is being aborted");
                    self.metrics(broker).fenced.inc();
                }
                Err(e)
            }
            _ => Err(ErrorCode::UnknownServerError),
        }
    }

    /// AddPartitionsToTxn (a client's, v0-3).
    pub async fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<(), ErrorCode> {
        self.run(broker, id, |c, now| {
            c.add_partitions(id, producer_id, epoch, partitions, now)
        })
        .await
        .map(|_| ())
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
    pub async fn add_offsets(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
    ) -> Result<(), ErrorCode> {
        self.run(broker, id, |c, now| {
            c.add_offsets(id, producer_id, epoch, group_id, now)
        })
        .await
        .map(|_| ())
    }

    /// EndTxn: answered once the prepare record is replicated; markers follow.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ErrorCode> {
        self.run(broker, id, |c, now| {
            c.end_txn(id, producer_id, epoch, commit, now)
        })
        .await
        .map(|_| ())
    }

    /// AddPartitionsToTxn with `verify_only` (from a partition leader, v4+).
    pub fn verify(
        &self,
        broker: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<Vec<PartitionResult>, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.shard(id).read(broker, |c| {
            c.verify_partitions(id, producer_id, epoch, partitions)
        })?
    }

    /// DescribeTransactions of one id: `Ok(None)` when this coordinator does not know it.
    pub fn describe(&self, broker: &Broker, id: &str) -> Result<Option<Described>, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.shard(id).read(broker, |c| {
            c.get(id).filter(|v| v.state != TxnState::Dead).cloned()
        })
    }

    /// Every id this broker coordinates (ListTransactions); COORDINATOR_LOAD_IN_PROGRESS while
    /// a partition led here is not loaded yet, as Kafka.
    pub fn list(&self, broker: &Broker) -> Result<Vec<(String, Described)>, ErrorCode> {
        let mut out = Vec::new();
        for s in &self.shards {
            match s.read(broker, |c| {
                c.iter()
                    .filter(|(_, v)| v.state != TxnState::Dead)
                    .map(|(id, v)| (id.to_string(), v.clone()))
                    .collect::<Vec<_>>()
            }) {
                Ok(ids) => out.extend(ids),
                Err(ErrorCode::CoordinatorLoadInProgress) => {
                    return Err(ErrorCode::CoordinatorLoadInProgress)
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Run one operation on the shard of `id`: the state machine and the queued append under
    /// the shard's lock, then (unlocked) the append, the ISR, and the transition settled.
    /// `Ok(None)`: nothing had to be written.
    async fn run(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        op: impl FnOnce(&mut Coordinator, i64) -> Result<Option<Write>, ErrorCode>,
    ) -> Result<Option<Answer>, ErrorCode> {
        let shard = self.shard(id).clone();
        let Some(pending) = shard.start(broker, op)? else {
            return Ok(None);
        };
        let answer = pending.write.answer;
        // In a task of its own: a caller that goes away (a closed connection) cannot leave
        // the id with a transition in flight.
        let b = broker.clone();
        tokio::spawn(async move { pending.complete(&b).await })
            .await
            .map_err(|_| ErrorCode::UnknownServerError)??;
        Ok(Some(answer))
    }

    /// Load, unload and tick the shards until shutdown: leadership is checked every 100 ms,
    /// timed-out transactions every `transaction.abort.timed.out.transaction.cleanup.interval.ms`,
    /// expired ids every `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub async fn tick_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
        let rt = &broker.txns;
        rt.started.store(true, Ordering::Release);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let abort_every = Duration::from_millis(rt.config.abort_interval_ms);
        let expire_every = Duration::from_millis(rt.config.remove_expired_interval_ms);
        let mut last_abort = tokio::time::Instant::now();
        let mut last_expire = tokio::time::Instant::now();
        let mut last_gauges = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            rt.reconcile(&broker);
            let now = tokio::time::Instant::now();
            if now.duration_since(last_abort) >= abort_every {
                last_abort = now;
                rt.timers(&broker, |c, t| c.abort_timed_out(t));
            }
            if now.duration_since(last_expire) >= expire_every {
                last_expire = now;
                rt.timers(&broker, |c, t| c.expire_ids(t));
            }
            if now.duration_since(last_gauges) >= Duration::from_secs(1) {
                last_gauges = now;
                rt.update_gauges(&broker);
            }
        }
    }

    /// Load the shards whose partition this broker leads (again if the leader epoch moved),
    /// unload the others.
    fn reconcile(&self, broker: &Arc<Broker>) {
        let topic = broker.topic(TXN_TOPIC);
        for shard in &self.shards {
            let p = topic
                .as_ref()
                .and_then(|t| t.partitions.get(shard.index as usize));
            shard.reconcile(broker, p, self.started.load(Ordering::Acquire));
        }
    }

    /// Run a timer on every loaded shard; its writes complete in tasks of their own.
    fn timers(&self, broker: &Arc<Broker>, f: impl Fn(&mut Coordinator, i64) -> Vec<Write>) {
        for shard in &self.shards {
            for pending in shard.timer(broker, &f) {
                let b = broker.clone();
                tokio::spawn(async move {
                    let _ = pending.complete(&b).await;
                });
            }
        }
    }

    fn update_gauges(&self, broker: &Broker) {
        let m = self.metrics(broker);
        let mut by_state = std::collections::BTreeMap::new();
        let mut loaded = 0;
        for shard in &self.shards {
            let s = shard.state.lock();
            if let Some(c) = s.coordinator.as_ref() {
                loaded += 1;
                for (_, v) in c.iter() {
                    *by_state.entry(v.state.name()).or_insert(0i64) += 1;
                }
            }
        }
        m.shards_loaded.set(loaded);
        for s in fjord_txn::state::ALL {
            m.transactions
                .with_label_values(&[s.name()])
                .set(by_state.get(s.name()).copied().unwrap_or(0));
        }
    }
}
