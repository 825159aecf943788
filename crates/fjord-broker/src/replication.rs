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

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_metadata::{ControllerRequest, NO_LEADER};
use tokio::sync::watch;

use crate::broker::{now_ms, Broker};
use crate::partition::Partition;

/// Ask the controller to make `isr` the partition's ISR (the leader's own AlterPartition).
pub fn propose_isr(b: &Arc<Broker>, p: &Arc<Partition>, isr: Vec<i32>) {
    let state = p.state();
    let change = if isr.len() < state.isr.len() {
        "shrink"
    } else {
        "expand"
    };
    let req = ControllerRequest::AlterPartition {
        node_id: b.node_id(),
        broker_epoch: b.broker_epoch(),
        topic_id: p.topic_id,
        partition: p.index as u32,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        new_isr: isr.clone(),
    };
    let (b, p) = (b.clone(), p.clone());
    tokio::spawn(async move {
        match b.submit(req).await {
            Ok(_) => {
                b.metrics
                    .isr_proposals
                    .with_label_values(&[change, "accepted"])
                    .inc();
                // Normally the new assignment has been published by now and ended the
                // proposal; if the controller found nothing to change, end it here.
                p.with_replica(|r| {
                    if r.assignment().partition_epoch == state.partition_epoch
                        && r.isr_proposal_pending()
                    {
                        r.isr_proposal_failed(now_ms());
                    }
                });
            }
            Err(e) => {
                b.metrics
                    .isr_proposals
                    .with_label_values(&[change, "refused"])
                    .inc();
                tracing::warn!(topic = %p.topic, partition = p.index, proposed_isr = ?isr,
                    isr = ?state.isr, error = ?e.code, message = %e.message,
                    "ISR {change} refused by the controller; will retry");
                p.with_replica(|r| r.isr_proposal_failed(now_ms()));
            }
        }
    });
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
