//! A seeded simulation of one partition with three replicas: a leader taking acks=all writes,
//! followers fetching (truncating first after every leader change), ISR shrinks and expands
//! through a controller model that elects from the ISR only, and brokers crashing and coming
//! back at random. Logs are modelled as the leader epoch of each record.
//!
//! Invariants checked after every step:
//! - the leader is in the ISR, and there is at most one leader per leader epoch;
//! - the leader's high watermark never decreases within its epoch;
//! - a follower's log, after truncation, is a prefix of its leader's;
//! - truncation never removes a record below the follower's high watermark;
//! - every acknowledged record is in the leader's log and in every ISR member's log, at the
//!   offset it was acknowledged with, in the epoch it was written in.
//!
//! A failure prints the seed; `FJORD_SIM_SEED=<seed>` replays it.

use std::collections::{BTreeMap, HashMap};

use fjord_replication::truncation::{self, Decision};
use fjord_replication::{AckStatus, Assignment, NodeId, PartitionReplica, Transition, NO_LEADER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LAG_MAX_MS: i64 = 300;

struct Node {
    id: NodeId,
    alive: bool,
    /// The leader epoch of each record (offset = index).
    log: Vec<i32>,
    replica: PartitionReplica,
    /// Must truncate against the leader before fetching.
    needs_truncation: bool,
}

impl Node {
    /// (largest epoch <= asked, its end offset) in this log.
    fn end_offset_for(&self, asked: i32) -> Option<(i32, i64)> {
        let mut best: Option<(i32, i64)> = None;
        for (off, e) in self.log.iter().enumerate() {
            if *e <= asked {
                best = Some((*e, off as i64 + 1));
            } else if best.is_some() {
                // First record of a later epoch: the found epoch ends here.
                return best.map(|(e, _)| (e, off as i64));
            }
        }
        best.map(|(e, _)| (e, self.log.len() as i64))
    }
    fn latest_epoch(&self) -> Option<i32> {
        self.log.last().copied()
    }
}

struct Sim {
    rng: StdRng,
    now: i64,
    nodes: Vec<Node>,
    state: Assignment,
    /// offset -> epoch of acknowledged records.
    acked: BTreeMap<i64, i32>,
    /// In-flight acks=all produces: (required offset, first offset, epoch of the write).
    pending: Vec<(i64, i64, i32)>,
    /// High watermark seen per leader epoch.
    hw_seen: HashMap<i32, i64>,
    leaders_by_epoch: HashMap<i32, NodeId>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let state = Assignment {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let nodes = (1..=3)
            .map(|id| Node {
                id,
                alive: true,
                log: Vec::new(),
                replica: PartitionReplica::new(id, 0),
                needs_truncation: false,
            })
            .collect();
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            nodes,
            state,
            acked: BTreeMap::new(),
            pending: Vec::new(),
            hw_seen: HashMap::new(),
            leaders_by_epoch: HashMap::new(),
        };
        sim.publish();
        sim
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Every live broker applies the controller's current state.
    fn publish(&mut self) {
        let state = self.state.clone();
        let now = self.now;
        for n in self.nodes.iter_mut().filter(|n| n.alive) {
            let leo = n.log.len() as i64;
            match n.replica.apply(state.clone(), leo, now) {
                Transition::BecameFollower { .. } => n.needs_truncation = true,
                Transition::BecameLeader | Transition::Stopped | Transition::Unchanged => {}
            }
        }
        if state.leader != NO_LEADER {
            let prev = self
                .leaders_by_epoch
                .insert(state.leader_epoch, state.leader);
            assert!(
                prev.is_none() || prev == Some(state.leader),
                "two leaders in epoch {}",
                state.leader_epoch
            );
            assert!(
                state.isr.contains(&state.leader),
                "leader outside the ISR: {state:?}"
            );
        }
    }

    fn change(&mut self, isr: Vec<NodeId>, leader: NodeId) {
        if leader != self.state.leader {
            self.state.leader_epoch += 1;
        }
        self.state.isr = isr;
        self.state.leader = leader;
        self.state.partition_epoch += 1;
        self.publish();
    }

    fn choose_leader(&self, isr: &[NodeId], except: Option<NodeId>) -> NodeId {
        self.state
            .replicas
            .iter()
            .copied()
            .find(|r| Some(*r) != except && isr.contains(r) && self.nodes[(*r - 1) as usize].alive)
            .unwrap_or(NO_LEADER)
    }

    /// The controller fences a broker: out of the ISR (unless last), leadership moved.
    fn fence(&mut self, id: NodeId) {
        let mut isr: Vec<NodeId> = self
            .state
            .isr
            .iter()
            .copied()
            .filter(|r| *r != id)
            .collect();
        if isr.is_empty() {
            isr.push(id);
        }
        let leader = if self.state.leader == id {
            self.choose_leader(&isr, Some(id))
        } else {
            self.state.leader
        };
        self.change(isr, leader);
    }

    fn crash(&mut self, id: NodeId) {
        let n = self.node(id);
        n.alive = false;
        self.fence(id);
    }

    fn restart(&mut self, id: NodeId) {
        let n = self.node(id);
        n.alive = true;
        // The high watermark survives in its checkpoint; the rest of the state is new.
        let hw = n.replica.high_watermark();
        n.replica = PartitionReplica::new(id, hw);
        n.needs_truncation = false;
        // Registration moves the old incarnation off (unless it is the last ISR member); once
        // unfenced it is elected where nothing leads.
        self.fence(id);
        if self.state.leader == NO_LEADER {
            let isr = self.state.isr.clone();
            let leader = self.choose_leader(&isr, None);
            if leader != NO_LEADER {
                self.change(isr, leader);
            }
        }
    }

    fn produce(&mut self) {
        let leader = self.state.leader;
        if leader == NO_LEADER {
            return;
        }
        let epoch = self.state.leader_epoch;
        let k = self.rng.gen_range(1..4);
        let n = self.node(leader);
        let first = n.log.len() as i64;
        n.log.extend(std::iter::repeat_n(epoch, k));
        let leo = n.log.len() as i64;
        n.replica.on_leader_append(leo);
        self.pending.push((leo, first, epoch));
    }

    fn fetch(&mut self, id: NodeId) {
        let leader = self.state.leader;
        if leader == NO_LEADER || leader == id || !self.nodes[(id - 1) as usize].alive {
            return;
        }
        if !self.state.replicas.contains(&id) {
            return;
        }
        let (leader_log, leader_hw) = {
            let l = &self.nodes[(leader - 1) as usize];
            (l.log.clone(), l.replica.high_watermark())
        };
        if self.nodes[(id - 1) as usize].needs_truncation {
            let f = &self.nodes[(id - 1) as usize];
            let leader_node = &self.nodes[(leader - 1) as usize];
            let mut point = match f.latest_epoch() {
                None => truncation::no_epochs(f.log.len() as i64, f.replica.high_watermark()),
                Some(mut asked) => loop {
                    let answer = leader_node.end_offset_for(asked);
                    match truncation::decide(
                        asked,
                        answer,
                        |e| f.end_offset_for(e),
                        f.log.len() as i64,
                        f.replica.high_watermark(),
                    ) {
                        Decision::TruncateTo(o) => break o,
                        Decision::AskAgain { epoch } => {
                            assert!(epoch < asked, "asking again must go back");
                            asked = epoch;
                        }
                    }
                },
            };
            point = point.max(0);
            let f = self.node(id);
            let hw = f.replica.high_watermark();
            assert!(
                point >= hw.min(f.log.len() as i64),
                "node {id} truncates to {point} below its high watermark {hw}"
            );
            f.log.truncate(point as usize);
            let leo = f.log.len() as i64;
            f.replica.on_truncated(leo);
            f.needs_truncation = false;
            assert!(
                leader_log.starts_with(&f.log),
                "node {id} after truncation is no prefix of leader {leader}: {:?} vs {:?}",
                f.log,
                leader_log
            );
        }
        let f = &self.nodes[(id - 1) as usize];
        assert!(
            leader_log.starts_with(&f.log),
            "node {id} diverges from leader {leader} while fetching"
        );
        let fetch_offset = f.log.len() as i64;
        let leader_leo = leader_log.len() as i64;
        let now = self.now;
        let effect = self
            .node(leader)
            .replica
            .on_follower_fetch(id, fetch_offset, leader_leo, now)
            .expect("a replica");
        let leader_hw = leader_hw.max(self.nodes[(leader - 1) as usize].replica.high_watermark());
        let take = self.rng.gen_range(0..=5usize);
        let f = self.node(id);
        let end = (f.log.len() + take).min(leader_log.len());
        let start = f.log.len();
        f.log.extend_from_slice(&leader_log[start..end]);
        let leo = f.log.len() as i64;
        f.replica.on_leader_high_watermark(leader_hw, leo);
        if let Some(isr) = effect.propose_isr {
            self.alter_isr(leader, isr);
        }
    }

    /// The controller takes an ISR proposal if it is from the current leader and every member
    /// is alive (eligible); otherwise refuses it.
    fn alter_isr(&mut self, leader: NodeId, isr: Vec<NodeId>) {
        let ok = self.state.leader == leader
            && isr.contains(&leader)
            && isr.iter().all(|r| self.nodes[(*r - 1) as usize].alive)
            && self.rng.gen_bool(0.9);
        if ok {
            self.change(isr, leader);
        } else {
            let now = self.now;
            self.node(leader).replica.isr_proposal_failed(now);
        }
    }

    fn shrink_check(&mut self) {
        let leader = self.state.leader;
        if leader == NO_LEADER {
            return;
        }
        let now = self.now;
        let n = self.node(leader);
        let leo = n.log.len() as i64;
        if let Some(isr) = n.replica.isr_to_shrink(leo, now, LAG_MAX_MS) {
            self.alter_isr(leader, isr);
        }
    }

    fn settle_acks(&mut self) {
        let leader = self.state.leader;
        let mut still = Vec::new();
        for (required, first, epoch) in std::mem::take(&mut self.pending) {
            if leader == NO_LEADER {
                continue; // the producer gets an error and retries: not acknowledged
            }
            let n = &self.nodes[(leader - 1) as usize];
            // A produce waits on the leader that took it.
            if n.replica.assignment().leader_epoch != epoch {
                continue;
            }
            match n.replica.acks_all_status(required, 1) {
                AckStatus::Done => {
                    for o in first..required {
                        self.acked.insert(o, epoch);
                    }
                }
                AckStatus::Waiting => still.push((required, first, epoch)),
                AckStatus::NotLeader | AckStatus::NotEnoughReplicasAfterAppend => {}
            }
        }
        self.pending = still;
    }

    fn check(&mut self) {
        let leader = self.state.leader;
        if leader != NO_LEADER {
            let n = &self.nodes[(leader - 1) as usize];
            let hw = n.replica.high_watermark();
            let seen = self.hw_seen.entry(self.state.leader_epoch).or_insert(hw);
            assert!(
                hw >= *seen,
                "leader {leader} high watermark went back from {seen} to {hw}"
            );
            *seen = hw;
            assert!(hw <= n.log.len() as i64);
            for (o, e) in &self.acked {
                assert_eq!(
                    n.log.get(*o as usize),
                    Some(e),
                    "acknowledged offset {o} (epoch {e}) missing on leader {leader}"
                );
            }
        }
        for r in self.state.isr.clone() {
            let n = &self.nodes[(r - 1) as usize];
            for (o, e) in &self.acked {
                assert_eq!(
                    n.log.get(*o as usize),
                    Some(e),
                    "acknowledged offset {o} (epoch {e}) missing on ISR member {r}: isr {:?}",
                    self.state.isr
                );
            }
        }
    }

    fn step(&mut self) {
        self.now += self.rng.gen_range(1..60);
        match self.rng.gen_range(0..100) {
            0..=29 => self.produce(),
            30..=79 => {
                let id = self.rng.gen_range(1..=3);
                self.fetch(id);
            }
            80..=89 => self.shrink_check(),
            90..=94 => {
                let id = self.rng.gen_range(1..=3);
                let alive = self.nodes.iter().filter(|n| n.alive).count();
                if self.nodes[(id - 1) as usize].alive && alive > 1 {
                    self.crash(id);
                }
            }
            _ => {
                let dead: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|n| !n.alive)
                    .map(|n| n.id)
                    .collect();
                if !dead.is_empty() {
                    let id = dead[self.rng.gen_range(0..dead.len())];
                    self.restart(id);
                }
            }
        }
        self.settle_acks();
        self.check();
    }
}

fn run(seed: u64, steps: usize) -> usize {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
    }
    sim.acked.len()
}

#[test]
fn replication_invariants_hold_under_random_crashes() {
    if let Ok(s) = std::env::var("FJORD_SIM_SEED") {
        let seed: u64 = s.parse().expect("FJORD_SIM_SEED is a number");
        run(seed, 3_000);
        return;
    }
    let mut acked = 0;
    for seed in 0..300u64 {
        let r = std::panic::catch_unwind(|| run(seed, 3_000));
        match r {
            Ok(n) => acked += n,
            Err(e) => {
                eprintln!("replication simulation failed with seed {seed}: FJORD_SIM_SEED={seed} cargo test -p fjord-replication --test simulation");
                std::panic::resume_unwind(e);
            }
        }
    }
    // The simulation must actually commit records, or it checks nothing.
    assert!(
        acked > 10_000,
        "only {acked} records acknowledged over all seeds"
    );
}
