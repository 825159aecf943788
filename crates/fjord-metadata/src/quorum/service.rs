//! The controller runtime: one [`ControllerService`] per controller node, around its
//! [`QuorumNode`].
//!
//! The Raft leader is the active controller. When this node becomes leader, the service waits
//! until its state machine has applied every entry of its log (the entries of earlier terms,
//! and this term's first, blank entry), then builds a [`Controller`] from that image
//! ([`Controller::from_image`]) and activates it. Requests ([`ControllerService::submit`]) are
//! handled one at a time: the controller validates and returns records, the records are written
//! through Raft as one batch, and the reply goes out once they are committed. A write that fails
//! leaves the controller's image ahead of the committed log, so the controller is dropped and
//! rebuilt from the committed image (as KRaft's controller resigns). A timer fences brokers that
//! stopped heartbeating and, if configured, moves leadership back to preferred replicas and
//! runs the continuous balancer ([`crate::balancer::continuous`]; its sizes and traffic come
//! from a [`BalancerLoadSource`] the broker sets, asked outside the controller's lock).
//!
//! Replies not backed by a write (refusals, heartbeats that change nothing) are given only after
//! a quorum confirms this node still leads, so a deposed leader that has not heard of its
//! successor does not keep answering brokers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::feed::{MetadataFeed, DEFAULT_WINDOW_RECORDS};
use super::network::{BoxFuture, ControlPlane};
use super::{raft_config, LogBounds, QuorumError, QuorumNode, RaftNodeId};
use crate::balancer::continuous::{
    BalancerConfig, BalancerLoads, BalancerMode, BalancerState, BalancerStatus,
};
use crate::controller::{Controller, ControllerConfig};
use crate::record::{Endpoint, Maintenance, MetadataRecord, NodeId};
use crate::rpc::{ControllerReply, ControllerRequest};

/// How often the active controller looks for brokers whose session expired.
const TICK_INTERVAL: Duration = Duration::from_millis(200);

/// Where the continuous balancer gets replica sizes and traffic rates (the broker's gather
/// from every broker); `None` when nothing could be learned.
pub type BalancerLoadSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<BalancerLoads>> + Send>>
        + Send
        + Sync,
>;

/// The resignation of a node that stops (the only one not logged at WARN).
const SHUTTING_DOWN: &str = "shutting down";

/// How often leadership is checked besides on each change of the Raft metrics.
const LEADERSHIP_POLL: Duration = Duration::from_millis(100);

/// Settings of one controller node.
#[derive(Debug, Clone)]
pub struct ControllerServiceConfig {
    pub node_id: RaftNodeId,
    /// Raft log and snapshot directory.
    pub dir: PathBuf,
    /// `host:port` of each voter's controller listener (from
    /// [`parse_quorum_voters`](super::parse_quorum_voters)); must include `node_id`.
    pub voters: BTreeMap<RaftNodeId, String>,
    pub controller: ControllerConfig,
    /// From [`raft_config`].
    pub raft: Arc<openraft::Config>,
    /// Period of the automatic preferred-leader election (`None`: off).
    pub leader_rebalance_interval: Option<Duration>,
    /// Recent records kept for metadata fetches; readers further behind get a snapshot.
    pub window_records: usize,
    /// Largest encoded part of the image sent to a remote reader behind the window
    /// ([`MAX_PART_BYTES`](super::feed::MAX_PART_BYTES) unless a test makes it small).
    pub image_part_bytes: usize,
    /// `metadata.log.max.record.bytes.between.snapshots` and `metadata.max.retention.bytes`
    /// ([`QuorumNode::bound_log`]).
    pub log_bounds: LogBounds,
    /// The continuous balancer (`balancer.*`; off by default).
    pub balancer: BalancerConfig,
    /// TLS on the controller listener (`None`: plaintext).
    pub tls: Option<super::tls::QuorumTls>,
}

