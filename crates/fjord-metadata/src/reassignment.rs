//! Partition reassignment (KIP-455) in the controller: moving a partition's replicas to a new
//! set of brokers while it stays available. Pure, like the rest of the controller: requests in,
//! `PartitionChange` records and replies out.
//!
//! A reassignment goes through three states, all in the metadata log:
//! 1. **Start**: one record sets `replicas = target ++ (current − target)` (Kafka's order: the
//!    target first, so its first replica is the preferred leader; the removed ones after it,
//!    sorted), `adding_replicas = target − current`, `removing_replicas = current − target`.
//!    The brokers of adding replicas open a log and follow the leader like any follower; the
//!    removed ones keep replicating (and leading) meanwhile.
//! 2. **Catch-up**: the leader adds a caught-up follower to the ISR with AlterPartition, as
//!    for any follower.
//! 3. **Completion**: the first change whose ISR holds every target replica (checked in
//!    [`Controller::emit_next`](crate::Controller), which every partition change goes through)
//!    also sets `replicas = target`, drops the removed replicas from the ISR, clears the adding
//!    and removing sets, and, if the leader was removed, elects the first target replica in
//!    the ISR (a new leader epoch). Brokers that no longer host a replica stop following and
//!    delete the partition's log. A target that is already in the ISR (a reorder, or only
//!    removals) completes in the start record.
//!
//! **Cancellation** (`None` target) goes back to the original replicas (`replicas` minus the
//! adding ones), with the adding replicas out of the ISR; if they were the whole ISR, that is an
//! unclean election and is refused unless the topic allows one (as Kafka does). A new target
//! while one is in progress starts over from the current replicas (adding ones included).
//!
//! Refused targets (each with Kafka's error code): unknown topic or partition
//! (UNKNOWN_TOPIC_OR_PARTITION), an empty list, a broker named twice, an unregistered broker,
//! a new replica on a fenced or cordoned broker, fewer racks than the current replicas span
//! where the eligible brokers allow as many (all INVALID_REPLICA_ASSIGNMENT), a replication
//! factor change when the request forbids it (INVALID_REPLICATION_FACTOR, KIP-860), and a
//! cancellation with nothing in progress (NO_REASSIGNMENT_IN_PROGRESS).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controller::{Controller, ControllerError, ControllerResult, NextState};
use crate::image::PartitionState;
use crate::placement;
use crate::record::{MetadataRecord, NodeId, NO_LEADER};

/// The target of one partition's reassignment: its new replicas (preferred leader first), or
/// `None` to cancel the reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentTarget {
    pub topic_id: Uuid,
    pub partition: u32,
    pub replicas: Option<Vec<NodeId>>,
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OngoingReassignment {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: u32,
    /// All replicas during the move: the target first, then the ones being removed.
    pub replicas: Vec<NodeId>,
    pub adding_replicas: Vec<NodeId>,
    pub removing_replicas: Vec<NodeId>,
}

/// The replica sets a reassignment from `current` replicas to `target` starts with (Kafka's
/// `PartitionReassignmentReplicas`): `replicas` = target, then the removed replicas sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentPlan {
    pub replicas: Vec<NodeId>,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

/// Plan a reassignment to `target` of a partition whose replicas are `current`, of which
/// `original` were there before any reassignment in progress (`current` when none is).
/// A replica that an earlier target was adding and this one keeps is still being added.
pub fn plan(current: &[NodeId], original: &[NodeId], target: &[NodeId]) -> ReassignmentPlan {
    let removing: BTreeSet<NodeId> = current
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let adding: BTreeSet<NodeId> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    ReassignmentPlan {
        replicas,
        adding: adding.into_iter().collect(),
        removing: removing.into_iter().collect(),
    }
}

