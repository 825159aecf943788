//! Fjord's view of the Kafka wire protocol, without I/O.
//!
//! Layout:
//! - [`codec`]: frame splitting, request decoding and response encoding around the
//!   `kafka-protocol` message types (generated from Kafka's JSON schemas; we never hand-write
//!   message codecs).
//! - [`versions`]: the table of APIs and versions the broker implements — the single source of
//!   what ApiVersions advertises and what the decoder accepts.
//! - [`batch`]: a zero-copy view of record batch v2 headers, CRC32C checks and in-place patching
//!   of base offset and leader epoch, and `BatchIter`, the one walker over concatenated
//!   batches. Record data stays `Bytes` on the produce/fetch path.
//! - [`records`]: produce validation (Kafka's LogValidator): counts, offsets, every record's
//!   lengths and varints, keys on compacted topics, timestamps, per-record errors (KIP-467);
//!   compressed batches inflated as a capped stream.
//! - [`error`]: the error codes Fjord sends, by name, as one table.
//! - [`clock`]: the wall clock in Kafka's epoch milliseconds, the one helper every crate uses
//!   (the only function here that reads anything outside its arguments).

pub mod batch;
pub mod clock;
pub mod codec;
pub mod control;
pub mod coordinator_key;
pub mod error;
pub mod records;
pub mod versions;

pub use kafka_protocol;

/// The ApiVersions response body listing everything in [`versions::SUPPORTED`].
pub fn api_versions_response() -> kafka_protocol::messages::ApiVersionsResponse {
    codec::api_versions_body()
}
