//! The broker's state: the cluster image (through the metadata log), the partitions hosted
//! here, producer-id allocation and fetch sessions. Topic lifecycle (create, add partitions,
//! alter configs, delete) lives here so every handler goes through one place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fjord_metadata::{image::invalid_topic_name, MetadataLog, MetadataRecord, TopicImage};
use fjord_protocol::error::ErrorCode;
use fjord_storage::{Log, LogConfig};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::fetch_session::FetchSessionCache;
use crate::metrics::Metrics;
use crate::partition::Partition;

/// Directory (under `log.dirs`) that holds the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// File in every partition directory naming the topic id it belongs to (as Kafka does).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Producer ids are handed out in blocks so the metadata log is not written per producer.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
    metadata: Mutex<MetadataLog>,
    topics: RwLock<Topics>,
    producer_ids: Mutex<(i64, i64)>,
    pub fetch_sessions: Mutex<FetchSessionCache>,
    pub metrics: Metrics,
    advertised: RwLock<(String, u16)>,
    /// The group coordinator (classic and KIP-848 groups, committed offsets).
    pub groups: crate::groups::GroupRuntime,
}

impl Broker {
    /// Open the data directory: check `meta.properties`, replay the metadata log, remove
    /// directories of deleted topics, and open every partition log.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Broker> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create log.dirs {}: {e}", dir.display()))?;
        let cluster_id = load_meta_properties(&dir, config.node_id)?;
        let metadata = MetadataLog::open(&dir.join(METADATA_DIR))?;
        let mut topics = Topics::default();
        let started = std::time::Instant::now();
        let images: Vec<&TopicImage> = metadata.image().topics().collect();
        for (t, topic) in images.iter().zip(open_topics(&dir, &config.log, &images)?) {
            topics.by_id.insert(t.id, topic.clone());
            topics.by_name.insert(t.name.clone(), topic);
        }
        remove_stale_partition_dirs(&dir, &topics);
        let partitions: usize = topics.by_name.values().map(|t| t.partitions.len()).sum();
        tracing::info!(topics = topics.by_name.len(), partitions,
            elapsed_ms = started.elapsed().as_millis() as u64, dir = %dir.display(), "logs loaded");
        let next_pid = metadata.image().next_producer_id();
        let fetch_sessions = FetchSessionCache::new(config.fetch_session_cache_slots);
        let metrics = Metrics::new();
        metrics.partitions.set(partitions as i64);
        Ok(Broker {
            cluster_id,
            metadata: Mutex::new(metadata),
            topics: RwLock::new(topics),
            producer_ids: Mutex::new((next_pid, next_pid)),
            fetch_sessions: Mutex::new(fetch_sessions),
            metrics,
            advertised: RwLock::new(("127.0.0.1".into(), 0)),
            groups: crate::groups::GroupRuntime::new(config.group.clone()),
            config,
        })
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

