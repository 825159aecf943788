//! The broker's state: its view of the cluster image, the topics and partitions it knows (with
//! the logs of the replicas it hosts), producer-id allocation and fetch sessions.
//!
//! Topic lifecycle requests (create, add partitions, alter configs, delete) go to the controller
//! through [`Broker::submit`]; their effect reaches the topics only through [`Broker::publish`],
//! which applies committed metadata records, so a single node and a cluster change topics the
//! same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fjord_metadata::{
    image::invalid_topic_name, ClusterImage, ControllerReply, ControllerRequest, MetadataLog,
    MetadataRecord, PartitionState, TopicImage,
};
use fjord_protocol::error::ErrorCode;
use fjord_storage::{Log, LogConfig};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::control::{submit_error, ControlPlane, FORWARD_TIMEOUT};
use crate::fetch_session::FetchSessionCache;
use crate::metrics::Metrics;
use crate::partition::{Partition, ReplicaState};
use crate::replica_fetcher::ReplicaFetchers;
use crate::throttle::ReplicaThrottle;
use fjord_replication::Transition;
use fjord_storage::config::ThrottledReplicas;

/// Directory (under `log.dirs`) that holds the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// Directory (under `log.dirs`) of a controller's Raft log and snapshots.
pub const QUORUM_DIR: &str = "__cluster_quorum";
/// File in every partition directory naming the topic id it belongs to (as Kafka does).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Producer ids are handed out in blocks so the metadata log is not written per producer.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// The wall clock in epoch milliseconds ([`fjord_protocol::clock`], the one helper), re-exported
/// because most of the broker reads it as `crate::broker::now_ms`.
pub use fjord_protocol::clock::now_ms;

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
}

/// A batch of metadata to publish to the broker's topics.
pub enum Publish<'a> {
    /// Records that follow what was applied before.
    Records(&'a [MetadataRecord]),
    /// A whole image (startup, or a broker too far behind the log): replaces the old one.
    Image(Box<ClusterImage>),
}

/// How many more partition changes of one batch are logged one by one.
struct ChangeLog {
    left: usize,
    suppressed: usize,
}

