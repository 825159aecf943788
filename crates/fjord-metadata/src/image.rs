//! The in-memory cluster image, built by applying [`MetadataRecord`]s.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::MetadataRecord;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// What the cluster knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: u32,
    /// Per-topic overrides only; defaults come from the broker configuration.
    pub configs: BTreeMap<String, String>,
}

/// All topics (by name and id) and the producer-id high mark.
#[derive(Debug, Clone, Default)]
pub struct ClusterImage {
    topics: BTreeMap<String, TopicImage>,
    names_by_id: HashMap<Uuid, String>,
    next_producer_id: i64,
}

impl ClusterImage {
    /// Apply one record. Records referring to unknown topics are ignored (they can only come
    /// from a log written by a newer version; replay must not fail on them).
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic {
                name,
                id,
                partitions,
                configs,
            } => {
                if let Some(old) = self.topics.get(name) {
                    self.names_by_id.remove(&old.id);
                }
                self.names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::PartitionCount { id, partitions } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    t.partitions = (*partitions).max(t.partitions);
                }
            }
            MetadataRecord::TopicConfig { id, key, value } => {
                if let Some(t) = self.topic_by_id_mut(id) {
                    match value {
                        Some(v) => {
                            t.configs.insert(key.clone(), v.clone());
                        }
                        None => {
                            t.configs.remove(key);
                        }
                    }
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(name) = self.names_by_id.remove(id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::ProducerIds { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
        }
    }

    fn topic_by_id_mut(&mut self, id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.names_by_id.get(id)?;
        self.topics.get_mut(name)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(self.names_by_id.get(id)?)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Producer ids below this value have been handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }
}

/// Why a topic name is invalid (Kafka's `Topic.validate` rules), or `None` when it is valid.
pub fn invalid_topic_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("topic name cannot be \"{name}\""));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Some(format!(
            "topic name is {} characters, the maximum is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: Uuid, partitions: u32) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            id,
            partitions,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn apply_builds_and_changes_topics() {
        let mut img = ClusterImage::default();
        let a = Uuid::new_v4();
        img.apply(&topic("a", a, 1));
        img.apply(&MetadataRecord::PartitionCount {
            id: a,
            partitions: 4,
        });
        img.apply(&MetadataRecord::TopicConfig {
            id: a,
            key: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let t = img.topic("a").unwrap();
        assert_eq!(t.partitions, 4);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(img.topic_by_id(&a).unwrap().name, "a");
        img.apply(&MetadataRecord::TopicConfig {
            id: a,
            key: "retention.ms".into(),
            value: None,
        });
        assert!(img.topic("a").unwrap().configs.is_empty());
        img.apply(&MetadataRecord::RemoveTopic { id: a });
        assert!(img.topic("a").is_none());
        assert!(img.topic_by_id(&a).is_none());
    }

    #[test]
    fn recreated_topic_gets_new_identity() {
        let mut img = ClusterImage::default();
        let (a1, a2) = (Uuid::new_v4(), Uuid::new_v4());
        img.apply(&topic("a", a1, 1));
        img.apply(&MetadataRecord::RemoveTopic { id: a1 });
        img.apply(&topic("a", a2, 2));
        // A late record for the old id must not touch the new topic.
        img.apply(&MetadataRecord::PartitionCount {
            id: a1,
            partitions: 9,
        });
        assert_eq!(img.topic("a").unwrap().id, a2);
        assert_eq!(img.topic("a").unwrap().partitions, 2);
    }

    #[test]
    fn partition_count_never_shrinks_and_producer_ids_rise() {
        let mut img = ClusterImage::default();
        let a = Uuid::new_v4();
        img.apply(&topic("a", a, 3));
        img.apply(&MetadataRecord::PartitionCount {
            id: a,
            partitions: 2,
        });
        assert_eq!(img.topic("a").unwrap().partitions, 3);
        img.apply(&MetadataRecord::ProducerIds { next: 1000 });
        img.apply(&MetadataRecord::ProducerIds { next: 10 });
        assert_eq!(img.next_producer_id(), 1000);
    }

    #[test]
    fn topic_name_rules() {
        assert!(invalid_topic_name("orders.v1_a-b").is_none());
        assert!(invalid_topic_name("").is_some());
        assert!(invalid_topic_name("..").is_some());
        assert!(invalid_topic_name("a/b").is_some());
        assert!(invalid_topic_name(&"x".repeat(250)).is_some());
        assert!(invalid_topic_name(&"x".repeat(249)).is_none());
    }
}
