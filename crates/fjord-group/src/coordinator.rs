//! [`Coordinator`]: every group on this broker, driven by plain function calls.
//!
//! Each operation returns [`Effects`]. The runtime must append `effects.records` to
//! `__consumer_offsets` before it sends any reply computed in the same call (an acknowledged
//! commit is durable), then deliver `effects.replies` to the parked requests they name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::classic::{ClassicGroup, ClassicState};
use crate::consumer::ConsumerGroup;
use crate::records::{self, Decoded, GroupKey, GroupValue, OffsetKey, OffsetValue};
use fjord_protocol::error::ErrorCode;

/// Identifies a parked request (a JoinGroup or SyncGroup waiting for the rest of the group).
pub type Token = u64;

/// Coordinator settings (Kafka's broker keys).
#[derive(Debug, Clone)]
pub struct Config {
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay_ms: i64,
    /// group.min.session.timeout.ms / group.max.session.timeout.ms
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// group.max.size
    pub max_size: usize,
    /// offsets.topic.num.partitions
    pub offsets_partitions: i32,
    /// offsets.retention.minutes, in ms
    pub offsets_retention_ms: i64,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// group.consumer.heartbeat.interval.ms
    pub consumer_heartbeat_interval_ms: i32,
    /// group.consumer.session.timeout.ms
    pub consumer_session_timeout_ms: i32,
    /// group.consumer.assignors (the first is the default)
    pub consumer_assignors: Vec<String>,
    /// group.consumer.max.size
    pub consumer_max_size: usize,
    /// group.lag.window.intervals / group.lag.min.distance.ms (Fjord's; Burrow's defaults)
    pub lag: crate::lag::LagConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            offsets_partitions: 50,
            offsets_retention_ms: 10080 * 60_000,
            offset_metadata_max_bytes: 4096,
            consumer_heartbeat_interval_ms: 5000,
            consumer_session_timeout_ms: 45000,
            consumer_assignors: vec!["uniform".into(), "range".into()],
            consumer_max_size: i32::MAX as usize,
            lag: crate::lag::LagConfig::default(),
        }
    }
}

/// A record for `__consumer_offsets` (tombstone when `value` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub key: Bytes,
    pub value: Option<Bytes>,
    /// A transactional offset commit's (producer id, producer epoch): the record goes in a
    /// transactional batch of that producer, which its transaction's marker ends.
    pub producer: Option<(i64, i16)>,
}

/// Something worth a log line and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A rebalance started (classic) or the group epoch was bumped (consumer).
    Rebalance {
        group: String,
        group_type: &'static str,
        generation: i32,
        members: usize,
        reason: String,
    },
    /// A classic generation completed its join phase, or a consumer group got a new target
    /// assignment.
    Generation {
        group: String,
        group_type: &'static str,
        generation: i32,
        members: Vec<String>,
        protocol: Option<String>,
    },
    /// A member was removed because it stopped heartbeating.
    MemberExpired { group: String, member: String },
    /// Offsets expired under offsets.retention.minutes.
    OffsetsExpired { group: String, count: usize },
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResult),
    Sync(SyncResult),
}

/// What an operation produced besides its direct answer.
#[derive(Debug, Default)]
pub struct Effects {
    pub records: Vec<Record>,
    pub replies: Vec<(Token, Reply)>,
    pub events: Vec<Event>,
    /// The offset commits of this operation, pending until their records are on every
    /// in-sync replica: the runtime then calls [`Coordinator::commits_replicated`] (they become
    /// visible) or, if the append or the replication fails, [`Coordinator::commits_failed`].
    pub commits: Vec<PendingCommit>,
}

/// One offset commit whose record is being appended (Kafka's `pendingOffsetCommits` entry):
/// OffsetFetch does not see it until the runtime reports it replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommit {
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    /// A transactional commit's producer id: once replicated it waits for its
    /// transaction's marker ([`Coordinator::complete_txn`]).
    pub producer_id: Option<i64>,
    /// The commit's place among this coordinator's commits, which is its record's place in
    /// the log (records are appended in the order the state machine produces them): of two
    /// commits of one partition the later one wins, whichever is replicated first.
    pub seq: u64,
}