impl ControllerServiceConfig {
    /// Defaults: Kafka's session timeout, Raft heartbeats every 100 ms and elections after
    /// 1–2 s, a snapshot every 1000 entries or 20 MiB of log, preferred leaders restored every 5 minutes (Kafka's
    /// `leader.imbalance.check.interval.seconds`), 100 000 records in the window.
    pub fn new(
        node_id: RaftNodeId,
        dir: PathBuf,
        voters: BTreeMap<RaftNodeId, String>,
    ) -> ControllerServiceConfig {
        ControllerServiceConfig {
            node_id,
            dir,
            voters,
            controller: ControllerConfig::default(),
            raft: raft_config(100, 1_000, 1_000),
            leader_rebalance_interval: Some(Duration::from_secs(300)),
            window_records: DEFAULT_WINDOW_RECORDS,
            image_part_bytes: super::feed::MAX_PART_BYTES,
            log_bounds: LogBounds::default(),
            balancer: BalancerConfig::default(),
            tls: None,
        }
    }

    /// Check the fields against each other.
    pub fn validate(&self) -> Result<(), String> {
        if !self.voters.contains_key(&self.node_id) {
            return Err(format!(
                "node {} is not one of the controller quorum voters {:?}",
                self.node_id,
                self.voters.keys().collect::<Vec<_>>()
            ));
        }
        if let Some(id) = self.voters.keys().find(|id| i32::try_from(**id).is_err()) {
            return Err(format!("voter id {id} is not a valid node id"));
        }
        if self.controller.session_timeout_ms <= 0 {
            return Err("broker session timeout must be positive".into());
        }
        if self.leader_rebalance_interval == Some(Duration::ZERO) {
            return Err("leader rebalance interval must be positive".into());
        }
        Ok(())
    }
}

/// A request committed by the active controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub reply: ControllerReply,
    /// Metadata offset after the batch (next offset), for read-your-writes on brokers.
    pub offset: i64,
}

/// Why a request was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum SubmitError {
    /// The controller refused the request: Kafka error code and message.
    #[error("{message}")]
    Refused { code: i16, message: String },
    /// This node is not the active controller; `leader` is, if known.
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<i32> },
    /// No active controller could be reached in time, or the write failed.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// The quorum and the brokers as one controller sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub active_controller: Option<i32>,
    /// This node's applied metadata offset.
    pub metadata_offset: i64,
    pub voters: Vec<VoterStatus>,
    pub brokers: Vec<BrokerStatus>,
    /// The continuous balancer, as the active controller reports it (absent from other nodes'
    /// and older nodes' answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<Box<BalancerStatus>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterStatus {
    pub node_id: i32,
    pub addr: String,
    pub is_active: bool,
    /// The last Raft log index known replicated to this voter; only the leader knows.
    pub applied_log_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub node_id: i32,
    pub rack: Option<String>,
    pub broker_epoch: i64,
    pub incarnation_id: Uuid,
    pub fenced: bool,
    pub cordoned: bool,
    /// Maintenance mode, if the broker is in it (absent from older nodes' answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    pub endpoints: Vec<Endpoint>,
    /// The metadata offset the broker last reported in a heartbeat (active controller only).
    pub metadata_offset: Option<i64>,
    /// Milliseconds since that heartbeat (active controller only).
    pub ms_since_heartbeat: Option<i64>,
}