/// What the broker does for one topic after a metadata change.
struct TopicPlan {
    image: TopicImage,
    states: Vec<Option<PartitionState>>,
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
        Ok(Broker {
            cluster_id,
            control,
            image: RwLock::new(ClusterImage::default()),
            applied: watch::channel(0).0,
            publishing: Mutex::new(()),
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
            fetchers: ReplicaFetchers::default(),
            isr_proposals: Default::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            replication_quotas: Default::default(),
            io: Arc::new(io),
            disk,
            config,
        })
    }

    /// Open a single node (no controller quorum): check `meta.properties`, replay the metadata
    /// log, register this node with its own controller, open every partition log and remove
    /// directories of deleted topics.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Broker> {
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
        Ok(broker)
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

    fn submit_local(&self, req: ControllerRequest) -> anyhow::Result<ControllerReply> {
        let ControlPlane::Local(local) = &self.control else {
            anyhow::bail!("not a single node");
        };
        crate::control::submit_local_blocking(self, local, req)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Ask the controller for a change and return once this broker has applied it.
    /// [`Broker::submit`] bounded by a request's `timeout_ms` (none when it is not positive):
    /// REQUEST_TIMED_OUT saying that `what` was not decided in time.
    pub async fn submit_within(
        &self,
        req: ControllerRequest,
        timeout_ms: i32,
        what: &str,
    ) -> Result<ControllerReply, TopicError> {
        match u64::try_from(timeout_ms) {
            Ok(ms) if ms > 0 => tokio::time::timeout(Duration::from_millis(ms), self.submit(req))
                .await
                .unwrap_or_else(|_| {
                    Err(TopicError::new(
                        ErrorCode::RequestTimedOut,
                        format!("{what} was not decided within {ms} ms"),
                    ))
                }),
            _ => self.submit(req).await,
        }
    }

    pub async fn submit(&self, req: ControllerRequest) -> Result<ControllerReply, TopicError> {
        match &self.control {
            ControlPlane::Local(local) => crate::control::submit_local(self, local, req).await,
            ControlPlane::Quorum { client, .. } => {
                let committed = client
                    .submit(req, FORWARD_TIMEOUT)
                    .await
                    .map_err(submit_error)?;
                self.wait_applied(committed.offset, FORWARD_TIMEOUT).await?;
                Ok(committed.reply)
            }
        }
    }

    /// Wait until this broker has applied the metadata log up to `offset` (exclusive).
    pub async fn wait_applied(&self, offset: i64, timeout: Duration) -> Result<(), TopicError> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|applied| *applied >= offset).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(TopicError::new(
                ErrorCode::RequestTimedOut,
                format!("the change was committed at metadata offset {offset} but this broker has not applied it yet"),
            )),
        }
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

    /// Apply a batch of committed metadata: update the image, then the topics hosted here
    /// (open logs of new local replicas, take new leaders and epochs, configs, deletions).
    /// `next_offset` is the metadata offset after the batch. The only place topics change.
    pub fn publish(&self, batch: Publish<'_>, next_offset: i64) {
        let _one_at_a_time = self.publishing.lock();
        let whole_image = matches!(batch, Publish::Image(_));
        let mut rates_changed = whole_image;
        let mut touched: BTreeSet<Uuid> = BTreeSet::new();
        let mut removed: Vec<Uuid> = Vec::new();
        // A whole image, or a broker registration (its rack may be new), changes the racks of
        // every topic for the group assignors.
        let mut all_racks = false;
        {
            let mut image = self.image.write();
            match batch {
                Publish::Records(records) => {
                    for r in records {
                        let reassigning_before = reassignment_before(&image, r);
                        crate::maintenance::observe(&self.metrics.maintenance, &image, r);
                        image.apply(r);
                        if let Some(before) = reassigning_before {
                            self.count_reassignment(&image, r, before);
                        }
                        match r {
                            MetadataRecord::Topic { id, .. }
                            | MetadataRecord::PartitionCount { id, .. }
                            | MetadataRecord::TopicConfig { id, .. } => {
                                touched.insert(*id);
                            }
                            MetadataRecord::Partition { topic_id, .. }
                            | MetadataRecord::PartitionChange { topic_id, .. } => {
                                touched.insert(*topic_id);
                            }
                            MetadataRecord::RemoveTopic { id } => {
                                touched.remove(id);
                                removed.push(*id);
                            }
                            MetadataRecord::BrokerConfig { .. } => rates_changed = true,
                            MetadataRecord::FenceBroker {
                                node_id,
                                broker_epoch,
                            } => {
                                tracing::warn!(
                                    node_id,
                                    broker_epoch,
                                    "broker fenced: it leads no partitions until it is unfenced"
                                );
                                self.metrics
                                    .broker_fencing
                                    .with_label_values(&["fence"])
                                    .inc();
                            }
                            MetadataRecord::UnfenceBroker {
                                node_id,
                                broker_epoch,
                            } => {
                                tracing::info!(node_id, broker_epoch, "broker unfenced");
                                self.metrics
                                    .broker_fencing
                                    .with_label_values(&["unfence"])
                                    .inc();
                            }
                            MetadataRecord::RegisterBroker {
                                node_id,
                                broker_epoch,
                                rack,
                                ..
                            } => {
                                all_racks = true;
                                tracing::info!(
                                    node_id,
                                    broker_epoch,
                                    rack = rack.as_deref().unwrap_or("-"),
                                    "broker registered"
                                );
                            }
                            _ => {}
                        }
                    }
                }
                Publish::Image(new) => {
                    removed = image
                        .topics()
                        .filter(|t| new.topic_by_id(&t.id).is_none())
                        .map(|t| t.id)
                        .collect();
                    touched = new.topics().map(|t| t.id).collect();
                    *image = *new;
                    all_racks = true;
                }
            }
            self.groups
                .update_topics(&image, &touched, &removed, all_racks);
            self.metrics
                .reassignments_in_progress
                .set(image.reassigning_count() as i64);
            if rates_changed {
                self.apply_throttle_rates(&image);
            }
        }
        for id in removed {
            if let Some(t) = self.topic_by_id(&id) {
                self.remove_local(&t);
            }
        }
        // A topic replaced by another of the same name (snapshot) goes first.
        let plans: Vec<TopicPlan> = {
            let image = self.image.read();
            touched
                .iter()
                .filter_map(|id| {
                    let t = image.topic_by_id(id)?;
                    let states = (0..t.partitions)
                        .map(|p| image.partition(id, p).cloned())
                        .collect();
                    Some(TopicPlan {
                        image: t.clone(),
                        states,
                    })
                })
                .collect()
        };
        for plan in &plans {
            if let Some(old) = self.topic(&plan.image.name) {
                if old.id != plan.image.id {
                    self.remove_local(&old);
                }
            }
        }
        self.reconcile(plans);
        self.metrics.metadata_offset.set(next_offset);
        self.applied.send_replace(next_offset);
    }

    /// Bring the topics of `plans` in line with the image: open the logs of replicas that now
    /// live here, give every partition its new assignment (after its log is in place, so a new
    /// leader starts from its real log end) and start or stop following, then install the
    /// topics (so new partitions appear only when they can be served).
    fn reconcile(&self, plans: Vec<TopicPlan>) {
        let me = self.node_id();
        let now = now_ms();
        // The config is shared by a topic's partitions until each log takes its copy.
        let mut to_open: Vec<(Arc<Partition>, Arc<LogConfig>)> = Vec::new();
        let mut assignments: Vec<(Arc<Partition>, ReplicaState, Arc<str>)> = Vec::new();
        let mut to_install: Vec<Arc<Topic>> = Vec::with_capacity(plans.len());
        for plan in plans {
            let t = &plan.image;
            let existing = self.topic_by_id(&t.id);
            let config = LogConfig::from_overrides(&self.config.log, &t.configs).unwrap_or_else(|e| {
                tracing::warn!(topic = %t.name, error = %e, "invalid topic config in metadata; using broker defaults");
                self.config.log.clone()
            });
            let config_changed = existing
                .as_ref()
                .is_some_and(|old| old.overrides != t.configs);
            let shared_config = Arc::new(config.clone());
            assignments.reserve(plan.states.len());
            let name: Arc<str> = existing
                .as_ref()
                .map_or_else(|| Arc::from(t.name.as_str()), |old| old.name.clone());
            let throttled_list = |key: &str| {
                t.configs
                    .get(key)
                    .and_then(|v| ThrottledReplicas::parse(v).ok())
                    .unwrap_or_default()
            };
            let leader_list = throttled_list("leader.replication.throttled.replicas");
            let follower_list = throttled_list("follower.replication.throttled.replicas");
            let partitions: Vec<Arc<Partition>> = plan
                .states
                .iter()
                .enumerate()
                .map(|(i, state)| {
                    let throttle = state.as_ref().map_or_else(Default::default, |s| {
                        ReplicaThrottle::of(
                            i as u32,
                            me,
                            &s.adding_replicas,
                            &leader_list,
                            &follower_list,
                        )
                    });
                    let state =
                        state
                            .as_ref()
                            .map_or_else(ReplicaState::unknown, |s| ReplicaState {
                                replicas: s.replicas.clone(),
                                isr: s.isr.clone(),
                                leader: s.leader,
                                leader_epoch: s.leader_epoch,
                                partition_epoch: s.partition_epoch,
                            });
                    let p = match existing.as_ref().and_then(|old| old.partitions.get(i)) {
                        Some(p) => {
                            if config_changed {
                                p.update_config(config.clone());
                            }
                            p.clone()
                        }
                        None => Arc::new(Partition::new(name.clone(), t.id, i as i32, me)),
                    };
                    if state.replicas.contains(&me) && !p.has_log() {
                        to_open.push((p.clone(), shared_config.clone()));
                    }
                    p.set_throttle(throttle);
                    assignments.push((p.clone(), state, name.clone()));
                    p
                })
                .collect();
            to_install.push(Arc::new(Topic {
                name,
                id: t.id,
                partitions,
                config,
                overrides: t.configs.clone(),
            }));
        }
        // Logs, then assignments, then the topics: a new partition becomes visible (Metadata)
        // only with its log open and its leader and replicas set — never as a leaderless
        // partition with no replicas while thousands of logs are being opened. Followers and
        // the group coordinator hold the partition itself, so they need not wait for it.
        let count = open_logs(&self.config.log_dir, &to_open, &self.metrics);
        drop(to_open);
        self.metrics.partitions.add(count as i64);
        // One line per change, but a fenced broker moves thousands of partitions in one batch:
        // past this many, changes are counted and summed up in one line.
        let mut log_budget = ChangeLog {
            left: 100,
            suppressed: 0,
        };
        for (p, state, name) in assignments {
            if &*name == crate::groups::OFFSETS_TOPIC {
                self.groups
                    .leadership_changing(self, &p, state.leader == me);
            }
            let (old, transition) = p.set_state(state.clone(), now);
            self.report_change(&name, p.index as usize, &old, &state, &mut log_budget);
            match transition {
                Transition::BecameFollower { leader } => {
                    if p.has_log() {
                        self.fetchers.follow(&p, leader, state.leader_epoch);
                    }
                }
                Transition::BecameLeader | Transition::Stopped => self.fetchers.stop(&p),
                Transition::Unchanged => {}
            }
            if !state.replicas.is_empty() && !state.replicas.contains(&me) && p.has_log() {
                // A reassignment moved the replica away: its log goes.
                self.fetchers.stop(&p);
                self.delete_replica(&p, &state);
            }
        }
        for topic in to_install {
            self.install(topic);
        }
        if log_budget.suppressed > 0 {
            tracing::warn!(
                more = log_budget.suppressed,
                "more partition leader and ISR changes in this metadata batch (counted in metrics, not logged one by one)"
            );
        }
    }

    /// Count the reassignment step `record` made (the partition was `before` it): a new target
    /// (`started`), or the end of one (`completed` when the replicas are the target it had,
    /// else `cancelled`). The active controller logs each step; every broker counts them.
    fn count_reassignment(&self, image: &ClusterImage, record: &MetadataRecord, before: Before) {
        let MetadataRecord::PartitionChange {
            topic_id,
            partition,
            ..
        } = record
        else {
            return;
        };
        let Some(after) = image.partition(topic_id, *partition) else {
            return;
        };
        let results: &[&str] = match (before.reassigning, after.is_reassigning()) {
            (_, true) if !before.reassigning || after.target_replicas() != before.target => {
                &["started"]
            }
            (true, false) if after.replicas == before.target => &["completed"],
            (true, false) => &["cancelled"],
            // Only reassignments change the replicas: one already in sync (a reorder or only
            // removals) starts and completes in one record.
            (false, false) if after.replicas != before.target => &["started", "completed"],
            _ => return,
        };
        for result in results {
            self.metrics
                .reassignments
                .with_label_values(&[result])
                .inc();
        }
    }

    /// Take this broker's replication throttle rates from the image (its own dynamic config,
    /// else the cluster default; unset is unlimited), logging a change.
    fn apply_throttle_rates(&self, image: &ClusterImage) {
        let me = self.node_id();
        let now = now_ms();
        for (key, bucket) in [
            (
                "leader.replication.throttled.rate",
                &self.replication_quotas.leader,
            ),
            (
                "follower.replication.throttled.rate",
                &self.replication_quotas.follower,
            ),
        ] {
            let rate = image
                .broker_config(me, key)
                .and_then(|v| v.trim().parse::<u64>().ok());
            let mut b = bucket.lock();
            let before = b.rate();
            b.set_rate(rate, now);
            if b.rate() != before {
                tracing::info!(
                    key,
                    bytes_per_second = ?b.rate(),
                    "replication throttle rate changed (None: unlimited)"
                );
            }
        }
    }

    /// Take the log of a partition this broker no longer hosts a replica of out of it and
    /// delete its directory (moved aside at once, removed in the background).
    fn delete_replica(&self, p: &Arc<Partition>, state: &ReplicaState) {
        if p.take_log().is_none() {
            return;
        }
        self.metrics.partitions.dec();
        self.metrics.replicas_deleted.inc();
        let dir = partition_dir(&self.config.log_dir, &p.topic, p.index);
        tracing::info!(topic = %p.topic, partition = p.index, replicas = ?state.replicas,
            dir = %dir.display(),
            "replica moved off this broker: partition log deleted");
        discard_dirs(vec![self.doomed(&dir, p.topic_id, state.partition_epoch)]);
    }

    /// Where to move a partition directory before removing it: a name no live partition
    /// uses (`*-delete`, also removed at startup if a crash interrupts the removal).
    fn doomed(&self, dir: &Path, topic_id: Uuid, epoch: i32) -> Option<PathBuf> {
        let name = dir.file_name()?.to_string_lossy().to_string();
        let to = self
            .config
            .log_dir
            .join(format!("{name}.{}.{epoch}-delete", topic_id.simple()));
        match std::fs::rename(dir, &to) {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot move a partition directory aside for deletion");
                None
            }
        }
    }

    /// Delete directories of partitions whose replicas do not include this broker (a
    /// reassignment moved them while it was down). Call once the broker has applied the
    /// metadata log up to its own registration: the image then holds everything decided
    /// before this process started, so a replica it does not list is not coming back (a later
    /// reassignment back here starts a fresh copy). One listing of `log.dirs`, under the
    /// publishing lock (no log is opened meanwhile); partitions of unknown topics and without
    /// a state are left alone. Blocking: file-system calls.
    pub fn remove_stray_partition_dirs(&self) {
        let _one_at_a_time = self.publishing.lock();
        let Ok(entries) = std::fs::read_dir(&self.config.log_dir) else {
            return;
        };
        let me = self.node_id();
        let image = self.image.read();
        let mut doomed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with("-delete") || name == METADATA_DIR || name == QUORUM_DIR {
                continue;
            }
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let (Some(t), Ok(index)) = (image.topic(topic), index.parse::<u32>()) else {
                continue;
            };
            let Some(state) = image.partition(&t.id, index) else {
                continue;
            };
            if state.replicas.contains(&me) || !e.path().is_dir() {
                continue;
            }
            // Never one whose log is open here (it is still being served).
            if self
                .partition(topic, index as i32)
                .is_some_and(|p| p.has_log())
            {
                continue;
            }
            tracing::info!(topic, partition = index, replicas = ?state.replicas,
                dir = %e.path().display(),
                "this broker is no longer a replica of the partition: deleting its stray log");
            self.metrics.replicas_deleted.inc();
            doomed.push(self.doomed(&e.path(), t.id, state.partition_epoch));
        }
        drop(image);
        discard_dirs(doomed);
    }

    /// Log and count what an operator cares about in a partition's new state: leader changes
    /// (INFO) and ISR shrinks and expands (WARN, with the replicas that left or joined).
    fn report_change(
        &self,
        topic: &str,
        partition: usize,
        old: &ReplicaState,
        new: &ReplicaState,
        budget: &mut ChangeLog,
    ) {
        if old.replicas.is_empty() {
            return; // first state seen here: not a change
        }
        if old.leader == new.leader && old.isr == new.isr {
            return;
        }
        if new.leader != old.leader && new.leader >= 0 && !old.isr.contains(&new.leader) {
            // Never budget-suppressed: every one may have lost acknowledged records.
            self.metrics.unclean_elections.inc();
            tracing::warn!(topic, partition, leader = new.leader, previous_isr = ?old.isr,
                leader_epoch = new.leader_epoch,
                "unclean leader election applied: the new leader was not in the ISR");
        }
        if budget.left == 0 {
            budget.suppressed += 1;
            let shrink = old.isr.iter().any(|r| !new.isr.contains(r));
            let expand = new.isr.iter().any(|r| !old.isr.contains(r));
            if old.leader != new.leader {
                self.metrics.leader_changes.inc();
            }
            if shrink {
                self.metrics
                    .isr_changes
                    .with_label_values(&["shrink"])
                    .inc();
            }
            if expand {
                self.metrics
                    .isr_changes
                    .with_label_values(&["expand"])
                    .inc();
            }
            return;
        }
        budget.left -= 1;
        if old.leader != new.leader {
            tracing::info!(
                topic,
                partition,
                leader = new.leader,
                previous = old.leader,
                leader_epoch = new.leader_epoch,
                "partition leader changed"
            );
            self.metrics.leader_changes.inc();
        }
        let left: Vec<i32> = old
            .isr
            .iter()
            .filter(|r| !new.isr.contains(r))
            .copied()
            .collect();
        let joined: Vec<i32> = new
            .isr
            .iter()
            .filter(|r| !old.isr.contains(r))
            .copied()
            .collect();
        if !left.is_empty() {
            tracing::warn!(topic, partition, removed = ?left, isr = ?new.isr, leader = new.leader,
                "ISR shrink");
            self.metrics
                .isr_changes
                .with_label_values(&["shrink"])
                .inc();
        }
        if !joined.is_empty() {
            tracing::warn!(topic, partition, added = ?joined, isr = ?new.isr, leader = new.leader,
                "ISR expand");
            self.metrics
                .isr_changes
                .with_label_values(&["expand"])
                .inc();
        }
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

    /// Create a topic (or, with `validate_only`, check that it could be created). -1 partitions
    /// or replication factor take the broker defaults. Returns the partition count, the
    /// replication factor and, unless validating, the topic as published here.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.check_new_topic(name)?;
        let partitions = if num_partitions == -1 {
            self.config.num_partitions
        } else {
            num_partitions
        };
        if partitions < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Number of partitions must be larger than 0 (got {num_partitions})."),
            ));
        }
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf < 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("Replication factor must be larger than 0 (got {replication_factor})."),
            ));
        }
        self.check_topic_configs(&configs)?;
        let request = ControllerRequest::CreateTopic {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions: partitions as u32,
            replication_factor: rf as u16,
            configs,
            validate_only,
        };
        self.submit_create_topic(name, partitions as u32, rf as u16, request, validate_only)
            .await
    }

    /// Create a topic with the replicas of each partition given (partition `i` is
    /// `assignments[i]`, preferred leader first); the controller checks the brokers.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.check_new_topic(name)?;
        self.check_topic_configs(&configs)?;
        let partitions = assignments.len() as u32;
        let rf = assignments.first().map_or(0, |r| r.len() as u16);
        let request = ControllerRequest::CreateTopicAssigned {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            assignments,
            configs,
            validate_only,
        };
        self.submit_create_topic(name, partitions, rf, request, validate_only)
            .await
    }

    /// A new topic's name is valid and free.
    fn check_new_topic(&self, name: &str) -> Result<(), TopicError> {
        if let Some(why) = invalid_topic_name(name) {
            return Err(TopicError::new(ErrorCode::InvalidTopicException, why));
        }
        if self.topic(name).is_some() {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        Ok(())
    }

    /// A new topic's config overrides are valid.
    fn check_topic_configs(&self, configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
        LogConfig::from_overrides(&self.config.log, configs)
            .map(|_| ())
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))
    }

    async fn submit_create_topic(
        &self,
        name: &str,
        partitions: u32,
        rf: u16,
        request: ControllerRequest,
        validate_only: bool,
    ) -> Result<(u32, u16, Option<Arc<Topic>>), TopicError> {
        self.submit(request).await?;
        if validate_only {
            return Ok((partitions, rf, None));
        }
        let topic = self.existing_topic(name)?;
        tracing::info!(topic = name, id = %topic.id, partitions, replication_factor = rf, "topic created");
        Ok((partitions, rf, Some(topic)))
    }

    /// Grow a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
            ));
        }
        self.submit(ControllerRequest::CreatePartitions {
            name: name.to_string(),
            total: count as u32,
            validate_only,
        })
        .await?;
        if !validate_only {
            tracing::info!(topic = name, from = current, to = count, "partitions added");
        }
        Ok(())
    }

    /// Apply config changes (`None` removes an override) after validating all of them.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let topic = self.existing_topic(name)?;
        let mut overrides = topic.overrides.clone();
        for (k, v) in changes {
            match v {
                Some(v) => {
                    overrides.insert(k.clone(), v.clone());
                }
                None => {
                    if fjord_storage::config::topic_config(k).is_none() {
                        return Err(TopicError::new(
                            ErrorCode::InvalidConfig,
                            format!("unknown topic config '{k}'"),
                        ));
                    }
                    overrides.remove(k);
                }
            }
        }
        LogConfig::from_overrides(&self.config.log, &overrides)
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        self.submit(ControllerRequest::AlterTopicConfigs {
            name: name.to_string(),
            changes: changes.to_vec(),
        })
        .await?;
        tracing::info!(topic = name, ?changes, "topic config changed");
        Ok(())
    }

    /// Set or remove dynamic broker configs (the replication throttle rates) of broker
    /// `node_id` or the cluster default. The controller checks keys and values; with
    /// `validate_only` only the check runs.
    pub async fn alter_broker_configs(
        &self,
        node_id: Option<i32>,
        changes: Vec<(String, Option<String>)>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        if validate_only {
            return fjord_metadata::rpc::check_broker_config_changes(&changes)
                .map_err(|e| TopicError::new(ErrorCode::from_i16(e.code()), e.to_string()));
        }
        self.submit(ControllerRequest::AlterBrokerConfigs {
            node_id,
            changes: changes.clone(),
        })
        .await?;
        tracing::info!(
            broker = node_id.map_or_else(|| "cluster default".to_string(), |n| n.to_string()),
            ?changes,
            "dynamic broker config changed"
        );
        Ok(())
    }

    /// Delete a topic. Every broker moves its directories aside and removes them in the
    /// background when it applies the deletion; a topic recreated with the same name gets a new
    /// id and fresh directories.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::new(
                ErrorCode::TopicDeletionDisabled,
                "Topic deletion is disabled (delete.topic.enable=false).",
            ));
        }
        self.existing_topic(name)?;
        self.submit(ControllerRequest::DeleteTopic {
            name: name.to_string(),
        })
        .await?;
        Ok(())
    }

    /// Take a deleted topic out of the map and remove its local directories.
    fn remove_local(&self, topic: &Arc<Topic>) {
        {
            let mut t = self.topics.write();
            if t.by_id
                .get(&topic.id)
                .is_some_and(|x| Arc::ptr_eq(x, topic))
            {
                t.by_id.remove(&topic.id);
            }
            if t.by_name
                .get(&*topic.name)
                .is_some_and(|x| Arc::ptr_eq(x, topic))
            {
                t.by_name.remove(&*topic.name);
            }
        }
        let mut doomed = Vec::new();
        let mut hosted = 0;
        for p in &topic.partitions {
            self.fetchers.stop(p);
            if p.take_log().is_none() {
                continue;
            }
            hosted += 1;
            let from = partition_dir(&self.config.log_dir, &topic.name, p.index);
            let to = self.config.log_dir.join(format!(
                "{}-{}.{}-delete",
                topic.name,
                p.index,
                topic.id.simple()
            ));
            match std::fs::rename(&from, &to) {
                Ok(()) => doomed.push(to),
                Err(e) => {
                    tracing::warn!(dir = %from.display(), error = %e, "cannot move deleted partition aside")
                }
            }
        }
        self.metrics.partitions.sub(hosted);
        if !doomed.is_empty() {
            std::thread::spawn(move || {
                for d in doomed {
                    if let Err(e) = std::fs::remove_dir_all(&d) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot remove deleted partition");
                    }
                }
            });
        }
        tracing::info!(topic = %topic.name, id = %topic.id, "topic deleted");
    }

    fn install(&self, topic: Arc<Topic>) {
        let mut t = self.topics.write();
        t.by_id.insert(topic.id, topic.clone());
        t.by_name.insert(topic.name.to_string(), topic);
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

    /// Flush and close every log (clean shutdown: the next start skips recovery).
    pub fn close_logs(&self) {
        for p in self.all_partitions() {
            if let Some(log) = p.take_log() {
                let dir = log.dir().to_path_buf();
                if let Err(e) = log.close() {
                    tracing::warn!(dir = %dir.display(), error = %e, "closing log failed");
                }
            }
        }
    }
}

