//! One thin handler per Kafka API: look up, call the owning crate, answer.
//!
//! Each handler states the versions it serves in `fjord_protocol::versions::SUPPORTED`; the
//! decoder never hands a handler a version outside that table.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_client_quotas;
mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_acls;
mod create_partitions;
mod create_topics;
mod delete_acls;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_acls;
mod describe_client_quotas;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sasl;
mod scram_credentials;
mod sync_group;
mod txn_offset_commit;
mod unregister_broker;
mod write_txn_markers;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use fjord_protocol::codec::Request;
use fjord_security::KafkaPrincipal;

/// What the connection does after a request.
pub enum Outcome {
    Respond(Box<ResponseKind>),
    /// A response with record data beside it, sent from segment files (see
    /// [`fetch::FetchReply`]).
    RespondWithRecords(Box<ResponseKind>, Vec<Option<fjord_storage::FileRange>>),
    /// The response is decided later (acks=all waiting for the ISR); the connection goes on
    /// with its next requests and sends this response in its turn.
    Deferred(std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>),
    /// acks=0 produce: no response.
    NoResponse,
    /// Close the connection (e.g. an acks=0 produce failed, as Kafka does so the producer notices).
    Close(String),
}

/// Per-request facts handlers may need.
pub struct Ctx {
    pub version: i16,
    /// The request header's client id ("" when absent).
    pub client_id: String,
    /// The peer's address as Kafka shows it in DescribeGroups ("/127.0.0.1").
    pub client_host: String,
    /// Who the connection authenticated as (`User:ANONYMOUS` without authentication).
    #[allow(dead_code)] // read by authorization (issue 16)
    pub principal: Arc<KafkaPrincipal>,
    /// The name of the listener the request came in on (`PLAINTEXT`, `SASL_SSL`, ...).
    #[allow(dead_code)] // read by authentication and authorization (issue 16)
    pub listener: Arc<str>,
}

/// What a connection knows about its peer, for every request it hands to [`handle_from`].
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: Option<std::net::SocketAddr>,
    pub principal: Arc<KafkaPrincipal>,
    pub listener: Arc<str>,
}

impl Session {
    /// An unauthenticated connection from `peer` on `listener`.
    pub fn anonymous(listener: Arc<str>, peer: Option<std::net::SocketAddr>) -> Self {
        Session {
            peer,
            principal: Arc::new(KafkaPrincipal::anonymous()),
            listener,
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))]
pub async fn handle(broker: &Arc<Broker>, req: Request) -> Outcome {
    let session = Session::anonymous(Arc::from("PLAINTEXT"), None);
    handle_from(broker, req, &session).await
}

