//! Deterministic simulation of the controller state machine.
//!
//! Each seed drives a random schedule of broker registrations, heartbeats (caught up, lagging,
//! asking to be fenced), silent brokers, process restarts, heartbeats from old incarnations with
//! stale epochs, topic creation and deletion, partition growth, ISR proposals (fresh and stale),
//! cordoning, partition reassignments (valid and invalid targets, cancellations), maintenance
//! mode (entered with or without a drain and a throttle, left, its tick), time passing with
//! `tick`, and controller failovers (a new controller rebuilt by replaying the log). After
//! every step the invariant checkers run:
//! - every record the controller emits is accepted by an independent replica of the image, and
//!   that replica equals the controller's image;
//! - at most one leader per partition per leader epoch, over the whole run;
//! - leader and partition epochs never fall; broker epochs only rise;
//! - the leader is in the ISR (or there is none), and is a registered, unfenced broker;
//! - a broker silent for the session timeout is fenced after `tick`;
//! - an unclean election (a leader from outside the ISR) leaves ISR = [leader], happens only
//!   where the topic's `unclean.leader.election.enable` (override or the seed's cluster
//!   default) is true or ElectLeaders asked for it, and is counted by the controller;
//! - ElectLeaders answers each partition with the code its state before the call implies;
//! - a reassignment is never left in progress once its target is in the ISR (completion is
//!   never missed), and the image's index of reassigning partitions matches a scan;
//! - after the maintenance tick no broker in maintenance leads a partition another unfenced
//!   in-sync replica could lead; a drain never moves a replica to a cordoned broker nor lowers
//!   a partition's rack spread, and a refused drain changes nothing;
//! - errors are the expected ones (e.g. STALE_BROKER_EPOCH for an old incarnation).
//!
//! A failure prints the seed. Reproduce with `FJORD_SIM_SEED=<seed> cargo test -p fjord-metadata
//! --test controller_sim`; run more seeds with `FJORD_SIM_SEEDS=<count>`.

use std::collections::{BTreeMap, HashMap};