/// A partition's reassignment state before a record that may change it.
struct Before {
    reassigning: bool,
    target: Vec<i32>,
}

/// The reassignment state of the partition `record` changes, if it touches its replicas or
/// its adding or removing replicas.
fn reassignment_before(image: &ClusterImage, record: &MetadataRecord) -> Option<Before> {
    match record {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            replicas,
            adding_replicas,
            removing_replicas,
            ..
        } if replicas.is_some() || adding_replicas.is_some() || removing_replicas.is_some() => {
            image.partition(topic_id, *partition).map(|s| Before {
                reassigning: s.is_reassigning(),
                target: s.target_replicas(),
            })
        }
        _ => None,
    }
}

/// Remove directories already moved aside, on a background thread.
fn discard_dirs(doomed: Vec<Option<PathBuf>>) {
    let doomed: Vec<PathBuf> = doomed.into_iter().flatten().collect();
    if doomed.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for d in doomed {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot remove a deleted partition directory");
            }
        }
    });
}

pub fn partition_dir(root: &Path, topic: &str, index: i32) -> PathBuf {
    root.join(format!("{topic}-{index}"))
}

/// Threads opening logs at startup. Each open is a few small synchronous file-system calls
/// (a directory listing, a `stat`, a small read); with a cold cache each waits on a random
/// read, so many threads keep the device busy. 100,000 partitions on 2 cores, after
/// `drop_caches`: 8 threads 10.7-26 s, 32 threads 6.8-7.2 s, 64 threads 5.6-6.5 s; with a
/// warm cache all ~1.5 s.
const LOG_OPEN_THREADS: usize = 64;