/// One controller node: its Raft quorum member, the active controller while it leads, the
/// control RPC on the controller listener.
pub struct ControllerService {
    inner: Arc<Inner>,
    runtime: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The controller while this node is active, and the Raft term it was activated in.
struct Active {
    term: u64,
    /// Tells this activation from a later one (a write that fails resigns only its own).
    token: Arc<()>,
    controller: Controller,
    next_rebalance: Option<Instant>,
    balancer: BalancerState,
}

/// What the Raft metrics say about leadership.
struct LeaderView {
    leading: bool,
    term: u64,
    leader: Option<RaftNodeId>,
    last_log_index: Option<u64>,
}

struct Inner {
    node_id: RaftNodeId,
    voters: BTreeMap<RaftNodeId, String>,
    controller_config: ControllerConfig,
    rebalance_interval: Option<Duration>,
    write_timeout: Duration,
    leader_check_timeout: Duration,
    quorum: QuorumNode,
    feed: MetadataFeed,
    /// Held while a request is decided and handed to Raft (not while Raft commits it: see
    /// `commit_pipelined`), and across the tick's writes.
    active: Mutex<Option<Active>>,
    /// Mirrors `active` (with its term) for lock-free reads.
    is_active: AtomicBool,
    active_term: AtomicU64,
    /// The origin of the controller's clock (`now` in milliseconds).
    clock: Instant,
    balancer: BalancerConfig,
    balancer_load: std::sync::OnceLock<BalancerLoadSource>,
    /// When sizes and rates were last asked for.
    balancer_load_at: std::sync::Mutex<Option<Instant>>,
    /// Sizes and rates fetched and not yet handed to the controller.
    balancer_loads: std::sync::Mutex<Option<BalancerLoads>>,
    /// The balancer's status while this node is active (for status and metrics).
    balancer_status: std::sync::Mutex<Option<BalancerStatus>>,
    /// Rounds and data moves started by this node over its life (the metrics' counters).
    balancer_rounds: AtomicU64,
    balancer_moves: AtomicU64,
    /// Requests whose records were handed to Raft and not yet committed or failed
    /// (`commit_pipelined`), for the resignation's log line.
    writes_in_flight: AtomicUsize,
    /// Set once this node's Raft core stopped on its own ([`ControllerService::stopped`]).
    stopped: tokio::sync::watch::Sender<Option<String>>,
}

impl ControllerService {
    /// Start Raft on `listener` (which also serves the control RPC), form the quorum of
    /// `cfg.voters` if it is new, and follow leadership.
    pub async fn start(
        cfg: ControllerServiceConfig,
        listener: TcpListener,
    ) -> Result<Arc<ControllerService>, QuorumError> {
        cfg.validate().map_err(QuorumError::Config)?;
        let quorum = QuorumNode::start_with_window(
            cfg.node_id,
            &cfg.dir,
            listener,
            cfg.raft.clone(),
            cfg.window_records,
            cfg.tls.clone(),
        )
        .await?;
        quorum.bound_log(cfg.log_bounds);
        quorum.set_image_part_bytes(cfg.image_part_bytes);
        let election_max = Duration::from_millis(cfg.raft.election_timeout_max);
        let inner = Arc::new(Inner {
            node_id: cfg.node_id,
            voters: cfg.voters,
            controller_config: cfg.controller,
            rebalance_interval: cfg.leader_rebalance_interval,
            write_timeout: (election_max * 10).max(Duration::from_secs(5)),
            leader_check_timeout: election_max + Duration::from_secs(1),
            feed: quorum.feed(),
            quorum,
            active: Mutex::new(None),
            is_active: AtomicBool::new(false),
            active_term: AtomicU64::new(0),
            clock: Instant::now(),
            balancer: cfg.balancer,
            balancer_load: std::sync::OnceLock::new(),
            balancer_load_at: std::sync::Mutex::new(None),
            balancer_loads: std::sync::Mutex::new(None),
            balancer_status: std::sync::Mutex::new(None),
            balancer_rounds: AtomicU64::new(0),
            balancer_moves: AtomicU64::new(0),
            writes_in_flight: AtomicUsize::new(0),
            stopped: tokio::sync::watch::channel(None).0,
        });
        let control: Weak<dyn ControlPlane> = Arc::downgrade(&inner) as Weak<dyn ControlPlane>;
        inner.quorum.server.attach(control);
        if let Err(e) = inner.initialize().await {
            inner.quorum.stop().await;
            return Err(e);
        }
        let runtime = tokio::spawn(inner.clone().run());
        Ok(Arc::new(ControllerService {
            inner,
            runtime: std::sync::Mutex::new(Some(runtime)),
        }))
    }

