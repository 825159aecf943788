//! The KIP-848 consumer group protocol (`ConsumerGroupHeartbeat`).
//!
//! The group has an epoch, bumped whenever membership or subscriptions (or the partitions of
//! subscribed topics) change. When the target assignment is older than the group epoch, the
//! server-side assignor computes a new one. Each member then reconciles towards its target one
//! heartbeat at a time, as Kafka's `CurrentAssignmentBuilder` does:
//!
//! - partitions it must give up are revoked first: the member keeps its epoch
//!   (UNREVOKED_PARTITIONS) until a heartbeat shows it no longer owns them;
//! - then it moves to the target epoch and gets the new partitions that no other member still
//!   owns; the rest follow once released (UNRELEASED_PARTITIONS).
//!
//! So no partition is ever owned by two members at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use uuid::Uuid;

use crate::assignor::{self, Assignment, MemberSpec};
use crate::coordinator::{
    group_record, Config, Effects, Event, GroupDescription, MemberDescription, TopicsView,
};
use crate::records::GroupValue;
use crate::subscription;
use fjord_protocol::error::ErrorCode;

pub type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// ConsumerGroupHeartbeat, decoded. `None` fields mean "unchanged" as on the wire.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// Partitions the member owns now (its acknowledgement of revocations).
    pub owned: Option<Partitions>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResult {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's full assignment when it changed (or on join); `None` = unchanged.
    pub assignment: Option<Partitions>,
}

impl HeartbeatResult {
    pub fn error(error: ErrorCode) -> HeartbeatResult {
        HeartbeatResult {
            error,
            message: None,
            member_id: String::new(),
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }

    pub fn with_message(mut self, m: &str) -> HeartbeatResult {
        self.message = Some(m.to_string());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "STABLE",
            MemberState::UnrevokedPartitions => "UNREVOKED_PARTITIONS",
            MemberState::UnreleasedPartitions => "UNRELEASED_PARTITIONS",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Partitions,
    pub pending_revocation: Partitions,
    pub session_deadline: i64,
    revocation_deadline: Option<i64>,
    last_sent: Option<Partitions>,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub target_epoch: i32,
    pub target: Assignment,
    pub members: BTreeMap<String, ConsumerMember>,
    static_members: HashMap<String, String>,
    /// (topic id, partition count, racks digest) of every subscribed topic when the epoch was
    /// last bumped: a change in any of them recomputes the assignment.
    metadata: BTreeMap<String, (Uuid, usize, u64)>,
}

fn contains_any(a: &Partitions, b: &Partitions) -> bool {
    b.iter()
        .any(|(t, ps)| a.get(t).is_some_and(|x| !x.is_disjoint(ps)))
}

fn is_subset(a: &Partitions, b: &Partitions) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|x| ps.is_subset(x)))
}

fn normalize(p: &Partitions) -> Partitions {
    p.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (*t, ps.clone()))
        .collect()
}

impl ConsumerGroup {
    pub fn new() -> ConsumerGroup {
        ConsumerGroup::default()
    }

