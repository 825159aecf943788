//! The controller state machine: turns broker registrations, heartbeats, timer ticks and admin
//! requests into the [`MetadataRecord`]s to append. Pure: no I/O, time comes in as `now`
//! (milliseconds, any monotonic origin).
//!
//! Every operation validates first and then returns a [`ControllerResult`]: the records to append
//! (in order, as one batch) and the response to send once they are committed. The controller
//! applies its own records to its image at once (like KRaft's active controller), so the next
//! call already sees them; if the batch cannot be committed (lost leadership), the caller must
//! rebuild the controller from the committed log with [`Controller::replay`].
//!
//! **Metadata offset.** The offset of a record is the number of records applied before it. It is
//! counted by every replica in the same way, independent of how the quorum numbers its log
//! entries. A broker epoch is the offset of its registration record, so each registration gets a
//! new, larger epoch (KIP-380), and a broker has caught up once it has applied that offset.
//!
//! **Fencing.** A broker registers fenced. It is unfenced by a heartbeat that shows it has caught
//! up; it is fenced again when it asks to be, when it misses heartbeats for the session timeout
//! (found by [`Controller::tick`]) or when it registers again (a new incarnation). Before a broker
//! is fenced, the same batch moves leadership off it (new leader from the ISR) and removes it
//! from the ISR, except where it is the last ISR member: then the partition keeps it in the ISR
//! with no leader, and it is elected again when unfenced.
//!
//! **Unclean leader election** (`unclean.leader.election.enable`, per topic, default from
//! [`ControllerConfig`]; off by default): where no ISR member can lead, the first live replica
//! outside the ISR is elected with ISR = [itself], in the same batch, and a WARN says which
//! acknowledged records may be lost. It happens wherever a partition can be left or found
//! leaderless: fencing, a new incarnation, unregistration, a broker unfenced while the ISR is
//! still down, and the topic config switched to true. ElectLeaders (KIP-460,
//! [`Controller::elect_leaders`]) also elects uncleanly on request, whatever the config says.
//!
//! Heartbeat times are soft state, not in the log: a controller that becomes active gives every
//! broker a full session from that moment ([`Controller::activate`]).

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;
use uuid::Uuid;

use crate::image::{invalid_topic_name, ClusterImage, PartitionState};
use crate::internal;
use crate::placement::{self, PlacementError};
use crate::record::{Endpoint, MetadataRecord, NodeId, NO_LEADER};

/// Controller settings (Kafka's key names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker without a heartbeat for this long is fenced.
    pub session_timeout_ms: i64,
    /// `unclean.leader.election.enable`: the cluster default; a topic config of the same name
    /// overrides it.
    pub unclean_leader_election_enable: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            unclean_leader_election_enable: false,
        }
    }
}

/// The topic config (and broker config) key that allows unclean leader elections.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Kafka's ElectionType (KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ElectionType {
    /// Make the preferred replica (the first) leader if it is in the ISR and unfenced.
    Preferred,
    /// Elect a leader where there is none: from the ISR if possible, else any live replica.
    Unclean,
}

impl ElectionType {
    /// From the wire value (0 preferred, 1 unclean).
    pub fn from_wire(v: u8) -> Option<ElectionType> {
        match v {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Per-partition error codes of ElectLeaders (Kafka's numbers).
pub mod election_error {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
}

/// The outcome of an election for one partition (ElectLeaders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionElection {
    pub topic_id: Uuid,
    pub partition: u32,
    /// One of [`election_error`].
    pub error: i16,
}

/// Records to append (as one batch, in order) and the reply to give once they are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerResult<T> {
    pub records: Vec<MetadataRecord>,
    pub response: T,
}

/// Errors returned to the caller, each with its Kafka error code ([`ControllerError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControllerError {
    #[error("broker {node_id}: epoch {got} is stale (current epoch {current})")]
    StaleBrokerEpoch {
        node_id: NodeId,
        current: i64,
        got: i64,
    },
    #[error("broker {0} is already registered by another live incarnation")]
    DuplicateBrokerRegistration(NodeId),
    #[error("broker {0} is not registered")]
    BrokerIdNotRegistered(NodeId),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(Uuid),
    #[error("topic or partition {topic}/{partition} does not exist")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error(transparent)]
    InvalidReplicationFactor(#[from] PlacementError),
    #[error("leader epoch {got} is not the current leader epoch {current}")]
    FencedLeaderEpoch { current: i32, got: i32 },
    #[error("broker {node_id} is not the leader (leader is {leader})")]
    NotLeaderOrFollower { node_id: NodeId, leader: NodeId },
    #[error("partition epoch {got} is not the current partition epoch {current}")]
    InvalidUpdateVersion { current: i32, got: i32 },
    #[error("broker {0} cannot join the ISR: it is fenced or not registered")]
    IneligibleReplica(NodeId),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidConfig(String),
    /// A reassignment's target replicas are refused (INVALID_REPLICA_ASSIGNMENT).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// Cancelling where no reassignment is in progress.
    #[error("{0}")]
    NoReassignmentInProgress(String),
    /// A reassignment would change the replication factor and the request forbids it
    /// (AlterPartitionReassignments v1, KIP-860).
    #[error("The replication factor is changed from {from} to {to}")]
    ReplicationFactorChange { from: usize, to: usize },
}

impl ControllerError {
    /// The Kafka error code sent on the wire.
    pub fn code(&self) -> i16 {
        match self {
            ControllerError::UnknownTopicOrPartition { .. } => 3,
            ControllerError::NotLeaderOrFollower { .. } => 6,
            ControllerError::InvalidTopic(_) => 17,
            ControllerError::TopicAlreadyExists(_) => 36,
            ControllerError::InvalidPartitions(_) => 37,
            ControllerError::InvalidReplicationFactor(_) => 38,
            ControllerError::ReplicationFactorChange { .. } => 38,
            ControllerError::InvalidReplicaAssignment(_) => 39,
            ControllerError::NoReassignmentInProgress(_) => 85,
            ControllerError::InvalidRequest(_) => 42,
            ControllerError::InvalidConfig(_) => 40,
            ControllerError::FencedLeaderEpoch { .. } => 74,
            ControllerError::StaleBrokerEpoch { .. } => 77,
            ControllerError::InvalidUpdateVersion { .. } => 95,
            ControllerError::UnknownTopicId(_) => 100,
            ControllerError::DuplicateBrokerRegistration(_) => 101,
            ControllerError::BrokerIdNotRegistered(_) => 102,
            ControllerError::IneligibleReplica(_) => 107,
        }
    }
}

/// A BrokerRegistration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    /// New for every start of the broker process.
    pub incarnation_id: Uuid,
    pub rack: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

/// A BrokerHeartbeat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub node_id: NodeId,
    pub broker_epoch: i64,
    /// The offset of the last metadata record the broker has applied (-1 for none).
    pub current_metadata_offset: i64,
    /// The broker asks to be fenced (it is shutting down or not ready).
    pub want_fence: bool,
}

/// The reply to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

/// A created topic: its id and the replicas of each partition (preferred leader first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub assignments: Vec<Vec<NodeId>>,
}

/// An AlterPartition request from a partition leader: a new ISR, sent with the epochs the leader
/// last saw so that stale proposals are refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterPartition {
    pub node_id: NodeId,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<NodeId>,
}

/// The controller: the image it has built, the next metadata offset, and broker heartbeat times.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    image: ClusterImage,
    next_offset: i64,
    last_heartbeat: HashMap<NodeId, i64>,
    /// The last heartbeat of each broker: the metadata offset it reported, and when (soft
    /// state, for status reports only).
    reported: HashMap<NodeId, (i64, i64)>,
    /// Unclean elections this controller has made (soft state, for metrics).
    unclean_elections: u64,
    /// When to look again for replicas of a draining broker that could not be moved
    /// (soft state: a new active controller looks at once).
    pub(crate) drain_retry_at: HashMap<NodeId, i64>,
}

