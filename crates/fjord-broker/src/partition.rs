//! One partition of a topic as this broker sees it: its replica state from the cluster image
//! (leader, leader epoch, replicas, ISR), its log when a replica lives here, and the fetch
//! requests waiting for new data.
//!
//! The log sits behind a lock that is held only for the synchronous storage call, never across
//! an `.await`. A deleted partition's log is taken out (`None`) under the write lock, so a request
//! that raced with the deletion can never write into a directory that a recreated topic of the
//! same name may be using.

use std::sync::Arc;

use fjord_storage::{AppendError, AppendInfo, Log, LogConfig, ReadError, ReadResult};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use fjord_protocol::error::ErrorCode;

/// One partition of a topic.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    /// This broker's node id.
    local: i32,
    state: RwLock<ReplicaState>,
    log: RwLock<Option<Log>>,
    waiters: Mutex<Vec<Arc<Notify>>>,
}

/// A partition's replicas, ISR, leader and epochs, as the cluster image last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl ReplicaState {
    /// No state known yet (no replicas, no leader).
    pub fn unknown() -> ReplicaState {
        ReplicaState {
            replicas: Vec::new(),
            isr: Vec::new(),
            leader: -1,
            leader_epoch: -1,
            partition_epoch: -1,
        }
    }
}

/// The partition was deleted while a request held it.
pub const DELETED: ErrorCode = ErrorCode::UnknownTopicOrPartition;

impl Partition {
    /// A partition on broker `local`, with its log if a replica lives here.
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        local: i32,
        state: ReplicaState,
        log: Option<Log>,
    ) -> Partition {
        Partition {
            topic,
            topic_id,
            index,
            local,
            state: RwLock::new(state),
            log: RwLock::new(log),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The replica state (a copy).
    pub fn state(&self) -> ReplicaState {
        self.state.read().clone()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.state.read().leader == self.local
    }

    /// Whether a replica of the partition lives on this broker.
    pub fn is_replica(&self) -> bool {
        self.state.read().replicas.contains(&self.local)
    }

    /// Take the new state from the cluster image. Returns the previous one.
    pub fn set_state(&self, state: ReplicaState) -> ReplicaState {
        let old = std::mem::replace(&mut *self.state.write(), state);
        if !self.is_leader() {
            // Fetchers parked on a partition we no longer lead must answer now.
            self.wake_fetchers();
        }
        old
    }

    /// Whether the log is open here.
    pub fn has_log(&self) -> bool {
        self.log.read().is_some()
    }

    /// Put the log of a replica that now lives here in place (once).
    pub fn install_log(&self, log: Log) {
        let mut guard = self.log.write();
        if guard.is_none() {
            *guard = Some(log);
        }
    }

    /// Append one produce request's records and wake fetchers waiting on this partition.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendRejection> {
        let info = {
            let mut guard = self.log.write();
            let log = guard.as_mut().ok_or(AppendRejection::Deleted)?;
            log.append(records, self.leader_epoch(), now_ms)
                .map_err(AppendRejection::Storage)?
        };
        if !info.duplicate {
            self.wake_fetchers();
        }
        Ok(info)
    }

    /// Read whole batches up to the high watermark (the log end on a single node).
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, ReadRejection> {
        let guard = self.log.read();
        let log = guard.as_ref().ok_or(ReadRejection::Deleted)?;
        let hw = log.log_end_offset();
        log.read(fetch_offset, max_bytes, hw, min_one_batch)
            .map_err(ReadRejection::Storage)
    }

    /// Run `f` with shared access to the log; `None` if the partition was deleted.
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> Option<T> {
        self.log.read().as_ref().map(f)
    }

    /// Run `f` with exclusive access to the log; `None` if the partition was deleted.
    pub fn with_log_mut<T>(&self, f: impl FnOnce(&mut Log) -> T) -> Option<T> {
        self.log.write().as_mut().map(f)
    }

    /// May this broker serve a client request for the partition? Only the leader may
    /// (NOT_LEADER_OR_FOLLOWER otherwise, so the client refreshes its metadata). Then Kafka's
    /// fencing of a client-supplied current leader epoch (-1 means "don't check"): a client
    /// ahead of us knows of a newer leader (UNKNOWN_LEADER_EPOCH); a client behind us has stale
    /// metadata (FENCED_LEADER_EPOCH).
    pub fn check_leader_epoch(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        let (leader, epoch) = {
            let s = self.state.read();
            (s.leader, s.leader_epoch)
        };
        if leader != self.local {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        if client_epoch < 0 {
            return Ok(());
        }
        match client_epoch.cmp(&epoch) {
            std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
            std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// (log start, high watermark / log end) or `None` once deleted.
    pub fn offsets(&self) -> Option<(i64, i64)> {
        self.with_log(|l| (l.log_start_offset(), l.log_end_offset()))
    }

    pub fn update_config(&self, config: LogConfig) {
        self.with_log_mut(|l| l.update_config(config));
    }

    /// Take the log out for deletion; later calls see the partition as gone.
    pub fn take_log(&self) -> Option<Log> {
        let log = self.log.write().take();
        self.wake_fetchers();
        log
    }

    /// Register interest in the next append. Register *before* checking for data so an append
    /// between the check and the wait is not missed (`Notify` keeps the permit).
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        let mut w = self.waiters.lock();
        if !w.iter().any(|x| Arc::ptr_eq(x, waiter)) {
            w.push(waiter.clone());
        }
    }

    pub fn unregister_waiter(&self, waiter: &Arc<Notify>) {
        self.waiters.lock().retain(|x| !Arc::ptr_eq(x, waiter));
    }

    fn wake_fetchers(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters {
            w.notify_one();
        }
    }
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendRejection {
    Deleted,
    Storage(AppendError),
}

impl AppendRejection {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendRejection::Deleted => DELETED,
            AppendRejection::Storage(e) => e.error_code(),
        }
    }
    pub fn message(&self) -> String {
        match self {
            AppendRejection::Deleted => "partition was deleted".into(),
            AppendRejection::Storage(e) => e.to_string(),
        }
    }
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadRejection {
    Deleted,
    Storage(ReadError),
}

impl ReadRejection {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReadRejection::Deleted => DELETED,
            ReadRejection::Storage(e) => e.error_code(),
        }
    }
}