use fjord_metadata::controller::{
    election_error, AlterPartition, BrokerHeartbeat, BrokerRegistration, Controller,
    ControllerConfig, ControllerError, ControllerResult, CreateTopic, ElectionType,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
use fjord_metadata::maintenance::MaintenanceRequest;
use fjord_metadata::ReassignmentTarget;
use fjord_metadata::{ClusterImage, MetadataRecord, NodeId, Uuid, NO_LEADER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SESSION_MS: i64 = 9_000;
const NODES: NodeId = 6;
const STEPS: usize = 400;

#[derive(Debug, Default)]
struct SimBroker {
    /// The epoch the live process holds, if it registered.
    epoch: Option<i64>,
    /// Epochs of earlier incarnations (their processes may still send stale requests).
    old_epochs: Vec<i64>,
    /// Is the process running (heartbeating)?
    alive: bool,
    /// The last time the controller accepted a heartbeat or registration from it.
    last_contact: i64,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now: i64,
    controller: Controller,
    /// Every record committed so far (the metadata log).
    log: Vec<MetadataRecord>,
    /// An independent replica following the log.
    replica: ClusterImage,
    brokers: BTreeMap<NodeId, SimBroker>,
    /// (topic, partition, leader epoch) -> leader, for the whole run.
    leaders_by_epoch: HashMap<(Uuid, u32, i32), NodeId>,
    /// (topic, partition) -> (leader epoch, partition epoch) last seen.
    epochs: HashMap<(Uuid, u32), (i32, i32)>,
    /// node -> highest broker epoch seen.
    broker_epochs: HashMap<NodeId, i64>,
    topics: u32,
    /// The cluster default of `unclean.leader.election.enable` for this seed.
    unclean_default: bool,
    /// The records being committed come from an unclean ElectLeaders request.
    unclean_requested: bool,
    /// The records being committed come from a leader's AlterPartition: a new leader the
    /// leader itself just put in the ISR (a completed reassignment removing the old leader)
    /// is a clean election.
    leader_expanding: bool,
    /// Unclean elections seen in committed records, and the controller's count at the last
    /// commit (it restarts at 0 on failover).
    unclean: usize,
    controller_unclean: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let unclean_default = rng.gen_bool(0.3);
        Sim {
            seed,
            rng,
            now: 0,
            controller: Controller::new(ControllerConfig {
                session_timeout_ms: SESSION_MS,
                unclean_leader_election_enable: unclean_default,
            }),
            log: Vec::new(),
            replica: ClusterImage::default(),
            brokers: (1..=NODES).map(|n| (n, SimBroker::default())).collect(),
            leaders_by_epoch: HashMap::new(),
            epochs: HashMap::new(),
            broker_epochs: HashMap::new(),
            topics: 0,
            unclean_default,
            unclean_requested: false,
            leader_expanding: false,
            unclean: 0,
            controller_unclean: 0,
        }
    }

    /// `unclean.leader.election.enable` of a topic in the replica's image.
    fn unclean_enabled(&self, topic_id: &Uuid) -> bool {
        self.replica
            .topic_by_id(topic_id)
            .and_then(|t| t.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE))
            .map_or(self.unclean_default, |v| v == "true")
    }

    fn commit<T>(&mut self, r: ControllerResult<T>) -> T {
        let mut unclean = 0;
        for rec in &r.records {
            if let MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader: Some(leader),
                isr,
                ..
            } = rec
            {
                let before = self.replica.partition(topic_id, *partition).unwrap();
                let handed_over = self.leader_expanding
                    && before.is_reassigning()
                    && isr.as_ref().is_some_and(|i| i.contains(leader));
                if *leader != NO_LEADER && !before.isr.contains(leader) && !handed_over {
                    unclean += 1;
                    assert_eq!(
                        isr.as_deref(),
                        Some(&[*leader][..]),
                        "unclean election of {leader} for {topic_id}/{partition} must leave \
                         ISR = [leader]: {rec:?}"
                    );
                    assert!(
                        self.unclean_requested || self.unclean_enabled(topic_id),
                        "unclean election for {topic_id}/{partition} with the setting false"
                    );
                }
            }
            if let Err(e) = self.replica.try_apply(rec) {
                panic!("replica rejected {rec:?}: {e}");
            }
        }
        let count = self.controller.unclean_elections();
        assert_eq!(
            count - self.controller_unclean,
            unclean as u64,
            "the controller's unclean election count"
        );
        self.controller_unclean = count;
        self.unclean += unclean;
        self.log.extend(r.records);
        r.response
    }

    fn step(&mut self) {
        let roll = self.rng.gen_range(0..114);
        match roll {
            0..=9 => self.register(),
            10..=39 => self.heartbeat(),
            40..=44 => self.stale_heartbeat(),
            45..=49 => self.crash(),
            50..=64 => self.advance(),
            65..=72 => self.create_topic(),
            73..=74 => self.delete_topic(),
            75..=76 => self.create_partitions(),
            77..=91 => self.alter_partition(),
            92..=94 => self.cordon(),
            95 => self.alter_unclean_config(),
            96 => self.failover(),
            97 => {
                let r = self.controller.elect_preferred_leaders();
                self.commit(r);
            }
            98 => self.elect_leaders(),
            99 => self.unregister(),
            110..=112 => self.maintenance(),
            113 => self.maintenance_tick(),
            _ => self.reassign(),
        }
        self.check();
    }

    fn node(&mut self) -> NodeId {
        self.rng.gen_range(1..=NODES)
    }

    fn register(&mut self) {
        let node = self.node();
        let req = BrokerRegistration {
            node_id: node,
            incarnation_id: Uuid::from_u128(self.rng.gen()),
            rack: Some(["a", "b", "c"][node as usize % 3].into()),
            endpoints: vec![],
        };
        let now = self.now;
        match self.controller.register_broker(req, now) {
            Ok(r) => {
                let epoch = self.commit(r);
                let b = self.brokers.get_mut(&node).unwrap();
                if let Some(old) = b.epoch.replace(epoch) {
                    b.old_epochs.push(old);
                }
                b.alive = true;
                b.last_contact = now;
            }
            Err(ControllerError::DuplicateBrokerRegistration(n)) => {
                let img = self.controller.image().broker(n).unwrap();
                assert!(
                    !img.fenced,
                    "duplicate registration refused for a fenced broker"
                );
            }
            Err(e) => panic!("register {node}: {e}"),
        }
    }

    fn heartbeat(&mut self) {
        let node = self.node();
        let (Some(epoch), true) = (self.brokers[&node].epoch, self.brokers[&node].alive) else {
            return;
        };
        let lag = if self.rng.gen_bool(0.2) {
            self.rng.gen_range(0..5)
        } else {
            0
        };
        let req = BrokerHeartbeat {
            node_id: node,
            broker_epoch: epoch,
            current_metadata_offset: self.controller.next_offset() - 1 - lag,
            want_fence: self.rng.gen_bool(0.05),
        };
        let now = self.now;
        match self.controller.heartbeat(req, now) {
            Ok(r) => {
                let reply = self.commit(r);
                self.brokers.get_mut(&node).unwrap().last_contact = now;
                let fenced = self.controller.image().broker(node).unwrap().fenced;
                assert_eq!(reply.is_fenced, fenced);
                if req.want_fence {
                    assert!(fenced, "want_fence left broker {node} unfenced");
                } else if reply.is_caught_up {
                    assert!(!fenced, "caught-up broker {node} stays fenced");
                }
            }
            Err(e) => {
                // The live process's epoch is current unless it was unregistered.
                let current = self.controller.image().broker(node).map(|b| b.broker_epoch);
                assert_ne!(
                    current,
                    Some(epoch),
                    "heartbeat with the current epoch failed: {e}"
                );
            }
        }
    }

    fn stale_heartbeat(&mut self) {
        let node = self.node();
        let Some(&old) = self.brokers[&node].old_epochs.last() else {
            return;
        };
        let req = BrokerHeartbeat {
            node_id: node,
            broker_epoch: old,
            current_metadata_offset: self.controller.next_offset() - 1,
            want_fence: self.rng.gen_bool(0.5),
        };
        let before = self.controller.image().clone();
        match self.controller.heartbeat(req, self.now) {
            Err(ControllerError::StaleBrokerEpoch { .. })
            | Err(ControllerError::BrokerIdNotRegistered(_)) => {}
            other => panic!("heartbeat with stale epoch {old} for {node}: {other:?}"),
        }
        assert_eq!(
            &before,
            self.controller.image(),
            "a stale heartbeat changed the image"
        );
    }

    fn crash(&mut self) {
        let node = self.node();
        self.brokers.get_mut(&node).unwrap().alive = false;
    }

    fn advance(&mut self) {
        self.now += self.rng.gen_range(0..4_000);
        let now = self.now;
        let r = self.controller.tick(now);
        let fenced = self.commit(r);
        for n in fenced {
            assert!(
                now - self.brokers[&n].last_contact >= SESSION_MS,
                "broker {n} fenced while its session was live"
            );
        }
        for b in self.controller.image().brokers() {
            if now - self.brokers[&b.node_id].last_contact >= SESSION_MS {
                assert!(
                    b.fenced,
                    "broker {} silent past its session is not fenced",
                    b.node_id
                );
            }
        }
    }

    fn eligible(&self) -> usize {
        self.controller
            .image()
            .brokers()
            .filter(|b| !b.fenced && !b.cordoned)
            .count()
    }

    fn create_topic(&mut self) {
        self.topics += 1;
        let mut configs = BTreeMap::new();
        match self.rng.gen_range(0..4) {
            0 => configs.insert(UNCLEAN_LEADER_ELECTION_ENABLE.into(), "true".into()),
            1 => configs.insert(UNCLEAN_LEADER_ELECTION_ENABLE.into(), "false".into()),
            _ => None,
        };
        let req = CreateTopic {
            name: format!("t{}", self.topics),
            partitions: self.rng.gen_range(1..5),
            replication_factor: self.rng.gen_range(1..4),
            configs,
        };
        let rf = usize::from(req.replication_factor);
        let id = Uuid::from_u128(self.rng.gen());
        match self.controller.create_topic(req, id) {
            Ok(r) => {
                let created = self.commit(r);
                for replicas in &created.assignments {
                    for b in replicas {
                        let img = self.controller.image().broker(*b).unwrap();
                        assert!(
                            !img.cordoned && !img.fenced,
                            "replica on cordoned/fenced {b}"
                        );
                    }
                }
            }
            Err(ControllerError::InvalidReplicationFactor(_)) => {
                assert!(
                    self.eligible() < rf,
                    "placement refused with enough brokers"
                );
            }
            Err(e) => panic!("create topic: {e}"),
        }
    }

    fn random_topic(&mut self) -> Option<(String, Uuid)> {
        let topics: Vec<_> = self
            .controller
            .image()
            .topics()
            .map(|t| (t.name.clone(), t.id))
            .collect();
        if topics.is_empty() {
            return None;
        }
        Some(topics[self.rng.gen_range(0..topics.len())].clone())
    }

    fn delete_topic(&mut self) {
        if let Some((name, _)) = self.random_topic() {
            let r = self.controller.delete_topic(&name).unwrap();
            self.commit(r);
        }
    }

    fn create_partitions(&mut self) {
        let Some((name, id)) = self.random_topic() else {
            return;
        };
        let current = self.controller.image().topic_by_id(&id).unwrap().partitions;
        match self.controller.create_partitions(&name, current + 1) {
            Ok(r) => {
                self.commit(r);
            }
            Err(ControllerError::InvalidReplicationFactor(_)) => {}
            Err(e) => panic!("create partitions: {e}"),
        }
    }

    fn alter_partition(&mut self) {
        let Some((_, id)) = self.random_topic() else {
            return;
        };
        let parts: Vec<_> = self
            .controller
            .image()
            .partitions(&id)
            .map(|(p, s)| (p, s.clone()))
            .collect();
        let (p, state) = parts[self.rng.gen_range(0..parts.len())].clone();
        if state.leader == NO_LEADER {
            return;
        }
        let leader = state.leader;
        let Some(epoch) = self.brokers[&leader].epoch else {
            return;
        };
        // The leader proposes a random ISR holding itself; sometimes with stale epochs.
        let mut isr = vec![leader];
        for r in &state.replicas {
            if *r != leader && self.rng.gen_bool(0.6) {
                isr.push(*r);
            }
        }
        let stale_pe = self.rng.gen_bool(0.1);
        let stale_le = self.rng.gen_bool(0.05);
        let req = AlterPartition {
            node_id: leader,
            broker_epoch: epoch,
            topic_id: id,
            partition: p,
            leader_epoch: state.leader_epoch - i32::from(stale_le),
            partition_epoch: state.partition_epoch - i32::from(stale_pe),
            new_isr: isr.clone(),
        };
        match self.controller.alter_partition(req) {
            Ok(r) => {
                assert!(!stale_pe && !stale_le, "stale AlterPartition accepted");
                self.leader_expanding = true;
                let after = self.commit(r);
                self.leader_expanding = false;
                if state.is_reassigning() && !after.is_reassigning() {
                    // The expand completed the move: the removed replicas left the ISR.
                    assert!(after.isr.iter().all(|b| isr.contains(b)));
                    assert_eq!(after.replicas, state.target_replicas());
                } else {
                    assert_eq!(after.isr, isr);
                }
            }
            Err(ControllerError::InvalidUpdateVersion { .. }) => assert!(stale_pe),
            Err(ControllerError::FencedLeaderEpoch { .. }) => assert!(stale_le),
            Err(ControllerError::IneligibleReplica(b)) => {
                let img = self.controller.image().broker(b);
                assert!(img.is_none_or(|b| b.fenced), "eligible replica {b} refused");
            }
            Err(ControllerError::StaleBrokerEpoch { .. }) => {}
            Err(e) => panic!("alter partition: {e}"),
        }
    }

    /// Reassign a random partition to a random target (sometimes invalid: unknown brokers,
    /// duplicates, empty), or cancel its reassignment.
    fn reassign(&mut self) {
        let Some((_, id)) = self.random_topic() else {
            return;
        };
        let count = self.controller.image().topic_by_id(&id).unwrap().partitions;
        let p = self.rng.gen_range(0..count);
        let Some(before) = self.controller.image().partition(&id, p).cloned() else {
            return;
        };
        let replicas = if self.rng.gen_bool(0.25) {
            None
        } else {
            let n = self.rng.gen_range(0..=3);
            Some(
                (0..n)
                    .map(|_| self.rng.gen_range(1..=NODES + 1))
                    .collect::<Vec<_>>(),
            )
        };
        let target = ReassignmentTarget {
            topic_id: id,
            partition: p,
            replicas: replicas.clone(),
        };
        let r = self
            .controller
            .alter_partition_reassignments(&[target], true);
        let outcome = r.response[0].clone();
        match outcome {
            Ok(()) => {
                self.commit(r);
                let after = self.controller.image().partition(&id, p).unwrap();
                match &replicas {
                    Some(t) => assert_eq!(&after.target_replicas(), t, "{after:?}"),
                    None => {
                        assert!(before.is_reassigning() && !after.is_reassigning());
                        assert_eq!(after.replicas, before.original_replicas());
                    }
                }
            }
            Err(e) => {
                assert!(r.records.is_empty());
                match (e.code(), &replicas) {
                    (85, None) => assert!(!before.is_reassigning()),
                    (39, None) => assert!(before
                        .isr
                        .iter()
                        .all(|b| before.adding_replicas.contains(b))),
                    (39, Some(_)) => {}
                    _ => panic!("reassignment of {id}/{p} to {replicas:?}: {e}"),
                }
            }
        }
    }

    /// Set, clear or remove a topic's `unclean.leader.election.enable`. Switched on, no
    /// partition with a live replica stays leaderless.
    fn alter_unclean_config(&mut self) {
        let Some((name, id)) = self.random_topic() else {
            return;
        };
        let value = match self.rng.gen_range(0..3) {
            0 => Some("true".to_string()),
            1 => Some("false".to_string()),
            _ => None,
        };
        let r = self
            .controller
            .alter_topic_configs(&name, &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), value)])
            .unwrap();
        self.commit(r);
        if self.unclean_enabled(&id) {
            let img = self.controller.image();
            for (p, s) in img.partitions(&id) {
                let live = s
                    .replicas
                    .iter()
                    .any(|b| img.broker(*b).is_some_and(|b| !b.fenced));
                assert!(
                    s.leader != NO_LEADER || !live,
                    "{name}/{p} stays leaderless with a live replica after enabling unclean \
                     election: {s:?}"
                );
            }
        }
    }

    /// ElectLeaders of a random type for every partition or a few (some unknown); every answer
    /// must follow from the partition's state before the call.
    fn elect_leaders(&mut self) {
        let election = if self.rng.gen_bool(0.5) {
            ElectionType::Preferred
        } else {
            ElectionType::Unclean
        };
        let partitions: Option<Vec<(Uuid, u32)>> = if self.rng.gen_bool(0.3) {
            None
        } else {
            let mut v = Vec::new();
            for _ in 0..self.rng.gen_range(1..4) {
                match self.random_topic() {
                    Some((_, id)) => v.push((id, self.rng.gen_range(0..5))),
                    None => v.push((Uuid::from_u128(self.rng.gen()), 0)),
                }
            }
            // A partition asked twice is elected by the first ask; expectations below are
            // computed from the state before the call, so ask each once.
            v.sort();
            v.dedup();
            Some(v)
        };
        let before = self.controller.image().clone();
        let r = self
            .controller
            .elect_leaders(election, partitions.as_deref());
        self.unclean_requested = election == ElectionType::Unclean;
        let results = self.commit(r);
        self.unclean_requested = false;
        if let Some(asked) = &partitions {
            assert_eq!(results.len(), asked.len(), "one result per partition asked");
        }
        let img = self.controller.image();
        let live = |b: NodeId| before.broker(b).is_some_and(|b| !b.fenced);
        for e in results {
            let Some(s) = before.partition(&e.topic_id, e.partition) else {
                assert_eq!(e.error, election_error::UNKNOWN_TOPIC_OR_PARTITION, "{e:?}");
                continue;
            };
            let after = img.partition(&e.topic_id, e.partition).unwrap();
            let preferred = s.preferred_leader();
            let expected = match election {
                ElectionType::Preferred if s.leader == preferred => {
                    election_error::ELECTION_NOT_NEEDED
                }
                ElectionType::Preferred
                    if s.isr.contains(&preferred)
                        && live(preferred)
                        && !before.broker(preferred).is_some_and(|b| b.in_maintenance()) =>
                {
                    assert_eq!(after.leader, preferred);
                    election_error::NONE
                }
                ElectionType::Preferred => election_error::PREFERRED_LEADER_NOT_AVAILABLE,
                ElectionType::Unclean if s.leader != NO_LEADER => {
                    election_error::ELECTION_NOT_NEEDED
                }
                ElectionType::Unclean if s.replicas.iter().any(|b| live(*b)) => {
                    assert_ne!(after.leader, NO_LEADER);
                    election_error::NONE
                }
                ElectionType::Unclean => election_error::ELIGIBLE_LEADERS_NOT_AVAILABLE,
            };
            assert_eq!(e.error, expected, "{election:?} {e:?} from {s:?}");
            if partitions.is_none() {
                assert_ne!(e.error, election_error::ELECTION_NOT_NEEDED);
            }
        }
    }

    fn cordon(&mut self) {
        let node = self.node();
        let on = self.rng.gen_bool(0.5);
        match self.controller.set_cordoned(node, on) {
            Ok(r) => self.commit(r),
            Err(ControllerError::BrokerIdNotRegistered(_)) => {}
            Err(ControllerError::InvalidRequest(_)) => {
                let b = self.controller.image().broker(node).unwrap();
                assert!(!on && b.in_maintenance(), "cordon {on} refused: {b:?}");
            }
            Err(e) => panic!("cordon: {e}"),
        }
    }

    /// Enter maintenance (with or without a drain and a throttle) or leave it.
    fn maintenance(&mut self) {
        let node = self.node();
        let request = self.rng.gen_bool(0.7).then(|| MaintenanceRequest {
            drain_replicas: self.rng.gen_bool(0.6),
            throttle_bytes_per_s: self.rng.gen_bool(0.5).then_some(1_000_000),
        });
        let before = self.controller.image().clone();
        match self.controller.set_maintenance(node, request) {
            Ok(r) => {
                self.commit(r);
                let b = self.controller.image().broker(node).unwrap();
                assert_eq!(b.in_maintenance(), request.is_some());
                if request.is_some() {
                    assert!(b.cordoned);
                }
                self.check_drain_moves(&before);
            }
            Err(ControllerError::BrokerIdNotRegistered(_)) => {}
            Err(ControllerError::InvalidReplicaAssignment(why)) => {
                assert!(request.is_some_and(|r| r.drain_replicas), "{why}");
                assert_eq!(&before, self.controller.image(), "a refused drain wrote");
            }
            Err(e) => panic!("maintenance of {node}: {e}"),
        }
    }

    fn maintenance_tick(&mut self) {
        let before = self.controller.image().clone();
        let r = self.controller.maintenance_tick(self.now);
        self.commit(r);
        self.check_drain_moves(&before);
        let img = self.controller.image();
        for (t, p, s) in img.all_partitions() {
            let Some(leader) = img.broker(s.leader) else {
                continue;
            };
            let other = s.isr.iter().any(|b| {
                *b != s.leader
                    && img
                        .broker(*b)
                        .is_some_and(|b| !b.fenced && !b.in_maintenance())
            });
            assert!(
                !(leader.in_maintenance() && other),
                "broker {} in maintenance still leads {t}/{p}: {s:?}",
                s.leader
            );
        }
    }

    /// Moves started since `before` off a draining broker go to uncordoned brokers and keep
    /// the partition's rack spread.
    fn check_drain_moves(&self, before: &ClusterImage) {
        let img = self.controller.image();
        let rack = |b: &NodeId| img.broker(*b).map(|b| b.rack.clone());
        for (t, p, s) in img.all_partitions() {
            let Some(old) = before.partition(&t, p) else {
                continue;
            };
            let drained = s.removing_replicas.iter().any(|b| {
                img.broker(*b).is_some_and(|b| b.draining()) && !old.removing_replicas.contains(b)
            });
            if !drained {
                continue;
            }
            // New replicas (one an earlier move was adding may stay wherever it is).
            for b in s
                .adding_replicas
                .iter()
                .filter(|b| !old.replicas.contains(b))
            {
                assert!(
                    !img.broker(*b).unwrap().cordoned,
                    "drain moved {t}/{p} to cordoned {b}"
                );
            }
            let spread = |r: &[NodeId]| {
                r.iter()
                    .map(rack)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            };
            assert!(
                spread(&s.target_replicas()) >= spread(&old.target_replicas()),
                "drain lowered the rack spread of {t}/{p}: {old:?} -> {s:?}"
            );
        }
    }

    fn unregister(&mut self) {
        let node = self.node();
        if self.rng.gen_bool(0.7) {
            return; // rare
        }
        match self.controller.unregister_broker(node) {
            Ok(r) => {
                self.commit(r);
                let b = self.brokers.get_mut(&node).unwrap();
                if let Some(old) = b.epoch.take() {
                    b.old_epochs.push(old);
                }
                b.alive = false;
            }
            Err(ControllerError::BrokerIdNotRegistered(_)) => {}
            Err(e) => panic!("unregister: {e}"),
        }
    }

    /// A new active controller rebuilt from the log; brokers get a fresh session.
    fn failover(&mut self) {
        let mut c = Controller::new(*self.controller.config());
        for rec in &self.log {
            c.replay(rec);
        }
        assert_eq!(c.image(), self.controller.image(), "replayed image differs");
        assert_eq!(c.next_offset(), self.controller.next_offset());
        // A snapshot (the image as records) rebuilds the same image.
        let snapshot = c.image().to_records();
        assert_eq!(
            &ClusterImage::from_records(&snapshot),
            c.image(),
            "snapshot differs"
        );
        c.activate(self.now);
        for b in self.brokers.values_mut() {
            b.last_contact = self.now;
        }
        self.controller = c;
        self.controller_unclean = 0;
    }

    fn check(&mut self) {
        let img = self.controller.image();
        assert_eq!(img, &self.replica, "replica image diverged");
        assert_eq!(self.controller.next_offset(), self.log.len() as i64);
        for b in img.brokers() {
            let max = self
                .broker_epochs
                .entry(b.node_id)
                .or_insert(b.broker_epoch);
            assert!(b.broker_epoch >= *max, "broker {} epoch fell", b.node_id);
            *max = b.broker_epoch;
        }
        // The per-broker load kept by deltas equals a full recount.
        let mut load: HashMap<NodeId, (u32, u32)> = HashMap::new();
        for (_, _, s) in img.all_partitions() {
            for (i, b) in s.replicas.iter().enumerate() {
                let l = load.entry(*b).or_default();
                l.0 += 1;
                l.1 += u32::from(i == 0);
            }
        }
        let kept: HashMap<NodeId, (u32, u32)> = img
            .load()
            .iter()
            .map(|(b, l)| (*b, (l.replicas, l.leaders)))
            .collect();
        assert_eq!(kept, load, "broker load index drifted");
        assert_eq!(
            img.reassigning_count(),
            img.all_partitions()
                .filter(|(_, _, s)| s.is_reassigning())
                .count(),
            "reassigning index drifted"
        );
        for (t, p, s) in img.all_partitions() {
            if s.is_reassigning() {
                let isr: Vec<NodeId> = s
                    .isr
                    .iter()
                    .copied()
                    .filter(|b| !s.removing_replicas.contains(b))
                    .collect();
                assert!(
                    isr.is_empty() || !s.target_replicas().iter().all(|b| isr.contains(b)),
                    "reassignment of {t}/{p} left in progress with its target in sync: {s:?}"
                );
            }
            if s.leader != NO_LEADER {
                assert!(
                    s.isr.contains(&s.leader),
                    "leader not in ISR {t}/{p}: {s:?}"
                );
                let b = img.broker(s.leader).expect("leader is registered");
                assert!(!b.fenced, "fenced broker {} leads {t}/{p}", s.leader);
            }
            assert!(s.isr.iter().all(|b| s.replicas.contains(b)));
            let prev = self
                .epochs
                .insert((t, p), (s.leader_epoch, s.partition_epoch));
            if let Some((le, pe)) = prev {
                assert!(
                    s.leader_epoch >= le && s.partition_epoch >= pe,
                    "epochs fell {t}/{p}"
                );
            }
            let first = *self
                .leaders_by_epoch
                .entry((t, p, s.leader_epoch))
                .or_insert(s.leader);
            assert_eq!(
                first, s.leader,
                "two leaders for {t}/{p} in epoch {}",
                s.leader_epoch
            );
        }
    }
}

