//! Cluster metadata: the records that change it, the in-memory [`ClusterImage`] they build,
//! replica placement, the controller state machine, and [`MetadataLog`], the durable record log
//! a single node replays at startup.
//!
//! Layout:
//! - [`record`]: [`MetadataRecord`], the only way metadata changes (Kafka's KRaft records,
//!   simplified): topics, configs, producer ids, broker registrations (incarnation id, broker
//!   epoch, rack, endpoints), fence/unfence, cordon, and partition states (replicas, ISR, leader,
//!   leader epoch, partition epoch). JSON, tagged by `"type"`; old logs always replay.
//! - [`image`]: [`ClusterImage`], a pure state machine that applies records as deltas (nothing
//!   rebuilds the image) and rejects records that would break its invariants (one leader per
//!   partition per leader epoch, leader in ISR, monotonic epochs, fenced brokers never lead,
//!   stale broker epochs refused).
//! - [`controller`]: [`Controller`], the pure controller state machine: registrations with broker
//!   epochs, heartbeats and `tick(now)` fencing, CreateTopics/CreatePartitions/DeleteTopics,
//!   AlterPartition; each call returns the records to append and the reply.
//! - [`placement`]: pure replica placement — distinct racks where possible, preferred leaders and
//!   replicas balanced across brokers and racks, cordoned and fenced brokers skipped.
//!
//! A single node is its own quorum today (the file log below); the Raft quorum replaces the file,
//! not the records or image.
//! - [`store`]: [`MetadataLog`], an append-only JSON-lines file with fsync per record.

pub mod controller;
pub mod image;
pub mod placement;
pub mod quorum;
pub mod record;
pub mod store;

pub use controller::{Controller, ControllerConfig, ControllerError, ControllerResult};
pub use image::{ApplyError, BrokerImage, ClusterImage, PartitionState, TopicImage};
pub use record::{Endpoint, MetadataRecord, NodeId, NO_LEADER};
pub use store::{MetadataLog, StoreError};
pub use uuid::Uuid;
