//! Cluster metadata: the records that change it, the in-memory [`ClusterImage`] they build,
//! and [`MetadataLog`], the durable record log a node replays at startup.
//!
//! Layout:
//! - [`record`]: [`MetadataRecord`], the only way metadata changes (Kafka's KRaft records,
//!   simplified). Records are applied as deltas; nothing rebuilds the image from scratch.
//! - [`image`]: [`ClusterImage`], a pure state machine (`apply(record)`), plus the validation
//!   rules for topic names and partition counts.
//! - [`store`]: [`MetadataLog`], an append-only JSON-lines file with fsync per record. A single
//!   node is its own quorum today; the Raft quorum replaces the file, not the records or image.

pub mod image;
pub mod record;
pub mod store;

pub use image::{ClusterImage, TopicImage};
pub use record::MetadataRecord;
pub use store::{MetadataLog, StoreError};
pub use uuid::Uuid;
