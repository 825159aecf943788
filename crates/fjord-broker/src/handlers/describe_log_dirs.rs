//! DescribeLogDirs (v1-4): this broker's one log directory (`log.dirs`) with the size of each
//! hosted partition's log, its offset lag (how far the log end is below the high watermark: a
//! follower still catching up) and, from v4, the volume's total and usable bytes. Kafka's
//! `kafka-reassign-partitions` reads it to print where replicas live; `kafka-log-dirs` too.
//! Sizes come from memory; the walk over the partitions and `statvfs` run on a blocking thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::AclOperation;

/// Kafka's UNKNOWN_VOLUME_BYTES.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub async fn handle(
    b: &Arc<Broker>,
    ctx: &Ctx,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !authz::cluster(b, ctx, AclOperation::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let b = b.clone();
    tokio::task::spawn_blocking(move || describe(&b, &req))
        .await
        .unwrap_or_default()
}

fn describe(b: &Broker, req: &DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // None: every hosted partition; else the partitions asked for, per topic name.
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect()
    });
    let mut topics = Vec::new();
    for t in b.topics() {
        let asked = match &wanted {
            None => None,
            Some(w) => match w.get(&*t.name) {
                Some(parts) => Some(parts),
                None => continue,
            },
        };
        let partitions: Vec<DescribeLogDirsPartition> = t
            .partitions
            .iter()
            .filter(|p| asked.is_none_or(|a| a.contains(&p.index)))
            .filter_map(|p| {
                let (size, leo) = p.with_log(|l| (l.size_bytes(), l.log_end_offset()))?;
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(size as i64)
                        .with_offset_lag((p.high_watermark() - leo).max(0)),
                )
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(sb(t.name.to_string())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = &b.config.log_dir;
    let (total, usable) = match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let block = s.f_frsize as i64;
            (
                (s.f_blocks as i64).saturating_mul(block),
                (s.f_bavail as i64).saturating_mul(block),
            )
        }
        Err(_) => (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES),
    };
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(sb(path.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}
