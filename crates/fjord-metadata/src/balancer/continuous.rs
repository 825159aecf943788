//! Continuous mode (`balancer.mode=continuous`): the active controller runs the planner on its
//! own and carries the plans out, like Cruise Control's self-healing and goal violation
//! detection. Pure, like the rest of the controller: the runtime (`quorum::service`) calls
//! [`Controller::balancer_tick`] from its timer with the time, keeps the [`BalancerState`]
//! between calls (soft state: a new active controller starts a fresh one) and writes the
//! records it returns.
//!
//! A round starts every `balancer.interval.ms`, and only when no move of the previous round is
//! still in progress (nor, on a new active controller, any reassignment that was in progress
//! when it took over: it cannot tell whose they were) and no maintenance drain runs:
//! 1. **gone brokers** first: a broker fenced for `balancer.broker.gone.ms` that still holds
//!    replicas has them moved to live brokers by the drain planner
//!    ([`crate::maintenance::plan_drain`]: rack spread kept, replicas evened out); a partition
//!    that cannot keep its rack spread stays and is logged, and one without a leader (nothing
//!    to copy from) stays until a replica comes back;
//! 2. otherwise, unless a broker holding replicas is fenced but not gone yet (it may be
//!    restarting: balancing around it would take its leaderships and replicas for good),
//!    **imbalance**: the planner ([`super::plan`]) runs when its goals are violated
//!    — a partition below its rack spread, replicas or preferred leaders per broker not within
//!    one of each other (a new, empty broker), disk bytes or network bytes of the fullest
//!    broker above `(100 + balancer.imbalance.threshold.percent) %` of the fair share.
//!
//! A move of this balancer's whose target holds a broker that is then gone is cancelled (it
//! could never complete). At most `balancer.max.concurrent.moves` partitions get new replicas
//! per round, as KIP-455 reassignments, throttled with Kafka's throttle configs at `balancer.throttle.bytes.per.sec`
//! (cleared once the round's moves are done). Partitions with a reassignment in progress (an
//! operator's, a drain's) are never touched; fenced and cordoned brokers (so brokers in
//! maintenance) receive nothing. Leadership-only changes reorder the replicas and elect the new
//! preferred leader in the same batch; a data move's new preferred leader is elected once the
//! move completes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BalancerInput, BalancerOptions, Imbalance, PartitionRate};
use crate::controller::{election_error, Controller, ControllerResult, ElectionType};
use crate::reassignment::ReassignmentTarget;
use crate::record::{MetadataRecord, NodeId, NO_LEADER};

/// `balancer.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerMode {
    /// Nothing happens on its own; `fjord cluster rebalance` plans and executes on request.
    #[default]
    Off,
    Continuous,
}

impl BalancerMode {
    pub fn parse(v: &str) -> Result<BalancerMode, String> {
        match v.trim() {
            "off" => Ok(BalancerMode::Off),
            "continuous" => Ok(BalancerMode::Continuous),
            other => Err(format!(
                "invalid value {other:?} for balancer.mode: expected off or continuous"
            )),
        }
    }
}

/// The continuous balancer's settings (`balancer.*` broker configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancerConfig {
    pub mode: BalancerMode,
    /// `balancer.interval.ms`: how often a round may start.
    pub interval_ms: i64,
    /// `balancer.broker.gone.ms`: how long a broker must be fenced before its replicas move.
    pub broker_gone_ms: i64,
    /// `balancer.max.concurrent.moves`: partitions getting new replicas per round.
    pub max_concurrent_moves: usize,
    /// `balancer.throttle.bytes.per.sec` (0 in the config: none).
    pub throttle_bytes_per_s: Option<u64>,
    /// `balancer.imbalance.threshold.percent`: how far above the fair share disk or network
    /// bytes of the fullest broker may be before a round balances them.
    pub imbalance_threshold_percent: u32,
}

impl Default for BalancerConfig {
    /// Off; a round a minute at most, brokers gone for 30 minutes re-replicated, 5 moves at a
    /// time, no throttle, 10 % over the fair share.
    fn default() -> Self {
        BalancerConfig {
            mode: BalancerMode::Off,
            interval_ms: 60_000,
            broker_gone_ms: 1_800_000,
            max_concurrent_moves: 5,
            throttle_bytes_per_s: None,
            imbalance_threshold_percent: 10,
        }
    }
}

