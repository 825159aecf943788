//! Internal topics: the topics the broker writes itself (the group coordinator's
//! `__consumer_offsets`, later the transaction coordinator's `__transaction_state`), as Kafka's
//! `Topic.isInternal` knows them. A topic whose name merely starts with `__` is a user topic.
//!
//! What protects them, and where:
//! - client Produce and DeleteRecords: INVALID_TOPIC_EXCEPTION (the broker's handlers, as
//!   Kafka's ReplicaManager does);
//! - client CreateTopics: INVALID_REQUEST, the broker creates them with the settings they need;
//! - DeleteTopics and CreatePartitions: INVALID_TOPIC_EXCEPTION from the controller — a group's
//!   partition is its name's hash modulo the partition count, so growing the topic would move
//!   every group away from its committed offsets, and deleting it loses them all (Kafka leaves
//!   both to ACLs; an operator who does either by mistake loses every group's position);
//! - config changes that drop `compact` from `cleanup.policy` (or remove the override):
//!   INVALID_CONFIG from the controller — without compaction the coordinator's state is either
//!   deleted by retention or grows without bound.

/// The group coordinator's topic.
pub const GROUP_METADATA_TOPIC: &str = "__consumer_offsets";
/// The transaction coordinator's topic.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Every internal topic.
pub const INTERNAL_TOPICS: [&str; 2] = [GROUP_METADATA_TOPIC, TRANSACTION_STATE_TOPIC];

/// Whether `topic` is internal (written only by the broker).
pub fn is_internal(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}

/// Why setting (`Some`) or removing (`None`) config `key` on internal topic `topic` would break
/// it, or `None` when the change is harmless (or the topic is not internal).
pub fn breaking_config_change(topic: &str, key: &str, value: Option<&str>) -> Option<String> {
    if !is_internal(topic) || key != "cleanup.policy" {
        return None;
    }
    let compacted = value.is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"));
    (!compacted).then(|| {
        format!(
            "cleanup.policy of internal topic {topic} must include compact (got {})",
            value.unwrap_or("the default")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_coordinators_topics_are_internal() {
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal("__transaction_state"));
        assert!(!is_internal("__my_topic"));
        assert!(!is_internal("consumer_offsets"));
    }

    #[test]
    fn compaction_cannot_be_dropped_from_internal_topics() {
        let t = GROUP_METADATA_TOPIC;
        assert!(breaking_config_change(t, "cleanup.policy", Some("delete")).is_some());
        assert!(breaking_config_change(t, "cleanup.policy", None).is_some());
        assert!(breaking_config_change(t, "cleanup.policy", Some("compact")).is_none());
        assert!(breaking_config_change(t, "cleanup.policy", Some("delete, compact")).is_none());
        assert!(breaking_config_change(t, "segment.bytes", Some("1048576")).is_none());
        assert!(breaking_config_change("user", "cleanup.policy", Some("delete")).is_none());
    }
}
