//! The control-plane API: what brokers ask of the active controller, and what it answers.
//!
//! The same [`ControllerRequest`] is served by a single node's own controller (in process) and,
//! in a cluster, sent over the controller listener (KIP-291) to the active controller of the
//! quorum. [`Controller::handle`] is the one dispatch: pure, it returns the records to commit and
//! the reply to give once they are committed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client_quota::{AlterationOutcome, QuotaAlteration};
use crate::controller::{
    AlterPartition, BrokerHeartbeat, BrokerRegistration, Controller, ControllerError,
    ControllerResult, CreateTopic, ElectionType, PartitionElection, UNCLEAN_LEADER_ELECTION_ENABLE,
};
use crate::image::PartitionState;
use crate::internal;
use crate::maintenance::{MaintenanceOutcome, MaintenanceRequest};
use crate::reassignment::{OngoingReassignment, ReassignmentTarget};
use crate::record::{Endpoint, MetadataRecord, NodeId, DYNAMIC_BROKER_CONFIGS};
use crate::topic_gc::{ActivityUpdate, GcDecision, GcParams, Protected};

/// A request to the active controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    RegisterBroker {
        node_id: NodeId,
        incarnation_id: Uuid,
        rack: Option<String>,
        endpoints: Vec<Endpoint>,
    },
    Heartbeat {
        node_id: NodeId,
        broker_epoch: i64,
        current_metadata_offset: i64,
        want_fence: bool,
    },
    /// Create one topic. `validate_only` checks placement without committing anything.
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// Create one topic with the replicas of each partition given (partition `i` is
    /// `assignments[i]`), as Kafka's CreateTopics with `assignments`.
    CreateTopicAssigned {
        name: String,
        topic_id: Uuid,
        assignments: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// CreateAcls ([`Controller::create_acls`]): each ACL with the id the broker chose.
    CreateAcls {
        acls: Vec<(Uuid, fjord_security::acl::AclBinding)>,
    },
    /// DeleteAcls ([`Controller::delete_acls`]).
    DeleteAcls {
        filters: Vec<fjord_security::acl::AclBindingFilter>,
    },
    /// AlterUserScramCredentials ([`Controller::alter_user_scram_credentials`]).
    AlterUserScramCredentials {
        alterations: Vec<crate::scram::ScramAlteration>,
    },
    CreatePartitions {
        name: String,
        total: u32,
        validate_only: bool,
    },
    /// Set (`Some`) or remove (`None`) per-topic config overrides; the broker has validated the
    /// values against the storage config table before sending.
    AlterTopicConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
    },
    /// Set (`Some`) or remove (`None`) dynamic broker configs of broker `node_id`, or the
    /// cluster default with `None` ([`crate::record::DYNAMIC_BROKER_CONFIGS`]).
    AlterBrokerConfigs {
        node_id: Option<NodeId>,
        changes: Vec<(String, Option<String>)>,
    },
    /// Reserve `count` producer ids for a broker (idempotent producers).
    AllocateProducerIds {
        node_id: NodeId,
        broker_epoch: i64,
        count: i64,
    },
    AlterPartition {
        node_id: NodeId,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<NodeId>,
    },
    /// Many ISR changes from one leader in one request (and one metadata batch), as Kafka's
    /// AlterPartition carries many partitions: a broker catching up on thousands of partitions
    /// must not queue thousands of commits ahead of everyone's heartbeats.
    AlterPartitions {
        node_id: NodeId,
        broker_epoch: i64,
        partitions: Vec<AlterPartitionItem>,
    },
    Cordon {
        node_id: NodeId,
        cordoned: bool,
    },
    /// Remove a broker from the cluster (Kafka's UnregisterBroker): refused while it runs or
    /// holds a replica ([`Controller::remove_broker`]).
    UnregisterBroker {
        node_id: NodeId,
    },
    /// Enter (`Some`) or leave (`None`) maintenance mode
    /// ([`Controller::set_maintenance`]).
    Maintenance {
        node_id: NodeId,
        enable: Option<MaintenanceRequest>,
    },
    /// Automatic leader rebalance: preferred election over every partition, answered with a
    /// count ([`ControllerReply::LeadersElected`]).
    ElectPreferredLeaders,
    /// ElectLeaders (KIP-460). `election_type`: 0 preferred, 1 unclean. `partitions`: (topic
    /// id, partition), or `None` for every partition (then partitions that need no election
    /// are left out of the reply, as in Kafka).
    ElectLeaders {
        election_type: u8,
        partitions: Option<Vec<(Uuid, u32)>>,
    },
    /// AlterPartitionReassignments (KIP-455): per (topic name, partition), the target replicas
    /// or `None` to cancel. `allow_replication_factor_change` false refuses targets of another
    /// size (v1, KIP-860).
    AlterPartitionReassignments {
        partitions: Vec<(String, u32, Option<Vec<NodeId>>)>,
        allow_replication_factor_change: bool,
    },
    /// ListPartitionReassignments: the given (topic name, partitions), or all with `None`.
    /// Writes nothing.
    ListPartitionReassignments {
        topics: Option<Vec<(String, Vec<u32>)>>,
    },
    /// A broker's coarse topic activity since its last report
    /// ([`Controller::topic_activity`]).
    TopicActivity {
        updates: Vec<ActivityUpdate>,
    },
    /// Topic GC over every topic ([`Controller::topic_gc`]): a dry run, or carried out.
    TopicGc {
        params: GcParams,
        protected: Protected,
        execute: bool,
    },
    /// AlterClientQuotas ([`Controller::alter_client_quotas`]): one outcome per entry.
    AlterClientQuotas {
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    },
}