/// The broker config keys and their defaults (the broker's config lists them).
pub const CONFIG_KEYS: [(&str, &str); 6] = [
    ("balancer.mode", "off"),
    ("balancer.interval.ms", "60000"),
    ("balancer.broker.gone.ms", "1800000"),
    ("balancer.max.concurrent.moves", "5"),
    ("balancer.throttle.bytes.per.sec", "0"),
    ("balancer.imbalance.threshold.percent", "10"),
];

impl BalancerConfig {
    /// From the `balancer.*` keys (`get` returns the value or the default).
    pub fn from_keys(get: &dyn Fn(&str) -> String) -> Result<BalancerConfig, String> {
        let int = |key: &str, min: i64| -> Result<i64, String> {
            let v = get(key);
            match v.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!(
                    "invalid value {v:?} for {key}: expected an integer of at least {min}"
                )),
            }
        };
        let throttle = int("balancer.throttle.bytes.per.sec", 0)?;
        Ok(BalancerConfig {
            mode: BalancerMode::parse(&get("balancer.mode"))?,
            interval_ms: int("balancer.interval.ms", 100)?,
            broker_gone_ms: int("balancer.broker.gone.ms", 0)?,
            max_concurrent_moves: int("balancer.max.concurrent.moves", 1)?.min(100_000) as usize,
            throttle_bytes_per_s: (throttle > 0).then_some(throttle as u64),
            imbalance_threshold_percent: int("balancer.imbalance.threshold.percent", 0)?
                .min(1_000_000) as u32,
        })
    }
}

/// Replica sizes and traffic the runtime learned from the brokers, by topic and partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BalancerLoads {
    pub sizes: BTreeMap<(String, u32), u64>,
    pub rates: BTreeMap<(String, u32), PartitionRate>,
}

/// Imbalance as whole numbers (for the status and the gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImbalanceSummary {
    pub replicas_min: u64,
    pub replicas_max: u64,
    pub leaders_min: u64,
    pub leaders_max: u64,
    #[serde(default)]
    pub disk_bytes_min: Option<u64>,
    #[serde(default)]
    pub disk_bytes_max: Option<u64>,
    #[serde(default)]
    pub network_bytes_per_s_min: Option<u64>,
    #[serde(default)]
    pub network_bytes_per_s_max: Option<u64>,
    pub rack_violations: u64,
}

impl From<&Imbalance> for ImbalanceSummary {
    fn from(i: &Imbalance) -> Self {
        ImbalanceSummary {
            replicas_min: i.replicas.min,
            replicas_max: i.replicas.max,
            leaders_min: i.leaders.min,
            leaders_max: i.leaders.max,
            disk_bytes_min: i.disk_bytes.map(|s| s.min),
            disk_bytes_max: i.disk_bytes.map(|s| s.max),
            network_bytes_per_s_min: i.network.map(|s| s.min),
            network_bytes_per_s_max: i.network.map(|s| s.max),
            rack_violations: i.rack_violations,
        }
    }
}

/// What started a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundReason {
    /// Brokers fenced longer than `balancer.broker.gone.ms` held replicas.
    BrokerGone,
    /// The planner's goals were violated.
    Imbalance,
}

/// One round the balancer started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerRound {
    pub reason: RoundReason,
    /// Controller time (ms) it started.
    pub started_at_ms: i64,
    /// Partitions getting new replicas.
    pub data_moves: usize,
    /// Partitions whose preferred leader changed without data moving.
    pub leadership_moves: usize,
    /// Bytes to copy, when sizes were known.
    pub bytes_to_move: Option<u64>,
    /// The brokers that were gone (reason `broker_gone`).
    #[serde(default)]
    pub gone_brokers: Vec<NodeId>,
    /// Moves the planner wanted that the controller refused or the drain planner could not
    /// place (logged).
    #[serde(default)]
    pub refused: usize,
    pub imbalance_before: Option<ImbalanceSummary>,
    pub imbalance_after: Option<ImbalanceSummary>,
}

