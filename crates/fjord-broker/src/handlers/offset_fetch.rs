//! OffsetFetch v1-9: one group (v1-7) or several (v8+); all partitions when topics is null.
//! With `require_stable` (v7+, KIP-447) a partition whose offset a transaction has committed
//! but not yet ended answers UNSTABLE_OFFSET_COMMIT (the consumer retries until the marker);
//! without it the last committed offset is shown, as in Kafka.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_group::coordinator::CommittedOffset;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType};

/// One partition's answer: its committed offset if any, or UNSTABLE_OFFSET_COMMIT.
type Row = Result<Option<CommittedOffset>, ErrorCode>;
type Fetched = Vec<(String, i32, Row)>;
/// Committed offsets of one topic: (partition, offset if any).
type TopicRows = (String, Vec<(i32, Row)>);

/// The group's committed offsets, or why this broker cannot answer for the group
/// (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, GROUP_AUTHORIZATION_FAILED without
/// DESCRIBE on the group). Topics without DESCRIBE answer TOPIC_AUTHORIZATION_FAILED when
/// asked for, and are left out of an all-topics answer, as in Kafka.
fn fetch(
    b: &Broker,
    ctx: &Ctx,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Fetched, ErrorCode> {
    if !authz::group(b, ctx, AclOperation::Describe, group) {
        return Err(ErrorCode::GroupAuthorizationFailed);
    }
    let explicit = topics.is_some();
    let rows = fetch_rows(b, group, topics, require_stable)?;
    if !authz::enabled(b) {
        return Ok(rows);
    }
    let ok = authz::filter(
        b,
        ctx,
        AclOperation::Describe,
        ResourceType::Topic,
        rows.iter().map(|(t, _, _)| t.as_str()),
    );
    Ok(rows
        .into_iter()
        .filter_map(|(t, p, row)| match ok.contains(&t) {
            true => Some((t, p, row)),
            false if explicit => Some((t, p, Err(ErrorCode::TopicAuthorizationFailed))),
            false => None,
        })
        .collect())
}

fn fetch_rows(
    b: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Fetched, ErrorCode> {
    b.groups.read(b, group, |c, _| {
        let g = c.group(group);
        c.fetch_offsets(group, topics.as_deref())
            .into_iter()
            .map(|(t, p, o)| {
                let unstable = require_stable && g.is_some_and(|g| g.has_pending_txn_offset(&t, p));
                let row = if unstable {
                    Err(ErrorCode::UnstableOffsetCommit)
                } else {
                    Ok(o)
                };
                (t, p, row)
            })
            .collect()
    })
}

/// Group rows by topic, keeping first-seen order.
fn by_topic(rows: Fetched) -> Vec<TopicRows> {
    let mut out: Vec<TopicRows> = Vec::new();
    for (t, p, o) in rows {
        match out.iter_mut().find(|(n, _)| *n == t) {
            Some((_, v)) => v.push((p, o)),
            None => out.push((t, vec![(p, o)])),
        }
    }
    out
}

fn fields(o: &Row) -> (i64, i32, String, ErrorCode) {
    match o {
        Ok(Some(o)) => (
            o.offset,
            o.leader_epoch,
            o.metadata.clone(),
            ErrorCode::None,
        ),
        Ok(None) => (-1, -1, String::new(), ErrorCode::None),
        Err(e) => (-1, -1, String::new(), *e),
    }
}

pub fn handle(b: &Broker, ctx: &Ctx, r: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = r
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let (rows, code) = match fetch(b, ctx, &g.group_id.0, topics, r.require_stable) {
                    Ok(rows) => (rows, ErrorCode::None),
                    Err(e) => (Vec::new(), e),
                };
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code.code())
                    .with_topics(
                        by_topic(rows)
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(sb(t)))
                                    .with_partitions(
                                        ps.iter()
                                            .map(|(p, o)| {
                                                let (off, epoch, md, e) = fields(o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(*p)
                                                    .with_committed_offset(off)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(sb(md)))
                                                    .with_error_code(e.code())
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let require_stable = ctx.version >= 7 && r.require_stable;
    let rows = match fetch(b, ctx, &r.group_id.0, topics, require_stable) {
        Ok(rows) => rows,
        // v2+ carry a top-level error; v1 only per partition.
        Err(e) if ctx.version >= 2 => {
            return OffsetFetchResponse::default().with_error_code(e.code())
        }
        Err(e) => return partition_errors(&r, e),
    };
    let topics = by_topic(rows)
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(sb(t)))
                .with_partitions(
                    ps.iter()
                        .map(|(p, o)| {
                            let (off, epoch, md, e) = fields(o);
                            let part = OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(off)
                                .with_metadata(Some(sb(md)))
                                .with_error_code(e.code());
                            if ctx.version >= 5 {
                                part.with_committed_leader_epoch(epoch)
                            } else {
                                part
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// A v1 answer for a group this broker cannot answer for: the error on every requested
/// partition.
fn partition_errors(r: &OffsetFetchRequest, e: ErrorCode) -> OffsetFetchResponse {
    let topics = r
        .topics
        .iter()
        .flatten()
        .map(|t| {
            OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partition_indexes
                        .iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_error_code(e.code())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