/// Open the logs of `work` on [`LOG_OPEN_THREADS`] threads and install each in its partition
/// as soon as it is open; returns how many opened. Logs are installed where they are opened
/// rather than collected: 100,000 of them in one vector is ~50 MB, and growing it leaves the
/// allocator holding more.
fn open_logs(
    root: &Path,
    work: &[(Arc<Partition>, Arc<LogConfig>)],
    metrics: &crate::metrics::Metrics,
) -> usize {
    use std::sync::atomic::AtomicUsize;
    let open_one = |(p, c): &(Arc<Partition>, Arc<LogConfig>)| -> bool {
        match open_partition_log(root, &p.topic, p.topic_id, p.index, c) {
            Ok((log, report)) => {
                // A torn tail after a crash is routine (storage warns); lost files or
                // segments are not.
                if !report.corrupt_files.is_empty() || report.deleted_segments > 0 {
                    tracing::error!(topic = %p.topic, partition = p.index,
                        corrupt_files = report.corrupt_files.len(),
                        truncated_bytes = report.truncated_bytes,
                        deleted_segments = report.deleted_segments,
                        "partition log opened without data that was unreadable on disk");
                }
                if !report.is_clean() {
                    metrics.note_log_open(&report);
                }
                p.install_log(log);
                true
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %format!("{e:#}"), "cannot open partition log");
                false
            }
        }
    };
    if work.len() < 8 {
        return work.iter().filter(|w| open_one(w)).count();
    }
    let threads = LOG_OPEN_THREADS.min(work.len());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut opened = 0;
                    while let Some(w) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        opened += open_one(w) as usize;
                    }
                    opened
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("log opening thread panicked"))
            .sum()
    })
}

