//! Metadata records: every change to cluster metadata is one of these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A topic was created with `partitions` partitions and per-topic config overrides.
    Topic {
        name: String,
        id: Uuid,
        partitions: u32,
        configs: BTreeMap<String, String>,
    },
    /// Partitions were added: the topic now has `partitions` partitions.
    PartitionCount { id: Uuid, partitions: u32 },
    /// A topic config override was set (`Some`) or removed (`None`).
    TopicConfig {
        id: Uuid,
        key: String,
        value: Option<String>,
    },
    /// A topic was deleted.
    RemoveTopic { id: Uuid },
    /// Producer ids below `next` have been handed out (blocks are allocated ahead so ids stay
    /// unique across restarts).
    ProducerIds { next: i64 },
}
