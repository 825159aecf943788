//! One partition hosted on this broker: its log, its leader epoch, and the fetch requests
//! waiting for new data.
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

/// One hosted partition.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    /// Single node: the leader epoch is fixed at 0 until the replication work bumps it.
    pub leader_epoch: i32,
    log: RwLock<Option<Log>>,
    waiters: Mutex<Vec<Arc<Notify>>>,
}

/// The partition was deleted while a request held it.
pub const DELETED: ErrorCode = ErrorCode::UnknownTopicOrPartition;

impl Partition {
    pub fn new(topic: Arc<str>, topic_id: Uuid, index: i32, log: Log) -> Partition {
        Partition {
            topic,
            topic_id,
            index,
            leader_epoch: 0,
            log: RwLock::new(Some(log)),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Append one produce request's records and wake fetchers waiting on this partition.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendRejection> {
        let info = {
            let mut guard = self.log.write();
            let log = guard.as_mut().ok_or(AppendRejection::Deleted)?;
            log.append(records, self.leader_epoch, now_ms)
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

    /// Kafka's fencing of a client-supplied current leader epoch (-1 means "don't check"):
    /// a client ahead of us knows of a newer leader (UNKNOWN_LEADER_EPOCH); a client behind us
    /// has stale metadata (FENCED_LEADER_EPOCH).
    pub fn check_leader_epoch(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        if client_epoch < 0 {
            return Ok(());
        }
        match client_epoch.cmp(&self.leader_epoch) {
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
