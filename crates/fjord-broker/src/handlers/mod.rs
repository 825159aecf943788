//! One thin handler per Kafka API: look up, call the owning crate, answer.
//!
//! Each handler states the versions it serves in `fjord_protocol::versions::SUPPORTED`; the
//! decoder never hands a handler a version outside that table.

mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod fetch;
mod incremental_alter_configs;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use fjord_protocol::codec::Request;

/// What the connection does after a request.
pub enum Outcome {
    Respond(ResponseKind),
    /// acks=0 produce: no response.
    NoResponse,
    /// Close the connection (e.g. an acks=0 produce failed, as Kafka does so the producer notices).
    Close(String),
}

/// Per-request facts handlers may need.
pub struct Ctx {
    pub version: i16,
}

pub async fn handle(broker: &Arc<Broker>, req: Request) -> Outcome {
    let ctx = Ctx {
        version: req.header.request_api_version,
    };
    let b = broker;
    match req.body {
        RequestKind::ApiVersions(r) => respond(api_versions::handle(&ctx, r)),
        RequestKind::Metadata(r) => respond(metadata::handle(b, &ctx, r)),
        RequestKind::Produce(r) => produce::handle(b, &ctx, r),
        RequestKind::Fetch(r) => respond(fetch::handle(b, &ctx, r).await),
        RequestKind::ListOffsets(r) => respond(list_offsets::handle(b, &ctx, r)),
        RequestKind::CreateTopics(r) => respond(create_topics::handle(b, &ctx, r)),
        RequestKind::DeleteTopics(r) => respond(delete_topics::handle(b, &ctx, r)),
        RequestKind::CreatePartitions(r) => respond(create_partitions::handle(b, &ctx, r)),
        RequestKind::DescribeConfigs(r) => respond(describe_configs::handle(b, &ctx, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            respond(incremental_alter_configs::handle(b, &ctx, r))
        }
        RequestKind::DeleteRecords(r) => respond(delete_records::handle(b, &ctx, r)),
        RequestKind::DescribeCluster(r) => respond(describe_cluster::handle(b, &ctx, r)),
        RequestKind::InitProducerId(r) => respond(init_producer_id::handle(b, &ctx, r)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            respond(offset_for_leader_epoch::handle(b, &ctx, r))
        }
        other => Outcome::Close(format!(
            "no handler for {:?}",
            std::mem::discriminant(&other)
        )),
    }
}

fn respond(body: impl Into<ResponseKind>) -> Outcome {
    Outcome::Respond(body.into())
}

/// A protocol string from a Rust string.
pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
