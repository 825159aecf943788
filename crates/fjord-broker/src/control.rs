//! The broker's side of the control plane: where metadata changes are decided and how the
//! broker learns of them.
//!
//! - **Single node** (no `controller.quorum.voters`, the default): the node is its own
//!   controller. A [`fjord_metadata::Controller`] decides under the [`Local`] mutex and queues
//!   the records for the local `metadata.log`; the log's writer thread writes and fsyncs them
//!   (many concurrent changes share one fsync) while no lock is held; the change is then
//!   published in log order and acknowledged ([`submit_local`]).
//! - **Quorum**: requests go to the active controller over the controller listener
//!   ([`ControllerClient`], following "not the controller" hints), and the broker follows the
//!   committed metadata log by deltas ([`crate::cluster`] runs the follower, registration and
//!   heartbeats). A forwarded change returns once this broker has applied it, so a client that
//!   created a topic sees it in the next Metadata answer from the same broker.
//!
//! Either way the broker's topics change in exactly one place: [`crate::Broker::publish`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fjord_metadata::quorum::{ControllerClient, ControllerService, SubmitError};
use fjord_metadata::store::Appended;
use fjord_metadata::{
    Controller, ControllerConfig, ControllerReply, ControllerRequest, MetadataLog, MetadataRecord,
    StoreError,
};
use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use parking_lot::Mutex;

use crate::broker::{Broker, Publish, TopicError};

/// The longest a change sent to the controller may take, decided *and* applied on this broker,
/// before its client gets REQUEST_TIMED_OUT; a request's own `timeout_ms` may make it shorter
/// ([`Deadline`]).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// When a change sent to the controller must be answered: one instant for the whole request
/// (every topic of a CreateTopics, the controller's decision and this broker's catching up to
/// it), so the client gets its result or a retriable error (REQUEST_TIMED_OUT) before its own
/// request timeout, never silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(tokio::time::Instant);

impl Deadline {
    /// [`FORWARD_TIMEOUT`] from now: requests without a timeout of their own (AlterConfigs,
    /// the broker's own changes).
    pub fn standard() -> Deadline {
        Deadline(tokio::time::Instant::now() + FORWARD_TIMEOUT)
    }

    /// For a request with `timeout_ms`: 90% of it, at most [`FORWARD_TIMEOUT`]; a timeout that
    /// is not positive means the standard one. The 10% keeps the answer ahead of clients whose
    /// own request timeout is the same number (kafka-python, the fjord CLI).
    pub fn from_timeout_ms(timeout_ms: i32) -> Deadline {
        match u64::try_from(timeout_ms) {
            Ok(ms) if ms > 0 => Deadline(
                tokio::time::Instant::now()
                    + Duration::from_millis(ms - ms / 10).min(FORWARD_TIMEOUT),
            ),
            _ => Deadline::standard(),
        }
    }

    /// What is left of it (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    pub fn instant(&self) -> tokio::time::Instant {
        self.0
    }
}

/// The single node's controller and its log.
pub struct Local {
    pub controller: Controller,
    pub log: MetadataLog,
}

/// Where this broker's metadata changes are decided.
pub enum ControlPlane {
    Local(Box<Mutex<Local>>),
    Quorum {
        client: ControllerClient,
        /// This node's controller, when it has the controller role.
        service: Option<Arc<ControllerService>>,
    },
}

impl ControlPlane {
    /// A single node's control plane over its metadata log.
    pub fn local(log: MetadataLog, session_timeout_ms: i64) -> ControlPlane {
        let mut controller = Controller::from_image(
            ControllerConfig {
                session_timeout_ms,
                ..ControllerConfig::default()
            },
            log.image().clone(),
            log.record_count() as i64,
        );
        controller.activate(now_ms());
        ControlPlane::Local(Box::new(Mutex::new(Local { controller, log })))
    }

    /// The active controller's node id, if known.
    pub fn active_controller(&self, local_node: i32) -> Option<i32> {
        match self {
            ControlPlane::Local(_) => Some(local_node),
            ControlPlane::Quorum { client, service } => service
                .as_ref()
                .and_then(|s| s.active_controller())
                .or_else(|| client.last_known_controller()),
        }
    }
}