/// Open a partition directory, first moving aside one that belongs to an older topic of the
/// same name (its `partition.metadata` names another topic id).
fn open_partition_log(
    root: &Path,
    topic: &str,
    id: Uuid,
    index: i32,
    config: &LogConfig,
) -> anyhow::Result<(Log, fjord_storage::OpenReport)> {
    let dir = partition_dir(root, topic, index);
    let meta = dir.join(PARTITION_METADATA_FILE);
    let expected = format!("version: 0\ntopic_id: {id}\n");
    // The common case on a restart (the file names this topic) costs one open and read.
    let found = read_small_file(&meta, expected.len());
    if !matches!(&found, Ok(s) if *s == expected.as_bytes()) {
        if found.is_ok() {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to a deleted topic; removing it");
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        if !meta.exists() {
            let tmp = dir.join("partition.metadata.tmp");
            std::fs::write(&tmp, &expected)?;
            std::fs::rename(&tmp, &meta)?;
        }
    }
    Log::open_with_report(&dir, config.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// The contents of a file expected to hold about `expect` bytes, with one `read` when it does
/// (no `stat` for a size hint, as `std::fs::read` makes).
fn read_small_file(path: &Path, expect: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    // One byte more than expected, so a longer file needs a second read to be seen whole.
    let mut buf = vec![0u8; expect + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                // A regular file returns fewer bytes than asked only at its end.
                if len < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Remove `*-delete` directories left by a crash during deletion, and partition directories of
/// topics that no longer exist.
fn remove_stale_partition_dirs(root: &Path, topics: &Topics) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // The type comes with the listing (no `stat` per entry), except for symlinks.
        let is_dir = match e.file_type() {
            Ok(t) if t.is_symlink() => e.path().is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if name == METADATA_DIR || name == QUORUM_DIR || !is_dir {
            continue;
        }
        let stale = if name.ends_with("-delete") {
            true
        } else if let Some((topic, idx)) = name.rsplit_once('-') {
            match (topics.by_name.get(topic), idx.parse::<usize>()) {
                (Some(t), Ok(i)) => i >= t.partitions.len(),
                _ => true,
            }
        } else {
            false
        };
        if stale {
            tracing::info!(dir = %e.path().display(), "removing directory of a deleted topic");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The cluster id of a quorum: derived from `controller.quorum.voters`, so every node of the
/// cluster computes the same id without a separate format step.
fn quorum_cluster_id(voters: &BTreeMap<u64, String>) -> String {
    let text: String = voters.iter().map(|(id, a)| format!("{id}@{a},")).collect();
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x84222325_cbf29ce4);
    base64_uuid(Uuid::from_u64_pair(hi, lo))
}

/// Read or create `meta.properties` (cluster.id, node.id) like Kafka; a node id or cluster id
/// that does not match the data directory is a startup error. `cluster_id` is the id a quorum
/// member must have; a single node makes a random one on first start.
fn load_meta_properties(
    dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> anyhow::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut cluster = None;
        let mut node = None;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "cluster.id" => cluster = Some(v.trim().to_string()),
                    "node.id" => node = v.trim().parse::<i32>().ok(),
                    _ => {}
                }
            }
        }
        if let Some(n) = node {
            if n != node_id {
                anyhow::bail!(
                    "node.id {node_id} does not match node.id {n} in {}; use the same node.id or another log.dirs",
                    path.display()
                );
            }
        }
        if let Some(c) = cluster {
            if let Some(want) = cluster_id {
                if c != want {
                    anyhow::bail!(
                        "{} belongs to cluster {c}, but controller.quorum.voters makes this cluster {want}; use another log.dirs",
                        path.display()
                    );
                }
            }
            return Ok(c);
        }
    }
    let cluster_id = cluster_id.map_or_else(|| base64_uuid(Uuid::new_v4()), str::to_string);
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"),
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(cluster_id)
}

/// Kafka prints cluster ids as URL-safe base64 of a UUID without padding.
fn base64_uuid(id: Uuid) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc = 0u32;
    let mut bits = 0;
    for &byte in b {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(dir: &Path) -> Broker {
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.display().to_string());
        Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap()
    }

    #[test]
    fn cluster_id_is_stable_and_22_chars() {
        let dir = tempfile::tempdir().unwrap();
        let a = broker(dir.path()).cluster_id.clone();
        let b = broker(dir.path()).cluster_id.clone();
        assert_eq!(a, b);
        assert_eq!(a.len(), 22);
    }

    #[tokio::test]
    async fn topic_lifecycle_survives_restart_and_recreate_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let (_, _, t) = b
            .create_topic("t", 2, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let t = t.unwrap();
        assert!(t
            .partitions
            .iter()
            .all(|p| p.is_leader() && p.leader_epoch() == 0));
        let e = b
            .create_topic("t", 2, 1, BTreeMap::new(), false)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TopicAlreadyExists);
        let code = |r: Result<(u32, u16, Option<Arc<Topic>>), TopicError>| r.unwrap_err().code;
        assert_eq!(
            code(
                b.create_topic("bad/name", 1, 1, BTreeMap::new(), false)
                    .await
            ),
            ErrorCode::InvalidTopicException
        );
        assert_eq!(
            code(b.create_topic("x", 1, 3, BTreeMap::new(), false).await),
            ErrorCode::InvalidReplicationFactor
        );
        // Validation only: nothing is created.
        b.create_topic("v", 4, 1, BTreeMap::new(), true)
            .await
            .unwrap();
        assert!(b.topic("v").is_none());
        b.create_partitions("t", 3, false).await.unwrap();
        assert_eq!(
            b.create_partitions("t", 2, false).await.unwrap_err().code,
            ErrorCode::InvalidPartitions
        );
        b.alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))], false)
            .await
            .unwrap();
        assert_eq!(
            b.alter_topic_configs("t", &[("retention.ms".into(), Some("x".into()))], false)
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidConfig
        );
        let epoch = b.broker_epoch();
        assert!(epoch >= 0);
        let id = t.id;
        drop(t);
        drop(b);
        let b = broker(dir.path());
        // A single node keeps its registration across restarts.
        assert_eq!(b.broker_epoch(), epoch);
        let t = b.topic("t").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partitions.len(), 3);
        assert!(t.partitions.iter().all(|p| p.has_log() && p.is_leader()));
        assert_eq!(t.config.retention_ms, 1000);
        b.delete_topic("t").await.unwrap();
        assert!(b.topic("t").is_none());
        let (_, _, t2) = b
            .create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let t2 = t2.unwrap();
        assert_ne!(t2.id, id);
        assert_eq!(t2.partitions[0].offsets(), Some((0, 0)));
        // The old partition must not accept writes any more.
        assert!(t.partitions[0].offsets().is_none());
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