/// Handle a request on a connection with `session` (the peer is the client host of group
/// members; the principal is what authorization checks).
pub async fn handle_from(broker: &Arc<Broker>, req: Request, session: &Session) -> Outcome {
    let ctx = Ctx {
        version: req.header.request_api_version,
        client_id: req
            .header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: session
            .peer
            .map(|p| format!("/{}", p.ip()))
            .unwrap_or_default(),
        principal: session.principal.clone(),
        listener: session.listener.clone(),
    };
    let b = broker;
    match req.body {
        RequestKind::ApiVersions(r) => respond(api_versions::handle(&ctx, r)),
        RequestKind::Metadata(r) => respond(metadata::handle(b, &ctx, r).await),
        RequestKind::Produce(r) => produce::handle(b, &ctx, r),
        RequestKind::Fetch(r) => {
            let reply = fetch::handle(b, &ctx, r).await;
            Outcome::RespondWithRecords(Box::new(reply.response.into()), reply.records)
        }
        RequestKind::ListOffsets(r) => respond(list_offsets::handle(b, &ctx, r).await),
        RequestKind::CreateTopics(r) => respond(create_topics::handle(b, &ctx, r).await),
        RequestKind::DeleteTopics(r) => respond(delete_topics::handle(b, &ctx, r).await),
        RequestKind::CreatePartitions(r) => respond(create_partitions::handle(b, &ctx, r).await),
        RequestKind::DescribeConfigs(r) => respond(describe_configs::handle(b, &ctx, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            respond(incremental_alter_configs::handle(b, &ctx, r).await)
        }
        RequestKind::AlterConfigs(r) => respond(alter_configs::handle(b, &ctx, r).await),
        RequestKind::DeleteRecords(r) => respond(delete_records::handle(b, &ctx, r).await),
        RequestKind::DescribeCluster(r) => respond(describe_cluster::handle(b, &ctx, r)),
        RequestKind::ElectLeaders(r) => respond(elect_leaders::handle(b, &ctx, r).await),
        RequestKind::DescribeLogDirs(r) => respond(describe_log_dirs::handle(b, &ctx, r).await),
        RequestKind::AlterPartitionReassignments(r) => {
            respond(alter_partition_reassignments::handle(b, &ctx, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            respond(list_partition_reassignments::handle(b, &ctx, r).await)
        }
        RequestKind::UnregisterBroker(r) => respond(unregister_broker::handle(b, &ctx, r).await),
        RequestKind::InitProducerId(r) => respond(init_producer_id::handle(b, &ctx, r).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            respond(offset_for_leader_epoch::handle(b, &ctx, r))
        }
        RequestKind::FindCoordinator(r) => respond(find_coordinator::handle(b, &ctx, r).await),
        RequestKind::JoinGroup(r) => respond(join_group::handle(b, &ctx, r).await),
        RequestKind::SyncGroup(r) => respond(sync_group::handle(b, &ctx, r).await),
        RequestKind::Heartbeat(r) => respond(heartbeat::handle(b, &ctx, r)),
        RequestKind::LeaveGroup(r) => respond(leave_group::handle(b, &ctx, r).await),
        RequestKind::OffsetCommit(r) => offset_commit::handle_replicated(b, &ctx, r),
        RequestKind::OffsetFetch(r) => respond(offset_fetch::handle(b, &ctx, r)),
        RequestKind::DescribeGroups(r) => respond(describe_groups::handle(b, &ctx, r)),
        RequestKind::ListGroups(r) => respond(list_groups::handle(b, &ctx, r)),
        RequestKind::DeleteGroups(r) => respond(delete_groups::handle(b, &ctx, r).await),
        RequestKind::OffsetDelete(r) => respond(offset_delete::handle(b, &ctx, r).await),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            respond(consumer_group_heartbeat::handle(b, &ctx, r).await)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            respond(consumer_group_describe::handle(b, &ctx, r))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            respond(add_partitions_to_txn::handle(b, &ctx, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => respond(add_offsets_to_txn::handle(b, &ctx, r).await),
        RequestKind::EndTxn(r) => respond(end_txn::handle(b, &ctx, r).await),
        RequestKind::DescribeTransactions(r) => respond(describe_transactions::handle(b, &ctx, r)),
        RequestKind::ListTransactions(r) => respond(list_transactions::handle(b, &ctx, r)),
        RequestKind::WriteTxnMarkers(r) => write_txn_markers::handle(b, &ctx, r),
        RequestKind::TxnOffsetCommit(r) => txn_offset_commit::handle(b, &ctx, r),
        RequestKind::DescribeProducers(r) => respond(describe_producers::handle(b, &ctx, r)),
        RequestKind::DescribeClientQuotas(r) => respond(describe_client_quotas::handle(b, &ctx, r)),
        RequestKind::AlterClientQuotas(r) => respond(alter_client_quotas::handle(b, &ctx, r).await),
        RequestKind::SaslHandshake(r) => respond(sasl::handshake(r)),
        RequestKind::SaslAuthenticate(r) => respond(sasl::authenticate(r)),
        RequestKind::AlterUserScramCredentials(r) => {
            respond(scram_credentials::alter(b, &ctx, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            respond(scram_credentials::describe(b, &ctx, r))
        }
        RequestKind::CreateAcls(r) => respond(create_acls::handle(b, &ctx, r).await),
        RequestKind::DeleteAcls(r) => respond(delete_acls::handle(b, &ctx, r).await),
        RequestKind::DescribeAcls(r) => respond(describe_acls::handle(b, &ctx, r)),
        other => Outcome::Close(format!(
            "no handler for {:?}",
            std::mem::discriminant(&other)
        )),
    }
}

fn respond(body: impl Into<ResponseKind>) -> Outcome {
    Outcome::Respond(Box::new(body.into()))
}

/// PRODUCER_FENCED for a client that knows it, else INVALID_PRODUCER_EPOCH (as Kafka answers
/// InitProducerId before v4 and the other transactional APIs before v2).
pub(crate) fn producer_fenced_for(
    e: fjord_protocol::error::ErrorCode,
    knows_fenced: bool,
) -> fjord_protocol::error::ErrorCode {
    use fjord_protocol::error::ErrorCode;
    if e == ErrorCode::ProducerFenced && !knows_fenced {
        ErrorCode::InvalidProducerEpoch
    } else {
        e
    }
}

/// A protocol string from a Rust string.
pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Every handler's response must encode at every version we advertise, with real data in it:
/// `kafka-protocol` refuses to encode a field that a version lacks, and a response that cannot
/// be encoded closes the client's connection.
#[cfg(test)]
mod version_tests {
    use std::collections::BTreeMap;

    use crate::control::Deadline;

    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;
    use crate::config::BrokerConfig;
    use fjord_protocol::clock::now_ms;
    use fjord_protocol::versions::SUPPORTED;

    pub(super) fn batch() -> bytes::Bytes {
        let rec = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: Some("k".into()),
            value: Some("v".into()),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [rec].iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn requests(b: &Broker, api: ApiKey, v: i16) -> Vec<RequestKind> {
        let t = b.topic("t").unwrap();
        let name = TopicName(sb("t"));
        let by_id = |x: bool| if x { t.id } else { uuid::Uuid::nil() };
        match api {
            ApiKey::Produce => vec![ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(if v >= 13 {
                        TopicName(sb(""))
                    } else {
                        name.clone()
                    })
                    .with_topic_id(by_id(v >= 13))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch())),
                        produce_request::PartitionProduceData::default()
                            .with_index(7)
                            .with_records(Some(batch())),
                    ])])
                .into()],
            ApiKey::Fetch => vec![FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(if v >= 13 {
                        TopicName(sb(""))
                    } else {
                        name.clone()
                    })
                    .with_topic_id(by_id(v >= 13))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(999)
                            .with_partition_max_bytes(1 << 20),
                    ])])
                .into()],
            ApiKey::ListOffsets => vec![ListOffsetsRequest::default()
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        [-1i64, -2, -3, 0]
                            .iter()
                            .filter(|&&ts| ts != -3 || v >= 7)
                            .map(|&ts| {
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(ts)
                            })
                            .collect(),
                    )])
                .into()],
            ApiKey::CreateAcls => vec![CreateAclsRequest::default()
                .with_creations(vec![create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(sb("t"))
                    .with_resource_pattern_type(3)
                    .with_principal(sb("User:alice"))
                    .with_host(sb("*"))
                    .with_operation(3)
                    .with_permission_type(3)])
                .into()],
            ApiKey::DescribeAcls => vec![DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1)
                .into()],
            ApiKey::DeleteAcls => vec![DeleteAclsRequest::default()
                .with_filters(vec![delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(2)
                    .with_resource_name_filter(Some(sb("t")))
                    .with_pattern_type_filter(3)
                    .with_operation(1)
                    .with_permission_type(1)])
                .into()],
            ApiKey::Metadata => vec![
                MetadataRequest::default().with_topics(None).into(),
                MetadataRequest::default()
                    .with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(name.clone())),
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(TopicName(sb("missing")))),
                    ]))
                    .into(),
            ],
            ApiKey::ApiVersions => vec![ApiVersionsRequest::default().into()],
            ApiKey::CreateTopics => vec![CreateTopicsRequest::default()
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(TopicName(sb(format!("new{v}"))))
                        .with_num_partitions(2)
                        .with_replication_factor(1)
                        .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                            .with_name(sb("retention.ms"))
                            .with_value(Some(sb("1000")))]),
                    create_topics_request::CreatableTopic::default()
                        .with_name(name.clone())
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ])
                .into()],
            ApiKey::DeleteTopics => {
                let r = DeleteTopicsRequest::default();
                vec![if v >= 6 {
                    r.with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(TopicName(sb(format!("del{v}")))))])
                } else {
                    r.with_topic_names(vec![
                        TopicName(sb(format!("del{v}"))),
                        TopicName(sb("nope")),
                    ])
                }
                .into()]
            }
            ApiKey::DeleteRecords => vec![DeleteRecordsRequest::default()
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ])])
                .into()],
            ApiKey::InitProducerId => vec![InitProducerIdRequest::default().into()],
            ApiKey::OffsetForLeaderEpoch => vec![OffsetForLeaderEpochRequest::default()
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(name.clone())
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_leader_epoch(0),
                        ]),
                ])
                .into()],
            ApiKey::DescribeConfigs => vec![DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb("t")),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(sb("1")),
                ])
                .into()],
            ApiKey::AlterConfigs => vec![AlterConfigsRequest::default()
                .with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb("t"))
                        .with_configs(vec![alter_configs_request::AlterableConfig::default()
                            .with_name(sb("retention.ms"))
                            .with_value(Some(sb("5000")))]),
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(sb("1")),
                ])
                .into()],
            ApiKey::CreatePartitions => vec![CreatePartitionsRequest::default()
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name.clone())
                        .with_count(1),
                ])
                .into()],
            ApiKey::IncrementalAlterConfigs => vec![IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(sb("t"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(sb("retention.ms"))
                                .with_config_operation(0)
                                .with_value(Some(sb("5000"))),
                        ]),
                ])
                .into()],
            ApiKey::DescribeCluster => vec![DescribeClusterRequest::default().into()],
            ApiKey::ElectLeaders => vec![
                ElectLeadersRequest::default()
                    .with_election_type(if v >= 1 { 1 } else { 0 })
                    .with_topic_partitions(None)
                    .into(),
                ElectLeadersRequest::default()
                    .with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(name.clone())
                            .with_partitions(vec![0, 5]),
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(TopicName(sb("missing")))
                            .with_partitions(vec![0]),
                    ]))
                    .into(),
            ],
            ApiKey::AlterPartitionReassignments => vec![AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(5_000)
                .with_allow_replication_factor_change(v < 1)
                .with_topics(vec![
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(name.clone())
                        .with_partitions(vec![
                            // Reorder-free no-op, a cancel with nothing in progress, bad ones.
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(1)])),
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(None),
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(-1)
                                .with_replicas(Some(vec![BrokerId(9)])),
                        ]),
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(TopicName(sb("missing")))
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(1)])),
                        ]),
                ])
                .into()],
            ApiKey::DescribeLogDirs => vec![
                DescribeLogDirsRequest::default().with_topics(None).into(),
                DescribeLogDirsRequest::default()
                    .with_topics(Some(vec![
                        describe_log_dirs_request::DescribableLogDirTopic::default()
                            .with_topic(name.clone())
                            .with_partitions(vec![0, 4]),
                    ]))
                    .into(),
            ],
            ApiKey::ListPartitionReassignments => vec![
                ListPartitionReassignmentsRequest::default()
                    .with_topics(None)
                    .into(),
                ListPartitionReassignmentsRequest::default()
                    .with_topics(Some(vec![
                        list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                            .with_name(name.clone())
                            .with_partition_indexes(vec![0, 3]),
                    ]))
                    .into(),
            ],
            ApiKey::UnregisterBroker => vec![
                // Unknown, then this running broker that holds a replica: both refused.
                UnregisterBrokerRequest::default()
                    .with_broker_id(BrokerId(9))
                    .into(),
                UnregisterBrokerRequest::default()
                    .with_broker_id(BrokerId(1))
                    .into(),
            ],
            ApiKey::FindCoordinator => vec![if v >= 4 {
                FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![sb("g"), sb("h")])
                    .into()
            } else {
                FindCoordinatorRequest::default().with_key(sb("g")).into()
            }],
            ApiKey::JoinGroup => {
                // A static member joins (immediate answer with initial delay 0 configured).
                let sub = fjord_group::subscription::encode_subscription(
                    &fjord_group::subscription::Subscription {
                        topics: vec!["t".into()],
                        ..Default::default()
                    },
                );
                vec![JoinGroupRequest::default()
                    .with_group_id(GroupId(sb(format!("jg{v}"))))
                    .with_session_timeout_ms(10000)
                    .with_rebalance_timeout_ms(10000)
                    .with_group_instance_id(if v >= 5 { Some(sb("i")) } else { None })
                    .with_protocol_type(sb("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                    )
                    .with_name(sb("range"))
                    .with_metadata(sub)])
                    .into()]
            }
            ApiKey::SyncGroup => vec![SyncGroupRequest::default()
                .with_group_id(GroupId(sb("nope")))
                .with_member_id(sb("m"))
                .into()],
            ApiKey::Heartbeat => vec![HeartbeatRequest::default()
                .with_group_id(GroupId(sb("nope")))
                .into()],
            ApiKey::LeaveGroup => vec![if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(sb("nope")))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(sb("m"))
                    ])
                    .into()
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(sb("nope")))
                    .with_member_id(sb("m"))
                    .into()
            }],
            ApiKey::OffsetCommit => vec![OffsetCommitRequest::default()
                .with_group_id(GroupId(sb("oc")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(name.clone())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(9)
                                .with_committed_offset(1),
                        ]),
                ])
                .into()],
            ApiKey::OffsetFetch => vec![if v >= 8 {
                OffsetFetchRequest::default()
                    .with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(sb("oc")))
                            .with_topics(None),
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(sb("none")))
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(name.clone())
                                    .with_partition_indexes(vec![0]),
                            ])),
                    ])
                    .into()
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(sb("oc")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(name.clone())
                            .with_partition_indexes(vec![0, 1]),
                    ]))
                    .into()
            }],
            ApiKey::DescribeGroups => vec![DescribeGroupsRequest::default()
                .with_groups(vec![
                    GroupId(sb("jg9")),
                    GroupId(sb("oc")),
                    GroupId(sb("none")),
                ])
                .into()],
            ApiKey::ListGroups => vec![ListGroupsRequest::default().into()],
            ApiKey::DeleteGroups => vec![DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(sb("none")), GroupId(sb("jg9"))])
                .into()],
            ApiKey::OffsetDelete => vec![OffsetDeleteRequest::default()
                .with_group_id(GroupId(sb("oc")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(name.clone())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ])
                .into()],
            ApiKey::ConsumerGroupHeartbeat => vec![ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(sb(format!("cg{v}"))))
                .with_member_id(sb(if v >= 1 {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    String::new()
                }))
                .with_member_epoch(0)
                .with_rack_id(Some(sb("r1")))
                .with_rebalance_timeout_ms(10000)
                .with_subscribed_topic_names(Some(vec![name.clone()]))
                .with_topic_partitions(Some(vec![]))
                .into()],
            ApiKey::ConsumerGroupDescribe => vec![ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![
                    GroupId(sb("cg1")),
                    GroupId(sb("jg9")),
                    GroupId(sb("none")),
                ])
                .into()],
            ApiKey::AddPartitionsToTxn => {
                let topics = vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![0, 9])];
                vec![if v >= 4 {
                    AddPartitionsToTxnRequest::default()
                        .with_transactions(vec![
                            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                                .with_transactional_id(TransactionalId(sb("tx")))
                                .with_producer_id(ProducerId(1))
                                .with_verify_only(true)
                                .with_topics(topics),
                        ])
                        .into()
                } else {
                    AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(TransactionalId(sb("tx")))
                        .with_v3_and_below_producer_id(ProducerId(1))
                        .with_v3_and_below_topics(topics)
                        .into()
                }]
            }
            ApiKey::AddOffsetsToTxn => vec![AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(sb("tx")))
                .with_producer_id(ProducerId(1))
                .with_group_id(GroupId(sb("g")))
                .into()],
            ApiKey::EndTxn => vec![EndTxnRequest::default()
                .with_transactional_id(TransactionalId(sb("none")))
                .with_producer_id(ProducerId(1))
                .with_committed(true)
                .into()],
            ApiKey::DescribeTransactions => vec![DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![
                    TransactionalId(sb("tx")),
                    TransactionalId(sb("none")),
                    TransactionalId(sb("")),
                ])
                .into()],
            ApiKey::ListTransactions => vec![ListTransactionsRequest::default()
                .with_state_filters(vec![sb("Ongoing"), sb("Bogus")])
                .with_duration_filter(if v >= 1 { 0 } else { -1 })
                .into()],
            ApiKey::WriteTxnMarkers => vec![WriteTxnMarkersRequest::default()
                .with_markers(vec![write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(1))
                    .with_transaction_result(false)
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(name.clone())
                            .with_partition_indexes(vec![0, 9]),
                    ])])
                .into()],
            ApiKey::TxnOffsetCommit => vec![TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(sb("tx")))
                .with_group_id(GroupId(sb("g")))
                .with_producer_id(ProducerId(1))
                .with_generation_id(-1)
                .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(9)
                            .with_committed_offset(1),
                    ])])
                .into()],
            ApiKey::DescribeProducers => vec![DescribeProducersRequest::default()
                .with_topics(vec![describe_producers_request::TopicRequest::default()
                    .with_name(name.clone())
                    .with_partition_indexes(vec![0, 9])])
                .into()],
            ApiKey::SaslHandshake => vec![SaslHandshakeRequest::default()
                .with_mechanism(sb("PLAIN"))
                .into()],
            ApiKey::SaslAuthenticate => vec![SaslAuthenticateRequest::default()
                .with_auth_bytes(bytes::Bytes::from_static(b"\0u\0p"))
                .into()],
            ApiKey::AlterUserScramCredentials => vec![AlterUserScramCredentialsRequest::default()
                .with_upsertions(vec![
                    alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                        .with_name(sb(format!("u{v}")))
                        .with_mechanism(2)
                        .with_iterations(4096)
                        .with_salt(bytes::Bytes::from_static(b"salt"))
                        .with_salted_password(bytes::Bytes::from(vec![1u8; 64])),
                ])
                .with_deletions(vec![
                    alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                        .with_name(sb("nobody"))
                        .with_mechanism(1),
                ])
                .into()],
            ApiKey::DescribeUserScramCredentials => vec![
                DescribeUserScramCredentialsRequest::default().into(),
                DescribeUserScramCredentialsRequest::default()
                    .with_users(Some(vec![
                        describe_user_scram_credentials_request::UserName::default()
                            .with_name(sb("nobody")),
                    ]))
                    .into(),
            ],
            ApiKey::AlterClientQuotas => vec![AlterClientQuotasRequest::default()
                .with_entries(vec![alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![alter_client_quotas_request::EntityData::default()
                        .with_entity_type(sb("client-id"))
                        .with_entity_name(Some(sb(format!("c{v}"))))])
                    .with_ops(vec![alter_client_quotas_request::OpData::default()
                        .with_key(sb("producer_byte_rate"))
                        .with_value(1024.0)])])
                .into()],
            ApiKey::DescribeClientQuotas => vec![DescribeClientQuotasRequest::default()
                .with_components(vec![describe_client_quotas_request::ComponentData::default()
                    .with_entity_type(sb("client-id"))
                    .with_match_type(2)
                    .with_match(None)])
                .into()],
            other => panic!("no test request for {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_response_encodes_at_every_supported_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.path().display().to_string());
        props.insert(
            "group.initial.rebalance.delay.ms".to_string(),
            "0".to_string(),
        );
        // ACLs on, the test's connections a super user: every handler's authorized path and
        // the ACL APIs' answers with real ACLs in them.
        props.insert(
            "authorizer.class.name".to_string(),
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_string(),
        );
        props.insert("super.users".to_string(), "User:ANONYMOUS".to_string());
        let b = Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap();
        b.create_topic("t", 1, 1, BTreeMap::new(), false, Deadline::standard())
            .await
            .unwrap();
        b.partition("t", 0)
            .unwrap()
            .append_async(
                &b.io,
                batch(),
                fjord_protocol::records::AppendOrigin::Client,
                now_ms(),
            )
            .await
            .unwrap();
        // A transactional id with an open transaction, so the transaction APIs answer with
        // real data: the coordinator's shards load in its timer loop.
        crate::txn::log::ensure_txn_topic(&b).await.unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::txn::TxnRuntime::tick_loop(b.clone(), stopped));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (pid, epoch) = loop {
            match b.txns.init_producer_id(&b, "tx", 60_000, None).await {
                Ok(ids) => break ids,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(
                        matches!(
                            e,
                            fjord_protocol::error::ErrorCode::NotCoordinator
                                | fjord_protocol::error::ErrorCode::CoordinatorLoadInProgress
                        ),
                        "{e:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the transaction coordinator did not load: {e:?}"),
            }
        };
        let parts = [("t".to_string(), 0)].into_iter().collect();
        b.txns
            .add_partitions(&b, "tx", pid, epoch, &parts)
            .await
            .unwrap();
        // The DeleteTopics requests below delete one topic per version.
        for range in SUPPORTED.iter().filter(|r| r.key == ApiKey::DeleteTopics) {
            for v in range.min..=range.max {
                b.create_topic(
                    &format!("del{v}"),
                    1,
                    1,
                    BTreeMap::new(),
                    false,
                    Deadline::standard(),
                )
                .await
                .unwrap();
            }
        }
        for range in SUPPORTED {
            for v in range.min..=range.max {
                for body in requests(&b, range.key, v) {
                    let header = RequestHeader::default()
                        .with_request_api_key(range.key as i16)
                        .with_request_api_version(v)
                        .with_correlation_id(1);
                    let mut frame = BytesMut::new();
                    fjord_protocol::codec::encode_request(&mut frame, &header, &body)
                        .unwrap_or_else(|e| panic!("{:?} v{v} request: {e}", range.key));
                    let frame = fjord_protocol::codec::split_frame(&mut frame, 1 << 20)
                        .unwrap()
                        .unwrap();
                    let req = fjord_protocol::codec::decode_request(frame).unwrap();
                    let mut outcome = handle(&b, req).await;
                    if let Outcome::Deferred(later) = outcome {
                        outcome = later.await;
                    }
                    match outcome {
                        Outcome::Respond(resp) | Outcome::RespondWithRecords(resp, _) => {
                            let mut out = BytesMut::new();
                            fjord_protocol::codec::encode_response(
                                &mut out, 1, range.key, v, &resp,
                            )
                            .unwrap_or_else(|e| panic!("{:?} v{v} response: {e}", range.key));
                        }
                        _ => panic!("{:?} v{v}: no response", range.key),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod produce_tests {
    use std::collections::BTreeMap;

    use crate::control::Deadline;

    use kafka_protocol::messages::{produce_request, ProduceRequest, RequestHeader, TopicName};

    use super::*;
    use crate::config::BrokerConfig;

    fn produce(b: &Arc<Broker>, topic: &str, acks: i16, records: bytes::Bytes) -> Outcome {
        let body = ProduceRequest::default()
            .with_acks(acks)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(sb(topic)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ])]);
        let req = Request {
            api_key: kafka_protocol::messages::ApiKey::Produce,
            header: RequestHeader::default().with_request_api_version(9),
            body: RequestKind::Produce(body),
        };
        block_on(async {
            match handle(b, req).await {
                Outcome::Deferred(later) => later.await,
                outcome => outcome,
            }
        })
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn error_of(o: Outcome) -> i16 {
        match o {
            Outcome::Respond(resp) => {
                let ResponseKind::Produce(r) = *resp else {
                    panic!("expected a produce response")
                };
                r.responses[0].partition_responses[0].error_code
            }
            _ => panic!("expected a produce response"),
        }
    }

    #[test]
    fn acks_all_below_min_isr_and_bad_input_get_kafka_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.path().display().to_string());
        let b = Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap();
        let mut cfg = BTreeMap::new();
        cfg.insert("min.insync.replicas".to_string(), "2".to_string());
        block_on(b.create_topic("strict", 1, 1, cfg, false, Deadline::standard())).unwrap();
        block_on(b.create_topic("plain", 1, 1, BTreeMap::new(), false, Deadline::standard()))
            .unwrap();
        let batch = super::version_tests::batch();
        assert_eq!(error_of(produce(&b, "strict", -1, batch.clone())), 19);
        assert_eq!(error_of(produce(&b, "strict", 1, batch.clone())), 0);
        assert_eq!(error_of(produce(&b, "plain", -1, batch.clone())), 0);
        assert_eq!(error_of(produce(&b, "plain", 2, batch.clone())), 21);
        assert_eq!(error_of(produce(&b, "nope", 1, batch.clone())), 3);
        let mut corrupt = batch.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(error_of(produce(&b, "plain", 1, corrupt.into())), 2);
        // acks=0 with an error closes the connection, as Kafka does.
        assert!(matches!(
            produce(&b, "nope", 0, batch.clone()),
            Outcome::Close(_)
        ));
        assert!(matches!(
            produce(&b, "plain", 0, batch),
            Outcome::NoResponse
        ));
    }
}
