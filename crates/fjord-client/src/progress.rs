//! Replica progress: how far each replica of a topic's partitions is behind its leader, asked
//! of every replica with Kafka's own requests — ListOffsets with the debugging replica id
//! (`replica_id = -2`, answered by followers too, with their log end offset) and, for a replica
//! missing committed records, one small Fetch from the leader at the replica's log end to read
//! the timestamp of the first record it lacks.

use std::collections::BTreeMap;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};

use fjord_protocol::clock::now_ms;

use crate::client::{partition_ctx, topic_name, Client, FetchOptions, OffsetSpec, TopicMetadata};
use crate::error::{error_name, Result};

/// Kafka's `ListOffsetsRequest.DEBUGGING_REPLICA_ID`.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// The LATEST offset spec on the wire.
const LATEST: i64 = -1;

/// One replica of one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaProgress {
    pub broker: i32,
    pub leader: bool,
    pub in_sync: bool,
    /// The replica's log end offset, when it answered.
    pub log_end_offset: Option<i64>,
    /// Records the replica lacks that the leader has (leader's log end − its log end).
    pub offset_lag: Option<i64>,
    /// How long ago the first committed record it lacks was written (record timestamp), 0 when
    /// it has every committed record; `None` when that could not be read.
    pub time_lag_ms: Option<i64>,
    /// Why the replica did not answer (unreachable broker, error code).
    pub error: Option<String>,
}

/// One partition: offsets, markers and its replicas' progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionProgress {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub log_start_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    /// The leader's log end offset.
    pub log_end_offset: Option<i64>,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// No leader: nobody can produce or consume.
    pub offline: bool,
    pub replica_progress: Vec<ReplicaProgress>,
}

impl Client {
    /// The progress of every replica of the partitions of `t` (as Metadata just gave it).
    /// Brokers that cannot be reached are reported per replica (`error`), not as a failure of
    /// the whole call.
    pub async fn replica_progress(&self, t: &TopicMetadata) -> Result<Vec<PartitionProgress>> {
        let topic = t.name.as_str();
        let led: Vec<i32> = t
            .partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| p.partition)
            .collect();
        // Consumers' view from the leaders: log start and high watermark.
        let (start, hw) = if led.is_empty() {
            Default::default()
        } else {
            (
                self.list_offsets(topic, &led, OffsetSpec::Earliest)
                    .await
                    .unwrap_or_default(),
                self.list_offsets(topic, &led, OffsetSpec::Latest)
                    .await
                    .unwrap_or_default(),
            )
        };
        // Every replica's own log end, one request per broker.
        let mut hosted: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &t.partitions {
            for &r in &p.replicas {
                hosted.entry(r).or_default().push(p.partition);
            }
        }
        let mut ends: BTreeMap<(i32, i32), std::result::Result<i64, String>> = BTreeMap::new();
        for (broker, partitions) in hosted {
            match self.log_ends_on(broker, topic, &partitions).await {
                Ok(answers) => {
                    for (p, r) in answers {
                        ends.insert((p, broker), r);
                    }
                }
                Err(e) => {
                    for p in partitions {
                        ends.insert((p, broker), Err(e.to_string()));
                    }
                }
            }
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let leader_end = ends
                .get(&(p.partition, p.leader))
                .and_then(|r| r.as_ref().ok().copied());
            let hw = hw.get(&p.partition).map(|o| o.offset);
            let mut replica_progress = Vec::with_capacity(p.replicas.len());
            for &r in &p.replicas {
                let end = ends.get(&(p.partition, r)).cloned();
                let log_end_offset = end.as_ref().and_then(|e| e.as_ref().ok().copied());
                // The first committed record it lacks, read only when it lacks one.
                let first_missing = match (log_end_offset, hw) {
                    (Some(e), Some(hw)) if e < hw => {
                        self.first_timestamp_at(topic, p.partition, e).await
                    }
                    _ => None,
                };
                let (offset_lag, time_lag_ms) =
                    lags(leader_end, hw, log_end_offset, first_missing, now);
                replica_progress.push(ReplicaProgress {
                    broker: r,
                    leader: r == p.leader,
                    in_sync: p.isr.contains(&r),
                    log_end_offset,
                    offset_lag,
                    time_lag_ms,
                    error: match end {
                        Some(Err(e)) => Some(e),
                        None => Some("no answer".to_string()),
                        Some(Ok(_)) => None,
                    },
                });
            }
            out.push(PartitionProgress {
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                log_start_offset: start.get(&p.partition).map(|o| o.offset),
                high_watermark: hw,
                log_end_offset: leader_end,
                under_replicated: p.isr.len() < p.replicas.len(),
                offline: p.leader < 0,
                replica_progress,
            });
        }
        Ok(out)
    }

    /// Each partition's log end offset on `broker` (ListOffsets LATEST, debugging replica id).
    async fn log_ends_on(
        &self,
        broker: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, std::result::Result<i64, String>)>> {
        let conn = self.broker_connection(broker).await?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(DEBUGGING_REPLICA_ID))
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(LATEST)
                        })
                        .collect(),
                )]);
        let response = conn.send(&request).await?;
        let mut out = Vec::new();
        for t in &response.topics {
            for p in &t.partitions {
                let r = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(format!("{} ({})", error_name(p.error_code), p.error_code))
                };
                out.push((p.partition_index, r));
            }
        }
        Ok(out)
    }

    /// The timestamp of the first record at or after `offset` (from the leader), if any.
    async fn first_timestamp_at(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let options = FetchOptions {
            max_bytes: 1,
            partition_max_bytes: 1,
            max_wait: std::time::Duration::ZERO,
            ..FetchOptions::default()
        };
        match self.fetch(topic, partition, offset, options).await {
            Ok(f) => f.records.first().map(|r| r.timestamp),
            Err(e) => {
                tracing::debug!(partition = %partition_ctx(topic, partition), error = %e,
                    "cannot read the first missing record's timestamp");
                None
            }
        }
    }
}