/// An offset committed in a transaction, waiting for the transaction's end.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TxnOffset {
    seq: u64,
    offset: CommittedOffset,
    /// Its record is replicated (Kafka: `appendedBatchOffset` is set). A commit marker
    /// applies only written ones.
    written: bool,
}

/// TxnOffsetCommit: offsets a transactional producer commits for a group.
#[derive(Debug, Clone)]
pub struct TxnCommitRequest {
    pub transactional_id: String,
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// v3+ (KIP-447); -1, "" and `None` from older clients.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

impl Effects {
    pub fn merge(&mut self, other: Effects) {
        self.records.extend(other.records);
        self.replies.extend(other.replies);
        self.events.extend(other.events);
        self.commits.extend(other.commits);
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// The JoinGroup version: v4+ requires a known member id, v9+ can skip assignment.
    pub version: i16,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A member leaving (LeaveGroup v3+ batches them).
#[derive(Debug, Clone)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    /// The generation (classic) or member epoch (consumer); -1 for a standalone commit.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    pub group_type: &'static str,
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rack: Option<String>,
    /// Protocol metadata of the selected protocol (classic) or an encoded subscription.
    pub metadata: Bytes,
    /// The member's assignment in consumer-protocol bytes.
    pub assignment: Bytes,
}

/// A group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub group_type: &'static str,
    pub generation: i32,
    pub members: Vec<MemberDescription>,
}

/// A topic as the assignors see it: id, and per partition the racks of its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    /// Shared between partitions with the same racks: a cluster's partitions mostly span the
    /// same few rack sets, and a broker keeps this for every topic (at a million replicas, a set
    /// per partition was ~130 MiB).
    pub partition_racks: Vec<Arc<BTreeSet<String>>>,
    /// A digest of `partition_racks`, so a group notices that replicas moved between racks
    /// (and recomputes its rack-aware assignment) without keeping a copy of them.
    pub racks_hash: u64,
}

impl TopicInfo {
    pub fn new(name: String, id: uuid::Uuid, partition_racks: Vec<BTreeSet<String>>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        partition_racks.hash(&mut h);
        let mut distinct: std::collections::HashMap<BTreeSet<String>, Arc<BTreeSet<String>>> =
            std::collections::HashMap::new();
        let partition_racks = partition_racks
            .into_iter()
            .map(|set| {
                distinct
                    .entry(set)
                    .or_insert_with_key(|set| Arc::new(set.clone()))
                    .clone()
            })
            .collect();
        TopicInfo {
            name,
            id,
            racks_hash: h.finish(),
            partition_racks,
        }
    }
}

/// The topics that exist, by name (a snapshot handed in by the runtime).
pub type TopicsView = BTreeMap<String, TopicInfo>;

/// The protocol a group speaks.
#[derive(Debug)]
pub enum GroupKind {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

/// One group: its committed offsets and its membership state.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    /// Committed offsets whose records are replicated (what OffsetFetch answers).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// The sequence ([`PendingCommit::seq`]) of the commit each of `offsets` came from.
    offset_seqs: BTreeMap<(String, i32), u64>,
    /// Commits whose records are appended but not known to be replicated, by partition and
    /// sequence (Kafka's `pendingOffsetCommits`; several may be in flight). Never fetched.
    pending: BTreeMap<(String, i32), BTreeMap<u64, CommittedOffset>>,
    /// Offsets committed in a transaction (TxnOffsetCommit), by producer id, until the
    /// transaction's marker (Kafka's `pendingTransactionalOffsetCommits`). Never fetched.
    pending_txn: BTreeMap<i64, BTreeMap<(String, i32), TxnOffset>>,
    pub kind: GroupKind,
    /// When the group last became empty (for offset expiry).
    pub empty_since: Option<i64>,
}

