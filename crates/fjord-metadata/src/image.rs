//! The in-memory cluster image, built by applying [`MetadataRecord`]s as deltas.
//!
//! The image is a pure state machine: [`ClusterImage::try_apply`] checks a record against the
//! current state and either applies it whole or rejects it with an [`ApplyError`], leaving the
//! image untouched. Every replica of the metadata log runs the same checks, so replicas that
//! replay the same log reach the same image even if a (buggy) record is rejected.
//! [`ClusterImage::apply`] is the replay entry point: it logs and skips rejected records, so a log
//! never fails to replay.
//!
//! Invariants held by every image, whatever records are fed to it:
//! - a partition's replicas are distinct, its ISR is a non-empty subset of them;
//! - a reassignment's adding and removing replicas are disjoint subsets of the replicas, and
//!   it never removes every replica;
//! - the leader is [`NO_LEADER`] or an ISR member that is a registered, unfenced broker;
//! - `partition_epoch` rises on every change; `leader_epoch` rises exactly when the leader
//!   changes (so there is at most one leader per partition per leader epoch) and never falls;
//! - broker epochs only rise: a registration must carry a larger epoch than the one it replaces,
//!   and fence/unfence/unregister records must carry the current epoch (`StaleBrokerEpoch`);
//! - a broker that still leads a partition cannot be fenced, re-registered or unregistered: the
//!   controller moves leadership off it first, in the same batch of records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thiserror::Error;
use uuid::Uuid;

use crate::record::{Endpoint, Maintenance, NodeId, NO_LEADER};
use crate::topic_gc::TopicUsage;
use crate::MetadataRecord;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// What the cluster knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: u32,
    /// Per-topic overrides only; defaults come from the broker configuration.
    pub configs: BTreeMap<String, String>,
}

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: NodeId,
    pub incarnation_id: Uuid,
    /// The metadata offset of the broker's registration record (KIP-380).
    pub broker_epoch: i64,
    pub rack: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// A fenced broker cannot lead partitions.
    pub fenced: bool,
    /// A cordoned broker gets no new replicas.
    pub cordoned: bool,
    /// Maintenance mode (`crate::maintenance`): no leaderships where another in-sync replica
    /// can lead, and with a drain every replica moves off.
    pub maintenance: Option<Maintenance>,
}

impl BrokerImage {
    /// Whether the broker is in maintenance mode.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.is_some()
    }

    /// Whether the active controller is draining this broker's replicas.
    pub fn draining(&self) -> bool {
        self.maintenance
            .as_ref()
            .is_some_and(|m| m.drain_replicas && !m.drain_completed)
    }
}

/// Replicas, ISR, leader and epochs of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// [`NO_LEADER`] when no ISR member can lead.
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas a reassignment is adding (in `replicas`, catching up). Empty when none is in
    /// progress.
    pub adding_replicas: Vec<NodeId>,
    /// Replicas a reassignment is removing (still in `replicas` until it completes).
    pub removing_replicas: Vec<NodeId>,
}

impl PartitionState {
    /// The preferred leader: the first replica (during a reassignment the first target
    /// replica, since the target comes first in `replicas`).
    pub fn preferred_leader(&self) -> NodeId {
        self.replicas.first().copied().unwrap_or(NO_LEADER)
    }

