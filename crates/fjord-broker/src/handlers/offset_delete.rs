//! OffsetDelete v0: delete a group's offsets for topics it no longer subscribes to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};

use super::{sb, Ctx};
use crate::authz;
use crate::broker::Broker;
use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType};

pub async fn handle(b: &Broker, ctx: &Ctx, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = r.group_id.0.to_string();
    // DELETE on the group; READ on each topic (the others answer TOPIC_AUTHORIZATION_FAILED).
    if !authz::group(b, ctx, AclOperation::Delete, &group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let (r, denied) = {
        let mut r = r;
        let (allowed, denied) = authz::split(
            b,
            ctx,
            AclOperation::Read,
            ResourceType::Topic,
            std::mem::take(&mut r.topics),
            |t| &t.name.0,
        );
        r.topics = allowed;
        (r, denied)
    };
    let mut resp = offset_delete(b, &group, r).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        OffsetDeleteResponseTopic::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    })
                    .collect(),
            )
    }));
    resp
}

async fn offset_delete(b: &Broker, group: &str, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = group.to_string();
    let wanted: Vec<(String, Vec<i32>)> = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let ran = b
        .groups
        .run(b, &group, |c, _, _| {
            let (top, rows, fx) = c.delete_offsets(&group, &wanted);
            ((top, rows), fx)
        })
        .await;
    let ((top, rows), appended) = match ran {
        Ok(ran) => ran,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let top = match appended.replicated().await {
        Err(e) if top.code() == 0 => e,
        _ => top,
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
    for (t, p, code) in rows {
        let part = OffsetDeleteResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(code.code());
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(sb(t)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetDeleteResponse::default()
        .with_error_code(top.code())
        .with_topics(topics)
}
