//! The broker's side of ISR management and replication upkeep, around the pure
//! `fjord_replication::PartitionReplica` of each partition:
//!
//! - [`propose_isr`]: send an ISR change the state machine proposed (a follower caught up, or
//!   lagged for `replica.lag.time.max.ms`) to the controller as AlterPartition, with the
//!   partition epoch it was computed from. The change reaches the partition only through the
//!   metadata log (`Broker::publish`), like every other metadata change; a refusal drops the
//!   proposal and backs off.
//! - [`upkeep_loop`]: periodically looks for lagging followers on partitions led here, keeps
//!   the under-replicated / under-min-ISR / offline gauges current, and writes high-watermark
//!   checkpoints.
//! - [`check_follower_broker_epoch`]: KIP-903 fencing of fetches from an older incarnation of
//!   a follower's broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_metadata::{AlterPartitionItem, ControllerReply, ControllerRequest, NO_LEADER};
use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::partition::Partition;

/// Ask the controller to make `isr` the partition's ISR (the leader's own AlterPartition).
/// Proposals are queued and sent in batches ([`IsrProposals`]): a broker that catches up on
/// thousands of partitions sends a few requests, not thousands.
pub fn propose_isr(b: &Arc<Broker>, p: &Arc<Partition>, isr: Vec<i32>) {
    let state = p.state();
    let item = AlterPartitionItem {
        topic_id: p.topic_id,
        partition: p.index as u32,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        new_isr: isr,
    };
    let start = {
        let mut q = b.isr_proposals.queue.lock();
        q.items.push((p.clone(), state.isr.len(), item));
        !std::mem::replace(&mut q.sending, true)
    };
    if start {
        tokio::spawn(send_proposals(b.clone()));
    }
}

/// ISR proposals waiting to be sent to the controller.
#[derive(Default)]
pub struct IsrProposals {
    queue: Mutex<ProposalQueue>,
}

#[derive(Default)]
struct ProposalQueue {
    /// (partition, ISR size before, the change).
    items: Vec<(Arc<Partition>, usize, AlterPartitionItem)>,
    /// A sender task is running; it drains the queue until it is empty.
    sending: bool,
}

/// At most this many partitions per AlterPartitions request.
const MAX_BATCH: usize = 2_000;

async fn send_proposals(b: Arc<Broker>) {
    loop {
        let batch: Vec<(Arc<Partition>, usize, AlterPartitionItem)> = {
            let mut q = b.isr_proposals.queue.lock();
            if q.items.is_empty() {
                q.sending = false;
                return;
            }
            let n = q.items.len().min(MAX_BATCH);
            q.items.drain(..n).collect()
        };
        let req = ControllerRequest::AlterPartitions {
            node_id: b.node_id(),
            broker_epoch: b.broker_epoch(),
            partitions: batch.iter().map(|(_, _, i)| i.clone()).collect(),
        };
        let outcome = b.submit(req).await;
        let now = now_ms();
        let errors: Vec<Option<(i16, String)>> = match outcome {
            Ok(ControllerReply::PartitionsAltered { results }) => results
                .into_iter()
                .map(|r| (r.error != 0).then_some((r.error, r.message)))
                .chain(std::iter::repeat(None))
                .take(batch.len())
                .collect(),
            Ok(other) => vec![Some((-1, format!("unexpected reply {other:?}"))); batch.len()],
            Err(e) => vec![Some((e.code.code(), e.message)); batch.len()],
        };
        for ((p, isr_before, item), error) in batch.iter().zip(errors) {
            let change = if item.new_isr.len() < *isr_before {
                "shrink"
            } else {
                "expand"
            };
            match error {
                None => {
                    b.metrics
                        .isr_proposals
                        .with_label_values(&[change, "accepted"])
                        .inc();
                    // Normally the committed change has been published by now and ended the
                    // proposal; if the controller found nothing to change, end it here.
                    p.with_replica(|r| {
                        if r.assignment().partition_epoch == item.partition_epoch
                            && r.isr_proposal_pending()
                        {
                            r.isr_proposal_failed(now);
                        }
                    });
                }
                Some((code, message)) => {
                    b.metrics
                        .isr_proposals
                        .with_label_values(&[change, "refused"])
                        .inc();
                    tracing::warn!(topic = %p.topic, partition = p.index, proposed_isr = ?item.new_isr,
                        error = code, %message, "ISR {change} refused by the controller; will retry");
                    p.with_replica(|r| r.isr_proposal_failed(now));
                }
            }
        }
    }
}