impl ControllerRequest {
    /// The request's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        use ControllerRequest as R;
        match self {
            R::RegisterBroker { .. } => "RegisterBroker",
            R::Heartbeat { .. } => "Heartbeat",
            R::CreateTopic { .. } => "CreateTopic",
            R::CreateTopicAssigned { .. } => "CreateTopicAssigned",
            R::DeleteTopic { .. } => "DeleteTopic",
            R::CreateAcls { .. } => "CreateAcls",
            R::DeleteAcls { .. } => "DeleteAcls",
            R::AlterUserScramCredentials { .. } => "AlterUserScramCredentials",
            R::CreatePartitions { .. } => "CreatePartitions",
            R::AlterTopicConfigs { .. } => "AlterTopicConfigs",
            R::AlterBrokerConfigs { .. } => "AlterBrokerConfigs",
            R::AllocateProducerIds { .. } => "AllocateProducerIds",
            R::AlterPartition { .. } => "AlterPartition",
            R::AlterPartitions { .. } => "AlterPartitions",
            R::Cordon { .. } => "Cordon",
            R::UnregisterBroker { .. } => "UnregisterBroker",
            R::Maintenance { .. } => "Maintenance",
            R::ElectPreferredLeaders => "ElectPreferredLeaders",
            R::ElectLeaders { .. } => "ElectLeaders",
            R::AlterPartitionReassignments { .. } => "AlterPartitionReassignments",
            R::ListPartitionReassignments { .. } => "ListPartitionReassignments",
            R::TopicActivity { .. } => "TopicActivity",
            R::TopicGc { .. } => "TopicGc",
            R::AlterClientQuotas { .. } => "AlterClientQuotas",
        }
    }
}

/// The outcome of one partition of [`ControllerRequest::AlterPartitionReassignments`]: 0, or
/// the Kafka error code and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentOutcome {
    pub topic: String,
    pub partition: u32,
    pub error: i16,
    pub message: String,
}

/// One partition of [`ControllerRequest::AlterPartitions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionItem {
    pub topic_id: Uuid,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<NodeId>,
}

/// The outcome of one [`AlterPartitionItem`]: 0, or the Kafka error code and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionOutcome {
    pub topic_id: Uuid,
    pub partition: u32,
    pub error: i16,
    pub message: String,
}

