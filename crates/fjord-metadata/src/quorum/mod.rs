//! The controller quorum on `openraft`: the metadata log replicated and persisted by Raft.
//!
//! - [`log_store::FileLogStore`] ([`openraft::storage::RaftLogStorage`]): Raft log entries as
//!   JSON lines in `raft-log.jsonl`, vote / committed / purged ids in `raft-state.json`, fsynced
//!   on the store's own writer thread with group commit ([`crate::persist`]).
//! - [`state_machine::MetadataStateMachine`] ([`openraft::storage::RaftStateMachine`]): applies
//!   each committed batch of [`MetadataRecord`]s to a [`ClusterImage`]; a snapshot is the image
//!   written as records ([`ClusterImage::to_records`]) in `snapshot.json`.
//! - [`network`]: the controller listener (KIP-291), one length-prefixed JSON frame per request
//!   and per reply: Raft RPCs between voters, and the control RPC — `Submit(ControllerRequest)`
//!   (active controller only; others answer with a `NotController` hint), `FetchMetadata { from,
//!   max_wait_ms }` (any voter, from its own state machine, long poll; a reader behind the
//!   window gets the image in parts, `FetchImagePart`) and `Status`.
//! - [`QuorumNode`]: one controller: its Raft instance, its state machine and its RPC server.
//! - [`feed`]: [`MetadataFeed`], a reader of the applied records: the state machine keeps the
//!   most recent ones in a window and signals each new offset; a reader behind the window gets
//!   the image ([`MetadataChunk::Image`]; over TCP as records, in parts).
//! - [`service`]: [`ControllerService`], the controller runtime on a [`QuorumNode`]: the Raft
//!   leader, once it has applied its log, builds the active [`crate::Controller`] from the
//!   image, decides requests one at a time (records written as one batch, reply once
//!   committed) but lets their Raft writes overlap (the next request is decided while the
//!   previous one's entry is being committed), fences brokers whose sessions expire, and
//!   resigns (drops the controller, to rebuild it from the committed image) when a write fails.
//! - [`client`]: [`ControllerClient`], what brokers use: finds the active controller (hints,
//!   failover, backoff, timeouts) and fetches metadata from any voter; [`heartbeat`]:
//!   [`HeartbeatSchedule`], when a broker heartbeats and retries a failed heartbeat.
//!
//! One Raft entry holds one controller batch (the records of one [`crate::ControllerResult`]),
//! so a batch is committed whole or not at all. The metadata offset of a record counts records,
//! not Raft entries (see [`crate::controller`]).

pub mod client;
pub mod feed;
pub mod heartbeat;
pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod tls;

pub use client::ControllerClient;
pub use feed::{MetadataChunk, MetadataFeed};
pub use heartbeat::HeartbeatSchedule;
pub use service::{
    BalancerLoadSource, BrokerStatus, Committed, ControllerService, ControllerServiceConfig,
    QuorumStatus, SubmitError, VoterStatus,
};
pub use tls::QuorumTls;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{ClusterImage, MetadataRecord};
use state_machine::MetadataState;

/// A Raft node id (a controller's `node.id`).
pub type RaftNodeId = u64;

/// One Raft log entry's payload: a controller batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// What applying a batch did: the metadata offset of its first record, and how many records
/// the image rejected (always 0 unless the controller has a bug).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchApplied {
    pub first_offset: i64,
    pub rejected: usize,
}

openraft::declare_raft_types!(
    /// The Raft types of the metadata quorum.
    pub TypeConfig:
        D = MetadataBatch,
        R = BatchApplied,
        NodeId = RaftNodeId,
        Node = BasicNode,
);

#[derive(Debug, Error)]
pub enum QuorumError {
    #[error("controller quorum storage in {dir}: {source}")]
    Storage {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("controller quorum: {0}")]
    Raft(String),
    #[error("controller quorum configuration: {0}")]
    Config(String),
    /// This node is not the active controller; `leader` is, if known.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<RaftNodeId> },
}

/// Most Raft entries (controller batches) in one AppendEntries.
pub const MAX_PAYLOAD_ENTRIES: u64 = 8;

