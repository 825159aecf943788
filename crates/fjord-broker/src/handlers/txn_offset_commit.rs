//! TxnOffsetCommit (v0-4): offsets a transactional producer commits for a group, sent to the
//! group's coordinator after AddOffsetsToTxn. The coordinator appends them to
//! `__consumer_offsets` in a transactional batch of the producer and answers once the ISR has
//! them; they stay with the producer's transaction (OffsetFetch does not show them; with
//! `require_stable` it answers UNSTABLE_OFFSET_COMMIT) until the transaction's marker reaches
//! that partition (WriteTxnMarkers): a commit makes them the group's offsets, an abort drops
//! them. A fenced producer's commit is refused by the log with INVALID_PRODUCER_EPOCH.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::{answer, denied_topics, split_partitions};
use super::{Ctx, Outcome};
use crate::broker::Broker;
use crate::groups::Written;
use fjord_group::coordinator::{CommitPartition, TxnCommitRequest};
use fjord_protocol::error::ErrorCode;

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, mut r: TxnOffsetCommitRequest) -> Outcome {
    let (denied, code) = denied_topics(
        b,
        ctx,
        Some(&r.transactional_id.0),
        &r.group_id.0,
        &mut r.topics,
        |t| &t.name.0,
    );
    let denied: Vec<TxnOffsetCommitResponseTopic> = denied
        .into_iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    let b = b.clone();
    let version = ctx.version;
    Outcome::Deferred(Box::pin(async move {
        let mut resp = if r.topics.is_empty() && !denied.is_empty() {
            TxnOffsetCommitResponse::default()
        } else {
            handle_async(&b, version, r).await
        };
        resp.topics.extend(denied);
        Outcome::Respond(Box::new(resp.into()))
    }))
}

async fn handle_async(
    b: &Broker,
    version: i16,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    // Unknown partitions are answered here; the rest go to the coordinator, in order.
    let (slots, partitions) = split_partitions(
        b,
        r.topics.iter().map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| CommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                })
                .collect();
            (t.name.0.as_str(), parts)
        }),
    );
    let v3 = version >= 3;
    let req = TxnCommitRequest {
        transactional_id: r.transactional_id.0.to_string(),
        group_id: r.group_id.0.to_string(),
        producer_id: r.producer_id.0,
        producer_epoch: r.producer_epoch,
        generation_id: if v3 { r.generation_id } else { -1 },
        member_id: if v3 {
            r.member_id.to_string()
        } else {
            String::new()
        },
        group_instance_id: if v3 {
            r.group_instance_id.as_ref().map(|s| s.to_string())
        } else {
            None
        },
        partitions,
    };
    let group_id = req.group_id.clone();
    let n = req.partitions.len();
    let (errors, written) = if crate::groups::not_coordinator(b, &group_id) {
        (vec![ErrorCode::NotCoordinator; n], Written::default())
    } else {
        let ran = b
            .groups
            .run(b, &group_id, |c, _, now| c.txn_commit_offsets(req, now))
            .await;
        ran.unwrap_or_else(|e| (vec![e; n], Written::default()))
    };
    // Accepted commits are answered once they are on every in-sync replica.
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = r
        .topics
        .iter()
        .map(|t| TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (ti, partition, code) in answer(slots, &errors, &written).await {
        topics[ti].partitions.push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code.code()),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}