/// The balancer's state as the active controller reports it (`GET /v1/balancer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerStatus {
    pub mode: BalancerMode,
    /// `off`, `idle` (balanced, or nothing the goals allow), `moving` (a round's moves in
    /// progress, or at first any reassignment), `waiting` (a drain runs, or a broker holding
    /// replicas is down but not gone yet).
    pub state: String,
    /// Rounds and data moves started by this active controller.
    pub rounds: u64,
    pub moves_started: u64,
    pub moves_in_progress: usize,
    /// Brokers fenced and how long (ms), with whether they count as gone.
    pub fenced_brokers: Vec<FencedBroker>,
    pub last_round: Option<BalancerRound>,
    /// The imbalance at the last check.
    pub imbalance: Option<ImbalanceSummary>,
    /// Whether sizes and traffic rates were known at the last check.
    pub sizes_known: bool,
    pub rates_known: bool,
    /// Milliseconds until the next round may start.
    pub next_round_in_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedBroker {
    pub node_id: NodeId,
    pub fenced_for_ms: i64,
    pub gone: bool,
}

/// The active controller's balancer state between ticks (not in the log).
#[derive(Debug, Default)]
pub struct BalancerState {
    started: bool,
    /// When each fenced broker was first seen fenced.
    fenced_since: BTreeMap<NodeId, i64>,
    /// Partitions this balancer is moving (or, at first, every partition that was).
    in_flight: BTreeSet<(Uuid, u32)>,
    /// Those of `in_flight` that were moving when this controller took over (whose they
    /// were is unknown: never cancelled).
    inherited: BTreeSet<(Uuid, u32)>,
    /// Whether it set throttles that are not cleared yet (or, at first, whether it may have).
    throttled: Option<u64>,
    next_round_at: i64,
    /// Sizes and rates, when the runtime has them.
    pub loads: Option<BalancerLoads>,
    pub status: BalancerStatus,
}

impl BalancerState {
    pub fn new() -> BalancerState {
        BalancerState::default()
    }
}

impl Controller {
    /// The balancer's share of the timer: start a round when one is due (see the module
    /// docs), elect preferred leaders of finished moves, clear throttles once a round is done.
    /// Returns the round started, if any.
    pub fn balancer_tick(
        &mut self,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        now: i64,
    ) -> ControllerResult<Option<BalancerRound>> {
        let mut out = Vec::new();
        st.status.mode = cfg.mode;
        if cfg.mode == BalancerMode::Off {
            st.status.state = "off".into();
            return ControllerResult {
                records: out,
                response: None,
            };
        }
        if !st.started {
            // A new active controller: whatever is moving may be a previous round's.
            st.started = true;
            st.in_flight = self.image().reassigning_partitions().collect();
            st.inherited = st.in_flight.clone();
            st.throttled = cfg.throttle_bytes_per_s;
            st.next_round_at = now + cfg.interval_ms;
        }
        self.note_fenced(st, cfg, now);
        let round = self.balancer_step(&mut out, st, cfg, now);
        st.status.moves_in_progress = st.in_flight.len();
        st.status.next_round_in_ms = Some((st.next_round_at - now).max(0));
        if let Some(r) = &round {
            st.status.rounds += 1;
            st.status.moves_started += r.data_moves as u64;
            st.status.last_round = Some(r.clone());
        }
        ControllerResult {
            records: out,
            response: round,
        }
    }

    fn note_fenced(&self, st: &mut BalancerState, cfg: &BalancerConfig, now: i64) {
        let fenced: BTreeSet<NodeId> = self
            .image()
            .brokers()
            .filter(|b| b.fenced)
            .map(|b| b.node_id)
            .collect();
        st.fenced_since.retain(|b, _| fenced.contains(b));
        for b in &fenced {
            st.fenced_since.entry(*b).or_insert(now);
        }
        st.status.fenced_brokers = st
            .fenced_since
            .iter()
            .map(|(b, since)| FencedBroker {
                node_id: *b,
                fenced_for_ms: now - since,
                gone: now - since >= cfg.broker_gone_ms,
            })
            .collect();
    }

