//! The classic group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup), as in Kafka's
//! `ClassicGroup` and `GroupMetadataManager`:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲       ▲                                      │ leader's SyncGroup
//!     │ last member     │       └──── join, leave, expiry ─────────────┤
//!     └─ leaves ────────┴──────────── join (leader / new metadata) ── Stable
//! ```
//!
//! Static members (KIP-345, `group.instance.id`) keep their assignment and the generation when
//! they rejoin with the same protocols while the group is Stable; a second member claiming the
//! same instance id fences the older one (FENCED_INSTANCE_ID).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use crate::coordinator::{
    group_record, Config, Effects, Event, GroupDescription, JoinMember, JoinRequest, JoinResult,
    LeaveMember, MemberDescription, Reply, SyncRequest, SyncResult, Token,
};
use crate::records::{GroupValue, MemberValue};
use crate::subscription;
use fjord_protocol::error::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicState {
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClassicMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A parked JoinGroup: its token and request version.
    pub awaiting_join: Option<(Token, i16)>,
    pub awaiting_sync: Option<Token>,
    /// Whether the member sent SyncGroup in the current generation.
    pub synced: bool,
    pub session_deadline: i64,
}

impl ClassicMember {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    fn to_value(&self) -> MemberValue {
        MemberValue {
            member_id: self.member_id.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            session_timeout_ms: self.session_timeout_ms,
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            protocol_type: self.protocol_type.clone(),
            protocols: self
                .protocols
                .iter()
                .map(|(n, m)| (n.clone(), m.to_vec()))
                .collect(),
            assignment: self.assignment.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    deadline: i64,
    remaining_ms: i64,
}

#[derive(Debug)]
pub struct ClassicGroup {
    pub state: ClassicState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, ClassicMember>,
    /// group.instance.id → member id.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to rejoin by.
    pub pending_members: HashMap<String, i64>,
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    sync_deadline: Option<i64>,
    new_member_added: bool,
}

impl Default for ClassicGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ClassicGroup {
    pub fn new() -> ClassicGroup {
        ClassicGroup {
            state: ClassicState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            new_member_added: false,
        }
    }