    /// Handle a request on the active controller and commit its records.
    pub async fn submit(&self, req: ControllerRequest) -> Result<Committed, SubmitError> {
        self.inner.submit(req).await
    }

    /// Resolves once this node's Raft core stopped on its own (a failed metadata write, a
    /// panic in the core), with why; never after a [`shutdown`](Self::shutdown). The node's
    /// metadata is frozen from then on: a server exits so that it is restarted (as Kafka halts
    /// a node whose metadata log fails).
    pub async fn stopped(&self) -> String {
        let mut rx = self.inner.stopped.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// A reader of the records applied on this node.
    pub fn feed(&self) -> MetadataFeed {
        self.inner.feed.clone()
    }

    /// The Raft leader as this node knows it.
    pub fn active_controller(&self) -> Option<NodeId> {
        self.inner.view().leader.and_then(node_id)
    }

    /// Whether this node is the active controller now (leads and has caught up).
    pub fn is_active(&self) -> bool {
        self.inner.is_active.load(Ordering::Acquire)
    }

    pub fn node_id(&self) -> RaftNodeId {
        self.inner.node_id
    }

    /// The controller listener address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.quorum.addr()
    }

    pub async fn status(&self) -> QuorumStatus {
        self.inner.status().await
    }

    /// Set where the continuous balancer learns replica sizes and traffic (once).
    pub fn set_balancer_load(&self, source: BalancerLoadSource) {
        let _ = self.inner.balancer_load.set(source);
    }

    /// The balancer's status while this node is the active controller.
    pub fn balancer_status(&self) -> Option<BalancerStatus> {
        self.inner
            .balancer_status
            .lock()
            .expect("balancer status lock")
            .clone()
    }

    /// Balancer rounds and data moves this node started over its life.
    pub fn balancer_totals(&self) -> (u64, u64) {
        (
            self.inner.balancer_rounds.load(Ordering::Relaxed),
            self.inner.balancer_moves.load(Ordering::Relaxed),
        )
    }

    /// Stop following leadership, Raft and the listener (a stopped controller, from its peers'
    /// and brokers' point of view). Later calls do nothing.
    pub async fn shutdown(&self) {
        if let Some(task) = self.runtime.lock().expect("runtime lock").take() {
            task.abort();
        }
        // Raft first: a write in flight then fails at once instead of holding the controller.
        self.inner.quorum.stop().await;
        let mut slot = self.inner.active.lock().await;
        self.inner.resign(&mut slot, SHUTTING_DOWN);
    }
}

impl Drop for ControllerService {
    fn drop(&mut self) {
        if let Some(task) = self.runtime.lock().expect("runtime lock").take() {
            task.abort();
        }
    }
}

/// Counts a write in flight while it lives (also when its submitter is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn node_id(id: RaftNodeId) -> Option<NodeId> {
    NodeId::try_from(id).ok()
}

