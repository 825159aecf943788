//! Issue 16's per-API authorization matrix: every API the broker guards, sent by a principal
//! with no ACLs (`User:mallory`) gets the error Kafka's `KafkaApis` sends (TOPIC 29, GROUP 30,
//! CLUSTER 31, TRANSACTIONAL_ID 53 `_AUTHORIZATION_FAILED`), or an answer filtered to nothing
//! for the listing APIs; the same request from a super user (`User:admin`) gets no
//! authorization error. Produce and Fetch are covered with real clients in `acls.rs`.

mod common;

use common::FjordProcess;
use fjord_client::connection::{Connection, ConnectionConfig};
use fjord_client::sasl::SaslCredentials;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};

const JAAS: &str = r#"listener.name.plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_mallory="mallory-secret";"#;

/// The authorization failures: TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID.
const AUTH: [i16; 4] = [29, 30, 31, 53];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}
fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}
fn group(v: &str) -> GroupId {
    GroupId(s(v))
}
fn txn(v: &str) -> TransactionalId {
    TransactionalId(s(v))
}

/// Every `error_code: N` in a response's debug form.
fn codes(debug: &str) -> Vec<i16> {
    debug
        .match_indices("error_code: ")
        .filter_map(|(i, m)| {
            let rest = &debug[i + m.len()..];
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

async fn connect(broker: &FjordProcess, user: &str) -> Connection {
    Connection::connect(
        broker.bootstrap(),
        ConnectionConfig {
            client_id: format!("acl-matrix-{user}"),
            sasl: Some(SaslCredentials {
                mechanism: "PLAIN".into(),
                username: user.into(),
                password: format!("{user}-secret"),
            }),
            ..ConnectionConfig::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

/// One row: what mallory got, what admin got.
struct Row {
    api: &'static str,
    expected: i16,
    denied: String,
    allowed: String,
}

async fn both<R: Request>(
    mallory: &Connection,
    admin: &Connection,
    version: i16,
    req: R,
) -> Option<(String, String)>
where
    R::Response: std::fmt::Debug,
{
    // Skipped when the broker does not serve the API at all (nothing to authorize).
    let key = ApiKey::try_from(R::KEY).ok()?;
    let served = mallory.version(key)?;
    let v = version.min(served);
    let denied = mallory
        .send_at(&req, v)
        .await
        .unwrap_or_else(|e| panic!("{key:?} v{v} as mallory: {e}"));
    let allowed = admin
        .send_at(&req, v)
        .await
        .unwrap_or_else(|e| panic!("{key:?} v{v} as admin: {e}"));
    Some((format!("{denied:?}"), format!("{allowed:?}")))
}

#[test]
fn every_guarded_api_denies_without_acls_and_allows_super_users() {
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        "sasl.enabled.mechanisms=PLAIN",
        "--set",
        JAAS,
        "--set",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "--set",
        "super.users=User:admin",
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rows, skipped, filtered) = rt.block_on(matrix(&broker));
    let mut failures = Vec::new();
    for r in &rows {
        let denied = codes(&r.denied);
        let allowed = codes(&r.allowed);
        if !denied.contains(&r.expected) {
            failures.push(format!(
                "{}: expected {} for mallory, got codes {denied:?}: {}",
                r.api, r.expected, r.denied
            ));
        }
        if let Some(c) = allowed.iter().find(|c| AUTH.contains(c)) {
            failures.push(format!(
                "{}: admin (a super user) got authorization error {c}: {}",
                r.api, r.allowed
            ));
        }
    }
    failures.extend(filtered);
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert!(
        rows.len() >= 35,
        "only {} APIs checked (skipped: {skipped:?})",
        rows.len()
    );
    eprintln!(
        "acl matrix: {} APIs denied and allowed as Kafka does; not served: {skipped:?}",
        rows.len()
    );
    broker.assert_no_panic_in_log();
}

async fn matrix(broker: &FjordProcess) -> (Vec<Row>, Vec<&'static str>, Vec<String>) {
    let mallory = connect(broker, "mallory").await;
    let admin = connect(broker, "admin").await;

    // Resources, made by the super user: topics t and t-del, groups g and g-del (offsets
    // committed), transactional id tx.
    let created = admin
        .send_at(
            &CreateTopicsRequest::default()
                .with_topics(
                    ["t", "t-del", "t-records"]
                        .iter()
                        .map(|n| {
                            create_topics_request::CreatableTopic::default()
                                .with_name(topic(n))
                                .with_num_partitions(1)
                                .with_replication_factor(1)
                        })
                        .collect(),
                )
                .with_timeout_ms(10_000),
            5,
        )
        .await
        .unwrap();
    assert!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );
    for g in ["g", "g-del"] {
        let r = admin.send_at(&commit(g, -1, ""), 8).await.unwrap();
        assert!(!format!("{r:?}").contains("error_code: 3"), "{r:?}");
    }

    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    macro_rules! row {
        ($api:expr, $code:expr, $ver:expr, $req:expr) => {
            match both(&mallory, &admin, $ver, $req).await {
                Some((denied, allowed)) => rows.push(Row {
                    api: $api,
                    expected: $code,
                    denied,
                    allowed,
                }),
                None => skipped.push($api),
            }
        };
    }

    // Topics.
    row!(
        "Metadata (a named topic)",
        29,
        12,
        MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("t")))
        ]))
    );
    row!(
        "ListOffsets",
        29,
        7,
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)
                ])])
    );
    row!(
        "CreateTopics",
        29,
        5,
        CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(topic("t-new"))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000)
            .with_validate_only(true)
    );
    row!(
        "CreatePartitions",
        29,
        3,
        CreatePartitionsRequest::default()
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic("t"))
                    .with_count(2)
            ])
            .with_timeout_ms(10_000)
            .with_validate_only(true)
    );
    row!(
        "DeleteRecords",
        29,
        2,
        DeleteRecordsRequest::default()
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic("t-records"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(0)
                ])])
            .with_timeout_ms(10_000)
    );
    row!(
        "DescribeConfigs (topic)",
        29,
        4,
        DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
        ])
    );
    row!(
        "DescribeConfigs (broker)",
        31,
        4,
        DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("1"))
        ])
    );
    row!(
        "AlterConfigs (topic)",
        29,
        2,
        AlterConfigsRequest::default()
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("86400000")))])])
            .with_validate_only(true)
    );
    row!(
        "IncrementalAlterConfigs (topic)",
        29,
        1,
        IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("86400000")))
                    ])
            ])
            .with_validate_only(true)
    );
    row!(
        "IncrementalAlterConfigs (broker)",
        31,
        1,
        IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("log.cleaner.threads"))
                            .with_config_operation(0)
                            .with_value(Some(s("1")))
                    ])
            ])
            .with_validate_only(true)
    );
    row!(
        "DescribeProducers",
        29,
        0,
        DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(topic("t"))
                .with_partition_indexes(vec![0])
        ])
    );
    row!(
        "DescribeTopicPartitions",
        29,
        0,
        DescribeTopicPartitionsRequest::default()
            .with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default().with_name(topic("t"))
            ])
            .with_response_partition_limit(100)
    );
    row!(
        "OffsetForLeaderEpoch",
        29,
        4,
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(0)
                    ])
            ])
    );

    // Groups.
    row!("OffsetCommit", 30, 8, commit("g", -1, ""));
    row!(
        "OffsetFetch",
        30,
        7,
        OffsetFetchRequest::default()
            .with_group_id(group("g"))
            .with_topics(None)
    );
    row!(
        "FindCoordinator (group)",
        30,
        3,
        FindCoordinatorRequest::default()
            .with_key(s("g"))
            .with_key_type(0)
    );
    row!(
        "JoinGroup",
        30,
        5,
        JoinGroupRequest::default()
            .with_group_id(group("g2"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s("m"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0]))])
    );
    row!(
        "SyncGroup",
        30,
        3,
        SyncGroupRequest::default()
            .with_group_id(group("g2"))
            .with_generation_id(1)
            .with_member_id(s("m"))
    );
    row!(
        "Heartbeat",
        30,
        3,
        HeartbeatRequest::default()
            .with_group_id(group("g2"))
            .with_generation_id(1)
            .with_member_id(s("m"))
    );
    row!(
        "LeaveGroup",
        30,
        3,
        LeaveGroupRequest::default()
            .with_group_id(group("g2"))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s("m"))
            ])
    );
    row!(
        "DescribeGroups",
        30,
        5,
        DescribeGroupsRequest::default().with_groups(vec![group("g")])
    );
    row!(
        "OffsetDelete",
        30,
        0,
        OffsetDeleteRequest::default()
            .with_group_id(group("g"))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0)
                    ])
            ])
    );
    row!(
        "ConsumerGroupHeartbeat",
        30,
        0,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group("g3"))
            .with_member_id(s("m3"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(Some(vec![topic("t")]))
            .with_topic_partitions(Some(vec![]))
    );
    row!(
        "ConsumerGroupDescribe",
        30,
        0,
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![group("g")])
    );

    // Transactions.
    row!(
        "FindCoordinator (transaction)",
        53,
        3,
        FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1)
    );
    row!(
        "InitProducerId (transactional)",
        53,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(Some(txn("tx")))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    );
    row!(
        "InitProducerId (idempotent)",
        31,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    );
    row!(
        "AddPartitionsToTxn",
        53,
        3,
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn("tx"))
            .with_v3_and_below_producer_id(ProducerId(1))
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![0])
            ])
    );
    row!(
        "AddOffsetsToTxn",
        53,
        3,
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn("tx"))
            .with_producer_id(ProducerId(1))
            .with_producer_epoch(0)
            .with_group_id(group("g"))
    );
    row!(
        "TxnOffsetCommit",
        53,
        3,
        TxnOffsetCommitRequest::default()
            .with_transactional_id(txn("tx"))
            .with_group_id(group("g"))
            .with_producer_id(ProducerId(1))
            .with_producer_epoch(0)
            .with_generation_id(-1)
            .with_member_id(s(""))
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0)
                    ])
            ])
    );
    row!(
        "EndTxn",
        53,
        3,
        EndTxnRequest::default()
            .with_transactional_id(txn("tx"))
            .with_producer_id(ProducerId(1))
            .with_producer_epoch(0)
            .with_committed(false)
    );
    row!(
        "DescribeTransactions",
        53,
        0,
        DescribeTransactionsRequest::default().with_transactional_ids(vec![txn("tx")])
    );
    row!(
        "WriteTxnMarkers",
        31,
        1,
        WriteTxnMarkersRequest::default().with_markers(vec![
            write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(ProducerId(1))
                .with_producer_epoch(0)
                .with_transaction_result(false)
                .with_coordinator_epoch(0)
                .with_topics(vec![
                    write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0])
                ])
        ])
    );

    // The cluster.
    row!(
        "DescribeAcls",
        31,
        3,
        DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1)
    );
    row!(
        "CreateAcls",
        31,
        3,
        CreateAclsRequest::default().with_creations(vec![
            create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:nobody"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3)
        ])
    );
    row!(
        "DeleteAcls",
        31,
        3,
        DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(s("nothing")))
                .with_pattern_type_filter(3)
                .with_operation(1)
                .with_permission_type(1)
        ])
    );
    row!(
        "DescribeUserScramCredentials",
        31,
        0,
        DescribeUserScramCredentialsRequest::default().with_users(None)
    );
    row!(
        "AlterUserScramCredentials",
        31,
        0,
        AlterUserScramCredentialsRequest::default().with_deletions(vec![
            alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                .with_name(s("nobody"))
                .with_mechanism(2)
        ])
    );
    row!(
        "DescribeClientQuotas",
        31,
        1,
        DescribeClientQuotasRequest::default()
            .with_components(vec![])
            .with_strict(false)
    );
    row!(
        "AlterClientQuotas",
        31,
        1,
        AlterClientQuotasRequest::default()
            .with_entries(vec![alter_client_quotas_request::EntryData::default()
                .with_entity(vec![alter_client_quotas_request::EntityData::default()
                    .with_entity_type(s("user"))
                    .with_entity_name(Some(s("nobody")))])
                .with_ops(vec![alter_client_quotas_request::OpData::default()
                    .with_key(s("producer_byte_rate"))
                    .with_value(1024.0)])])
            .with_validate_only(true)
    );
    row!(
        "ElectLeaders",
        31,
        2,
        ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(vec![elect_leaders_request::TopicPartitions::default(
            )
            .with_topic(topic("t"))
            .with_partitions(vec![0])]))
            .with_timeout_ms(10_000)
    );
    row!(
        "AlterPartitionReassignments",
        31,
        0,
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(None)
                    ])
            ])
    );
    row!(
        "ListPartitionReassignments",
        31,
        0,
        ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(None)
    );
    row!(
        "DescribeLogDirs",
        31,
        4,
        DescribeLogDirsRequest::default().with_topics(None)
    );
    row!(
        "UpdateFeatures",
        31,
        1,
        UpdateFeaturesRequest::default()
            .with_timeout_ms(10_000)
            .with_validate_only(true)
            .with_feature_updates(vec![update_features_request::FeatureUpdateKey::default()
                .with_feature(s("transaction.version"))
                .with_max_version_level(1)
                .with_upgrade_type(1)])
    );

    // Destructive ones last: admin's delete really deletes.
    row!(
        "DeleteGroups",
        30,
        2,
        DeleteGroupsRequest::default().with_groups_names(vec![group("g-del")])
    );
    row!(
        "DeleteTopics",
        29,
        6,
        DeleteTopicsRequest::default()
            .with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(topic("t-del")))
            ])
            .with_timeout_ms(10_000)
    );

    // Listings are filtered to what the principal may describe, not refused.
    let mut filtered = Vec::new();
    let all = MetadataRequest::default().with_topics(None);
    let (m, a) = (
        mallory.send_at(&all, 12).await.unwrap(),
        admin.send_at(&all, 12).await.unwrap(),
    );
    if !m.topics.is_empty() || a.topics.is_empty() {
        filtered.push(format!(
            "Metadata (all topics): mallory sees {:?}, admin {}",
            m.topics
                .iter()
                .map(|t| (t.name.clone(), t.error_code))
                .collect::<Vec<_>>(),
            a.topics.len()
        ));
    }
    let lg = ListGroupsRequest::default();
    let (m, a) = (
        mallory.send_at(&lg, 4).await.unwrap(),
        admin.send_at(&lg, 4).await.unwrap(),
    );
    if !m.groups.is_empty() || a.groups.is_empty() {
        filtered.push(format!(
            "ListGroups: mallory sees {}, admin {}",
            m.groups.len(),
            a.groups.len()
        ));
    }
    let lt = ListTransactionsRequest::default();
    if let Ok(m) = mallory.send_at(&lt, 0).await {
        if !m.transaction_states.is_empty() {
            filtered.push(format!(
                "ListTransactions: mallory sees {}",
                m.transaction_states.len()
            ));
        }
    }
    (rows, skipped, filtered)
}

fn commit(g: &str, generation: i32, member: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group(g))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ]),
        ])
}