/// Raft entries kept behind the last snapshot (openraft's default).
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1000;

/// Kafka's `metadata.log.max.record.bytes.between.snapshots` default (20 MiB).
pub const DEFAULT_SNAPSHOT_MAX_LOG_BYTES: u64 = 20 * 1024 * 1024;

/// Kafka's `metadata.max.retention.bytes` default (100 MiB).
pub const DEFAULT_RETENTION_BYTES: u64 = 100 * 1024 * 1024;

/// How a controller bounds its Raft log (which it also holds in memory) by bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// `metadata.log.max.record.bytes.between.snapshots`: snapshot once the log applied since
    /// the last snapshot holds this many bytes (0: by entries only).
    pub snapshot_every_bytes: u64,
    /// `metadata.max.retention.bytes`: the log kept behind the snapshot (at most
    /// [`LOGS_KEPT_AFTER_SNAPSHOT`] entries, for followers a little behind) is cut to this many
    /// bytes; `None`: by entries only. The whole log is then at most about this plus
    /// `snapshot_every_bytes`.
    pub retain_bytes: Option<u64>,
}

impl Default for LogBounds {
    fn default() -> Self {
        LogBounds {
            snapshot_every_bytes: DEFAULT_SNAPSHOT_MAX_LOG_BYTES,
            retain_bytes: Some(DEFAULT_RETENTION_BYTES),
        }
    }
}

/// How often the snapshot trigger by bytes looks at the log.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A snapshot asked for and not seen within this long is asked for again.
const SNAPSHOT_ASK_AGAIN: Duration = Duration::from_secs(60);

