//! Kafka error codes, as one table locked by a test.
//!
//! Handlers use [`ErrorCode`] rather than raw numbers; the numbers are part of the wire contract
//! and must never change.

/// The error codes Fjord sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    None = 0,
    UnknownServerError = -1,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    InvalidRequiredAcks = 21,
    // Authorization (issue 16).
    TopicAuthorizationFailed = 29,
    GroupAuthorizationFailed = 30,
    SecurityDisabled = 54,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    DuplicateSequenceNumber = 46,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    InvalidProducerIdMapping = 49,
    TransactionalIdAuthorizationFailed = 53,
    ClusterAuthorizationFailed = 31,
    UnsupportedCompressionType = 76,
    OffsetNotAvailable = 78,
    UnknownProducerId = 59,
    KafkaStorageError = 56,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnknownTopicId = 100,
    InconsistentTopicId = 103,
    FetchSessionTopicIdError = 106,
    InvalidRecord = 87,
    ResourceNotFound = 91,
    TopicDeletionDisabled = 73,
    // Control plane.
    NotController = 41,
    StaleBrokerEpoch = 77,
    InvalidUpdateVersion = 95,
    DuplicateBrokerRegistration = 101,
    BrokerIdNotRegistered = 102,
    IneligibleReplica = 107,
    // Leader elections (ElectLeaders, KIP-460).
    PreferredLeaderNotAvailable = 80,
    EligibleLeadersNotAvailable = 83,
    ElectionNotNeeded = 84,
    // Partition reassignment (KIP-455).
    NoReassignmentInProgress = 85,
    // Group coordinator.
    OffsetMetadataTooLarge = 12,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidCommitOffsetSize = 28,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    FencedMemberEpoch = 110,
    UnreleasedInstanceId = 111,
    UnsupportedAssignor = 112,
    StaleMemberEpoch = 113,
    // Transaction coordinator.
    InvalidTransactionTimeout = 50,
    ConcurrentTransactions = 51,
    TransactionCoordinatorFenced = 52,
    ProducerFenced = 90,
    OperationNotAttempted = 55,
    TransactionalIdNotFound = 105,
    TransactionAbortable = 120,
    NetworkException = 13,
    UnstableOffsetCommit = 88,
    // SASL (KIP-43, KIP-152) and SCRAM credentials (KIP-554).
    UnsupportedSaslMechanism = 33,
    IllegalSaslState = 34,
    SaslAuthenticationFailed = 58,
    DuplicateResource = 92,
    UnacceptableCredential = 93,
}

impl ErrorCode {
    pub const fn code(self) -> i16 {
        self as i16
    }
}

impl ErrorCode {
    /// The code for a number the controller (or a transaction coordinator, answering a
    /// verification) sent; codes this table lacks become UNKNOWN_SERVER_ERROR.
    pub fn from_i16(code: i16) -> ErrorCode {
        use ErrorCode::*;
        const ALL: &[ErrorCode] = &[
            None,
            UnknownTopicOrPartition,
            LeaderNotAvailable,
            NotLeaderOrFollower,
            RequestTimedOut,
            InvalidTopicException,
            NotEnoughReplicas,
            TopicAlreadyExists,
            InvalidPartitions,
            InvalidReplicationFactor,
            InvalidReplicaAssignment,
            InvalidConfig,
            InvalidRequest,
            PolicyViolation,
            KafkaStorageError,
            TopicDeletionDisabled,
            FencedLeaderEpoch,
            UnknownLeaderEpoch,
            UnknownTopicId,
            CoordinatorNotAvailable,
            NotController,
            StaleBrokerEpoch,
            InvalidUpdateVersion,
            DuplicateBrokerRegistration,
            BrokerIdNotRegistered,
            IneligibleReplica,
            ResourceNotFound,
            PreferredLeaderNotAvailable,
            EligibleLeadersNotAvailable,
            ElectionNotNeeded,
            NoReassignmentInProgress,
            NotCoordinator,
            CoordinatorLoadInProgress,
            ConcurrentTransactions,
            InvalidTxnState,
            InvalidProducerEpoch,
            InvalidProducerIdMapping,
            ProducerFenced,
            TransactionalIdAuthorizationFailed,
            TransactionAbortable,
            ClusterAuthorizationFailed,
            UnknownProducerId,
            NetworkException,
            DuplicateResource,
            UnacceptableCredential,
        ];
        ALL.iter()
            .copied()
            .find(|c| c.code() == code)
            .unwrap_or(UnknownServerError)
    }
}