/// A replica's lag: in offsets behind the leader's log end, and in time since the first
/// committed record it lacks was written (0 when it has every committed record; unknown when
/// its log end, the high watermark or that record's timestamp is unknown).
fn lags(
    leader_end: Option<i64>,
    high_watermark: Option<i64>,
    replica_end: Option<i64>,
    first_missing_timestamp: Option<i64>,
    now_ms: i64,
) -> (Option<i64>, Option<i64>) {
    let offset_lag = leader_end.zip(replica_end).map(|(l, e)| (l - e).max(0));
    let time_lag = match (replica_end, high_watermark) {
        (Some(e), Some(hw)) if e >= hw => Some(0),
        (Some(_), Some(_)) => first_missing_timestamp.map(|ts| (now_ms - ts).max(0)),
        _ => None,
    };
    (offset_lag, time_lag)
}

#[cfg(test)]
mod tests {
    use super::lags;

    #[test]
    fn lag_in_offsets_and_time() {
        // Caught up.
        assert_eq!(
            lags(Some(10), Some(10), Some(10), None, 5_000),
            (Some(0), Some(0))
        );
        // Behind the leader only in records not yet committed: no committed record missing.
        assert_eq!(
            lags(Some(12), Some(10), Some(10), None, 5_000),
            (Some(2), Some(0))
        );
        // Missing committed records written at t=1000.
        assert_eq!(
            lags(Some(12), Some(10), Some(4), Some(1_000), 5_000),
            (Some(8), Some(4_000))
        );
        // A timestamp in the future (producer clock) is no negative lag.
        assert_eq!(
            lags(Some(12), Some(10), Some(4), Some(9_000), 5_000).1,
            Some(0)
        );
        // The replica did not answer.
        assert_eq!(lags(Some(12), Some(10), None, None, 5_000), (None, None));
        // The leader did not answer its log end.
        assert_eq!(lags(None, Some(10), Some(4), None, 5_000), (None, None));
    }
}