    /// Whether a reassignment (KIP-455) is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have when its reassignment completes (`replicas`
    /// when none is in progress), in order.
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas the partition had before its reassignment started (what a cancellation
    /// goes back to): `replicas` without the adding ones.
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

/// Why a record was not applied. The image is unchanged after an error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    #[error("broker {node_id}: epoch {got} is stale (current epoch {current})")]
    StaleBrokerEpoch {
        node_id: NodeId,
        current: i64,
        got: i64,
    },
    #[error("broker {node_id} still leads {partitions} partition(s)")]
    BrokerLeads { node_id: NodeId, partitions: usize },
    #[error("topic id {0} does not exist")]
    UnknownTopic(Uuid),
    #[error("partition {topic_id}/{partition} does not exist")]
    UnknownPartition { topic_id: Uuid, partition: u32 },
    #[error("partition {topic_id}/{partition} already exists")]
    PartitionExists { topic_id: Uuid, partition: u32 },
    #[error("partition {topic_id}/{partition}: {reason}")]
    InvalidPartition {
        topic_id: Uuid,
        partition: u32,
        reason: String,
    },
    #[error("{0}")]
    InvalidAcl(String),
}

/// Topics (by name and id), brokers, partition states and the producer-id high mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    topics: BTreeMap<String, TopicImage>,
    names_by_id: HashMap<Uuid, String>,
    /// Every ACL, indexed for the authorizer (`crate::acls`).
    acls: crate::acls::AclImage,
    /// SCRAM credentials per user and mechanism (`crate::scram`).
    scram: crate::scram::ScramImage,
    next_producer_id: i64,
    brokers: BTreeMap<NodeId, BrokerImage>,
    partitions: HashMap<Uuid, BTreeMap<u32, PartitionState>>,
    /// Partitions whose ISR holds each broker, so fencing a broker touches only its own
    /// partitions instead of scanning the cluster.
    isr_index: HashMap<NodeId, BTreeSet<(Uuid, u32)>>,
    /// Partitions with a reassignment in progress, per topic (ListPartitionReassignments and
    /// the gauge read it without scanning every partition).
    reassigning: BTreeMap<Uuid, BTreeSet<u32>>,
    /// Replicas and preferred leaderships per broker, kept by delta for placement.
    load: HashMap<NodeId, BrokerLoad>,
    /// Dynamic broker configs: per broker (`Some(id)`) and the cluster default (`None`).
    broker_configs: BTreeMap<Option<NodeId>, BTreeMap<String, String>>,
    /// Creation, last produce and consumer fetch, GC mark per topic (`crate::topic_gc`).
    usage: HashMap<Uuid, TopicUsage>,
    /// Client quotas per user / client-id entity (`crate::client_quota`).
    client_quotas: crate::client_quota::ClientQuotas,
}

/// Replicas and preferred leaderships (first replica) a broker holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerLoad {
    pub replicas: u32,
    pub leaders: u32,
}

/// What [`ClusterImage::partition_health`] counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionHealth {
    pub partitions: u64,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: u64,
    /// No leader.
    pub offline: u64,
    pub per_broker: std::collections::BTreeMap<NodeId, BrokerHealth>,
}

/// One broker's share of [`PartitionHealth`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerHealth {
    pub replicas: u64,
    pub leaders: u64,
    /// Replicas on this broker that are not in their partition's ISR.
    pub out_of_sync: u64,
}

impl ClusterImage {
    /// Apply one record during replay. A record that [`try_apply`](Self::try_apply) rejects is
    /// logged and skipped. Records referring to unknown topics are ignored (they can only come
    /// from a log written by a newer version; replay must not fail on them).
    pub fn apply(&mut self, record: &MetadataRecord) {
        if let Err(e) = self.try_apply(record) {
            tracing::warn!(error = %e, ?record, "metadata record rejected by the image; skipped");
        }
    }