impl Controller {
    /// An empty controller (a new cluster).
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            image: ClusterImage::default(),
            next_offset: 0,
            last_heartbeat: HashMap::new(),
            reported: HashMap::new(),
            unclean_elections: 0,
            drain_retry_at: HashMap::new(),
        }
    }

    /// A controller over an image already built (e.g. the quorum's state machine) whose next
    /// metadata offset is `next_offset`. Call [`activate`](Self::activate) before serving.
    pub fn from_image(
        config: ControllerConfig,
        image: ClusterImage,
        next_offset: i64,
    ) -> Controller {
        Controller {
            config,
            image,
            next_offset,
            last_heartbeat: HashMap::new(),
            reported: HashMap::new(),
            unclean_elections: 0,
            drain_retry_at: HashMap::new(),
        }
    }

    /// Apply a committed record (a standby following the log, or replay at startup).
    pub fn replay(&mut self, record: &MetadataRecord) {
        self.image.apply(record);
        self.next_offset += 1;
    }

    /// Become the active controller at `now`: every registered broker gets a full session.
    pub fn activate(&mut self, now: i64) {
        self.last_heartbeat = self.image.brokers().map(|b| (b.node_id, now)).collect();
    }

    pub fn image(&self) -> &ClusterImage {
        &self.image
    }

    /// The offset the next record will have (= records applied so far).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// How many unclean leader elections this controller has made since it was built (every
    /// one is also logged at WARN). Soft state: a new active controller starts at 0, so a
    /// metric should add the increase seen after each call.
    pub fn unclean_elections(&self) -> u64 {
        self.unclean_elections
    }

    /// What the last heartbeat of `node_id` to this controller said: the metadata offset the
    /// broker reported, and the milliseconds since, at `now`. `None` before its first heartbeat.
    pub fn liveness(&self, node_id: NodeId, now: i64) -> Option<(i64, i64)> {
        self.reported
            .get(&node_id)
            .map(|(offset, at)| (*offset, now - at))
    }

    /// Apply a record this controller generated and queue it. A rejection is a controller bug:
    /// it panics in debug builds (tests and the simulation) and is logged and dropped otherwise,
    /// exactly as every replica of the log would drop it.
    fn emit(&mut self, out: &mut Vec<MetadataRecord>, record: MetadataRecord) {
        match self.image.try_apply(&record) {
            Ok(()) => {
                self.next_offset += 1;
                out.push(record);
            }
            Err(e) => {
                if cfg!(debug_assertions) {
                    panic!("controller generated an invalid record {record:?}: {e}");
                }
                tracing::error!(error = %e, ?record, "controller generated an invalid record; dropped");
            }
        }
    }

    /// [`emit`](Self::emit) for the other modules of this crate.
    pub(crate) fn emit_record(&mut self, out: &mut Vec<MetadataRecord>, record: MetadataRecord) {
        self.emit(out, record)
    }

    /// Count an unclean election made outside this module (a reassignment's cancellation).
    pub(crate) fn note_unclean_election(&mut self) {
        self.unclean_elections += 1;
    }

    pub(crate) fn check_epoch(&self, node_id: NodeId, epoch: i64) -> Result<(), ControllerError> {
        self.check_broker_epoch(node_id, epoch)
    }

    fn check_broker_epoch(&self, node_id: NodeId, epoch: i64) -> Result<(), ControllerError> {
        let b = self
            .image
            .broker(node_id)
            .ok_or(ControllerError::BrokerIdNotRegistered(node_id))?;
        if b.broker_epoch != epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                node_id,
                current: b.broker_epoch,
                got: epoch,
            });
        }
        Ok(())
    }

    pub(crate) fn can_lead(&self, node_id: NodeId) -> bool {
        self.image.broker(node_id).is_some_and(|b| !b.fenced)
    }

    /// BrokerRegistration: a new epoch (the offset of the registration record), fenced until the
    /// broker catches up. A different incarnation is refused while the current one still has a
    /// live session (two processes with one node id).
    pub fn register_broker(
        &mut self,
        req: BrokerRegistration,
        now: i64,
    ) -> Result<ControllerResult<i64>, ControllerError> {
        if let Some(old) = self.image.broker(req.node_id) {
            let alive = self
                .last_heartbeat
                .get(&req.node_id)
                .is_some_and(|t| now - t < self.config.session_timeout_ms);
            if old.incarnation_id != req.incarnation_id && !old.fenced && alive {
                return Err(ControllerError::DuplicateBrokerRegistration(req.node_id));
            }
        }
        let mut records = Vec::new();
        // The previous incarnation's in-memory state is gone: it must not lead or stay in ISRs.
        self.move_off(req.node_id, &mut records);
        let broker_epoch = self.next_offset;
        self.emit(
            &mut records,
            MetadataRecord::RegisterBroker {
                node_id: req.node_id,
                incarnation_id: req.incarnation_id,
                broker_epoch,
                rack: req.rack,
                endpoints: req.endpoints,
                fenced: true,
            },
        );
        self.last_heartbeat.insert(req.node_id, now);
        Ok(ControllerResult {
            records,
            response: broker_epoch,
        })
    }

    /// BrokerHeartbeat: refreshes the session; unfences a caught-up broker (and elects it where
    /// partitions had no leader) or fences one that asks for it.
    pub fn heartbeat(
        &mut self,
        req: BrokerHeartbeat,
        now: i64,
    ) -> Result<ControllerResult<HeartbeatReply>, ControllerError> {
        self.check_broker_epoch(req.node_id, req.broker_epoch)?;
        self.last_heartbeat.insert(req.node_id, now);
        self.reported
            .insert(req.node_id, (req.current_metadata_offset, now));
        let fenced = self.image.broker(req.node_id).is_some_and(|b| b.fenced);
        let is_caught_up = req.current_metadata_offset >= req.broker_epoch;
        let mut records = Vec::new();
        if req.want_fence && !fenced {
            self.fence(req.node_id, &mut records);
        } else if !req.want_fence && fenced && is_caught_up {
            self.emit(
                &mut records,
                MetadataRecord::UnfenceBroker {
                    node_id: req.node_id,
                    broker_epoch: req.broker_epoch,
                },
            );
            self.elect_offline(req.node_id, &mut records);
        }
        let is_fenced = self.image.broker(req.node_id).is_some_and(|b| b.fenced);
        Ok(ControllerResult {
            records,
            response: HeartbeatReply {
                is_caught_up,
                is_fenced,
            },
        })
    }

    /// Fence every unfenced broker whose last heartbeat is a session timeout old. The response
    /// lists the brokers fenced. A broker this controller has never heard from (it was not
    /// activated) gets a session starting now rather than being fenced at once.
    pub fn tick(&mut self, now: i64) -> ControllerResult<Vec<NodeId>> {
        for b in self.image.brokers() {
            self.last_heartbeat.entry(b.node_id).or_insert(now);
        }
        let expired: Vec<NodeId> = self
            .image
            .brokers()
            .filter(|b| !b.fenced)
            .filter(|b| {
                self.last_heartbeat
                    .get(&b.node_id)
                    .is_some_and(|t| now - t >= self.config.session_timeout_ms)
            })
            .map(|b| b.node_id)
            .collect();
        let mut records = Vec::new();
        for node_id in &expired {
            tracing::info!(node_id, "broker missed its heartbeats; fencing it");
            self.fence(*node_id, &mut records);
        }
        ControllerResult {
            records,
            response: expired,
        }
    }

    /// UnregisterBroker (operator): leadership moves off the broker, then it leaves the cluster.
    pub fn unregister_broker(
        &mut self,
        node_id: NodeId,
    ) -> Result<ControllerResult<()>, ControllerError> {
        let epoch = self
            .image
            .broker(node_id)
            .ok_or(ControllerError::BrokerIdNotRegistered(node_id))?
            .broker_epoch;
        let mut records = Vec::new();
        self.move_off(node_id, &mut records);
        self.emit(
            &mut records,
            MetadataRecord::UnregisterBroker {
                node_id,
                broker_epoch: epoch,
            },
        );
        self.last_heartbeat.remove(&node_id);
        self.reported.remove(&node_id);
        Ok(ControllerResult {
            records,
            response: (),
        })
    }

    /// Cordon (`true`: no new replicas) or uncordon a broker.
    pub fn set_cordoned(
        &mut self,
        node_id: NodeId,
        cordoned: bool,
    ) -> Result<ControllerResult<()>, ControllerError> {
        let b = self
            .image
            .broker(node_id)
            .ok_or(ControllerError::BrokerIdNotRegistered(node_id))?;
        if !cordoned && b.in_maintenance() {
            return Err(ControllerError::InvalidRequest(format!(
                "broker {node_id} is in maintenance, which keeps it cordoned; disable \
                 maintenance instead"
            )));
        }
        let mut records = Vec::new();
        if b.cordoned != cordoned {
            tracing::info!(
                node_id,
                rack = b.rack.as_deref().unwrap_or("-"),
                "broker {node_id} {}",
                if cordoned {
                    "cordoned: no new replicas are placed on it"
                } else {
                    "uncordoned: it takes new replicas again"
                }
            );
            let rec = if cordoned {
                MetadataRecord::CordonBroker { node_id }
            } else {
                MetadataRecord::UncordonBroker { node_id }
            };
            self.emit(&mut records, rec);
        }
        Ok(ControllerResult {
            records,
            response: (),
        })
    }

    /// CreateTopics for one topic: placement over unfenced, uncordoned brokers; every replica
    /// starts in the ISR and the preferred leader leads at epoch 0.
    pub fn create_topic(
        &mut self,
        req: CreateTopic,
        topic_id: Uuid,
    ) -> Result<ControllerResult<CreatedTopic>, ControllerError> {
        self.create_topic_with(req, topic_id, None)
    }

    /// CreateTopics with the replicas of each partition given (Kafka's manual assignment,
    /// `kafka-topics --replica-assignment`): every broker must be registered, no broker twice in
    /// a partition, every partition the same replication factor; the ISR is the unfenced
    /// replicas and the first of them leads. Partition `i` is `assignments[i]`.
    pub fn create_topic_assigned(
        &mut self,
        req: CreateTopic,
        topic_id: Uuid,
        assignments: Vec<Vec<NodeId>>,
    ) -> Result<ControllerResult<CreatedTopic>, ControllerError> {
        self.create_topic_with(req, topic_id, Some(assignments))
    }

    /// Check a manual assignment against the registered brokers (Kafka's messages).
    fn check_manual_assignment(&self, assignments: &[Vec<NodeId>]) -> Result<(), ControllerError> {
        let bad = ControllerError::InvalidReplicaAssignment;
        let Some(first) = assignments.first() else {
            return Err(bad("The manual partition assignment is empty.".into()));
        };
        for (p, replicas) in assignments.iter().enumerate() {
            if replicas.is_empty() {
                return Err(bad(format!(
                    "The manual partition assignment includes an empty replica list for partition {p}."
                )));
            }
            if replicas.len() != first.len() {
                return Err(bad(
                    "All partitions in the manual partition assignment must have the same number of replicas.".into(),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for &id in replicas {
                if !seen.insert(id) {
                    return Err(bad(format!(
                        "The manual partition assignment includes the broker {id} more than once."
                    )));
                }
                if self.image.broker(id).is_none() {
                    return Err(bad(format!(
                        "The manual partition assignment includes broker {id}, but no such broker is registered."
                    )));
                }
            }
            if !replicas
                .iter()
                .any(|&id| self.image.broker(id).is_some_and(|b| !b.fenced))
            {
                return Err(bad(format!(
                    "All brokers specified in the manual partition assignment for partition {p} are fenced or in controlled shutdown."
                )));
            }
        }
        Ok(())
    }

    fn create_topic_with(
        &mut self,
        req: CreateTopic,
        topic_id: Uuid,
        manual: Option<Vec<Vec<NodeId>>>,
    ) -> Result<ControllerResult<CreatedTopic>, ControllerError> {
        let assignments = self.plan_topic(&req, topic_id, manual)?;
        let partitions = assignments.len() as u32;
        let mut records = Vec::with_capacity(assignments.len() + 1);
        self.emit(
            &mut records,
            MetadataRecord::Topic {
                name: req.name,
                id: topic_id,
                partitions,
                configs: req.configs,
            },
        );
        for (p, replicas) in assignments.iter().enumerate() {
            self.emit_new_partition(&mut records, topic_id, p as u32, replicas.clone());
        }
        Ok(ControllerResult {
            records,
            response: CreatedTopic {
                topic_id,
                assignments,
            },
        })
    }

    /// Check a new topic and place its partitions, changing nothing: what `validate_only`
    /// answers (no clone of the controller, which at a million replicas is hundreds of MiB).
    pub(crate) fn plan_topic(
        &self,
        req: &CreateTopic,
        topic_id: Uuid,
        manual: Option<Vec<Vec<NodeId>>>,
    ) -> Result<Vec<Vec<NodeId>>, ControllerError> {
        if let Some(why) = invalid_topic_name(&req.name) {
            return Err(ControllerError::InvalidTopic(why));
        }
        if self.image.topic(&req.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(req.name.clone()));
        }
        if self.image.topic_by_id(&topic_id).is_some() {
            return Err(ControllerError::InvalidRequest(format!(
                "topic id {topic_id} is taken"
            )));
        }
        let assignments = match manual {
            Some(a) => {
                self.check_manual_assignment(&a)?;
                a
            }
            None => {
                if req.partitions == 0 {
                    return Err(ControllerError::InvalidPartitions(
                        "number of partitions must be at least 1".into(),
                    ));
                }
                placement::place(
                    &placement::eligible_brokers(&self.image),
                    placement::current_load(&self.image),
                    req.partitions,
                    req.replication_factor,
                )?
            }
        };
        Ok(assignments)
    }

    fn emit_new_partition(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: u32,
        replicas: Vec<NodeId>,
    ) {
        // Placement picks unfenced brokers only; a manual assignment may name fenced ones,
        // which start outside the ISR (at least one is unfenced, checked before).
        let isr: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|&id| self.image.broker(id).is_some_and(|b| !b.fenced))
            .collect();
        let leader = isr.first().copied().unwrap_or(replicas[0]);
        self.emit(
            out,
            MetadataRecord::Partition {
                topic_id,
                partition,
                isr,
                replicas,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: vec![],
                removing_replicas: vec![],
            },
        );
    }

    /// CreatePartitions: grow a topic to `total` partitions with the replication factor of its
    /// first partition.
    pub fn create_partitions(
        &mut self,
        name: &str,
        total: u32,
    ) -> Result<ControllerResult<Vec<Vec<NodeId>>>, ControllerError> {
        let (topic_id, current, assignments) = self.plan_partitions(name, total)?;
        let mut records = Vec::new();
        self.emit(
            &mut records,
            MetadataRecord::PartitionCount {
                id: topic_id,
                partitions: total,
            },
        );
        for (i, replicas) in assignments.iter().enumerate() {
            self.emit_new_partition(&mut records, topic_id, current + i as u32, replicas.clone());
        }
        Ok(ControllerResult {
            records,
            response: assignments,
        })
    }

    /// Check a CreatePartitions and place the new partitions, changing nothing: the topic's
    /// id, its current count and the new partitions' replicas.
    pub(crate) fn plan_partitions(
        &self,
        name: &str,
        total: u32,
    ) -> Result<(Uuid, u32, Vec<Vec<NodeId>>), ControllerError> {
        let topic =
            self.image
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
                    topic: name.into(),
                    partition: 0,
                })?;
        if internal::is_internal(name) {
            return Err(ControllerError::InvalidTopic(format!(
                "Cannot add partitions to internal topic {name}: its coordinator maps keys to partitions by the partition count"
            )));
        }
        let (topic_id, current) = (topic.id, topic.partitions);
        if total <= current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count must be larger"
            )));
        }
        // During a reassignment of partition 0 its target counts, not the replicas in flight.
        let rf = self
            .image
            .partition(&topic_id, 0)
            .map_or(1, |p| p.target_replicas().len()) as u16;
        let assignments = placement::place_in_topic(
            &placement::eligible_brokers(&self.image),
            placement::current_load(&self.image),
            &placement::topic_leaders(&self.image, &topic_id),
            total - current,
            rf,
        )?;
        Ok((topic_id, current, assignments))
    }

    /// The id of topic `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn topic_id(&self, name: &str) -> Result<Uuid, ControllerError> {
        self.image.topic(name).map(|t| t.id).ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition {
                topic: name.into(),
                partition: 0,
            }
        })
    }

    /// DeleteTopics for one topic.
    pub fn delete_topic(&mut self, name: &str) -> Result<ControllerResult<Uuid>, ControllerError> {
        let id = self.topic_id(name)?;
        if internal::is_internal(name) {
            return Err(ControllerError::InvalidTopic(format!(
                "Cannot delete internal topic {name}"
            )));
        }
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::RemoveTopic { id });
        Ok(ControllerResult {
            records,
            response: id,
        })
    }

    /// AlterPartition: the leader proposes a new ISR. Refused when the broker epoch is stale, the
    /// leader epoch or partition epoch is not current, the sender is not the leader, or the new
    /// ISR holds a fenced or unknown broker. Answers the partition state after the change.
    pub fn alter_partition(
        &mut self,
        req: AlterPartition,
    ) -> Result<ControllerResult<PartitionState>, ControllerError> {
        self.check_broker_epoch(req.node_id, req.broker_epoch)?;
        let topic = self
            .image
            .topic_by_id(&req.topic_id)
            .ok_or(ControllerError::UnknownTopicId(req.topic_id))?;
        let state = self
            .image
            .partition(&req.topic_id, req.partition)
            .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
                topic: topic.name.clone(),
                partition: req.partition,
            })?
            .clone();
        if req.leader_epoch != state.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                current: state.leader_epoch,
                got: req.leader_epoch,
            });
        }
        if state.leader != req.node_id {
            return Err(ControllerError::NotLeaderOrFollower {
                node_id: req.node_id,
                leader: state.leader,
            });
        }
        if req.partition_epoch != state.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                current: state.partition_epoch,
                got: req.partition_epoch,
            });
        }
        let isr = &req.new_isr;
        if !isr.contains(&req.node_id)
            || !isr.iter().all(|b| state.replicas.contains(b))
            || isr.iter().enumerate().any(|(i, b)| isr[..i].contains(b))
        {
            return Err(ControllerError::InvalidRequest(format!(
                "ISR {isr:?} must hold the leader and distinct replicas of {:?}",
                state.replicas
            )));
        }
        if let Some(b) = isr.iter().find(|b| !self.can_lead(**b)) {
            return Err(ControllerError::IneligibleReplica(*b));
        }
        let mut records = Vec::new();
        if *isr != state.isr {
            // An expanded ISR may complete a reassignment: then the same record also drops
            // the removed replicas, and the leader moves if it was one of them.
            let mut next = NextState::of(&state);
            next.isr = req.new_isr.clone();
            self.emit_next(&mut records, req.topic_id, req.partition, next);
        }
        let after = self
            .image
            .partition(&req.topic_id, req.partition)
            .expect("partition exists")
            .clone();
        Ok(ControllerResult {
            records,
            response: after,
        })
    }

    /// Preferred leader election (Kafka's `auto.leader.rebalance`): where the preferred replica
    /// (the first one, as placement balanced it across brokers and racks) is in the ISR and
    /// unfenced but does not lead, make it the leader. Restores the rack balance of leaders after
    /// brokers come back. The response is the number of partitions moved. Scans every partition.
    pub fn elect_preferred_leaders(&mut self) -> ControllerResult<usize> {
        let r = self.elect_leaders(ElectionType::Preferred, None);
        ControllerResult {
            records: r.records,
            response: r
                .response
                .iter()
                .filter(|e| e.error == election_error::NONE)
                .count(),
        }
    }

    /// ElectLeaders (KIP-460) for `partitions`, or for every partition with `None`. Preferred:
    /// the first replica leads if it is in the ISR and unfenced (else
    /// PREFERRED_LEADER_NOT_AVAILABLE). Unclean: only where there is no leader, from the ISR if
    /// possible, else the first live replica whatever the topic config says, since an operator
    /// asked (else ELIGIBLE_LEADERS_NOT_AVAILABLE). ELECTION_NOT_NEEDED where the preferred
    /// replica already leads (preferred) or there is a leader (unclean); unknown partitions get
    /// UNKNOWN_TOPIC_OR_PARTITION. With `None`, as in Kafka, ELECTION_NOT_NEEDED results are
    /// left out of the response.
    pub fn elect_leaders(
        &mut self,
        election: ElectionType,
        partitions: Option<&[(Uuid, u32)]>,
    ) -> ControllerResult<Vec<PartitionElection>> {
        let all = partitions.is_none();
        let targets: Vec<(Uuid, u32)> = match partitions {
            Some(p) => p.to_vec(),
            None => self
                .image
                .all_partitions()
                .filter(|(_, _, s)| match election {
                    ElectionType::Preferred => s.leader != s.preferred_leader(),
                    ElectionType::Unclean => s.leader == NO_LEADER,
                })
                .map(|(t, p, _)| (t, p))
                .collect(),
        };
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(targets.len());
        for (topic_id, partition) in targets {
            let error = self.elect_one(&mut records, election, topic_id, partition);
            if !(all && error == election_error::ELECTION_NOT_NEEDED) {
                results.push(PartitionElection {
                    topic_id,
                    partition,
                    error,
                });
            }
        }
        ControllerResult {
            records,
            response: results,
        }
    }

    pub(crate) fn elect_one(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        election: ElectionType,
        topic_id: Uuid,
        partition: u32,
    ) -> i16 {
        let Some(s) = self.image.partition(&topic_id, partition) else {
            return election_error::UNKNOWN_TOPIC_OR_PARTITION;
        };
        let (replicas, isr) = (s.replicas.clone(), s.isr.clone());
        match election {
            ElectionType::Preferred => {
                let preferred = s.preferred_leader();
                if s.leader == preferred {
                    return election_error::ELECTION_NOT_NEEDED;
                }
                // A broker in maintenance does not get its leaderships back until it leaves.
                if !isr.contains(&preferred)
                    || !self.can_lead(preferred)
                    || self.in_maintenance(preferred)
                {
                    return election_error::PREFERRED_LEADER_NOT_AVAILABLE;
                }
                self.emit_change(out, topic_id, partition, isr, preferred);
                election_error::NONE
            }
            ElectionType::Unclean => {
                if s.leader != NO_LEADER {
                    return election_error::ELECTION_NOT_NEEDED;
                }
                let leader = self.choose_leader(&replicas, &isr, None);
                if leader != NO_LEADER {
                    self.emit_change(out, topic_id, partition, isr, leader);
                    return election_error::NONE;
                }
                if self.elect_unclean(out, topic_id, partition, None, "ElectLeaders") {
                    election_error::NONE
                } else {
                    election_error::ELIGIBLE_LEADERS_NOT_AVAILABLE
                }
            }
        }
    }

    /// Is `unclean.leader.election.enable` true for the topic (its override, else the cluster
    /// default)? A value other than true/false (the broker validates them) counts as unset.
    pub fn unclean_election_enabled(&self, topic_id: &Uuid) -> bool {
        self.image
            .topic_by_id(topic_id)
            .and_then(|t| t.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE))
            .and_then(|v| parse_bool(v))
            .unwrap_or(self.config.unclean_leader_election_enable)
    }

    /// Could any topic elect uncleanly? Spares the partition scan when nobody enabled it.
    fn any_unclean_election_enabled(&self) -> bool {
        let default = self.config.unclean_leader_election_enable;
        self.image.topics().any(|t| {
            t.configs
                .get(UNCLEAN_LEADER_ELECTION_ENABLE)
                .and_then(|v| parse_bool(v))
                .unwrap_or(default)
        })
    }

    /// Elect the first live replica (replica order, not `except`) of a partition that has no
    /// eligible ISR member, with ISR = [that replica], and say loudly what it may cost. False
    /// if no replica is live.
    fn elect_unclean(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: u32,
        except: Option<NodeId>,
        cause: &str,
    ) -> bool {
        let Some(state) = self.image.partition(&topic_id, partition) else {
            return false;
        };
        // A replica a reassignment is adding may have almost nothing yet: the original
        // replicas go first.
        let adding = &state.adding_replicas;
        let Some(leader) = state
            .replicas
            .iter()
            .filter(|b| !adding.contains(b))
            .chain(state.replicas.iter().filter(|b| adding.contains(b)))
            .copied()
            .find(|b| Some(*b) != except && self.can_lead(*b))
        else {
            return false;
        };
        let old_isr = state.isr.clone();
        let old_leader_epoch = state.leader_epoch;
        let topic = self
            .image
            .topic_by_id(&topic_id)
            .map_or_else(|| topic_id.to_string(), |t| t.name.clone());
        tracing::warn!(
            topic = %topic,
            partition,
            new_leader = leader,
            ?old_isr,
            leader_epoch = old_leader_epoch + 1,
            cause,
            "unclean leader election: no in-sync replica can lead {topic}-{partition}; electing \
             out-of-sync replica {leader} with ISR [{leader}]. Records acknowledged by the old \
             ISR {old_isr:?} but missing on broker {leader} will be lost (the old ISR members \
             log what they truncate when they return)"
        );
        self.unclean_elections += 1;
        self.emit_change(out, topic_id, partition, vec![leader], leader);
        true
    }

    fn fence(&mut self, node_id: NodeId, out: &mut Vec<MetadataRecord>) {
        let Some(epoch) = self.image.broker(node_id).map(|b| b.broker_epoch) else {
            return;
        };
        self.move_off(node_id, out);
        self.emit(
            out,
            MetadataRecord::FenceBroker {
                node_id,
                broker_epoch: epoch,
            },
        );
    }

    /// Take `node_id` out of every ISR (unless it is the last member) and elect a new leader
    /// from the ISR wherever it leads (or where there was none). Where no ISR member can lead
    /// and the topic allows it, elect uncleanly instead.
    fn move_off(&mut self, node_id: NodeId, out: &mut Vec<MetadataRecord>) {
        let parts: Vec<(Uuid, u32)> = self.image.partitions_in_isr(node_id).collect();
        for (topic_id, partition) in parts {
            let Some(state) = self.image.partition(&topic_id, partition) else {
                continue;
            };
            let mut isr: Vec<NodeId> = state
                .isr
                .iter()
                .copied()
                .filter(|b| *b != node_id)
                .collect();
            if isr.is_empty() {
                isr.push(node_id); // keep the last in-sync replica: it is the only clean leader
            }
            let leader = if state.leader == node_id || state.leader == NO_LEADER {
                self.choose_leader(&state.replicas, &isr, Some(node_id))
            } else {
                state.leader
            };
            if leader == NO_LEADER
                && self.unclean_election_enabled(&topic_id)
                && self.elect_unclean(out, topic_id, partition, Some(node_id), "broker left")
            {
                continue;
            }
            self.emit_change(out, topic_id, partition, isr, leader);
        }
    }

    /// Elect `node_id` (just unfenced) or another eligible ISR member where a partition in its
    /// ISR has no leader. Where it is an out-of-sync replica of a leaderless partition whose ISR
    /// is still down and the topic allows it, elect uncleanly.
    fn elect_offline(&mut self, node_id: NodeId, out: &mut Vec<MetadataRecord>) {
        let parts: Vec<(Uuid, u32)> = self.image.partitions_in_isr(node_id).collect();
        for (topic_id, partition) in parts {
            let Some(state) = self.image.partition(&topic_id, partition) else {
                continue;
            };
            if state.leader != NO_LEADER {
                continue;
            }
            let isr = state.isr.clone();
            let leader = self.choose_leader(&state.replicas, &isr, None);
            self.emit_change(out, topic_id, partition, isr, leader);
        }
        if !self.any_unclean_election_enabled() {
            return;
        }
        // Not indexed by replica: a scan, but only on unfencing and only when some topic
        // allows unclean elections.
        let leaderless: Vec<(Uuid, u32)> = self
            .image
            .all_partitions()
            .filter(|(_, _, s)| s.leader == NO_LEADER && s.replicas.contains(&node_id))
            .map(|(t, p, _)| (t, p))
            .collect();
        for (topic_id, partition) in leaderless {
            if self.unclean_election_enabled(&topic_id) {
                self.elect_leaderless(out, topic_id, partition, "out-of-sync replica unfenced");
            }
        }
    }

    /// Elect where a partition has no leader: from the ISR if a member can lead, else
    /// uncleanly. The caller has checked that the topic allows unclean elections.
    fn elect_leaderless(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: u32,
        cause: &str,
    ) {
        let Some(state) = self.image.partition(&topic_id, partition) else {
            return;
        };
        if state.leader != NO_LEADER {
            return;
        }
        let isr = state.isr.clone();
        let leader = self.choose_leader(&state.replicas, &isr, None);
        if leader != NO_LEADER {
            self.emit_change(out, topic_id, partition, isr, leader);
        } else {
            self.elect_unclean(out, topic_id, partition, None, cause);
        }
    }

    /// After a config change of topic `topic_id`: if unclean elections are now allowed, elect
    /// where its partitions have no leader (Kafka does the same).
    pub(crate) fn elect_after_config_change(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
    ) {
        if !self.unclean_election_enabled(&topic_id) {
            return;
        }
        let leaderless: Vec<u32> = self
            .image
            .partitions(&topic_id)
            .filter(|(_, s)| s.leader == NO_LEADER)
            .map(|(p, _)| p)
            .collect();
        for partition in leaderless {
            self.elect_leaderless(
                out,
                topic_id,
                partition,
                "unclean.leader.election.enable set",
            );
        }
    }

    /// The first replica (preferred order) that is in `isr`, unfenced and not `except`; a
    /// broker in maintenance only when no other such replica exists.
    pub(crate) fn choose_leader(
        &self,
        replicas: &[NodeId],
        isr: &[NodeId],
        except: Option<NodeId>,
    ) -> NodeId {
        replicas
            .iter()
            .copied()
            .filter(|b| Some(*b) != except && isr.contains(b) && self.can_lead(*b))
            .min_by_key(|b| self.in_maintenance(*b)) // the first of the lowest
            .unwrap_or(NO_LEADER)
    }

    /// Whether `node_id` is a broker in maintenance mode.
    pub(crate) fn in_maintenance(&self, node_id: NodeId) -> bool {
        self.image
            .broker(node_id)
            .is_some_and(|b| b.in_maintenance())
    }

    pub(crate) fn emit_change(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: u32,
        isr: Vec<NodeId>,
        leader: NodeId,
    ) {
        let Some(state) = self.image.partition(&topic_id, partition) else {
            return;
        };
        let mut next = NextState::of(state);
        next.isr = isr;
        next.leader = leader;
        self.emit_next(out, topic_id, partition, next);
    }

    /// Emit the change from a partition's current state to `next` (nothing if they are the
    /// same). Every partition change goes through here, so a reassignment completes in the
    /// first change whose ISR holds every target replica: the removed replicas leave the
    /// replicas and the ISR, and a leader that was removed hands over to the first target
    /// replica in the ISR (a new leader epoch).
    pub(crate) fn emit_next(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: u32,
        mut next: NextState,
    ) {
        let Some(state) = self.image.partition(&topic_id, partition).cloned() else {
            return;
        };
        if let Some(done) = crate::reassignment::completed(&next) {
            let leader = if done.isr.contains(&next.leader) && self.can_lead(next.leader) {
                next.leader
            } else {
                self.choose_leader(&done.replicas, &done.isr, None)
            };
            self.note_reassignment_completed(topic_id, partition, &state, &done, leader);
            next = NextState { leader, ..done };
        }
        let replicas_changed = next.replicas != state.replicas;
        let isr_changed = next.isr != state.isr;
        let leader_changed = next.leader != state.leader;
        let adding_changed = next.adding != state.adding_replicas;
        let removing_changed = next.removing != state.removing_replicas;
        if !(replicas_changed
            || isr_changed
            || leader_changed
            || adding_changed
            || removing_changed)
        {
            return;
        }
        let rec = MetadataRecord::PartitionChange {
            topic_id,
            partition,
            replicas: replicas_changed.then_some(next.replicas),
            isr: isr_changed.then_some(next.isr),
            leader: leader_changed.then_some(next.leader),
            leader_epoch: state.leader_epoch + i32::from(leader_changed),
            partition_epoch: state.partition_epoch + 1,
            adding_replicas: adding_changed.then_some(next.adding),
            removing_replicas: removing_changed.then_some(next.removing),
        };
        self.emit(out, rec);
    }
}