fn run(seed: u64) {
    let result = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed);
        for _ in 0..STEPS {
            sim.step();
        }
        (sim.log.len(), sim.seed)
    });
    if let Err(e) = result {
        eprintln!(
            "controller simulation failed with seed {seed}; reproduce with \
             FJORD_SIM_SEED={seed} cargo test -p fjord-metadata --test controller_sim"
        );
        std::panic::resume_unwind(e);
    }
}

#[test]
fn controller_simulation() {
    if let Ok(seed) = std::env::var("FJORD_SIM_SEED") {
        run(seed.parse().expect("FJORD_SIM_SEED is a u64"));
        return;
    }
    let seeds: u64 = std::env::var("FJORD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 0..seeds {
        run(seed);
    }
}

/// The simulation exercises what it claims to: fencing, elections and stale epochs all happen.
#[test]
fn simulation_covers_the_interesting_paths() {
    let (mut fences, mut elections, mut registrations, mut isr_changes) = (0, 0, 0, 0);
    let (mut started, mut completed) = (0, 0);
    let (mut maintenance, mut drains_completed) = (0, 0);
    let mut unclean = 0;
    for seed in 0..20 {
        let mut sim = Sim::new(seed);
        for _ in 0..STEPS {
            sim.step();
        }
        unclean += sim.unclean;
        for rec in &sim.log {
            match rec {
                MetadataRecord::FenceBroker { .. } => fences += 1,
                MetadataRecord::RegisterBroker { .. } => registrations += 1,
                MetadataRecord::PartitionChange {
                    leader: Some(_), ..
                } => elections += 1,
                MetadataRecord::PartitionChange { isr: Some(_), .. } => isr_changes += 1,
                MetadataRecord::BrokerMaintenance { state: Some(m), .. } => {
                    maintenance += 1;
                    drains_completed += usize::from(m.drain_completed);
                }
                _ => {}
            }
            if let MetadataRecord::PartitionChange {
                adding_replicas: a,
                removing_replicas: r,
                ..
            } = rec
            {
                let set = |x: &Option<Vec<NodeId>>| x.as_ref().is_some_and(|v| !v.is_empty());
                let cleared = |x: &Option<Vec<NodeId>>| x.as_ref().is_some_and(Vec::is_empty);
                if set(a) || set(r) {
                    started += 1;
                } else if cleared(a) || cleared(r) {
                    completed += 1;
                }
            }
        }
    }
    eprintln!("reassignments: {started} started or changed, {completed} ended");
    assert!(
        started > 20 && completed > 10,
        "reassignments: {started} started, {completed} ended"
    );
    eprintln!(
        "fences {fences}, elections {elections}, registrations {registrations}, isr {isr_changes}, \
         unclean {unclean}"
    );
    assert!(unclean > 5, "unclean elections {unclean}");
    eprintln!("maintenance {maintenance}, drains completed {drains_completed}");
    assert!(
        maintenance > 20 && drains_completed > 2,
        "maintenance {maintenance}, drains completed {drains_completed}"
    );
    assert!(
        fences > 20 && elections > 20 && registrations > 50 && isr_changes > 20,
        "fences {fences}, elections {elections}, registrations {registrations}, isr {isr_changes}"
    );
}
