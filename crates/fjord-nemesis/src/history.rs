//! What the clients did and saw: every operation with its node, times and outcome, plus the
//! Metadata samples and committed-offset observations the checkers read.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// What an operation was.
#[derive(Debug, Clone, Serialize)]
pub enum OpKind {
    /// One idempotent produce attempt of a batch (`values` are unique in the run).
    Produce {
        partition: i32,
        values: Vec<String>,
    },
    /// A standalone offset commit of the group.
    Commit {
        partition: i32,
        offset: i64,
    },
    /// A consumer fetch.
    Fetch {
        partition: i32,
        offset: i64,
    },
    CreateTopic {
        topic: String,
    },
    DeleteTopic {
        topic: String,
    },
    /// InitProducerId (idempotent, no transactional id).
    InitProducer,
    /// InitProducerId with a transactional id.
    TxnInit,
    /// AddPartitionsToTxn of transaction `txn` (numbered per client).
    TxnAdd {
        txn: u64,
        partitions: Vec<i32>,
    },
    /// One transactional produce attempt of a batch of transaction `txn`.
    TxnProduce {
        txn: u64,
        partition: i32,
        values: Vec<String>,
    },
    /// One EndTxn attempt of transaction `txn` (all its `values`); the client's last answered
    /// attempt is the transaction's fate as the client knows it.
    TxnEnd {
        txn: u64,
        commit: bool,
        values: Vec<String>,
    },
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Produce { .. } => "produce",
            OpKind::Commit { .. } => "commit",
            OpKind::Fetch { .. } => "fetch",
            OpKind::CreateTopic { .. } => "create-topic",
            OpKind::DeleteTopic { .. } => "delete-topic",
            OpKind::InitProducer => "init-producer",
            OpKind::TxnInit => "txn-init",
            OpKind::TxnAdd { .. } => "txn-add",
            OpKind::TxnProduce { .. } => "txn-produce",
            OpKind::TxnEnd { .. } => "txn-end",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Answered without error; `offset` for a produce (the base offset).
    Ok { offset: Option<i64> },
    /// Answered with a Kafka error code (or a client-side error before/after sending).
    Error { code: Option<i16>, message: String },
    /// The connection broke (closed, reset) before an answer.
    Disconnected { message: String },
    /// No answer within the client's timeout although the connection stayed up.
    Timeout,
    /// Still waiting when the history was read (never answered).
    Pending,
}

/// One operation.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub id: u64,
    pub client: String,
    pub kind: OpKind,
    /// The node the request went to, when known.
    pub node: Option<usize>,
    /// Seconds since the run started.
    pub start: f64,
    pub end: Option<f64>,
    pub outcome: Outcome,
}

/// A partition as one node's Metadata answer described it.
#[derive(Debug, Clone, Serialize)]
pub struct MetaSample {
    pub at: f64,
    pub from_node: usize,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// The group's committed offset of a partition as OffsetFetch returned it.
#[derive(Debug, Clone, Serialize)]
pub struct CommitSample {
    /// The node that answered (the coordinator as the sampler found it).
    pub node: usize,
    pub start: f64,
    pub end: f64,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    meta: Vec<MetaSample>,
    commits: Vec<CommitSample>,
}

/// The shared history of a run (cheap to clone).
#[derive(Clone)]
pub struct History {
    t0: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl History {
    pub fn new(t0: Instant) -> History {
        History {
            t0,
            inner: Arc::default(),
        }
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Record the start of an operation; [`History::finish`] records its outcome.
    pub fn begin(&self, client: &str, kind: OpKind, node: Option<usize>) -> u64 {
        let mut g = self.inner.lock().expect("history lock");
        let id = g.ops.len() as u64;
        let start = self.now();
        g.ops.push(Op {
            id,
            client: client.to_string(),
            kind,
            node,
            start,
            end: None,
            outcome: Outcome::Pending,
        });
        id
    }

    pub fn finish(&self, id: u64, outcome: Outcome) {
        let end = self.now();
        let mut g = self.inner.lock().expect("history lock");
        let op = &mut g.ops[id as usize];
        op.end = Some(end);
        op.outcome = outcome;
    }

    pub fn set_node(&self, id: u64, node: Option<usize>) {
        self.inner.lock().expect("history lock").ops[id as usize].node = node;
    }

    pub fn meta(&self, s: MetaSample) {
        self.inner.lock().expect("history lock").meta.push(s);
    }

    pub fn committed(&self, s: CommitSample) {
        self.inner.lock().expect("history lock").commits.push(s);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.inner.lock().expect("history lock").ops.clone()
    }

    pub fn meta_samples(&self) -> Vec<MetaSample> {
        self.inner.lock().expect("history lock").meta.clone()
    }

    pub fn commit_samples(&self) -> Vec<CommitSample> {
        self.inner.lock().expect("history lock").commits.clone()
    }
}