/// The reply to a [`ControllerRequest`] of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Registered {
        broker_epoch: i64,
    },
    Heartbeat {
        is_caught_up: bool,
        is_fenced: bool,
    },
    TopicCreated {
        topic_id: Uuid,
        assignments: Vec<Vec<NodeId>>,
    },
    TopicDeleted {
        topic_id: Uuid,
    },
    /// The reply to [`ControllerRequest::CreateAcls`]: per ACL, `None` or why it is invalid.
    AclsCreated {
        results: Vec<Option<String>>,
    },
    /// The reply to [`ControllerRequest::DeleteAcls`], per filter.
    AclsDeleted {
        results: Vec<crate::acls::AclDeleteOutcome>,
    },
    /// The reply to [`ControllerRequest::AlterUserScramCredentials`], per user.
    ScramCredentialsAltered {
        results: Vec<crate::scram::ScramAlterationOutcome>,
    },
    PartitionsCreated {
        assignments: Vec<Vec<NodeId>>,
    },
    ConfigsAltered,
    ProducerIds {
        first: i64,
        count: i64,
    },
    Partition {
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    Done,
    PartitionsAltered {
        results: Vec<AlterPartitionOutcome>,
    },
    LeadersElected {
        partitions: usize,
    },
    /// The reply to [`ControllerRequest::ElectLeaders`]: one result per partition.
    ElectionResults {
        results: Vec<PartitionElection>,
    },
    /// The reply to [`ControllerRequest::AlterPartitionReassignments`], in request order.
    ReassignmentResults {
        results: Vec<ReassignmentOutcome>,
    },
    /// The reply to [`ControllerRequest::ListPartitionReassignments`].
    Reassignments {
        ongoing: Vec<OngoingReassignment>,
    },
    /// The reply to [`ControllerRequest::Maintenance`].
    MaintenanceChanged {
        outcome: MaintenanceOutcome,
    },
    /// The reply to [`ControllerRequest::TopicActivity`]: topics unmarked by it.
    TopicsUnmarked {
        topics: Vec<String>,
    },
    /// The reply to [`ControllerRequest::TopicGc`]: every topic's decision.
    TopicGc {
        decisions: Vec<GcDecision>,
    },
    /// The reply to [`ControllerRequest::AlterClientQuotas`], in request order.
    ClientQuotasAltered {
        results: Vec<AlterationOutcome>,
    },
}

impl From<PartitionState> for ControllerReply {
    fn from(s: PartitionState) -> Self {
        ControllerReply::Partition {
            replicas: s.replicas,
            isr: s.isr,
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
        }
    }
}

/// Check dynamic broker config changes: known keys, rates as non-negative longs.
pub fn check_broker_config_changes(
    changes: &[(String, Option<String>)],
) -> Result<(), ControllerError> {
    for (key, value) in changes {
        if !DYNAMIC_BROKER_CONFIGS.contains(&key.as_str()) {
            return Err(ControllerError::InvalidConfig(format!(
                "'{key}' is not a dynamic broker config (dynamic: {}); set it in the config file and restart",
                DYNAMIC_BROKER_CONFIGS.join(", ")
            )));
        }
        if let Some(v) = value {
            if !v.trim().parse::<i64>().is_ok_and(|n| n >= 0) {
                return Err(ControllerError::InvalidConfig(format!(
                    "invalid value '{v}' for '{key}': a rate in bytes per second (a long >= 0)"
                )));
            }
        }
    }
    Ok(())
}

fn map<T>(
    r: ControllerResult<T>,
    f: impl FnOnce(T) -> ControllerReply,
) -> ControllerResult<ControllerReply> {
    ControllerResult {
        records: r.records,
        response: f(r.response),
    }
}