/// Raft settings for the metadata quorum: fast heartbeats and elections, snapshot every
/// `snapshot_every` entries (and by bytes: [`QuorumNode::bound_log`]).
pub fn raft_config(
    heartbeat_ms: u64,
    election_min_ms: u64,
    snapshot_every: u64,
) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "fjord-metadata".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_min_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        // Keep the log behind a snapshot (openraft's default), as Kafka keeps its metadata log
        // past snapshots (`metadata.max.retention.bytes`): a follower a little behind then
        // catches up from the log. With 0, a leader purged its log at each snapshot, and at 1M
        // replicas, with snapshots by bytes during the creation, the follower serving the
        // brokers had to install one: its record window restarted empty and all 140 brokers
        // fetched the whole image from it (6 GiB peak RSS, heartbeats failing for 25 s). A
        // restart still replays only the entries after the snapshot.
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        // openraft gives each AppendEntries one heartbeat interval to complete, and a new
        // leader probes a follower with up to this many entries from the middle of its log. An
        // entry is a whole controller batch (a CreateTopic of 1,000 partitions is ~200 KB of
        // JSON), so the default of 300 made ~50 MB requests that never finished in 100 ms: at
        // 300k replicas a failover never committed (docs/performance.md, "Control plane at
        // scale"). Few entries per request keep it well inside the interval.
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// One controller of the quorum.
pub struct QuorumNode {
    node_id: RaftNodeId,
    addr: SocketAddr,
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<MetadataState>>,
    feed: MetadataFeed,
    /// The log store Raft writes through (a clone sharing its state): its sizes drive the
    /// snapshot trigger by bytes.
    log: log_store::FileLogStore,
    server: Arc<network::Server>,
    serving: JoinHandle<()>,
    snapshot_trigger: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl QuorumNode {
    /// Open the log and state machine under `dir` and serve Raft RPCs (and metadata fetches) on
    /// `listener`.
    pub async fn start(
        node_id: RaftNodeId,
        dir: &Path,
        listener: TcpListener,
        config: Arc<openraft::Config>,
    ) -> Result<QuorumNode, QuorumError> {
        QuorumNode::start_with_window(
            node_id,
            dir,
            listener,
            config,
            feed::DEFAULT_WINDOW_RECORDS,
            None,
        )
        .await
    }

    /// [`start`](Self::start), keeping up to `window_records` recent records for feed readers.
    pub async fn start_with_window(
        node_id: RaftNodeId,
        dir: &Path,
        listener: TcpListener,
        config: Arc<openraft::Config>,
        window_records: usize,
        tls: Option<tls::QuorumTls>,
    ) -> Result<QuorumNode, QuorumError> {
        let storage = |source| QuorumError::Storage {
            dir: dir.display().to_string(),
            source,
        };
        let addr = listener.local_addr().map_err(storage)?;
        // Reading the files back (and repairing a torn tail) is disk work: off the workers.
        let owned = dir.to_path_buf();
        let (mut log, sm) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((
                log_store::FileLogStore::open(&owned)?,
                state_machine::MetadataStateMachine::open_with_window(&owned, window_records)?,
            ))
        })
        .await
        .map_err(|e| QuorumError::Raft(format!("opening the metadata storage: {e}")))?
        .map_err(storage)?;
        // A snapshot lost to corruption is rebuilt from the log only if the log still starts
        // at its beginning; otherwise this node's metadata cannot be rebuilt here.
        let purged = openraft::storage::RaftLogStorage::get_log_state(&mut log)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?
            .last_purged_log_id;
        if let (Some(purged), None) = (purged, sm.applied()) {
            return Err(QuorumError::Storage {
                dir: dir.display().to_string(),
                source: std::io::Error::other(format!(
                    "the metadata snapshot is missing or unreadable and the raft log was purged up to {purged}: \
                     restore the snapshot, or (with other controllers running) empty this directory so the leader sends one"
                )),
            });
        }
        let state = sm.state();
        let feed = sm.feed();
        let log_sizes = log.clone();
        let factory = network::TcpNetworkFactory { tls: tls.clone() };
        let raft = Raft::new(node_id, config, factory, log, sm)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let server = Arc::new(network::Server::new(raft.clone(), feed.clone()));
        let serving = tokio::spawn(network::serve(listener, server.clone(), tls));
        Ok(QuorumNode {
            node_id,
            addr,
            raft,
            state,
            feed,
            log: log_sizes,
            server,
            serving,
            snapshot_trigger: std::sync::Mutex::new(None),
        })
    }

    /// Cut the image sent to remote readers behind the window into parts of at most
    /// `max_bytes` encoded (default [`feed::MAX_PART_BYTES`]); for tests.
    pub fn set_image_part_bytes(&self, max_bytes: usize) {
        self.server.set_image_part_bytes(max_bytes);
    }

    /// Snapshot by bytes as well as by entries: whenever the log applied since the last
    /// snapshot holds more than `max_bytes` (Kafka's
    /// `metadata.log.max.record.bytes.between.snapshots`), ask openraft for a snapshot, which
    /// then purges the log up to it. openraft's own policy counts entries only, and one entry
    /// is a whole controller batch: 1M replicas created 1,000 partitions at a time are ~700
    /// entries and 58 MiB, far below 10,000 entries, so without this nothing was snapshotted
    /// and a restart replayed the whole log. A second call replaces the first.
    ///
    /// Then purge the log kept behind the snapshot down to `bounds.retain_bytes`: openraft
    /// keeps [`LOGS_KEPT_AFTER_SNAPSHOT`] entries, which at one controller batch each can be
    /// hundreds of MiB (all of it also in memory).
    pub fn bound_log(&self, bounds: LogBounds) {
        let task = (bounds.snapshot_every_bytes > 0 || bounds.retain_bytes.is_some()).then(|| {
            tokio::spawn(bound_log_by_bytes(
                self.node_id,
                self.raft.clone(),
                self.log.clone(),
                bounds,
            ))
        });
        let old = std::mem::replace(
            &mut *self.snapshot_trigger.lock().expect("snapshot trigger lock"),
            task,
        );
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Bytes of the Raft log (as written in its file) after the last snapshot, applied or not.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        let snapshot = self.raft.metrics().borrow().snapshot.map(|l| l.index);
        self.log.bytes_after(snapshot)
    }

    /// Bytes of the Raft log kept behind the last snapshot (0 without one).
    pub fn log_bytes_behind_snapshot(&self) -> u64 {
        let snapshot = self.raft.metrics().borrow().snapshot.map(|l| l.index);
        snapshot.map_or(0, |s| self.log.bytes_through(s))
    }

    /// Form a new quorum of `voters` (call on one node of a new cluster only).
    pub async fn initialize(
        &self,
        voters: &BTreeMap<RaftNodeId, SocketAddr>,
    ) -> Result<(), QuorumError> {
        let voters = voters
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        self.initialize_voters(&voters).await
    }

    /// Form a new quorum of `voters` given as `host:port` (resolved at each connection).
    /// Calling it on every voter with the same map is safe; on a node that already holds a log
    /// (a restart, or a peer was faster) it fails with a `not allowed` error.
    pub async fn initialize_voters(
        &self,
        voters: &BTreeMap<RaftNodeId, String>,
    ) -> Result<(), QuorumError> {
        let members: BTreeMap<RaftNodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Append a batch through Raft; returns once it is committed and applied here.
    ///
    /// An error does not prove the batch was dropped: a leader that lost its leadership after
    /// appending may see its entry committed by the next leader. The active controller must
    /// therefore not retry a batch blindly: it resigns and rebuilds from the committed image
    /// ([`crate::Controller::from_image`]), as KRaft's controller does.
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<BatchApplied, QuorumError> {
        match self.raft.client_write(MetadataBatch { records }).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(QuorumError::NotLeader {
                    leader: f.leader_id,
                }),
                None => Err(QuorumError::Raft(e.to_string())),
            },
        }
    }

    /// Hand `records` to Raft as one entry now (entries keep the order of these calls) and
    /// return a future that resolves once the entry is committed and applied; the caller can
    /// release its locks before awaiting it, so several writes are in flight at once.
    pub async fn write_pipelined(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<impl std::future::Future<Output = Result<BatchApplied, QuorumError>>, QuorumError>
    {
        let rx = self
            .raft
            .client_write_ff(MetadataBatch { records })
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        Ok(async move {
            match rx.await {
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(e)) => match e {
                    openraft::error::ClientWriteError::ForwardToLeader(f) => {
                        Err(QuorumError::NotLeader {
                            leader: f.leader_id,
                        })
                    }
                    other => Err(QuorumError::Raft(other.to_string())),
                },
                Err(_) => Err(QuorumError::Raft("raft stopped".into())),
            }
        })
    }

    pub fn node_id(&self) -> RaftNodeId {
        self.node_id
    }

    /// The controller listener address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The leader this node knows of.
    pub async fn current_leader(&self) -> Option<RaftNodeId> {
        self.raft.current_leader().await
    }

    /// A copy of the image built from the records applied on this node.
    pub fn image(&self) -> ClusterImage {
        self.state.read().expect("state lock").image.clone()
    }

    /// Metadata records applied on this node (the next metadata offset).
    pub fn applied_offset(&self) -> i64 {
        self.state.read().expect("state lock").offset
    }

    /// A reader of the records applied on this node.
    pub fn feed(&self) -> MetadataFeed {
        self.feed.clone()
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Stop Raft and the RPC server (a killed controller, from its peers' point of view).
    pub async fn shutdown(self) {
        self.stop().await
    }

    /// [`shutdown`](Self::shutdown) through a shared reference; later calls do nothing.
    pub(crate) async fn stop(&self) {
        self.serving.abort();
        self.stop_snapshot_trigger();
        let _ = self.raft.shutdown().await;
    }
}

impl Drop for QuorumNode {
    /// A node dropped without [`shutdown`](QuorumNode::shutdown) at least stops listening.
    fn drop(&mut self) {
        self.serving.abort();
        self.stop_snapshot_trigger();
    }
}

impl QuorumNode {
    fn stop_snapshot_trigger(&self) {
        if let Ok(mut t) = self.snapshot_trigger.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

/// The task behind [`QuorumNode::bound_log`]: every [`SNAPSHOT_CHECK_INTERVAL`], the bytes of
/// the entries applied since the last snapshot against `snapshot_every_bytes`, and the bytes
/// kept behind the snapshot against `retain_bytes`. Once it has asked for a snapshot, it waits
/// for that snapshot (or [`SNAPSHOT_ASK_AGAIN`]) before asking again, so a snapshot that takes
/// seconds to build is not asked for twice.
async fn bound_log_by_bytes(
    node_id: RaftNodeId,
    raft: Raft<TypeConfig>,
    log: log_store::FileLogStore,
    bounds: LogBounds,
) {
    let max_bytes = bounds.snapshot_every_bytes;
    let mut purge_asked: Option<u64> = None;
    let mut metrics = raft.metrics();
    let mut tick = tokio::time::interval(SNAPSHOT_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tick.tick().await;
        let (snapshot, applied) = {
            let m = metrics.borrow_and_update();
            (m.snapshot.map(|l| l.index), m.last_applied.map(|l| l.index))
        };
        let Some(applied) = applied else { continue };
        if let (Some(snapshot), Some(retain)) = (snapshot, bounds.retain_bytes) {
            // openraft may purge seconds later (after replication to a follower that needs the
            // entries): ask once per point.
            if let Some(upto) = log
                .purge_point(snapshot, retain)
                .filter(|p| purge_asked.is_none_or(|a| *p > a))
            {
                purge_asked = Some(upto);
                tracing::info!(
                    node_id,
                    upto,
                    snapshot,
                    retain_bytes = retain,
                    "metadata log behind the snapshot is over metadata.max.retention.bytes: purging"
                );
                if raft.trigger().purge_log(upto).await.is_err() {
                    return;
                }
            }
        }
        if max_bytes == 0 {
            continue;
        }
        if let Some((upto, at)) = asked {
            if snapshot.is_some_and(|s| s >= upto) || at.elapsed() >= SNAPSHOT_ASK_AGAIN {
                asked = None;
            } else {
                continue;
            }
        }
        // Only applied entries can go into a snapshot.
        let bytes = log
            .bytes_after(snapshot)
            .saturating_sub(log.bytes_after(Some(applied)));
        if bytes < max_bytes {
            continue;
        }
        tracing::info!(
            node_id,
            bytes,
            max_bytes,
            applied,
            last_snapshot = ?snapshot,
            "metadata log since the last snapshot is over metadata.log.max.record.bytes.between.snapshots: taking a snapshot"
        );
        if let Err(e) = raft.trigger().snapshot().await {
            // Fatal: Raft has stopped.
            tracing::debug!(node_id, error = %e, "snapshot trigger: raft stopped");
            return;
        }
        asked = Some((applied, tokio::time::Instant::now()));
    }
}

/// Parse `controller.quorum.voters` (`"1@127.0.0.1:9093,2@127.0.0.2:9093,..."`, Kafka's format)
/// into node id → `host:port`. Errors name the bad entry.
pub fn parse_quorum_voters(s: &str) -> Result<BTreeMap<RaftNodeId, String>, String> {
    let mut voters = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry.split_once('@').ok_or_else(|| {
            format!("controller.quorum.voters entry {entry:?} is not id@host:port")
        })?;
        let id: RaftNodeId = id.parse().map_err(|_| {
            format!("controller.quorum.voters entry {entry:?}: {id:?} is not a node id")
        })?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("controller.quorum.voters entry {entry:?} has no port"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "controller.quorum.voters entry {entry:?}: bad host or port"
            ));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("controller.quorum.voters names node {id} twice"));
        }
    }
    if voters.is_empty() {
        return Err("controller.quorum.voters is empty".into());
    }
    if voters
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        != voters.len()
    {
        return Err("controller.quorum.voters gives two nodes the same address".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_voters() {
        let v = parse_quorum_voters("1@127.0.0.1:9093, 2@127.0.0.2:9093,3@[::1]:9093").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[&3], "[::1]:9093");
        for bad in [
            "",
            "1@127.0.0.1",
            "x@127.0.0.1:9093",
            "1@127.0.0.1:9093,1@127.0.0.2:9093",
            "1@:9093",
            "1@h:0",
            "1@h:70000",
            "1@h:9093,2@h:9093",
            "127.0.0.1:9093",
        ] {
            assert!(parse_quorum_voters(bad).is_err(), "{bad:?} accepted");
        }
    }
}
