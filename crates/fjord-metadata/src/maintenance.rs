//! Maintenance mode (issue 17): taking a broker out of service step by step, every step a
//! metadata record, so it survives a controller failover and a restart of the broker. Pure,
//! like the rest of the controller: requests in, records and replies out.
//!
//! - **Cordon** (`CordonBroker`, [`Controller::set_cordoned`]): no new replicas are placed on
//!   the broker (placement and reassignment targets skip it).
//! - **Maintenance** (`BrokerMaintenance`, [`Controller::set_maintenance`]): the broker is
//!   cordoned and every leadership it holds moves to another in-sync replica in the same batch
//!   (clients see NOT_LEADER_OR_FOLLOWER, which they retry). While it lasts, elections pick it
//!   only where no other in-sync replica can lead, the preferred-leader election leaves its
//!   partitions alone, and [`Controller::maintenance_tick`] moves away the leaderships it got
//!   anyway (as the only in-sync replica, say after a restart) once another replica is back in
//!   sync. Leaving maintenance uncordons the broker (unless the operator had cordoned it
//!   before) and gives its preferred leaderships back at once.
//! - **Drain** (`drain_replicas`): [`plan_drain`] replaces the broker in every replica list
//!   it is in, keeping each partition's rack spread and evening out replicas per broker, and
//!   the moves start as KIP-455 reassignments ([`Controller::alter_partition_reassignments`])
//!   in the same batch. With a throttle, the same batch sets Kafka's throttle configs: the
//!   cluster-default `leader/follower.replication.throttled.rate` (unless already set) and,
//!   per topic, the moved partitions' replicas in `leader/follower.replication.throttled.
//!   replicas`. The tick retries replicas it could not move (every [`DRAIN_RETRY_MS`]) and,
//!   once nothing is left on the broker, clears those configs and marks the drain completed.
//!   A drain that would lower a partition's rack spread (the last broker of a rack, with
//!   RF ≥ racks) is refused as a whole, with the partition and the rack in the reason.
//! - **Remove** ([`Controller::remove_broker`], UnregisterBroker): only a stopped (fenced)
//!   broker that holds no replica; a running one would register again at its next heartbeat.
//!
//! [`broker_status`] says how far a broker is and whether it is safe to remove.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controller::{
    election_error, Controller, ControllerError, ControllerResult, ElectionType,
};
use crate::image::{BrokerImage, BrokerLoad, ClusterImage};
use crate::placement::{self, PlacementBroker};
use crate::reassignment::ReassignmentTarget;
use crate::record::{Maintenance, MetadataRecord, NodeId, NO_LEADER};

/// Kafka's dynamic broker config for the leader side of a replication throttle (bytes/s).
pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
/// Kafka's dynamic broker config for the follower side of a replication throttle (bytes/s).
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";
/// Kafka's topic config listing the `partition:broker` replicas throttled as leaders.
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Kafka's topic config listing the `partition:broker` replicas throttled as followers.
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";

/// How long a drain waits before it tries again to move replicas it could not move (no
/// eligible broker, a refused target).
pub const DRAIN_RETRY_MS: i64 = 10_000;

/// What `maintenance enable` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    /// Move every replica off the broker.
    pub drain_replicas: bool,
    /// Throttle the drain's replication to this many bytes/s.
    pub throttle_bytes_per_s: Option<u64>,
}

/// What a maintenance change or tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceOutcome {
    /// Leaderships moved off the broker (entering, tick) or back to it (leaving).
    pub leaders_moved: usize,
    /// Leaderships the broker keeps: no other in-sync replica can lead those partitions yet.
    pub leaders_kept: usize,
    /// Partitions whose replica on the broker started moving.
    pub reassignments_started: usize,
    /// Moves off the broker cancelled by leaving maintenance.
    pub reassignments_cancelled: usize,
}

/// One partition with a replica on a broker being drained, as [`plan_drain`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPartition {
    pub topic_id: Uuid,
    pub partition: u32,
    /// Its replicas (the target ones while a reassignment is in progress), preferred leader
    /// first.
    pub replicas: Vec<NodeId>,
}

/// A partition's new replicas: each draining broker replaced where it stood, so a replaced
/// preferred leader's successor is the new preferred leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainMove {
    pub topic_id: Uuid,
    pub partition: u32,
    pub replicas: Vec<NodeId>,
    pub target: Vec<NodeId>,
}

/// Why a partition cannot be moved off the draining brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainRefusal {
    /// No broker outside the replica set can take `replica`'s place: the others are fenced,
    /// cordoned, in maintenance or replicas already.
    NoBroker { replica: NodeId },
    /// The new replicas would span fewer racks: `lost` racks have no broker left that can take
    /// a replica.
    RackSpread {
        before: Vec<Option<String>>,
        after: Vec<Option<String>>,
        lost: Vec<Option<String>>,
    },
}

/// A partition [`plan_drain`] cannot move, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRefused {
    pub topic_id: Uuid,
    pub partition: u32,
    pub replicas: Vec<NodeId>,
    pub why: DrainRefusal,
}

/// The moves of a drain, and the partitions it cannot move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    pub moves: Vec<DrainMove>,
    pub refused: Vec<DrainRefused>,
}

/// Plan moving every replica on the `draining` brokers to `destinations` (brokers that may
/// take new replicas; draining ones among them are ignored). `racks` gives the rack of every
/// registered broker, `load` the replicas and preferred leaderships each holds now.
///
/// Each draining replica is replaced where it stands by the destination that (1) is not a
/// replica of the partition already, (2) adds a rack the other replicas do not span, (3) holds
/// the fewest replicas counting the moves planned so far, (4) for a preferred leader, the
/// fewest preferred leaderships; remaining ties rotate with the partition, so equal brokers
/// take turns. Picking a new rack whenever one is available keeps the most racks a partition
/// can span, so a partition is refused only when no choice keeps its spread: when a rack it
/// spans has no destination left (the last broker of a rack, RF ≥ racks), or when no
/// destination can take the replica at all. Refused partitions change nothing in the load.
pub fn plan_drain(
    draining: &BTreeSet<NodeId>,
    racks: &BTreeMap<NodeId, Option<String>>,
    destinations: &[PlacementBroker],
    load: &HashMap<NodeId, BrokerLoad>,
    partitions: &[DrainPartition],
) -> DrainPlan {
    let mut dest: Vec<&PlacementBroker> = destinations
        .iter()
        .filter(|b| !draining.contains(&b.id))
        .collect();
    dest.sort_by_key(|b| b.id);
    dest.dedup_by_key(|b| b.id);
    let mut rack_of: BTreeMap<NodeId, Option<&str>> =
        racks.iter().map(|(id, r)| (*id, r.as_deref())).collect();
    for b in &dest {
        rack_of.insert(b.id, b.rack.as_deref());
    }
    let rack = |id: &NodeId| rack_of.get(id).copied().flatten();
    let mut replicas: HashMap<NodeId, u64> = HashMap::new();
    let mut leaders: HashMap<NodeId, u64> = HashMap::new();
    for b in &dest {
        let l = load.get(&b.id).copied().unwrap_or_default();
        replicas.insert(b.id, l.replicas.into());
        leaders.insert(b.id, l.leaders.into());
    }
    let n = dest.len().max(1);
    let mut plan = DrainPlan::default();
    for (i, p) in partitions.iter().enumerate() {
        if !p.replicas.iter().any(|r| draining.contains(r)) {
            continue;
        }
        let mut target = p.replicas.clone();
        let mut refusal = None;
        for pos in 0..target.len() {
            let old = target[pos];
            if !draining.contains(&old) {
                continue;
            }
            // The racks of the replicas that stay (or were already chosen).
            let kept: BTreeSet<Option<&str>> = target
                .iter()
                .filter(|r| !draining.contains(r))
                .map(rack)
                .collect();
            let best = dest
                .iter()
                .enumerate()
                .filter(|(_, b)| !target.contains(&b.id))
                .min_by_key(|(k, b)| {
                    let adds_rack = !kept.contains(&b.rack.as_deref());
                    let lead = if pos == 0 { leaders[&b.id] } else { 0 };
                    let turn = (k + n - i % n) % n;
                    (!adds_rack, replicas[&b.id], lead, turn)
                });
            match best {
                Some((_, b)) => target[pos] = b.id,
                None => {
                    refusal = Some(DrainRefusal::NoBroker { replica: old });
                    break;
                }
            }
        }
        if refusal.is_none() {
            let before: BTreeSet<Option<&str>> = p.replicas.iter().map(rack).collect();
            let after: BTreeSet<Option<&str>> = target.iter().map(rack).collect();
            if after.len() < before.len() {
                let owned = |s: &BTreeSet<Option<&str>>| -> Vec<Option<String>> {
                    s.iter().map(|r| r.map(str::to_string)).collect()
                };
                refusal = Some(DrainRefusal::RackSpread {
                    before: owned(&before),
                    after: owned(&after),
                    lost: owned(&before.difference(&after).copied().collect()),
                });
            }
        }
        match refusal {
            Some(why) => plan.refused.push(DrainRefused {
                topic_id: p.topic_id,
                partition: p.partition,
                replicas: p.replicas.clone(),
                why,
            }),
            None => {
                for (pos, b) in target.iter().enumerate() {
                    if !p.replicas.contains(b) {
                        *replicas.entry(*b).or_default() += 1;
                        if pos == 0 {
                            *leaders.entry(*b).or_default() += 1;
                        }
                    }
                }
                plan.moves.push(DrainMove {
                    topic_id: p.topic_id,
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    target,
                });
            }
        }
    }
    plan
}