/// A partition's replicas, ISR, leader and reassignment sets as a change wants them, before
/// [`Controller::emit_next`] turns the difference into a `PartitionChange` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NextState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

impl NextState {
    /// The partition as it is (change fields from here).
    pub fn of(s: &PartitionState) -> NextState {
        NextState {
            replicas: s.replicas.clone(),
            isr: s.isr.clone(),
            leader: s.leader,
            adding: s.adding_replicas.clone(),
            removing: s.removing_replicas.clone(),
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 9_000;

    fn reg(c: &mut Controller, id: NodeId, rack: &str, now: i64) -> i64 {
        let r = c
            .register_broker(
                BrokerRegistration {
                    node_id: id,
                    incarnation_id: Uuid::new_v4(),
                    rack: Some(rack.into()),
                    endpoints: vec![],
                },
                now,
            )
            .unwrap();
        r.response
    }

    fn hb(c: &mut Controller, id: NodeId, epoch: i64, now: i64) -> HeartbeatReply {
        let offset = c.next_offset() - 1;
        c.heartbeat(
            BrokerHeartbeat {
                node_id: id,
                broker_epoch: epoch,
                current_metadata_offset: offset,
                want_fence: false,
            },
            now,
        )
        .unwrap()
        .response
    }

    /// Three unfenced brokers in racks a, b, c; returns their epochs.
    fn cluster(c: &mut Controller) -> Vec<i64> {
        let epochs: Vec<i64> = (1..=3)
            .map(|i| reg(c, i, ["a", "b", "c"][i as usize - 1], 0))
            .collect();
        for i in 1..=3 {
            assert!(!hb(c, i, epochs[i as usize - 1], 0).is_fenced);
        }
        epochs
    }

    fn topic(c: &mut Controller, name: &str, partitions: u32, rf: u16) -> Uuid {
        c.create_topic(
            CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: BTreeMap::new(),
            },
            Uuid::new_v4(),
        )
        .unwrap()
        .response
        .topic_id
    }

    #[test]
    fn error_codes_are_kafkas() {
        let table = [
            (
                ControllerError::StaleBrokerEpoch {
                    node_id: 1,
                    current: 2,
                    got: 1,
                },
                77,
            ),
            (ControllerError::DuplicateBrokerRegistration(1), 101),
            (ControllerError::BrokerIdNotRegistered(1), 102),
            (ControllerError::UnknownTopicId(Uuid::nil()), 100),
            (
                ControllerError::UnknownTopicOrPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                3,
            ),
            (ControllerError::TopicAlreadyExists("t".into()), 36),
            (ControllerError::InvalidTopic("t".into()), 17),
            (ControllerError::InvalidPartitions("t".into()), 37),
            (
                ControllerError::InvalidReplicationFactor(PlacementError::ZeroReplicationFactor),
                38,
            ),
            (
                ControllerError::FencedLeaderEpoch { current: 1, got: 0 },
                74,
            ),
            (
                ControllerError::NotLeaderOrFollower {
                    node_id: 1,
                    leader: 2,
                },
                6,
            ),
            (
                ControllerError::InvalidUpdateVersion { current: 1, got: 0 },
                95,
            ),
            (ControllerError::IneligibleReplica(1), 107),
            (ControllerError::InvalidRequest("x".into()), 42),
            (ControllerError::InvalidConfig("x".into()), 40),
            (ControllerError::InvalidReplicaAssignment("x".into()), 39),
            (ControllerError::NoReassignmentInProgress("x".into()), 85),
            (
                ControllerError::ReplicationFactorChange { from: 3, to: 4 },
                38,
            ),
        ];
        for (e, code) in table {
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn registration_epoch_is_the_record_offset_and_rises() {
        let mut c = Controller::new(ControllerConfig::default());
        let e1 = reg(&mut c, 1, "a", 0);
        assert_eq!(e1, 0);
        assert!(c.image().broker(1).unwrap().fenced, "registers fenced");
        // Not caught up: stays fenced.
        let r = c
            .heartbeat(
                BrokerHeartbeat {
                    node_id: 1,
                    broker_epoch: e1,
                    current_metadata_offset: -1,
                    want_fence: false,
                },
                1,
            )
            .unwrap();
        assert!(r.records.is_empty() && r.response.is_fenced && !r.response.is_caught_up);
        assert!(!hb(&mut c, 1, e1, 2).is_fenced);
        // A restart after the session expired: new incarnation, new and larger epoch.
        c.tick(2 + T);
        let e2 = reg(&mut c, 1, "a", 3 + T);
        assert!(e2 > e1);
        assert_eq!(c.image().broker(1).unwrap().broker_epoch, e2);
        // The old incarnation's heartbeat is refused.
        let err = c
            .heartbeat(
                BrokerHeartbeat {
                    node_id: 1,
                    broker_epoch: e1,
                    current_metadata_offset: 100,
                    want_fence: false,
                },
                4 + T,
            )
            .unwrap_err();
        assert_eq!(err.code(), 77);
    }

    #[test]
    fn live_broker_id_cannot_be_taken_by_another_incarnation() {
        let mut c = Controller::new(ControllerConfig::default());
        let e = reg(&mut c, 1, "a", 0);
        hb(&mut c, 1, e, 0);
        let other = BrokerRegistration {
            node_id: 1,
            incarnation_id: Uuid::new_v4(),
            rack: None,
            endpoints: vec![],
        };
        assert_eq!(
            c.register_broker(other.clone(), 10).unwrap_err(),
            ControllerError::DuplicateBrokerRegistration(1)
        );
        // Once the session has expired the new incarnation may register.
        assert!(c.register_broker(other, T + 10).is_ok());
    }

    #[test]
    fn missed_heartbeats_fence_and_move_leadership_within_the_isr() {
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let t = topic(&mut c, "t", 6, 3);
        let led_by_1: Vec<u32> = c
            .image()
            .partitions(&t)
            .filter(|(_, s)| s.leader == 1)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(led_by_1.len(), 2, "leaders balanced");
        // Brokers 2 and 3 keep heartbeating, 1 goes silent.
        hb(&mut c, 2, epochs[1], T - 1);
        hb(&mut c, 3, epochs[2], T - 1);
        let r = c.tick(T);
        assert_eq!(r.response, vec![1]);
        assert!(matches!(
            r.records.last(),
            Some(MetadataRecord::FenceBroker { node_id: 1, .. })
        ));
        assert!(c.image().broker(1).unwrap().fenced);
        for (p, s) in c.image().partitions(&t) {
            assert_ne!(s.leader, 1);
            assert!(!s.isr.contains(&1), "fenced broker left the ISR of {p}");
            if led_by_1.contains(&p) {
                assert_eq!(s.leader_epoch, 1);
            }
        }
        assert!(c.tick(T + 1).records.is_empty(), "fencing happens once");
    }

    #[test]
    fn last_isr_member_keeps_its_place_and_leads_again_when_unfenced() {
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let t = topic(&mut c, "t", 1, 1);
        let leader = c.image().partition(&t, 0).unwrap().leader;
        let mut want_fence = BrokerHeartbeat {
            node_id: leader,
            broker_epoch: epochs[leader as usize - 1],
            current_metadata_offset: c.next_offset(),
            want_fence: true,
        };
        c.heartbeat(want_fence, 1).unwrap();
        let s = c.image().partition(&t, 0).unwrap();
        assert_eq!(
            (s.leader, s.isr.clone(), s.leader_epoch),
            (NO_LEADER, vec![leader], 1)
        );
        want_fence.want_fence = false;
        want_fence.current_metadata_offset = c.next_offset();
        let r = c.heartbeat(want_fence, 2).unwrap();
        assert!(!r.response.is_fenced);
        let s = c.image().partition(&t, 0).unwrap();
        assert_eq!((s.leader, s.leader_epoch), (leader, 2));
    }

    #[test]
    fn restarted_broker_loses_leadership_and_isr() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let t = topic(&mut c, "t", 3, 3);
        // Broker 2 restarts quickly (its old session was fenced by a want_fence heartbeat on
        // shutdown), then registers again.
        let e2 = c.image().broker(2).unwrap().broker_epoch;
        c.heartbeat(
            BrokerHeartbeat {
                node_id: 2,
                broker_epoch: e2,
                current_metadata_offset: 0,
                want_fence: true,
            },
            5,
        )
        .unwrap();
        let new_epoch = reg(&mut c, 2, "b", 6);
        assert!(new_epoch > e2);
        for (_, s) in c.image().partitions(&t) {
            assert_ne!(s.leader, 2);
            assert!(!s.isr.contains(&2));
        }
    }

    #[test]
    fn alter_partitions_batches_and_answers_each_partition() {
        use crate::rpc::{AlterPartitionItem, ControllerReply, ControllerRequest};
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let t = topic(&mut c, "t", 1, 3);
        let s0 = c.image().partition(&t, 0).unwrap().clone();
        let leader = s0.leader;
        // Drop one follower from the ISR.
        let dropped = *s0.isr.iter().find(|b| **b != leader).unwrap();
        let good = AlterPartitionItem {
            topic_id: t,
            partition: 0,
            leader_epoch: s0.leader_epoch,
            partition_epoch: s0.partition_epoch,
            new_isr: s0.isr.iter().copied().filter(|b| *b != dropped).collect(),
        };
        let stale = AlterPartitionItem {
            partition_epoch: s0.partition_epoch + 7,
            ..good.clone()
        };
        let before = c.next_offset();
        let out = c
            .handle(
                ControllerRequest::AlterPartitions {
                    node_id: leader,
                    broker_epoch: epochs[leader as usize - 1],
                    partitions: vec![good, stale],
                },
                1,
            )
            .unwrap();
        let ControllerReply::PartitionsAltered { results } = out.response else {
            panic!("unexpected reply");
        };
        assert_eq!(
            results.iter().map(|r| r.error).collect::<Vec<_>>(),
            vec![0, 95]
        );
        assert_eq!(
            out.records.len(),
            1,
            "one record for the accepted change only"
        );
        assert_eq!(c.next_offset(), before + 1);
        assert_eq!(c.image().partition(&t, 0).unwrap().isr.len(), 2);
        // A stale broker epoch refuses the whole request.
        let err = c
            .handle(
                ControllerRequest::AlterPartitions {
                    node_id: leader,
                    broker_epoch: epochs[leader as usize - 1] - 1,
                    partitions: vec![],
                },
                1,
            )
            .unwrap_err();
        assert_eq!(err.code(), 77);
    }

    #[test]
    fn alter_partition_checks_epochs_leader_and_eligibility() {
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let t = topic(&mut c, "t", 1, 3);
        let s = c.image().partition(&t, 0).unwrap().clone();
        let leader = s.leader;
        let follower = *s.replicas.iter().find(|b| **b != leader).unwrap();
        let base = AlterPartition {
            node_id: leader,
            broker_epoch: epochs[leader as usize - 1],
            topic_id: t,
            partition: 0,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            new_isr: vec![leader, follower],
        };
        let ok = c.alter_partition(base.clone()).unwrap();
        assert_eq!(ok.response.isr, vec![leader, follower]);
        assert_eq!(ok.response.partition_epoch, 1);
        // The same proposal again carries a stale partition epoch.
        assert_eq!(c.alter_partition(base.clone()).unwrap_err().code(), 95);
        let mut stale_broker = base.clone();
        stale_broker.broker_epoch -= 1;
        assert_eq!(c.alter_partition(stale_broker).unwrap_err().code(), 77);
        let mut not_leader = base.clone();
        not_leader.node_id = follower;
        not_leader.broker_epoch = epochs[follower as usize - 1];
        not_leader.partition_epoch = 1;
        assert_eq!(c.alter_partition(not_leader).unwrap_err().code(), 6);
        let mut old_leader_epoch = base.clone();
        old_leader_epoch.leader_epoch = -1;
        assert_eq!(c.alter_partition(old_leader_epoch).unwrap_err().code(), 74);
        // A fenced broker cannot join the ISR.
        let third = *s
            .replicas
            .iter()
            .find(|b| **b != leader && **b != follower)
            .unwrap();
        c.heartbeat(
            BrokerHeartbeat {
                node_id: third,
                broker_epoch: epochs[third as usize - 1],
                current_metadata_offset: 0,
                want_fence: true,
            },
            1,
        )
        .unwrap();
        let mut add_fenced = base;
        add_fenced.partition_epoch = c.image().partition(&t, 0).unwrap().partition_epoch;
        add_fenced.new_isr = vec![leader, follower, third];
        assert_eq!(c.alter_partition(add_fenced).unwrap_err().code(), 107);
    }

    #[test]
    fn cordoned_and_fenced_brokers_get_no_new_replicas() {
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let e4 = reg(&mut c, 4, "a", 0); // registered, never unfenced
        let _ = e4;
        c.set_cordoned(1, true).unwrap();
        let err = c
            .create_topic(
                CreateTopic {
                    name: "x".into(),
                    partitions: 1,
                    replication_factor: 3,
                    configs: BTreeMap::new(),
                },
                Uuid::new_v4(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 38);
        let t = topic(&mut c, "t", 8, 2);
        for (_, s) in c.image().partitions(&t) {
            assert!(
                !s.replicas.contains(&1) && !s.replicas.contains(&4),
                "{s:?}"
            );
        }
        // Cordon survives a re-registration.
        c.heartbeat(
            BrokerHeartbeat {
                node_id: 1,
                broker_epoch: epochs[0],
                current_metadata_offset: 0,
                want_fence: true,
            },
            1,
        )
        .unwrap();
        reg(&mut c, 1, "a", 2);
        assert!(c.image().broker(1).unwrap().cordoned);
        c.set_cordoned(1, false).unwrap();
        assert!(!c.image().broker(1).unwrap().cordoned);
    }

    #[test]
    fn manual_assignments_are_kept_and_checked() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        reg(&mut c, 4, "a", 0); // registered, never unfenced
        let req = |name: &str| CreateTopic {
            name: name.into(),
            partitions: 0,
            replication_factor: 0,
            configs: BTreeMap::new(),
        };
        let t = c
            .create_topic_assigned(req("m"), Uuid::new_v4(), vec![vec![3, 1], vec![4, 2]])
            .unwrap()
            .response
            .topic_id;
        let parts: Vec<_> = c.image().partitions(&t).map(|(_, s)| s.clone()).collect();
        assert_eq!(c.image().topic("m").unwrap().partitions, 2);
        assert_eq!(
            (parts[0].replicas.clone(), parts[0].leader),
            (vec![3, 1], 3)
        );
        // The fenced broker keeps its place in the replicas, outside the ISR, not leading.
        assert_eq!(parts[1].replicas, vec![4, 2]);
        assert_eq!((parts[1].isr.clone(), parts[1].leader), (vec![2], 2));
        for (assignment, why) in [
            (vec![vec![1, 9]], "no such broker is registered"),
            (vec![vec![1, 1]], "more than once"),
            (vec![vec![1, 2], vec![3]], "same number of replicas"),
            (vec![vec![]], "empty replica list"),
            (vec![vec![4]], "fenced"),
            (vec![], "empty"),
        ] {
            let err = c
                .create_topic_assigned(req("bad"), Uuid::new_v4(), assignment.clone())
                .unwrap_err();
            assert_eq!(err.code(), 39, "{assignment:?}: {err}");
            assert!(err.to_string().contains(why), "{assignment:?}: {err}");
        }
        assert!(c.image().topic("bad").is_none());
    }

    #[test]
    fn internal_topics_cannot_be_deleted_grown_or_uncompacted() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let name = internal::GROUP_METADATA_TOPIC;
        topic(&mut c, name, 3, 1);
        assert_eq!(c.delete_topic(name).unwrap_err().code(), 17);
        assert_eq!(c.create_partitions(name, 4).unwrap_err().code(), 17);
        for change in [Some("delete".to_string()), None] {
            let err = c
                .alter_topic_configs(name, &[("cleanup.policy".into(), change)])
                .unwrap_err();
            assert_eq!(err.code(), 40, "{err}");
        }
        let ok = c
            .alter_topic_configs(name, &[("segment.bytes".into(), Some("1048576".into()))])
            .unwrap();
        assert_eq!(ok.records.len(), 1);
        assert_eq!(c.image().topic(name).unwrap().partitions, 3);
        // A user topic with a similar name is an ordinary topic.
        topic(&mut c, "__mine", 1, 1);
        assert!(c.create_partitions("__mine", 2).is_ok());
        assert!(c.delete_topic("__mine").is_ok());
    }

    #[test]
    fn topic_errors_and_partitions_and_delete() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let t = topic(&mut c, "t", 2, 2);
        let dup = CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            c.create_topic(dup.clone(), Uuid::new_v4())
                .unwrap_err()
                .code(),
            36
        );
        let bad = CreateTopic {
            name: "a/b".into(),
            ..dup.clone()
        };
        assert_eq!(c.create_topic(bad, Uuid::new_v4()).unwrap_err().code(), 17);
        let zero = CreateTopic {
            name: "z".into(),
            partitions: 0,
            ..dup
        };
        assert_eq!(c.create_topic(zero, Uuid::new_v4()).unwrap_err().code(), 37);
        assert_eq!(c.create_partitions("t", 2).unwrap_err().code(), 37);
        let added = c.create_partitions("t", 5).unwrap().response;
        assert_eq!(added.len(), 3);
        assert!(added.iter().all(|r| r.len() == 2));
        assert_eq!(c.image().partitions(&t).count(), 5);
        c.delete_topic("t").unwrap();
        assert_eq!(c.image().partitions(&t).count(), 0);
        assert_eq!(c.image().partitions_in_isr(1).count(), 0);
        assert_eq!(c.delete_topic("t").unwrap_err().code(), 3);
    }

    #[test]
    fn unregister_moves_leadership_first() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let t = topic(&mut c, "t", 3, 3);
        let r = c.unregister_broker(1).unwrap();
        assert!(matches!(
            r.records.last(),
            Some(MetadataRecord::UnregisterBroker { node_id: 1, .. })
        ));
        assert!(c.image().broker(1).is_none());
        assert!(c
            .image()
            .partitions(&t)
            .all(|(_, s)| s.leader != 1 && s.leader != NO_LEADER));
    }

    #[test]
    fn preferred_leaders_come_back_after_a_restart() {
        let mut c = Controller::new(ControllerConfig::default());
        let epochs = cluster(&mut c);
        let t = topic(&mut c, "t", 6, 3);
        let e1 = epochs[0];
        c.heartbeat(
            BrokerHeartbeat {
                node_id: 1,
                broker_epoch: e1,
                current_metadata_offset: 0,
                want_fence: true,
            },
            1,
        )
        .unwrap();
        assert_eq!(c.image().partitions_led_by(1).count(), 0);
        assert_eq!(
            c.elect_preferred_leaders().response,
            0,
            "broker 1 is fenced and out of the ISRs"
        );
        // Broker 1 comes back, is unfenced, and the leaders put it back into the ISRs.
        let hb = BrokerHeartbeat {
            node_id: 1,
            broker_epoch: e1,
            current_metadata_offset: c.next_offset(),
            want_fence: false,
        };
        c.heartbeat(hb, 2).unwrap();
        let parts: Vec<(u32, PartitionState)> = c
            .image()
            .partitions(&t)
            .map(|(p, s)| (p, s.clone()))
            .collect();
        for (p, s) in parts {
            let mut isr = s.isr.clone();
            isr.push(1);
            c.alter_partition(AlterPartition {
                node_id: s.leader,
                broker_epoch: epochs[s.leader as usize - 1],
                topic_id: t,
                partition: p,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                new_isr: isr,
            })
            .unwrap();
        }
        let r = c.elect_preferred_leaders();
        assert_eq!(r.response, 2);
        assert_eq!(c.image().partitions_led_by(1).count(), 2);
        assert!(c
            .image()
            .partitions(&t)
            .all(|(_, s)| s.leader == s.preferred_leader()));
        assert!(c.elect_preferred_leaders().records.is_empty());
    }

    #[test]
    fn a_controller_built_from_an_image_does_not_fence_on_its_first_tick() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let mut next = Controller::from_image(*c.config(), c.image().clone(), c.next_offset());
        assert!(next.tick(100 * T).records.is_empty());
        assert_eq!(next.tick(101 * T).response.len(), 3);
    }

    #[test]
    fn standby_replaying_the_records_reaches_the_same_image() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut log = Vec::new();
        for i in 1..=3 {
            let r = c
                .register_broker(
                    BrokerRegistration {
                        node_id: i,
                        incarnation_id: Uuid::from_u128(i as u128),
                        rack: None,
                        endpoints: vec![],
                    },
                    0,
                )
                .unwrap();
            log.extend(r.records);
            let hb = BrokerHeartbeat {
                node_id: i,
                broker_epoch: r.response,
                current_metadata_offset: c.next_offset() - 1,
                want_fence: false,
            };
            log.extend(c.heartbeat(hb, 0).unwrap().records);
        }
        let create = CreateTopic {
            name: "t".into(),
            partitions: 4,
            replication_factor: 2,
            configs: BTreeMap::new(),
        };
        log.extend(c.create_topic(create, Uuid::new_v4()).unwrap().records);
        log.extend(c.tick(T).records);
        let mut standby = Controller::new(ControllerConfig::default());
        for r in &log {
            standby.replay(r);
        }
        assert_eq!(standby.next_offset(), c.next_offset());
        assert_eq!(standby.image(), c.image());
        assert!(standby.image().brokers().all(|b| b.fenced));
    }

    fn set_fenced(c: &mut Controller, id: NodeId, fenced: bool) -> Vec<MetadataRecord> {
        let epoch = c.image().broker(id).unwrap().broker_epoch;
        c.heartbeat(
            BrokerHeartbeat {
                node_id: id,
                broker_epoch: epoch,
                current_metadata_offset: c.next_offset(),
                want_fence: fenced,
            },
            1,
        )
        .unwrap()
        .records
    }

    fn state(c: &Controller, t: Uuid) -> (NodeId, Vec<NodeId>) {
        let s = c.image().partition(&t, 0).unwrap();
        (s.leader, s.isr.clone())
    }

    fn unclean_topic(c: &mut Controller, name: &str, enabled: Option<bool>) -> Uuid {
        let configs = enabled
            .map(|e| (UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), e.to_string()))
            .into_iter()
            .collect();
        c.create_topic(
            CreateTopic {
                name: name.into(),
                partitions: 1,
                replication_factor: 3,
                configs,
            },
            Uuid::new_v4(),
        )
        .unwrap()
        .response
        .topic_id
    }

    /// Brokers 1, 2, 3 fenced one by one: the partition is left with ISR [3] and no leader.
    fn kakao(default: bool, topic_setting: Option<bool>) -> (Controller, Uuid) {
        let mut c = Controller::new(ControllerConfig {
            unclean_leader_election_enable: default,
            ..ControllerConfig::default()
        });
        cluster(&mut c);
        let t = unclean_topic(&mut c, "t", topic_setting);
        for id in 1..=3 {
            set_fenced(&mut c, id, true);
        }
        assert_eq!(state(&c, t), (NO_LEADER, vec![3]));
        (c, t)
    }

    #[test]
    fn kakao_sequence_without_unclean_election_stays_leaderless() {
        for (default, topic_setting) in [(false, None), (false, Some(false)), (true, Some(false))] {
            let (mut c, t) = kakao(default, topic_setting);
            // Broker 1 comes back first: it is not in the ISR, so it must not lead.
            set_fenced(&mut c, 1, false);
            set_fenced(&mut c, 2, false);
            assert_eq!(
                state(&c, t),
                (NO_LEADER, vec![3]),
                "{default} {topic_setting:?}"
            );
            assert_eq!(c.unclean_elections(), 0);
            // The last ISR member returns and leads; nothing was lost.
            set_fenced(&mut c, 3, false);
            assert_eq!(state(&c, t), (3, vec![3]));
        }
    }

    #[test]
    fn kakao_sequence_with_unclean_election_elects_the_first_live_replica() {
        for (default, topic_setting) in [(true, None), (false, Some(true)), (true, Some(true))] {
            let (mut c, t) = kakao(default, topic_setting);
            let epoch = c.image().partition(&t, 0).unwrap().leader_epoch;
            let records = set_fenced(&mut c, 1, false);
            // Unfence and election in one batch.
            assert!(matches!(
                records[0],
                MetadataRecord::UnfenceBroker { node_id: 1, .. }
            ));
            assert!(records.iter().any(|r| matches!(
                r,
                MetadataRecord::PartitionChange {
                    leader: Some(1),
                    ..
                }
            )));
            assert_eq!(state(&c, t), (1, vec![1]), "{default} {topic_setting:?}");
            assert_eq!(c.image().partition(&t, 0).unwrap().leader_epoch, epoch + 1);
            assert_eq!(c.unclean_elections(), 1);
            // Broker 3 (the old ISR) returns: a follower, out of the ISR until the leader
            // adds it.
            set_fenced(&mut c, 3, false);
            assert_eq!(state(&c, t), (1, vec![1]));
            assert_eq!(c.unclean_elections(), 1);
        }
    }

    #[test]
    fn unclean_election_when_the_last_isr_member_is_fenced() {
        for enabled in [false, true] {
            let mut c = Controller::new(ControllerConfig::default());
            let epochs = cluster(&mut c);
            let t = unclean_topic(&mut c, "t", Some(enabled));
            let s = c.image().partition(&t, 0).unwrap().clone();
            // The ISR shrank to the leader alone, the followers are live.
            c.alter_partition(AlterPartition {
                node_id: s.leader,
                broker_epoch: epochs[s.leader as usize - 1],
                topic_id: t,
                partition: 0,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                new_isr: vec![s.leader],
            })
            .unwrap();
            let records = set_fenced(&mut c, s.leader, true);
            assert!(matches!(
                records.last(),
                Some(MetadataRecord::FenceBroker { .. })
            ));
            if enabled {
                let next = *s.replicas.iter().find(|b| **b != s.leader).unwrap();
                assert_eq!(state(&c, t), (next, vec![next]));
                assert_eq!(c.unclean_elections(), 1);
            } else {
                assert_eq!(state(&c, t), (NO_LEADER, vec![s.leader]));
                assert_eq!(c.unclean_elections(), 0);
            }
        }
    }

    #[test]
    fn unclean_election_on_unregistration_and_new_incarnation() {
        // Unregistration of the last ISR member.
        let (mut c, t) = kakao(false, Some(true));
        set_fenced(&mut c, 1, false); // 1 leads uncleanly, ISR [1]
        set_fenced(&mut c, 2, false);
        c.unregister_broker(1).unwrap();
        assert_eq!(state(&c, t), (2, vec![2]));
        // A new incarnation of the only ISR member (2, restarted after its session ran out)
        // is not the old one: 3 takes over.
        set_fenced(&mut c, 3, false);
        reg(&mut c, 2, "b", 1 + T);
        assert_eq!(state(&c, t), (3, vec![3]));
        assert_eq!(c.unclean_elections(), 3);
    }

    #[test]
    fn enabling_unclean_election_elects_leaderless_partitions_at_once() {
        let (mut c, t) = kakao(false, None);
        set_fenced(&mut c, 2, false);
        set_fenced(&mut c, 1, false);
        assert_eq!(state(&c, t), (NO_LEADER, vec![3]));
        // An unrelated change elects nothing.
        let r = c
            .alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))])
            .unwrap();
        assert_eq!(r.records.len(), 1);
        let r = c
            .alter_topic_configs(
                "t",
                &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some("true".into()))],
            )
            .unwrap();
        assert!(matches!(r.records[0], MetadataRecord::TopicConfig { .. }));
        assert_eq!(r.records.len(), 2, "config and election in one batch");
        // The first live replica in replica order.
        let replicas = c.image().partition(&t, 0).unwrap().replicas.clone();
        let first_live = *replicas.iter().find(|b| **b != 3).unwrap();
        assert_eq!(state(&c, t), (first_live, vec![first_live]));
        assert_eq!(c.unclean_elections(), 1);
        // Turning it off again changes nothing further.
        let r = c
            .alter_topic_configs(
                "t",
                &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some("false".into()))],
            )
            .unwrap();
        assert_eq!(r.records.len(), 1);
    }

    fn elect(
        c: &mut Controller,
        election: ElectionType,
        partitions: Option<&[(Uuid, u32)]>,
    ) -> Vec<(Uuid, u32, i16)> {
        c.elect_leaders(election, partitions)
            .response
            .into_iter()
            .map(|e| (e.topic_id, e.partition, e.error))
            .collect()
    }

    #[test]
    fn elect_leaders_preferred() {
        use election_error::*;
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        let t = topic(&mut c, "t", 3, 3);
        let all: Vec<(Uuid, u32)> = (0..3).map(|p| (t, p)).collect();
        let missing = [(t, 7), (Uuid::new_v4(), 0)];
        // Every preferred replica leads.
        assert_eq!(
            elect(&mut c, ElectionType::Preferred, Some(&all)),
            all.iter()
                .map(|(t, p)| (*t, *p, ELECTION_NOT_NEEDED))
                .collect::<Vec<_>>()
        );
        assert!(elect(&mut c, ElectionType::Preferred, None).is_empty());
        assert_eq!(
            elect(&mut c, ElectionType::Preferred, Some(&missing)),
            vec![
                (t, 7, UNKNOWN_TOPIC_OR_PARTITION),
                (missing[1].0, 0, UNKNOWN_TOPIC_OR_PARTITION)
            ]
        );
        // Broker 1 is fenced (leaves its ISRs), then back but not yet in the ISRs.
        let led: Vec<u32> = c
            .image()
            .partitions(&t)
            .filter(|(_, s)| s.preferred_leader() == 1)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(led.len(), 1);
        let p1 = led[0];
        set_fenced(&mut c, 1, true);
        assert_eq!(
            elect(&mut c, ElectionType::Preferred, None),
            vec![(t, p1, PREFERRED_LEADER_NOT_AVAILABLE)]
        );
        set_fenced(&mut c, 1, false);
        assert_eq!(
            elect(&mut c, ElectionType::Preferred, Some(&[(t, p1)])),
            vec![(t, p1, PREFERRED_LEADER_NOT_AVAILABLE)]
        );
        // Back in the ISR: elected.
        let s = c.image().partition(&t, p1).unwrap().clone();
        let leader_epoch = c.image().broker(s.leader).unwrap().broker_epoch;
        let mut isr = s.isr.clone();
        isr.push(1);
        c.alter_partition(AlterPartition {
            node_id: s.leader,
            broker_epoch: leader_epoch,
            topic_id: t,
            partition: p1,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            new_isr: isr,
        })
        .unwrap();
        let r = c.elect_leaders(ElectionType::Preferred, Some(&all));
        assert_eq!(r.records.len(), 1);
        let codes: Vec<i16> = r.response.iter().map(|e| e.error).collect();
        let mut expected = vec![ELECTION_NOT_NEEDED; 3];
        expected[p1 as usize] = NONE;
        assert_eq!(codes, expected);
        assert_eq!(c.image().partition(&t, p1).unwrap().leader, 1);
        assert_eq!(c.unclean_elections(), 0);
    }

    #[test]
    fn elect_leaders_unclean_ignores_the_topic_setting() {
        use election_error::*;
        let (mut c, t) = kakao(false, Some(false));
        // No live replica at all.
        assert_eq!(
            elect(&mut c, ElectionType::Unclean, None),
            vec![(t, 0, ELIGIBLE_LEADERS_NOT_AVAILABLE)]
        );
        set_fenced(&mut c, 2, false);
        assert_eq!(state(&c, t), (NO_LEADER, vec![3]));
        // The operator asks: broker 2 leads although the topic disables unclean elections.
        assert_eq!(
            elect(&mut c, ElectionType::Unclean, Some(&[(t, 0)])),
            vec![(t, 0, NONE)]
        );
        assert_eq!(state(&c, t), (2, vec![2]));
        assert_eq!(c.unclean_elections(), 1);
        assert_eq!(
            elect(&mut c, ElectionType::Unclean, Some(&[(t, 0), (t, 1)])),
            vec![
                (t, 0, ELECTION_NOT_NEEDED),
                (t, 1, UNKNOWN_TOPIC_OR_PARTITION)
            ]
        );
        assert!(elect(&mut c, ElectionType::Unclean, None).is_empty());
    }

    #[test]
    fn elect_leaders_unclean_prefers_the_isr() {
        use election_error::*;
        let (mut c, t) = kakao(false, None);
        // The partition is leaderless with ISR [3]; unfence 3 without the automatic election
        // (a bare record), so that an ISR member could lead.
        let epoch3 = c.image().broker(3).unwrap().broker_epoch;
        c.emit(
            &mut Vec::new(),
            MetadataRecord::UnfenceBroker {
                node_id: 3,
                broker_epoch: epoch3,
            },
        );
        set_fenced(&mut c, 1, false);
        assert_eq!(state(&c, t), (NO_LEADER, vec![3]));
        assert_eq!(
            elect(&mut c, ElectionType::Unclean, None),
            vec![(t, 0, NONE)]
        );
        assert_eq!(state(&c, t), (3, vec![3]));
        assert_eq!(c.unclean_elections(), 0, "a clean election");
    }

    #[test]
    fn elect_preferred_leaders_counts_moves() {
        let mut c = Controller::new(ControllerConfig::default());
        cluster(&mut c);
        topic(&mut c, "t", 3, 3);
        assert_eq!(c.elect_preferred_leaders().response, 0);
    }

    #[test]
    fn liveness_reports_the_last_heartbeat() {
        let mut c = Controller::new(ControllerConfig::default());
        let epoch = reg(&mut c, 1, "a", 0);
        assert_eq!(c.liveness(1, 10), None);
        let offset = c.next_offset() - 1;
        hb(&mut c, 1, epoch, 100);
        assert_eq!(c.liveness(1, 250), Some((offset, 150)));
        c.unregister_broker(1).unwrap();
        assert_eq!(c.liveness(1, 300), None);
    }
}
