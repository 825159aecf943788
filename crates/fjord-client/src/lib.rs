//! A small async Kafka client on the same protocol crate as the broker, for the `fjord` CLI,
//! tests and the perf tool.
//!
//! Layout:
//! - [`connection`]: one TCP connection to one broker, plain or TLS ([`tls`], from Kafka's
//!   `ssl.*` keys), SASL after it ([`sasl`]). Negotiates API versions with
//!   ApiVersions (v3, falling back to v0) and pipelines requests: several may await their
//!   responses at once (`max_in_flight`), matched in order by correlation id.
//! - [`client`]: [`Client`] over a bootstrap broker — metadata, topic admin, configs, list
//!   offsets, produce and fetch — routing partition requests to the leader from Metadata and
//!   keeping one connection per broker id.
//! - [`batch_template`]: [`BatchTemplate`], a record batch encoded once and re-stamped per send,
//!   so a load generator does no per-record work.
//! - [`partitioner`]: Kafka's default murmur2 key partitioner, and [`Partitioner`], which also
//!   places unkeyed records, only on partitions led in the producer's rack when it has one
//!   (AZ-local produce, like Kafka's KIP-1123).
//! - [`progress`]: how far each replica is behind its leader (offsets and time).
//! - [`assignor`]: a rack-aware assignor for the leader of a classic consumer group (KIP-881).
//! - [`error`]: [`Error`], which keeps broker error codes (named as Kafka names them), I/O,
//!   timeouts and protocol violations apart.

pub mod assignor;
pub mod batch_template;
pub mod client;
pub mod connection;
pub mod error;
pub mod partitioner;
pub mod progress;
pub mod sasl;
pub mod tls;

pub use batch_template::BatchTemplate;
pub use client::{
    client_id_with_az, config_source, create_topics_request, list_offsets_request, AlterConfigOp,
    BrokerInfo, Client, ClientConfig, ClusterDescription, ClusterMetadata, ConfigEntry,
    ConsumedRecord, CreatedTopic, ElectionResult, ElectionType, FetchOptions, ListedOffset,
    NewTopic, OffsetSpec, PartitionFetch, PartitionMetadata, ProduceOptions, ProduceRecord,
    ProduceResult, ResourceType, TopicMetadata, CLIENT_ID_AZ_TAG,
};
pub use connection::{Connection, ConnectionConfig};
pub use error::{error_name, Error, Result};
pub use kafka_protocol::records::Compression;
pub use partitioner::Partitioner;
pub use progress::{PartitionProgress, ReplicaProgress};
pub use sasl::SaslCredentials;
pub use tls::TlsClient;
pub use uuid::Uuid;
