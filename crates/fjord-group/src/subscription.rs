//! The consumer protocol's embedded payloads: `ConsumerProtocolSubscription` (JoinGroup
//! protocol metadata, v0-v3 with owned partitions and KIP-881 rack id) and
//! `ConsumerProtocolAssignment` (SyncGroup assignment). Each starts with a 2-byte version; a
//! newer version than we know is read as the newest we know, as Kafka does.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// What a consumer subscribed to (parsed from its JoinGroup protocol metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned_partitions: Vec<(String, Vec<i32>)>,
    pub rack: Option<String>,
    pub generation_id: i32,
}

/// Parse `ConsumerProtocolSubscription`; `None` if the bytes are not one.
pub fn parse_subscription(bytes: &[u8]) -> Option<Subscription> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16().clamp(0, 3);
    let s = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(Subscription {
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        owned_partitions: s
            .owned_partitions
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        rack: s.rack_id.map(|r| r.to_string()).filter(|r| !r.is_empty()),
        generation_id: s.generation_id,
    })
}

/// Encode a subscription (version 3), for tests and our own client.
pub fn encode_subscription(s: &Subscription) -> Bytes {
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(s.topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
        .with_owned_partitions(
            s.owned_partitions
                .iter()
                .map(|(t, p)| {
                    kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                        .with_topic(kafka_protocol::messages::TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(p.clone())
                })
                .collect(),
        )
        .with_generation_id(s.generation_id)
        .with_rack_id(s.rack.clone().map(StrBytes::from_string));
    let mut out = BytesMut::new();
    out.put_i16(3);
    msg.encode(&mut out, 3).expect("subscription encodes");
    out.freeze()
}

/// Parse `ConsumerProtocolAssignment` into (topic, partitions); `None` if it is not one. An empty
/// byte string is an empty assignment.
pub fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
    )
}

/// Encode an assignment (version 0 — every client reads it).
pub fn encode_assignment(partitions: &[(String, Vec<i32>)]) -> Bytes {
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|(t, p)| {
                AssignedTopic::default()
                    .with_topic(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        t.clone(),
                    )))
                    .with_partitions(p.clone())
            })
            .collect(),
    );
    let mut out = BytesMut::new();
    out.put_i16(0);
    msg.encode(&mut out, 0).expect("assignment encodes");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_round_trip_with_rack() {
        let s = Subscription {
            topics: vec!["a".into(), "b".into()],
            owned_partitions: vec![("a".into(), vec![0, 2])],
            rack: Some("az1".into()),
            generation_id: 7,
        };
        assert_eq!(parse_subscription(&encode_subscription(&s)), Some(s));
        assert_eq!(parse_subscription(b"x"), None);
    }

    #[test]
    fn assignment_round_trip() {
        let a = vec![("t".to_string(), vec![1, 3])];
        assert_eq!(parse_assignment(&encode_assignment(&a)), Some(a));
        assert_eq!(parse_assignment(b""), Some(vec![]));
    }
}
