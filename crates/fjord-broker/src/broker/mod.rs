//! The broker's state: its view of the cluster image, the topics and partitions it knows (with
//! the logs of the replicas it hosts), producer-id allocation and fetch sessions.
//!
//! Topic lifecycle requests (create, add partitions, alter configs, delete) go to the controller
//! through [`Broker::submit`]; their effect reaches the topics only through [`Broker::publish`],
//! which applies committed metadata records, so a single node and a cluster change topics the
//! same way.
//!
//! Layout (one `impl Broker` block per file):
//! - this file: the [`Broker`] struct, construction ([`Broker::open`], [`Broker::open_quorum`]),
//!   small accessors, topic lookup and producer-id blocks;
//! - `publisher`: metadata publishing — [`Broker::publish`] and what it does to topics and
//!   partitions (new logs, leaders, ISR, throttles, deletions), with the change log and metrics;
//! - `topic_admin`: the submit paths to the controller and topic administration (create,
//!   add partitions, alter configs, delete);
//! - `log_manager`: partition directories — opening and closing logs, deleting replicas,
//!   stray and stale directories, `meta.properties`.

mod log_manager;
mod publisher;
mod topic_admin;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use fjord_metadata::{ClusterImage, ControllerReply, ControllerRequest, MetadataLog};
use fjord_protocol::error::ErrorCode;
use fjord_storage::LogConfig;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::control::ControlPlane;
use crate::fetch_session::FetchSessionCache;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::replica_fetcher::ReplicaFetchers;
use log_manager::{load_meta_properties, quorum_cluster_id, remove_stale_partition_dirs};

pub use log_manager::partition_dir;
pub use publisher::Publish;

/// Directory (under `log.dirs`) that holds the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// Directory (under `log.dirs`) of a controller's Raft log and snapshots.
pub const QUORUM_DIR: &str = "__cluster_quorum";
/// File in every partition directory naming the topic id it belongs to (as Kafka does).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Producer ids are handed out in blocks so the metadata log is not written per producer.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic as hosted here. Immutable: any change replaces the `Arc<Topic>` in the map.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    /// Effective log config (broker defaults plus overrides).
    pub config: LogConfig,
    /// Per-topic overrides only.
    pub overrides: BTreeMap<String, String>,
}

#[derive(Default)]
struct Topics {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

/// A failed topic operation: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl TopicError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// The shared broker state.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub(crate) control: ControlPlane,
    /// This broker's view of the cluster, built by deltas from the metadata log.
    image: RwLock<ClusterImage>,
    /// The next metadata offset to apply here (records applied so far).
    applied: watch::Sender<i64>,
    /// Publishing is one batch at a time, in log order.
    publishing: Mutex<()>,
    /// A single node's metadata publisher thread (set once the broker is open).
    local_publisher: std::sync::OnceLock<crate::control::LocalPublisher>,
    /// This broker's epoch (KIP-380): the offset of its registration record.
    broker_epoch: AtomicI64,
    topics: RwLock<Topics>,
    producer_ids: Mutex<(i64, i64)>,
    pub fetch_sessions: Mutex<FetchSessionCache>,
    pub metrics: Metrics,
    /// Traffic by client rack and usage per topic and client id.
    pub accounting: crate::accounting::Accounting,
    /// Bytes-in rates per partition and sampled top keys (`skew.*`).
    pub skew: crate::skew::Skew,
    /// Topic activity not yet reported to the controller, topic GC metrics.
    pub topic_activity: crate::topic_activity::TopicActivity,
    advertised: RwLock<(String, u16)>,
    /// The group coordinator (classic and KIP-848 groups, committed offsets).
    pub groups: crate::groups::GroupRuntime,
    /// The transaction coordinator (transactional ids, their transactions and markers).
    pub txns: crate::txn::TxnRuntime,
    /// Follower fetchers, one per leader this broker follows partitions of.
    pub fetchers: ReplicaFetchers,
    /// ISR changes waiting to be sent to the controller in a batch.
    pub isr_proposals: crate::replication::IsrProposals,
    /// A controlled shutdown has begun: heartbeats ask to stay fenced.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Reassignment throttles (leader and follower rates, from dynamic broker configs).
    pub replication_quotas: crate::throttle::ReplicationQuotas,
    /// The disk I/O threads (`num.io.threads`): every partition write and fsync runs there.
    pub io: Arc<fjord_storage::io::IoThreads>,
    /// Metrics of the I/O threads and fsyncs.
    pub disk: crate::disk::DiskMetrics,
    /// Client quotas: limits from the image, every active client's rates.
    pub quotas: crate::quota::ClientQuotaManager,
}