impl Local {
    /// Decide one request and queue its records for the log (in decision order: the caller
    /// holds the mutex). Returns the reply, to give once the records are durable.
    pub fn decide(
        &mut self,
        req: ControllerRequest,
        now: i64,
    ) -> Result<(ControllerReply, Appended), TopicError> {
        let result = self
            .controller
            .handle(req, now)
            .map_err(|e| TopicError::new(ErrorCode::from_i16(e.code()), e.to_string()))?;
        match self.log.queue(result.records) {
            Ok(appended) => Ok((result.response, appended)),
            Err(e) => {
                self.rebuild(now);
                Err(storage_error(e))
            }
        }
    }

    /// The records made durable since the last call, in log order, and the metadata offset
    /// after them. A failed write drops what was decided since the last durable batch: the
    /// controller is rebuilt from the durable image.
    pub fn settle(&mut self, now: i64) -> (Vec<MetadataRecord>, i64) {
        let settled = self.log.settle();
        if settled.failed {
            self.rebuild(now);
        }
        (settled.records, self.log.record_count() as i64)
    }

    /// The controller's image is ahead of the log: rebuild it from the log.
    fn rebuild(&mut self, now: i64) {
        tracing::error!(
            metadata_offset = self.log.record_count(),
            "metadata log write failed; rebuilding the controller from the durable records"
        );
        self.controller = Controller::from_image(
            *self.controller.config(),
            self.log.image().clone(),
            self.log.record_count() as i64,
        );
        self.controller.activate(now);
    }

    /// Records that bring a log written before the cluster records existed (topics without
    /// partition states, no broker registration) up to date, for node `node_id` alone.
    pub fn upgrade_records(&self, node_id: i32) -> Vec<MetadataRecord> {
        let image = self.controller.image();
        let mut out = Vec::new();
        for t in image.topics() {
            for p in 0..t.partitions {
                if image.partition(&t.id, p).is_none() {
                    out.push(MetadataRecord::Partition {
                        topic_id: t.id,
                        partition: p,
                        replicas: vec![node_id],
                        isr: vec![node_id],
                        leader: node_id,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        adding_replicas: vec![],
                        removing_replicas: vec![],
                    });
                }
            }
        }
        out
    }

    /// Append records that did not come from [`Controller::handle`] (upgrades, at start-up:
    /// waits on the calling thread).
    pub fn append_raw(&mut self, records: &[MetadataRecord]) -> Result<(), TopicError> {
        self.log.append_all(records).map_err(storage_error)?;
        for r in records {
            self.controller.replay(r);
        }
        Ok(())
    }
}

fn storage_error(e: StoreError) -> TopicError {
    TopicError::new(ErrorCode::KafkaStorageError, e.to_string())
}

/// Publish what the single node's log has made durable, in log order. Only the
/// [`LocalPublisher`]'s thread calls this once the broker runs (start-up calls it before the
/// thread starts), so batches settle and publish in order without the [`Local`] mutex held
/// while logs are opened.
fn publish_settled(b: &Broker, local: &Mutex<Local>) {
    let (records, next_offset) = local.lock().settle(now_ms());
    if !records.is_empty() {
        b.publish(Publish::Records(&records), next_offset);
    }
}

/// The single node's metadata publisher: a thread that settles durable changes and applies
/// them to the broker ([`Broker::publish`] opens and deletes partition logs, which must not
/// run on an async worker or under the [`Local`] mutex). Submitters ask for a round and wait
/// for it without blocking.
pub struct LocalPublisher {
    /// Rounds asked for so far.
    requested: Arc<AtomicU64>,
    /// Rounds done (closed when the thread is gone).
    completed: tokio::sync::watch::Receiver<u64>,
    wake: std::sync::mpsc::SyncSender<()>,
}

