//! The replication state of one partition on one broker, without I/O: Kafka's `Partition`
//! minus the log.
//!
//! [`PartitionReplica`] knows the partition's assignment from the cluster image (replicas, ISR,
//! leader, epochs), the role this broker has in it, and the high watermark. On the leader it
//! also tracks every follower's progress (its log end offset, from the offsets it fetches at,
//! and when it was last caught up), and from that it
//!
//! - advances the high watermark to the smallest log end offset in the ISR (never backwards),
//! - tells when an acks=all produce is satisfied ([`PartitionReplica::acks_all_status`]),
//! - proposes ISR expands (a follower that caught up) and shrinks (a follower that has not been
//!   caught up for `replica.lag.time.max.ms`), one proposal in flight at a time, for the broker to
//!   send to the controller as AlterPartition. Until the controller commits a proposal, the high
//!   watermark is computed over the *maximal* ISR (committed plus proposed members, KIP-497) so
//!   that it can never pass a replica that may be in the ISR.
//!
//! On a follower it keeps the high watermark the leader reports (bounded by the local log end),
//! and [`truncation`] decides where a follower truncates its log when it starts following a new
//! leader epoch (KIP-101, KIP-279): from the leader's answer to OffsetForLeaderEpoch, so that
//! divergent records are removed and records below the high watermark never are.
//!
//! The broker owns one `PartitionReplica` per hosted partition behind a lock; time comes in as
//! `now_ms`, the logs' end offsets as arguments. Nothing here blocks, allocates per record, or
//! knows about sockets.

pub mod truncation;

use std::collections::BTreeMap;

/// A broker's node id.
pub type NodeId = i32;

/// The `leader` of a partition without one.
pub const NO_LEADER: NodeId = -1;

/// A partition's replicas, ISR, leader and epochs, as the cluster image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// [`NO_LEADER`] when the partition has no leader.
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl Assignment {
    /// Nothing known yet (no replicas, no leader).
    pub fn unknown() -> Assignment {
        Assignment {
            replicas: Vec::new(),
            isr: Vec::new(),
            leader: NO_LEADER,
            leader_epoch: -1,
            partition_epoch: -1,
        }
    }
}

/// What this broker is for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// A replica here follows `leader`.
    Follower {
        leader: NodeId,
    },
    /// A replica lives here but the partition has no leader.
    Leaderless,
    /// No replica lives here.
    NotReplica,
}

/// How a new assignment changed this broker's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Same role and leader epoch (an ISR or replica change, or nothing).
    Unchanged,
    /// This broker leads from now on (a new leader epoch).
    BecameLeader,
    /// Follow `leader` from now on, in a new leader epoch: the follower must truncate against
    /// the leader before it fetches (even when the leader is the same broker as before).
    BecameFollower { leader: NodeId },
    /// This broker neither leads nor follows any more (no leader, or the replica moved away).
    Stopped,
}

/// A follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of its last fetch (everything below is in its log); -1 until it fetches.
    pub log_end_offset: i64,
    /// The last time its log end reached the leader's (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end at the time of the last fetch.
    last_fetch_leader_leo: i64,
}

impl FollowerProgress {
    fn reset(in_sync: bool, now_ms: i64) -> FollowerProgress {
        FollowerProgress {
            log_end_offset: -1,
            // An ISR member gets a full lag period from the moment of the election.
            last_caught_up_ms: if in_sync { now_ms } else { i64::MIN / 2 },
            last_fetch_ms: i64::MIN / 2,
            last_fetch_leader_leo: -1,
        }
    }
}

/// State only the leader keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaderView {
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// The log end when this broker became leader: a follower joins the ISR only once it has
    /// everything up to here (it has then seen this leader's epoch).
    epoch_start_offset: i64,
    /// The ISR sent to the controller and not committed (or refused) yet.
    pending_isr: Option<Vec<NodeId>>,
    /// After a refused proposal, no new one before this time.
    retry_after_ms: i64,
}

/// What a follower's fetch changed on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchEffect {
    /// The high watermark moved up (wake acks=all waiters and consumers).
    pub high_watermark_advanced: bool,
    /// Send this ISR to the controller (AlterPartition): the follower caught up.
    pub propose_isr: Option<Vec<NodeId>>,
}

/// Whether an acks=all produce up to an offset is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every ISR member has the records, and the ISR is at least `min.insync.replicas`.
    Done,
    /// Not every ISR member has them yet.
    Waiting,
    /// Replicated to the ISR, but the ISR shrank below `min.insync.replicas` meanwhile.
    NotEnoughReplicasAfterAppend,
    /// This broker no longer leads the partition.
    NotLeader,
}