impl Group {
    fn new_classic(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            offsets: BTreeMap::new(),
            offset_seqs: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
            kind: GroupKind::Classic(ClassicGroup::new()),
            empty_since: Some(now),
        }
    }

    /// Committed or pending offsets (Kafka's `hasOffsets`): a group with any is kept.
    pub fn has_offsets(&self) -> bool {
        !self.offsets.is_empty() || !self.pending.is_empty() || !self.pending_txn.is_empty()
    }

    /// Whether a transaction holds an offset commit of `(topic, partition)` (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT for it, KIP-447).
    pub fn has_pending_txn_offset(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending_txn.values().any(|m| m.contains_key(&key))
    }

    /// Whether a commit of `(topic, partition)` is appended but not yet replicated.
    pub fn has_pending_commit(&self, topic: &str, partition: i32) -> bool {
        self.pending.contains_key(&(topic.to_string(), partition))
    }

    /// Make `offset` (from the commit numbered `seq`) the committed offset of `key` unless a
    /// later commit already is.
    fn apply_offset(&mut self, key: (String, i32), seq: u64, offset: CommittedOffset) {
        if self.offset_seqs.get(&key).is_some_and(|s| *s > seq) {
            return;
        }
        self.offset_seqs.insert(key.clone(), seq);
        self.offsets.insert(key, offset);
    }

    /// Forget `key`'s committed offset and its pending commits (deleted or expired): a
    /// pending commit reported replicated later is not applied.
    fn remove_offset(&mut self, key: &(String, i32)) -> bool {
        self.offset_seqs.remove(key);
        let mut pending = self.pending.remove(key).is_some();
        for m in self.pending_txn.values_mut() {
            pending |= m.remove(key).is_some();
        }
        self.pending_txn.retain(|_, m| !m.is_empty());
        self.offsets.remove(key).is_some() || pending
    }

    pub fn is_empty(&self) -> bool {
        match &self.kind {
            GroupKind::Classic(c) => c.members.is_empty() && c.pending_members.is_empty(),
            GroupKind::Consumer(c) => c.members.is_empty(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        match &self.kind {
            GroupKind::Classic(c) => c.state.name(),
            GroupKind::Consumer(c) => c.state_name(),
        }
    }

    pub fn group_type(&self) -> &'static str {
        match &self.kind {
            GroupKind::Classic(_) => "classic",
            GroupKind::Consumer(_) => "consumer",
        }
    }

    pub fn protocol_type(&self) -> String {
        match &self.kind {
            GroupKind::Classic(c) => c.protocol_type.clone().unwrap_or_default(),
            GroupKind::Consumer(_) => "consumer".into(),
        }
    }

    /// Topics the group's members subscribe to (for OffsetDelete).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        match &self.kind {
            GroupKind::Classic(c) => c.subscribed_topics(),
            GroupKind::Consumer(c) => c.subscribed_topics(),
        }
    }
}

/// Every group on this broker.
#[derive(Debug)]
pub struct Coordinator {
    pub config: Config,
    groups: BTreeMap<String, Group>,
    /// The next commit's sequence (replayed records take theirs in log order, then new
    /// commits: the order of their records in the log).
    next_seq: u64,
}

impl Coordinator {
    pub fn new(config: Config) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            next_seq: 1,
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Members of every group (for the members gauge).
    pub fn member_count(&self) -> usize {
        self.groups
            .values()
            .map(|g| match &g.kind {
                GroupKind::Classic(c) => c.members.len(),
                GroupKind::Consumer(c) => c.members.len(),
            })
            .sum()
    }

    pub fn partition_for(&self, group_id: &str) -> i32 {
        crate::offsets_partition(group_id, self.config.offsets_partitions)
    }

    // ---- loading -------------------------------------------------------------------------

