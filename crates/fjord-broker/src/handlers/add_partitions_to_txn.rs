//! AddPartitionsToTxn (v0-5). v0-3 come from producers: one transaction whose partitions
//! join it. v4+ come from brokers and batch transactions; with `verify_only` a partition leader
//! asks whether a transactional produce's partitions are in the producer's ongoing transaction
//! (KIP-890 part 1), answered from memory without a write. As Kafka: a partition of an unknown
//! topic fails its whole transaction (UNKNOWN_TOPIC_OR_PARTITION for it, OPERATION_NOT_ATTEMPTED
//! for the others), and every partition of a transaction gets the transaction's error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};

use super::{producer_fenced_for, sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_security::acl::{AclOperation, ResourceType};

type Results = BTreeMap<(String, i32), ErrorCode>;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let resp = AddPartitionsToTxnResponse::default();
    if ctx.version < 4 {
        let results = one(
            b,
            ctx,
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return resp.with_results_by_topic_v3_and_below(by_topic(results));
    }
    // v4+ comes from brokers (KIP-890 verification): CLUSTER_ACTION on the cluster.
    if !authz::cluster(b, ctx, AclOperation::ClusterAction) {
        return resp.with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = one(
            b,
            ctx,
            &t.transactional_id,
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(sb(t.transactional_id.to_string())))
                .with_topic_results(by_topic(results)),
        );
    }
    resp.with_results_by_transaction(out)
}

/// One transaction's partitions and their error codes.
async fn one(
    b: &Arc<Broker>,
    ctx: &Ctx,
    id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Results {
    let partitions: BTreeSet<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    // A client adding partitions: WRITE on the transactional id, then on each topic (the
    // partitions of the other topics are not attempted).
    if !verify_only {
        if !authz::transactional_id(b, ctx, AclOperation::Write, id) {
            return partitions
                .iter()
                .map(|tp| (tp.clone(), ErrorCode::TransactionalIdAuthorizationFailed))
                .collect();
        }
        let ok = authz::filter(
            b,
            ctx,
            AclOperation::Write,
            ResourceType::Topic,
            partitions.iter().map(|(t, _)| t.as_str()),
        );
        if authz::enabled(b) && partitions.iter().any(|(t, _)| !ok.contains(t)) {
            return partitions
                .iter()
                .map(|tp| {
                    let e = if ok.contains(&tp.0) {
                        ErrorCode::OperationNotAttempted
                    } else {
                        ErrorCode::TopicAuthorizationFailed
                    };
                    (tp.clone(), e)
                })
                .collect();
        }
    }
    let unknown: BTreeSet<&(String, i32)> = partitions
        .iter()
        .filter(|(t, p)| {
            b.topic(t)
                .is_none_or(|t| usize::try_from(*p).map_or(true, |p| p >= t.partitions.len()))
        })
        .collect();
    if !unknown.is_empty() {
        return partitions
            .iter()
            .map(|tp| {
                let e = if unknown.contains(tp) {
                    ErrorCode::UnknownTopicOrPartition
                } else {
                    ErrorCode::OperationNotAttempted
                };
                (tp.clone(), e)
            })
            .collect();
    }
    let all = |e: ErrorCode| partitions.iter().map(|tp| (tp.clone(), e)).collect();
    if verify_only {
        return match b.txns.verify(b, id, producer_id, epoch, &partitions) {
            Ok(results) => results.into_iter().collect(),
            Err(e) => all(e),
        };
    }
    match b
        .txns
        .add_partitions(b, id, producer_id, epoch, &partitions)
        .await
    {
        Ok(()) => all(ErrorCode::None),
        Err(e) => all(producer_fenced_for(e, ctx.version >= 2)),
    }
}

fn by_topic(results: Results) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut topics: BTreeMap<String, Vec<AddPartitionsToTxnPartitionResult>> = BTreeMap::new();
    for ((t, p), e) in results {
        topics.entry(t).or_default().push(
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(e.code()),
        );
    }
    topics
        .into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(sb(t)))
                .with_results_by_partition(ps)
        })
        .collect()
}