impl Controller {
    /// CreateTopic and CreateTopicAssigned: create (or, `validate_only`, only check) and
    /// record the topic's creation time.
    fn create_topic_request(
        &mut self,
        req: CreateTopic,
        topic_id: Uuid,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
        now: i64,
    ) -> Result<ControllerResult<ControllerReply>, ControllerError> {
        if validate_only {
            return Ok(ControllerResult {
                records: Vec::new(),
                response: ControllerReply::TopicCreated {
                    topic_id,
                    assignments: self.plan_topic(&req, topic_id, assignments)?,
                },
            });
        }
        // The same request again (the broker's controller client resends one whose outcome it
        // did not learn: a leadership change, a lost connection): the topic it created, not
        // TOPIC_ALREADY_EXISTS. Each CreateTopics gets a new id from the broker, so only a
        // resend can match.
        if let Some(t) = self.image().topic(&req.name).filter(|t| t.id == topic_id) {
            let assignments = self
                .image()
                .partitions(&t.id)
                .map(|(_, p)| p.replicas.clone())
                .collect();
            return Ok(ControllerResult {
                records: Vec::new(),
                response: ControllerReply::TopicCreated {
                    topic_id,
                    assignments,
                },
            });
        }
        let created = match assignments {
            Some(a) => self.create_topic_assigned(req, topic_id, a)?,
            None => self.create_topic(req, topic_id)?,
        };
        let mut r = map(created, |c| ControllerReply::TopicCreated {
            topic_id: c.topic_id,
            assignments: c.assignments,
        });
        // Its age, for unused-topic detection (`crate::topic_gc`).
        self.emit_record(
            &mut r.records,
            MetadataRecord::TopicActivity {
                id: topic_id,
                created_ms: Some(now),
                last_produce_ms: None,
                last_fetch_ms: None,
            },
        );
        Ok(r)
    }