    /// Empty, Assigning (a new target is due), Reconciling (members still moving), Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.target_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    fn bump_epoch(
        &mut self,
        group: &str,
        partition: i32,
        reason: String,
        now: i64,
        fx: &mut Effects,
    ) {
        self.group_epoch += 1;
        fx.events.push(Event::Rebalance {
            group: group.to_string(),
            group_type: "consumer",
            generation: self.group_epoch,
            members: self.members.len(),
            reason,
        });
        fx.records.push(group_record(
            partition,
            group,
            &GroupValue {
                group_type: "consumer".into(),
                protocol_type: Some("consumer".into()),
                generation: self.group_epoch,
                protocol: None,
                leader: None,
                members: Vec::new(),
                timestamp: now,
            },
        ));
    }

    fn metadata_of(&self, topics: &TopicsView) -> BTreeMap<String, (Uuid, usize, u64)> {
        self.subscribed_topics()
            .into_iter()
            .filter_map(|t| {
                topics
                    .get(&t)
                    .map(|i| (t.clone(), (i.id, i.partition_racks.len(), i.racks_hash)))
            })
            .collect()
    }

    fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        let m = self.members.remove(member_id)?;
        if let Some(i) = &m.instance_id {
            if self.static_members.get(i).is_some_and(|x| x == member_id) {
                self.static_members.remove(i);
            }
        }
        self.target.remove(member_id);
        Some(m)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn heartbeat(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        req: HeartbeatRequest,
        topics: &TopicsView,
        now: i64,
        fx: &mut Effects,
    ) -> HeartbeatResult {
        let interval = config.consumer_heartbeat_interval_ms;
        let ok = |member_id: &str, epoch: i32| HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_id: member_id.to_string(),
            member_epoch: epoch,
            heartbeat_interval_ms: interval,
            assignment: None,
        };
        // Leaving.
        if req.member_epoch == -1 || req.member_epoch == -2 {
            let Some(m) = self.members.get_mut(&req.member_id) else {
                return ok(&req.member_id, req.member_epoch);
            };
            if req.member_epoch == -2 && m.instance_id.is_some() {
                // KIP-345 with KIP-848: a static member leaving temporarily keeps its
                // partitions until it comes back or its session expires.
                m.member_epoch = -2;
                m.session_deadline = now + config.consumer_session_timeout_ms as i64;
                return ok(&req.member_id, -2);
            }
            self.remove_member(&req.member_id);
            let reason = format!("member {} left the group", req.member_id);
            self.bump_epoch(group, partition, reason, now, fx);
            return ok(&req.member_id, -1);
        }
        // Server-side regular expressions (SubscribedTopicRegex: the Java client's
        // subscribe(SubscriptionPattern), which also sends an empty topic list) are not
        // supported: refuse them, rather than take a member that subscribes to nothing and
        // would consume nothing without a word.
        if req
            .subscribed_topic_regex
            .as_deref()
            .is_some_and(|r| !r.is_empty())
        {
            return HeartbeatResult::error(ErrorCode::InvalidRequest)
                .with_message("regular-expression subscriptions are not supported yet");
        }
        let mut is_new = false;
        let member_id = if req.member_epoch == 0 {
            if let Some(instance) = &req.instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    let old = self.members.get(&old_id).expect("static member present");
                    if old.member_epoch != -2 && old_id != req.member_id {
                        return HeartbeatResult::error(ErrorCode::UnreleasedInstanceId);
                    }
                    // Take over the old incarnation's assignment and epoch.
                    let new_id = if req.member_id.is_empty() {
                        Uuid::new_v4().to_string()
                    } else {
                        req.member_id.clone()
                    };
                    // The target first: `remove_member` drops the old id's target, and a
                    // member without one would revoke everything it had (as Kafka, the new
                    // incarnation inherits the old one's target assignment).
                    let target = self.target.remove(&old_id);
                    let mut m = self.remove_member(&old_id).expect("present");
                    m.member_id = new_id.clone();
                    if m.member_epoch == -2 {
                        m.member_epoch = m.previous_epoch.max(0);
                    }
                    m.last_sent = None;
                    if let Some(t) = target {
                        self.target.insert(new_id.clone(), t);
                    }
                    self.static_members.insert(instance.clone(), new_id.clone());
                    self.members.insert(new_id.clone(), m);
                    new_id
                } else {
                    is_new = true;
                    String::new()
                }
            } else if !req.member_id.is_empty() && self.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                is_new = true;
                String::new()
            }
        } else {
            let Some(m) = self.members.get(&req.member_id) else {
                return HeartbeatResult::error(ErrorCode::UnknownMemberId);
            };
            let owned_ok = req.owned.as_ref().is_none_or(|o| is_subset(o, &m.assigned));
            if req.member_epoch > m.member_epoch
                || (req.member_epoch < m.member_epoch
                    && (req.member_epoch != m.previous_epoch || !owned_ok))
            {
                return HeartbeatResult::error(ErrorCode::FencedMemberEpoch);
            }
            req.member_id.clone()
        };
        let member_id = if is_new {
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return HeartbeatResult::error(ErrorCode::InvalidRequest)
                    .with_message("SubscribedTopicNames must be set in the first heartbeat");
            }
            if self.members.len() >= config.consumer_max_size {
                return HeartbeatResult::error(ErrorCode::GroupMaxSizeReached);
            }
            let id = if req.member_id.is_empty() {
                Uuid::new_v4().to_string()
            } else {
                req.member_id.clone()
            };
            self.members.insert(
                id.clone(),
                ConsumerMember {
                    member_id: id.clone(),
                    instance_id: req.instance_id.clone(),
                    rack: None,
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    subscribed: BTreeSet::new(),
                    assignor: None,
                    rebalance_timeout_ms: req.rebalance_timeout_ms.max(0),
                    member_epoch: 0,
                    previous_epoch: 0,
                    state: MemberState::Stable,
                    assigned: Partitions::new(),
                    pending_revocation: Partitions::new(),
                    session_deadline: 0,
                    revocation_deadline: None,
                    last_sent: None,
                },
            );
            if let Some(i) = &req.instance_id {
                self.static_members.insert(i.clone(), id.clone());
            }
            id
        } else {
            member_id
        };
        // Update what the member told us.
        let mut changed = is_new;
        {
            let m = self.members.get_mut(&member_id).expect("member");
            m.session_deadline = now + config.consumer_session_timeout_ms as i64;
            if !req.client_id.is_empty() {
                m.client_id = req.client_id.clone();
            }
            m.client_host = req.client_host.clone();
            if let Some(r) = &req.rack_id {
                let r = (!r.is_empty()).then(|| r.clone());
                if m.rack != r {
                    m.rack = r;
                    changed = true;
                }
            }
            if let Some(topics) = &req.subscribed_topic_names {
                let set: BTreeSet<String> = topics.iter().cloned().collect();
                if m.subscribed != set {
                    m.subscribed = set;
                    changed = true;
                }
            }
            if req.server_assignor.is_some() && m.assignor != req.server_assignor {
                m.assignor = req.server_assignor.clone();
                changed = true;
            }
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            }
        }
        let metadata = self.metadata_of(topics);
        if changed {
            let reason = if is_new {
                format!("member {member_id} joined")
            } else {
                format!("member {member_id} updated its subscription")
            };
            self.metadata = metadata;
            self.bump_epoch(group, partition, reason, now, fx);
        } else if metadata != self.metadata {
            self.metadata = metadata;
            self.bump_epoch(
                group,
                partition,
                "subscribed topic metadata changed".into(),
                now,
                fx,
            );
        }
        if self.target_epoch < self.group_epoch {
            self.compute_target(group, config, topics, fx);
        }
        self.reconcile(&member_id, req.owned.as_ref(), now);
        let m = self.members.get_mut(&member_id).expect("member");
        let current = normalize(&m.assigned);
        let send = req.member_epoch == 0
            || m.last_sent.as_ref() != Some(&current)
            || req.owned.as_ref().is_some_and(|o| normalize(o) != current);
        let assignment = send.then(|| {
            m.last_sent = Some(current.clone());
            current
        });
        HeartbeatResult {
            error: ErrorCode::None,
            message: None,
            member_id: member_id.clone(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: interval,
            assignment,
        }
    }

    fn compute_target(
        &mut self,
        group: &str,
        config: &Config,
        topics: &TopicsView,
        fx: &mut Effects,
    ) {
        // The assignor most members asked for, else the broker's default.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let name = votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| a.to_string())
            .or_else(|| config.consumer_assignors.first().cloned())
            .unwrap_or_else(|| "uniform".into());
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: m.member_id.clone(),
                rack: m.rack.clone(),
                topics: m.subscribed.clone(),
                current: self.target.get(&m.member_id).cloned().unwrap_or_default(),
            })
            .collect();
        self.target = assignor::assign(&name, &specs, topics);
        self.target_epoch = self.group_epoch;
        fx.events.push(Event::Generation {
            group: group.to_string(),
            group_type: "consumer",
            generation: self.target_epoch,
            members: self.members.keys().cloned().collect(),
            protocol: Some(name),
        });
    }

    /// Partitions any member other than `except` still owns (assigned or being revoked).
    fn owned_by_others(&self, except: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .values()
            .filter(|m| m.member_id != except)
            .flat_map(|m| {
                m.assigned
                    .iter()
                    .chain(m.pending_revocation.iter())
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            })
            .collect()
    }

    fn reconcile(&mut self, member_id: &str, owned: Option<&Partitions>, now: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let target_epoch = self.target_epoch;
        let others = self.owned_by_others(member_id);
        let m = self.members.get_mut(member_id).expect("member");
        if m.member_epoch < 0 {
            return;
        }
        match m.state {
            MemberState::UnrevokedPartitions => {
                let released = owned.is_some_and(|o| !contains_any(o, &m.pending_revocation));
                if !released {
                    return;
                }
                m.pending_revocation.clear();
                m.revocation_deadline = None;
            }
            MemberState::Stable if m.member_epoch == target_epoch => return,
            _ => {}
        }
        let mut keep = Partitions::new();
        let mut revoke = Partitions::new();
        for (t, ps) in &m.assigned {
            for p in ps {
                if target.get(t).is_some_and(|x| x.contains(p)) {
                    keep.entry(*t).or_default().insert(*p);
                } else {
                    revoke.entry(*t).or_default().insert(*p);
                }
            }
        }
        if !revoke.is_empty() {
            m.assigned = keep;
            m.pending_revocation = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revocation_deadline = Some(now + m.rebalance_timeout_ms.max(1) as i64);
            return;
        }
        let mut unreleased = false;
        let mut next = keep;
        for (t, ps) in &target {
            for p in ps {
                if next.get(t).is_some_and(|x| x.contains(p)) {
                    continue;
                }
                if others.contains(&(*t, *p)) {
                    unreleased = true;
                } else {
                    next.entry(*t).or_default().insert(*p);
                }
            }
        }
        if m.member_epoch != target_epoch {
            m.previous_epoch = m.member_epoch;
            m.member_epoch = target_epoch;
        }
        m.assigned = next;
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }

    pub(crate) fn validate_commit(&self, member_id: &str, epoch: i32) -> Result<(), ErrorCode> {
        // As Kafka: epoch -1 comes from the admin client or a consumer that assigns partitions
        // itself (librdkafka sends its member id even then); it may commit while the group
        // has no members.
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        if epoch != m.member_epoch {
            return Err(ErrorCode::StaleMemberEpoch);
        }
        Ok(())
    }

    pub(crate) fn tick(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        topics: &TopicsView,
        now: i64,
        fx: &mut Effects,
    ) {
        let expired: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|m| {
                if m.session_deadline <= now {
                    Some((m.member_id.clone(), "session timed out"))
                } else if m.revocation_deadline.is_some_and(|d| d <= now) {
                    Some((
                        m.member_id.clone(),
                        "did not revoke partitions within the rebalance timeout",
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in expired {
            self.remove_member(&id);
            fx.events.push(Event::MemberExpired {
                group: group.to_string(),
                member: id.clone(),
            });
            self.bump_epoch(group, partition, format!("member {id} {why}"), now, fx);
        }
        if !self.members.is_empty() && self.target_epoch < self.group_epoch {
            self.compute_target(group, config, topics, fx);
        }
    }

    fn names(topics: &TopicsView) -> BTreeMap<Uuid, String> {
        topics.values().map(|t| (t.id, t.name.clone())).collect()
    }

    fn by_name(p: &Partitions, names: &BTreeMap<Uuid, String>) -> Vec<(String, Vec<i32>)> {
        p.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .filter_map(|(t, ps)| {
                names
                    .get(t)
                    .map(|n| (n.clone(), ps.iter().copied().collect()))
            })
            .collect()
    }

    pub fn describe(&self, group: &str, topics: &TopicsView) -> GroupDescription {
        let names = Self::names(topics);
        GroupDescription {
            group_id: group.to_string(),
            state: self.state_name().to_string(),
            protocol_type: "consumer".into(),
            protocol: String::new(),
            group_type: "consumer",
            generation: self.group_epoch,
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rack: m.rack.clone(),
                    metadata: subscription::encode_subscription(&subscription::Subscription {
                        topics: m.subscribed.iter().cloned().collect(),
                        owned_partitions: Vec::new(),
                        rack: m.rack.clone(),
                        generation_id: m.member_epoch,
                    }),
                    assignment: subscription::encode_assignment(&Self::by_name(
                        &m.assigned,
                        &names,
                    )),
                })
                .collect(),
        }
    }

    /// What ConsumerGroupDescribe shows.
    pub fn describe_consumer(&self) -> ConsumerGroupDescription {
        let assignor = {
            let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
            for m in self.members.values() {
                if let Some(a) = &m.assignor {
                    *votes.entry(a.as_str()).or_default() += 1;
                }
            }
            votes
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(a, _)| a.to_string())
        };
        ConsumerGroupDescription {
            state: self.state_name().to_string(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.target_epoch,
            assignor,
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack: m.rack.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assignment: normalize(&m.assigned),
                    target: normalize(&self.target.get(&m.member_id).cloned().unwrap_or_default()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Option<String>,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assignment: Partitions,
    pub target: Partitions,
}

/// Bytes helper for callers that want an encoded assignment by topic name.
pub fn encode_by_name(p: &Partitions, topics: &TopicsView) -> Bytes {
    subscription::encode_assignment(&ConsumerGroup::by_name(p, &ConsumerGroup::names(topics)))
}