    /// Rebuild from the persisted metadata: members get a fresh session, so a static member
    /// that rejoins within its session timeout after a coordinator restart keeps its place.
    pub fn from_record(v: &GroupValue, now: i64) -> ClassicGroup {
        let mut g = ClassicGroup::new();
        g.generation_id = v.generation;
        g.protocol_type = v.protocol_type.clone();
        g.protocol_name = v.protocol.clone();
        g.leader_id = v.leader.clone();
        for m in &v.members {
            let member = ClassicMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: m.protocol_type.clone(),
                protocols: m
                    .protocols
                    .iter()
                    .map(|(n, b)| (n.clone(), Bytes::from(b.clone())))
                    .collect(),
                assignment: Bytes::from(m.assignment.clone()),
                awaiting_join: None,
                awaiting_sync: None,
                synced: true,
                session_deadline: now + m.session_timeout_ms as i64,
            };
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), member);
        }
        g.state = if g.members.is_empty() {
            ClassicState::Empty
        } else {
            ClassicState::Stable
        };
        g
    }

    fn to_value(&self, now: i64) -> GroupValue {
        GroupValue {
            group_type: "classic".into(),
            protocol_type: self.protocol_type.clone(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            members: self.members.values().map(ClassicMember::to_value).collect(),
            timestamp: now,
        }
    }

    fn persist(&self, group: &str, partition: i32, now: i64, fx: &mut Effects) {
        fx.records
            .push(group_record(partition, group, &self.to_value(now)));
    }

    /// Topics in the members' subscriptions (consumer protocol only).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return out;
        }
        let Some(p) = &self.protocol_name else {
            return out;
        };
        for m in self.members.values() {
            if let Some(s) = subscription::parse_subscription(&m.metadata(p)) {
                out.extend(s.topics);
            }
        }
        out
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return BTreeSet::new();
        };
        let mut set: BTreeSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            let theirs: BTreeSet<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            set = set.intersection(&theirs).cloned().collect();
        }
        set
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// Each member votes for its most preferred protocol among those all support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| n.to_string())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    fn join_result(
        &self,
        member_id: &str,
        with_members: bool,
        skip_assignment: bool,
    ) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error: ErrorCode::None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            skip_assignment,
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .values()
                    .map(|m| JoinMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        token: Token,
        req: JoinRequest,
        now: i64,
        fx: &mut Effects,
    ) {
        let err = |fx: &mut Effects, e: ErrorCode, member: &str| {
            fx.replies
                .push((token, Reply::Join(JoinResult::error(e, member))));
        };
        if self.state == ClassicState::Dead {
            return err(fx, ErrorCode::CoordinatorNotAvailable, &req.member_id);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return err(fx, ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            // A new member.
            if let Some(instance) = &req.group_instance_id {
                if let Some(old) = self.static_members.get(instance).cloned() {
                    return self.replace_static_member(group, partition, token, old, req, now, fx);
                }
            }
            if self.members.len() + self.pending_members.len() >= config.max_size {
                return err(fx, ErrorCode::GroupMaxSizeReached, "");
            }
            let prefix = req
                .group_instance_id
                .clone()
                .unwrap_or_else(|| req.client_id.clone());
            let member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if req.group_instance_id.is_none() && req.version >= 4 {
                // KIP-394: hand out the id first so a retried JoinGroup cannot leak members.
                self.pending_members
                    .insert(member_id.clone(), now + req.session_timeout_ms as i64);
                return err(fx, ErrorCode::MemberIdRequired, &member_id);
            }
            return self.add_member(group, partition, config, token, member_id, req, now, fx);
        }
        // A known member.
        if self.pending_members.contains_key(&req.member_id) {
            let id = req.member_id.clone();
            self.pending_members.remove(&id);
            if self.members.len() >= config.max_size {
                return err(fx, ErrorCode::GroupMaxSizeReached, &id);
            }
            return self.add_member(group, partition, config, token, id, req, now, fx);
        }
        if let Some(instance) = &req.group_instance_id {
            match self.static_members.get(instance) {
                Some(id) if *id != req.member_id => {
                    return err(fx, ErrorCode::FencedInstanceId, &req.member_id)
                }
                None => return err(fx, ErrorCode::UnknownMemberId, &req.member_id),
                _ => {}
            }
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return err(fx, ErrorCode::UnknownMemberId, &req.member_id);
        };
        let same = member.same_protocols(&req.protocols);
        let is_leader = self.is_leader(&req.member_id);
        match self.state {
            ClassicState::PreparingRebalance => {
                self.update_member(token, &req, now, fx);
                self.try_complete_join(group, partition, now, fx);
            }
            ClassicState::CompletingRebalance if same => {
                // A retried JoinGroup: answer with the current generation.
                let r = self.join_result(&req.member_id, is_leader, false);
                fx.replies.push((token, Reply::Join(r)));
            }
            ClassicState::Stable if same && !is_leader => {
                let r = self.join_result(&req.member_id, false, false);
                fx.replies.push((token, Reply::Join(r)));
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.update_member(token, &req, now, fx);
                let reason = if is_leader {
                    "leader rejoined"
                } else {
                    "member updated its protocols"
                };
                let reason = format!(
                    "{reason} ({}){}",
                    req.member_id,
                    req.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                self.prepare_rebalance(group, partition, config, &reason, now, fx);
            }
            ClassicState::Empty | ClassicState::Dead => {
                err(fx, ErrorCode::UnknownMemberId, &req.member_id)
            }
        }
    }

    fn update_member(&mut self, token: Token, req: &JoinRequest, now: i64, fx: &mut Effects) {
        let m = self.members.get_mut(&req.member_id).expect("member");
        if let Some((old, _)) = m.awaiting_join.take() {
            // A client that re-sent JoinGroup while the first is parked: the first one is
            // superseded (Kafka answers it with the same error the client would retry on).
            fx.replies.push((
                old,
                Reply::Join(JoinResult::error(
                    ErrorCode::RebalanceInProgress,
                    &req.member_id,
                )),
            ));
        }
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.awaiting_join = Some((token, req.version));
        m.session_deadline = now + req.session_timeout_ms as i64;
    }

    #[allow(clippy::too_many_arguments)]
    fn add_member(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        token: Token,
        member_id: String,
        req: JoinRequest,
        now: i64,
        fx: &mut Effects,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let member = ClassicMember {
            member_id: member_id.clone(),
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some((token, req.version)),
            awaiting_sync: None,
            synced: false,
            session_deadline: now + req.session_timeout_ms as i64,
        };
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), member_id.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        self.members.insert(member_id.clone(), member);
        self.new_member_added = true;
        if self.state == ClassicState::PreparingRebalance {
            self.try_complete_join(group, partition, now, fx);
        } else {
            let reason = format!(
                "new member {member_id} joined{}",
                req.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            self.prepare_rebalance(group, partition, config, &reason, now, fx);
        }
    }

    /// KIP-345: a static member rejoined with a new member id.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        group: &str,
        partition: i32,
        token: Token,
        old_id: String,
        req: JoinRequest,
        now: i64,
        fx: &mut Effects,
    ) {
        let instance = req.group_instance_id.clone().expect("static");
        let prefix = instance.clone();
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let mut m = self.members.remove(&old_id).expect("static member present");
        // The old incarnation's parked requests are fenced.
        if let Some((t, _)) = m.awaiting_join.take() {
            fx.replies.push((
                t,
                Reply::Join(JoinResult::error(ErrorCode::FencedInstanceId, &old_id)),
            ));
        }
        if let Some(t) = m.awaiting_sync.take() {
            fx.replies.push((
                t,
                Reply::Sync(SyncResult::error(ErrorCode::FencedInstanceId)),
            ));
        }
        // Only what the assignment depends on matters: the selected protocol staying
        // available and, for the consumer protocol, the subscribed topics. Owned partitions
        // or the generation in the subscription bytes change on every restart.
        let selected = self.protocol_name.clone().unwrap_or_default();
        let topics = |ps: &[(String, Bytes)]| {
            ps.iter()
                .find(|(n, _)| *n == selected)
                .map(|(_, md)| subscription::parse_subscription(md).map(|s| s.topics))
        };
        let protocols_changed = topics(&m.protocols) != topics(&req.protocols)
            || !req.protocols.iter().any(|(n, _)| *n == selected);
        m.member_id = new_id.clone();
        m.protocols = req.protocols.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.session_deadline = now + req.session_timeout_ms as i64;
        self.members.insert(new_id.clone(), m);
        self.static_members.insert(instance.clone(), new_id.clone());
        if self.is_leader(&old_id) {
            self.leader_id = Some(new_id.clone());
        }
        let is_leader = self.is_leader(&new_id);
        let config_stub = Config::default();
        match self.state {
            ClassicState::Stable if !protocols_changed => {
                // Same generation, same assignment: no rebalance (KIP-345). A v9+ leader is
                // told to skip the assignment (KIP-814); an older one gets no member list,
                // and its SyncGroup returns the stored assignment either way.
                self.persist(group, partition, now, fx);
                let skip = is_leader && req.version >= 9;
                let r = self.join_result(&new_id, skip, skip);
                fx.replies.push((token, Reply::Join(r)));
            }
            ClassicState::PreparingRebalance => {
                self.members.get_mut(&new_id).expect("member").awaiting_join =
                    Some((token, req.version));
                self.try_complete_join(group, partition, now, fx);
            }
            _ => {
                self.members.get_mut(&new_id).expect("member").awaiting_join =
                    Some((token, req.version));
                let reason = format!("static member {instance} rejoined with new metadata");
                self.prepare_rebalance(group, partition, &config_stub, &reason, now, fx);
            }
        }
    }

    fn prepare_rebalance(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        reason: &str,
        now: i64,
        fx: &mut Effects,
    ) {
        if self.state == ClassicState::CompletingRebalance {
            self.reset_pending_syncs(ErrorCode::RebalanceInProgress, fx);
        }
        let initial = self.state == ClassicState::Empty;
        let rebalance_timeout = self.max_rebalance_timeout();
        if initial && config.initial_rebalance_delay_ms > 0 {
            let delay = config
                .initial_rebalance_delay_ms
                .min(rebalance_timeout.max(1));
            self.initial_delay = Some(InitialDelay {
                deadline: now + delay,
                remaining_ms: (rebalance_timeout - config.initial_rebalance_delay_ms).max(0),
            });
            self.new_member_added = false;
            self.join_deadline = None;
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now + rebalance_timeout);
        }
        self.sync_deadline = None;
        self.state = ClassicState::PreparingRebalance;
        fx.events.push(Event::Rebalance {
            group: group.to_string(),
            group_type: "classic",
            generation: self.generation_id,
            members: self.members.len(),
            reason: reason.to_string(),
        });
        self.try_complete_join(group, partition, now, fx);
    }

    fn reset_pending_syncs(&mut self, error: ErrorCode, fx: &mut Effects) {
        for m in self.members.values_mut() {
            if let Some(t) = m.awaiting_sync.take() {
                fx.replies.push((t, Reply::Sync(SyncResult::error(error))));
            }
            m.assignment = Bytes::new();
        }
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn try_complete_join(&mut self, group: &str, partition: i32, now: i64, fx: &mut Effects) {
        if self.state == ClassicState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_joined()
        {
            self.complete_join(group, partition, now, fx);
        }
    }

    fn complete_join(&mut self, group: &str, partition: i32, now: i64, fx: &mut Effects) {
        if self.state != ClassicState::PreparingRebalance {
            return;
        }
        self.initial_delay = None;
        self.join_deadline = None;
        // Dynamic members that did not rejoin in time are gone; static ones keep their place.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.persist(group, partition, now, fx);
            fx.events.push(Event::Generation {
                group: group.to_string(),
                group_type: "classic",
                generation: self.generation_id,
                members: Vec::new(),
                protocol: None,
            });
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = ClassicState::CompletingRebalance;
        let leader_ok = self
            .leader_id
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_ok {
            self.leader_id = self
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            let is_leader = self.is_leader(id);
            let r = self.join_result(id, is_leader, false);
            let m = self.members.get_mut(id).expect("member");
            m.synced = false;
            m.assignment = Bytes::new();
            if let Some((t, _)) = m.awaiting_join.take() {
                m.session_deadline = now + m.session_timeout_ms as i64;
                fx.replies.push((t, Reply::Join(r)));
            }
        }
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        fx.events.push(Event::Generation {
            group: group.to_string(),
            group_type: "classic",
            generation: self.generation_id,
            members: ids,
            protocol: self.protocol_name.clone(),
        });
    }

    pub(crate) fn sync(
        &mut self,
        group: &str,
        partition: i32,
        token: Token,
        req: SyncRequest,
        now: i64,
        fx: &mut Effects,
    ) {
        let err = |fx: &mut Effects, e: ErrorCode| {
            fx.replies.push((token, Reply::Sync(SyncResult::error(e))));
        };
        if let Some(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return err(fx, e);
        }
        if req.generation_id != self.generation_id {
            return err(fx, ErrorCode::IllegalGeneration);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| Some(p) != self.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != self.protocol_name.as_ref())
        {
            return err(fx, ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            ClassicState::Empty | ClassicState::Dead => err(fx, ErrorCode::UnknownMemberId),
            ClassicState::PreparingRebalance => err(fx, ErrorCode::RebalanceInProgress),
            ClassicState::CompletingRebalance => {
                let m = self.members.get_mut(&req.member_id).expect("validated");
                m.awaiting_sync = Some(token);
                m.synced = true;
                m.session_deadline = now + m.session_timeout_ms as i64;
                if self.is_leader(&req.member_id) {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
                    }
                    self.state = ClassicState::Stable;
                    self.sync_deadline = None;
                    self.persist(group, partition, now, fx);
                    for m in self.members.values_mut() {
                        if let Some(t) = m.awaiting_sync.take() {
                            fx.replies.push((
                                t,
                                Reply::Sync(SyncResult {
                                    error: ErrorCode::None,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                }),
                            ));
                        }
                    }
                }
            }
            ClassicState::Stable => {
                let m = self.members.get_mut(&req.member_id).expect("validated");
                m.synced = true;
                m.session_deadline = now + m.session_timeout_ms as i64;
                fx.replies.push((
                    token,
                    Reply::Sync(SyncResult {
                        error: ErrorCode::None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    }),
                ));
            }
        }
    }

    /// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID, or `None` if the member is who it claims.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Option<ErrorCode> {
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(id) if id != member_id => return Some(ErrorCode::FencedInstanceId),
                None => return Some(ErrorCode::UnknownMemberId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Some(ErrorCode::UnknownMemberId);
        }
        None
    }

    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
    ) -> ErrorCode {
        if matches!(self.state, ClassicState::Empty | ClassicState::Dead) {
            return ErrorCode::UnknownMemberId;
        }
        if let Some(e) = self.validate_member(member_id, instance_id) {
            return e;
        }
        if generation_id != self.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        let m = self.members.get_mut(member_id).expect("validated");
        m.session_deadline = now + m.session_timeout_ms as i64;
        match self.state {
            ClassicState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            _ => ErrorCode::None,
        }
    }

    pub(crate) fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ErrorCode> {
        // A standalone commit (generation -1: assign() consumers, admin tools) is taken while
        // the group is empty, whatever member id it carries (librdkafka sends its own), as
        // Kafka; with members it needs no member id to be refused as such.
        if generation_id < 0 && self.members.is_empty() {
            return Ok(());
        }
        if generation_id < 0 && member_id.is_empty() {
            return Err(ErrorCode::IllegalGeneration);
        }
        if let Some(e) = self.validate_member(member_id, instance_id) {
            return Err(e);
        }
        if generation_id != self.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        if self.state == ClassicState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        Ok(())
    }

    pub(crate) fn leave(
        &mut self,
        group: &str,
        partition: i32,
        who: &LeaveMember,
        now: i64,
        fx: &mut Effects,
    ) -> ErrorCode {
        let member_id = if let Some(i) = &who.group_instance_id {
            match self.static_members.get(i) {
                None => return ErrorCode::UnknownMemberId,
                Some(id) if !who.member_id.is_empty() && *id != who.member_id => {
                    return ErrorCode::FencedInstanceId
                }
                Some(id) => id.clone(),
            }
        } else {
            if self.pending_members.remove(&who.member_id).is_some() {
                self.try_complete_join(group, partition, now, fx);
                return ErrorCode::None;
            }
            who.member_id.clone()
        };
        if !self.members.contains_key(&member_id) {
            return ErrorCode::UnknownMemberId;
        }
        let reason = format!("member {member_id} left the group");
        self.remove_member(group, partition, &member_id, &reason, now, fx);
        ErrorCode::None
    }

    fn remove_member(
        &mut self,
        group: &str,
        partition: i32,
        member_id: &str,
        reason: &str,
        now: i64,
        fx: &mut Effects,
    ) {
        let Some(mut m) = self.members.remove(member_id) else {
            return;
        };
        if let Some((t, _)) = m.awaiting_join.take() {
            fx.replies.push((
                t,
                Reply::Join(JoinResult::error(ErrorCode::UnknownMemberId, member_id)),
            ));
        }
        if let Some(t) = m.awaiting_sync.take() {
            fx.replies.push((
                t,
                Reply::Sync(SyncResult::error(ErrorCode::UnknownMemberId)),
            ));
        }
        if let Some(i) = &m.instance_id {
            self.static_members.remove(i);
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => self.prepare_rebalance(
                group,
                partition,
                &Config::default_no_delay(),
                reason,
                now,
                fx,
            ),
            ClassicState::PreparingRebalance => self.try_complete_join(group, partition, now, fx),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    pub(crate) fn tick(
        &mut self,
        group: &str,
        partition: i32,
        config: &Config,
        now: i64,
        fx: &mut Effects,
    ) {
        // Pending (MEMBER_ID_REQUIRED) members that never came back.
        let before = self.pending_members.len();
        self.pending_members.retain(|_, deadline| *deadline > now);
        if self.pending_members.len() != before {
            self.try_complete_join(group, partition, now, fx);
        }
        // Session expiry. Members parked in JoinGroup/SyncGroup are alive by definition.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .filter(|m| m.session_deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            fx.events.push(Event::MemberExpired {
                group: group.to_string(),
                member: id.clone(),
            });
            let reason = format!("member {id} session timed out");
            self.remove_member(group, partition, &id, &reason, now, fx);
        }
        if let Some(d) = self.initial_delay {
            if now >= d.deadline {
                if self.new_member_added && d.remaining_ms > 0 {
                    self.new_member_added = false;
                    let delay = config.initial_rebalance_delay_ms.min(d.remaining_ms);
                    self.initial_delay = Some(InitialDelay {
                        deadline: now + delay,
                        remaining_ms: (d.remaining_ms - config.initial_rebalance_delay_ms).max(0),
                    });
                } else {
                    self.initial_delay = None;
                    self.complete_join(group, partition, now, fx);
                }
            }
        }
        if self.state == ClassicState::PreparingRebalance
            && self.join_deadline.is_some_and(|d| now >= d)
        {
            self.complete_join(group, partition, now, fx);
        }
        if self.state == ClassicState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            // The leader never sent the assignment: drop members that did not sync, retry.
            let lagging: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.synced)
                .map(|m| m.member_id.clone())
                .collect();
            for id in &lagging {
                if let Some(m) = self.members.remove(id) {
                    if let Some(i) = &m.instance_id {
                        self.static_members.remove(i);
                    }
                }
            }
            if self
                .leader_id
                .as_ref()
                .is_some_and(|l| !self.members.contains_key(l))
            {
                self.leader_id = self.members.keys().next().cloned();
            }
            self.prepare_rebalance(
                group,
                partition,
                &Config::default_no_delay(),
                "members did not send SyncGroup within the rebalance timeout",
                now,
                fx,
            );
        }
    }

    pub fn describe(&self, group: &str) -> GroupDescription {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let stable = matches!(self.state, ClassicState::Stable);
        GroupDescription {
            group_id: group.to_string(),
            state: self.state.name().to_string(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            group_type: "classic",
            generation: self.generation_id,
            members: self
                .members
                .values()
                .map(|m| {
                    let metadata = m.metadata(&protocol);
                    let rack = if self.protocol_type.as_deref() == Some("consumer") {
                        subscription::parse_subscription(&metadata).and_then(|s| s.rack)
                    } else {
                        None
                    };
                    MemberDescription {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rack,
                        metadata,
                        // Kafka shows assignments only once the group is Stable.
                        assignment: if stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    }
                })
                .collect(),
        }
    }
}

impl Config {
    /// The config used for rebalances that are never an initial one (the group has members).
    fn default_no_delay() -> Config {
        Config {
            initial_rebalance_delay_ms: 0,
            ..Config::default()
        }
    }
}
