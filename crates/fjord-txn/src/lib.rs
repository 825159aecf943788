//! The transaction coordinator as a state machine without I/O (issue 15; the broker's
//! `txn` module runs it: appends, replication waits, markers, timers).
//!
//! Layout:
//! - [`state`]: [`TxnState`], Kafka's eight states of a transactional id and which transitions
//!   are valid.
//! - [`coordinator`]: [`Coordinator`] owns the transactional ids of the `__transaction_state`
//!   partitions this broker leads. An operation (InitProducerId, AddPartitionsToTxn,
//!   AddOffsetsToTxn, EndTxn, a timer tick) checks the request against the id's metadata and
//!   returns either an answer now or a [`Write`]: the record the runtime appends to the id's
//!   `__transaction_state` partition before it answers. Until the runtime reports the record
//!   written ([`Coordinator::written`]) or failed ([`Coordinator::write_failed`]), the id has a
//!   transition in flight and other requests for it get CONCURRENT_TRANSACTIONS, as in Kafka.
//!   Once a PrepareCommit or PrepareAbort is written, [`Coordinator::written`] returns the
//!   [`Markers`] the runtime sends to the partitions' leaders (WriteTxnMarkers); when every
//!   leader has written them, [`Coordinator::markers_written`] returns the CompleteCommit /
//!   CompleteAbort record.
//! - [`records`]: the versioned key/value format of `__transaction_state` records and replay.
//!
//! Protocol: the first transaction protocol (the one librdkafka and Java clients speak unless
//! the broker finalizes `transaction.version` 2), with KIP-360's InitProducerId carrying the
//! producer id and epoch it had, so a producer recovers from an abortable error without a new
//! identity.

pub mod coordinator;
pub mod records;
pub mod state;

pub use coordinator::{Config, Coordinator, Markers, TxnMetadata, Write};
pub use fjord_protocol::error::ErrorCode;
pub use state::TxnState;

/// The `__transaction_state` partition of `transactional_id` (as Kafka places it).
pub fn txn_partition(transactional_id: &str, partitions: i32) -> i32 {
    fjord_protocol::coordinator_key::coordinator_partition(transactional_id, partitions)
}