impl Broker {
    fn new(
        config: BrokerConfig,
        cluster_id: String,
        control: ControlPlane,
    ) -> anyhow::Result<Broker> {
        let io = fjord_storage::io::IoThreads::new(config.io_threads, "fjord-io")
            .map_err(|e| anyhow::anyhow!("cannot start the disk I/O threads: {e}"))?;
        let fetch_sessions = FetchSessionCache::new(config.fetch_session_cache_slots);
        let metrics = Metrics::new();
        let accounting = crate::accounting::Accounting::new(
            &config.accounting,
            config.rack.as_deref(),
            &metrics.registry,
        );
        let skew = crate::skew::Skew::new(&config.skew, &metrics.registry);
        let disk = crate::disk::DiskMetrics::new(&metrics.registry);
        let quotas = crate::quota::ClientQuotaManager::new(config.quota, &metrics.registry);
        Ok(Broker {
            cluster_id,
            control,
            image: RwLock::new(ClusterImage::default()),
            applied: watch::channel(0).0,
            publishing: Mutex::new(()),
            local_publisher: std::sync::OnceLock::new(),
            broker_epoch: AtomicI64::new(-1),
            topic_activity: crate::topic_activity::TopicActivity::new(&metrics.registry),
            topics: RwLock::new(Topics::default()),
            producer_ids: Mutex::new((0, 0)),
            fetch_sessions: Mutex::new(fetch_sessions),
            metrics,
            accounting,
            skew,
            advertised: RwLock::new(("127.0.0.1".into(), 0)),
            groups: crate::groups::GroupRuntime::new(config.group.clone()),
            txns: crate::txn::TxnRuntime::new(config.txn.clone()),
            fetchers: ReplicaFetchers::default(),
            isr_proposals: Default::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            replication_quotas: Default::default(),
            io: Arc::new(io),
            disk,
            quotas,
            config,
        })
    }

