//! WriteTxnMarkers (v1): a transaction coordinator's commit or abort markers for the partitions
//! this broker leads (Kafka 4 dropped v0). Each marker goes to its partition's log as a
//! control batch of the producer with the coordinator's epoch, appended as the leader and
//! answered once every in-sync replica has it
//! ([`crate::replica_manager::txn::write_marker`]). Per partition: UNKNOWN_TOPIC_OR_PARTITION
//! where there is no replica here, NOT_LEADER_OR_FOLLOWER where this broker does not lead,
//! TRANSACTION_COORDINATOR_FENCED for a marker older than the producer's last,
//! NOT_ENOUGH_REPLICAS / REQUEST_TIMED_OUT as for an acks=all produce. A marker written to a
//! `__consumer_offsets` partition also completes the offsets the producer committed in the
//! transaction (Kafka's `onTransactionCompleted`): they become visible, or are dropped.
//!
//! The answer is deferred, so the connection goes on with its next requests meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_protocol::control::EndTxnMarker;
use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{Ctx, Outcome};
use crate::authz;
use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;
use crate::replica_manager::txn::write_marker;
use fjord_security::acl::AclOperation;

/// How long a marker waits for the ISR (below the coordinator's request timeout, so it gets
/// an answer rather than a broken request).
const MARKER_TIMEOUT: Duration = Duration::from_secs(20);

pub fn handle(b: &Arc<Broker>, ctx: &Ctx, r: WriteTxnMarkersRequest) -> Outcome {
    let deadline = Instant::now() + MARKER_TIMEOUT;
    // Only brokers write markers: CLUSTER_ACTION on the cluster, else every partition fails.
    let denied = !authz::cluster(b, ctx, AclOperation::ClusterAction);
    // Every append is queued now, in request order; the answers are awaited after.
    let mut markers = Vec::with_capacity(r.markers.len());
    for m in r.markers {
        let marker = EndTxnMarker {
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let topic = b.topic(&t.name);
            let mut parts = Vec::with_capacity(t.partition_indexes.len());
            for index in t.partition_indexes {
                let p = topic.as_ref().and_then(|topic| {
                    let p = usize::try_from(index)
                        .ok()
                        .and_then(|i| topic.partitions.get(i))?;
                    Some((topic, p))
                });
                let pending = match p {
                    _ if denied => Err(ErrorCode::ClusterAuthorizationFailed),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                    Some((_, p)) if !p.has_log() => Err(ErrorCode::UnknownTopicOrPartition),
                    Some((topic, p)) => Ok(Box::pin(write_marker(
                        b,
                        topic,
                        p,
                        m.producer_id.0,
                        m.producer_epoch,
                        marker,
                        deadline,
                    ))),
                };
                parts.push((index, pending));
            }
            topics.push((t.name, parts));
        }
        markers.push((m.producer_id, marker, topics));
    }
    let b = b.clone();
    Outcome::Deferred(Box::pin(async move {
        let mut results = Vec::with_capacity(markers.len());
        for (producer_id, marker, topics) in markers {
            let mut topic_results = Vec::with_capacity(topics.len());
            for (name, parts) in topics {
                let mut partitions = Vec::with_capacity(parts.len());
                for (index, pending) in parts {
                    let code = match pending {
                        Err(code) => code,
                        Ok(append) => match append.await {
                            Ok(_) => ErrorCode::None,
                            Err(e) => e.code,
                        },
                    };
                    if code == ErrorCode::None && name.0.as_str() == OFFSETS_TOPIC {
                        b.groups.complete_txn(index, producer_id.0, marker.commit);
                    }
                    if code != ErrorCode::None {
                        tracing::debug!(topic = %name.0, partition = index,
                            producer_id = producer_id.0, error = ?code,
                            "transaction marker not written");
                    }
                    partitions.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(index)
                            .with_error_code(code.code()),
                    );
                }
                topic_results.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(name)
                        .with_partitions(partitions),
                );
            }
            results.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(producer_id)
                    .with_topics(topic_results),
            );
        }
        Outcome::Respond(Box::new(
            WriteTxnMarkersResponse::default()
                .with_markers(results)
                .into(),
        ))
    }))
}
