//! [`Client`]: admin operations, produce and fetch over a bootstrap broker, routing partition
//! requests to the partition leader named by Metadata (one [`Connection`] per broker id).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_protocol::batch::BatchIter;
use fjord_protocol::clock::now_ms;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{check, Error, Result};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn opt_string(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|m| m.to_string())
}

fn topic_ctx(topic: &str) -> String {
    format!("topic {topic:?}")
}

pub(crate) fn partition_ctx(topic: &str, partition: i32) -> String {
    format!("partition {topic}-{partition}")
}

/// A broker as listed by Metadata or DescribeCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Only known from DescribeCluster (false from Metadata).
    pub is_fenced: bool,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition as listed by Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    pub error_code: i16,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// One topic as listed by Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: Uuid,
    pub is_internal: bool,
    pub error_code: i16,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

/// A Metadata response.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicMetadata>,
}

/// A DescribeCluster response.
#[derive(Debug, Clone)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// Kafka's ElectionType (ElectLeaders, KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the preferred (first) replica where it is in the ISR.
    Preferred = 0,
    /// Elect a leader where there is none, even an out-of-sync replica (may lose records).
    Unclean = 1,
}

/// One partition's ElectLeaders outcome (`error_code` 0: a leader was elected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default (`num.partitions`).
    pub partitions: i32,
    /// -1: the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }
}

/// What CreateTopics answered for a created (or validated) topic.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
}

/// The kind of resource in DescribeConfigs / IncrementalAlterConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic = 2,
    Broker = 4,
}

/// Kafka's `ConfigSource` values.
pub mod config_source {
    pub const UNKNOWN: i8 = 0;
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
    pub const DYNAMIC_BROKER_LOGGER_CONFIG: i8 = 6;
}

/// One config entry from DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    /// See [`config_source`].
    pub source: i8,
    pub is_sensitive: bool,
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The offset of the record with the largest timestamp.
    MaxTimestamp,
    /// The first offset whose timestamp is >= this (ms since epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// A CreateTopics request for one topic, which the broker answers within `timeout_ms`.
pub fn create_topics_request(
    topic: &NewTopic,
    timeout_ms: i32,
    validate_only: bool,
) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&topic.name))
            .with_num_partitions(topic.partitions)
            .with_replication_factor(topic.replication_factor)
            .with_configs(
                topic
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )])
        .with_timeout_ms(timeout_ms)
        .with_validate_only(validate_only)
}

/// A ListOffsets request as a consumer sends it (replica id -1, no leader epoch) for
/// `topics` (name, partitions), each partition asked for `spec`.
pub fn list_offsets_request<'a>(
    topics: impl IntoIterator<Item = (&'a str, &'a [i32])>,
    spec: OffsetSpec,
    timeout_ms: i32,
) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_timeout_ms(timeout_ms)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(
                            ps.iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(spec.wire())
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// A ListOffsets answer for one partition. `offset` is -1 when no record matches a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProduceRecord {
    pub fn new(key: Option<impl Into<Bytes>>, value: impl Into<Bytes>) -> ProduceRecord {
        ProduceRecord {
            key: key.map(Into::into),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// Produce settings.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOptions {
    /// 0 (no response), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    pub compression: Compression,
    /// How long the broker may wait for replication (`timeout_ms` in the request).
    pub timeout: Duration,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            acks: -1,
            compression: Compression::None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the broker answered for a produced batch. With acks=0 `base_offset` is -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResult {
    pub base_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// A record read by fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Fetch settings.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Upper bound on the whole response (the broker returns at least one batch regardless).
    pub max_bytes: i32,
    /// Upper bound per partition.
    pub partition_max_bytes: i32,
    /// How long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// 0 read uncommitted, 1 read committed.
    pub isolation_level: i8,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            isolation_level: 0,
        }
    }
}

/// The fetch result for one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionFetch {
    pub partition: i32,
    pub high_watermark: i64,
    /// The last stable offset: a read_committed consumer reads up to here (-1 from brokers
    /// that do not send it).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Records at or after the requested offset, control records skipped (and, for
    /// `isolation_level` 1, the records of aborted transactions).
    pub records: Vec<ConsumedRecord>,
    /// The offset to fetch next (after the last batch returned, including skipped control
    /// batches); equal to the requested offset when nothing came back.
    pub next_offset: i64,
    /// Raw record bytes returned (for throughput accounting).
    pub bytes: usize,
}

/// Client settings.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    pub connection: ConnectionConfig,
}