    /// Open a single node (no controller quorum): check `meta.properties`, replay the metadata
    /// log, register this node with its own controller, open every partition log and remove
    /// directories of deleted topics.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Arc<Broker>> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create log.dirs {}: {e}", dir.display()))?;
        let cluster_id = load_meta_properties(&dir, config.node_id, None)?;
        let metadata = MetadataLog::open(&dir.join(METADATA_DIR))?;
        let session = config.cluster.session_timeout_ms as i64;
        let broker = Broker::new(config, cluster_id, ControlPlane::local(metadata, session))?;
        let started = std::time::Instant::now();
        let ControlPlane::Local(local) = &broker.control else {
            unreachable!("a single node has a local control plane")
        };
        {
            let l = local.lock();
            let image = l.controller.image().clone();
            broker.publish(Publish::Image(Box::new(image)), l.controller.next_offset());
        }
        broker.register_local()?;
        {
            let mut l = local.lock();
            let upgrade = l.upgrade_records(broker.node_id());
            if !upgrade.is_empty() {
                tracing::info!(
                    records = upgrade.len(),
                    "adding partition states to an older metadata log"
                );
                l.append_raw(&upgrade)
                    .map_err(|e| anyhow::anyhow!(e.message))?;
                broker.publish(Publish::Records(&upgrade), l.controller.next_offset());
            }
        }
        remove_stale_partition_dirs(&dir, &broker.topics.read());
        let topics = broker.topics.read().by_name.len();
        tracing::info!(topics, partitions = broker.metrics.partitions.get(),
            elapsed_ms = started.elapsed().as_millis() as u64, dir = %dir.display(), "logs loaded");
        let broker = Arc::new(broker);
        let publisher = crate::control::LocalPublisher::start(&broker)
            .map_err(|e| anyhow::anyhow!("cannot start the metadata publisher thread: {e}"))?;
        let _ = broker.local_publisher.set(publisher);
        Ok(broker)
    }

    /// A single node's metadata publisher, once the broker is open.
    pub(crate) fn local_publisher(&self) -> Option<&crate::control::LocalPublisher> {
        self.local_publisher.get()
    }

    /// A broker of a cluster with a controller quorum. It starts with no topics; the metadata
    /// follower ([`crate::cluster`]) publishes the image, which opens the logs.
    pub fn open_quorum(config: BrokerConfig, control: ControlPlane) -> anyhow::Result<Broker> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create log.dirs {}: {e}", dir.display()))?;
        let id = quorum_cluster_id(&config.cluster.voters);
        let cluster_id = load_meta_properties(&dir, config.node_id, Some(&id))?;
        Broker::new(config, cluster_id, control)
    }

    /// Register this single node with its own controller when it is not registered yet (or
    /// its rack changed), and unfence it: it is always caught up with its own log.
    fn register_local(&self) -> anyhow::Result<()> {
        let node_id = self.node_id();
        let current = self.image.read().broker(node_id).cloned();
        let epoch = match current {
            Some(b) if b.rack == self.config.rack && !b.fenced => b.broker_epoch,
            _ => {
                let reply = self.submit_local(ControllerRequest::RegisterBroker {
                    node_id,
                    incarnation_id: Uuid::new_v4(),
                    rack: self.config.rack.clone(),
                    endpoints: Vec::new(),
                })?;
                let ControllerReply::Registered { broker_epoch } = reply else {
                    anyhow::bail!("unexpected registration reply {reply:?}");
                };
                self.submit_local(ControllerRequest::Heartbeat {
                    node_id,
                    broker_epoch,
                    current_metadata_offset: self.applied_offset() - 1,
                    want_fence: false,
                })?;
                broker_epoch
            }
        };
        self.set_broker_epoch(epoch);
        Ok(())
    }

    /// The next metadata offset to apply here.
    pub fn applied_offset(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Mark the start of a controlled shutdown (heartbeats then ask to be fenced).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Partitions this broker leads now.
    pub fn led_partitions(&self) -> usize {
        self.topics
            .read()
            .by_name
            .values()
            .map(|t| t.partitions.iter().filter(|p| p.is_leader()).count())
            .sum()
    }

    /// This broker's epoch, -1 before registration.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Relaxed)
    }

    pub fn set_broker_epoch(&self, epoch: i64) {
        self.metrics.broker_epoch.set(epoch);
        self.broker_epoch.store(epoch, Ordering::Relaxed);
    }

    /// Run `f` on the cluster image.
    pub fn with_image<T>(&self, f: impl FnOnce(&ClusterImage) -> T) -> T {
        f(&self.image.read())
    }

    /// The active controller's node id (-1 when unknown).
    pub fn controller_id(&self) -> i32 {
        self.control.active_controller(self.node_id()).unwrap_or(-1)
    }

    /// Unfenced brokers as clients should reach them: (node id, host, port, rack). This node is
    /// listed with its live advertised address.
    pub fn live_brokers(&self) -> Vec<(i32, String, u16, Option<String>)> {
        let me = self.node_id();
        let image = self.image.read();
        let mut out: Vec<_> = image
            .brokers()
            .filter(|b| !b.fenced && b.node_id != me)
            .filter_map(|b| {
                let e = b
                    .endpoints
                    .iter()
                    .find(|e| e.name == self.config.listener.name)
                    .or_else(|| b.endpoints.first())?;
                Some((b.node_id, e.host.clone(), e.port, b.rack.clone()))
            })
            .collect();
        let (host, port) = self.advertised();
        out.push((me, host, port, self.config.rack.clone()));
        out.sort_by_key(|b| b.0);
        out
    }

    /// The address of broker `node_id` for clients, if it is live.
    pub fn broker_address(&self, node_id: i32) -> Option<(String, u16)> {
        self.live_brokers()
            .into_iter()
            .find(|b| b.0 == node_id)
            .map(|b| (b.1, b.2))
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn set_advertised(&self, host: String, port: u16) {
        *self.advertised.write() = (host, port);
    }

    pub fn advertised(&self) -> (String, u16) {
        self.advertised.read().clone()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().by_name.get(name).cloned()
    }

    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION naming it.
    pub fn existing_topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.topic(name).ok_or_else(|| {
            TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            )
        })
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.topics.read().by_id.get(id).cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions.get(usize::try_from(index).ok()?).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics.read().by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A new producer id (idempotent producer). Ids are reserved from the controller in blocks,
    /// so they stay unique across restarts and brokers.
    pub async fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        loop {
            {
                let mut ids = self.producer_ids.lock();
                if ids.0 < ids.1 {
                    let id = ids.0;
                    ids.0 += 1;
                    return Ok(id);
                }
            }
            let reply = self
                .submit(ControllerRequest::AllocateProducerIds {
                    node_id: self.node_id(),
                    broker_epoch: self.broker_epoch(),
                    count: PRODUCER_ID_BLOCK,
                })
                .await?;
            let ControllerReply::ProducerIds { first, count } = reply else {
                return Err(TopicError::new(
                    ErrorCode::UnknownServerError,
                    format!("unexpected controller reply {reply:?}"),
                ));
            };
            let mut ids = self.producer_ids.lock();
            if ids.0 >= ids.1 {
                *ids = (first, first + count);
            }
        }
    }

    /// Every partition with a log here (for maintenance and metrics).
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .by_name
            .values()
            .flat_map(|t| t.partitions.iter().filter(|p| p.has_log()).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_metadata::MetadataRecord;
    use std::path::Path;

    /// A single node on `dir`.
    pub(super) fn broker(dir: &Path) -> Arc<Broker> {
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.display().to_string());
        Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap()
    }

    /// A metadata log written before partition states existed gets them at startup.
    #[tokio::test]
    async fn old_single_node_log_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = MetadataLog::open(&dir.path().join(METADATA_DIR)).unwrap();
            log.append(MetadataRecord::Topic {
                name: "old".into(),
                id: Uuid::new_v4(),
                partitions: 2,
                configs: BTreeMap::new(),
            })
            .unwrap();
        }
        let b = broker(dir.path());
        let t = b.topic("old").unwrap();
        assert!(t.partitions.iter().all(|p| p.is_leader() && p.has_log()));
        assert_eq!(b.live_brokers().len(), 1);
    }

    #[tokio::test]
    async fn producer_ids_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = {
            let b = broker(dir.path());
            (
                b.allocate_producer_id().await.unwrap(),
                b.allocate_producer_id().await.unwrap(),
            )
        };
        let b = broker(dir.path());
        let c = b.allocate_producer_id().await.unwrap();
        assert_eq!(a.1, a.0 + 1);
        assert!(c > a.1);
    }
}