    /// Check `record` against the image and apply it, or reject it and change nothing.
    /// Topic-level records for unknown topics are ignored (`Ok`), as they always were.
    pub fn try_apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::AccessControlEntry { .. }
            | MetadataRecord::RemoveAccessControlEntry { .. } => self.acls.try_apply(record)?,
            MetadataRecord::UserScramCredential { .. }
            | MetadataRecord::RemoveUserScramCredential { .. } => {
                self.scram.try_apply(record);
            }
            MetadataRecord::Topic {
                name,
                id,
                partitions,
                configs,
            } => {
                if let Some(old) = self.topics.get(name) {
                    let old_id = old.id;
                    self.names_by_id.remove(&old_id);
                    if old_id != *id {
                        self.remove_partitions(&old_id);
                        self.usage.remove(&old_id);
                    }
                }
                self.names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::PartitionCount { id, partitions } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.partitions = (*partitions).max(t.partitions);
                }
            }
            MetadataRecord::TopicConfig { id, key, value } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    match value {
                        Some(v) => {
                            t.configs.insert(key.clone(), v.clone());
                        }
                        None => {
                            t.configs.remove(key);
                        }
                    }
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(name) = self.names_by_id.remove(id) {
                    self.topics.remove(&name);
                }
                self.remove_partitions(id);
                self.usage.remove(id);
            }
            MetadataRecord::TopicActivity {
                id,
                created_ms,
                last_produce_ms,
                last_fetch_ms,
            } => {
                if self.names_by_id.contains_key(id) {
                    self.usage.entry(*id).or_default().merge(
                        *created_ms,
                        *last_produce_ms,
                        *last_fetch_ms,
                    );
                }
            }
            MetadataRecord::TopicGcMark { id, marked_ms } => {
                if self.names_by_id.contains_key(id) {
                    self.usage.entry(*id).or_default().marked_ms = *marked_ms;
                }
            }
            MetadataRecord::ProducerIds { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataRecord::RegisterBroker {
                node_id,
                incarnation_id,
                broker_epoch,
                rack,
                endpoints,
                fenced,
            } => {
                let (mut cordoned, mut maintenance) = (false, None);
                if let Some(old) = self.brokers.get(node_id) {
                    if *broker_epoch <= old.broker_epoch {
                        return Err(ApplyError::StaleBrokerEpoch {
                            node_id: *node_id,
                            current: old.broker_epoch,
                            got: *broker_epoch,
                        });
                    }
                    if *fenced {
                        self.check_leads_nothing(*node_id)?;
                    }
                    cordoned = old.cordoned;
                    maintenance = old.maintenance.clone();
                }
                self.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: *broker_epoch,
                        rack: rack.clone(),
                        endpoints: endpoints.clone(),
                        fenced: *fenced,
                        cordoned,
                        maintenance,
                    },
                );
            }
            MetadataRecord::UnregisterBroker {
                node_id,
                broker_epoch,
            } => {
                self.check_broker_epoch(*node_id, *broker_epoch)?;
                self.check_leads_nothing(*node_id)?;
                self.brokers.remove(node_id);
            }
            MetadataRecord::FenceBroker {
                node_id,
                broker_epoch,
            } => {
                self.check_broker_epoch(*node_id, *broker_epoch)?;
                self.check_leads_nothing(*node_id)?;
                self.broker_mut(*node_id)?.fenced = true;
            }
            MetadataRecord::UnfenceBroker {
                node_id,
                broker_epoch,
            } => {
                self.check_broker_epoch(*node_id, *broker_epoch)?;
                self.broker_mut(*node_id)?.fenced = false;
            }
            MetadataRecord::BrokerConfig {
                node_id,
                key,
                value,
            } => {
                let configs = self.broker_configs.entry(*node_id).or_default();
                match value {
                    Some(v) => {
                        configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        configs.remove(key);
                        if configs.is_empty() {
                            self.broker_configs.remove(node_id);
                        }
                    }
                }
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                self.client_quotas.apply(entity, key, *value)
            }
            MetadataRecord::CordonBroker { node_id } => self.broker_mut(*node_id)?.cordoned = true,
            MetadataRecord::UncordonBroker { node_id } => {
                self.broker_mut(*node_id)?.cordoned = false
            }
            MetadataRecord::BrokerMaintenance { node_id, state } => {
                self.broker_mut(*node_id)?.maintenance = state.clone()
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
            } => {
                let topic = self
                    .topic_by_id(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                let invalid = |reason: String| ApplyError::InvalidPartition {
                    topic_id: *topic_id,
                    partition: *partition,
                    reason,
                };
                if *partition >= topic.partitions {
                    return Err(invalid(format!(
                        "the topic has {} partitions",
                        topic.partitions
                    )));
                }
                if self.partition(topic_id, *partition).is_some() {
                    return Err(ApplyError::PartitionExists {
                        topic_id: *topic_id,
                        partition: *partition,
                    });
                }
                if *leader_epoch < 0 || *partition_epoch < 0 {
                    return Err(invalid("negative epoch".into()));
                }
                let state = PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    adding_replicas: adding_replicas.clone(),
                    removing_replicas: removing_replicas.clone(),
                };
                self.check_partition(&state).map_err(invalid)?;
                self.put_partition(*topic_id, *partition, state);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
            } => {
                let old =
                    self.partition(topic_id, *partition)
                        .ok_or(ApplyError::UnknownPartition {
                            topic_id: *topic_id,
                            partition: *partition,
                        })?;
                let invalid = |reason: String| ApplyError::InvalidPartition {
                    topic_id: *topic_id,
                    partition: *partition,
                    reason,
                };
                let new = PartitionState {
                    replicas: replicas.clone().unwrap_or_else(|| old.replicas.clone()),
                    isr: isr.clone().unwrap_or_else(|| old.isr.clone()),
                    leader: leader.unwrap_or(old.leader),
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    adding_replicas: adding_replicas
                        .clone()
                        .unwrap_or_else(|| old.adding_replicas.clone()),
                    removing_replicas: removing_replicas
                        .clone()
                        .unwrap_or_else(|| old.removing_replicas.clone()),
                };
                if new.partition_epoch <= old.partition_epoch {
                    return Err(invalid(format!(
                        "partition epoch {} does not rise above {}",
                        new.partition_epoch, old.partition_epoch
                    )));
                }
                if new.leader != old.leader && new.leader_epoch <= old.leader_epoch {
                    return Err(invalid(format!(
                        "leader changes {} -> {} without a new leader epoch ({} -> {})",
                        old.leader, new.leader, old.leader_epoch, new.leader_epoch
                    )));
                }
                if new.leader == old.leader && new.leader_epoch != old.leader_epoch {
                    return Err(invalid(format!(
                        "leader epoch moves {} -> {} with the same leader {}",
                        old.leader_epoch, new.leader_epoch, new.leader
                    )));
                }
                self.check_partition(&new).map_err(invalid)?;
                self.put_partition(*topic_id, *partition, new);
            }
        }
        Ok(())
    }

    /// The structural rules every partition state obeys.
    fn check_partition(&self, p: &PartitionState) -> Result<(), String> {
        if p.replicas.is_empty() {
            return Err("no replicas".into());
        }
        if !distinct(&p.replicas) {
            return Err(format!("replicas {:?} repeat a broker", p.replicas));
        }
        if p.isr.is_empty() || !distinct(&p.isr) || !p.isr.iter().all(|b| p.replicas.contains(b)) {
            return Err(format!(
                "ISR {:?} is not a non-empty set within replicas {:?}",
                p.isr, p.replicas
            ));
        }
        let (adding, removing) = (&p.adding_replicas, &p.removing_replicas);
        if !distinct(adding)
            || !distinct(removing)
            || !adding.iter().all(|b| p.replicas.contains(b))
            || !removing.iter().all(|b| p.replicas.contains(b))
            || adding.iter().any(|b| removing.contains(b))
        {
            return Err(format!(
                "adding {adding:?} and removing {removing:?} must be disjoint sets within replicas {:?}",
                p.replicas
            ));
        }
        if p.replicas.iter().all(|b| removing.contains(b)) {
            return Err(format!(
                "a reassignment cannot remove every replica of {:?}",
                p.replicas
            ));
        }
        if p.leader != NO_LEADER {
            if !p.isr.contains(&p.leader) {
                return Err(format!("leader {} is not in ISR {:?}", p.leader, p.isr));
            }
            match self.brokers.get(&p.leader) {
                None => return Err(format!("leader {} is not a registered broker", p.leader)),
                Some(b) if b.fenced => return Err(format!("leader {} is fenced", p.leader)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn check_broker_epoch(&self, node_id: NodeId, epoch: i64) -> Result<(), ApplyError> {
        let b = self
            .brokers
            .get(&node_id)
            .ok_or(ApplyError::UnknownBroker(node_id))?;
        if b.broker_epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                node_id,
                current: b.broker_epoch,
                got: epoch,
            });
        }
        Ok(())
    }

    fn check_leads_nothing(&self, node_id: NodeId) -> Result<(), ApplyError> {
        let led = self.partitions_led_by(node_id).count();
        if led > 0 {
            return Err(ApplyError::BrokerLeads {
                node_id,
                partitions: led,
            });
        }
        Ok(())
    }

    fn broker_mut(&mut self, node_id: NodeId) -> Result<&mut BrokerImage, ApplyError> {
        self.brokers
            .get_mut(&node_id)
            .ok_or(ApplyError::UnknownBroker(node_id))
    }

    fn count_load(&mut self, replicas: &[NodeId], add: bool) {
        for (i, b) in replicas.iter().enumerate() {
            let l = self.load.entry(*b).or_default();
            let leader = u32::from(i == 0);
            if add {
                l.replicas += 1;
                l.leaders += leader;
            } else {
                l.replicas -= 1;
                l.leaders -= leader;
                if l.replicas == 0 {
                    self.load.remove(b);
                }
            }
        }
    }

    fn put_partition(&mut self, topic_id: Uuid, partition: u32, state: PartitionState) {
        let old_replicas = self
            .partition(&topic_id, partition)
            .map(|o| o.replicas.clone());
        if old_replicas.as_ref() != Some(&state.replicas) {
            if let Some(old) = &old_replicas {
                self.count_load(old, false);
            }
            self.count_load(&state.replicas, true);
        }
        let parts = self.partitions.entry(topic_id).or_default();
        if let Some(old) = parts.get(&partition) {
            for b in &old.isr {
                if !state.isr.contains(b) {
                    if let Some(set) = self.isr_index.get_mut(b) {
                        set.remove(&(topic_id, partition));
                        if set.is_empty() {
                            self.isr_index.remove(b);
                        }
                    }
                }
            }
        }
        for b in &state.isr {
            self.isr_index
                .entry(*b)
                .or_default()
                .insert((topic_id, partition));
        }
        if state.is_reassigning() {
            self.reassigning
                .entry(topic_id)
                .or_default()
                .insert(partition);
        } else if let Some(set) = self.reassigning.get_mut(&topic_id) {
            set.remove(&partition);
            if set.is_empty() {
                self.reassigning.remove(&topic_id);
            }
        }
        parts.insert(partition, state);
    }

    fn remove_partitions(&mut self, topic_id: &Uuid) {
        self.reassigning.remove(topic_id);
        let Some(parts) = self.partitions.remove(topic_id) else {
            return;
        };
        for (p, state) in parts {
            self.count_load(&state.replicas, false);
            for b in state.isr {
                if let Some(set) = self.isr_index.get_mut(&b) {
                    set.remove(&(*topic_id, p));
                    if set.is_empty() {
                        self.isr_index.remove(&b);
                    }
                }
            }
        }
    }

    fn topic_by_id_mut(&mut self, id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.names_by_id.get(id)?;
        self.topics.get_mut(name)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(self.names_by_id.get(id)?)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Producer ids below this value have been handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerImage> {
        self.brokers.get(&node_id)
    }

    /// Registered brokers in node-id order.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values()
    }

    pub fn partition(&self, topic_id: &Uuid, partition: u32) -> Option<&PartitionState> {
        self.partitions.get(topic_id)?.get(&partition)
    }

    /// The partition states of one topic, in partition order (empty on a single node, which
    /// writes no partition records).
    pub fn partitions(&self, topic_id: &Uuid) -> impl Iterator<Item = (u32, &PartitionState)> {
        self.partitions
            .get(topic_id)
            .into_iter()
            .flat_map(|m| m.iter().map(|(p, s)| (*p, s)))
    }

    /// Every partition state: `(topic id, partition, state)`, in no particular topic order.
    pub fn all_partitions(&self) -> impl Iterator<Item = (Uuid, u32, &PartitionState)> {
        self.partitions
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(p, s)| (*t, *p, s)))
    }

    /// Replicas and preferred leaderships per broker (brokers holding none are absent).
    pub fn load(&self) -> &HashMap<NodeId, BrokerLoad> {
        &self.load
    }

    /// Partition health across the cluster: counts of under-replicated and offline partitions,
    /// and per broker how many replicas it holds, how many partitions it leads and how many of
    /// its replicas are out of the ISR. One pass over the partitions (admin requests only).
    pub fn partition_health(&self) -> PartitionHealth {
        let mut h = PartitionHealth::default();
        for (_, _, p) in self.all_partitions() {
            h.partitions += 1;
            if p.leader == NO_LEADER {
                h.offline += 1;
            } else {
                h.per_broker.entry(p.leader).or_default().leaders += 1;
            }
            // A reassignment's adding replicas are catching up, not missing: the partition is
            // under-replicated only when its ISR is smaller than its original replica set (as
            // Kafka counts it).
            if p.isr.len() < p.replicas.len() - p.adding_replicas.len() {
                h.under_replicated += 1;
            }
            for r in &p.replicas {
                let b = h.per_broker.entry(*r).or_default();
                b.replicas += 1;
                if !p.isr.contains(r) {
                    b.out_of_sync += 1;
                }
            }
        }
        h
    }

    /// A dynamic broker config for `node_id`: its own value, else the cluster default.
    pub fn broker_config(&self, node_id: NodeId, key: &str) -> Option<&str> {
        self.broker_configs
            .get(&Some(node_id))
            .and_then(|c| c.get(key))
            .or_else(|| self.broker_configs.get(&None).and_then(|c| c.get(key)))
            .map(String::as_str)
    }

    /// The dynamic configs set for `node_id` (`None`: the cluster default), without fallback.
    pub fn broker_configs(&self, node_id: Option<NodeId>) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(&node_id)
    }

    /// Client quotas by entity (`crate::client_quota`).
    pub fn client_quotas(&self) -> &crate::client_quota::ClientQuotas {
        &self.client_quotas
    }

    /// Partitions with a reassignment in progress, by topic id and partition, from the index
    /// (no scan).
    pub fn reassigning_partitions(&self) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        self.reassigning
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
    }

    /// How many partitions have a reassignment in progress.
    pub fn reassigning_count(&self) -> usize {
        self.reassigning.values().map(BTreeSet::len).sum()
    }

    /// Partitions whose ISR holds `node_id`, from the index (no scan).
    pub fn partitions_in_isr(&self, node_id: NodeId) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        self.isr_index
            .get(&node_id)
            .into_iter()
            .flat_map(|s| s.iter().copied())
    }

    /// Records that rebuild this image from empty: the content of a snapshot. Brokers come
    /// first (leaders must be registered), then topics, their partitions and the producer-id mark.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker {
                node_id: b.node_id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.broker_epoch,
                rack: b.rack.clone(),
                endpoints: b.endpoints.clone(),
                fenced: b.fenced,
            });
            if b.cordoned {
                out.push(MetadataRecord::CordonBroker { node_id: b.node_id });
            }
            if b.maintenance.is_some() {
                out.push(MetadataRecord::BrokerMaintenance {
                    node_id: b.node_id,
                    state: b.maintenance.clone(),
                });
            }
        }
        for (node_id, configs) in &self.broker_configs {
            for (key, value) in configs {
                out.push(MetadataRecord::BrokerConfig {
                    node_id: *node_id,
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        self.client_quotas.to_records(&mut out);
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
            });
            for (p, s) in self.partitions(&t.id) {
                out.push(MetadataRecord::Partition {
                    topic_id: t.id,
                    partition: p,
                    replicas: s.replicas.clone(),
                    isr: s.isr.clone(),
                    leader: s.leader,
                    leader_epoch: s.leader_epoch,
                    partition_epoch: s.partition_epoch,
                    adding_replicas: s.adding_replicas.clone(),
                    removing_replicas: s.removing_replicas.clone(),
                });
            }
            if let Some(u) = self.usage.get(&t.id) {
                out.push(MetadataRecord::TopicActivity {
                    id: t.id,
                    created_ms: u.created_ms,
                    last_produce_ms: u.last_produce_ms,
                    last_fetch_ms: u.last_fetch_ms,
                });
                if u.marked_ms.is_some() {
                    out.push(MetadataRecord::TopicGcMark {
                        id: t.id,
                        marked_ms: u.marked_ms,
                    });
                }
            }
        }
        out.extend(self.acls.to_records());
        out.extend(self.scram.to_records());
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds {
                next: self.next_producer_id,
            });
        }
        out
    }

    /// Every user's SCRAM credentials (`crate::scram`).
    pub fn scram_credentials(&self) -> &crate::scram::ScramImage {
        &self.scram
    }

    /// Every ACL (`crate::acls`).
    pub fn acls(&self) -> &crate::acls::AclImage {
        &self.acls
    }

    /// Rebuild an image from [`to_records`](Self::to_records) output.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a MetadataRecord>) -> ClusterImage {
        let mut image = ClusterImage::default();
        for r in records {
            image.apply(r);
        }
        image
    }

    /// What is known of a topic's use (`crate::topic_gc`); all `None` for an unknown topic.
    pub fn topic_usage(&self, id: &Uuid) -> TopicUsage {
        self.usage.get(id).copied().unwrap_or_default()
    }

    /// Partitions led by `node_id` (the leader is always in the ISR, so the index covers them).
    pub fn partitions_led_by(&self, node_id: NodeId) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        self.partitions_in_isr(node_id)
            .filter(move |(t, p)| self.partition(t, *p).map(|s| s.leader) == Some(node_id))
    }
}

