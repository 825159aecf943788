//! The table of API versions Fjord implements, advertised exactly by ApiVersions.
//!
//! Baseline is Apache Kafka 4.x (KIP-896 removed the old versions); the maximum is what the
//! `kafka-protocol` crate can encode and what our handlers implement. An API is listed here only
//! when its handler exists, so clients never pick an API we cannot answer.

use kafka_protocol::messages::ApiKey;

/// One supported API and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn r(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// Every API the broker answers, with its version range. Keep sorted by API key.
pub const SUPPORTED: &[ApiRange] = &[
    r(ApiKey::Produce, 3, 13),
    r(ApiKey::Fetch, 4, 18),
    r(ApiKey::ListOffsets, 1, 10),
    r(ApiKey::Metadata, 0, 13),
    r(ApiKey::OffsetCommit, 2, 9),
    r(ApiKey::OffsetFetch, 1, 9),
    r(ApiKey::FindCoordinator, 0, 6),
    r(ApiKey::JoinGroup, 0, 9),
    r(ApiKey::Heartbeat, 0, 4),
    r(ApiKey::LeaveGroup, 0, 5),
    r(ApiKey::SyncGroup, 0, 5),
    r(ApiKey::DescribeGroups, 0, 6),
    r(ApiKey::ListGroups, 0, 5),
    // v0 is followed by raw SASL tokens, v1 by SaslAuthenticate requests (KIP-152).
    r(ApiKey::SaslHandshake, 0, 1),
    r(ApiKey::ApiVersions, 0, 4),
    r(ApiKey::CreateTopics, 2, 7),
    r(ApiKey::DeleteTopics, 1, 6),
    r(ApiKey::DeleteRecords, 0, 2),
    r(ApiKey::InitProducerId, 0, 5),
    r(ApiKey::OffsetForLeaderEpoch, 2, 4),
    r(ApiKey::AddPartitionsToTxn, 0, 5),
    r(ApiKey::AddOffsetsToTxn, 0, 4),
    // v5 is the second transaction protocol (an epoch bump per transaction, KIP-890 part 2),
    // which Fjord does not speak; clients send v5 only where `transaction.version` 2 is
    // finalized.
    r(ApiKey::EndTxn, 0, 4),
    // v0 was removed in Kafka 4 (KIP-896).
    r(ApiKey::WriteTxnMarkers, 1, 1),
    // v5 is KIP-890 part 2's, as EndTxn v5.
    r(ApiKey::TxnOffsetCommit, 0, 4),
    // ACLs (issue 16): v0 was removed in Kafka 4 (KIP-896).
    r(ApiKey::DescribeAcls, 1, 3),
    r(ApiKey::CreateAcls, 1, 3),
    r(ApiKey::DeleteAcls, 1, 3),
    r(ApiKey::DescribeConfigs, 1, 4),
    r(ApiKey::AlterConfigs, 0, 2),
    r(ApiKey::DescribeLogDirs, 1, 4),
    r(ApiKey::SaslAuthenticate, 0, 2),
    r(ApiKey::CreatePartitions, 0, 3),
    r(ApiKey::DeleteGroups, 0, 2),
    r(ApiKey::ElectLeaders, 0, 2),
    r(ApiKey::IncrementalAlterConfigs, 0, 1),
    r(ApiKey::AlterPartitionReassignments, 0, 1),
    r(ApiKey::ListPartitionReassignments, 0, 0),
    r(ApiKey::OffsetDelete, 0, 0),
    r(ApiKey::DescribeClientQuotas, 0, 1),
    r(ApiKey::AlterClientQuotas, 0, 1),
    r(ApiKey::DescribeUserScramCredentials, 0, 0),
    r(ApiKey::AlterUserScramCredentials, 0, 0),
    r(ApiKey::DescribeCluster, 0, 2),
    r(ApiKey::DescribeProducers, 0, 0),
    r(ApiKey::UnregisterBroker, 0, 0),
    r(ApiKey::DescribeTransactions, 0, 0),
    // v2 (KIP-1152's transactional id pattern, Kafka 4.1) is not served.
    r(ApiKey::ListTransactions, 0, 1),
    r(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    r(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The supported range for a raw API key, if the broker implements it.
pub fn supported(api_key: i16) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key as i16 == api_key)
}

/// Whether `version` of `api_key` is implemented.
pub fn is_supported(api_key: i16, version: i16) -> bool {
    supported(api_key).is_some_and(|r| (r.min..=r.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    /// Never advertise a version the codec cannot handle.
    #[test]
    fn table_within_codec_ranges() {
        for a in SUPPORTED {
            let v = a.key.valid_versions();
            assert!(
                a.min >= v.min && a.max <= v.max && a.min <= a.max,
                "{:?} {}..{} outside codec {}..{}",
                a.key,
                a.min,
                a.max,
                v.min,
                v.max
            );
        }
        assert_eq!(ProduceRequest::VERSIONS.max, 13);
    }

    #[test]
    fn sorted_and_unique() {
        for w in SUPPORTED.windows(2) {
            assert!((w[0].key as i16) < (w[1].key as i16));
        }
    }

    #[test]
    fn lookup() {
        assert!(is_supported(18, 3));
        assert!(!is_supported(18, 5));
        assert!(!is_supported(0, 2));
        assert!(supported(9999).is_none());
    }
}