impl LocalPublisher {
    /// Start the thread for `broker` (a single node's). It stops when the broker is dropped.
    pub fn start(broker: &Arc<Broker>) -> std::io::Result<LocalPublisher> {
        let requested = Arc::new(AtomicU64::new(0));
        let (done_tx, completed) = tokio::sync::watch::channel(0u64);
        // One pending wake-up is enough: a round reads `requested` when it starts.
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let weak: Weak<Broker> = Arc::downgrade(broker);
        let asked = requested.clone();
        std::thread::Builder::new()
            .name("metadata-publisher".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let round = asked.load(Ordering::Acquire);
                    let Some(b) = weak.upgrade() else { return };
                    let ControlPlane::Local(local) = &b.control else {
                        return;
                    };
                    publish_settled(&b, local);
                    done_tx.send_replace(round);
                }
            })?;
        Ok(LocalPublisher {
            requested,
            completed,
            wake,
        })
    }

    /// Ask for a round without waiting for it.
    fn request(&self) -> u64 {
        let round = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        // Full: a wake-up is pending and its round will see `round`.
        let _ = self.wake.try_send(());
        round
    }

    /// Publish everything durable now, and wait (without blocking) until it is applied.
    async fn publish_durable(&self) {
        let round = self.request();
        let mut done = self.completed.clone();
        // An error means the thread is gone (the broker is closing): nothing to wait for.
        let _ = done.wait_for(|&r| r >= round).await;
    }
}

/// Asks for publication when dropped, so a caller that stops waiting (a request timeout)
/// does not hold back its change's publication.
struct PublishOnDrop<'a>(&'a LocalPublisher);

impl Drop for PublishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.request();
    }
}

/// A change on a single node: decided under the [`Local`] mutex, made durable by the log's
/// writer thread with no lock held (concurrent changes share an fsync), published in log
/// order by the [`LocalPublisher`], and answered only once durable and applied.
pub async fn submit_local(
    b: &Broker,
    local: &Mutex<Local>,
    req: ControllerRequest,
) -> Result<ControllerReply, TopicError> {
    let (reply, appended) = local.lock().decide(req, now_ms())?;
    let Some(publisher) = b.local_publisher() else {
        // Not started (the broker is still opening): settle and publish here.
        let durable = appended.durable().await;
        publish_settled(b, local);
        durable.map_err(storage_error)?;
        return Ok(reply);
    };
    let on_cancel = PublishOnDrop(publisher);
    let durable = appended.durable().await;
    std::mem::forget(on_cancel);
    publisher.publish_durable().await;
    durable.map_err(storage_error)?;
    Ok(reply)
}

/// [`submit_local`] waiting on the calling thread (start-up only).
pub fn submit_local_blocking(
    b: &Broker,
    local: &Mutex<Local>,
    req: ControllerRequest,
) -> Result<ControllerReply, TopicError> {
    let (reply, appended) = local.lock().decide(req, now_ms())?;
    let durable = appended.wait_blocking();
    publish_settled(b, local);
    durable.map_err(storage_error)?;
    Ok(reply)
}

/// A change sent to the controller ended in `e` after `elapsed`: a retriable error (the
/// deadline passed, no controller, a failed metadata write) is logged at WARN and counted in
/// `fjord_controller_requests_failed_total`; a refusal (TOPIC_ALREADY_EXISTS, ...) is the
/// controller's answer and is neither.
pub fn note_unanswered(b: &Broker, kind: &str, e: &TopicError, elapsed: Duration) {
    let error = match e.code {
        ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
        ErrorCode::NotController => "NOT_CONTROLLER",
        ErrorCode::KafkaStorageError => "KAFKA_STORAGE_ERROR",
        _ => return,
    };
    b.metrics
        .controller_requests_failed
        .with_label_values(&[kind, error])
        .inc();
    let controller = b.controller_id();
    tracing::warn!(
        request = kind,
        error,
        elapsed_ms = elapsed.as_millis() as u64,
        active_controller = controller,
        reason = %e.message,
        "a change sent to the controller got no result in time; the client gets a retriable error"
    );
}

/// A control-plane failure as the error a Kafka client gets.
pub fn submit_error(e: SubmitError) -> TopicError {
    match e {
        SubmitError::Refused { code, message } => {
            TopicError::new(ErrorCode::from_i16(code), message)
        }
        SubmitError::NotController { leader } => TopicError::new(
            ErrorCode::NotController,
            format!("no active controller reachable (last known: {leader:?})"),
        ),
        SubmitError::Unavailable(why) => TopicError::new(
            ErrorCode::RequestTimedOut,
            format!("the controller quorum did not answer: {why}"),
        ),
    }
}