fn distinct(ids: &[NodeId]) -> bool {
    ids.iter().enumerate().all(|(i, a)| !ids[..i].contains(a))
}

/// Why a topic name is invalid (Kafka's `Topic.validate` rules), or `None` when it is valid.
pub fn invalid_topic_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("topic name cannot be \"{name}\""));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Some(format!(
            "topic name is {} characters, the maximum is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: Uuid, partitions: u32) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            id,
            partitions,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn apply_builds_and_changes_topics() {
        let mut img = ClusterImage::default();
        let a = Uuid::new_v4();
        img.apply(&topic("a", a, 1));
        img.apply(&MetadataRecord::PartitionCount {
            id: a,
            partitions: 4,
        });
        img.apply(&MetadataRecord::TopicConfig {
            id: a,
            key: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let t = img.topic("a").unwrap();
        assert_eq!(t.partitions, 4);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(img.topic_by_id(&a).unwrap().name, "a");
        img.apply(&MetadataRecord::TopicConfig {
            id: a,
            key: "retention.ms".into(),
            value: None,
        });
        assert!(img.topic("a").unwrap().configs.is_empty());
        img.apply(&MetadataRecord::RemoveTopic { id: a });
        assert!(img.topic("a").is_none());
        assert!(img.topic_by_id(&a).is_none());
    }

    #[test]
    fn recreated_topic_gets_new_identity() {
        let mut img = ClusterImage::default();
        let (a1, a2) = (Uuid::new_v4(), Uuid::new_v4());
        img.apply(&topic("a", a1, 1));
        img.apply(&MetadataRecord::RemoveTopic { id: a1 });
        img.apply(&topic("a", a2, 2));
        // A late record for the old id must not touch the new topic.
        img.apply(&MetadataRecord::PartitionCount {
            id: a1,
            partitions: 9,
        });
        assert_eq!(img.topic("a").unwrap().id, a2);
        assert_eq!(img.topic("a").unwrap().partitions, 2);
    }

    #[test]
    fn partition_count_never_shrinks_and_producer_ids_rise() {
        let mut img = ClusterImage::default();
        let a = Uuid::new_v4();
        img.apply(&topic("a", a, 3));
        img.apply(&MetadataRecord::PartitionCount {
            id: a,
            partitions: 2,
        });
        assert_eq!(img.topic("a").unwrap().partitions, 3);
        img.apply(&MetadataRecord::ProducerIds { next: 1000 });
        img.apply(&MetadataRecord::ProducerIds { next: 10 });
        assert_eq!(img.next_producer_id(), 1000);
    }

    #[test]
    fn topic_name_rules() {
        assert!(invalid_topic_name("orders.v1_a-b").is_none());
        assert!(invalid_topic_name("").is_some());
        assert!(invalid_topic_name("..").is_some());
        assert!(invalid_topic_name("a/b").is_some());
        assert!(invalid_topic_name(&"x".repeat(250)).is_some());
        assert!(invalid_topic_name(&"x".repeat(249)).is_none());
    }

    fn register(
        img: &mut ClusterImage,
        node_id: NodeId,
        epoch: i64,
        fenced: bool,
    ) -> Result<(), ApplyError> {
        img.try_apply(&MetadataRecord::RegisterBroker {
            node_id,
            incarnation_id: Uuid::new_v4(),
            broker_epoch: epoch,
            rack: None,
            endpoints: vec![],
            fenced,
        })
    }

    fn change(
        t: Uuid,
        isr: Option<Vec<NodeId>>,
        leader: Option<NodeId>,
        le: i32,
        pe: i32,
    ) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id: t,
            partition: 0,
            replicas: None,
            isr,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            adding_replicas: None,
            removing_replicas: None,
        }
    }

    /// Brokers 1..=3 unfenced, topic `t` with partition 0 on [1, 2, 3] led by 1 at epoch 0.
    fn cluster() -> (ClusterImage, Uuid) {
        let mut img = ClusterImage::default();
        for b in 1..=3 {
            register(&mut img, b, b as i64, false).unwrap();
        }
        let t = Uuid::new_v4();
        img.apply(&topic("t", t, 1));
        img.try_apply(&MetadataRecord::Partition {
            topic_id: t,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
        })
        .unwrap();
        (img, t)
    }

    #[test]
    fn partition_invariants_are_enforced_and_rejections_change_nothing() {
        let (mut img, t) = cluster();
        let before = img.clone();
        let bad = [
            // leader outside the ISR
            change(t, Some(vec![2, 3]), None, 0, 1),
            // new leader without a new leader epoch
            change(t, None, Some(2), 0, 1),
            // same leader, new leader epoch
            change(t, None, None, 1, 1),
            // partition epoch does not rise
            change(t, Some(vec![1, 2]), None, 0, 0),
            // leader epoch falls
            change(t, None, Some(2), -1, 1),
            // ISR outside replicas, empty ISR, repeated replicas
            change(t, Some(vec![1, 4]), None, 0, 1),
            change(t, Some(vec![]), Some(NO_LEADER), 1, 1),
            MetadataRecord::PartitionChange {
                topic_id: t,
                partition: 0,
                replicas: Some(vec![1, 1, 2]),
                isr: Some(vec![1]),
                leader: None,
                leader_epoch: 0,
                partition_epoch: 1,
                adding_replicas: None,
                removing_replicas: None,
            },
            // unregistered leader
            change(t, Some(vec![1, 2, 3]), Some(9), 1, 1),
            // a second Partition record for the same partition
            MetadataRecord::Partition {
                topic_id: t,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 5,
                partition_epoch: 5,
                adding_replicas: vec![],
                removing_replicas: vec![],
            },
        ];
        for rec in &bad {
            assert!(img.try_apply(rec).is_err(), "accepted {rec:?}");
            img.apply(rec); // replay logs and skips
            assert_eq!(img, before, "{rec:?} changed the image");
        }
        img.try_apply(&change(t, Some(vec![1, 2]), None, 0, 1))
            .unwrap();
        img.try_apply(&change(t, None, Some(2), 1, 2)).unwrap();
        let p = img.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(
            img.partitions_in_isr(3).count(),
            0,
            "ISR index follows the change"
        );
        assert_eq!(img.partitions_led_by(2).collect::<Vec<_>>(), vec![(t, 0)]);
    }

    #[test]
    fn fenced_brokers_never_lead_and_stale_epochs_are_refused() {
        let (mut img, t) = cluster();
        // Broker 1 leads: it cannot be fenced, unregistered or re-registered fenced.
        let fence1 = MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 1,
        };
        assert!(matches!(
            img.try_apply(&fence1),
            Err(ApplyError::BrokerLeads { .. })
        ));
        assert!(img
            .try_apply(&MetadataRecord::UnregisterBroker {
                node_id: 1,
                broker_epoch: 1
            })
            .is_err());
        assert!(register(&mut img, 1, 10, true).is_err());
        // A stale epoch is refused whatever the record.
        assert!(matches!(
            img.try_apply(&MetadataRecord::FenceBroker {
                node_id: 3,
                broker_epoch: 2
            }),
            Err(ApplyError::StaleBrokerEpoch { .. })
        ));
        assert!(matches!(
            register(&mut img, 3, 3, true),
            Err(ApplyError::StaleBrokerEpoch { .. })
        ));
        // Fence 3, then it cannot be elected.
        img.try_apply(&MetadataRecord::FenceBroker {
            node_id: 3,
            broker_epoch: 3,
        })
        .unwrap();
        assert!(img.try_apply(&change(t, None, Some(3), 1, 1)).is_err());
        // Move leadership off 1, then fencing it is accepted.
        img.try_apply(&change(t, Some(vec![2, 3]), Some(2), 1, 1))
            .unwrap();
        img.try_apply(&fence1).unwrap();
        assert!(img.broker(1).unwrap().fenced);
        // Unfence with the current epoch; re-register with a larger one keeps the cordon.
        img.try_apply(&MetadataRecord::CordonBroker { node_id: 1 })
            .unwrap();
        img.try_apply(&MetadataRecord::UnfenceBroker {
            node_id: 1,
            broker_epoch: 1,
        })
        .unwrap();
        img.try_apply(&MetadataRecord::BrokerMaintenance {
            node_id: 1,
            state: Some(Maintenance::default()),
        })
        .unwrap();
        register(&mut img, 1, 20, true).unwrap();
        let b = img.broker(1).unwrap();
        assert!(b.fenced && b.cordoned && b.broker_epoch == 20);
        assert!(b.in_maintenance(), "maintenance survives re-registration");
        assert_eq!(ClusterImage::from_records(&img.to_records()), img);
        assert!(img
            .try_apply(&MetadataRecord::CordonBroker { node_id: 7 })
            .is_err());
    }

    #[test]
    fn partition_health_counts_under_replicated_and_offline() {
        let (mut img, t) = cluster();
        let h = img.partition_health();
        assert_eq!((h.partitions, h.under_replicated, h.offline), (1, 0, 0));
        assert_eq!(h.per_broker[&1].leaders, 1);
        assert_eq!(h.per_broker[&3].replicas, 1);
        img.try_apply(&change(t, Some(vec![1, 2]), None, 0, 1))
            .unwrap();
        let h = img.partition_health();
        assert_eq!((h.under_replicated, h.offline), (1, 0));
        assert_eq!(h.per_broker[&3].out_of_sync, 1);
        assert_eq!(h.per_broker[&2].out_of_sync, 0);
        img.try_apply(&change(t, Some(vec![1]), Some(NO_LEADER), 1, 2))
            .unwrap();
        let h = img.partition_health();
        assert_eq!((h.under_replicated, h.offline), (1, 1));
        assert_eq!(h.per_broker[&1].leaders, 0);
    }

    #[test]
    fn removing_a_topic_drops_its_partitions_and_index_entries() {
        let (mut img, t) = cluster();
        img.apply(&MetadataRecord::RemoveTopic { id: t });
        assert_eq!(img.all_partitions().count(), 0);
        assert_eq!(img.partitions_in_isr(1).count(), 0);
        // Partition records for unknown topics are refused.
        assert!(matches!(
            img.try_apply(&MetadataRecord::Partition {
                topic_id: t,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: vec![],
                removing_replicas: vec![],
            }),
            Err(ApplyError::UnknownTopic(_))
        ));
    }
}
