//! The group coordinator as a state machine without I/O.
//!
//! Layout:
//! - [`coordinator`]: [`Coordinator`] owns every group. Each operation (JoinGroup, SyncGroup,
//!   Heartbeat, OffsetCommit, ConsumerGroupHeartbeat, ...) takes the current time and returns an
//!   answer plus [`Effects`]: the records the runtime must append to `__consumer_offsets` *before*
//!   it answers, replies for requests that were parked earlier (a JoinGroup waits for the other
//!   members), and [`Event`]s to log and count. Timers are inputs: the runtime calls
//!   [`Coordinator::tick`] periodically. Like Kafka's coordinator-common `CoordinatorResult`.
//! - [`classic`]: the classic protocol (Empty, PreparingRebalance, CompletingRebalance, Stable,
//!   Dead) with static membership (KIP-345).
//! - [`consumer`]: the KIP-848 consumer protocol: group epoch, target assignment, member epochs,
//!   reconciliation that revokes before it reassigns.
//! - [`assignor`]: server-side `uniform` and `range` assignors, both rack-aware.
//! - [`lag`]: consumer lag windows and Burrow's evaluation rules (OK, WARN, STOP, STALL, REWIND).
//! - [`records`]: the versioned key/value format of `__consumer_offsets` records and replay.
//! - [`subscription`]: the consumer protocol's subscription/assignment bytes (embedded payloads
//!   of JoinGroup/SyncGroup, not wire framing).

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod lag;
pub mod records;
pub mod subscription;

pub use coordinator::{Config, Coordinator, Effects, Event, PendingCommit, Reply, Token};
pub use fjord_protocol::error::ErrorCode;

/// The `__consumer_offsets` partition of `group_id` (as Kafka places it).
pub fn offsets_partition(group_id: &str, partitions: i32) -> i32 {
    fjord_protocol::coordinator_key::coordinator_partition(group_id, partitions)
}