/// `partition:broker` pairs added to a throttled-replicas config value: `None` when nothing
/// changes (all pairs there already, the value is `*`, or it does not parse — then it is the
/// operator's and left alone).
pub fn add_throttled(current: Option<&str>, pairs: &[(u32, NodeId)]) -> Option<String> {
    let mut list = match current.map(str::trim) {
        None | Some("") => Vec::new(),
        Some("*") => return None,
        Some(v) => parse_pairs(v)?,
    };
    let before = list.len();
    for pair in pairs {
        if !list.contains(pair) {
            list.push(*pair);
        }
    }
    (list.len() > before).then(|| format_pairs(&list))
}

/// A throttled-replicas config value keeping only the pairs `keep` accepts: `None` when
/// nothing changes, `Some(None)` when the list is left empty (the key is removed).
pub fn retain_throttled(
    current: &str,
    keep: impl Fn(u32, NodeId) -> bool,
) -> Option<Option<String>> {
    let v = current.trim();
    if v == "*" || v.is_empty() {
        return None;
    }
    let list = parse_pairs(v)?;
    let kept: Vec<(u32, NodeId)> = list.iter().copied().filter(|(p, b)| keep(*p, *b)).collect();
    if kept.len() == list.len() {
        return None;
    }
    Some((!kept.is_empty()).then(|| format_pairs(&kept)))
}

/// `partition:broker` pairs of a throttled-replicas list.
type Pairs = Vec<(u32, NodeId)>;

