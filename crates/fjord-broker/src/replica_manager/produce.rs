//! Produce to a partition led here, as Kafka's ReplicaManager does it: leadership and
//! `min.insync.replicas` checks, the append on the partition's disk I/O thread, the metrics of
//! what was written, and the acks=all wait for the ISR. The Produce handler only translates
//! between the wire and [`append_to_leader`].
//!
//! Order: [`append_to_leader`] queues the append when it is called (not when its future is
//! first polled), so the requests of a connection are written in the order they arrived even
//! though their responses are awaited later — and requests that queue up while a write runs
//! are written together ([`crate::partition::Partition::append_async`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use fjord_protocol::records::{AppendOrigin, RecordError};
use fjord_replication::AckStatus;
use fjord_storage::{AppendError, AppendInfo, TxnCheck};

use crate::broker::{Broker, Topic};
use crate::partition::{AppendRejection, Partition};

/// Why a produce to one partition failed: Kafka's code, a message, and (KIP-467) the records
/// that made a batch invalid.
#[derive(Debug)]
pub struct ProduceError {
    pub code: ErrorCode,
    pub message: String,
    pub record_errors: Vec<RecordError>,
}

impl ProduceError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ProduceError {
        ProduceError {
            code,
            message: message.into(),
            record_errors: Vec::new(),
        }
    }
}

/// Append `records` to partition `p` of `t` as its leader with `acks` (-1, 0 or 1), waiting
/// for the ISR until `deadline` for acks=all. Checks that need no disk run now; the append is
/// queued now; the future resolves with the offsets written (or the original ones for an
/// idempotent retry), after the ISR has them for acks=all.
pub fn append_to_leader(
    b: &Arc<Broker>,
    t: &Arc<Topic>,
    p: &Arc<Partition>,
    records: Bytes,
    acks: i16,
    deadline: Instant,
) -> impl Future<Output = Result<AppendInfo, ProduceError>> + Send + 'static {
    append_to_leader_as(
        b,
        t,
        p,
        records,
        acks,
        deadline,
        AppendOrigin::Client,
        TxnCheck::Verified(None),
    )
}

/// [`append_to_leader`] for a given origin (a transactional client's produce, the broker's
/// own transaction markers) and transaction check (the guard of a verification).
#[allow(clippy::too_many_arguments)]
pub fn append_to_leader_as(
    b: &Arc<Broker>,
    t: &Arc<Topic>,
    p: &Arc<Partition>,
    records: Bytes,
    acks: i16,
    deadline: Instant,
    origin: AppendOrigin,
    check: TxnCheck,
) -> impl Future<Output = Result<AppendInfo, ProduceError>> + Send + 'static {
    let now = now_ms();
    let min_isr = t.config.min_insync_replicas.max(1) as usize;
    let early = if !p.is_leader() {
        Some(ProduceError::new(
            ErrorCode::NotLeaderOrFollower,
            format!("broker {} does not lead this partition", b.node_id()),
        ))
    } else if acks == -1 && isr_size(p) < t.config.min_insync_replicas as i64 {
        Some(ProduceError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "The size of the current ISR {} is insufficient to satisfy the min.isr requirement of {}",
                isr_size(p),
                t.config.min_insync_replicas
            ),
        ))
    } else {
        None
    };
    let append = early
        .is_none()
        .then(|| p.append_async_checked(&b.io, records.clone(), origin, check, now));
    let (b, t, p) = (b.clone(), t.clone(), p.clone());
    async move {
        if let Some(e) = early {
            return Err(e);
        }
        let info = match append.expect("queued unless refused early").await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(topic = %t.name, partition = p.index, error = %e.message(), "produce rejected");
                return Err(ProduceError {
                    code: e.error_code(),
                    message: e.message(),
                    record_errors: record_errors(&e),
                });
            }
        };
        // The broker's own writes (transaction markers) are not client traffic.
        let client = origin != AppendOrigin::Coordinator;
        if client {
            p.activity.produced();
        }
        if client && !info.duplicate {
            let label = [&*t.name];
            b.metrics
                .bytes_in
                .with_label_values(&label)
                .inc_by(info.bytes as u64);
            b.metrics
                .messages_in
                .with_label_values(&label)
                .inc_by(info.record_count);
            b.accounting.topic_in(&t.name, info.bytes as u64);
            b.skew.on_produce(&p, &records, info.bytes as u64);
        }
        if acks == -1 {
            let status = p
                .wait_acks_all(info.last_offset + 1, min_isr, deadline)
                .await;
            ack_error(&b, status)?;
        }
        Ok(info)
    }
}

/// KIP-467: the records that made a batch invalid, for clients to fail only those.
fn record_errors(e: &AppendRejection) -> Vec<RecordError> {
    match e {
        AppendRejection::Storage(AppendError::Invalid(invalid)) => invalid.record_errors.clone(),
        _ => Vec::new(),
    }
}

/// The committed ISR's size, without copying the assignment.
fn isr_size(p: &Partition) -> i64 {
    p.with_replica(|r| r.assignment().isr.len() as i64)
}

/// The outcome of an acks=all wait.
fn ack_error(b: &Broker, status: AckStatus) -> Result<(), ProduceError> {
    let (code, message) = match status {
        AckStatus::Done => return Ok(()),
        AckStatus::Waiting => {
            b.metrics.acks_all_timeouts.inc();
            (
                ErrorCode::RequestTimedOut,
                "the in-sync replicas did not all receive the records within the request timeout",
            )
        }
        AckStatus::NotEnoughReplicasAfterAppend => (
            ErrorCode::NotEnoughReplicasAfterAppend,
            "the records were written, but the ISR shrank below min.insync.replicas",
        ),
        AckStatus::NotLeader => (
            ErrorCode::NotLeaderOrFollower,
            "leadership moved before the records were replicated",
        ),
    };
    Err(ProduceError::new(code, message))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fjord_replication::Assignment;
    use fjord_storage::{Log, LogConfig};
    use uuid::Uuid;

    use super::*;

    fn led_by(leader: i32, leader_epoch: i32) -> Assignment {
        Assignment {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
        }
    }

    /// An acks=all produce waiting for the ISR is answered NOT_LEADER_OR_FOLLOWER as soon as
    /// leadership moves (Kafka's DelayedProduce), not left to its timeout; with no change it
    /// ends at its deadline (REQUEST_TIMED_OUT), never later.
    #[tokio::test]
    async fn acks_all_wait_ends_when_leadership_moves_or_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(Partition::new("t".into(), Uuid::nil(), 0, 1));
        p.install_log(Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap());
        p.set_state(led_by(1, 0), 0);
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let status = p.wait_acks_all(1, 1, deadline).await;
                (status, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing is replicated yet");
        let moved = Instant::now();
        p.set_state(led_by(2, 1), 0);
        let (status, at) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("answered when leadership moved")
            .unwrap();
        assert_eq!(status, AckStatus::NotLeader);
        assert!(at.duration_since(moved) < Duration::from_secs(1));

        // Leading again, nothing replicated: the deadline answers.
        p.set_state(led_by(1, 2), 0);
        let t0 = Instant::now();
        let status = p.wait_acks_all(1, 1, t0 + Duration::from_millis(200)).await;
        assert_eq!(status, AckStatus::Waiting);
        assert!(t0.elapsed() < Duration::from_secs(2));

        // The partition is deleted while a produce waits: answered at once.
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_acks_all(1, 1, Instant::now() + Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(p.take_log());
        let status = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("answered when the log went away")
            .unwrap();
        assert_eq!(status, AckStatus::NotLeader);
    }
}
