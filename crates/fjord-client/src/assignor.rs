//! A client-side, rack-aware assignor for classic consumer groups (KIP-881).
//!
//! In the classic protocol the group leader computes the assignment and sends it in SyncGroup.
//! [`assign_classic`] takes the members' JoinGroup metadata (`ConsumerProtocolSubscription`,
//! whose v3 carries the member's `rack_id`) and the cluster metadata (which brokers host each
//! partition, and their racks), and returns each member's `ConsumerProtocolAssignment` bytes.
//! A partition is preferred by a member whose rack holds one of its replicas, but only while
//! the member is under its fair share, so balance always comes first. The placement algorithm
//! is the one the broker uses for KIP-848 groups (`fjord_group::assignor`), so both protocols
//! assign the same way.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fjord_group::assignor::{self, MemberSpec};
use fjord_group::coordinator::{TopicInfo, TopicsView};
use fjord_group::subscription::{encode_assignment, parse_subscription};

use crate::client::ClusterMetadata;

/// The assignor names a member may list in its JoinGroup protocols.
pub const RACK_AWARE_RANGE: &str = "fjord-rack-range";
pub const RACK_AWARE_UNIFORM: &str = "fjord-rack-uniform";

/// One member of a classic group, as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone)]
pub struct GroupMember {
    pub member_id: String,
    /// `ConsumerProtocolSubscription` bytes.
    pub metadata: Bytes,
}

/// Why an assignment could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("member {0} sent metadata that is not a consumer subscription")]
    BadSubscription(String),
}

/// Compute every member's assignment (`ConsumerProtocolAssignment` bytes) with the named
/// algorithm ([`RACK_AWARE_RANGE`] or [`RACK_AWARE_UNIFORM`]). Topics absent from `cluster`
/// are skipped, as Kafka's assignors skip unknown topics.
pub fn assign_classic(
    algorithm: &str,
    members: &[GroupMember],
    cluster: &ClusterMetadata,
) -> Result<BTreeMap<String, Bytes>, AssignError> {
    let racks: BTreeMap<i32, &str> = cluster
        .brokers
        .iter()
        .filter_map(|b| b.rack.as_deref().map(|r| (b.node_id, r)))
        .collect();
    let mut topics = TopicsView::new();
    for t in &cluster.topics {
        let partition_racks = t
            .partitions
            .iter()
            .map(|p| {
                p.replicas
                    .iter()
                    .filter_map(|r| racks.get(r).map(|s| s.to_string()))
                    .collect::<BTreeSet<String>>()
            })
            .collect();
        topics.insert(
            t.name.clone(),
            TopicInfo::new(t.name.clone(), t.topic_id, partition_racks),
        );
    }
    let mut specs = Vec::with_capacity(members.len());
    for m in members {
        let sub = parse_subscription(&m.metadata)
            .ok_or_else(|| AssignError::BadSubscription(m.member_id.clone()))?;
        // Stickiness: what the member owned before (cooperative clients report it).
        let mut current: BTreeMap<uuid::Uuid, BTreeSet<i32>> = BTreeMap::new();
        for (topic, parts) in &sub.owned_partitions {
            if let Some(t) = topics.get(topic) {
                current
                    .entry(t.id)
                    .or_default()
                    .extend(parts.iter().copied());
            }
        }
        specs.push(MemberSpec {
            member_id: m.member_id.clone(),
            rack: sub.rack,
            topics: sub.topics.into_iter().collect(),
            current,
        });
    }
    let name = if algorithm == RACK_AWARE_RANGE {
        "range"
    } else {
        "uniform"
    };
    let result = assignor::assign(name, &specs, &topics);
    let names: BTreeMap<uuid::Uuid, &str> =
        topics.values().map(|t| (t.id, t.name.as_str())).collect();
    Ok(specs
        .iter()
        .map(|m| {
            let parts: Vec<(String, Vec<i32>)> = result
                .get(&m.member_id)
                .into_iter()
                .flatten()
                .filter_map(|(id, ps)| {
                    names
                        .get(id)
                        .map(|n| (n.to_string(), ps.iter().copied().collect()))
                })
                .collect();
            (m.member_id.clone(), encode_assignment(&parts))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{BrokerInfo, PartitionMetadata, TopicMetadata};
    use fjord_group::subscription::{encode_subscription, parse_assignment, Subscription};

    fn cluster() -> ClusterMetadata {
        let brokers = (1..=3)
            .map(|id| BrokerInfo {
                node_id: id,
                host: "h".into(),
                port: 9092,
                rack: Some(format!("rack-{}", (b'a' + id as u8 - 1) as char)),
                is_fenced: false,
            })
            .collect();
        // Six partitions, each with a single replica on broker (p % 3) + 1.
        let partitions = (0..6)
            .map(|p| PartitionMetadata {
                partition: p,
                error_code: 0,
                leader: p % 3 + 1,
                leader_epoch: 0,
                replicas: vec![p % 3 + 1],
                isr: vec![p % 3 + 1],
                offline_replicas: vec![],
            })
            .collect();
        ClusterMetadata {
            cluster_id: None,
            controller_id: 1,
            brokers,
            topics: vec![TopicMetadata {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                is_internal: false,
                error_code: 0,
                partitions,
            }],
        }
    }

    fn member(id: &str, rack: &str) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            metadata: encode_subscription(&Subscription {
                topics: vec!["t".into()],
                rack: Some(rack.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn every_partition_once_balanced_and_rack_local() {
        for algo in [RACK_AWARE_RANGE, RACK_AWARE_UNIFORM] {
            let members = [
                member("m1", "rack-a"),
                member("m2", "rack-b"),
                member("m3", "rack-c"),
            ];
            let out = assign_classic(algo, &members, &cluster()).unwrap();
            let mut seen = BTreeSet::new();
            for (id, bytes) in &out {
                let parts = parse_assignment(bytes).unwrap();
                let ps: Vec<i32> = parts.iter().flat_map(|(_, p)| p.clone()).collect();
                assert_eq!(ps.len(), 2, "{algo}: {id} got {ps:?}");
                let rack = &members.iter().find(|m| &m.member_id == id).unwrap();
                let want = match rack.member_id.as_str() {
                    "m1" => 0,
                    "m2" => 1,
                    _ => 2,
                };
                // With racks a, b, c holding partitions p%3 == 0, 1, 2, a rack-aware
                // assignment gives every member exactly its local partitions.
                assert!(ps.iter().all(|p| p % 3 == want), "{algo}: {id} got {ps:?}");
                for p in ps {
                    assert!(seen.insert(p), "{algo}: partition {p} assigned twice");
                }
            }
            assert_eq!(seen.len(), 6);
        }
    }

    #[test]
    fn balance_beats_locality() {
        // Everyone in rack-a: only two partitions are local, but each member still gets two.
        let members = [
            member("m1", "rack-a"),
            member("m2", "rack-a"),
            member("m3", "rack-a"),
        ];
        let out = assign_classic(RACK_AWARE_UNIFORM, &members, &cluster()).unwrap();
        for bytes in out.values() {
            let n: usize = parse_assignment(bytes)
                .unwrap()
                .iter()
                .map(|(_, p)| p.len())
                .sum();
            assert_eq!(n, 2);
        }
    }

    #[test]
    fn garbage_metadata_is_an_error() {
        let bad = GroupMember {
            member_id: "x".into(),
            metadata: Bytes::from_static(b"\x00"),
        };
        assert_eq!(
            assign_classic(RACK_AWARE_RANGE, &[bad], &cluster()).unwrap_err(),
            AssignError::BadSubscription("x".into())
        );
    }
}