fn parse_pairs(v: &str) -> Option<Pairs> {
    v.split(',')
        .map(|item| {
            let (p, b) = item.trim().split_once(':')?;
            Some((p.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

fn format_pairs(pairs: &[(u32, NodeId)]) -> String {
    pairs
        .iter()
        .map(|(p, b)| format!("{p}:{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One broker's maintenance progress, from the metadata image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMaintenanceStatus {
    pub node_id: NodeId,
    pub rack: Option<String>,
    pub fenced: bool,
    pub cordoned: bool,
    pub maintenance: Option<Maintenance>,
    /// Partitions with a replica on the broker.
    pub replicas: u64,
    /// Partitions it leads.
    pub leaders: u64,
    /// Of those, partitions no other in-sync replica can lead (they stay until one can).
    pub leaders_stuck: u64,
    /// Partitions whose reassignment is moving a replica off it.
    pub moving: u64,
    /// Partitions of the whole cluster with fewer in-sync replicas than replicas.
    pub under_replicated: u64,
    /// No replica, no leadership, nothing under-replicated, its drain (if any) completed:
    /// removing the broker (once stopped) costs no partition a replica.
    pub safe_to_remove: bool,
    /// Why it is not safe yet, one line each.
    pub reasons: Vec<String>,
}

/// The maintenance progress of `node_id`, or of every broker in maintenance with `None`, from
/// one pass over the partitions (admin requests only).
pub fn broker_status(
    image: &ClusterImage,
    node_id: Option<NodeId>,
) -> Vec<BrokerMaintenanceStatus> {
    let wanted: Vec<&BrokerImage> = image
        .brokers()
        .filter(|b| node_id.map_or(b.in_maintenance(), |n| b.node_id == n))
        .collect();
    let mut out: BTreeMap<NodeId, BrokerMaintenanceStatus> = wanted
        .iter()
        .map(|b| {
            (
                b.node_id,
                BrokerMaintenanceStatus {
                    node_id: b.node_id,
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    cordoned: b.cordoned,
                    maintenance: b.maintenance.clone(),
                    replicas: 0,
                    leaders: 0,
                    leaders_stuck: 0,
                    moving: 0,
                    under_replicated: 0,
                    safe_to_remove: false,
                    reasons: Vec::new(),
                },
            )
        })
        .collect();
    if out.is_empty() {
        return Vec::new();
    }
    let can_lead = |b: &NodeId| image.broker(*b).is_some_and(|x| !x.fenced);
    let mut under_replicated = 0;
    for (_, _, p) in image.all_partitions() {
        if p.isr.len() < p.replicas.len() - p.adding_replicas.len() {
            under_replicated += 1;
        }
        for r in &p.replicas {
            if let Some(s) = out.get_mut(r) {
                s.replicas += 1;
                if p.removing_replicas.contains(r) {
                    s.moving += 1;
                }
            }
        }
        if let Some(s) = out.get_mut(&p.leader) {
            s.leaders += 1;
            if !p.isr.iter().any(|b| *b != p.leader && can_lead(b)) {
                s.leaders_stuck += 1;
            }
        }
    }
    for s in out.values_mut() {
        s.under_replicated = under_replicated;
        if s.replicas > 0 {
            s.reasons.push(format!(
                "it holds {} replica(s), {} of them being moved off",
                s.replicas, s.moving
            ));
        }
        if s.leaders > 0 {
            s.reasons.push(format!(
                "it leads {} partition(s), {} with no other in-sync replica to take over",
                s.leaders, s.leaders_stuck
            ));
        }
        let draining = s
            .maintenance
            .as_ref()
            .is_some_and(|m| m.drain_replicas && !m.drain_completed);
        if draining && s.replicas == 0 {
            s.reasons
                .push("its drain is finishing (throttles not cleared yet)".into());
        }
        if under_replicated > 0 {
            s.reasons.push(format!(
                "{under_replicated} partition(s) in the cluster are under-replicated"
            ));
        }
        s.safe_to_remove = s.reasons.is_empty();
    }
    out.into_values().collect()
}

/// A rack for messages.
fn rack_name(r: &Option<String>) -> &str {
    r.as_deref().unwrap_or("(no rack)")
}

fn rack_list(racks: &[Option<String>]) -> String {
    racks.iter().map(rack_name).collect::<Vec<_>>().join(", ")
}

impl Controller {
    /// Enter maintenance (`Some`), change its settings, or leave it (`None`). Entering cordons
    /// the broker, moves its leaderships to other in-sync replicas and, with a drain, starts
    /// moving every replica off it — or refuses, changing nothing, when a replica cannot move
    /// without losing rack spread (INVALID_REPLICA_ASSIGNMENT, with the partition and rack).
    /// Leaving cancels moves off the broker still in flight, clears the drain's throttles,
    /// uncordons it if entering cordoned it, and gives its preferred leaderships back.
    pub fn set_maintenance(
        &mut self,
        node_id: NodeId,
        request: Option<MaintenanceRequest>,
    ) -> Result<ControllerResult<MaintenanceOutcome>, ControllerError> {
        let broker = self
            .image()
            .broker(node_id)
            .ok_or(ControllerError::BrokerIdNotRegistered(node_id))?
            .clone();
        let mut records = Vec::new();
        let outcome = match request {
            Some(req) => self.enter_maintenance(&mut records, &broker, req)?,
            None => self.leave_maintenance(&mut records, &broker),
        };
        Ok(ControllerResult {
            records,
            response: outcome,
        })
    }

    fn enter_maintenance(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        b: &BrokerImage,
        req: MaintenanceRequest,
    ) -> Result<MaintenanceOutcome, ControllerError> {
        let node_id = b.node_id;
        // Check the whole drain before writing anything.
        let plan = if req.drain_replicas {
            let plan = self.drain_plan(node_id);
            if let Some(first) = plan.refused.first() {
                return Err(ControllerError::InvalidReplicaAssignment(
                    self.refusal_message(node_id, first, plan.refused.len()),
                ));
            }
            Some(plan)
        } else {
            None
        };
        let old = b.maintenance.clone();
        // A broker that holds nothing is drained already (a new broker, a single node, which
        // has no partition records): no tick needs to finish it.
        let holds_nothing = self
            .image()
            .load()
            .get(&node_id)
            .is_none_or(|l| l.replicas == 0);
        let state = Maintenance {
            drain_replicas: req.drain_replicas,
            throttle_bytes_per_s: req.throttle_bytes_per_s,
            cordoned_by_maintenance: old
                .as_ref()
                .map_or(!b.cordoned, |m| m.cordoned_by_maintenance),
            drain_completed: req.drain_replicas && holds_nothing,
        };
        if !b.cordoned {
            self.emit_record(out, MetadataRecord::CordonBroker { node_id });
        }
        if old.as_ref() != Some(&state) {
            self.emit_record(
                out,
                MetadataRecord::BrokerMaintenance {
                    node_id,
                    state: Some(state.clone()),
                },
            );
        }
        let mut outcome = MaintenanceOutcome::default();
        (outcome.leaders_moved, outcome.leaders_kept) = self.move_leaders_off(out, node_id);
        if let Some(plan) = plan {
            outcome.reassignments_started = self.start_drain(out, node_id, &state, plan);
        }
        tracing::info!(
            node_id,
            rack = b.rack.as_deref().unwrap_or("-"),
            drain_replicas = state.drain_replicas,
            throttle_bytes_per_s = ?state.throttle_bytes_per_s,
            leaders_moved = outcome.leaders_moved,
            leaders_kept = outcome.leaders_kept,
            reassignments_started = outcome.reassignments_started,
            "broker {node_id} {} maintenance: cordoned, {} leadership(s) moved to other in-sync \
             replicas ({} kept: no other in-sync replica yet){}",
            if old.is_some() { "stays in" } else { "entered" },
            outcome.leaders_moved,
            outcome.leaders_kept,
            if state.drain_replicas {
                format!(", {} partition(s) start moving off it", outcome.reassignments_started)
            } else {
                String::new()
            }
        );
        Ok(outcome)
    }

    fn leave_maintenance(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        b: &BrokerImage,
    ) -> MaintenanceOutcome {
        let node_id = b.node_id;
        let mut outcome = MaintenanceOutcome::default();
        let Some(m) = b.maintenance.clone() else {
            return outcome;
        };
        if m.drain_replicas && !m.drain_completed {
            let moving: Vec<ReassignmentTarget> = self
                .moving_off(node_id)
                .into_iter()
                .map(|(topic_id, partition)| ReassignmentTarget {
                    topic_id,
                    partition,
                    replicas: None,
                })
                .collect();
            let r = self.alter_partition_reassignments(&moving, true);
            out.extend(r.records);
            for (t, result) in moving.iter().zip(r.response) {
                match result {
                    Ok(()) => outcome.reassignments_cancelled += 1,
                    Err(e) => tracing::warn!(node_id, topic_id = %t.topic_id,
                        partition = t.partition, error = %e,
                        "leaving maintenance: a move off the broker cannot be cancelled; it goes on"),
                }
            }
        }
        self.emit_record(
            out,
            MetadataRecord::BrokerMaintenance {
                node_id,
                state: None,
            },
        );
        if m.cordoned_by_maintenance && b.cordoned {
            self.emit_record(out, MetadataRecord::UncordonBroker { node_id });
        }
        if m.drain_replicas && !m.drain_completed {
            self.clear_drain_throttles(out, node_id, m.throttle_bytes_per_s);
        }
        // Its preferred leaderships come back now rather than at the next rebalance.
        let preferred: Vec<(Uuid, u32)> = self
            .image()
            .partitions_in_isr(node_id)
            .filter(|(t, p)| {
                self.image()
                    .partition(t, *p)
                    .is_some_and(|s| s.preferred_leader() == node_id && s.leader != node_id)
            })
            .collect();
        for (t, p) in preferred {
            if self.elect_one(out, ElectionType::Preferred, t, p) == election_error::NONE {
                outcome.leaders_moved += 1;
            }
        }
        tracing::info!(
            node_id,
            leaders_returned = outcome.leaders_moved,
            reassignments_cancelled = outcome.reassignments_cancelled,
            "broker {node_id} left maintenance: {}{} preferred leadership(s) returned, {} move(s) \
             off it cancelled",
            if m.cordoned_by_maintenance {
                "uncordoned, "
            } else {
                "still cordoned (it was before maintenance), "
            },
            outcome.leaders_moved,
            outcome.reassignments_cancelled
        );
        outcome
    }

    /// The timer's share of maintenance: leaderships a broker in maintenance holds move to
    /// another in-sync replica as soon as one can lead; a drain retries the replicas it could
    /// not move yet (every [`DRAIN_RETRY_MS`]) and completes once the broker holds none
    /// (throttles cleared, `drain_completed` recorded). Cheap when no broker is in
    /// maintenance; scans the partitions only when a drain has replicas left to plan.
    pub fn maintenance_tick(&mut self, now: i64) -> ControllerResult<MaintenanceOutcome> {
        let mut records = Vec::new();
        let mut outcome = MaintenanceOutcome::default();
        let brokers: Vec<BrokerImage> = self
            .image()
            .brokers()
            .filter(|b| b.in_maintenance())
            .cloned()
            .collect();
        for b in brokers {
            let node_id = b.node_id;
            let (moved, _) = self.move_leaders_off(&mut records, node_id);
            if moved > 0 {
                tracing::info!(
                    node_id,
                    leaders_moved = moved,
                    "moved {moved} leadership(s) off broker {node_id} (in maintenance) now that \
                     another replica is in sync"
                );
                outcome.leaders_moved += moved;
            }
            let Some(m) = b.maintenance.clone() else {
                continue;
            };
            if !m.drain_replicas || m.drain_completed {
                continue;
            }
            let on_broker = self.image().load().get(&node_id).map_or(0, |l| l.replicas) as usize;
            if on_broker == 0 {
                self.complete_drain(&mut records, node_id, m);
                continue;
            }
            if on_broker <= self.moving_off(node_id).len()
                || self.drain_retry_at.get(&node_id).is_some_and(|t| now < *t)
            {
                continue;
            }
            let plan = self.drain_plan(node_id);
            if let Some(first) = plan.refused.first() {
                let why = self.refusal_message(node_id, first, plan.refused.len());
                tracing::warn!(
                    node_id,
                    stuck = plan.refused.len(),
                    "drain of broker {node_id}: \
                    {why}; trying again in {} s",
                    DRAIN_RETRY_MS / 1000
                );
                self.drain_retry_at.insert(node_id, now + DRAIN_RETRY_MS);
            }
            let started = self.start_drain(&mut records, node_id, &m, plan);
            if started > 0 {
                tracing::info!(
                    node_id,
                    reassignments_started = started,
                    "drain of broker {node_id}: {started} more partition(s) start moving off it"
                );
            }
            outcome.reassignments_started += started;
        }
        ControllerResult {
            records,
            response: outcome,
        }
    }

    /// UnregisterBroker, as an operator's `fjord broker remove`: refused while the broker
    /// runs (it would register again) or holds a replica (its partitions would keep a replica
    /// on a broker that no longer exists). Its per-broker dynamic configs go with it.
    pub fn remove_broker(
        &mut self,
        node_id: NodeId,
    ) -> Result<ControllerResult<()>, ControllerError> {
        let b = self
            .image()
            .broker(node_id)
            .ok_or(ControllerError::BrokerIdNotRegistered(node_id))?
            .clone();
        let replicas = self.image().load().get(&node_id).map_or(0, |l| l.replicas);
        if replicas > 0 {
            let moving = self.moving_off(node_id).len();
            return Err(ControllerError::InvalidRequest(format!(
                "broker {node_id} still holds {replicas} replica(s){}; drain it first \
                 (fjord broker maintenance enable {node_id} --drain-replicas) and wait until it \
                 is safe to remove",
                if moving > 0 {
                    format!(", {moving} of them being moved off")
                } else {
                    String::new()
                }
            )));
        }
        if !b.fenced {
            return Err(ControllerError::InvalidRequest(format!(
                "broker {node_id} is running (unfenced) and would register again at its next \
                 heartbeat; stop it first"
            )));
        }
        let configs: Vec<String> = self
            .image()
            .broker_configs(Some(node_id))
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        let mut r = self.unregister_broker(node_id)?;
        for key in configs {
            self.emit_record(
                &mut r.records,
                MetadataRecord::BrokerConfig {
                    node_id: Some(node_id),
                    key,
                    value: None,
                },
            );
        }
        tracing::info!(
            node_id,
            rack = b.rack.as_deref().unwrap_or("-"),
            "broker {node_id} unregistered: it holds no replica and has left the cluster"
        );
        Ok(r)
    }

    /// Move every leadership of `node_id` to another in-sync replica that can lead; returns
    /// (moved, kept).
    fn move_leaders_off(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        node_id: NodeId,
    ) -> (usize, usize) {
        let led: Vec<(Uuid, u32)> = self.image().partitions_led_by(node_id).collect();
        let (mut moved, mut kept) = (0, 0);
        for (t, p) in led {
            let Some(s) = self.image().partition(&t, p).cloned() else {
                continue;
            };
            let leader = self.choose_leader(&s.replicas, &s.isr, Some(node_id));
            if leader == NO_LEADER {
                kept += 1;
                continue;
            }
            self.emit_change(out, t, p, s.isr, leader);
            moved += 1;
        }
        (moved, kept)
    }

    /// Partitions whose reassignment in progress removes a replica from `node_id`.
    fn moving_off(&self, node_id: NodeId) -> Vec<(Uuid, u32)> {
        self.image()
            .reassigning_partitions()
            .filter(|(t, p)| {
                self.image()
                    .partition(t, *p)
                    .is_some_and(|s| s.removing_replicas.contains(&node_id))
            })
            .collect()
    }

    /// The drain of `node_id` over the partitions whose replicas (targets) still hold it and
    /// are not being moved off it, in topic id and partition order.
    fn drain_plan(&self, node_id: NodeId) -> DrainPlan {
        let mut draining: BTreeSet<NodeId> = self
            .image()
            .brokers()
            .filter(|b| b.draining())
            .map(|b| b.node_id)
            .collect();
        draining.insert(node_id);
        self.plan_moves_off(&draining, |s| {
            s.replicas.contains(&node_id) && !s.removing_replicas.contains(&node_id)
        })
    }

    /// [`plan_drain`] of the `draining` brokers' replicas in the partitions `include` takes
    /// (in topic id and partition order) onto the eligible brokers. Also the balancer's, for
    /// brokers gone longer than `balancer.broker.gone.ms`.
    pub(crate) fn plan_moves_off(
        &self,
        draining: &BTreeSet<NodeId>,
        include: impl Fn(&crate::image::PartitionState) -> bool,
    ) -> DrainPlan {
        let image = self.image();
        let mut partitions: Vec<DrainPartition> = image
            .all_partitions()
            .filter(|(_, _, s)| include(s))
            .map(|(topic_id, partition, s)| DrainPartition {
                topic_id,
                partition,
                replicas: s.target_replicas(),
            })
            .collect();
        partitions.sort_by_key(|p| (p.topic_id, p.partition));
        let racks: BTreeMap<NodeId, Option<String>> = image
            .brokers()
            .map(|b| (b.node_id, b.rack.clone()))
            .collect();
        let destinations = placement::eligible_brokers(image);
        plan_drain(draining, &racks, &destinations, image.load(), &partitions)
    }

    /// One line saying why `refused` (one of `count` partitions) blocks the drain.
    fn refusal_message(&self, node_id: NodeId, refused: &DrainRefused, count: usize) -> String {
        let name = self
            .image()
            .topic_by_id(&refused.topic_id)
            .map_or_else(|| refused.topic_id.to_string(), |t| t.name.clone());
        let more = if count > 1 {
            format!(" ({} more partition(s) likewise)", count - 1)
        } else {
            String::new()
        };
        match &refused.why {
            DrainRefusal::RackSpread {
                before,
                after,
                lost,
            } => format!(
                "cannot drain broker {node_id}: no other broker of rack {lost} can take a replica, \
                 so {name}-{} (replicas {:?} in racks {}) would span only {}{more}; add a broker \
                 to rack {lost} first",
                refused.partition,
                refused.replicas,
                rack_list(before),
                rack_list(after),
                lost = rack_list(lost),
            ),
            DrainRefusal::NoBroker { replica } => format!(
                "cannot drain broker {node_id}: no broker can take the replica of {name}-{} on \
                 broker {replica} (replicas {:?}): every other broker is fenced, cordoned, in \
                 maintenance or a replica already{more}",
                refused.partition, refused.replicas,
            ),
        }
    }

    /// Start the plan's moves as reassignments (with the maintenance throttle, if any);
    /// returns how many started.
    fn start_drain(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        node_id: NodeId,
        m: &Maintenance,
        plan: DrainPlan,
    ) -> usize {
        if plan.moves.is_empty() {
            return 0;
        }
        let targets: Vec<ReassignmentTarget> = plan
            .moves
            .iter()
            .map(|mv| ReassignmentTarget {
                topic_id: mv.topic_id,
                partition: mv.partition,
                replicas: Some(mv.target.clone()),
            })
            .collect();
        let r = self.alter_partition_reassignments(&targets, true);
        out.extend(r.records);
        let mut started = Vec::new();
        for (mv, result) in plan.moves.iter().zip(r.response) {
            match result {
                Ok(()) => started.push((mv.topic_id, mv.partition)),
                Err(e) => tracing::warn!(node_id, topic_id = %mv.topic_id,
                    partition = mv.partition, target = ?mv.target, error = %e,
                    "drain: the controller refused a move; trying again later"),
            }
        }
        if let Some(rate) = m.throttle_bytes_per_s {
            self.throttle_moves(out, rate, &started);
        }
        started.len()
    }

    /// Throttle the replication of `moves` (just started) at `rate` bytes/s: the cluster
    /// default rates (unless the operator set them) and the topics' throttled-replica lists
    /// (leader side: the original replicas; follower side: the ones being added), as Kafka's
    /// reassignment tool sets them.
    pub(crate) fn throttle_moves(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        rate: u64,
        moves: &[(Uuid, u32)],
    ) {
        for key in [LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE] {
            let current = self
                .image()
                .broker_configs(None)
                .and_then(|c| c.get(key))
                .cloned();
            match current {
                None => self.emit_record(
                    out,
                    MetadataRecord::BrokerConfig {
                        node_id: None,
                        key: key.into(),
                        value: Some(rate.to_string()),
                    },
                ),
                Some(v) if v == rate.to_string() => {}
                Some(v) => tracing::info!(key, current = %v, drain = rate,
                    "drain throttle: the cluster default {key} is already set; keeping it"),
            }
        }
        let mut by_topic: BTreeMap<Uuid, (Pairs, Pairs)> = BTreeMap::new();
        for (t, p) in moves {
            let Some(s) = self.image().partition(t, *p) else {
                continue;
            };
            let e = by_topic.entry(*t).or_default();
            e.0.extend(s.original_replicas().into_iter().map(|b| (*p, b)));
            e.1.extend(s.adding_replicas.iter().map(|b| (*p, *b)));
        }
        for (t, (leader, follower)) in by_topic {
            for (key, pairs) in [
                (LEADER_THROTTLED_REPLICAS, leader),
                (FOLLOWER_THROTTLED_REPLICAS, follower),
            ] {
                let current = self
                    .image()
                    .topic_by_id(&t)
                    .and_then(|x| x.configs.get(key))
                    .cloned();
                if let Some(value) = add_throttled(current.as_deref(), &pairs) {
                    self.emit_record(
                        out,
                        MetadataRecord::TopicConfig {
                            id: t,
                            key: key.into(),
                            value: Some(value),
                        },
                    );
                }
            }
        }
    }

    /// Remove what a drain's throttle set: pairs of partitions no longer being reassigned
    /// from the topics' throttled-replica lists, and the cluster default rates if they still
    /// hold `rate` and no other drain runs.
    fn clear_drain_throttles(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        node_id: NodeId,
        rate: Option<u64>,
    ) {
        let Some(rate) = rate else {
            return;
        };
        let other_drain = self.image().brokers().any(|b| {
            b.node_id != node_id
                && b.draining()
                && b.maintenance
                    .as_ref()
                    .is_some_and(|m| m.throttle_bytes_per_s.is_some())
        });
        self.clear_finished_throttles(out, rate, other_drain);
    }

    /// Remove throttles of moves that finished: `partition:broker` pairs of partitions no
    /// longer being reassigned from the topics' throttled-replica lists, and (unless
    /// `keep_rates`) the cluster default rates if they still hold `rate`.
    pub(crate) fn clear_finished_throttles(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        rate: u64,
        keep_rates: bool,
    ) {
        let mut changes: Vec<(Uuid, &str, Option<String>)> = Vec::new();
        for t in self.image().topics() {
            for key in [LEADER_THROTTLED_REPLICAS, FOLLOWER_THROTTLED_REPLICAS] {
                let Some(v) = t.configs.get(key) else {
                    continue;
                };
                let reassigning = |p: u32| {
                    self.image()
                        .partition(&t.id, p)
                        .is_some_and(|s| s.is_reassigning())
                };
                if let Some(new) = retain_throttled(v, |p, _| reassigning(p)) {
                    changes.push((t.id, key, new));
                }
            }
        }
        for (id, key, value) in changes {
            self.emit_record(
                out,
                MetadataRecord::TopicConfig {
                    id,
                    key: key.into(),
                    value,
                },
            );
        }
        if keep_rates {
            return;
        }
        for key in [LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE] {
            let ours = self
                .image()
                .broker_configs(None)
                .and_then(|c| c.get(key))
                .is_some_and(|v| *v == rate.to_string());
            if ours {
                self.emit_record(
                    out,
                    MetadataRecord::BrokerConfig {
                        node_id: None,
                        key: key.into(),
                        value: None,
                    },
                );
            }
        }
    }

    fn complete_drain(&mut self, out: &mut Vec<MetadataRecord>, node_id: NodeId, m: Maintenance) {
        self.clear_drain_throttles(out, node_id, m.throttle_bytes_per_s);
        self.emit_record(
            out,
            MetadataRecord::BrokerMaintenance {
                node_id,
                state: Some(Maintenance {
                    drain_completed: true,
                    ..m
                }),
            },
        );
        self.drain_retry_at.remove(&node_id);
        let leaders = self.image().partitions_led_by(node_id).count();
        tracing::info!(
            node_id,
            leaders,
            "drain of broker {node_id} completed: it holds no replica{}",
            if leaders > 0 {
                format!(" but still leads {leaders} partition(s)")
            } else {
                String::new()
            }
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::controller::{
        AlterPartition, BrokerHeartbeat, BrokerRegistration, ControllerConfig, CreateTopic,
    };
    use proptest::prelude::*;

    /// Brokers 1..=n, rack of broker i = racks[i-1], all unfenced; returns their epochs.
    pub(crate) fn controller(racks: &[&str]) -> (Controller, Vec<i64>) {
        let mut c = Controller::new(ControllerConfig::default());
        let mut epochs = Vec::new();
        for (i, rack) in racks.iter().enumerate() {
            let r = c
                .register_broker(
                    BrokerRegistration {
                        node_id: i as NodeId + 1,
                        incarnation_id: Uuid::new_v4(),
                        rack: Some(rack.to_string()),
                        endpoints: vec![],
                    },
                    0,
                )
                .unwrap();
            epochs.push(r.response);
        }
        for (i, epoch) in epochs.iter().enumerate() {
            heartbeat(&mut c, i as NodeId + 1, *epoch, false);
        }
        (c, epochs)
    }

    pub(crate) fn heartbeat(
        c: &mut Controller,
        node_id: NodeId,
        epoch: i64,
        want_fence: bool,
    ) -> Vec<MetadataRecord> {
        let offset = c.next_offset() - 1;
        c.heartbeat(
            BrokerHeartbeat {
                node_id,
                broker_epoch: epoch,
                current_metadata_offset: offset,
                want_fence,
            },
            0,
        )
        .unwrap()
        .records
    }

    pub(crate) fn topic(c: &mut Controller, name: &str, partitions: u32, rf: u16) -> Uuid {
        c.create_topic(
            CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: BTreeMap::new(),
            },
            Uuid::new_v4(),
        )
        .unwrap()
        .response
        .topic_id
    }

    fn enable(
        c: &mut Controller,
        node_id: NodeId,
        drain: bool,
        throttle: Option<u64>,
    ) -> Result<ControllerResult<MaintenanceOutcome>, ControllerError> {
        c.set_maintenance(
            node_id,
            Some(MaintenanceRequest {
                drain_replicas: drain,
                throttle_bytes_per_s: throttle,
            }),
        )
    }

    /// Every follower being added catches up: its leader adds it to the ISR, which completes
    /// the move.
    pub(crate) fn catch_up_all(c: &mut Controller, epochs: &[i64]) {
        let moving: Vec<(Uuid, u32)> = c.image().reassigning_partitions().collect();
        for (t, p) in moving {
            let s = c.image().partition(&t, p).unwrap().clone();
            let mut isr = s.isr.clone();
            isr.extend(s.adding_replicas.iter().copied());
            c.alter_partition(AlterPartition {
                node_id: s.leader,
                broker_epoch: epochs[s.leader as usize - 1],
                topic_id: t,
                partition: p,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                new_isr: isr,
            })
            .unwrap();
        }
    }

    pub(crate) fn racks_of(c: &Controller, replicas: &[NodeId]) -> BTreeSet<Option<String>> {
        replicas
            .iter()
            .map(|b| c.image().broker(*b).unwrap().rack.clone())
            .collect()
    }

    pub(crate) fn on_broker(c: &Controller, node_id: NodeId) -> usize {
        c.image()
            .all_partitions()
            .filter(|(_, _, s)| s.replicas.contains(&node_id))
            .count()
    }

    #[test]
    fn drain_keeps_rack_spread_and_completes_with_throttles_cleared() {
        // The shape: racks a, b, c, a.
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic(&mut c, "orders", 12, 3);
        let on_4: Vec<u32> = c
            .image()
            .partitions(&t)
            .filter(|(_, s)| s.replicas.contains(&4))
            .map(|(p, _)| p)
            .collect();
        let led_by_4 = c.image().partitions_led_by(4).count();
        assert!(!on_4.is_empty() && led_by_4 > 0);
        let before = c.image().clone();
        let r = enable(&mut c, 4, true, Some(1_000_000)).unwrap();
        assert_eq!(r.response.leaders_moved, led_by_4);
        assert_eq!(r.response.leaders_kept, 0);
        assert_eq!(r.response.reassignments_started, on_4.len());
        let b = c.image().broker(4).unwrap();
        assert!(b.cordoned && b.draining());
        assert_eq!(
            c.image().partitions_led_by(4).count(),
            0,
            "no leadership left on 4"
        );
        for p in &on_4 {
            let s = c.image().partition(&t, *p).unwrap();
            assert_eq!(s.removing_replicas, vec![4], "{s:?}");
            let target = s.target_replicas();
            assert_eq!(
                racks_of(&c, &target),
                racks_of(&c, &before.partition(&t, *p).unwrap().replicas),
                "rack spread kept: {target:?}"
            );
            assert!(
                target.contains(&1),
                "rack a's other broker takes it: {target:?}"
            );
        }
        // Throttles as Kafka's reassignment tool sets them.
        let topic = c.image().topic("orders").unwrap();
        let followers = topic.configs[FOLLOWER_THROTTLED_REPLICAS].clone();
        assert!(
            on_4.iter().all(|p| followers.contains(&format!("{p}:1"))),
            "{followers}"
        );
        assert!(topic.configs[LEADER_THROTTLED_REPLICAS].contains(":4"));
        assert_eq!(
            c.image().broker_config(2, LEADER_THROTTLED_RATE),
            Some("1000000")
        );
        // Ticks before the moves complete write nothing.
        assert!(c.maintenance_tick(1).records.is_empty());
        catch_up_all(&mut c, &epochs);
        assert_eq!(on_broker(&c, 4), 0);
        let status = &broker_status(c.image(), Some(4))[0];
        assert!(!status.safe_to_remove, "not before the drain completes");
        assert!(status.reasons[0].contains("finishing"), "{status:?}");
        let done = c.maintenance_tick(2);
        assert!(!done.records.is_empty());
        let b = c.image().broker(4).unwrap();
        assert!(b.maintenance.as_ref().unwrap().drain_completed);
        let topic = c.image().topic("orders").unwrap();
        assert!(!topic.configs.contains_key(FOLLOWER_THROTTLED_REPLICAS));
        assert!(!topic.configs.contains_key(LEADER_THROTTLED_REPLICAS));
        assert_eq!(c.image().broker_config(2, LEADER_THROTTLED_RATE), None);
        assert!(c.maintenance_tick(3).records.is_empty(), "completes once");
        let status = &broker_status(c.image(), Some(4))[0];
        assert!(status.safe_to_remove, "{status:?}");
        // Removal: refused while it runs, accepted once stopped.
        assert_eq!(c.remove_broker(4).unwrap_err().code(), 42);
        heartbeat(&mut c, 4, epochs[3], true);
        c.remove_broker(4).unwrap();
        assert!(c.image().broker(4).is_none());
        assert_eq!(c.remove_broker(4).unwrap_err().code(), 102);
    }

    #[test]
    fn draining_the_last_broker_of_a_rack_is_refused_and_changes_nothing() {
        let (mut c, _) = controller(&["a", "b", "c", "a"]);
        topic(&mut c, "orders", 8, 3);
        let before = c.image().clone();
        let e = enable(&mut c, 2, true, None).unwrap_err();
        assert_eq!(e.code(), 39, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("rack b") && msg.contains("orders-"), "{msg}");
        assert_eq!(c.image(), &before);
        // Maintenance without a drain is fine: leaderships move, replicas stay.
        let r = enable(&mut c, 2, false, None).unwrap();
        assert_eq!(r.response.reassignments_started, 0);
        assert_eq!(c.image().partitions_led_by(2).count(), 0);
        assert_eq!(on_broker(&c, 2), before.load()[&2].replicas as usize);
    }

    #[test]
    fn a_broker_without_replicas_is_drained_at_once() {
        let (mut c, _) = controller(&["a", "b", "c", "a"]);
        topic(&mut c, "t", 1, 3);
        let empty = (1..=4).find(|b| on_broker(&c, *b) == 0).unwrap();
        enable(&mut c, empty, true, Some(10)).unwrap();
        let m = c
            .image()
            .broker(empty)
            .unwrap()
            .maintenance
            .clone()
            .unwrap();
        assert!(m.drain_completed);
        assert!(broker_status(c.image(), Some(empty))[0].safe_to_remove);
        assert_eq!(c.image().broker_config(1, LEADER_THROTTLED_RATE), None);
    }

    #[test]
    fn removing_a_broker_with_data_is_refused() {
        let (mut c, epochs) = controller(&["a", "b", "c"]);
        topic(&mut c, "t", 3, 3);
        heartbeat(&mut c, 3, epochs[2], true);
        let e = c.remove_broker(3).unwrap_err();
        assert_eq!(e.code(), 42);
        assert!(e.to_string().contains("holds 3 replica(s)"), "{e}");
        assert_eq!(c.remove_broker(9).unwrap_err().code(), 102);
    }

    #[test]
    fn a_broker_in_maintenance_gets_no_leadership_back_until_it_leaves() {
        let (mut c, epochs) = controller(&["a", "b", "c"]);
        let t = topic(&mut c, "t", 6, 3);
        let preferred_1: Vec<u32> = c
            .image()
            .partitions(&t)
            .filter(|(_, s)| s.preferred_leader() == 1)
            .map(|(p, _)| p)
            .collect();
        enable(&mut c, 1, false, None).unwrap();
        assert_eq!(c.image().partitions_led_by(1).count(), 0);
        // The periodic preferred election leaves it alone.
        assert!(c.elect_preferred_leaders().records.is_empty());
        // Uncordoning while in maintenance is refused.
        assert_eq!(c.set_cordoned(1, false).unwrap_err().code(), 42);
        // Broker 2 stops: elections pick 3, not 1.
        heartbeat(&mut c, 2, epochs[1], true);
        for (_, s) in c.image().partitions(&t) {
            assert_ne!(s.leader, 1, "{s:?}");
            assert_ne!(s.leader, NO_LEADER, "{s:?}");
        }
        // Broker 3 stops too: 1 is the only in-sync replica left, so it leads.
        heartbeat(&mut c, 3, epochs[2], true);
        assert_eq!(c.image().partitions_led_by(1).count(), 6);
        // 2 comes back and into the ISRs: the tick moves leadership off 1 again.
        heartbeat(&mut c, 2, epochs[1], false);
        for p in 0..6 {
            let s = c.image().partition(&t, p).unwrap().clone();
            let mut isr = s.isr.clone();
            isr.push(2);
            c.alter_partition(AlterPartition {
                node_id: 1,
                broker_epoch: epochs[0],
                topic_id: t,
                partition: p,
                leader_epoch: s.leader_epoch,
                partition_epoch: s.partition_epoch,
                new_isr: isr,
            })
            .unwrap();
        }
        let r = c.maintenance_tick(1);
        assert_eq!(r.response.leaders_moved, 6);
        assert_eq!(c.image().partitions_led_by(2).count(), 6);
        // Leaving gives back its preferred leaderships (those in sync) and uncordons it.
        heartbeat(&mut c, 3, epochs[2], false);
        let r = c.set_maintenance(1, None).unwrap();
        assert_eq!(r.response.leaders_moved, preferred_1.len());
        for p in &preferred_1 {
            assert_eq!(c.image().partition(&t, *p).unwrap().leader, 1);
        }
        let b = c.image().broker(1).unwrap();
        assert!(!b.cordoned && !b.in_maintenance());
    }

    #[test]
    fn leaving_maintenance_mid_drain_cancels_the_moves_and_clears_throttles() {
        let (mut c, _) = controller(&["a", "b", "c", "a"]);
        let t = topic(&mut c, "t", 8, 3);
        // The same replicas (cancelling keeps Kafka's order: the target ones first).
        let replicas_before: Vec<BTreeSet<NodeId>> = c
            .image()
            .partitions(&t)
            .map(|(_, s)| s.replicas.iter().copied().collect())
            .collect();
        // Broker 4 was cordoned before: it stays cordoned after maintenance.
        c.set_cordoned(4, true).unwrap();
        enable(&mut c, 4, true, Some(500)).unwrap();
        let moving = c.image().reassigning_count();
        assert!(moving > 0);
        let r = c.set_maintenance(4, None).unwrap();
        assert_eq!(r.response.reassignments_cancelled, moving);
        assert_eq!(c.image().reassigning_count(), 0);
        let after: Vec<BTreeSet<NodeId>> = c
            .image()
            .partitions(&t)
            .map(|(_, s)| s.replicas.iter().copied().collect())
            .collect();
        assert_eq!(after, replicas_before);
        let b = c.image().broker(4).unwrap();
        assert!(b.cordoned && !b.in_maintenance());
        let topic = c.image().topic("t").unwrap();
        assert!(
            !topic.configs.contains_key(LEADER_THROTTLED_REPLICAS),
            "{:?}",
            topic.configs
        );
        assert_eq!(c.image().broker_config(1, FOLLOWER_THROTTLED_RATE), None);
        // Leaving again is a no-op.
        assert!(c.set_maintenance(4, None).unwrap().records.is_empty());
    }

    #[test]
    fn a_new_active_controller_finishes_the_drain() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        topic(&mut c, "t", 6, 3);
        topic(&mut c, "u", 6, 2);
        enable(&mut c, 4, true, Some(1 << 20)).unwrap();
        // Failover: a controller rebuilt from the committed image, which also sees a
        // cancelled move (an operator) that the drain must pick up again.
        let moving: Vec<(Uuid, u32)> = c.image().reassigning_partitions().collect();
        let (t0, p0) = moving[0];
        let r = c.alter_partition_reassignments(
            &[ReassignmentTarget {
                topic_id: t0,
                partition: p0,
                replicas: None,
            }],
            true,
        );
        assert!(r.response[0].is_ok());
        let mut next = Controller::from_image(*c.config(), c.image().clone(), c.next_offset());
        next.activate(0);
        let r = next.maintenance_tick(0);
        assert_eq!(
            r.response.reassignments_started, 1,
            "the cancelled move starts again"
        );
        catch_up_all(&mut next, &epochs);
        next.maintenance_tick(1);
        assert_eq!(on_broker(&next, 4), 0);
        assert!(
            next.image()
                .broker(4)
                .unwrap()
                .maintenance
                .as_ref()
                .unwrap()
                .drain_completed
        );
        assert_eq!(next.image().broker_config(1, LEADER_THROTTLED_RATE), None);
    }

    #[test]
    fn a_drain_that_cannot_move_a_replica_retries_later() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        topic(&mut c, "t", 4, 3);
        enable(&mut c, 4, true, None).unwrap();
        catch_up_all(&mut c, &epochs);
        // A replica lands on 4 anyway (a partition committed before the cordon, say), while
        // broker 1, the only other broker of rack a, is down.
        heartbeat(&mut c, 1, epochs[0], true);
        let id = Uuid::new_v4();
        c.replay(&MetadataRecord::Topic {
            name: "late".into(),
            id,
            partitions: 1,
            configs: BTreeMap::new(),
        });
        c.replay(&MetadataRecord::Partition {
            topic_id: id,
            partition: 0,
            replicas: vec![2, 3, 4],
            isr: vec![2, 3, 4],
            leader: 2,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
        });
        let r = c.maintenance_tick(100);
        assert_eq!(r.response.reassignments_started, 0);
        assert!(r.records.is_empty(), "{:?}", r.records);
        // Broker 1 returns: the next try after the retry delay moves it.
        heartbeat(&mut c, 1, epochs[0], false);
        assert_eq!(
            c.maintenance_tick(100 + DRAIN_RETRY_MS - 1)
                .response
                .reassignments_started,
            0
        );
        assert_eq!(
            c.maintenance_tick(100 + DRAIN_RETRY_MS)
                .response
                .reassignments_started,
            1
        );
        catch_up_all(&mut c, &epochs);
        c.maintenance_tick(200 + DRAIN_RETRY_MS);
        assert!(
            c.image()
                .broker(4)
                .unwrap()
                .maintenance
                .as_ref()
                .unwrap()
                .drain_completed
        );
    }

    /// Replica counts after draining broker 1 of a cluster laid out by placement.
    fn counts_after_drain(racks: &[&str], topics: u32, rf: u16) -> BTreeMap<NodeId, u32> {
        let (mut c, epochs) = controller(racks);
        for i in 0..topics {
            topic(&mut c, &format!("t{i}"), 10, rf);
        }
        enable(&mut c, 1, true, None).unwrap();
        catch_up_all(&mut c, &epochs);
        c.maintenance_tick(1);
        assert_eq!(on_broker(&c, 1), 0);
        c.image()
            .load()
            .iter()
            .map(|(b, l)| (*b, l.replicas))
            .collect()
    }

    #[test]
    fn drained_replicas_spread_evenly_within_what_racks_allow() {
        // One rack: the other brokers end within one replica of the fair share.
        let counts = counts_after_drain(&["a"; 6], 6, 3);
        let fair = counts.values().sum::<u32>() / counts.len() as u32;
        assert!(counts.values().all(|c| c.abs_diff(fair) <= 1), "{counts:?}");
        // Two racks, RF 2: broker 1's replicas go to the other brokers of rack a (3 and 5),
        // evenly.
        let counts = counts_after_drain(&["a", "b", "a", "b", "a", "b"], 6, 2);
        assert!(counts[&3].abs_diff(counts[&5]) <= 1, "{counts:?}");
        assert!(
            counts[&2].abs_diff(counts[&4]) <= 1,
            "rack b untouched: {counts:?}"
        );
        // Three racks, RF 3: rack spread comes first, so broker 4, the only other broker of
        // rack a, takes every replica of broker 1.
        let counts = counts_after_drain(&["a", "b", "c", "a"], 3, 3);
        assert_eq!(counts[&4], 30, "{counts:?}");
    }

    #[test]
    fn throttled_replica_lists_merge_and_shrink() {
        assert_eq!(
            add_throttled(None, &[(0, 1), (1, 2)]).as_deref(),
            Some("0:1,1:2")
        );
        assert_eq!(
            add_throttled(Some("0:1"), &[(0, 1), (2, 3)]).as_deref(),
            Some("0:1,2:3")
        );
        assert_eq!(add_throttled(Some("0:1"), &[(0, 1)]), None);
        assert_eq!(add_throttled(Some("*"), &[(0, 1)]), None);
        assert_eq!(add_throttled(Some("junk"), &[(0, 1)]), None);
        assert_eq!(
            retain_throttled("0:1,1:2,2:3", |p, _| p != 1),
            Some(Some("0:1,2:3".into()))
        );
        assert_eq!(retain_throttled("0:1", |_, _| false), Some(None));
        assert_eq!(retain_throttled("0:1", |_, _| true), None);
        assert_eq!(retain_throttled("*", |_, _| false), None);
    }

    fn brokers(racks: &[usize]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| PlacementBroker {
                id: i as NodeId + 1,
                rack: Some(["a", "b", "c", "d"][*r].to_string()),
            })
            .collect()
    }

    /// The most racks any choice of replacements for the draining replicas could span.
    fn best_spread(
        p: &DrainPartition,
        draining: &BTreeSet<NodeId>,
        dest: &[PlacementBroker],
        rack: &dyn Fn(NodeId) -> Option<String>,
    ) -> Option<usize> {
        let kept: Vec<NodeId> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !draining.contains(r))
            .collect();
        let need = p.replicas.len() - kept.len();
        let free: Vec<NodeId> = dest
            .iter()
            .map(|b| b.id)
            .filter(|b| !kept.contains(b) && !draining.contains(b))
            .collect();
        if free.len() < need {
            return None;
        }
        // Every subset of `need` free brokers (small: at most 8 brokers).
        let mut best = 0;
        for mask in 0u32..(1 << free.len()) {
            if mask.count_ones() as usize != need {
                continue;
            }
            let mut racks: BTreeSet<Option<String>> = kept.iter().map(|b| rack(*b)).collect();
            for (i, b) in free.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    racks.insert(rack(*b));
                }
            }
            best = best.max(racks.len());
        }
        Some(best)
    }

    proptest! {
        /// On layouts placement made: moves replace only draining replicas, in place, by
        /// distinct eligible brokers, never lowering a partition's rack spread; a partition is
        /// refused only when no choice could keep its spread (checked by brute force).
        #[test]
        fn drain_plans_are_valid_and_refused_only_when_they_must(
            rack_of in prop::collection::vec(0usize..4, 2..8),
            partitions in 1u32..40,
            rf in 1u16..4,
            drain_idx in 0usize..8,
            excluded in prop::collection::vec(any::<bool>(), 8),
        ) {
            let all = brokers(&rack_of);
            prop_assume!(usize::from(rf) <= all.len());
            let layout = placement::place(&all, &HashMap::new(), partitions, rf).unwrap();
            let drained = all[drain_idx % all.len()].id;
            let draining: BTreeSet<NodeId> = [drained].into();
            // Some brokers are fenced or cordoned: not destinations.
            let dest: Vec<PlacementBroker> = all
                .iter()
                .filter(|b| b.id != drained && !excluded[b.id as usize - 1])
                .cloned()
                .collect();
            let mut load: HashMap<NodeId, BrokerLoad> = HashMap::new();
            for r in &layout {
                for (i, b) in r.iter().enumerate() {
                    let l = load.entry(*b).or_default();
                    l.replicas += 1;
                    l.leaders += u32::from(i == 0);
                }
            }
            let racks: BTreeMap<NodeId, Option<String>> =
                all.iter().map(|b| (b.id, b.rack.clone())).collect();
            let rack = |b: NodeId| racks[&b].clone();
            let parts: Vec<DrainPartition> = layout
                .iter()
                .enumerate()
                .map(|(i, r)| DrainPartition { topic_id: Uuid::nil(), partition: i as u32, replicas: r.clone() })
                .collect();
            let plan = plan_drain(&draining, &racks, &dest, &load, &parts);
            let affected = parts.iter().filter(|p| p.replicas.contains(&drained)).count();
            prop_assert_eq!(plan.moves.len() + plan.refused.len(), affected);
            for m in &plan.moves {
                prop_assert_eq!(m.target.len(), m.replicas.len());
                let distinct: BTreeSet<_> = m.target.iter().collect();
                prop_assert_eq!(distinct.len(), m.target.len(), "repeated broker {:?}", m.target);
                for (old, new) in m.replicas.iter().zip(&m.target) {
                    if *old == drained {
                        prop_assert!(dest.iter().any(|b| b.id == *new), "{} is not a destination", new);
                    } else {
                        prop_assert_eq!(old, new, "a kept replica moved");
                    }
                }
                let before: BTreeSet<_> = m.replicas.iter().map(|b| rack(*b)).collect();
                let after: BTreeSet<_> = m.target.iter().map(|b| rack(*b)).collect();
                prop_assert!(after.len() >= before.len(), "spread {:?} -> {:?}", m.replicas, m.target);
            }
            for r in &plan.refused {
                let p = parts.iter().find(|p| p.partition == r.partition).unwrap();
                let before = p.replicas.iter().map(|b| rack(*b)).collect::<BTreeSet<_>>().len();
                match &r.why {
                    DrainRefusal::NoBroker { .. } => {
                        prop_assert!(best_spread(p, &draining, &dest, &rack).is_none(), "refused {:?} but a broker was free", p.replicas);
                    }
                    DrainRefusal::RackSpread { .. } => {
                        let best = best_spread(p, &draining, &dest, &rack).unwrap();
                        prop_assert!(best < before, "refused {:?}: spread {} was possible", p.replicas, before);
                    }
                }
            }
        }
    }
}