    /// Dispatch one request at time `now`. On an error nothing changed; a `validate_only`
    /// request returns no records and leaves the controller as it was.
    pub fn handle(
        &mut self,
        req: ControllerRequest,
        now: i64,
    ) -> Result<ControllerResult<ControllerReply>, ControllerError> {
        use ControllerRequest as R;
        Ok(match req {
            R::RegisterBroker {
                node_id,
                incarnation_id,
                rack,
                endpoints,
            } => map(
                self.register_broker(
                    BrokerRegistration {
                        node_id,
                        incarnation_id,
                        rack,
                        endpoints,
                    },
                    now,
                )?,
                |broker_epoch| ControllerReply::Registered { broker_epoch },
            ),
            R::Heartbeat {
                node_id,
                broker_epoch,
                current_metadata_offset,
                want_fence,
            } => map(
                self.heartbeat(
                    BrokerHeartbeat {
                        node_id,
                        broker_epoch,
                        current_metadata_offset,
                        want_fence,
                    },
                    now,
                )?,
                |r| ControllerReply::Heartbeat {
                    is_caught_up: r.is_caught_up,
                    is_fenced: r.is_fenced,
                },
            ),
            R::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
                validate_only,
            } => self.create_topic_request(
                CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                },
                topic_id,
                None,
                validate_only,
                now,
            )?,
            R::CreateTopicAssigned {
                name,
                topic_id,
                assignments,
                configs,
                validate_only,
            } => self.create_topic_request(
                CreateTopic {
                    name,
                    partitions: assignments.len() as u32,
                    replication_factor: assignments.first().map_or(0, |r| r.len() as u16),
                    configs,
                },
                topic_id,
                Some(assignments),
                validate_only,
                now,
            )?,
            R::DeleteTopic { name } => map(self.delete_topic(&name)?, |topic_id| {
                ControllerReply::TopicDeleted { topic_id }
            }),
            R::CreateAcls { acls } => map(self.create_acls(acls), |results| {
                ControllerReply::AclsCreated { results }
            }),
            R::DeleteAcls { filters } => map(self.delete_acls(filters), |results| {
                ControllerReply::AclsDeleted { results }
            }),
            R::AlterUserScramCredentials { alterations } => {
                map(self.alter_user_scram_credentials(alterations), |results| {
                    ControllerReply::ScramCredentialsAltered { results }
                })
            }
            R::CreatePartitions {
                name,
                total,
                validate_only,
            } => {
                if validate_only {
                    let (_, _, assignments) = self.plan_partitions(&name, total)?;
                    ControllerResult {
                        records: Vec::new(),
                        response: ControllerReply::PartitionsCreated { assignments },
                    }
                } else {
                    map(self.create_partitions(&name, total)?, |assignments| {
                        ControllerReply::PartitionsCreated { assignments }
                    })
                }
            }
            R::AlterTopicConfigs { name, changes } => {
                map(self.alter_topic_configs(&name, &changes)?, |()| {
                    ControllerReply::ConfigsAltered
                })
            }
            R::AlterBrokerConfigs { node_id, changes } => {
                map(self.alter_broker_configs(node_id, &changes)?, |()| {
                    ControllerReply::ConfigsAltered
                })
            }
            R::AllocateProducerIds {
                node_id,
                broker_epoch,
                count,
            } => map(
                self.allocate_producer_ids(node_id, broker_epoch, count)?,
                |first| ControllerReply::ProducerIds { first, count },
            ),
            R::AlterPartition {
                node_id,
                broker_epoch,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => map(
                self.alter_partition(AlterPartition {
                    node_id,
                    broker_epoch,
                    topic_id,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    new_isr,
                })?,
                ControllerReply::from,
            ),
            R::AlterPartitions {
                node_id,
                broker_epoch,
                partitions,
            } => {
                // A stale sender is refused as a whole; each partition then stands alone.
                self.check_epoch(node_id, broker_epoch)?;
                let mut records = Vec::new();
                let mut results = Vec::with_capacity(partitions.len());
                for item in partitions {
                    let (topic_id, partition) = (item.topic_id, item.partition);
                    let outcome = self.alter_partition(AlterPartition {
                        node_id,
                        broker_epoch,
                        topic_id,
                        partition,
                        leader_epoch: item.leader_epoch,
                        partition_epoch: item.partition_epoch,
                        new_isr: item.new_isr,
                    });
                    let (error, message) = match outcome {
                        Ok(r) => {
                            records.extend(r.records);
                            (0, String::new())
                        }
                        Err(e) => (e.code(), e.to_string()),
                    };
                    results.push(AlterPartitionOutcome {
                        topic_id,
                        partition,
                        error,
                        message,
                    });
                }
                ControllerResult {
                    records,
                    response: ControllerReply::PartitionsAltered { results },
                }
            }
            R::Cordon { node_id, cordoned } => map(self.set_cordoned(node_id, cordoned)?, |()| {
                ControllerReply::Done
            }),
            R::UnregisterBroker { node_id } => {
                map(self.remove_broker(node_id)?, |()| ControllerReply::Done)
            }
            R::Maintenance { node_id, enable } => {
                map(self.set_maintenance(node_id, enable)?, |outcome| {
                    ControllerReply::MaintenanceChanged { outcome }
                })
            }
            R::ElectPreferredLeaders => map(self.elect_preferred_leaders(), |partitions| {
                ControllerReply::LeadersElected { partitions }
            }),
            R::ElectLeaders {
                election_type,
                partitions,
            } => {
                let election = ElectionType::from_wire(election_type).ok_or_else(|| {
                    ControllerError::InvalidRequest(format!(
                        "unknown election type {election_type}"
                    ))
                })?;
                map(
                    self.elect_leaders(election, partitions.as_deref()),
                    |results| ControllerReply::ElectionResults { results },
                )
            }
            R::AlterPartitionReassignments {
                partitions,
                allow_replication_factor_change,
            } => self.alter_reassignments_by_name(partitions, allow_replication_factor_change),
            R::ListPartitionReassignments { topics } => {
                let wanted: Option<Vec<(Uuid, u32)>> = topics.map(|topics| {
                    topics
                        .into_iter()
                        .filter_map(|(name, parts)| {
                            let id = self.image().topic(&name)?.id;
                            Some(parts.into_iter().map(move |p| (id, p)))
                        })
                        .flatten()
                        .collect()
                });
                ControllerResult {
                    records: Vec::new(),
                    response: ControllerReply::Reassignments {
                        ongoing: self.list_partition_reassignments(wanted.as_deref()),
                    },
                }
            }
            R::TopicActivity { updates } => map(self.topic_activity(updates), |topics| {
                ControllerReply::TopicsUnmarked { topics }
            }),
            R::TopicGc {
                params,
                protected,
                execute,
            } => map(
                self.topic_gc(&params, &protected, execute, now)?,
                |decisions| ControllerReply::TopicGc { decisions },
            ),
            R::AlterClientQuotas {
                entries,
                validate_only,
            } => map(
                self.alter_client_quotas(&entries, validate_only),
                |results| ControllerReply::ClientQuotasAltered { results },
            ),
        })
    }

    /// AlterPartitionReassignments by topic name: unknown topics are answered per partition
    /// (UNKNOWN_TOPIC_OR_PARTITION), the rest go to
    /// [`alter_partition_reassignments`](Controller::alter_partition_reassignments).
    fn alter_reassignments_by_name(
        &mut self,
        partitions: Vec<(String, u32, Option<Vec<NodeId>>)>,
        allow_replication_factor_change: bool,
    ) -> ControllerResult<ControllerReply> {
        let mut targets = Vec::with_capacity(partitions.len());
        let mut known = Vec::with_capacity(partitions.len());
        for (name, partition, replicas) in &partitions {
            match self.image().topic(name) {
                Some(t) => {
                    known.push(true);
                    targets.push(ReassignmentTarget {
                        topic_id: t.id,
                        partition: *partition,
                        replicas: replicas.clone(),
                    });
                }
                None => known.push(false),
            }
        }
        let r = self.alter_partition_reassignments(&targets, allow_replication_factor_change);
        let mut decided = r.response.into_iter();
        let results = partitions
            .into_iter()
            .zip(known)
            .map(|((topic, partition, _), known)| {
                let outcome = if known {
                    decided.next().expect("one outcome per known target")
                } else {
                    Err(ControllerError::UnknownTopicOrPartition {
                        topic: topic.clone(),
                        partition,
                    })
                };
                let (error, message) = match outcome {
                    Ok(()) => (0, String::new()),
                    Err(e) => (e.code(), e.to_string()),
                };
                ReassignmentOutcome {
                    topic,
                    partition,
                    error,
                    message,
                }
            })
            .collect();
        ControllerResult {
            records: r.records,
            response: ControllerReply::ReassignmentResults { results },
        }
    }

    /// Set or remove config overrides of a topic, one `TopicConfig` record per change. When
    /// `unclean.leader.election.enable` becomes true, leaderless partitions of the topic are
    /// elected in the same batch.
    pub fn alter_topic_configs(
        &mut self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<ControllerResult<()>, ControllerError> {
        let id = self
            .image()
            .topic(name)
            .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
                topic: name.into(),
                partition: 0,
            })?
            .id;
        if let Some(why) = changes
            .iter()
            .find_map(|(k, v)| internal::breaking_config_change(name, k, v.as_deref()))
        {
            return Err(ControllerError::InvalidConfig(why));
        }
        let mut records = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            self.emit_record(
                &mut records,
                MetadataRecord::TopicConfig {
                    id,
                    key: key.clone(),
                    value: value.clone(),
                },
            );
        }
        if changes
            .iter()
            .any(|(k, _)| k == UNCLEAN_LEADER_ELECTION_ENABLE)
        {
            self.elect_after_config_change(&mut records, id);
        }
        Ok(ControllerResult {
            records,
            response: (),
        })
    }

    /// Set or remove dynamic broker configs ([`DYNAMIC_BROKER_CONFIGS`]: replication throttle
    /// rates in bytes/s, a non-negative long) for one broker or the cluster default, one
    /// `BrokerConfig` record per change; removing an unset key is a no-op. All or nothing.
    pub fn alter_broker_configs(
        &mut self,
        node_id: Option<NodeId>,
        changes: &[(String, Option<String>)],
    ) -> Result<ControllerResult<()>, ControllerError> {
        check_broker_config_changes(changes)?;
        let mut records = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let current = self
                .image()
                .broker_configs(node_id)
                .and_then(|c| c.get(key));
            let value = value.as_ref().map(|v| v.trim().to_string());
            if current == value.as_ref() {
                continue;
            }
            self.emit_record(
                &mut records,
                MetadataRecord::BrokerConfig {
                    node_id,
                    key: key.clone(),
                    value,
                },
            );
        }
        Ok(ControllerResult {
            records,
            response: (),
        })
    }

    /// Reserve `count` producer ids for a registered broker; the response is the first id.
    pub fn allocate_producer_ids(
        &mut self,
        node_id: NodeId,
        broker_epoch: i64,
        count: i64,
    ) -> Result<ControllerResult<i64>, ControllerError> {
        self.check_epoch(node_id, broker_epoch)?;
        if !(1..=1_000_000).contains(&count) {
            return Err(ControllerError::InvalidRequest(format!(
                "cannot allocate {count} producer ids"
            )));
        }
        let first = self.image().next_producer_id();
        let mut records = Vec::with_capacity(1);
        self.emit_record(
            &mut records,
            MetadataRecord::ProducerIds {
                next: first + count,
            },
        );
        Ok(ControllerResult {
            records,
            response: first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ControllerConfig;

    fn register(c: &mut Controller, node_id: NodeId, now: i64) -> i64 {
        let r = c
            .handle(
                ControllerRequest::RegisterBroker {
                    node_id,
                    incarnation_id: Uuid::new_v4(),
                    rack: Some(format!("r{node_id}")),
                    endpoints: vec![],
                },
                now,
            )
            .unwrap();
        let ControllerReply::Registered { broker_epoch } = r.response else {
            panic!("{r:?}")
        };
        let hb = c
            .handle(
                ControllerRequest::Heartbeat {
                    node_id,
                    broker_epoch,
                    current_metadata_offset: c.next_offset(),
                    want_fence: false,
                },
                now,
            )
            .unwrap();
        assert_eq!(
            hb.response,
            ControllerReply::Heartbeat {
                is_caught_up: true,
                is_fenced: false
            }
        );
        broker_epoch
    }

    #[test]
    fn dynamic_broker_configs_are_set_removed_and_checked() {
        let mut c = Controller::new(ControllerConfig::default());
        register(&mut c, 1, 0);
        let set = |c: &mut Controller, node_id, key: &str, value: Option<&str>| {
            c.handle(
                ControllerRequest::AlterBrokerConfigs {
                    node_id,
                    changes: vec![(key.into(), value.map(String::from))],
                },
                0,
            )
        };
        let rate = "leader.replication.throttled.rate";
        assert_eq!(
            set(&mut c, Some(1), rate, Some("1000"))
                .unwrap()
                .records
                .len(),
            1
        );
        set(&mut c, None, rate, Some("50")).unwrap();
        assert_eq!(c.image().broker_config(1, rate), Some("1000"));
        assert_eq!(
            c.image().broker_config(2, rate),
            Some("50"),
            "cluster default"
        );
        // Same value again, or removing what is not set: nothing to write.
        assert!(set(&mut c, Some(1), rate, Some("1000"))
            .unwrap()
            .records
            .is_empty());
        assert!(set(&mut c, Some(2), rate, None).unwrap().records.is_empty());
        set(&mut c, Some(1), rate, None).unwrap();
        assert_eq!(c.image().broker_config(1, rate), Some("50"));
        // Snapshots keep them.
        let again = crate::ClusterImage::from_records(&c.image().to_records());
        assert_eq!(&again, c.image());
        for (key, value) in [(rate, "-1"), (rate, "fast"), ("log.retention.ms", "5")] {
            let e = set(&mut c, Some(1), key, Some(value)).unwrap_err();
            assert_eq!(e.code(), 40, "{key}={value}: {e}");
        }
    }

    #[test]
    fn a_resent_create_topic_answers_the_topic_it_created() {
        let mut c = Controller::new(ControllerConfig::default());
        for n in 1..=3 {
            register(&mut c, n, 0);
        }
        let create = |id: Uuid| ControllerRequest::CreateTopic {
            name: "t".into(),
            topic_id: id,
            partitions: 2,
            replication_factor: 3,
            configs: BTreeMap::new(),
            validate_only: false,
        };
        let id = Uuid::new_v4();
        let first = c.handle(create(id), 0).unwrap();
        assert!(!first.records.is_empty());
        let offset = c.next_offset();
        // The broker's client resends a request whose outcome it did not learn.
        let again = c.handle(create(id), 0).unwrap();
        assert!(again.records.is_empty(), "nothing written twice");
        assert_eq!(again.response, first.response);
        assert_eq!(c.next_offset(), offset);
        // Another CreateTopics of the same name (a new id) is refused as before.
        assert_eq!(c.handle(create(Uuid::new_v4()), 0).unwrap_err().code(), 36);
    }

    #[test]
    fn validate_only_changes_nothing() {
        let mut c = Controller::new(ControllerConfig::default());
        for n in 1..=3 {
            register(&mut c, n, 0);
        }
        let before = c.image().clone();
        let offset = c.next_offset();
        let r = c
            .handle(
                ControllerRequest::CreateTopic {
                    name: "t".into(),
                    topic_id: Uuid::new_v4(),
                    partitions: 3,
                    replication_factor: 3,
                    configs: BTreeMap::new(),
                    validate_only: true,
                },
                0,
            )
            .unwrap();
        assert!(r.records.is_empty());
        assert!(matches!(r.response, ControllerReply::TopicCreated { .. }));
        assert_eq!(c.image(), &before);
        assert_eq!(c.next_offset(), offset);
        let err = c
            .handle(
                ControllerRequest::CreateTopic {
                    name: "t".into(),
                    topic_id: Uuid::new_v4(),
                    partitions: 1,
                    replication_factor: 4,
                    configs: BTreeMap::new(),
                    validate_only: false,
                },
                0,
            )
            .unwrap_err();
        assert_eq!(err.code(), 38);
    }

    #[test]
    fn configs_and_producer_ids() {
        let mut c = Controller::new(ControllerConfig::default());
        let epoch = register(&mut c, 1, 0);
        c.handle(
            ControllerRequest::CreateTopic {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                partitions: 1,
                replication_factor: 1,
                configs: BTreeMap::new(),
                validate_only: false,
            },
            0,
        )
        .unwrap();
        let r = c
            .handle(
                ControllerRequest::AlterTopicConfigs {
                    name: "t".into(),
                    changes: vec![("retention.ms".into(), Some("5".into()))],
                },
                0,
            )
            .unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(c.image().topic("t").unwrap().configs["retention.ms"], "5");
        let ids = |c: &mut Controller| match c
            .handle(
                ControllerRequest::AllocateProducerIds {
                    node_id: 1,
                    broker_epoch: epoch,
                    count: 1000,
                },
                0,
            )
            .unwrap()
            .response
        {
            ControllerReply::ProducerIds { first, .. } => first,
            other => panic!("{other:?}"),
        };
        let a = ids(&mut c);
        let b = ids(&mut c);
        assert_eq!(b, a + 1000);
        let stale = c
            .handle(
                ControllerRequest::AllocateProducerIds {
                    node_id: 1,
                    broker_epoch: epoch - 1,
                    count: 1,
                },
                0,
            )
            .unwrap_err();
        assert_eq!(stale.code(), 77);
    }
}