/// The key of the `client.id` tag that names the client's availability zone (rack), so that
/// brokers can account traffic per zone without a protocol field for it.
pub const CLIENT_ID_AZ_TAG: &str = "fjord_az";

/// `client_id` with the tag `fjord_az=<rack>` appended after a comma (`fjord-cli` becomes
/// `fjord-cli,fjord_az=b`; an empty id becomes `fjord_az=b`). A `fjord_az=` tag already in the
/// id is replaced, so the id carries one.
pub fn client_id_with_az(client_id: &str, rack: &str) -> String {
    let prefix = format!("{CLIENT_ID_AZ_TAG}=");
    let mut parts: Vec<&str> = client_id
        .split(',')
        .filter(|p| !p.is_empty() && !p.starts_with(&prefix))
        .collect();
    let tag = format!("{prefix}{rack}");
    parts.push(&tag);
    parts.join(",")
}

/// A Kafka client bound to a bootstrap broker. Share it behind an `Arc` to pipeline requests
/// from several tasks.
pub struct Client {
    bootstrap: String,
    config: ClientConfig,
    bootstrap_conn: Arc<Connection>,
    /// Broker id → connection, opened on first use.
    conns: AsyncMutex<HashMap<i32, Arc<Connection>>>,
    /// Last Metadata answer: brokers and topics by name.
    cache: StdMutex<MetadataCache>,
}

#[derive(Default)]
struct MetadataCache {
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, TopicMetadata>,
}

impl Client {
    /// Connect to `bootstrap` (`host:port`) with default settings.
    pub async fn connect(bootstrap: &str) -> Result<Client> {
        Client::connect_with(bootstrap, ClientConfig::default()).await
    }