    fn balancer_step(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        now: i64,
    ) -> Option<BalancerRound> {
        // Moves that finished: their new preferred leaders lead now.
        let finished: Vec<(Uuid, u32)> = st
            .in_flight
            .iter()
            .copied()
            .filter(|(t, p)| {
                self.image()
                    .partition(t, *p)
                    .is_none_or(|s| !s.is_reassigning())
            })
            .collect();
        for (t, p) in &finished {
            st.in_flight.remove(&(*t, *p));
            st.inherited.remove(&(*t, *p));
            self.elect_one(out, ElectionType::Preferred, *t, *p);
        }
        self.cancel_moves_onto_gone(out, st);
        if !st.in_flight.is_empty() {
            st.status.state = "moving".into();
            return None;
        }
        if let Some(rate) = st.throttled.take() {
            let drain_throttled = self.image().brokers().any(|b| {
                b.draining()
                    && b.maintenance
                        .as_ref()
                        .is_some_and(|m| m.throttle_bytes_per_s.is_some())
            });
            self.clear_finished_throttles(out, rate, drain_throttled);
        }
        st.status.state = "idle".into();
        if now < st.next_round_at {
            return None;
        }
        st.next_round_at = now + cfg.interval_ms;
        if let Some(b) = self.image().brokers().find(|b| b.draining()) {
            tracing::debug!(node_id = b.node_id, "balancer: a drain runs; no round");
            st.status.state = "waiting".into();
            return None;
        }
        let holding: Vec<&FencedBroker> = st
            .status
            .fenced_brokers
            .iter()
            .filter(|f| {
                self.image()
                    .load()
                    .get(&f.node_id)
                    .is_some_and(|l| l.replicas > 0)
            })
            .collect();
        let gone: BTreeSet<NodeId> = holding
            .iter()
            .filter(|f| f.gone)
            .map(|f| f.node_id)
            .collect();
        let down = holding.len() - gone.len();
        if !gone.is_empty() {
            if let Some(round) = self.heal(out, st, cfg, &gone, now) {
                return Some(round);
            }
        }
        if down > 0 {
            // A broker that is down but not gone may be restarting: balancing around it now
            // would take its preferred leaderships and replicas for good.
            st.status.state = "waiting".into();
            return None;
        }
        self.rebalance(out, st, cfg, now)
    }

    /// While a broker is gone, cancel this balancer's moves whose target keeps or adds a replica
    /// on a gone broker, or whose partition has no leader left (nothing to copy from, say an
    /// RF-1 partition moving off the gone broker): they complete only once every target
    /// replica is in sync, so they never would, and would hold every further round (the gone
    /// broker's re-replication among them). The partition goes back to its original replicas
    /// (and a later round re-replicates what can be).
    fn cancel_moves_onto_gone(&mut self, out: &mut Vec<MetadataRecord>, st: &mut BalancerState) {
        let gone: BTreeSet<NodeId> = st
            .status
            .fenced_brokers
            .iter()
            .filter(|f| f.gone)
            .map(|f| f.node_id)
            .collect();
        if gone.is_empty() {
            return;
        }
        let stuck: Vec<ReassignmentTarget> = st
            .in_flight
            .difference(&st.inherited)
            .filter(|(t, p)| {
                self.image().partition(t, *p).is_some_and(|s| {
                    s.leader == NO_LEADER || s.target_replicas().iter().any(|b| gone.contains(b))
                })
            })
            .map(|(t, p)| ReassignmentTarget {
                topic_id: *t,
                partition: *p,
                replicas: None,
            })
            .collect();
        if stuck.is_empty() {
            return;
        }
        let r = self.alter_partition_reassignments(&stuck, false);
        out.extend(r.records);
        for (t, result) in stuck.iter().zip(r.response) {
            match result {
                Ok(()) => {
                    st.in_flight.remove(&(t.topic_id, t.partition));
                    tracing::warn!(topic_id = %t.topic_id, partition = t.partition, gone = ?gone,
                        "balancer: cancelled a move onto a gone broker");
                }
                Err(e) => tracing::warn!(topic_id = %t.topic_id, partition = t.partition,
                    error = %e, "balancer: a move onto a gone broker cannot be cancelled"),
            }
        }
    }