impl Inner {
    /// Every voter proposes the same membership; a node that already has a log (a restart, or
    /// a peer's proposal arrived first) refuses, which is what we want.
    async fn initialize(&self) -> Result<(), QuorumError> {
        let members: BTreeMap<RaftNodeId, BasicNode> = self
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        // openraft logs an ERROR when asked to initialize a node that has a log: ask first.
        if self.quorum.raft.is_initialized().await.unwrap_or(false) {
            tracing::debug!(node_id = self.node_id, "controller quorum already formed");
            return Ok(());
        }
        match self.quorum.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::debug!(node_id = self.node_id, "controller quorum already formed");
                Ok(())
            }
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.elapsed().as_millis() as i64
    }

    fn view(&self) -> LeaderView {
        let metrics = self.quorum.raft.metrics();
        let m = metrics.borrow();
        LeaderView {
            leading: m.state == ServerState::Leader && m.current_leader == Some(self.node_id),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
        }
    }

    /// Follow leadership, fence expired sessions and restore preferred leaders until aborted.
    async fn run(self: Arc<Self>) {
        let mut metrics = self.quorum.raft.metrics();
        let mut poll = tokio::time::interval(LEADERSHIP_POLL);
        let mut tick = tokio::time::interval(TICK_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    let fatal = match changed {
                        Err(_) => Some("the Raft core is gone".to_string()),
                        Ok(()) => metrics.borrow().running_state.as_ref().err().map(|e| e.to_string()),
                    };
                    if let Some(why) = fatal {
                        // Not a shutdown (that stops this task first): the core quit on an
                        // error (a failed log write, a panic). Nothing brings it back in this
                        // process; the node's metadata is frozen from here on.
                        tracing::error!(
                            node_id = self.node_id,
                            reason = %why,
                            "the metadata Raft core stopped on its own; this node must restart to rejoin the quorum"
                        );
                        let mut slot = self.active.lock().await;
                        self.resign(&mut slot, "the Raft core stopped");
                        drop(slot);
                        self.stopped.send_replace(Some(why));
                        return;
                    }
                    self.refresh_leadership().await;
                }
                _ = poll.tick() => self.refresh_leadership().await,
                _ = tick.tick() => {
                    self.fetch_balancer_loads();
                    self.tick().await
                }
            }
        }
    }

    async fn refresh_leadership(&self) {
        let v = self.view();
        let active = self.is_active.load(Ordering::Acquire);
        let settled = if v.leading {
            active && self.active_term.load(Ordering::Acquire) == v.term
        } else {
            !active
        };
        if !settled {
            let mut slot = self.active.lock().await;
            self.refresh_locked(&mut slot);
        }
    }

    /// Drop the controller if this node no longer leads (or leads in a new term), and build
    /// one once this node leads and has applied its whole log.
    fn refresh_locked(&self, slot: &mut Option<Active>) {
        let v = self.view();
        if let Some(a) = slot.as_ref() {
            if v.leading && a.term == v.term {
                return;
            }
            self.resign(slot, "leadership lost");
        }
        if !v.leading {
            return;
        }
        let (image, offset) = {
            let state = self.quorum.state.read().expect("state lock");
            // Leader completeness: everything ever committed is in this leader's log, so once
            // its log is applied the image holds every committed record.
            if state.last_applied.map(|l| l.index) < v.last_log_index {
                return;
            }
            (state.image.clone(), state.offset)
        };
        let mut controller = Controller::from_image(self.controller_config, image, offset);
        controller.activate(self.now_ms());
        tracing::info!(
            node_id = self.node_id,
            term = v.term,
            metadata_offset = offset,
            "became active controller"
        );
        *slot = Some(Active {
            term: v.term,
            token: Arc::new(()),
            controller,
            next_rebalance: self.rebalance_interval.map(|d| Instant::now() + d),
            balancer: BalancerState::new(),
        });
        *self.balancer_load_at.lock().expect("balancer lock") = None;
        self.active_term.store(v.term, Ordering::Release);
        self.is_active.store(true, Ordering::Release);
    }

    fn resign(&self, slot: &mut Option<Active>, why: &str) {
        if let Some(a) = slot.take() {
            let in_flight = self.writes_in_flight.load(Ordering::Acquire);
            if why == SHUTTING_DOWN {
                tracing::info!(
                    node_id = self.node_id,
                    term = a.term,
                    metadata_offset = self.feed.offset(),
                    writes_in_flight = in_flight,
                    reason = why,
                    "no longer the active controller"
                );
            } else {
                // Each request in flight still gets an answer: its result once a leader
                // commits its entry, NOT_CONTROLLER if the new leader drops it, or
                // unavailable after the write timeout; new requests get NOT_CONTROLLER with
                // the new leader, and brokers send them there.
                tracing::warn!(
                    node_id = self.node_id,
                    term = a.term,
                    raft_leader = ?self.view().leader,
                    metadata_offset = self.feed.offset(),
                    writes_in_flight = in_flight,
                    reason = why,
                    "no longer the active controller; requests in flight get their outcome once a leader commits or drops their writes"
                );
            }
        }
        self.is_active.store(false, Ordering::Release);
        *self.balancer_status.lock().expect("balancer status lock") = None;
    }

    /// The error for a request that reached this node while it is not active.
    fn not_active(&self) -> SubmitError {
        match self.view().leader {
            Some(l) if l == self.node_id => {
                SubmitError::Unavailable(format!("node {l} is becoming the active controller"))
            }
            leader => SubmitError::NotController {
                leader: leader.and_then(node_id),
            },
        }
    }

    async fn submit(&self, req: ControllerRequest) -> Result<Committed, SubmitError> {
        let mut slot = self.active.lock().await;
        self.refresh_locked(&mut slot);
        let Some(active) = slot.as_mut() else {
            return Err(self.not_active());
        };
        let handled = active.controller.handle(req, self.now_ms());
        let next_offset = active.controller.next_offset();
        match handled {
            Err(e) => {
                drop(slot);
                self.confirm_leadership().await?;
                Err(SubmitError::Refused {
                    code: e.code(),
                    message: e.to_string(),
                })
            }
            Ok(r) if r.records.is_empty() => {
                drop(slot);
                self.confirm_leadership().await?;
                Ok(Committed {
                    reply: r.response,
                    offset: next_offset,
                })
            }
            Ok(r) => {
                let offset = self.commit_pipelined(slot, r.records).await?;
                Ok(Committed {
                    reply: r.response,
                    offset,
                })
            }
        }
    }

    /// Write a request's records without holding the controller's lock while Raft commits
    /// them (the leader's and followers' fsyncs): the entry is handed to Raft under the lock,
    /// which keeps entries in decision order, and awaited after it is released, so the next
    /// request is decided meanwhile. A failed write resigns the activation that decided it;
    /// the next one is built only once the log is applied, so it sees every entry in flight.
    async fn commit_pipelined(
        &self,
        slot: tokio::sync::MutexGuard<'_, Option<Active>>,
        records: Vec<MetadataRecord>,
    ) -> Result<i64, SubmitError> {
        let n = records.len() as i64;
        let Some(active) = slot.as_ref() else {
            return Err(self.not_active());
        };
        let expected_first = active.controller.next_offset() - n;
        let token = active.token.clone();
        let written = match self.quorum.write_pipelined(records).await {
            Ok(pending) => {
                let _in_flight = InFlight::new(&self.writes_in_flight);
                drop(slot);
                tokio::time::timeout(self.write_timeout, pending).await
            }
            Err(e) => Ok(Err(e)),
        };
        let err = match written {
            Ok(Ok(applied)) if applied.rejected == 0 && applied.first_offset == expected_first => {
                return Ok(applied.first_offset + n)
            }
            Ok(Ok(applied)) => {
                tracing::error!(
                    node_id = self.node_id,
                    first_offset = applied.first_offset,
                    expected_first,
                    rejected = applied.rejected,
                    "committed batch does not match the controller's image; rebuilding it"
                );
                self.resign_if(&token, "image diverged from the committed log")
                    .await;
                return Ok(applied.first_offset + n);
            }
            Ok(Err(e)) => self.write_error(Some(e)),
            Err(_) => self.write_error(None),
        };
        tracing::warn!(node_id = self.node_id, error = %err, "metadata write failed");
        self.resign_if(&token, "a write failed").await;
        Err(err)
    }

    /// Resign the activation `token` names, if it is still the active one.
    async fn resign_if(&self, token: &Arc<()>, why: &str) {
        let mut slot = self.active.lock().await;
        if slot.as_ref().is_some_and(|a| Arc::ptr_eq(&a.token, token)) {
            self.resign(&mut slot, why);
        }
    }

    /// Check with a quorum that this node still leads.
    async fn confirm_leadership(&self) -> Result<(), SubmitError> {
        let check = self.quorum.raft.get_read_log_id();
        match tokio::time::timeout(self.leader_check_timeout, check).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match e.forward_to_leader() {
                Some(f) => SubmitError::NotController {
                    leader: f.leader_id.and_then(node_id),
                },
                None => SubmitError::Unavailable(e.to_string()),
            }),
            Err(_) => Err(SubmitError::Unavailable(
                "no quorum confirmed this controller's leadership".into(),
            )),
        }
    }

    /// What a failed metadata write tells its submitter: `None` when it was not committed
    /// within the write timeout.
    fn write_error(&self, failed: Option<QuorumError>) -> SubmitError {
        match failed {
            Some(QuorumError::NotLeader { leader }) => SubmitError::NotController {
                leader: leader.and_then(node_id),
            },
            Some(e) => SubmitError::Unavailable(e.to_string()),
            None => SubmitError::Unavailable(format!(
                "the write was not committed within {:?}",
                self.write_timeout
            )),
        }
    }

    /// Write the records the active controller generated; returns the next metadata offset.
    /// On failure the controller is dropped: its image already holds the records.
    async fn commit(
        &self,
        slot: &mut Option<Active>,
        records: Vec<MetadataRecord>,
    ) -> Result<i64, SubmitError> {
        let n = records.len() as i64;
        let expected_first = slot.as_ref().map(|a| a.controller.next_offset() - n);
        let written = tokio::time::timeout(self.write_timeout, self.quorum.write(records)).await;
        let err = match written {
            Ok(Ok(applied)) => {
                if applied.rejected > 0 || Some(applied.first_offset) != expected_first {
                    tracing::error!(
                        node_id = self.node_id,
                        first_offset = applied.first_offset,
                        ?expected_first,
                        rejected = applied.rejected,
                        "committed batch does not match the controller's image; rebuilding it"
                    );
                    self.resign(slot, "image diverged from the committed log");
                }
                return Ok(applied.first_offset + n);
            }
            Ok(Err(e)) => self.write_error(Some(e)),
            Err(_) => self.write_error(None),
        };
        tracing::warn!(node_id = self.node_id, error = %err, "metadata write failed");
        self.resign(slot, "a write failed");
        Err(err)
    }

    /// Ask for sizes and rates for the balancer, at most once per balancer interval while this
    /// node is active, in a task of its own: the gather asks every broker, and the tick loop
    /// (fencing, leadership) must not wait for it. The next tick hands them to the controller.
    fn fetch_balancer_loads(self: &Arc<Self>) {
        if self.balancer.mode == BalancerMode::Off || !self.is_active.load(Ordering::Acquire) {
            return;
        }
        let Some(source) = self.balancer_load.get().cloned() else {
            return;
        };
        let every = Duration::from_millis(self.balancer.interval_ms.max(1) as u64);
        {
            let mut at = self.balancer_load_at.lock().expect("balancer lock");
            if at.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            *at = Some(Instant::now());
        }
        let wait = every.clamp(Duration::from_secs(1), Duration::from_secs(10));
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let loads = tokio::time::timeout(wait, source()).await.ok().flatten();
            if let (Some(me), Some(loads)) = (me.upgrade(), loads) {
                *me.balancer_loads.lock().expect("balancer lock") = Some(loads);
            }
        });
    }

    /// The balancer's share of the tick: a round when due, its records committed.
    async fn balancer_tick(&self, slot: &mut Option<Active>) {
        let Some(active) = slot.as_mut() else {
            return;
        };
        let r =
            active
                .controller
                .balancer_tick(&mut active.balancer, &self.balancer, self.now_ms());
        let status = active.balancer.status.clone();
        if !r.records.is_empty() && self.commit(slot, r.records).await.is_err() {
            return;
        }
        if let Some(round) = r.response {
            self.balancer_rounds.fetch_add(1, Ordering::Relaxed);
            self.balancer_moves
                .fetch_add(round.data_moves as u64, Ordering::Relaxed);
        }
        *self.balancer_status.lock().expect("balancer status lock") = Some(status);
    }

    /// Fence brokers whose session expired; restore preferred leaders when due.
    async fn tick(&self) {
        let loads = self.balancer_loads.lock().expect("balancer lock").take();
        let mut slot = self.active.lock().await;
        self.refresh_locked(&mut slot);
        let Some(active) = slot.as_mut() else {
            return;
        };
        let fenced = active.controller.tick(self.now_ms());
        if !fenced.records.is_empty() {
            for broker in &fenced.response {
                tracing::warn!(
                    node_id = self.node_id,
                    broker,
                    "broker missed its heartbeats for the session timeout: fencing it"
                );
            }
            if self.commit(&mut slot, fenced.records).await.is_err() {
                return;
            }
        }
        // Maintenance: leaderships off brokers in maintenance, drains started and completed.
        let Some(active) = slot.as_mut() else {
            return;
        };
        let maintenance = active.controller.maintenance_tick(self.now_ms());
        if !maintenance.records.is_empty()
            && self.commit(&mut slot, maintenance.records).await.is_err()
        {
            return;
        }
        if let (Some(active), Some(loads)) = (slot.as_mut(), loads) {
            active.balancer.loads = Some(loads);
        }
        self.balancer_tick(&mut slot).await;
        let Some(active) = slot.as_mut() else {
            return;
        };
        let (Some(due), Some(every)) = (active.next_rebalance, self.rebalance_interval) else {
            return;
        };
        if Instant::now() < due {
            return;
        }
        active.next_rebalance = Some(Instant::now() + every);
        let elected = active.controller.elect_preferred_leaders();
        if !elected.records.is_empty() {
            tracing::info!(
                node_id = self.node_id,
                partitions = elected.response,
                "moving leadership back to preferred replicas"
            );
            let _ = self.commit(&mut slot, elected.records).await;
        }
    }

    async fn status(&self) -> QuorumStatus {
        let (leader, replication) = {
            let metrics = self.quorum.raft.metrics();
            let m = metrics.borrow();
            let replication = if m.state == ServerState::Leader {
                m.replication.clone()
            } else {
                None
            };
            (m.current_leader, replication)
        };
        let (brokers, metadata_offset) = {
            let state = self.quorum.state.read().expect("state lock");
            let brokers: Vec<_> = state.image.brokers().cloned().collect();
            (brokers, state.offset)
        };
        let liveness: HashMap<NodeId, (i64, i64)> = {
            let slot = self.active.lock().await;
            let now = self.now_ms();
            match slot.as_ref() {
                Some(a) => brokers
                    .iter()
                    .filter_map(|b| {
                        a.controller
                            .liveness(b.node_id, now)
                            .map(|l| (b.node_id, l))
                    })
                    .collect(),
                None => HashMap::new(),
            }
        };
        let voters = self
            .voters
            .iter()
            .filter_map(|(id, addr)| {
                Some(VoterStatus {
                    node_id: node_id(*id)?,
                    addr: addr.clone(),
                    is_active: leader == Some(*id),
                    applied_log_index: replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index),
                })
            })
            .collect();
        let brokers = brokers
            .into_iter()
            .map(|b| {
                let live = liveness.get(&b.node_id);
                BrokerStatus {
                    node_id: b.node_id,
                    rack: b.rack,
                    broker_epoch: b.broker_epoch,
                    incarnation_id: b.incarnation_id,
                    fenced: b.fenced,
                    cordoned: b.cordoned,
                    maintenance: b.maintenance,
                    endpoints: b.endpoints,
                    metadata_offset: live.map(|l| l.0),
                    ms_since_heartbeat: live.map(|l| l.1),
                }
            })
            .collect();
        QuorumStatus {
            active_controller: leader.and_then(node_id),
            metadata_offset,
            voters,
            brokers,
            balancer: self
                .balancer_status
                .lock()
                .expect("balancer status lock")
                .clone()
                .map(Box::new),
        }
    }
}

impl ControlPlane for Inner {
    fn submit(&self, req: ControllerRequest) -> BoxFuture<'_, Result<Committed, SubmitError>> {
        Box::pin(Inner::submit(self, req))
    }

    fn status(&self) -> BoxFuture<'_, QuorumStatus> {
        Box::pin(Inner::status(self))
    }
}
