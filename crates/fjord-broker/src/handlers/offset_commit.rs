//! OffsetCommit v2-9: validated by the coordinator, answered after the records are appended to
//! `__consumer_offsets`.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::Ctx;
use crate::broker::Broker;
use fjord_group::coordinator::{CommitPartition, CommitRequest};
use fjord_protocol::error::ErrorCode;

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
    let (errors, appended) = if crate::groups::not_coordinator(b, &req.group_id) {
        (
            vec![ErrorCode::NotCoordinator; req.partitions.len()],
            Ok(()),
        )
    } else {
        b.groups.run(b, |c, _, now| c.commit_offsets(req, now))
    };
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
