//! OffsetCommit v2-9: validated by the coordinator, answered after the records are appended to
//! `__consumer_offsets` and, as Kafka appends commits with acks=all, replicated to the ISR of
//! the group's partition (the answer is deferred meanwhile, so the connection goes on with its
//! next requests; after [`crate::groups::REPLICATION_TIMEOUT`] it is COORDINATOR_NOT_AVAILABLE,
//! which clients retry).

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use std::sync::Arc;

use super::{Ctx, Outcome};
use crate::authz;
use crate::broker::Broker;
use crate::groups::Written;
use fjord_group::coordinator::{CommitPartition, CommitRequest};
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType};

/// Commit, then answer once the commit is on every in-sync replica of the group's partition.
///
/// READ on the group (else GROUP_AUTHORIZATION_FAILED everywhere) and on each topic (else
/// TOPIC_AUTHORIZATION_FAILED for its partitions).
pub fn handle_replicated(b: &Arc<Broker>, ctx: &Ctx, mut r: OffsetCommitRequest) -> Outcome {
    let (denied, code) = denied_topics(b, ctx, None, &r.group_id.0, &mut r.topics, |t| &t.name.0);
    let denied: Vec<OffsetCommitResponseTopic> = denied
        .into_iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
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
            OffsetCommitResponse::default()
        } else {
            handle(&b, version, r).await
        };
        resp.topics.extend(denied);
        Outcome::Respond(Box::new(resp.into()))
    }))
}

/// The authorization of a (transactional) offset commit: WRITE on the transactional id if
/// any, READ on the group, READ on each topic. Takes the refused topics out of `topics` and
/// returns them with their error.
pub(crate) fn denied_topics<T>(
    b: &Broker,
    ctx: &Ctx,
    transactional_id: Option<&str>,
    group: &str,
    topics: &mut Vec<T>,
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, ErrorCode) {
    let all = std::mem::take(topics);
    if let Some(id) = transactional_id {
        if !authz::transactional_id(b, ctx, AclOperation::Write, id) {
            return (all, ErrorCode::TransactionalIdAuthorizationFailed);
        }
    }
    if !authz::group(b, ctx, AclOperation::Read, group) {
        return (all, ErrorCode::GroupAuthorizationFailed);
    }
    let (allowed, denied) =
        authz::split(b, ctx, AclOperation::Read, ResourceType::Topic, all, name);
    *topics = allowed;
    (denied, ErrorCode::TopicAuthorizationFailed)
}

/// A commit request's partitions in request order: (topic index, partition, index among the
/// partitions for the coordinator — `None` for one that does not exist here).
pub(crate) type Slots = Vec<(usize, i32, Option<usize>)>;

/// Split a commit request's partitions (`(topic, [partition])` in request order) into those
/// for the coordinator and the unknown ones, answered UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) fn split_partitions<'a>(
    b: &Broker,
    topics: impl Iterator<Item = (&'a str, Vec<CommitPartition>)>,
) -> (Slots, Vec<CommitPartition>) {
    let mut slots: Slots = Vec::new();
    let mut partitions = Vec::new();
    for (ti, (name, parts)) in topics.enumerate() {
        let topic = b.topic(name);
        for p in parts {
            let exists = topic
                .as_ref()
                .is_some_and(|x| p.partition >= 0 && (p.partition as usize) < x.partitions.len());
            if exists {
                slots.push((ti, p.partition, Some(partitions.len())));
                partitions.push(p);
            } else {
                slots.push((ti, p.partition, None));
            }
        }
    }
    (slots, partitions)
}

/// Each slot's answer: the coordinator's error, or for an accepted commit the outcome of its
/// wait for the ISR (any failure: COORDINATOR_NOT_AVAILABLE, or the append's own error).
pub(crate) async fn answer(
    slots: Slots,
    errors: &[ErrorCode],
    written: &Written,
) -> Vec<(usize, i32, ErrorCode)> {
    let appended = match written.appended() {
        Ok(()) => written
            .replicated()
            .await
            .map_err(|_| ErrorCode::CoordinatorNotAvailable),
        Err(e) => Err(e),
    };
    slots
        .into_iter()
        .map(|(ti, partition, idx)| {
            let code = match idx {
                Some(i) => match (errors[i], appended) {
                    (ErrorCode::None, Err(e)) => e,
                    (e, _) => e,
                },
                None => ErrorCode::UnknownTopicOrPartition,
            };
            (ti, partition, code)
        })
        .collect()
}

async fn handle(b: &Broker, version: i16, r: OffsetCommitRequest) -> OffsetCommitResponse {
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
                    leader_epoch: if version >= 6 {
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
    let req = CommitRequest {
        group_id: r.group_id.0.to_string(),
        generation_id: r.generation_id_or_member_epoch,
        member_id: r.member_id.to_string(),
        group_instance_id: if version >= 7 {
            r.group_instance_id.as_ref().map(|s| s.to_string())
        } else {
            None
        },
        partitions,
    };
    // Kept for the lag windows (the request moves into the coordinator).
    let group_id = req.group_id.clone();
    let commits: Vec<(String, i32, i64)> = req
        .partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.offset))
        .collect();
    let n = req.partitions.len();
    let (errors, written) = if crate::groups::not_coordinator(b, &req.group_id) {
        (vec![ErrorCode::NotCoordinator; n], Written::default())
    } else {
        let ran = b
            .groups
            .run(b, &group_id, |c, _, now| c.commit_offsets(req, now))
            .await;
        ran.unwrap_or_else(|e| (vec![e; n], Written::default()))
    };
    let appended = written.appended();
    if appended.is_ok() {
        let accepted = commits
            .iter()
            .zip(&errors)
            .filter(|(_, e)| **e == ErrorCode::None)
            .map(|((t, p, o), _)| (t.as_str(), *p, *o));
        crate::group_lag::record_commits(b, &group_id, accepted);
    }
    // Accepted commits are answered once they are on every in-sync replica (any failure to
    // get there within the timeout: COORDINATOR_NOT_AVAILABLE).
    let mut topics: Vec<OffsetCommitResponseTopic> = r
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (ti, partition, code) in answer(slots, &errors, &written).await {
        topics[ti].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code.code()),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}
