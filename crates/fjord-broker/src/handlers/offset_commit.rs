//! OffsetCommit v2-9: validated by the coordinator, answered after the records are appended to
//! `__consumer_offsets` and, as Kafka appends commits with acks=all, replicated to the ISR of
//! the group's partition (the answer is deferred meanwhile; after
//! [`COMMIT_REPLICATION_TIMEOUT`] it is COORDINATOR_NOT_AVAILABLE, which clients retry).

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_replication::AckStatus;

use super::{Ctx, Outcome};
use crate::broker::Broker;
use fjord_group::coordinator::{CommitPartition, CommitRequest};
use fjord_protocol::error::ErrorCode;

/// How long a commit waits for the ISR of its `__consumer_offsets` partition.
pub const COMMIT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Commit, then answer once the commit is on every in-sync replica of the group's partition.
pub fn handle_replicated(b: &Arc<Broker>, ctx: &Ctx, r: OffsetCommitRequest) -> Outcome {
    let partition = b.topic(crate::groups::OFFSETS_TOPIC).and_then(|t| {
        let i = fjord_group::offsets_partition(&r.group_id.0, t.partitions.len() as i32);
        t.partitions.get(i as usize).cloned()
    });
    let resp = handle(b, ctx, r);
    let respond = |resp: OffsetCommitResponse| Outcome::Respond(Box::new(resp.into()));
    let Some(p) = partition.filter(|p| p.is_leader()) else {
        return respond(resp);
    };
    let Some(required) = p.log_end_offset() else {
        return respond(resp);
    };
    if p.acks_all_status(required, 1) != AckStatus::Waiting {
        return respond(resp);
    }
    Outcome::Deferred(Box::pin(async move {
        let deadline = Instant::now() + COMMIT_REPLICATION_TIMEOUT;
        let mut resp = resp;
        if p.wait_acks_all(required, 1, deadline).await != AckStatus::Done {
            for t in &mut resp.topics {
                for q in &mut t.partitions {
                    if q.error_code == 0 {
                        q.error_code = ErrorCode::CoordinatorNotAvailable.code();
                    }
                }
            }
        }
        respond(resp)
    }))
}

pub fn handle(b: &Broker, ctx: &Ctx, r: OffsetCommitRequest) -> OffsetCommitResponse {
    // Unknown partitions are answered here; the rest go to the coordinator, in order.
    let mut slots: Vec<(usize, i32, Option<usize>, ErrorCode)> = Vec::new();
    let mut partitions = Vec::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let topic = b.topic(&t.name.0);
        for p in &t.partitions {
            let exists = topic.as_ref().is_some_and(|x| {
                p.partition_index >= 0 && (p.partition_index as usize) < x.partitions.len()
            });
            if exists {
                slots.push((
                    ti,
                    p.partition_index,
                    Some(partitions.len()),
                    ErrorCode::None,
                ));
                partitions.push(CommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if ctx.version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                });
            } else {
                slots.push((
                    ti,
                    p.partition_index,
                    None,
                    ErrorCode::UnknownTopicOrPartition,
                ));
            }
        }
    }
    let req = CommitRequest {
        group_id: r.group_id.0.to_string(),
        generation_id: r.generation_id_or_member_epoch,
        member_id: r.member_id.to_string(),
        group_instance_id: if ctx.version >= 7 {
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
    let (errors, appended) = if crate::groups::not_coordinator(b, &req.group_id) {
        (
            vec![ErrorCode::NotCoordinator; req.partitions.len()],
            Ok(()),
        )
    } else {
        let (errors, written) = b.groups.run(b, |c, _, now| c.commit_offsets(req, now));
        // The wait for the ISR is handle_replicated's (for the whole partition's log end).
        (errors, written.appended())
    };
    if appended.is_ok() {
        let accepted = commits
            .iter()
            .zip(&errors)
            .filter(|(_, e)| **e == ErrorCode::None)
            .map(|((t, p, o), _)| (t.as_str(), *p, *o));
        crate::group_lag::record_commits(b, &group_id, accepted);
    }
    let mut topics: Vec<OffsetCommitResponseTopic> = r
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (ti, partition, idx, code) in slots {
        let code = match idx {
            Some(i) => match (errors[i], appended) {
                (ErrorCode::None, Err(e)) => e,
                (e, _) => e,
            },
            None => code,
        };
        topics[ti].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code.code()),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}
