//! The replica manager, as Kafka's `ReplicaManager`: what the Produce and Fetch handlers ask of
//! the partitions this broker hosts. The handlers only translate between the wire and it.
//!
//! - [`produce`]: append to a partition led here — leadership and `min.insync.replicas`
//!   checks, the append on the partition's disk I/O thread, the metrics of what was written,
//!   and the acks=all wait for the ISR ([`append_to_leader`]).
//! - [`fetch`](mod@fetch): read partitions for a follower or a consumer ([`fetch()`]) —
//!   leader epochs, follower progress and ISR-expand proposals, KIP-392 preferred read
//!   replicas, reads up to the log end or the high watermark within the byte budgets, the
//!   reassignment throttle, and the long poll for `min_bytes` (fetches parked on the
//!   partitions, woken by appends and high-watermark moves); the KIP-903 broker-epoch check of
//!   a follower ([`check_follower_broker_epoch`]).
//!
//! - [`txn`]: transactions on the partition side — a coordinator's commit or abort marker
//!   appended with acks=all ([`txn::write_marker`]), and KIP-890 part 1 verification of a
//!   transactional produce with the transaction coordinator ([`txn::verify`]).
//!
//! Fetch sessions (KIP-227, [`crate::fetch_session`]) stay with the Fetch handler: they decide
//! which partitions a request reads and which of them its response lists, both wire matters.

pub mod fetch;
pub mod produce;
pub mod txn;

pub use fetch::{check_follower_broker_epoch, fetch, FetchParams, Fetcher, PartitionRead};
pub use produce::{append_to_leader, ProduceError};