/// The state that completes the reassignment in `next`, if its ISR (without the removed
/// replicas) holds every target replica: replicas = target, ISR without the removed
/// replicas, no adding or removing ones. The leader is left for the caller to check.
pub(crate) fn completed(next: &NextState) -> Option<NextState> {
    if next.adding.is_empty() && next.removing.is_empty() {
        return None;
    }
    let kept = |r: &&NodeId| !next.removing.contains(r);
    let isr: Vec<NodeId> = next.isr.iter().filter(kept).copied().collect();
    let replicas: Vec<NodeId> = next.replicas.iter().filter(kept).copied().collect();
    if isr.is_empty() || replicas.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
        return None;
    }
    Some(NextState {
        replicas,
        isr,
        leader: next.leader,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

impl Controller {
    /// AlterPartitionReassignments: start, replace or cancel the reassignment of each target.
    /// Each partition stands alone (one refused target does not stop the others); the records
    /// of the accepted ones form one batch. With `allow_replication_factor_change` false a
    /// target whose size differs from the original replica count is refused (KIP-860).
    ///
    /// This is the entry point for anything that moves replicas (an operator's tool, a
    /// balancer, maintenance mode): a list of targets in, records and per-partition outcomes
    /// out.
    pub fn alter_partition_reassignments(
        &mut self,
        targets: &[ReassignmentTarget],
        allow_replication_factor_change: bool,
    ) -> ControllerResult<Vec<Result<(), ControllerError>>> {
        let mut records = Vec::new();
        let outcomes = targets
            .iter()
            .map(|t| self.reassign(&mut records, t, allow_replication_factor_change))
            .collect();
        ControllerResult {
            records,
            response: outcomes,
        }
    }

    fn reassign(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        target: &ReassignmentTarget,
        allow_replication_factor_change: bool,
    ) -> Result<(), ControllerError> {
        let topic = self
            .image()
            .topic_by_id(&target.topic_id)
            .map(|t| t.name.clone())
            .ok_or(ControllerError::UnknownTopicId(target.topic_id))?;
        let state = self
            .image()
            .partition(&target.topic_id, target.partition)
            .cloned()
            .ok_or_else(|| ControllerError::UnknownTopicOrPartition {
                topic: topic.clone(),
                partition: target.partition,
            })?;
        let where_ = Where {
            topic: &topic,
            topic_id: target.topic_id,
            partition: target.partition,
        };
        match &target.replicas {
            None => self.cancel_reassignment(out, &where_, &state),
            Some(replicas) => self.start_reassignment(
                out,
                &where_,
                &state,
                replicas,
                allow_replication_factor_change,
            ),
        }
    }

    fn start_reassignment(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        at: &Where<'_>,
        state: &PartitionState,
        target: &[NodeId],
        allow_replication_factor_change: bool,
    ) -> Result<(), ControllerError> {
        self.check_target(at, state, target, allow_replication_factor_change)?;
        let plan = plan(&state.replicas, &state.original_replicas(), target);
        let before = NextState::of(state);
        let next = NextState {
            replicas: plan.replicas,
            adding: plan.adding,
            removing: plan.removing,
            ..before.clone()
        };
        if next == before {
            return Ok(()); // already the target (or already moving to it)
        }
        tracing::info!(
            topic = at.topic,
            partition = at.partition,
            replicas = ?state.original_replicas(),
            target = ?target,
            adding = ?next.adding,
            removing = ?next.removing,
            replaced = ?state.is_reassigning().then(|| state.target_replicas()),
            "partition reassignment started: {}-{} {:?} -> {target:?}",
            at.topic,
            at.partition,
            state.original_replicas(),
        );
        self.emit_next(out, at.topic_id, at.partition, next);
        Ok(())
    }

    fn cancel_reassignment(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        at: &Where<'_>,
        state: &PartitionState,
    ) -> Result<(), ControllerError> {
        if !state.is_reassigning() {
            return Err(ControllerError::NoReassignmentInProgress(format!(
                "No partition reassignment is in progress for {}-{}.",
                at.topic, at.partition
            )));
        }
        let replicas = state.original_replicas();
        let mut isr: Vec<NodeId> = state
            .isr
            .iter()
            .copied()
            .filter(|r| !state.adding_replicas.contains(r))
            .collect();
        let leader = if isr.is_empty() {
            // Only adding replicas are in sync: going back means electing an original
            // replica that is behind them.
            if !self.unclean_election_enabled(&at.topic_id) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Unable to revert partition assignment for {}-{} because it would require \
                     an unclean leader election (every in-sync replica is one being added).",
                    at.topic, at.partition
                )));
            }
            let Some(first) = replicas.iter().copied().find(|r| self.can_lead(*r)) else {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Unable to revert partition assignment for {}-{}: none of the original \
                     replicas {replicas:?} can lead.",
                    at.topic, at.partition
                )));
            };
            tracing::warn!(topic = at.topic, partition = at.partition, leader = first,
                old_isr = ?state.isr,
                "reassignment cancelled with an unclean leader election: records only the \
                 adding replicas had will be lost");
            self.note_unclean_election();
            isr.push(first);
            first
        } else if isr.contains(&state.leader) && self.can_lead(state.leader) {
            state.leader
        } else {
            self.choose_leader(&replicas, &isr, None)
        };
        tracing::info!(
            topic = at.topic,
            partition = at.partition,
            replicas = ?replicas,
            abandoned_target = ?state.target_replicas(),
            "partition reassignment cancelled: {}-{} back to {replicas:?}",
            at.topic,
            at.partition,
        );
        let next = NextState {
            replicas,
            isr,
            leader,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        self.emit_next(out, at.topic_id, at.partition, next);
        Ok(())
    }

    /// The checks a target must pass before anything is written (Kafka's
    /// `validateManualPartitionAssignment`, plus fencing, cordons and rack spread).
    fn check_target(
        &self,
        at: &Where<'_>,
        state: &PartitionState,
        target: &[NodeId],
        allow_replication_factor_change: bool,
    ) -> Result<(), ControllerError> {
        let invalid = |why: String| {
            Err(ControllerError::InvalidReplicaAssignment(format!(
                "Invalid target replicas {target:?} for {}-{}: {why}",
                at.topic, at.partition
            )))
        };
        if target.is_empty() {
            return invalid("the replica list is empty".into());
        }
        if let Some(b) = target
            .iter()
            .enumerate()
            .find_map(|(i, b)| target[..i].contains(b).then_some(*b))
        {
            return invalid(format!("broker {b} is named more than once"));
        }
        for b in target {
            let Some(broker) = self.image().broker(*b) else {
                return invalid(format!("broker {b} is not registered"));
            };
            if state.replicas.contains(b) {
                continue; // an existing replica may stay wherever it is
            }
            if broker.fenced {
                return invalid(format!(
                    "broker {b} is fenced; a new replica needs a live broker to copy to"
                ));
            }
            if broker.cordoned {
                return invalid(format!(
                    "broker {b} is cordoned and takes no new replicas; uncordon it first"
                ));
            }
        }
        let original = state.original_replicas();
        if !allow_replication_factor_change && target.len() != original.len() {
            return Err(ControllerError::ReplicationFactorChange {
                from: original.len(),
                to: target.len(),
            });
        }
        self.check_rack_spread(&original, target).or_else(invalid)
    }

    /// A target may not span fewer racks than the current replicas do, where the eligible
    /// brokers (unfenced, uncordoned) and the target's own brokers offer that many racks for
    /// that many replicas: a move must not silently give up the rack diversity that placement
    /// gave the partition. Brokers without `broker.rack` count as one rack.
    fn check_rack_spread(&self, original: &[NodeId], target: &[NodeId]) -> Result<(), String> {
        let rack = |b: &NodeId| self.image().broker(*b).and_then(|b| b.rack.clone());
        let racks_of = |ids: &[NodeId]| ids.iter().map(rack).collect::<BTreeSet<_>>();
        let target_racks = racks_of(target);
        let mut available: BTreeSet<Option<String>> = placement::eligible_brokers(self.image())
            .into_iter()
            .map(|b| b.rack)
            .collect();
        available.extend(target_racks.iter().cloned());
        let possible = target.len().min(available.len());
        let required = racks_of(original).len().min(possible);
        if target_racks.len() >= required {
            return Ok(());
        }
        let names: Vec<String> = target_racks
            .iter()
            .map(|r| r.clone().unwrap_or_else(|| "(no rack)".into()))
            .collect();
        Err(format!(
            "the replicas would span {} rack(s) ({}) where the current ones span {} and the \
             available brokers allow {possible}; pick brokers in distinct racks",
            target_racks.len(),
            names.join(", "),
            racks_of(original).len(),
        ))
    }

    /// ListPartitionReassignments: the reassignments in progress among `partitions`, or all
    /// of them with `None`, in topic-id and partition order. Partitions that do not exist or
    /// are not being reassigned are left out (as in Kafka).
    pub fn list_partition_reassignments(
        &self,
        partitions: Option<&[(Uuid, u32)]>,
    ) -> Vec<OngoingReassignment> {
        let wanted: Vec<(Uuid, u32)> = match partitions {
            Some(p) => p.to_vec(),
            None => self.image().reassigning_partitions().collect(),
        };
        wanted
            .into_iter()
            .filter_map(|(topic_id, partition)| {
                let s = self.image().partition(&topic_id, partition)?;
                if !s.is_reassigning() {
                    return None;
                }
                Some(OngoingReassignment {
                    topic: self.image().topic_by_id(&topic_id)?.name.clone(),
                    topic_id,
                    partition,
                    replicas: s.replicas.clone(),
                    adding_replicas: s.adding_replicas.clone(),
                    removing_replicas: s.removing_replicas.clone(),
                })
            })
            .collect()
    }

    /// Log a reassignment that the change being built completes.
    pub(crate) fn note_reassignment_completed(
        &self,
        topic_id: Uuid,
        partition: u32,
        before: &PartitionState,
        done: &NextState,
        leader: NodeId,
    ) {
        let topic = self
            .image()
            .topic_by_id(&topic_id)
            .map_or_else(|| topic_id.to_string(), |t| t.name.clone());
        tracing::info!(
            topic = %topic,
            partition,
            replicas = ?done.replicas,
            removed = ?before.removing_replicas,
            added = ?before.adding_replicas,
            isr = ?done.isr,
            leader,
            previous_leader = before.leader,
            "partition reassignment completed: {topic}-{partition} now on {:?}",
            done.replicas
        );
        if leader == NO_LEADER {
            tracing::warn!(topic = %topic, partition,
                "reassignment completed with no target replica able to lead");
        }
    }
}

