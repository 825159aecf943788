//! Metadata records: every change to cluster metadata is one of these.
//!
//! Records are JSON objects tagged by `"type"`. The format of a variant never changes once it has
//! been written to a log: new information comes as new variants or as optional fields with
//! `#[serde(default)]`, so a log written by an older Fjord always replays (see the
//! `old_records_still_parse` test, which pins the original five variants).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker's node id (`node.id`, Kafka's `int32` broker id).
pub type NodeId = i32;

/// The `leader` of a partition that has no leader (all ISR members fenced or gone).
pub const NO_LEADER: NodeId = -1;

/// One listener a broker advertises (`advertised.listeners`), e.g. `PLAINTEXT://10.0.0.1:9092`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Listener name, e.g. `PLAINTEXT` or `CONTROLLER`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub security_protocol: String,
}

/// Broker configs that can change at run time through IncrementalAlterConfigs on a BROKER
/// resource, per broker or as a cluster default (Kafka's key names; values are bytes/s).
/// `replica.alter.log.dirs.io.max.bytes.per.second` is accepted so Kafka's reassignment tool
/// can set and clear it, and has no effect: a Fjord broker has one log directory.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// A broker's maintenance mode ([`MetadataRecord::BrokerMaintenance`]): operator intent, kept
/// across re-registrations like the cordon. While it holds, the broker takes no new replicas
/// (it is cordoned), leads only partitions no other in-sync replica can lead, and with
/// `drain_replicas` the active controller moves every replica off it (`crate::maintenance`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Reassign every replica on the broker to other brokers.
    #[serde(default)]
    pub drain_replicas: bool,
    /// Replication throttle of the drain in bytes/s (Kafka's
    /// `leader/follower.replication.throttled.rate`), `None` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_bytes_per_s: Option<u64>,
    /// Entering maintenance cordoned the broker, so leaving it uncordons it (a broker the
    /// operator had cordoned before stays cordoned).
    #[serde(default)]
    pub cordoned_by_maintenance: bool,
    /// The drain finished (no replica left on the broker) and its throttles were cleared.
    #[serde(default)]
    pub drain_completed: bool,
}

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
    /// A topic was deleted (with all its partition states).
    RemoveTopic { id: Uuid },
    /// Producer ids below `next` have been handed out (blocks are allocated ahead so ids stay
    /// unique across restarts).
    ProducerIds { next: i64 },

    /// A broker (re)registered (KRaft's `RegisterBrokerRecord`). `broker_epoch` is the metadata
    /// offset of this record, so every registration has a new, larger epoch (KIP-380); state
    /// carrying an older epoch belongs to a previous incarnation and is rejected.
    /// A broker registers fenced and is unfenced once it has caught up with the metadata log.
    RegisterBroker {
        node_id: NodeId,
        incarnation_id: Uuid,
        broker_epoch: i64,
        #[serde(default)]
        rack: Option<String>,
        #[serde(default)]
        endpoints: Vec<Endpoint>,
        fenced: bool,
    },
    /// A broker was removed from the cluster (it must lead no partition any more).
    UnregisterBroker { node_id: NodeId, broker_epoch: i64 },
    /// A broker missed its heartbeats or asked to be fenced: it cannot lead until unfenced.
    FenceBroker { node_id: NodeId, broker_epoch: i64 },
    /// A fenced broker caught up with the metadata log and may lead again.
    UnfenceBroker { node_id: NodeId, broker_epoch: i64 },
    /// No new replicas are placed on this broker (maintenance); existing ones stay.
    /// Cordoning is operator intent, so it survives re-registration.
    CordonBroker { node_id: NodeId },
    /// The broker takes new replicas again.
    UncordonBroker { node_id: NodeId },
    /// The broker entered maintenance, or its maintenance changed (`Some`), or it left
    /// maintenance (`None`). Survives re-registration, like the cordon.
    BrokerMaintenance {
        node_id: NodeId,
        state: Option<Maintenance>,
    },

    /// A dynamic broker config (KRaft's `ConfigRecord` for a BROKER resource) was set (`Some`)
    /// or removed (`None`): for broker `node_id`, or the cluster-wide default with `None`.
    /// Only the keys in [`DYNAMIC_BROKER_CONFIGS`] are dynamic.
    BrokerConfig {
        #[serde(default)]
        node_id: Option<NodeId>,
        key: String,
        value: Option<String>,
    },

    /// When a topic was created and last used (`crate::topic_gc`): brokers report produce and
    /// consumer-fetch times coarsely (every `topic.activity.flush.ms`), the controller writes
    /// only times that advanced, and the image keeps the largest of each. Absent fields change
    /// nothing. `created_ms` is written with the topic (or, for a topic created before
    /// activity tracking, by the first `fjord topic gc --execute` that saw it).
    TopicActivity {
        id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_produce_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_fetch_ms: Option<i64>,
    },
    /// Topic GC's first phase marked an idle topic for deletion at `marked_ms` (`Some`), or
    /// the mark was lifted (`None`) because the topic was used again.
    TopicGcMark {
        id: Uuid,
        #[serde(default)]
        marked_ms: Option<i64>,
    },

    /// A client quota (KRaft's `ClientQuotaRecord`) was set (`Some`) or removed (`None`) on a
    /// user, client-id or (user, client-id) entity, `<default>` ones included
    /// ([`crate::client_quota`]).
    ClientQuota {
        entity: crate::client_quota::QuotaEntity,
        key: String,
        #[serde(default)]
        value: Option<crate::client_quota::QuotaValue>,
    },

    /// The full state of a new partition (KRaft's `PartitionRecord`).
    Partition {
        topic_id: Uuid,
        partition: u32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        /// [`NO_LEADER`] when the partition has no leader.
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        /// Replicas a reassignment (KIP-455) is adding: they are in `replicas` and catch up
        /// as followers; the reassignment completes once every target replica is in the ISR.
        /// Absent (empty) when no reassignment is in progress.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<NodeId>,
        /// Replicas a reassignment is removing: still in `replicas` (and possibly leading)
        /// until it completes. The target replica set is `replicas` minus these.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<NodeId>,
    },
    /// A change to an existing partition (KRaft's `PartitionChangeRecord`): absent fields keep
    /// their value. The epochs are the new values, written out so that every replica of the log
    /// can check them: `partition_epoch` rises on every change, `leader_epoch` rises exactly
    /// when the leader changes.
    PartitionChange {
        topic_id: Uuid,
        partition: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<NodeId>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<NodeId>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<NodeId>,
        leader_epoch: i32,
        partition_epoch: i32,
        /// The new adding replicas of a reassignment (`Some(vec![])` clears them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding_replicas: Option<Vec<NodeId>>,
        /// The new removing replicas of a reassignment (`Some(vec![])` clears them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing_replicas: Option<Vec<NodeId>>,
    },

    /// An ACL was created (KRaft's `AccessControlEntryRecord`; [`crate::acls`]).
    AccessControlEntry {
        id: Uuid,
        acl: fjord_security::acl::AclBinding,
    },
    /// An ACL was deleted (KRaft's `RemoveAccessControlEntryRecord`).
    RemoveAccessControlEntry { id: Uuid },

    /// A user's SCRAM credential for one mechanism was set (KRaft's
    /// `UserScramCredentialRecord`; [`crate::scram`]).
    UserScramCredential {
        name: String,
        credential: crate::scram::StoredCredential,
    },
    /// A user's SCRAM credential for `mechanism` (`SCRAM-SHA-256`, `SCRAM-SHA-512`) was
    /// deleted (KRaft's `RemoveUserScramCredentialRecord`).
    RemoveUserScramCredential { name: String, mechanism: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as written by Fjord before the cluster records existed: they must replay forever.
    #[test]
    fn old_records_still_parse() {
        let id = "6f1c1f5e-6a52-4c1e-9a8e-0d1f7b7f3a10";
        let lines = [
            format!(
                r#"{{"type":"Topic","name":"t","id":"{id}","partitions":3,"configs":{{"retention.ms":"1000"}}}}"#
            ),
            format!(r#"{{"type":"PartitionCount","id":"{id}","partitions":4}}"#),
            format!(r#"{{"type":"TopicConfig","id":"{id}","key":"k","value":null}}"#),
            format!(r#"{{"type":"RemoveTopic","id":"{id}"}}"#),
            r#"{"type":"ProducerIds","next":5000}"#.to_string(),
        ];
        for line in &lines {
            let rec: MetadataRecord = serde_json::from_str(line).unwrap();
            // Re-encoding gives the same JSON value: the format did not move.
            let again: serde_json::Value = serde_json::to_value(&rec).unwrap();
            let orig: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(again, orig, "{line}");
        }
    }

    /// Partition lines as written before reassignments existed (no adding/removing replicas):
    /// they replay as "no reassignment in progress" and re-encode to the same JSON.
    #[test]
    fn partition_records_without_reassignment_fields_still_parse() {
        let id = "6f1c1f5e-6a52-4c1e-9a8e-0d1f7b7f3a10";
        let lines = [
            format!(
                r#"{{"type":"Partition","topic_id":"{id}","partition":0,"replicas":[1,2,3],"isr":[1,2,3],"leader":1,"leader_epoch":0,"partition_epoch":0}}"#
            ),
            format!(
                r#"{{"type":"PartitionChange","topic_id":"{id}","partition":0,"isr":[1,2],"leader_epoch":0,"partition_epoch":1}}"#
            ),
        ];
        for line in &lines {
            let rec: MetadataRecord = serde_json::from_str(line).unwrap();
            match &rec {
                MetadataRecord::Partition {
                    adding_replicas,
                    removing_replicas,
                    ..
                } => assert!(adding_replicas.is_empty() && removing_replicas.is_empty()),
                MetadataRecord::PartitionChange {
                    adding_replicas,
                    removing_replicas,
                    ..
                } => assert!(adding_replicas.is_none() && removing_replicas.is_none()),
                other => panic!("{other:?}"),
            }
            let again: serde_json::Value = serde_json::to_value(&rec).unwrap();
            let orig: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(again, orig, "{line}");
        }
    }

    /// A maintenance record with only the fields of its first version parses with defaults.
    #[test]
    fn maintenance_records_parse_with_defaults() {
        let rec: MetadataRecord =
            serde_json::from_str(r#"{"type":"BrokerMaintenance","node_id":4,"state":{}}"#).unwrap();
        assert_eq!(
            rec,
            MetadataRecord::BrokerMaintenance {
                node_id: 4,
                state: Some(Maintenance::default())
            }
        );
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("throttle"), "{json}");
    }

    #[test]
    fn cluster_records_round_trip() {
        let id = Uuid::new_v4();
        let recs = [
            MetadataRecord::RegisterBroker {
                node_id: 1,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: 7,
                rack: Some("a".into()),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                    security_protocol: "PLAINTEXT".into(),
                }],
                fenced: true,
            },
            MetadataRecord::FenceBroker {
                node_id: 1,
                broker_epoch: 7,
            },
            MetadataRecord::CordonBroker { node_id: 1 },
            MetadataRecord::BrokerMaintenance {
                node_id: 1,
                state: Some(Maintenance {
                    drain_replicas: true,
                    throttle_bytes_per_s: Some(1_000_000),
                    cordoned_by_maintenance: true,
                    drain_completed: false,
                }),
            },
            MetadataRecord::BrokerMaintenance {
                node_id: 1,
                state: None,
            },
            MetadataRecord::BrokerConfig {
                node_id: Some(1),
                key: "leader.replication.throttled.rate".into(),
                value: Some("1000000".into()),
            },
            MetadataRecord::BrokerConfig {
                node_id: None,
                key: "follower.replication.throttled.rate".into(),
                value: None,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: vec![],
                removing_replicas: vec![],
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                replicas: None,
                isr: Some(vec![1, 2]),
                leader: None,
                leader_epoch: 0,
                partition_epoch: 1,
                adding_replicas: None,
                removing_replicas: None,
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                replicas: Some(vec![4, 2, 3, 1]),
                isr: None,
                leader: None,
                leader_epoch: 0,
                partition_epoch: 2,
                adding_replicas: Some(vec![4]),
                removing_replicas: Some(vec![1]),
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 1,
                replicas: vec![4, 2, 3, 1],
                isr: vec![2, 3, 1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 3,
                adding_replicas: vec![4],
                removing_replicas: vec![1],
            },
            MetadataRecord::TopicActivity {
                id,
                created_ms: Some(1),
                last_produce_ms: None,
                last_fetch_ms: Some(3),
            },
            MetadataRecord::TopicGcMark {
                id,
                marked_ms: Some(5),
            },
            MetadataRecord::TopicGcMark {
                id,
                marked_ms: None,
            },
        ];
        for rec in recs {
            let json = serde_json::to_string(&rec).unwrap();
            assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), rec);
        }
        // Absent optional fields are not written.
        let change = serde_json::to_string(&MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            replicas: None,
            isr: None,
            leader: Some(2),
            leader_epoch: 1,
            partition_epoch: 2,
            adding_replicas: None,
            removing_replicas: None,
        })
        .unwrap();
        assert!(
            !change.contains("isr") && !change.contains("replicas"),
            "{change}"
        );
    }
}