    /// Move the replicas of `gone` brokers to live ones (at most the round's bound).
    fn heal(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        gone: &BTreeSet<NodeId>,
        now: i64,
    ) -> Option<BalancerRound> {
        // A partition with no leader (every in-sync replica gone) has nothing to copy from: a
        // move could never complete, so it stays until a replica comes back.
        let plan = self.plan_moves_off(gone, |s| {
            !s.is_reassigning()
                && s.leader != NO_LEADER
                && s.replicas.iter().any(|r| gone.contains(r))
        });
        for r in &plan.refused {
            tracing::warn!(topic_id = %r.topic_id, partition = r.partition, replicas = ?r.replicas,
                why = ?r.why, "balancer: a replica on a gone broker cannot move without losing \
                rack spread or finding a broker; it stays");
        }
        let targets: Vec<ReassignmentTarget> = plan
            .moves
            .iter()
            .take(cfg.max_concurrent_moves)
            .map(|m| ReassignmentTarget {
                topic_id: m.topic_id,
                partition: m.partition,
                replicas: Some(m.target.clone()),
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        let (started, refused) = self.start_moves(out, st, cfg, &targets);
        tracing::info!(
            gone = ?gone,
            moves = started,
            refused,
            left = plan.moves.len() - targets.len() + plan.refused.len(),
            "balancer round: brokers {gone:?} fenced for over {} ms; re-replicating {started} \
             partition(s) onto live brokers",
            cfg.broker_gone_ms
        );
        Some(BalancerRound {
            reason: RoundReason::BrokerGone,
            started_at_ms: now,
            data_moves: started,
            leadership_moves: 0,
            bytes_to_move: None,
            gone_brokers: gone.iter().copied().collect(),
            refused: refused + plan.refused.len(),
            imbalance_before: None,
            imbalance_after: None,
        })
    }

    /// Run the planner and carry its plan out if a goal is violated.
    fn rebalance(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        now: i64,
    ) -> Option<BalancerRound> {
        let loads = st.loads.clone().unwrap_or_default();
        let mut input = BalancerInput::from_image(self.image(), |t, p| {
            loads.sizes.get(&(t.to_string(), p)).copied()
        });
        for p in &mut input.partitions {
            p.rate = loads.rates.get(&(p.topic.clone(), p.partition)).copied();
        }
        let plan = super::plan(
            &input,
            BalancerOptions {
                max_moves: cfg.max_concurrent_moves,
            },
        );
        st.status.imbalance = Some((&plan.before).into());
        st.status.sizes_known = plan.sizes_known;
        st.status.rates_known = plan.rates_known;
        if plan.moves.is_empty() || !violated(&plan.before, cfg.imbalance_threshold_percent) {
            return None;
        }
        let targets: Vec<ReassignmentTarget> = plan
            .moves
            .iter()
            .filter_map(|m| {
                let topic_id = self.image().topic(&m.topic)?.id;
                Some(ReassignmentTarget {
                    topic_id,
                    partition: m.partition,
                    replicas: Some(m.replicas_after.clone()),
                })
            })
            .collect();
        let leadership = plan.moves.iter().filter(|m| m.is_leadership_only()).count();
        let (started, refused) = self.start_moves(out, st, cfg, &targets);
        let before = ImbalanceSummary::from(&plan.before);
        let after = ImbalanceSummary::from(&plan.after);
        tracing::info!(
            moves = started,
            leadership_only = leadership,
            refused,
            bytes_to_move = ?plan.sizes_known.then_some(plan.bytes_to_move),
            ?before,
            ?after,
            "balancer round: {started} partition(s) get new replicas, {leadership} new preferred \
             leader(s); replicas per broker {}..{} -> {}..{}, leaders {}..{} -> {}..{}",
            before.replicas_min,
            before.replicas_max,
            after.replicas_min,
            after.replicas_max,
            before.leaders_min,
            before.leaders_max,
            after.leaders_min,
            after.leaders_max,
        );
        Some(BalancerRound {
            reason: RoundReason::Imbalance,
            started_at_ms: now,
            data_moves: started,
            leadership_moves: leadership,
            bytes_to_move: plan.sizes_known.then_some(plan.bytes_to_move),
            gone_brokers: Vec::new(),
            refused,
            imbalance_before: Some(before),
            imbalance_after: Some(after),
        })
    }

    /// Start `targets` as reassignments; leadership-only ones complete at once and elect their
    /// new preferred leader, data moves are throttled and tracked. Returns (data moves
    /// started, refused).
    fn start_moves(
        &mut self,
        out: &mut Vec<MetadataRecord>,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        targets: &[ReassignmentTarget],
    ) -> (usize, usize) {
        let r = self.alter_partition_reassignments(targets, false);
        out.extend(r.records);
        let mut moving = Vec::new();
        let mut refused = 0;
        for (t, result) in targets.iter().zip(r.response) {
            if let Err(e) = result {
                refused += 1;
                tracing::warn!(topic_id = %t.topic_id, partition = t.partition,
                    target = ?t.replicas, error = %e, "balancer: the controller refused a move");
                continue;
            }
            let reassigning = self
                .image()
                .partition(&t.topic_id, t.partition)
                .is_some_and(|s| s.is_reassigning());
            if reassigning {
                moving.push((t.topic_id, t.partition));
            } else {
                let code = self.elect_one(out, ElectionType::Preferred, t.topic_id, t.partition);
                if code != election_error::NONE && code != election_error::ELECTION_NOT_NEEDED {
                    tracing::debug!(topic_id = %t.topic_id, partition = t.partition, code,
                        "balancer: the new preferred leader cannot lead yet");
                }
            }
        }
        if let (Some(rate), false) = (cfg.throttle_bytes_per_s, moving.is_empty()) {
            self.throttle_moves(out, rate, &moving);
            st.throttled = Some(rate);
        }
        st.in_flight.extend(moving.iter().copied());
        (moving.len(), refused)
    }
}

/// Whether `i` violates a goal enough for a round.
fn violated(i: &Imbalance, threshold_percent: u32) -> bool {
    let limit = 1.0 + f64::from(threshold_percent) / 100.0;
    let over = |s: &super::Spread| s.max as f64 > s.fair * limit && s.max > s.min;
    i.rack_violations > 0
        || i.replicas.max > i.replicas.min + 1
        || i.leaders.max > i.leaders.min + 1
        || i.disk_bytes.as_ref().is_some_and(over)
        || i.network.as_ref().is_some_and(over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::tests::{
        catch_up_all, controller, heartbeat, on_broker, racks_of, topic,
    };
    use crate::maintenance::{FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_REPLICAS};

    fn config() -> BalancerConfig {
        BalancerConfig {
            mode: BalancerMode::Continuous,
            interval_ms: 1_000,
            broker_gone_ms: 5_000,
            max_concurrent_moves: 3,
            throttle_bytes_per_s: Some(1_000_000),
            imbalance_threshold_percent: 10,
        }
    }

    /// Tick every 500 ms from `now`, the moves catching up after each tick, until the balancer
    /// is idle with nothing left to do; returns the rounds and the time.
    fn run(
        c: &mut Controller,
        st: &mut BalancerState,
        cfg: &BalancerConfig,
        epochs: &[i64],
        mut now: i64,
    ) -> (Vec<BalancerRound>, i64) {
        let mut rounds = Vec::new();
        let mut quiet = 0;
        for _ in 0..400 {
            let r = c.balancer_tick(st, cfg, now);
            match r.response {
                Some(round) => {
                    quiet = 0;
                    assert!(round.data_moves <= cfg.max_concurrent_moves, "{round:?}");
                    rounds.push(round);
                }
                None if st.status.state == "idle" && st.status.moves_in_progress == 0 => {
                    quiet += 1;
                }
                None => {}
            }
            if quiet > 4 {
                return (rounds, now);
            }
            catch_up_all(c, epochs);
            now += 500;
        }
        panic!("the balancer never settled: {:?}", st.status);
    }

    /// Brokers 1-4 in racks a, b, c, a and topic `orders` at RF 3 with `partitions`
    /// partitions, made while broker 4 was cordoned: it joins empty.
    fn with_an_empty_broker_4(partitions: u32) -> (Controller, Vec<i64>, Uuid) {
        let (mut c, epochs) = controller(&["a", "b", "c", "a"]);
        c.set_cordoned(4, true).unwrap();
        let t = topic(&mut c, "orders", partitions, 3);
        c.set_cordoned(4, false).unwrap();
        (c, epochs, t)
    }

    #[test]
    fn a_new_broker_gets_its_share_by_itself_with_throttles_cleared() {
        let (mut c, epochs, t) = with_an_empty_broker_4(12);
        assert_eq!(on_broker(&c, 4), 0);
        let before = c.image().clone();
        let cfg = config();
        let mut st = BalancerState::new();
        // Nothing before the first interval.
        assert!(c.balancer_tick(&mut st, &cfg, 0).response.is_none());
        let r = c.balancer_tick(&mut st, &cfg, 1_000);
        let round = r.response.expect("a round");
        assert_eq!(round.reason, RoundReason::Imbalance);
        assert_eq!(round.data_moves, 3);
        // Throttled as Kafka's tool does.
        assert!(c
            .image()
            .topic_by_id(&t)
            .unwrap()
            .configs
            .contains_key(LEADER_THROTTLED_REPLICAS));
        // No second round while the first one's moves run.
        assert!(c.balancer_tick(&mut st, &cfg, 5_000).response.is_none());
        assert_eq!(st.status.state, "moving");
        let (rounds, _) = run(&mut c, &mut st, &cfg, &epochs, 5_500);
        assert!(!rounds.is_empty());
        // Rack a's replicas are shared by 1 and 4: 6 each; b and c keep 12.
        assert_eq!(on_broker(&c, 4), 6);
        assert_eq!(on_broker(&c, 1), 6);
        for (p, s) in c.image().partitions(&t) {
            assert_eq!(
                racks_of(&c, &s.replicas),
                racks_of(&c, &before.partition(&t, p).unwrap().replicas)
            );
        }
        let leaders: Vec<usize> = (1..=4)
            .map(|b| c.image().partitions_led_by(b).count())
            .collect();
        assert!(
            leaders.iter().max().unwrap() - leaders.iter().min().unwrap() <= 1,
            "{leaders:?}"
        );
        // Throttles gone once the moves are done.
        assert!(!c
            .image()
            .topic_by_id(&t)
            .unwrap()
            .configs
            .contains_key(LEADER_THROTTLED_REPLICAS));
        assert!(c
            .image()
            .broker_configs(None)
            .is_none_or(|m| !m.contains_key(FOLLOWER_THROTTLED_RATE)));
        assert_eq!(st.status.moves_started, 6);
    }

    #[test]
    fn a_gone_broker_is_re_replicated_after_the_gone_time_only() {
        let (mut c, mut epochs) = controller(&["a", "b", "c", "a"]);
        let t = topic(&mut c, "orders", 8, 3);
        let held = on_broker(&c, 4);
        assert!(held > 0);
        heartbeat(&mut c, 4, epochs[3], true);
        assert!(c.image().broker(4).unwrap().fenced);
        let cfg = config();
        let mut st = BalancerState::new();
        c.balancer_tick(&mut st, &cfg, 0);
        // Fenced for less than the gone time: its replicas stay.
        let r = c.balancer_tick(&mut st, &cfg, 4_000);
        assert!(r.response.is_none(), "{:?}", r.response);
        assert_eq!(on_broker(&c, 4), held);
        assert_eq!(st.status.fenced_brokers[0].node_id, 4);
        let r = c.balancer_tick(&mut st, &cfg, 5_000);
        let round = r.response.expect("a round");
        assert_eq!(round.reason, RoundReason::BrokerGone);
        assert_eq!(round.gone_brokers, vec![4]);
        epochs[3] = -1; // broker 4 leads nothing
        let (_, _) = run(&mut c, &mut st, &cfg, &epochs, 5_500);
        assert_eq!(on_broker(&c, 4), 0);
        for (_, s) in c.image().partitions(&t) {
            assert_eq!(s.replicas.len(), 3);
            assert_eq!(racks_of(&c, &s.replicas).len(), 3, "{s:?}");
        }
    }

    #[test]
    fn a_move_onto_a_broker_that_goes_away_is_cancelled() {
        let (mut c, epochs, t) = with_an_empty_broker_4(6);
        let cfg = config();
        let mut st = BalancerState::new();
        c.balancer_tick(&mut st, &cfg, 0);
        let round = c
            .balancer_tick(&mut st, &cfg, 1_000)
            .response
            .expect("a round");
        assert!(round.data_moves > 0);
        // Broker 4 dies before catching up; once gone, the moves onto it are cancelled and
        // the partitions keep their original replicas.
        heartbeat(&mut c, 4, epochs[3], true);
        c.balancer_tick(&mut st, &cfg, 2_000);
        assert!(c.image().reassigning_count() > 0);
        c.balancer_tick(&mut st, &cfg, 7_000);
        assert_eq!(c.image().reassigning_count(), 0);
        assert_eq!(on_broker(&c, 4), 0);
        for (_, s) in c.image().partitions(&t) {
            assert_eq!(racks_of(&c, &s.replicas).len(), 3, "{s:?}");
        }
    }

    #[test]
    fn moves_keeping_a_gone_broker_are_cancelled_and_its_replicas_re_replicated() {
        // Broker 5 (rack b) joins empty; the round moves replicas of partitions that broker 4
        // also holds, and 4 dies before they complete.
        let (mut c, mut epochs) = controller(&["a", "b", "c", "a", "b"]);
        c.set_cordoned(5, true).unwrap();
        let t = topic(&mut c, "orders", 12, 3);
        c.set_cordoned(5, false).unwrap();
        let cfg = BalancerConfig {
            max_concurrent_moves: 6,
            ..config()
        };
        let mut st = BalancerState::new();
        c.balancer_tick(&mut st, &cfg, 0);
        c.balancer_tick(&mut st, &cfg, 1_000)
            .response
            .expect("a round");
        let keeping_4 = c
            .image()
            .all_partitions()
            .filter(|(_, _, s)| s.is_reassigning() && s.target_replicas().contains(&4))
            .count();
        assert!(keeping_4 > 0, "no move keeps broker 4");
        heartbeat(&mut c, 4, epochs[3], true);
        epochs[3] = -1;
        c.balancer_tick(&mut st, &cfg, 2_000);
        run(&mut c, &mut st, &cfg, &epochs, 7_000);
        assert_eq!(on_broker(&c, 4), 0);
        assert_eq!(c.image().reassigning_count(), 0);
        for (_, s) in c.image().partitions(&t) {
            assert_eq!(racks_of(&c, &s.replicas).len(), 3, "{s:?}");
        }
    }

    #[test]
    fn operator_moves_and_cordoned_brokers_are_left_alone() {
        let (mut c, epochs) = controller(&["a", "b", "c", "a", "b"]);
        c.set_cordoned(4, true).unwrap();
        c.set_cordoned(5, true).unwrap();
        let t = topic(&mut c, "orders", 6, 3);
        c.set_cordoned(4, false).unwrap();
        // An operator moves partition 0 (its replica in rack a to broker 4).
        let s0 = c.image().partition(&t, 0).unwrap().clone();
        let target: Vec<NodeId> = s0
            .replicas
            .iter()
            .map(|&b| if b == 1 { 4 } else { b })
            .collect();
        let r = c.alter_partition_reassignments(
            &[ReassignmentTarget {
                topic_id: t,
                partition: 0,
                replicas: Some(target.clone()),
            }],
            false,
        );
        assert!(r.response[0].is_ok());
        let cfg = config();
        let mut st = BalancerState::new();
        // A new controller waits for the moves in progress before its first round.
        assert!(c.balancer_tick(&mut st, &cfg, 0).response.is_none());
        assert!(c.balancer_tick(&mut st, &cfg, 2_000).response.is_none());
        assert_eq!(st.status.state, "moving");
        catch_up_all(&mut c, &epochs);
        run(&mut c, &mut st, &cfg, &epochs, 2_500);
        assert_eq!(c.image().partition(&t, 0).unwrap().replicas, target);
        assert_eq!(on_broker(&c, 5), 0, "a cordoned broker receives nothing");
    }

    #[test]
    fn config_keys_parse_and_refuse_bad_values() {
        let keys: BTreeMap<&str, &str> = CONFIG_KEYS.iter().copied().collect();
        let parse = |over: &[(&str, &str)]| {
            let mut k = keys.clone();
            k.extend(over.iter().copied());
            BalancerConfig::from_keys(&|key| k[key].to_string())
        };
        assert_eq!(parse(&[]).unwrap(), BalancerConfig::default());
        let c = parse(&[
            ("balancer.mode", "continuous"),
            ("balancer.throttle.bytes.per.sec", "5000"),
        ])
        .unwrap();
        assert_eq!(c.mode, BalancerMode::Continuous);
        assert_eq!(c.throttle_bytes_per_s, Some(5000));
        assert!(parse(&[("balancer.mode", "on")]).is_err());
        assert!(parse(&[("balancer.max.concurrent.moves", "0")]).is_err());
        assert!(parse(&[("balancer.imbalance.threshold.percent", "-1")]).is_err());
    }
}