/// ISR shrink checks every half lag period (as Kafka does), gauges and high-watermark
/// checkpoints, until shutdown.
pub async fn upkeep_loop(b: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let lag_max = b.config.replication.lag_time_max_ms;
    let period = Duration::from_millis((lag_max as u64 / 2).clamp(50, 1_000));
    let checkpoint_every =
        Duration::from_millis(b.config.replication.high_watermark_checkpoint_interval_ms);
    let mut last_checkpoint = Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let mut under_replicated = 0;
        let mut under_min_isr = 0;
        for t in b.topics() {
            let min_isr = t.config.min_insync_replicas.max(1) as usize;
            for p in &t.partitions {
                if !p.is_leader() {
                    continue;
                }
                if let Some(isr) = p.isr_to_shrink(now, lag_max) {
                    let state = p.state();
                    let leo = p.log_end_offset().unwrap_or(0);
                    for r in state.isr.iter().filter(|r| !isr.contains(r)) {
                        let (offsets, ms) = p
                            .with_replica(|x| x.lag_of(*r, leo, now))
                            .unwrap_or((-1, -1));
                        tracing::warn!(topic = %t.name, partition = p.index, replica = r,
                            lag_offsets = offsets, lag_ms = ms, isr = ?state.isr, new_isr = ?isr,
                            "ISR shrink proposed: follower is not caught up within replica.lag.time.max.ms");
                    }
                    propose_isr(&b, p, isr);
                }
                let (ur, umi) =
                    p.with_replica(|r| (r.under_replicated(), r.under_min_isr(min_isr)));
                under_replicated += ur as i64;
                under_min_isr += umi as i64;
            }
        }
        b.metrics.under_replicated.set(under_replicated);
        b.metrics.under_min_isr.set(under_min_isr);
        let offline = b.with_image(|img| {
            img.all_partitions()
                .filter(|(_, _, s)| s.leader == NO_LEADER)
                .count()
        });
        b.metrics.offline.set(offline as i64);
        if last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = Instant::now();
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for p in b.all_partitions() {
                    if let Err(e) = p.checkpoint_high_watermark() {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                            "cannot write the high-watermark checkpoint");
                    }
                }
            })
            .await;
        }
    }
}

/// KIP-903: a follower's fetch carries its broker epoch (`ReplicaState.replica_epoch`, Fetch
/// v15+); one older than the epoch the metadata image registers for that broker comes from a
/// previous incarnation of it (a process that lost its disk, or a zombie) and must not count
/// for the ISR or the high watermark: STALE_BROKER_EPOCH. An epoch of -1 (not sent) and a
/// broker the image does not know are let through: the replica checks still apply.
pub fn check_follower_broker_epoch(b: &Broker, replica: i32, epoch: i64) -> Result<(), ErrorCode> {
    let registered = b.with_image(|img| img.broker(replica).map(|x| x.broker_epoch));
    if !is_stale_broker_epoch(epoch, registered) {
        return Ok(());
    }
    b.metrics.fetch_sessions.stale_broker_epoch.inc();
    tracing::warn!(replica, broker_epoch = epoch, registered_epoch = ?registered,
        "refused a follower fetch with a stale broker epoch");
    Err(ErrorCode::StaleBrokerEpoch)
}

fn is_stale_broker_epoch(sent: i64, registered: Option<i64>) -> bool {
    sent >= 0 && registered.is_some_and(|r| sent < r)
}

#[cfg(test)]
mod tests {
    use super::is_stale_broker_epoch;

    #[test]
    fn only_an_epoch_older_than_the_registered_one_is_stale() {
        assert!(is_stale_broker_epoch(5, Some(9)));
        assert!(!is_stale_broker_epoch(9, Some(9)));
        // The follower registered again and the leader has not seen it yet.
        assert!(!is_stale_broker_epoch(12, Some(9)));
        assert!(!is_stale_broker_epoch(-1, Some(9)));
        assert!(!is_stale_broker_epoch(5, None));
    }
}