    /// Connect to `bootstrap` (`host:port`).
    /// Connect to the first reachable address of `bootstrap`, a comma-separated list as Kafka's
    /// `bootstrap.servers` (`host1:9092,host2:9092`); the error of the last one if none is.
    pub async fn connect_with(bootstrap: &str, config: ClientConfig) -> Result<Client> {
        let mut last = None;
        let mut found = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, config.connection.clone()).await {
                Ok(conn) => {
                    found = Some((addr.to_string(), conn));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let (bootstrap, conn) = match (found, last) {
            (Some(f), _) => f,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "no bootstrap address in {bootstrap:?}"
                )))
            }
        };
        Ok(Client {
            bootstrap,
            config,
            bootstrap_conn: Arc::new(conn),
            conns: AsyncMutex::new(HashMap::new()),
            cache: StdMutex::new(MetadataCache::default()),
        })
    }

    /// The connection to the bootstrap broker (for requests this client has no method for).
    pub fn bootstrap_connection(&self) -> &Arc<Connection> {
        &self.bootstrap_conn
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    // ---- metadata ------------------------------------------------------------------------

    /// Metadata for `topics` (all topics when `None`). Refreshes the leader cache.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        self.metadata_request(topics, false).await
    }

    /// Metadata for `topics`, asking the broker to create the missing ones
    /// (`allow_auto_topic_creation`, honoured when the broker has
    /// `auto.create.topics.enable=true`), as Kafka's producer does.
    async fn metadata_request(
        &self,
        topics: Option<&[&str]>,
        allow_auto_topic_creation: bool,
    ) -> Result<ClusterMetadata> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_topic_creation);
        let response = self.bootstrap_conn.send(&request).await?;
        let brokers: Vec<BrokerInfo> = response
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: opt_string(&b.rack),
                is_fenced: false,
            })
            .collect();
        let topics: Vec<TopicMetadata> = response
            .topics
            .iter()
            .map(|t| {
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index,
                        error_code: p.error_code,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicMetadata {
                    name: t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    topic_id: t.topic_id,
                    is_internal: t.is_internal,
                    error_code: t.error_code,
                    partitions,
                }
            })
            .collect();
        {
            let mut cache = self.cache.lock().expect("cache lock");
            for b in &brokers {
                cache.brokers.insert(b.node_id, b.clone());
            }
            for t in &topics {
                if t.error_code == 0 {
                    cache.topics.insert(t.name.clone(), t.clone());
                } else {
                    cache.topics.remove(&t.name);
                }
            }
        }
        Ok(ClusterMetadata {
            cluster_id: opt_string(&response.cluster_id),
            controller_id: response.controller_id.0,
            brokers,
            topics,
        })
    }

    /// Metadata for one topic; an error if the broker reports one for it.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata> {
        let md = self.metadata(Some(&[topic])).await?;
        let t = md
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| Error::kafka(3, topic_ctx(topic), None))?;
        check(t.error_code, || topic_ctx(topic), None)?;
        Ok(t)
    }

    /// Metadata for one topic, created by the broker if it is missing and the broker
    /// auto-creates topics (as Kafka's producer and consumer do). Waits, within the request
    /// timeout, until every partition of a just-created topic has a leader. A broker that does
    /// not auto-create answers UNKNOWN_TOPIC_OR_PARTITION, reported as such with a hint.
    pub async fn topic_metadata_auto_create(&self, topic: &str) -> Result<TopicMetadata> {
        const LEADER_NOT_AVAILABLE: i16 = 5;
        const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
        let deadline = tokio::time::Instant::now() + self.config.connection.request_timeout;
        let mut backoff = std::time::Duration::from_millis(20);
        loop {
            let md = self.metadata_request(Some(&[topic]), true).await?;
            let t = md.topics.into_iter().find(|t| t.name == topic);
            let pending = match &t {
                None => true,
                Some(t) if t.error_code == LEADER_NOT_AVAILABLE => true,
                Some(t) if t.error_code == UNKNOWN_TOPIC_OR_PARTITION => {
                    return Err(Error::kafka(
                        UNKNOWN_TOPIC_OR_PARTITION,
                        topic_ctx(topic),
                        Some(
                            "the topic does not exist and the broker does not create topics \
                             on use (auto.create.topics.enable=false); create it first"
                                .to_string(),
                        ),
                    ));
                }
                Some(t) if t.error_code != 0 => {
                    return Err(Error::kafka(t.error_code, topic_ctx(topic), None))
                }
                Some(t) => t.partitions.is_empty() || t.partitions.iter().any(|p| p.leader < 0),
            };
            if !pending {
                return Ok(t.expect("checked above"));
            }
            if tokio::time::Instant::now() + backoff > deadline {
                let code = t.map_or(LEADER_NOT_AVAILABLE, |t| {
                    t.error_code.max(LEADER_NOT_AVAILABLE)
                });
                return Err(Error::kafka(
                    code,
                    topic_ctx(topic),
                    Some("no leader for every partition within the request timeout".to_string()),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
        }
    }

    /// The brokers of the Metadata answers so far (with their racks), by node id.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        let cache = self.cache.lock().expect("cache lock");
        let mut brokers: Vec<BrokerInfo> = cache.brokers.values().cloned().collect();
        brokers.sort_by_key(|b| b.node_id);
        brokers
    }

    /// Topic metadata from the cache, fetched when missing.
    async fn cached_topic(&self, topic: &str) -> Result<TopicMetadata> {
        if let Some(t) = self.cache.lock().expect("cache lock").topics.get(topic) {
            return Ok(t.clone());
        }
        self.topic_metadata(topic).await
    }

    /// Forget cached metadata for `topic` (after NOT_LEADER_OR_FOLLOWER and the like).
    pub fn invalidate(&self, topic: &str) {
        self.cache.lock().expect("cache lock").topics.remove(topic);
    }

    /// The partition count of `topic` (from cache when known).
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.cached_topic(topic).await?.partitions.len() as i32)
    }

    /// The connection to broker `node_id`, opened on first use.
    pub async fn broker_connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&node_id) {
            return Ok(c.clone());
        }
        let broker = self
            .cache
            .lock()
            .expect("cache lock")
            .brokers
            .get(&node_id)
            .cloned();
        let broker = match broker {
            Some(b) => b,
            None => {
                drop(conns);
                self.metadata(Some(&[])).await?;
                conns = self.conns.lock().await;
                self.cache
                    .lock()
                    .expect("cache lock")
                    .brokers
                    .get(&node_id)
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("unknown broker id {node_id}")))?
            }
        };
        let addr = broker.addr();
        let conn = if addr == self.bootstrap {
            self.bootstrap_conn.clone()
        } else {
            Arc::new(Connection::connect(&addr, self.config.connection.clone()).await?)
        };
        conns.insert(node_id, conn.clone());
        Ok(conn)
    }

    /// The leader connection and topic metadata for a partition.
    async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Arc<Connection>, TopicMetadata)> {
        let t = self.cached_topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| Error::kafka(3, partition_ctx(topic, partition), None))?;
        if p.leader < 0 {
            self.invalidate(topic);
            return Err(Error::kafka(5, partition_ctx(topic, partition), None));
        }
        let conn = self.broker_connection(p.leader).await?;
        Ok((conn, t))
    }

    /// Group `partitions` by leader connection.
    async fn by_leader(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(TopicMetadata, Vec<(Arc<Connection>, Vec<i32>)>)> {
        let t = self.cached_topic(topic).await?;
        let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in partitions {
            let p = t
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .ok_or_else(|| Error::kafka(3, partition_ctx(topic, partition), None))?;
            if p.leader < 0 {
                self.invalidate(topic);
                return Err(Error::kafka(5, partition_ctx(topic, partition), None));
            }
            groups.entry(p.leader).or_default().push(partition);
        }
        let mut out = Vec::new();
        for (leader, ps) in groups {
            out.push((self.broker_connection(leader).await?, ps));
        }
        Ok((t, out))
    }

    /// Invalidate the cache when a partition error means the leader moved.
    fn note_error(&self, topic: &str, code: i16) {
        // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
        // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_ID
        if matches!(code, 3 | 5 | 6 | 74 | 75 | 100) {
            self.invalidate(topic);
        }
    }

    /// The connection to the coordinator of consumer group `group` (FindCoordinator), retrying
    /// while the coordinator is still loading (COORDINATOR_NOT_AVAILABLE), within the request
    /// timeout.
    pub async fn group_coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        self.coordinator(0, group).await
    }

    /// The connection to the transaction coordinator of `transactional_id` (FindCoordinator
    /// with key type 1), retrying while it is still loading, within the request timeout.
    pub async fn transaction_coordinator(&self, transactional_id: &str) -> Result<Arc<Connection>> {
        self.coordinator(1, transactional_id).await
    }

    /// FindCoordinator for `key` of `key_type` (0 group, 1 transaction).
    async fn coordinator(&self, key_type: i8, group: &str) -> Result<Arc<Connection>> {
        const COORDINATOR_NOT_AVAILABLE: i16 = 15;
        let what = if key_type == 1 {
            "transactional id"
        } else {
            "group"
        };
        let ctx = || format!("{what} {group:?}");
        let deadline = tokio::time::Instant::now() + self.config.connection.request_timeout;
        loop {
            // v4 and later batch the keys; earlier versions carry one.
            let batched = self
                .bootstrap_conn
                .version(ApiKey::FindCoordinator)
                .is_some_and(|v| v >= 4);
            let request = if batched {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)])
            } else {
                FindCoordinatorRequest::default().with_key(s(group))
            }
            .with_key_type(key_type);
            let response = self.bootstrap_conn.send(&request).await?;
            let (code, message, node) = match response.coordinators.first() {
                Some(c) => (c.error_code, opt_string(&c.error_message), c.node_id.0),
                None => (
                    response.error_code,
                    opt_string(&response.error_message),
                    response.node_id.0,
                ),
            };
            if code == COORDINATOR_NOT_AVAILABLE && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            check(code, ctx, message)?;
            return self.broker_connection(node).await;
        }
    }

    /// DescribeCluster: cluster id, controller and brokers (with fencing state).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let response = self
            .bootstrap_conn
            .send(&DescribeClusterRequest::default())
            .await?;
        check(
            response.error_code,
            || "describe cluster".to_string(),
            opt_string(&response.error_message),
        )?;
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: opt_string(&b.rack),
                    is_fenced: b.is_fenced,
                })
                .collect(),
        })
    }

    // ---- topics --------------------------------------------------------------------------

    /// Create one topic (or only validate the request when `validate_only`).
    pub async fn create_topic(
        &self,
        topic: &NewTopic,
        validate_only: bool,
    ) -> Result<CreatedTopic> {
        let request = create_topics_request(topic, self.timeout_ms(), validate_only);
        let response = self.bootstrap_conn.send(&request).await?;
        let r = response
            .topics
            .iter()
            .find(|r| *r.name == *topic.name)
            .ok_or_else(|| {
                Error::Protocol(format!("no CreateTopics result for {:?}", topic.name))
            })?;
        check(
            r.error_code,
            || topic_ctx(&topic.name),
            opt_string(&r.error_message),
        )?;
        self.invalidate(&topic.name);
        Ok(CreatedTopic {
            name: topic.name.clone(),
            topic_id: r.topic_id,
            partitions: r.num_partitions,
            replication_factor: r.replication_factor,
        })
    }

    /// Delete a topic by name.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name(topic)))
            ])
            .with_topic_names(vec![topic_name(topic)])
            .with_timeout_ms(self.timeout_ms());
        let response = self.bootstrap_conn.send(&request).await?;
        let r = first(&response.responses, "DeleteTopics")?;
        self.invalidate(topic);
        check(
            r.error_code,
            || topic_ctx(topic),
            opt_string(&r.error_message),
        )
    }

    /// Grow `topic` to `total_count` partitions.
    pub async fn create_partitions(
        &self,
        topic: &str,
        total_count: i32,
        validate_only: bool,
    ) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total_count)])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response = self.bootstrap_conn.send(&request).await?;
        let r = first(&response.results, "CreatePartitions")?;
        self.invalidate(topic);
        check(
            r.error_code,
            || topic_ctx(topic),
            opt_string(&r.error_message),
        )
    }

    /// ElectLeaders for `partitions` (topic, partition ids), or for every partition with
    /// `None` (then the broker reports only partitions that needed an election). Per-partition
    /// failures (e.g. ELECTION_NOT_NEEDED) are in the results, not an `Err`.
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<ElectionResult>> {
        let request = ElectLeadersRequest::default()
            .with_election_type(election as i8)
            .with_topic_partitions(partitions.map(|ps| {
                ps.iter()
                    .map(|(t, ids)| {
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(topic_name(t))
                            .with_partitions(ids.clone())
                    })
                    .collect()
            }))
            .with_timeout_ms(self.timeout_ms());
        let response = self.bootstrap_conn.send(&request).await?;
        check(response.error_code, || "elect leaders".to_string(), None)?;
        let mut out = Vec::new();
        for t in &response.replica_election_results {
            self.invalidate(&t.topic);
            for p in &t.partition_result {
                out.push(ElectionResult {
                    topic: t.topic.to_string(),
                    partition: p.partition_id,
                    error_code: p.error_code,
                    error_message: opt_string(&p.error_message),
                });
            }
        }
        Ok(out)
    }

    /// Describe the configs of a resource (all keys when `keys` is `None`).
    pub async fn describe_configs(
        &self,
        resource_type: ResourceType,
        name: &str,
        keys: Option<&[&str]>,
    ) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type as i8)
                .with_resource_name(s(name))
                .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| s(k)).collect())),
        ]);
        let response = self.bootstrap_conn.send(&request).await?;
        let r = first(&response.results, "DescribeConfigs")?;
        check(
            r.error_code,
            || resource_ctx(resource_type, name),
            opt_string(&r.error_message),
        )?;
        Ok(r.configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: opt_string(&c.value),
                read_only: c.read_only,
                source: c.config_source,
                is_sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// Apply IncrementalAlterConfigs operations to a resource.
    pub async fn incremental_alter_configs(
        &self,
        resource_type: ResourceType,
        name: &str,
        ops: &[AlterConfigOp],
        validate_only: bool,
    ) -> Result<()> {
        let configs = ops
            .iter()
            .map(|op| {
                let (key, operation, value) = match op {
                    AlterConfigOp::Set(k, v) => (k, 0, Some(s(v))),
                    AlterConfigOp::Delete(k) => (k, 1, None),
                    AlterConfigOp::Append(k, v) => (k, 2, Some(s(v))),
                    AlterConfigOp::Subtract(k, v) => (k, 3, Some(s(v))),
                };
                AlterableConfig::default()
                    .with_name(s(key))
                    .with_config_operation(operation)
                    .with_value(value)
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(resource_type as i8)
                .with_resource_name(s(name))
                .with_configs(configs)])
            .with_validate_only(validate_only);
        let response = self.bootstrap_conn.send(&request).await?;
        let r = first(&response.responses, "IncrementalAlterConfigs")?;
        check(
            r.error_code,
            || resource_ctx(resource_type, name),
            opt_string(&r.error_message),
        )
    }

    // ---- offsets -------------------------------------------------------------------------

    /// ListOffsets for several partitions of a topic, routed to their leaders.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, ListedOffset>> {
        let (_, groups) = self.by_leader(topic, partitions).await?;
        let mut out = BTreeMap::new();
        for (conn, ps) in groups {
            let request = list_offsets_request([(topic, &ps[..])], spec, self.timeout_ms());
            let response = conn.send(&request).await?;
            for t in &response.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        self.note_error(topic, p.error_code);
                    }
                    check(
                        p.error_code,
                        || partition_ctx(topic, p.partition_index),
                        None,
                    )?;
                    out.insert(
                        p.partition_index,
                        ListedOffset {
                            offset: p.offset,
                            timestamp: p.timestamp,
                            leader_epoch: p.leader_epoch,
                        },
                    );
                }
            }
        }
        for p in partitions {
            if !out.contains_key(p) {
                return Err(Error::Protocol(format!(
                    "no ListOffsets answer for {}",
                    partition_ctx(topic, *p)
                )));
            }
        }
        Ok(out)
    }

    /// ListOffsets for one partition.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset> {
        let m = self.list_offsets(topic, &[partition], spec).await?;
        Ok(m[&partition])
    }

    // ---- produce -------------------------------------------------------------------------

    /// Encode `records` as one record batch v2 (offsets 0.., timestamps now unless given).
    pub fn encode_batch(records: &[ProduceRecord], compression: Compression) -> Result<Bytes> {
        Client::encode_idempotent_batch(records, compression, None)
    }

    /// [`Client::encode_batch`] for an idempotent producer: `producer` is (producer id, epoch,
    /// base sequence) as InitProducerId gave them and the partition's next sequence number.
    pub fn encode_idempotent_batch(
        records: &[ProduceRecord],
        compression: Compression,
        producer: Option<(i64, i16, i32)>,
    ) -> Result<Bytes> {
        encode_producer_batch(records, compression, producer, false)
    }

    /// [`Client::encode_idempotent_batch`] for a transactional producer: the batch is marked
    /// transactional, so it counts in the producer's open transaction on the partition (which
    /// AddPartitionsToTxn must have added first).
    pub fn encode_transactional_batch(
        records: &[ProduceRecord],
        compression: Compression,
        producer: (i64, i16, i32),
    ) -> Result<Bytes> {
        encode_producer_batch(records, compression, Some(producer), true)
    }

    /// Produce `records` as one batch to `topic`-`partition`; returns the base offset.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        options: ProduceOptions,
    ) -> Result<ProduceResult> {
        let batch = Client::encode_batch(records, options.compression)?;
        self.produce_batch(topic, partition, batch, options).await
    }

    /// Produce an already encoded record batch (see [`Client::encode_batch`]).
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        options: ProduceOptions,
    ) -> Result<ProduceResult> {
        let (conn, t) = self.leader(topic, partition).await?;
        let request = ProduceRequest::default()
            .with_acks(options.acks)
            .with_timeout_ms(options.timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_topic_id(t.topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        if options.acks == 0 {
            conn.send_oneway(&request).await?;
            return Ok(ProduceResult {
                base_offset: -1,
                log_append_time: -1,
                log_start_offset: -1,
            });
        }
        let timeout = conn.request_timeout() + options.timeout;
        let response = conn.send_with_timeout(&request, timeout).await?;
        let p = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "no Produce answer for {}",
                    partition_ctx(topic, partition)
                ))
            })?;
        if p.error_code != 0 {
            self.note_error(topic, p.error_code);
            let message = opt_string(&p.error_message).or_else(|| {
                p.record_errors
                    .first()
                    .and_then(|e| opt_string(&e.batch_index_error_message))
            });
            return Err(Error::kafka(
                p.error_code,
                partition_ctx(topic, partition),
                message,
            ));
        }
        Ok(ProduceResult {
            base_offset: p.base_offset,
            log_append_time: p.log_append_time_ms,
            log_start_offset: p.log_start_offset,
        })
    }

    // ---- fetch ---------------------------------------------------------------------------

    /// Fetch from one partition starting at `offset`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        options: FetchOptions,
    ) -> Result<PartitionFetch> {
        let mut v = self
            .fetch_many(topic, &[(partition, offset)], options)
            .await?;
        v.pop()
            .ok_or_else(|| Error::Protocol("empty Fetch response".into()))
    }

    /// Fetch from several partitions of a topic, each from its own offset. Partitions led by
    /// different brokers are fetched one broker after the other.
    pub async fn fetch_many(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
        options: FetchOptions,
    ) -> Result<Vec<PartitionFetch>> {
        let partitions: Vec<i32> = positions.iter().map(|p| p.0).collect();
        let (t, groups) = self.by_leader(topic, &partitions).await?;
        let offset_of: HashMap<i32, i64> = positions.iter().copied().collect();
        let mut out = Vec::with_capacity(positions.len());
        for (conn, ps) in groups {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(options.max_wait.as_millis().min(i32::MAX as u128) as i32)
                .with_min_bytes(options.min_bytes)
                .with_max_bytes(options.max_bytes)
                .with_isolation_level(options.isolation_level)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        ps.iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(offset_of[p])
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(options.partition_max_bytes)
                            })
                            .collect(),
                    )]);
            let timeout = conn.request_timeout() + options.max_wait;
            let response = conn.send_with_timeout(&request, timeout).await?;
            check(response.error_code, || topic_ctx(topic), None)?;
            for tr in &response.responses {
                for p in &tr.partitions {
                    if p.error_code != 0 {
                        self.note_error(topic, p.error_code);
                    }
                    check(
                        p.error_code,
                        || partition_ctx(topic, p.partition_index),
                        None,
                    )?;
                    let from = offset_of.get(&p.partition_index).copied().unwrap_or(0);
                    let raw = p.records.clone().unwrap_or_default();
                    let bytes = raw.len();
                    let (records, next_offset) = if options.isolation_level == 1 {
                        let aborted: Vec<(i64, i64)> = p
                            .aborted_transactions
                            .iter()
                            .flatten()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect();
                        decode_committed_records(p.partition_index, raw, from, &aborted)?
                    } else {
                        decode_records(p.partition_index, raw, from)?
                    };
                    out.push(PartitionFetch {
                        partition: p.partition_index,
                        high_watermark: p.high_watermark,
                        last_stable_offset: p.last_stable_offset,
                        log_start_offset: p.log_start_offset,
                        records,
                        next_offset,
                        bytes,
                    });
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn timeout_ms(&self) -> i32 {
        self.config
            .connection
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32
    }
}

fn resource_ctx(resource_type: ResourceType, name: &str) -> String {
    match resource_type {
        ResourceType::Topic => topic_ctx(name),
        ResourceType::Broker => format!("broker {name:?}"),
    }
}

/// One record batch v2 of `records`, with the producer's (id, epoch, base sequence) when
/// given, marked transactional when `transactional`.
fn encode_producer_batch(
    records: &[ProduceRecord],
    compression: Compression,
    producer: Option<(i64, i16, i32)>,
    transactional: bool,
) -> Result<Bytes> {
    let now = now_ms();

    // Without a producer the base sequence is -1 (no idempotence).
    let (producer_id, producer_epoch, base_sequence) =
        producer.unwrap_or((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes; base + i
            // keeps one batch.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp.unwrap_or(now),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (s(k), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Invalid(format!("encoding record batch: {e:#}")))?;
    Ok(buf.freeze())
}

/// Decode the complete batches in `raw`, skipping records before `from` and control records.
/// A trailing partial batch (the broker cut the response at `max_bytes`) is ignored. Returns
/// the records and the offset to fetch next.
pub fn decode_records(partition: i32, raw: Bytes, from: i64) -> Result<(Vec<ConsumedRecord>, i64)> {
    decode_isolated(partition, raw, from, None)
}

/// [`decode_records`] for a read_committed consumer, as Kafka's consumer does it: `aborted`
/// is the fetch's `aborted_transactions` (producer id, first offset). A transactional batch
/// of a producer whose aborted transaction started at or before the batch's end is dropped,
/// until that producer's ABORT marker ends the transaction.
pub fn decode_committed_records(
    partition: i32,
    raw: Bytes,
    from: i64,
    aborted: &[(i64, i64)],
) -> Result<(Vec<ConsumedRecord>, i64)> {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    // Popped from the end: the earliest first offset last.
    pending.sort_by_key(|&(pid, first)| (std::cmp::Reverse(first), pid));
    decode_isolated(partition, raw, from, Some(pending))
}

fn decode_isolated(
    partition: i32,
    raw: Bytes,
    from: i64,
    mut aborted: Option<Vec<(i64, i64)>>,
) -> Result<(Vec<ConsumedRecord>, i64)> {
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut out = Vec::new();
    let mut next = from;
    for batch in BatchIter::new(&raw) {
        let b = match batch {
            Ok(b) => b,
            // The broker cut the response at `max_bytes`: the next fetch starts there.
            Err(e) if e.is_truncated() => break,
            Err(e) => return Err(Error::Protocol(format!("record batch: {e}"))),
        };
        let base_offset = b.header.base_offset;
        let set = RecordBatchDecoder::decode(&mut raw.slice(b.position..b.end())).map_err(|e| {
            Error::Protocol(format!(
                "decoding record batch at offset {base_offset}: {e:#}"
            ))
        })?;
        next = next.max(b.header.last_offset().saturating_add(1));
        if let Some(pending) = aborted.as_mut() {
            if b.header.has_producer_id() {
                while pending
                    .last()
                    .is_some_and(|&(_, first)| first <= b.header.last_offset())
                {
                    let (pid, _) = pending.pop().expect("checked");
                    aborting.insert(pid);
                }
                let pid = b.header.producer_id;
                if b.header.is_control() {
                    let marker = fjord_protocol::control::read_marker(&raw[b.position..b.end()])
                        .map_err(|e| Error::Protocol(format!("offset {base_offset}: {e}")))?;
                    if marker.is_some_and(|m| !m.commit) {
                        aborting.remove(&pid);
                    }
                    continue;
                }
                if b.header.is_transactional() && aborting.contains(&pid) {
                    continue;
                }
            }
        }
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            out.push(ConsumedRecord {
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: r.timestamp_type,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok((out, next))
}

/// The first entry of a response list; an empty list breaks the protocol.
fn first<'a, T>(list: &'a [T], api: &str) -> Result<&'a T> {
    list.first()
        .ok_or_else(|| Error::Protocol(format!("empty {api} response")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_carries_one_az_tag() {
        assert_eq!(client_id_with_az("fjord-cli", "b"), "fjord-cli,fjord_az=b");
        assert_eq!(client_id_with_az("", "b"), "fjord_az=b");
        assert_eq!(
            client_id_with_az("app,fjord_az=a,x=1", "b"),
            "app,x=1,fjord_az=b"
        );
    }

    /// `batch` moved to `base_offset` (the CRC does not cover the base offset).
    fn at(base_offset: i64, batch: &[u8]) -> Vec<u8> {
        let mut b = batch.to_vec();
        b[..8].copy_from_slice(&base_offset.to_be_bytes());
        b
    }

    #[test]
    fn read_committed_drops_aborted_transactions_until_their_marker() {
        use fjord_protocol::control::{marker_batch, EndTxnMarker};
        let recs = |tag: &str| -> Vec<ProduceRecord> {
            (0..2)
                .map(|i| ProduceRecord::new(None::<Bytes>, format!("{tag}{i}")))
                .collect()
        };
        let txn = |pid: i64, tag: &str| {
            Client::encode_transactional_batch(&recs(tag), Compression::None, (pid, 0, 0)).unwrap()
        };
        let marker = |pid: i64, commit: bool| {
            marker_batch(
                pid,
                0,
                EndTxnMarker {
                    commit,
                    coordinator_epoch: 0,
                },
                0,
                0,
            )
        };
        let mut log = BytesMut::new();
        log.extend_from_slice(&at(0, &txn(7, "aborted")));
        log.extend_from_slice(&at(2, &marker(7, false)));
        log.extend_from_slice(&at(3, &txn(8, "committed")));
        log.extend_from_slice(&at(5, &marker(8, true)));
        log.extend_from_slice(&at(6, &txn(7, "later")));
        let log = log.freeze();
        let values = |rs: &[ConsumedRecord]| -> Vec<String> {
            rs.iter()
                .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
                .collect()
        };
        let (got, next) = decode_committed_records(0, log.clone(), 0, &[(7, 0)]).unwrap();
        assert_eq!(next, 8);
        assert_eq!(
            values(&got),
            ["committed0", "committed1", "later0", "later1"]
        );
        assert_eq!(got[0].offset, 3);
        // read_uncommitted sees everything but the markers.
        let (all, _) = decode_records(0, log, 0).unwrap();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn batch_round_trip_and_partial_tail() {
        let records: Vec<ProduceRecord> = (0..10)
            .map(|i| ProduceRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp: Some(1000 + i),
            })
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = Client::encode_batch(&records, compression).unwrap();
            // Exactly one batch.
            assert_eq!(BatchIter::whole_len(&batch), Ok(batch.len()));
            assert_eq!(BatchIter::new(&batch).count(), 1);
            let mut two = BytesMut::from(&batch[..]);
            two.extend_from_slice(&batch[..batch.len() / 2]);
            let (got, next) = decode_records(3, two.freeze(), 4).unwrap();
            assert_eq!(next, 10);
            assert_eq!(got.len(), 6);
            assert_eq!(got[0].offset, 4);
            assert_eq!(got[0].key.as_deref(), Some(&b"k4"[..]));
            assert_eq!(got[0].value.as_deref(), Some(&b"v4"[..]));
            assert_eq!(got[0].timestamp, 1004);
            assert_eq!(
                got[0].headers,
                vec![("h".to_string(), Some(Bytes::from_static(b"x")))]
            );
            assert_eq!(got[0].partition, 3);
        }
    }
}