/// The partition a reassignment step is about (for messages).
struct Where<'a> {
    topic: &'a str,
    topic_id: Uuid,
    partition: u32,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::{
        AlterPartition, BrokerHeartbeat, BrokerRegistration, ControllerConfig,
    };
    use crate::ClusterImage;

    #[test]
    fn plan_puts_the_target_first_and_the_removed_after_it_sorted() {
        let p = plan(&[3, 1, 2], &[3, 1, 2], &[4, 2, 5]);
        assert_eq!(p.replicas, vec![4, 2, 5, 1, 3]);
        assert_eq!(p.adding, vec![4, 5]);
        assert_eq!(p.removing, vec![1, 3]);
        let reorder = plan(&[1, 2, 3], &[1, 2, 3], &[3, 2, 1]);
        assert_eq!(
            (reorder.replicas, reorder.adding, reorder.removing),
            (vec![3, 2, 1], vec![], vec![])
        );
        // While 4 is being added in place of 1: the same target plans the same sets, and a
        // target that keeps 4 still adds it.
        let again = plan(&[4, 2, 3, 1], &[2, 3, 1], &[4, 2, 3]);
        assert_eq!((again.adding, again.removing), (vec![4], vec![1]));
        let other = plan(&[4, 2, 3, 1], &[2, 3, 1], &[4, 1, 3]);
        assert_eq!(other.replicas, vec![4, 1, 3, 2]);
        assert_eq!((other.adding, other.removing), (vec![4], vec![2]));
    }

    /// Brokers 1..=n, rack of broker i = racks[i-1], all unfenced.
    fn controller(racks: &[&str]) -> (Controller, Vec<i64>) {
        let mut c = Controller::new(ControllerConfig::default());
        let mut epochs = Vec::new();
        for (i, rack) in racks.iter().enumerate() {
            let id = i as NodeId + 1;
            let epoch = c
                .register_broker(
                    BrokerRegistration {
                        node_id: id,
                        incarnation_id: Uuid::new_v4(),
                        rack: Some(rack.to_string()),
                        endpoints: vec![],
                    },
                    0,
                )
                .unwrap()
                .response;
            epochs.push(epoch);
        }
        for (i, epoch) in epochs.iter().enumerate() {
            let offset = c.next_offset() - 1;
            c.heartbeat(
                BrokerHeartbeat {
                    node_id: i as NodeId + 1,
                    broker_epoch: *epoch,
                    current_metadata_offset: offset,
                    want_fence: false,
                },
                0,
            )
            .unwrap();
        }
        (c, epochs)
    }

    /// A topic with one partition on exactly `replicas` (leader first, all in the ISR), as
    /// if it had been committed so (placement would pick its own brokers).
    fn topic_on(c: &mut Controller, name: &str, replicas: &[NodeId]) -> Uuid {
        let id = Uuid::new_v4();
        c.replay(&MetadataRecord::Topic {
            name: name.into(),
            id,
            partitions: 1,
            configs: BTreeMap::new(),
        });
        c.replay(&MetadataRecord::Partition {
            topic_id: id,
            partition: 0,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
        });
        id
    }

    fn target(topic_id: Uuid, replicas: Option<&[NodeId]>) -> ReassignmentTarget {
        ReassignmentTarget {
            topic_id,
            partition: 0,
            replicas: replicas.map(<[NodeId]>::to_vec),
        }
    }

    fn reassign(c: &mut Controller, t: Uuid, replicas: Option<&[NodeId]>) -> Result<(), i16> {
        let r = c.alter_partition_reassignments(&[target(t, replicas)], true);
        let out = r.response[0].clone().map_err(|e| e.code());
        if out.is_err() {
            assert!(
                r.records.is_empty(),
                "a refused target wrote {:?}",
                r.records
            );
        }
        out
    }

    /// The leader proposes `isr` (AlterPartition with the current epochs).
    fn expand(
        c: &mut Controller,
        epochs: &[i64],
        t: Uuid,
        isr: Vec<NodeId>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let s = c.image().partition(&t, 0).unwrap().clone();
        c.alter_partition(AlterPartition {
            node_id: s.leader,
            broker_epoch: epochs[s.leader as usize - 1],
            topic_id: t,
            partition: 0,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            new_isr: isr,
        })
        .map(|r| r.records)
    }

    fn state(c: &Controller, t: Uuid) -> PartitionState {
        c.image().partition(&t, 0).unwrap().clone()
    }

    #[test]
    fn a_move_adds_then_catches_up_then_drops_the_removed_replica() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[2, 3, 1]);
        let le = state(&c, t).leader_epoch;
        // 2,3,1 -> 4,2,3: broker 4 (rack a) replaces broker 1 (rack a); 2 keeps leading.
        reassign(&mut c, t, Some(&[4, 2, 3])).unwrap();
        let s = state(&c, t);
        assert_eq!(s.replicas, vec![4, 2, 3, 1]);
        assert_eq!(
            (s.adding_replicas.clone(), s.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(s.isr, vec![2, 3, 1]);
        assert_eq!((s.leader, s.leader_epoch), (2, le));
        assert_eq!(c.list_partition_reassignments(None).len(), 1);
        // The same target again changes nothing.
        let r = c.alter_partition_reassignments(&[target(t, Some(&[4, 2, 3]))], true);
        assert!(r.records.is_empty() && r.response[0].is_ok());
        // Broker 4 catches up: one record completes the move.
        let records = expand(&mut c, &epochs, t, vec![2, 3, 1, 4]).unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        let s = state(&c, t);
        assert_eq!(s.replicas, vec![4, 2, 3]);
        assert_eq!(s.isr, vec![2, 3, 4]);
        assert!(!s.is_reassigning());
        assert_eq!(
            (s.leader, s.leader_epoch),
            (2, le),
            "the kept leader keeps its epoch"
        );
        assert!(c.list_partition_reassignments(None).is_empty());
        assert_eq!(c.image().reassigning_count(), 0);
    }

    #[test]
    fn a_removed_leader_hands_over_to_a_target_replica_when_the_move_completes() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        let le = state(&c, t).leader_epoch;
        reassign(&mut c, t, Some(&[4, 2, 3])).unwrap();
        assert_eq!(
            state(&c, t).leader,
            1,
            "the removed leader leads until the end"
        );
        // An expand that leaves a target replica out does not complete.
        expand(&mut c, &epochs, t, vec![1, 2, 3]).unwrap();
        assert!(state(&c, t).is_reassigning());
        expand(&mut c, &epochs, t, vec![1, 2, 3, 4]).unwrap();
        let s = state(&c, t);
        assert_eq!(s.replicas, vec![4, 2, 3]);
        assert_eq!(s.isr, vec![2, 3, 4]);
        assert_eq!(s.leader, 4, "the first target replica in the ISR");
        assert_eq!(s.leader_epoch, le + 1);
    }

    #[test]
    fn a_target_already_in_sync_completes_at_once() {
        let (mut c, _) = controller(&["a", "b", "c", "d"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3, 4]);
        // Only removals, and a reorder: nothing to copy.
        reassign(&mut c, t, Some(&[3, 2, 4])).unwrap();
        let s = state(&c, t);
        assert_eq!(s.replicas, vec![3, 2, 4]);
        assert_eq!(s.isr, vec![2, 3, 4]);
        assert!(!s.is_reassigning());
        assert_eq!(
            s.leader, 3,
            "leader 1 was removed: the first target replica leads"
        );
        reassign(&mut c, t, Some(&[4, 3, 2])).unwrap();
        let s = state(&c, t);
        assert_eq!((s.replicas.clone(), s.leader), (vec![4, 3, 2], 3));
    }

    #[test]
    fn cancelling_goes_back_to_the_original_replicas() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        assert_eq!(reassign(&mut c, t, None), Err(85), "nothing to cancel");
        reassign(&mut c, t, Some(&[4, 2, 3])).unwrap();
        // Broker 4 joins the ISR but 2 dropped out meanwhile: not complete.
        expand(&mut c, &epochs, t, vec![1, 3]).unwrap();
        expand(&mut c, &epochs, t, vec![1, 3, 4]).unwrap();
        assert!(state(&c, t).is_reassigning());
        reassign(&mut c, t, None).unwrap();
        let s = state(&c, t);
        assert_eq!(
            s.replicas,
            vec![2, 3, 1],
            "original replicas, in their current order"
        );
        assert_eq!(s.isr, vec![1, 3], "the adding replica left the ISR");
        assert_eq!(s.leader, 1);
        assert!(!s.is_reassigning());
        assert_eq!(reassign(&mut c, t, None), Err(85));
    }

    #[test]
    fn cancelling_when_only_adding_replicas_are_in_sync_needs_unclean_election() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[1]);
        reassign(&mut c, t, Some(&[2, 3])).unwrap();
        expand(&mut c, &epochs, t, vec![1, 2]).unwrap();
        // Broker 1, the only original replica, is fenced: 2 (being added) leads alone.
        let hb = |c: &mut Controller, want_fence| {
            c.heartbeat(
                BrokerHeartbeat {
                    node_id: 1,
                    broker_epoch: epochs[0],
                    current_metadata_offset: c.next_offset(),
                    want_fence,
                },
                0,
            )
            .unwrap()
        };
        hb(&mut c, true);
        let s = state(&c, t);
        assert_eq!((s.isr.clone(), s.leader), (vec![2], 2));
        assert!(s.is_reassigning());
        let r = c.alter_partition_reassignments(&[target(t, None)], true);
        let err = r.response[0].clone().unwrap_err();
        assert_eq!(err.code(), 39);
        assert!(err.to_string().contains("unclean leader election"), "{err}");
        // Allowed once the topic allows unclean elections (and broker 1 is back).
        c.alter_topic_configs(
            "t",
            &[("unclean.leader.election.enable".into(), Some("true".into()))],
        )
        .unwrap();
        hb(&mut c, false);
        reassign(&mut c, t, None).unwrap();
        let s = state(&c, t);
        assert_eq!(
            (s.replicas.clone(), s.isr.clone(), s.leader),
            (vec![1], vec![1], 1)
        );
        assert!(!s.is_reassigning());
    }

    #[test]
    fn bad_targets_get_kafkas_error_codes_and_change_nothing() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a", "b"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        let before = c.image().clone();
        let unknown = Uuid::new_v4();
        let cases: Vec<(ReassignmentTarget, i16)> = vec![
            (target(t, Some(&[])), 39),
            (target(t, Some(&[1, 2, 2])), 39),
            (target(t, Some(&[1, 2, 9])), 39),
            // Two racks where three are possible and the replicas span three now.
            (target(t, Some(&[1, 2, 4])), 39),
            (
                ReassignmentTarget {
                    topic_id: t,
                    partition: 7,
                    replicas: Some(vec![1, 2, 3]),
                },
                3,
            ),
            (target(unknown, Some(&[1, 2, 3])), 100),
            (target(t, None), 85),
        ];
        for (tg, code) in &cases {
            let r = c.alter_partition_reassignments(std::slice::from_ref(tg), true);
            let err = r.response[0].clone().unwrap_err();
            assert_eq!(err.code(), *code, "{tg:?}: {err}");
            assert!(r.records.is_empty());
            assert_eq!(c.image(), &before, "{tg:?}");
        }
        let msg = c
            .alter_partition_reassignments(&[target(t, Some(&[1, 2, 4]))], true)
            .response[0]
            .clone()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("span 2 rack(s)"), "{msg}");
        // A replication factor change: allowed by default, refused when the request says so.
        let r = c.alter_partition_reassignments(&[target(t, Some(&[1, 2, 3, 4]))], false);
        assert_eq!(r.response[0].clone().unwrap_err().code(), 38);
        // Fenced and cordoned brokers take no new replica.
        c.set_cordoned(5, true).unwrap();
        assert_eq!(reassign(&mut c, t, Some(&[1, 5, 3])), Err(39));
        c.set_cordoned(5, false).unwrap();
        c.heartbeat(
            BrokerHeartbeat {
                node_id: 5,
                broker_epoch: epochs[4],
                current_metadata_offset: c.next_offset(),
                want_fence: true,
            },
            0,
        )
        .unwrap();
        let msg = c
            .alter_partition_reassignments(&[target(t, Some(&[1, 5, 3]))], true)
            .response[0]
            .clone()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("broker 5 is fenced"), "{msg}");
        // Same racks, other brokers: fine. One good and one bad target in one request: the
        // good one goes through alone.
        let r = c.alter_partition_reassignments(
            &[target(t, Some(&[4, 2, 3])), target(t, Some(&[4, 4]))],
            true,
        );
        assert!(r.response[0].is_ok());
        assert_eq!(r.response[1].clone().unwrap_err().code(), 39);
        assert!(state(&c, t).is_reassigning());
    }

    #[test]
    fn rack_spread_follows_what_the_cluster_allows() {
        // Two racks only: a three-replica target can span two at most.
        let (mut c, _) = controller(&["a", "b", "a", "b"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        assert_eq!(reassign(&mut c, t, Some(&[1, 3, 4])), Ok(()));
        assert_eq!(
            reassign(&mut c, t, Some(&[1, 3])),
            Err(39),
            "two replicas in one rack where two racks are possible"
        );
        // A partition that already spans one rack may stay in one.
        let (mut c, _) = controller(&["a", "a", "b"]);
        let t = topic_on(&mut c, "u", &[1, 2]);
        assert_eq!(state(&c, t).replicas, vec![1, 2]);
        assert_eq!(reassign(&mut c, t, Some(&[2, 1])), Ok(()));
    }

    #[test]
    fn a_new_target_while_moving_starts_from_the_current_replicas() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a", "b"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        reassign(&mut c, t, Some(&[4, 2, 3])).unwrap();
        reassign(&mut c, t, Some(&[1, 5, 3])).unwrap();
        let s = state(&c, t);
        assert_eq!(s.replicas, vec![1, 5, 3, 2, 4]);
        assert_eq!(s.adding_replicas, vec![5]);
        assert_eq!(s.removing_replicas, vec![2, 4]);
        expand(&mut c, &epochs, t, vec![1, 2, 3, 5]).unwrap();
        let s = state(&c, t);
        assert_eq!((s.replicas, s.isr), (vec![1, 5, 3], vec![1, 3, 5]));
    }

    #[test]
    fn unclean_election_during_a_move_prefers_original_replicas() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[1, 2]);
        c.alter_topic_configs(
            "t",
            &[("unclean.leader.election.enable".into(), Some("true".into()))],
        )
        .unwrap();
        reassign(&mut c, t, Some(&[4, 1, 2])).unwrap();
        // 2 drops out of the ISR, then 1 (the leader and last ISR member) is fenced.
        expand(&mut c, &epochs, t, vec![1]).unwrap();
        c.heartbeat(
            BrokerHeartbeat {
                node_id: 1,
                broker_epoch: epochs[0],
                current_metadata_offset: c.next_offset(),
                want_fence: true,
            },
            0,
        )
        .unwrap();
        let s = state(&c, t);
        assert_eq!(
            s.leader, 2,
            "the original replica, not the empty new one: {s:?}"
        );
    }

    #[test]
    fn snapshot_keeps_reassignments_in_progress() {
        let (mut c, _) = controller(&["a", "b", "c", "a"]);
        let t = topic_on(&mut c, "t", &[1, 2, 3]);
        reassign(&mut c, t, Some(&[4, 2, 3])).unwrap();
        let again = ClusterImage::from_records(&c.image().to_records());
        assert_eq!(&again, c.image());
        assert_eq!(again.reassigning_count(), 1);
        let s = again.partition(&t, 0).unwrap();
        assert_eq!(
            (s.adding_replicas.clone(), s.removing_replicas.clone()),
            (vec![4], vec![1])
        );
    }
}