    /// Apply one record read back from `__consumer_offsets` (startup). Later records win.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>, now: i64) -> Result<(), String> {
        match records::decode(key, value)? {
            Decoded::Offset(k, v) => match v {
                Some(v) => {
                    let seq = self.take_seq();
                    let g = self
                        .groups
                        .entry(k.group.clone())
                        .or_insert_with(|| Group::new_classic(&k.group, now));
                    g.apply_offset(
                        (k.topic, k.partition),
                        seq,
                        CommittedOffset {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp: v.commit_timestamp,
                        },
                    );
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&k.group) {
                        g.remove_offset(&(k.topic, k.partition));
                        if !g.has_offsets() && g.is_empty() && g.group_type() == "classic" {
                            if let GroupKind::Classic(c) = &g.kind {
                                if c.generation_id == 0 {
                                    self.groups.remove(&k.group);
                                }
                            }
                        }
                    }
                }
            },
            Decoded::Group(k, v) => match v {
                None => {
                    self.groups.remove(&k.group);
                }
                Some(v) => {
                    let g = self
                        .groups
                        .entry(k.group.clone())
                        .or_insert_with(|| Group::new_classic(&k.group, now));
                    if v.group_type == "consumer" {
                        let mut c = ConsumerGroup::new();
                        c.group_epoch = v.generation;
                        c.target_epoch = v.generation;
                        g.kind = GroupKind::Consumer(c);
                    } else {
                        g.kind = GroupKind::Classic(ClassicGroup::from_record(&v, now));
                    }
                    g.empty_since = g.is_empty().then_some(v.timestamp);
                }
            },
            Decoded::Unknown => {}
        }
        Ok(())
    }

    // ---- classic protocol ----------------------------------------------------------------

    /// JoinGroup. The reply (now or later) arrives in `Effects::replies` under `token`.
    pub fn join_group(&mut self, token: Token, req: JoinRequest, now: i64) -> Effects {
        let mut fx = Effects::default();
        let reply_now = |fx: &mut Effects, e: ErrorCode| {
            fx.replies
                .push((token, Reply::Join(JoinResult::error(e, &req.member_id))));
        };
        if req.group_id.is_empty() {
            reply_now(&mut fx, ErrorCode::InvalidGroupId);
            return fx;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            reply_now(&mut fx, ErrorCode::InvalidSessionTimeout);
            return fx;
        }
        match self.groups.get(&req.group_id) {
            None if !req.member_id.is_empty() => {
                reply_now(&mut fx, ErrorCode::UnknownMemberId);
                return fx;
            }
            None => {
                self.groups
                    .insert(req.group_id.clone(), Group::new_classic(&req.group_id, now));
            }
            Some(g) => {
                if let GroupKind::Consumer(c) = &g.kind {
                    if !c.members.is_empty() {
                        reply_now(&mut fx, ErrorCode::InconsistentGroupProtocol);
                        return fx;
                    }
                }
            }
        }
        let partition = self.partition_for(&req.group_id);
        let g = self.groups.get_mut(&req.group_id).expect("present");
        if matches!(g.kind, GroupKind::Consumer(_)) {
            // An empty consumer group (offsets only) converts to a classic group.
            g.kind = GroupKind::Classic(ClassicGroup::new());
        }
        let GroupKind::Classic(c) = &mut g.kind else {
            unreachable!()
        };
        c.join(&g.id, partition, &self.config, token, req, now, &mut fx);
        g.empty_since = if g.is_empty() {
            g.empty_since.or(Some(now))
        } else {
            None
        };
        fx
    }

    /// SyncGroup. The reply arrives in `Effects::replies` under `token`.
    pub fn sync_group(&mut self, token: Token, req: SyncRequest, now: i64) -> Effects {
        let mut fx = Effects::default();
        let partition = self.partition_for(&req.group_id);
        match self.groups.get_mut(&req.group_id) {
            Some(Group {
                id,
                kind: GroupKind::Classic(c),
                ..
            }) => c.sync(id, partition, token, req, now, &mut fx),
            Some(_) => fx.replies.push((
                token,
                Reply::Sync(SyncResult::error(ErrorCode::InconsistentGroupProtocol)),
            )),
            None => fx.replies.push((
                token,
                Reply::Sync(SyncResult::error(ErrorCode::UnknownMemberId)),
            )),
        }
        fx
    }

    /// Heartbeat (classic).
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
    ) -> ErrorCode {
        match self.groups.get_mut(group_id) {
            Some(Group {
                kind: GroupKind::Classic(c),
                ..
            }) => c.heartbeat(member_id, instance_id, generation_id, now),
            Some(_) => ErrorCode::InconsistentGroupProtocol,
            None => ErrorCode::UnknownMemberId,
        }
    }

    /// LeaveGroup: top-level error and one error per member.
    pub fn leave_group(
        &mut self,
        group_id: &str,
        members: &[LeaveMember],
        now: i64,
    ) -> (ErrorCode, Vec<ErrorCode>, Effects) {
        let mut fx = Effects::default();
        let partition = self.partition_for(group_id);
        let Some(g) = self.groups.get_mut(group_id) else {
            return (ErrorCode::UnknownMemberId, Vec::new(), fx);
        };
        let GroupKind::Classic(c) = &mut g.kind else {
            return (ErrorCode::InconsistentGroupProtocol, Vec::new(), fx);
        };
        let errors = members
            .iter()
            .map(|m| c.leave(&g.id, partition, m, now, &mut fx))
            .collect();
        if g.is_empty() {
            g.empty_since = g.empty_since.or(Some(now));
        }
        (ErrorCode::None, errors, fx)
    }

    // ---- offsets -------------------------------------------------------------------------

    /// OffsetCommit: one error per partition (in request order) and the records to append.
    /// The commits stay pending (not fetched) until the runtime reports their records
    /// replicated ([`Effects::commits`]).
    pub fn commit_offsets(&mut self, req: CommitRequest, now: i64) -> (Vec<ErrorCode>, Effects) {
        self.commit(req, None, now)
    }

    /// OffsetCommit, or TxnOffsetCommit with `producer` (its producer id and epoch).
    fn commit(
        &mut self,
        req: CommitRequest,
        producer: Option<(i64, i16)>,
        now: i64,
    ) -> (Vec<ErrorCode>, Effects) {
        let mut fx = Effects::default();
        let n = req.partitions.len();
        let all = |e: ErrorCode| vec![e; n];
        if req.group_id.is_empty() {
            return (all(ErrorCode::InvalidGroupId), fx);
        }
        let partition = self.partition_for(&req.group_id);
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new_classic(&req.group_id, now));
        // An old transactional client's commit (no member, generation -1) is taken whatever
        // the group's membership, as Kafka's.
        let legacy = producer.is_some()
            && req.generation_id < 0
            && req.member_id.is_empty()
            && req.group_instance_id.is_none();
        let check = match &g.kind {
            _ if legacy => Ok(()),
            GroupKind::Classic(c) => c.validate_commit(
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
            ),
            GroupKind::Consumer(c) => c.validate_commit(&req.member_id, req.generation_id),
        };
        if let Err(e) = check {
            if g.is_empty() && !g.has_offsets() && g.group_type() == "classic" {
                if let GroupKind::Classic(c) = &g.kind {
                    if c.generation_id == 0 {
                        self.groups.remove(&req.group_id);
                    }
                }
            }
            return (all(e), fx);
        }
        let mut errors = Vec::with_capacity(n);
        for p in &req.partitions {
            let metadata = p.metadata.clone().unwrap_or_default();
            if metadata.len() > self.config.offset_metadata_max_bytes {
                errors.push(ErrorCode::OffsetMetadataTooLarge);
                continue;
            }
            let value = OffsetValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata: metadata.clone(),
                commit_timestamp: now,
            };
            fx.records.push(Record {
                partition,
                key: records::offset_key(&OffsetKey {
                    group: req.group_id.clone(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                }),
                value: Some(records::offset_value(&value)),
                producer,
            });
            let committed = CommittedOffset {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata,
                commit_timestamp: now,
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            let key = (p.topic.clone(), p.partition);
            match producer {
                None => {
                    g.pending.entry(key).or_default().insert(seq, committed);
                }
                Some((pid, _)) => {
                    g.pending_txn.entry(pid).or_default().insert(
                        key,
                        TxnOffset {
                            seq,
                            offset: committed,
                            written: false,
                        },
                    );
                }
            }
            fx.commits.push(PendingCommit {
                group_id: req.group_id.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
                producer_id: producer.map(|(pid, _)| pid),
                seq,
            });
            errors.push(ErrorCode::None);
        }
        (errors, fx)
    }

    /// Offset commits whose records are on every in-sync replica: they become the committed
    /// offsets (Kafka's `onOffsetCommitAppend`), unless a later commit of the same partition
    /// already is one, or the offset was deleted or expired meanwhile (its pending commits
    /// went with it).
    pub fn commits_replicated(&mut self, commits: Vec<PendingCommit>) {
        for c in commits {
            let Some(g) = self.groups.get_mut(&c.group_id) else {
                continue;
            };
            let key = (c.topic, c.partition);
            if let Some(pid) = c.producer_id {
                // A transactional commit now waits only for its transaction's marker (Kafka's
                // `onTxnOffsetCommitAppend`).
                if let Some(t) = g.pending_txn.get_mut(&pid).and_then(|m| m.get_mut(&key)) {
                    if t.seq == c.seq {
                        t.written = true;
                    }
                }
                continue;
            }
            let Some(offset) = take_pending(&mut g.pending, &key, c.seq) else {
                continue;
            };
            g.apply_offset(key, c.seq, offset);
        }
    }

    /// Offset commits whose records could not be appended or replicated: dropped, so memory
    /// never shows an offset the log may not keep (Kafka's `failPendingOffsetWrite`).
    pub fn commits_failed(&mut self, commits: Vec<PendingCommit>) {
        for c in commits {
            let Some(g) = self.groups.get_mut(&c.group_id) else {
                continue;
            };
            let key = (c.topic, c.partition);
            match c.producer_id {
                None => {
                    take_pending(&mut g.pending, &key, c.seq);
                }
                Some(pid) => {
                    if let Some(m) = g.pending_txn.get_mut(&pid) {
                        if m.get(&key).is_some_and(|t| t.seq == c.seq) {
                            m.remove(&key);
                        }
                        if m.is_empty() {
                            g.pending_txn.remove(&pid);
                        }
                    }
                }
            }
        }
    }

    /// TxnOffsetCommit: one error per partition (in request order) and the records to
    /// append, in a transactional batch of the producer. The offsets stay with the producer's
    /// transaction until its marker ([`Coordinator::complete_txn`]): a commit makes them the
    /// group's committed offsets, an abort drops them. As Kafka's, an old client's commit
    /// (no member id, generation -1) is taken whatever the group's membership; a newer one's
    /// member and generation are checked as an OffsetCommit's (KIP-447).
    pub fn txn_commit_offsets(
        &mut self,
        req: TxnCommitRequest,
        now: i64,
    ) -> (Vec<ErrorCode>, Effects) {
        if req.producer_id < 0 || req.producer_epoch < 0 {
            let n = req.partitions.len();
            return (
                vec![ErrorCode::InvalidProducerIdMapping; n],
                Effects::default(),
            );
        }
        let producer = Some((req.producer_id, req.producer_epoch));
        let req = CommitRequest {
            group_id: req.group_id,
            generation_id: req.generation_id,
            member_id: req.member_id,
            group_instance_id: req.group_instance_id,
            partitions: req.partitions,
        };
        self.commit(req, producer, now)
    }

    /// The transaction of `producer_id` ended in this coordinator's `__consumer_offsets`
    /// partition (its marker is written and replicated, or read back on replay): with
    /// `commit` its offsets become the groups' committed offsets — unless a later commit of
    /// the partition already is one — else they are dropped (Kafka's
    /// `completePendingTxnOffsetCommit`). Returns how many offsets it committed.
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool) -> usize {
        let mut applied = 0;
        for g in self.groups.values_mut() {
            let Some(offsets) = g.pending_txn.remove(&producer_id) else {
                continue;
            };
            if !commit {
                continue;
            }
            for (key, t) in offsets {
                // Not replicated yet: the client was not told it committed, and the marker
                // cannot have been sent before EndTxn, which follows the answer.
                if t.written {
                    g.apply_offset(key, t.seq, t.offset);
                    applied += 1;
                }
            }
        }
        applied
    }

    /// One offset record of a transactional batch of `producer_id` read back from
    /// `__consumer_offsets` (startup): pending with its transaction until the marker, which
    /// the replay hands to [`Coordinator::complete_txn`].
    pub fn replay_txn(
        &mut self,
        producer_id: i64,
        key: &[u8],
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<(), String> {
        let Decoded::Offset(k, Some(v)) = records::decode(key, value)? else {
            // Transactions commit offsets only; anything else is replayed as written.
            return self.replay(key, value, now);
        };
        let seq = self.take_seq();
        let g = self
            .groups
            .entry(k.group.clone())
            .or_insert_with(|| Group::new_classic(&k.group, now));
        g.pending_txn.entry(producer_id).or_default().insert(
            (k.topic, k.partition),
            TxnOffset {
                seq,
                offset: CommittedOffset {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_timestamp: v.commit_timestamp,
                },
                written: true,
            },
        );
        Ok(())
    }

    /// Committed offsets of a group: all of them (`None`) or the requested partitions
    /// (missing ones as `None`).
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let g = self.groups.get(group_id);
        match partitions {
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            Some(req) => req
                .iter()
                .flat_map(|(t, ps)| {
                    ps.iter().map(move |p| {
                        let o = g.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned());
                        (t.clone(), *p, o)
                    })
                })
                .collect(),
        }
    }

    /// OffsetDelete: offsets of topics the group is not subscribed to.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, Vec<i32>)],
    ) -> (ErrorCode, Vec<(String, i32, ErrorCode)>, Effects) {
        let mut fx = Effects::default();
        let partition = self.partition_for(group_id);
        let Some(g) = self.groups.get_mut(group_id) else {
            return (ErrorCode::GroupIdNotFound, Vec::new(), fx);
        };
        let subscribed = g.subscribed_topics();
        let mut out = Vec::new();
        for (t, ps) in partitions {
            for p in ps {
                if subscribed.contains(t) {
                    out.push((t.clone(), *p, ErrorCode::GroupSubscribedToTopic));
                    continue;
                }
                if g.remove_offset(&(t.clone(), *p)) {
                    fx.records
                        .push(offset_tombstone(partition, group_id, t, *p));
                }
                out.push((t.clone(), *p, ErrorCode::None));
            }
        }
        (ErrorCode::None, out, fx)
    }

    // ---- admin ---------------------------------------------------------------------------

    /// ListGroups with optional state and type filters (case-insensitive, empty = all).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<GroupListing> {
        self.groups
            .values()
            .filter(|g| !matches!(&g.kind, GroupKind::Classic(c) if c.state == ClassicState::Dead))
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state_name()))
            })
            .filter(|g| {
                types.is_empty() || types.iter().any(|s| s.eq_ignore_ascii_case(g.group_type()))
            })
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type(),
                state: g.state_name().to_string(),
                group_type: g.group_type(),
            })
            .collect()
    }

    /// DescribeGroups / ConsumerGroupDescribe for one group.
    pub fn describe_group(&self, group_id: &str, topics: &TopicsView) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        Some(match &g.kind {
            GroupKind::Classic(c) => c.describe(&g.id),
            GroupKind::Consumer(c) => c.describe(&g.id, topics),
        })
    }

    /// DeleteGroups: only empty groups; tombstones for the group and all its offsets.
    pub fn delete_groups(&mut self, group_ids: &[String]) -> (Vec<ErrorCode>, Effects) {
        let mut fx = Effects::default();
        let mut out = Vec::new();
        for id in group_ids {
            let partition = self.partition_for(id);
            let code = match self.groups.get(id) {
                None => ErrorCode::GroupIdNotFound,
                Some(g) if !g.is_empty() => ErrorCode::NonEmptyGroup,
                Some(g) => {
                    // Pending commits too: their records may still reach the log.
                    let keys: BTreeSet<&(String, i32)> = g
                        .offsets
                        .keys()
                        .chain(g.pending.keys())
                        .chain(g.pending_txn.values().flat_map(|m| m.keys()))
                        .collect();
                    for (t, p) in keys {
                        fx.records.push(offset_tombstone(partition, id, t, *p));
                    }
                    fx.records.push(Record {
                        partition,
                        key: records::group_key(&GroupKey { group: id.clone() }),
                        value: None,
                        producer: None,
                    });
                    self.groups.remove(id);
                    ErrorCode::None
                }
            };
            out.push(code);
        }
        (out, fx)
    }

    // ---- consumer protocol (KIP-848) -----------------------------------------------------

    /// ConsumerGroupHeartbeat.
    pub fn consumer_heartbeat(
        &mut self,
        req: crate::consumer::HeartbeatRequest,
        topics: &TopicsView,
        now: i64,
    ) -> (crate::consumer::HeartbeatResult, Effects) {
        let mut fx = Effects::default();
        use crate::consumer::HeartbeatResult;
        if req.group_id.is_empty() {
            return (HeartbeatResult::error(ErrorCode::InvalidGroupId), fx);
        }
        if let Some(a) = &req.server_assignor {
            if !self.config.consumer_assignors.iter().any(|x| x == a) {
                return (HeartbeatResult::error(ErrorCode::UnsupportedAssignor), fx);
            }
        }
        let partition = self.partition_for(&req.group_id);
        let g = match self.groups.get_mut(&req.group_id) {
            Some(g) => g,
            None => {
                if req.member_epoch != 0 {
                    return (HeartbeatResult::error(ErrorCode::UnknownMemberId), fx);
                }
                self.groups
                    .entry(req.group_id.clone())
                    .or_insert_with(|| Group::new_classic(&req.group_id, now))
            }
        };
        if let GroupKind::Classic(c) = &g.kind {
            if !c.members.is_empty() || !c.pending_members.is_empty() {
                return (
                    HeartbeatResult::error(ErrorCode::GroupIdNotFound)
                        .with_message("the group is a classic group with members"),
                    fx,
                );
            }
            // An empty classic group (offsets only) converts to a consumer group.
            g.kind = GroupKind::Consumer(ConsumerGroup::new());
        }
        let GroupKind::Consumer(c) = &mut g.kind else {
            unreachable!()
        };
        let r = c.heartbeat(&g.id, partition, &self.config, req, topics, now, &mut fx);
        g.empty_since = if g.is_empty() {
            g.empty_since.or(Some(now))
        } else {
            None
        };
        (r, fx)
    }

    // ---- timers --------------------------------------------------------------------------

    /// Fire every timer due at `now`: session timeouts, rebalance and initial delays, sync
    /// timeouts, consumer-group revocation timeouts, and offset retention for empty groups.
    pub fn tick(&mut self, now: i64, topics: &TopicsView) -> Effects {
        let mut fx = Effects::default();
        let retention = self.config.offsets_retention_ms;
        let parts = self.config.offsets_partitions;
        for g in self.groups.values_mut() {
            let partition = crate::offsets_partition(&g.id, parts);
            match &mut g.kind {
                GroupKind::Classic(c) => c.tick(&g.id, partition, &self.config, now, &mut fx),
                GroupKind::Consumer(c) => {
                    c.tick(&g.id, partition, &self.config, topics, now, &mut fx)
                }
            }
            if g.is_empty() {
                let since = *g.empty_since.get_or_insert(now);
                // Kafka 2.1+: offsets of an empty group expire retention after the later of
                // the commit and the moment the group became empty; not while a commit of
                // the partition is pending.
                let expired: Vec<(String, i32)> = g
                    .offsets
                    .iter()
                    .filter(|(k, o)| {
                        o.commit_timestamp.max(since) + retention <= now
                            && !g.pending.contains_key(k)
                            && !g.has_pending_txn_offset(&k.0, k.1)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if !expired.is_empty() {
                    for key in &expired {
                        g.remove_offset(key);
                    }
                    for (t, p) in &expired {
                        fx.records.push(offset_tombstone(partition, &g.id, t, *p));
                    }
                    fx.events.push(Event::OffsetsExpired {
                        group: g.id.clone(),
                        count: expired.len(),
                    });
                }
            } else {
                g.empty_since = None;
            }
        }
        // Forget empty classic groups that have nothing left to remember.
        let dead: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.is_empty() && !g.has_offsets())
            .filter(|g| matches!(&g.kind, GroupKind::Classic(c) if c.generation_id == 0 && c.state == ClassicState::Empty))
            .map(|g| g.id.clone())
            .collect();
        for id in dead {
            self.groups.remove(&id);
        }
        fx
    }
}

/// Take the pending commit `seq` of `key` out of `pending` (dropping emptied entries).
fn take_pending(
    pending: &mut BTreeMap<(String, i32), BTreeMap<u64, CommittedOffset>>,
    key: &(String, i32),
    seq: u64,
) -> Option<CommittedOffset> {
    let in_flight = pending.get_mut(key)?;
    let offset = in_flight.remove(&seq);
    if in_flight.is_empty() {
        pending.remove(key);
    }
    offset
}

fn offset_tombstone(partition: i32, group: &str, topic: &str, p: i32) -> Record {
    Record {
        partition,
        key: records::offset_key(&OffsetKey {
            group: group.to_string(),
            topic: topic.to_string(),
            partition: p,
        }),
        value: None,
        producer: None,
    }
}

/// The group-metadata record for a group (used by the classic and consumer modules).
pub(crate) fn group_record(partition: i32, group: &str, value: &GroupValue) -> Record {
    Record {
        partition,
        key: records::group_key(&GroupKey {
            group: group.to_string(),
        }),
        value: Some(records::group_value(value)),
        producer: None,
    }
}