    /// Validate a CreateTopics entry and return (partitions, effective config) without
    /// changing anything.
    pub fn validate_new_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(u32, LogConfig), TopicError> {
        if let Some(why) = invalid_topic_name(name) {
            return Err(TopicError::new(ErrorCode::InvalidTopicException, why));
        }
        if self.topic(name).is_some() {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
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
        if rf > 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."),
            ));
        }
        let config = LogConfig::from_overrides(&self.config.log, configs)
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        Ok((partitions as u32, config))
    }

    /// Create a topic (already validated by [`Broker::validate_new_topic`] semantics, which
    /// this repeats under the metadata lock).
    pub fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut md = self.metadata.lock();
        let (partitions, _) =
            self.validate_new_topic(name, num_partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        let record = MetadataRecord::Topic {
            name: name.to_string(),
            id,
            partitions,
            configs,
        };
        md.append(record).map_err(storage_error)?;
        let image = md.image().topic(name).expect("just created").clone();
        let topic = open_topic(&self.config.log_dir, &self.config.log, &image)
            .map_err(|e| TopicError::new(ErrorCode::KafkaStorageError, format!("{e:#}")))?;
        self.install(topic.clone());
        self.metrics.partitions.add(topic.partitions.len() as i64);
        tracing::info!(topic = name, %id, partitions, "topic created");
        Ok(topic)
    }

    /// Grow a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut md = self.metadata.lock();
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
            ));
        }
        if validate_only {
            return Ok(());
        }
        md.append(MetadataRecord::PartitionCount {
            id: topic.id,
            partitions: count as u32,
        })
        .map_err(storage_error)?;
        let mut parts = topic.partitions.clone();
        for i in current..count {
            let log = open_partition_log(
                &self.config.log_dir,
                &topic.name,
                topic.id,
                i,
                &topic.config,
            )
            .map_err(|e| TopicError::new(ErrorCode::KafkaStorageError, format!("{e:#}")))?;
            parts.push(Arc::new(Partition::new(
                topic.name.clone(),
                topic.id,
                i,
                log,
            )));
        }
        self.install(Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: parts,
            config: topic.config.clone(),
            overrides: topic.overrides.clone(),
        }));
        self.metrics.partitions.add((count - current) as i64);
        tracing::info!(topic = name, from = current, to = count, "partitions added");
        Ok(())
    }

    /// Apply config changes (`None` removes an override) after validating all of them.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut md = self.metadata.lock();
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
        let config = LogConfig::from_overrides(&self.config.log, &overrides)
            .map_err(|e| TopicError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        for (k, v) in changes {
            md.append(MetadataRecord::TopicConfig {
                id: topic.id,
                key: k.clone(),
                value: v.clone(),
            })
            .map_err(storage_error)?;
        }
        for p in &topic.partitions {
            p.update_config(config.clone());
        }
        self.install(Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            config,
            overrides,
        }));
        tracing::info!(topic = name, ?changes, "topic config changed");
        Ok(())
    }

    /// Delete a topic: record the deletion, then move its directories aside and remove them in
    /// the background. A topic recreated with the same name gets a new id and fresh directories.
    pub fn delete_topic(&self, topic: &Arc<Topic>) -> Result<(), TopicError> {
        if !self.config.delete_topic_enable {
            return Err(TopicError::new(
                ErrorCode::TopicDeletionDisabled,
                "Topic deletion is disabled (delete.topic.enable=false).",
            ));
        }
        let mut md = self.metadata.lock();
        if self.topic_by_id(&topic.id).is_none() {
            return Err(TopicError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("Topic '{}' does not exist.", topic.name),
            ));
        }
        md.append(MetadataRecord::RemoveTopic { id: topic.id })
            .map_err(storage_error)?;
        {
            let mut t = self.topics.write();
            t.by_name.remove(&*topic.name);
            t.by_id.remove(&topic.id);
        }
        let mut doomed = Vec::new();
        for p in &topic.partitions {
            drop(p.take_log());
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
        drop(md);
        self.metrics.partitions.sub(topic.partitions.len() as i64);
        std::thread::spawn(move || {
            for d in doomed {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot remove deleted partition");
                }
            }
        });
        tracing::info!(topic = %topic.name, id = %topic.id, "topic deleted");
        Ok(())
    }

    fn install(&self, topic: Arc<Topic>) {
        let mut t = self.topics.write();
        t.by_id.insert(topic.id, topic.clone());
        t.by_name.insert(topic.name.to_string(), topic);
    }

    /// A new producer id (idempotent producer). Ids are reserved in blocks in the metadata log
    /// so they stay unique across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let mut ids = self.producer_ids.lock();
        if ids.0 >= ids.1 {
            let next = ids.1 + PRODUCER_ID_BLOCK;
            self.metadata
                .lock()
                .append(MetadataRecord::ProducerIds { next })
                .map_err(storage_error)?;
            ids.1 = next;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Every hosted partition (for maintenance and metrics).
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .by_name
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
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

fn storage_error(e: fjord_metadata::StoreError) -> TopicError {
    tracing::error!(error = %e, "metadata log write failed");
    TopicError::new(ErrorCode::KafkaStorageError, e.to_string())
}

pub fn partition_dir(root: &Path, topic: &str, index: i32) -> PathBuf {
    root.join(format!("{topic}-{index}"))
}

/// Open every partition log of `images` on a few threads: startup with many partitions is
/// dominated by small synchronous file-system calls (directory listings, checkpoint and index
/// reads), which overlap well even on few cores.
fn open_topics(
    root: &Path,
    base: &LogConfig,
    images: &[&TopicImage],
) -> anyhow::Result<Vec<Arc<Topic>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let configs = images
        .iter()
        .map(|t| {
            LogConfig::from_overrides(base, &t.configs)
                .map_err(|e| anyhow::anyhow!("topic {}: {e}", t.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<Arc<str>> = images.iter().map(|t| Arc::from(t.name.as_str())).collect();
    let work: Vec<(usize, i32)> = images
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| (0..t.partitions as i32).map(move |p| (ti, p)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_mul(4)
        .clamp(1, 16)
        .min(work.len().max(1));
    let next = AtomicUsize::new(0);
    let opened: Vec<Vec<(usize, anyhow::Result<Log>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(ti, p)) = work.get(i) else { break };
                        let t = images[ti];
                        out.push((i, open_partition_log(root, &t.name, t.id, p, &configs[ti])));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("log opening thread panicked"))
            .collect()
    });
    let mut logs: Vec<Option<Log>> = (0..work.len()).map(|_| None).collect();
    for (i, log) in opened.into_iter().flatten() {
        logs[i] = Some(log?);
    }
    let mut logs = logs.into_iter().map(|l| l.expect("every partition opened"));
    Ok(images
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = (0..t.partitions as i32)
                .map(|p| {
                    let log = logs.next().expect("one log per partition");
                    Arc::new(Partition::new(names[ti].clone(), t.id, p, log))
                })
                .collect();
            Arc::new(Topic {
                name: names[ti].clone(),
                id: t.id,
                partitions,
                config: configs[ti].clone(),
                overrides: t.configs.clone(),
            })
        })
        .collect())
}

