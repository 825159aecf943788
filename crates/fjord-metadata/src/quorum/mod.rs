//! The controller quorum on `openraft`: the metadata log replicated and persisted by Raft.
//!
//! - [`log_store::FileLogStore`] ([`openraft::storage::RaftLogStorage`]): Raft log entries as
//!   JSON lines in `raft-log.jsonl`, vote / committed / purged ids in `raft-state.json`, fsynced.
//! - [`state_machine::MetadataStateMachine`] ([`openraft::storage::RaftStateMachine`]): applies
//!   each committed batch of [`MetadataRecord`]s to a [`ClusterImage`]; a snapshot is the image
//!   written as records ([`ClusterImage::to_records`]) in `snapshot.json`.
//! - [`network`]: Raft RPCs over TCP on the controller listener (KIP-291), one length-prefixed
//!   JSON frame per request and per reply.
//! - [`QuorumNode`]: one controller: its Raft instance, its state machine and its RPC server.
//!
//! One Raft entry holds one controller batch (the records of one [`crate::ControllerResult`]),
//! so a batch is committed whole or not at all. The metadata offset of a record counts records,
//! not Raft entries (see [`crate::controller`]).

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

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
    /// This node is not the active controller; `leader` is, if known.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<RaftNodeId> },
}

/// Raft settings for the metadata quorum: fast heartbeats and elections, snapshot every
/// `snapshot_every` entries.
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
        max_in_snapshot_log_to_keep: 0,
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
    server: JoinHandle<()>,
}

impl QuorumNode {
    /// Open the log and state machine under `dir` and serve Raft RPCs on `listener`.
    pub async fn start(
        node_id: RaftNodeId,
        dir: &Path,
        listener: TcpListener,
        config: Arc<openraft::Config>,
    ) -> Result<QuorumNode, QuorumError> {
        let storage = |source| QuorumError::Storage {
            dir: dir.display().to_string(),
            source,
        };
        let addr = listener.local_addr().map_err(storage)?;
        let log = log_store::FileLogStore::open(dir).map_err(storage)?;
        let sm = state_machine::MetadataStateMachine::open(dir).map_err(storage)?;
        let state = sm.state();
        let raft = Raft::new(node_id, config, network::TcpNetworkFactory, log, sm)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let server = tokio::spawn(network::serve(listener, raft.clone()));
        Ok(QuorumNode {
            node_id,
            addr,
            raft,
            state,
            server,
        })
    }

    /// Form a new quorum of `voters` (call on one node of a new cluster only).
    pub async fn initialize(
        &self,
        voters: &BTreeMap<RaftNodeId, SocketAddr>,
    ) -> Result<(), QuorumError> {
        let members: BTreeMap<RaftNodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Append a batch through Raft; returns once it is committed and applied here.
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

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Stop Raft and the RPC server (a killed controller, from its peers' point of view).
    pub async fn shutdown(self) {
        self.server.abort();
        let _ = self.raft.shutdown().await;
    }
}