/// A fetch from a broker that is not a replica of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAReplica(pub NodeId);

/// Wait this long after the controller refused an ISR proposal before the next one.
pub const ISR_RETRY_BACKOFF_MS: i64 = 1_000;

/// One partition's replication state on one broker.
#[derive(Debug, Clone)]
pub struct PartitionReplica {
    local: NodeId,
    assignment: Assignment,
    high_watermark: i64,
    leader: Option<LeaderView>,
}

impl PartitionReplica {
    /// A partition on broker `local` whose log's checkpointed high watermark is
    /// `high_watermark`, before any assignment is known.
    pub fn new(local: NodeId, high_watermark: i64) -> PartitionReplica {
        PartitionReplica {
            local,
            assignment: Assignment::unknown(),
            high_watermark: high_watermark.max(0),
            leader: None,
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn role(&self) -> Role {
        role_of(self.local, &self.assignment)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// Take a new assignment from the cluster image. `log_end_offset` is the local log's end
    /// (0 if no log here).
    pub fn apply(&mut self, next: Assignment, log_end_offset: i64, now_ms: i64) -> Transition {
        let before = self.role();
        let after = role_of(self.local, &next);
        let new_epoch = next.leader_epoch != self.assignment.leader_epoch;
        let transition = match after {
            Role::Leader if before != Role::Leader || new_epoch => Transition::BecameLeader,
            Role::Follower { leader } if before != after || new_epoch => {
                Transition::BecameFollower { leader }
            }
            Role::Leaderless | Role::NotReplica
                if matches!(before, Role::Leader | Role::Follower { .. }) =>
            {
                Transition::Stopped
            }
            _ => Transition::Unchanged,
        };
        match transition {
            Transition::BecameLeader => {
                let followers = next
                    .replicas
                    .iter()
                    .filter(|r| **r != self.local)
                    .map(|r| (*r, FollowerProgress::reset(next.isr.contains(r), now_ms)))
                    .collect();
                self.leader = Some(LeaderView {
                    followers,
                    epoch_start_offset: log_end_offset,
                    pending_isr: None,
                    retry_after_ms: i64::MIN,
                });
                // The local log end bounds what a new leader can have committed.
                self.high_watermark = self.high_watermark.min(log_end_offset);
            }
            Transition::BecameFollower { .. } | Transition::Stopped => self.leader = None,
            Transition::Unchanged => {
                if let Some(view) = &mut self.leader {
                    // Replicas may have been added or removed; an ISR change ends the proposal.
                    view.followers.retain(|r, _| next.replicas.contains(r));
                    for r in next.replicas.iter().filter(|r| **r != self.local) {
                        view.followers
                            .entry(*r)
                            .or_insert_with(|| FollowerProgress::reset(false, now_ms));
                    }
                    if next.partition_epoch != self.assignment.partition_epoch {
                        view.pending_isr = None;
                    }
                }
            }
        }
        self.assignment = next;
        if self.leader.is_some() {
            self.maybe_advance_high_watermark(log_end_offset);
        }
        transition
    }

    /// Committed ISR members plus those proposed and not yet committed (KIP-497's maximal ISR);
    /// the high watermark waits for all of them.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut isr = self.assignment.isr.clone();
        if let Some(pending) = self.leader.as_ref().and_then(|v| v.pending_isr.as_ref()) {
            for r in pending {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// The leader appended: its log now ends at `log_end_offset`. Returns whether the high
    /// watermark advanced (always, with no other ISR member).
    pub fn on_leader_append(&mut self, log_end_offset: i64) -> bool {
        self.maybe_advance_high_watermark(log_end_offset)
    }

    /// A follower fetched at `fetch_offset` (so it has everything below it) while the leader's
    /// log ended at `leader_log_end_offset`.
    pub fn on_follower_fetch(
        &mut self,
        replica: NodeId,
        fetch_offset: i64,
        leader_log_end_offset: i64,
        now_ms: i64,
    ) -> Result<FetchEffect, NotAReplica> {
        let Some(view) = self.leader.as_mut() else {
            return Err(NotAReplica(replica));
        };
        let Some(p) = view.followers.get_mut(&replica) else {
            return Err(NotAReplica(replica));
        };
        // Kafka's ReplicaState.updateFetchState.
        if fetch_offset >= leader_log_end_offset {
            p.last_caught_up_ms = p.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= p.last_fetch_leader_leo {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end_offset = fetch_offset;
        p.last_fetch_leader_leo = leader_log_end_offset;
        p.last_fetch_ms = now_ms;
        let mut effect = FetchEffect {
            high_watermark_advanced: self.maybe_advance_high_watermark(leader_log_end_offset),
            propose_isr: None,
        };
        effect.propose_isr = self.maybe_expand(replica, fetch_offset, now_ms);
        Ok(effect)
    }

    /// A follower that is not in the ISR joins once it has everything up to the high watermark
    /// and up to the start of this leader's epoch (Kafka's `isFollowerInSync`).
    fn maybe_expand(
        &mut self,
        replica: NodeId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<Vec<NodeId>> {
        let hw = self.high_watermark;
        let maximal = self.maximal_isr();
        let view = self.leader.as_mut()?;
        if view.pending_isr.is_some() || now_ms < view.retry_after_ms {
            return None;
        }
        if maximal.contains(&replica) || fetch_offset < hw || fetch_offset < view.epoch_start_offset
        {
            return None;
        }
        let mut isr = self.assignment.isr.clone();
        isr.push(replica);
        view.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// ISR members that have not been caught up for `lag_max_ms` leave the ISR: the ISR to
    /// propose, if any (Kafka's `maybeShrinkIsr`). The leader always stays.
    pub fn isr_to_shrink(
        &mut self,
        leader_log_end_offset: i64,
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Option<Vec<NodeId>> {
        let local = self.local;
        let view = self.leader.as_mut()?;
        if view.pending_isr.is_some() || now_ms < view.retry_after_ms {
            return None;
        }
        let lagging = |r: &NodeId| {
            *r != local
                && view.followers.get(r).is_some_and(|p| {
                    p.log_end_offset < leader_log_end_offset
                        && now_ms - p.last_caught_up_ms > lag_max_ms
                })
        };
        if !self.assignment.isr.iter().any(lagging) {
            return None;
        }
        let isr: Vec<NodeId> = self
            .assignment
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging(r))
            .collect();
        view.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// The followers of this leader that an ISR shrink would remove now, with their lag in
    /// offsets and milliseconds (for the WARN that names them).
    pub fn lag_of(
        &self,
        replica: NodeId,
        leader_log_end_offset: i64,
        now_ms: i64,
    ) -> Option<(i64, i64)> {
        let p = self.leader.as_ref()?.followers.get(&replica)?;
        let offsets = if p.log_end_offset < 0 {
            leader_log_end_offset
        } else {
            leader_log_end_offset - p.log_end_offset
        };
        Some((offsets, now_ms.saturating_sub(p.last_caught_up_ms)))
    }

    /// The controller refused (or did not answer) the ISR proposal: drop it, and do not propose
    /// again for [`ISR_RETRY_BACKOFF_MS`]. The high watermark goes back to waiting on the
    /// committed ISR only, which it already satisfied.
    pub fn isr_proposal_failed(&mut self, now_ms: i64) {
        if let Some(view) = &mut self.leader {
            view.pending_isr = None;
            view.retry_after_ms = now_ms + ISR_RETRY_BACKOFF_MS;
        }
    }

    /// Whether an ISR proposal is waiting for the controller.
    pub fn isr_proposal_pending(&self) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|v| v.pending_isr.is_some())
    }

    /// Whether an acks=all produce whose last record is below `required_offset` is done.
    /// Kafka's `checkEnoughReplicasReachOffset`: replicated to the ISR, and the ISR is at
    /// least `min_insync_replicas`.
    pub fn acks_all_status(&self, required_offset: i64, min_insync_replicas: usize) -> AckStatus {
        if self.leader.is_none() {
            return AckStatus::NotLeader;
        }
        if self.high_watermark < required_offset {
            return AckStatus::Waiting;
        }
        if self.assignment.isr.len() >= min_insync_replicas {
            AckStatus::Done
        } else {
            AckStatus::NotEnoughReplicasAfterAppend
        }
    }

    /// A follower learned the leader's high watermark; its own is bounded by its log end.
    /// Returns whether it moved.
    pub fn on_leader_high_watermark(&mut self, leader_hw: i64, log_end_offset: i64) -> bool {
        if self.leader.is_some() {
            return false;
        }
        let hw = leader_hw.min(log_end_offset).max(0);
        let moved = hw != self.high_watermark;
        self.high_watermark = hw;
        moved
    }

    /// The log was opened with this checkpointed high watermark (ignored on a leader, whose
    /// watermark comes from its followers).
    pub fn restore_high_watermark(&mut self, high_watermark: i64) {
        if self.leader.is_none() {
            self.high_watermark = high_watermark.max(0);
        }
    }

    /// The local log was truncated to end at `log_end_offset` (follower truncation).
    pub fn on_truncated(&mut self, log_end_offset: i64) {
        self.high_watermark = self.high_watermark.min(log_end_offset);
    }

    /// The local log start moved (retention, DeleteRecords, or a follower restarting at the
    /// leader's log start): the high watermark is never below it.
    pub fn on_log_start(&mut self, log_start_offset: i64) {
        self.high_watermark = self.high_watermark.max(log_start_offset);
    }

    /// The ISR is smaller than the replica set (on the leader).
    pub fn under_replicated(&self) -> bool {
        self.leader.is_some() && self.assignment.isr.len() < self.assignment.replicas.len()
    }

    /// The ISR is smaller than `min_insync_replicas` (on the leader): acks=all fails.
    pub fn under_min_isr(&self, min_insync_replicas: usize) -> bool {
        self.leader.is_some() && self.assignment.isr.len() < min_insync_replicas
    }

    /// A follower's progress (on the leader).
    pub fn follower(&self, replica: NodeId) -> Option<FollowerProgress> {
        self.leader.as_ref()?.followers.get(&replica).copied()
    }

    fn maybe_advance_high_watermark(&mut self, leader_log_end_offset: i64) -> bool {
        let Some(view) = &self.leader else {
            return false;
        };
        let mut hw = leader_log_end_offset;
        for r in self.maximal_isr() {
            if r == self.local {
                continue;
            }
            // An ISR member that has not fetched from this leader yet holds the watermark.
            let leo = view.followers.get(&r).map_or(-1, |p| p.log_end_offset);
            hw = hw.min(leo);
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            true
        } else {
            false
        }
    }
}

fn role_of(local: NodeId, a: &Assignment) -> Role {
    if !a.replicas.contains(&local) {
        Role::NotReplica
    } else if a.leader == local {
        Role::Leader
    } else if a.leader == NO_LEADER {
        Role::Leaderless
    } else {
        Role::Follower { leader: a.leader }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(replicas: &[NodeId], isr: &[NodeId], leader: NodeId, le: i32, pe: i32) -> Assignment {
        Assignment {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: le,
            partition_epoch: pe,
        }
    }

    #[test]
    fn single_replica_commits_on_append() {
        let mut p = PartitionReplica::new(1, 0);
        assert_eq!(
            p.apply(assign(&[1], &[1], 1, 0, 0), 0, 0),
            Transition::BecameLeader
        );
        assert_eq!(p.acks_all_status(1, 1), AckStatus::Waiting);
        assert!(p.on_leader_append(10));
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(p.acks_all_status(10, 1), AckStatus::Done);
        assert_eq!(
            p.acks_all_status(10, 2),
            AckStatus::NotEnoughReplicasAfterAppend
        );
    }

    #[test]
    fn watermark_waits_for_every_isr_member_and_never_goes_back() {
        let mut p = PartitionReplica::new(1, 0);
        p.apply(assign(&[1, 2, 3], &[1, 2, 3], 1, 0, 0), 0, 0);
        assert!(!p.on_leader_append(10));
        assert_eq!(p.high_watermark(), 0);
        let e = p.on_follower_fetch(2, 10, 10, 1).unwrap();
        assert!(!e.high_watermark_advanced, "3 has not fetched");
        let e = p.on_follower_fetch(3, 4, 10, 1).unwrap();
        assert!(e.high_watermark_advanced);
        assert_eq!(p.high_watermark(), 4);
        assert_eq!(p.acks_all_status(10, 2), AckStatus::Waiting);
        // A follower that fetches from an older offset (restart) cannot pull it back.
        p.on_follower_fetch(3, 2, 10, 2).unwrap();
        assert_eq!(p.high_watermark(), 4);
        p.on_follower_fetch(3, 10, 10, 3).unwrap();
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(p.acks_all_status(10, 2), AckStatus::Done);
        assert_eq!(p.on_follower_fetch(9, 0, 10, 3), Err(NotAReplica(9)));
    }

    #[test]
    fn lagging_follower_is_shrunk_after_the_lag_time_and_rejoins_when_caught_up() {
        let mut p = PartitionReplica::new(1, 0);
        p.apply(assign(&[1, 2, 3], &[1, 2, 3], 1, 0, 0), 0, 1_000);
        p.on_leader_append(5);
        p.on_follower_fetch(2, 5, 5, 1_100).unwrap();
        // 3 never fetches: it has its lag period from the election.
        assert_eq!(p.isr_to_shrink(5, 1_000 + 30_000, 30_000), None);
        assert_eq!(p.isr_to_shrink(5, 1_000 + 30_001, 30_000), Some(vec![1, 2]));
        assert!(p.isr_proposal_pending());
        // While pending, the high watermark still waits for 3 (maximal ISR).
        p.on_leader_append(8);
        p.on_follower_fetch(2, 8, 8, 31_100).unwrap();
        assert_eq!(p.high_watermark(), 0);
        // Committed: 3 is out, the watermark follows 2.
        assert_eq!(
            p.apply(assign(&[1, 2, 3], &[1, 2], 1, 0, 1), 8, 31_200),
            Transition::Unchanged
        );
        assert_eq!(p.high_watermark(), 8);
        assert!(p.under_replicated());
        assert!(!p.under_min_isr(2));
        // 3 comes back: behind the watermark it does not join...
        assert_eq!(
            p.on_follower_fetch(3, 4, 8, 32_000).unwrap().propose_isr,
            None
        );
        // ... once caught up it does.
        let e = p.on_follower_fetch(3, 8, 8, 32_100).unwrap();
        assert_eq!(e.propose_isr, Some(vec![1, 2, 3]));
        p.apply(assign(&[1, 2, 3], &[1, 2, 3], 1, 0, 2), 8, 32_200);
        assert!(!p.under_replicated());
    }

    #[test]
    fn follower_that_keeps_up_with_a_moving_leader_stays_in_sync() {
        let mut p = PartitionReplica::new(1, 0);
        p.apply(assign(&[1, 2], &[1, 2], 1, 0, 0), 0, 0);
        let mut leo = 0;
        for t in 1..100 {
            // Each fetch returns what the leader had at the previous fetch; the leader moves on.
            let fetch = leo;
            leo += 10;
            p.on_follower_fetch(2, fetch, leo, t * 1_000).unwrap();
            assert_eq!(p.isr_to_shrink(leo, t * 1_000 + 500, 2_000), None, "t={t}");
        }
    }

    #[test]
    fn refused_proposal_backs_off() {
        let mut p = PartitionReplica::new(1, 0);
        p.apply(assign(&[1, 2], &[1], 1, 0, 0), 0, 0);
        assert!(p
            .on_follower_fetch(2, 0, 0, 10)
            .unwrap()
            .propose_isr
            .is_some());
        p.isr_proposal_failed(10);
        assert!(p
            .on_follower_fetch(2, 0, 0, 20)
            .unwrap()
            .propose_isr
            .is_none());
        assert!(p
            .on_follower_fetch(2, 0, 0, 10 + ISR_RETRY_BACKOFF_MS)
            .unwrap()
            .propose_isr
            .is_some());
    }

    #[test]
    fn roles_and_transitions() {
        let mut p = PartitionReplica::new(2, 7);
        assert_eq!(
            p.apply(assign(&[1, 2], &[1, 2], 1, 3, 0), 10, 0),
            Transition::BecameFollower { leader: 1 }
        );
        assert_eq!(
            p.apply(assign(&[1, 2], &[1], 1, 3, 1), 10, 0),
            Transition::Unchanged
        );
        // Same leader, new epoch: truncate again.
        assert_eq!(
            p.apply(assign(&[1, 2], &[1], 1, 4, 2), 10, 0),
            Transition::BecameFollower { leader: 1 }
        );
        assert!(p.on_leader_high_watermark(20, 10));
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(p.acks_all_status(1, 1), AckStatus::NotLeader);
        assert_eq!(
            p.apply(assign(&[1, 2], &[2], 2, 5, 3), 10, 0),
            Transition::BecameLeader
        );
        assert_eq!(p.role(), Role::Leader);
        assert_eq!(
            p.apply(assign(&[1, 2], &[2], NO_LEADER, 6, 4), 10, 0),
            Transition::Stopped
        );
        assert_eq!(p.role(), Role::Leaderless);
        assert_eq!(
            p.apply(assign(&[1, 3], &[1], 1, 7, 5), 10, 0),
            Transition::Unchanged
        );
        assert_eq!(p.role(), Role::NotReplica);
    }

    #[test]
    fn new_leader_never_reports_more_than_its_log() {
        let mut p = PartitionReplica::new(1, 50);
        p.apply(assign(&[1, 2], &[1, 2], 1, 1, 0), 40, 0);
        assert_eq!(p.high_watermark(), 40);
    }
}