fn open_topic(root: &Path, base: &LogConfig, t: &TopicImage) -> anyhow::Result<Arc<Topic>> {
    let config = LogConfig::from_overrides(base, &t.configs)
        .map_err(|e| anyhow::anyhow!("topic {}: {e}", t.name))?;
    let name: Arc<str> = Arc::from(t.name.as_str());
    let mut partitions = Vec::with_capacity(t.partitions as usize);
    for i in 0..t.partitions as i32 {
        let log = open_partition_log(root, &name, t.id, i, &config)?;
        partitions.push(Arc::new(Partition::new(name.clone(), t.id, i, log)));
    }
    Ok(Arc::new(Topic {
        name,
        id: t.id,
        partitions,
        config,
        overrides: t.configs.clone(),
    }))
}

/// Open a partition directory, first moving aside one that belongs to an older topic of the
/// same name (its `partition.metadata` names another topic id).
fn open_partition_log(
    root: &Path,
    topic: &str,
    id: Uuid,
    index: i32,
    config: &LogConfig,
) -> anyhow::Result<Log> {
    let dir = partition_dir(root, topic, index);
    let meta = dir.join(PARTITION_METADATA_FILE);
    let expected = format!("version: 0\ntopic_id: {id}\n");
    match std::fs::read_to_string(&meta) {
        Ok(s) if s == expected => {}
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to a deleted topic; removing it");
            std::fs::remove_dir_all(&dir)?;
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(&dir)?;
    if !meta.exists() {
        let tmp = dir.join("partition.metadata.tmp");
        std::fs::write(&tmp, &expected)?;
        std::fs::rename(&tmp, &meta)?;
    }
    Log::open(&dir, config.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// Remove `*-delete` directories left by a crash during deletion, and partition directories of
/// topics that no longer exist.
fn remove_stale_partition_dirs(root: &Path, topics: &Topics) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == METADATA_DIR || !e.path().is_dir() {
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

/// Read or create `meta.properties` (cluster.id, node.id) like Kafka; a node id that does not
/// match the data directory is a startup error.
fn load_meta_properties(dir: &Path, node_id: i32) -> anyhow::Result<String> {
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
            return Ok(c);
        }
    }
    let cluster_id = base64_uuid(Uuid::new_v4());
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

    #[test]
    fn topic_lifecycle_survives_restart_and_recreate_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let t = b.create_topic("t", 2, 1, BTreeMap::new()).unwrap();
        let e = b.create_topic("t", 2, 1, BTreeMap::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::TopicAlreadyExists);
        assert_eq!(
            b.create_topic("bad/name", 1, 1, BTreeMap::new())
                .unwrap_err()
                .code,
            ErrorCode::InvalidTopicException
        );
        assert_eq!(
            b.create_topic("x", 1, 3, BTreeMap::new()).unwrap_err().code,
            ErrorCode::InvalidReplicationFactor
        );
        b.create_partitions("t", 3, false).unwrap();
        assert_eq!(
            b.create_partitions("t", 2, false).unwrap_err().code,
            ErrorCode::InvalidPartitions
        );
        b.alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))], false)
            .unwrap();
        assert_eq!(
            b.alter_topic_configs("t", &[("retention.ms".into(), Some("x".into()))], false)
                .unwrap_err()
                .code,
            ErrorCode::InvalidConfig
        );
        let id = t.id;
        drop(t);
        drop(b);
        let b = broker(dir.path());
        let t = b.topic("t").unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.config.retention_ms, 1000);
        b.delete_topic(&t).unwrap();
        assert!(b.topic("t").is_none());
        let t2 = b.create_topic("t", 1, 1, BTreeMap::new()).unwrap();
        assert_ne!(t2.id, id);
        assert_eq!(t2.partitions[0].offsets(), Some((0, 0)));
        // The old partition must not accept writes any more.
        assert!(t.partitions[0].offsets().is_none());
    }

    #[test]
    fn producer_ids_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = {
            let b = broker(dir.path());
            (
                b.allocate_producer_id().unwrap(),
                b.allocate_producer_id().unwrap(),
            )
        };
        let b = broker(dir.path());
        let c = b.allocate_producer_id().unwrap();
        assert_eq!(a.1, a.0 + 1);
        assert!(c > a.1);
    }
}
