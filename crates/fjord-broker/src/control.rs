//! The broker's side of the control plane: where metadata changes are decided and how the
//! broker learns of them.
//!
//! - **Single node** (no `controller.quorum.voters`, the default): the node is its own
//!   controller. A [`fjord_metadata::Controller`] decides, the records go to the local
//!   `metadata.log` (one fsync per batch), and the broker publishes them at once.
//! - **Quorum**: requests go to the active controller over the controller listener
//!   ([`ControllerClient`], following "not the controller" hints), and the broker follows the
//!   committed metadata log by deltas ([`crate::cluster`] runs the follower, registration and
//!   heartbeats). A forwarded change returns once this broker has applied it, so a client that
//!   created a topic sees it in the next Metadata answer from the same broker.
//!
//! Either way the broker's topics change in exactly one place: [`crate::Broker::publish`].

use std::sync::Arc;
use std::time::Duration;

use fjord_metadata::quorum::{ControllerClient, ControllerService, SubmitError};
use fjord_metadata::{
    Controller, ControllerConfig, ControllerReply, ControllerRequest, MetadataLog, MetadataRecord,
};
use fjord_protocol::error::ErrorCode;
use parking_lot::Mutex;

use crate::broker::TopicError;

/// How long a forwarded admin request may take before the client gets REQUEST_TIMED_OUT.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

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
        controller.activate(crate::broker::now_ms());
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
    /// Decide and persist one request; returns the reply and the records to publish.
    pub fn submit(
        &mut self,
        req: ControllerRequest,
        now: i64,
    ) -> Result<(ControllerReply, Vec<MetadataRecord>), TopicError> {
        let result = self
            .controller
            .handle(req, now)
            .map_err(|e| TopicError::new(ErrorCode::from_i16(e.code()), e.to_string()))?;
        if let Err(e) = self.log.append_all(&result.records) {
            // The controller's image is ahead of the log now: rebuild it from the log.
            tracing::error!(error = %e, "metadata log write failed");
            self.controller = Controller::from_image(
                *self.controller.config(),
                self.log.image().clone(),
                self.log.record_count() as i64,
            );
            self.controller.activate(now);
            return Err(TopicError::new(ErrorCode::KafkaStorageError, e.to_string()));
        }
        Ok((result.response, result.records))
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

    /// Append records that did not come from [`Controller::handle`] (upgrades).
    pub fn append_raw(&mut self, records: &[MetadataRecord]) -> Result<(), TopicError> {
        self.log
            .append_all(records)
            .map_err(|e| TopicError::new(ErrorCode::KafkaStorageError, e.to_string()))?;
        for r in records {
            self.controller.replay(r);
        }
        Ok(())
    }
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
