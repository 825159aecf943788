//! Cluster metadata: the records that change it, the in-memory [`ClusterImage`] they build,
//! replica placement, the controller state machine, the controller quorum on `openraft`, and
//! [`MetadataLog`], the durable record log a single node replays at startup.
//!
//! Layout (everything but `quorum` and `store` is pure: no I/O, no clock, no randomness):
//! - [`record`]: [`MetadataRecord`], the only way metadata changes (Kafka's KRaft records,
//!   simplified): topics, configs, producer ids, broker registrations (incarnation id, broker
//!   epoch, rack, endpoints), fence/unfence, cordon, and partition states (replicas, ISR, leader,
//!   leader epoch, partition epoch, a reassignment's adding and removing replicas). JSON, tagged
//!   by `"type"`; old logs always replay.
//! - [`image`]: [`ClusterImage`], a state machine that applies records as deltas (nothing
//!   rebuilds the image) and rejects records that would break its invariants (one leader per
//!   partition per leader epoch, leader in ISR, monotonic epochs, fenced brokers never lead,
//!   stale broker epochs refused). `to_records` writes the image back as records (snapshots).
//! - [`internal`]: which topics are internal and which changes would break them.
//! - [`placement`]: replica placement — distinct racks where possible, preferred leaders and
//!   replicas balanced across brokers and racks, cordoned and fenced brokers skipped.
//! - [`balancer`]: the rebalance planner — from every partition's replicas (and sizes, when
//!   known) new replica lists that fix rack spread, even replicas, disk bytes and preferred
//!   leaders per broker with few moves (`fjord cluster rebalance` carries the plan out).
//! - [`controller`]: [`Controller`], the controller state machine: registrations with broker
//!   epochs (KIP-380), heartbeats and `tick(now)` fencing, leader elections from the ISR (and
//!   unclean ones, logged at WARN, only where `unclean.leader.election.enable` allows or
//!   ElectLeaders asks), preferred elections and ElectLeaders (KIP-460),
//!   CreateTopics/CreatePartitions/DeleteTopics, AlterPartition; each call returns the records to
//!   append and the reply ([`ControllerResult`]), with Kafka error codes ([`ControllerError`]).
//! - [`maintenance`]: maintenance mode: cordoned brokers that lead nothing another in-sync
//!   replica can lead, drains planned rack-aware and carried out as reassignments (with
//!   Kafka's replication throttles), removal of drained brokers, progress for operators.
//! - [`reassignment`]: partition reassignment (KIP-455) on the controller: targets in, adding
//!   and removing replicas tracked in the partition records, completion once the target is in
//!   the ISR (with a leader handover if the leader was removed), cancellation, listing.
//! - [`acls`]: ACLs as records with ids (KRaft's AccessControlEntryRecord), their part of the
//!   image (indexed for `fjord_security`'s authorizer) and CreateAcls/DeleteAcls on the
//!   controller.
//! - [`scram`]: SCRAM credentials as records per user and mechanism (KRaft's
//!   UserScramCredentialRecord: salt, stored and server keys, iterations), their part of the
//!   image and AlterUserScramCredentials on the controller (KIP-554).
//! - [`topic_gc`]: unused topics — when each topic was created, last produced to and last
//!   fetched by a consumer (coarse reports from brokers, kept in the image), and topic GC's
//!   two phases (mark idle topics, delete them after a grace if still idle) with the reasons
//!   for every topic it leaves alone.
//! - [`quorum`]: the controller quorum on `openraft`: a file-backed Raft log, a state machine
//!   that applies record batches to the image (snapshots = the image as records) and keeps a
//!   window of recent records for readers ([`quorum::MetadataFeed`]), and Raft RPCs over TCP on
//!   the controller listener. [`quorum::ControllerService`] runs the active [`Controller`] on
//!   the Raft leader and serves the control RPC (submit a [`ControllerRequest`], fetch metadata,
//!   status) on the same listener; brokers use [`quorum::ControllerClient`].
//! - [`store`]: [`MetadataLog`], an append-only JSON-lines file with fsync per record: what a
//!   single node (its own quorum) uses today. The Raft quorum replaces the file, not the records
//!   or the image.
//!
//! How they fit on an active controller: a request goes to [`Controller`], which validates it
//! against its image and returns a batch of records; the batch is written through the quorum as
//! one Raft entry; every controller applies committed batches to its own [`ClusterImage`], and
//! brokers follow the committed records with metadata fetches. A controller that becomes active
//! builds its [`Controller`] from its image ([`Controller::from_image`]) and takes over with
//! [`Controller::activate`].

pub mod acls;
pub mod balancer;
pub mod client_quota;
pub mod controller;
pub mod image;
pub mod internal;
pub mod maintenance;
pub mod persist;
pub mod placement;
pub mod quorum;
pub mod reassignment;
pub mod record;
pub mod rpc;
pub mod scram;
pub mod store;
pub mod topic_gc;

pub use controller::{Controller, ControllerConfig, ControllerError, ControllerResult};
pub use image::{
    ApplyError, BrokerHealth, BrokerImage, ClusterImage, PartitionHealth, PartitionState,
    TopicImage,
};
pub use reassignment::{OngoingReassignment, ReassignmentTarget};
pub use record::{Endpoint, MetadataRecord, NodeId, NO_LEADER};
pub use rpc::{
    AlterPartitionItem, AlterPartitionOutcome, ControllerReply, ControllerRequest,
    ReassignmentOutcome,
};
pub use store::{MetadataLog, StoreError};
pub use uuid::Uuid;

/// Unreadable records, entries and files this process's metadata storage (the single node's
/// `metadata.log`, the quorum's Raft log, state file and snapshot) skipped when reading back
/// from disk, each also logged at ERROR. The broker exports it as
/// `fjord_corrupt_data_skipped_total{source="metadata"}`.
pub fn corrupt_data_skipped() -> u64 {
    CORRUPT_DATA_SKIPPED.load(std::sync::atomic::Ordering::Relaxed)
}

static CORRUPT_DATA_SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn note_corrupt_data() {
    CORRUPT_DATA_SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