impl From<ErrorCode> for i16 {
    fn from(e: ErrorCode) -> i16 {
        e as i16
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::*;
    use kafka_protocol::ResponseError as K;

    /// Our names must agree with Kafka's numbering (taken from the generated crate).
    #[test]
    fn codes_match_kafka() {
        let pairs = [
            (OffsetOutOfRange, K::OffsetOutOfRange),
            (UnsupportedSaslMechanism, K::UnsupportedSaslMechanism),
            (IllegalSaslState, K::IllegalSaslState),
            (SaslAuthenticationFailed, K::SaslAuthenticationFailed),
            (DuplicateResource, K::DuplicateResource),
            (UnacceptableCredential, K::UnacceptableCredential),
            (NotController, K::NotController),
            (StaleBrokerEpoch, K::StaleBrokerEpoch),
            (InvalidUpdateVersion, K::InvalidUpdateVersion),
            (DuplicateBrokerRegistration, K::DuplicateBrokerRegistration),
            (BrokerIdNotRegistered, K::BrokerIdNotRegistered),
            (IneligibleReplica, K::IneligibleReplica),
            (PreferredLeaderNotAvailable, K::PreferredLeaderNotAvailable),
            (EligibleLeadersNotAvailable, K::EligibleLeadersNotAvailable),
            (ElectionNotNeeded, K::ElectionNotNeeded),
            (NoReassignmentInProgress, K::NoReassignmentInProgress),
            (CorruptMessage, K::CorruptMessage),
            (UnknownTopicOrPartition, K::UnknownTopicOrPartition),
            (InvalidFetchSize, K::InvalidFetchSize),
            (LeaderNotAvailable, K::LeaderNotAvailable),
            (NotLeaderOrFollower, K::NotLeaderOrFollower),
            (RequestTimedOut, K::RequestTimedOut),
            (MessageTooLarge, K::MessageTooLarge),
            (InvalidTopicException, K::InvalidTopicException),
            (RecordListTooLarge, K::RecordListTooLarge),
            (NotEnoughReplicas, K::NotEnoughReplicas),
            (
                NotEnoughReplicasAfterAppend,
                K::NotEnoughReplicasAfterAppend,
            ),
            (InvalidRequiredAcks, K::InvalidRequiredAcks),
            (InvalidTimestamp, K::InvalidTimestamp),
            (UnsupportedVersion, K::UnsupportedVersion),
            (TopicAlreadyExists, K::TopicAlreadyExists),
            (InvalidPartitions, K::InvalidPartitions),
            (InvalidReplicationFactor, K::InvalidReplicationFactor),
            (InvalidReplicaAssignment, K::InvalidReplicaAssignment),
            (InvalidConfig, K::InvalidConfig),
            (InvalidRequest, K::InvalidRequest),
            (UnsupportedForMessageFormat, K::UnsupportedForMessageFormat),
            (PolicyViolation, K::PolicyViolation),
            (OutOfOrderSequenceNumber, K::OutOfOrderSequenceNumber),
            (DuplicateSequenceNumber, K::DuplicateSequenceNumber),
            (InvalidProducerEpoch, K::InvalidProducerEpoch),
            (InvalidTxnState, K::InvalidTxnState),
            (InvalidProducerIdMapping, K::InvalidProducerIdMapping),
            (UnknownProducerId, K::UnknownProducerId),
            (KafkaStorageError, K::KafkaStorageError),
            (FetchSessionIdNotFound, K::FetchSessionIdNotFound),
            (InvalidFetchSessionEpoch, K::InvalidFetchSessionEpoch),
            (FencedLeaderEpoch, K::FencedLeaderEpoch),
            (UnknownLeaderEpoch, K::UnknownLeaderEpoch),
            (UnsupportedCompressionType, K::UnsupportedCompressionType),
            (OffsetNotAvailable, K::OffsetNotAvailable),
            (UnknownTopicId, K::UnknownTopicId),
            (InconsistentTopicId, K::InconsistentTopicId),
            (FetchSessionTopicIdError, K::FetchSessionTopicIdError),
            (InvalidRecord, K::InvalidRecord),
            (ResourceNotFound, K::ResourceNotFound),
            (TopicDeletionDisabled, K::TopicDeletionDisabled),
            (ClusterAuthorizationFailed, K::ClusterAuthorizationFailed),
            (TopicAuthorizationFailed, K::TopicAuthorizationFailed),
            (GroupAuthorizationFailed, K::GroupAuthorizationFailed),
            (SecurityDisabled, K::SecurityDisabled),
            (OffsetMetadataTooLarge, K::OffsetMetadataTooLarge),
            (CoordinatorLoadInProgress, K::CoordinatorLoadInProgress),
            (CoordinatorNotAvailable, K::CoordinatorNotAvailable),
            (NotCoordinator, K::NotCoordinator),
            (IllegalGeneration, K::IllegalGeneration),
            (InconsistentGroupProtocol, K::InconsistentGroupProtocol),
            (InvalidGroupId, K::InvalidGroupId),
            (UnknownMemberId, K::UnknownMemberId),
            (InvalidSessionTimeout, K::InvalidSessionTimeout),
            (RebalanceInProgress, K::RebalanceInProgress),
            (InvalidCommitOffsetSize, K::InvalidCommitOffsetSize),
            (NonEmptyGroup, K::NonEmptyGroup),
            (GroupIdNotFound, K::GroupIdNotFound),
            (MemberIdRequired, K::MemberIdRequired),
            (GroupMaxSizeReached, K::GroupMaxSizeReached),
            (FencedInstanceId, K::FencedInstanceId),
            (GroupSubscribedToTopic, K::GroupSubscribedToTopic),
            (FencedMemberEpoch, K::FencedMemberEpoch),
            (UnreleasedInstanceId, K::UnreleasedInstanceId),
            (UnsupportedAssignor, K::UnsupportedAssignor),
            (StaleMemberEpoch, K::StaleMemberEpoch),
            (InvalidTransactionTimeout, K::InvalidTransactionTimeout),
            (ConcurrentTransactions, K::ConcurrentTransactions),
            (
                TransactionCoordinatorFenced,
                K::TransactionCoordinatorFenced,
            ),
            (ProducerFenced, K::ProducerFenced),
            (OperationNotAttempted, K::OperationNotAttempted),
            (TransactionalIdNotFound, K::TransactionalIdNotFound),
            (TransactionAbortable, K::TransactionAbortable),
            (NetworkException, K::NetworkException),
            (UnstableOffsetCommit, K::UnstableOffsetCommit),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
        assert_eq!(None.code(), 0);
        assert_eq!(UnknownServerError.code(), -1);
    }
}
