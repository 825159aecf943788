//! A broker in a cluster with a controller quorum: it follows the metadata log, registers with
//! the active controller (a new broker epoch per process start, KIP-380) and heartbeats.
//!
//! - [`follow`] fetches committed metadata from `from = applied offset` and publishes it to the
//!   broker by deltas ([`Broker::publish`]); a broker too far behind gets the image instead.
//!   A node that is also a controller reads its own state machine; a broker-only node asks the
//!   controllers over the controller listener.
//! - [`register`] and [`heartbeat_loop`]: the broker registers fenced, catches up with the log
//!   up to its registration, and is unfenced by the heartbeat that shows it. A heartbeat refused
//!   with STALE_BROKER_EPOCH (another incarnation registered) or BROKER_ID_NOT_REGISTERED makes
//!   the broker register again; fencing and unfencing are logged at WARN / INFO and exported as
//!   `fjord_broker_fenced`.

use std::sync::Arc;
use std::time::Duration;

use fjord_metadata::quorum::{
    ControllerClient, HeartbeatSchedule, MetadataChunk, MetadataFeed, SubmitError,
};
use fjord_metadata::{ControllerReply, ControllerRequest, Endpoint};
use fjord_protocol::error::ErrorCode;
use tokio::sync::watch;
use uuid::Uuid;

use crate::broker::{Broker, Publish};
use crate::control::ControlPlane;

/// Where the follower reads committed metadata.
#[derive(Clone)]
pub enum MetadataSource {
    /// This node's own controller state machine.
    Local(MetadataFeed),
    /// The controllers, over the controller listener.
    Remote(ControllerClient),
}

impl MetadataSource {
    async fn fetch(&self, from: i64, max_wait: Duration) -> Result<MetadataChunk, SubmitError> {
        match self {
            MetadataSource::Local(feed) => Ok(feed.fetch(from, max_wait).await),
            MetadataSource::Remote(client) => client.fetch_metadata(from, max_wait).await,
        }
    }
}

/// Follow the committed metadata log until shutdown.
pub async fn follow(
    broker: Arc<Broker>,
    source: MetadataSource,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let from = broker.applied_offset();
        let chunk = tokio::select! {
            _ = shutdown.changed() => return,
            c = source.fetch(from, Duration::from_millis(500)) => c,
        };
        match chunk {
            Ok(MetadataChunk::Records { base, records }) => {
                failures = 0;
                if records.is_empty() {
                    continue;
                }
                if base != from {
                    tracing::warn!(
                        from,
                        base,
                        "metadata chunk does not start where asked; fetching again"
                    );
                    continue;
                }
                let next = base + records.len() as i64;
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    b.publish(Publish::Records(&records), next)
                })
                .await;
            }
            Ok(MetadataChunk::Image { offset, image }) => {
                failures = 0;
                tracing::info!(
                    offset,
                    topics = image.topic_count(),
                    "loading the metadata image"
                );
                let b = broker.clone();
                let _ =
                    tokio::task::spawn_blocking(move || b.publish(Publish::Image(image), offset))
                        .await;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(error = %e, from, "cannot fetch metadata from the controllers");
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// The endpoints this broker registers: its data listener as clients reach it, then its admin
/// listener (HTTP, named [`crate::accounting::http::ADMIN_ENDPOINT`]) so that any broker can
/// ask the others for `/v1/traffic` and `/v1/usage`. Clients never see the admin endpoint:
/// Metadata picks the endpoint of the data listener's name. An admin listener on a wildcard
/// address is reached at the data listener's advertised host.
pub fn endpoints(broker: &Broker) -> Vec<Endpoint> {
    let (host, port) = broker.advertised();
    let mut out = vec![Endpoint {
        name: broker.config.listener.name.clone(),
        host: host.clone(),
        port,
        security_protocol: "PLAINTEXT".into(),
    }];
    if let Ok(admin) = broker.config.admin_listener.parse::<std::net::SocketAddr>() {
        out.push(Endpoint {
            name: crate::accounting::http::ADMIN_ENDPOINT.into(),
            host: if admin.ip().is_unspecified() {
                host
            } else {
                admin.ip().to_string()
            },
            port: admin.port(),
            security_protocol: "HTTP".into(),
        });
    }
    out
}

/// Register with the active controller, retrying until it answers or `shutdown`. Sets and
/// returns the new broker epoch.
pub async fn register(
    broker: &Broker,
    client: &ControllerClient,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<i64> {
    let incarnation_id = Uuid::new_v4();
    let mut attempts = 0u32;
    loop {
        let req = ControllerRequest::RegisterBroker {
            node_id: broker.node_id(),
            incarnation_id,
            rack: broker.config.rack.clone(),
            endpoints: endpoints(broker),
        };
        match client.submit(req, Duration::from_secs(5)).await {
            Ok(c) => {
                if let ControllerReply::Registered { broker_epoch } = c.reply {
                    broker.set_broker_epoch(broker_epoch);
                    broker.metrics.broker_registrations.inc();
                    tracing::info!(node_id = broker.node_id(), broker_epoch, %incarnation_id,
                        "registered with the controller");
                    return Some(broker_epoch);
                }
                tracing::error!(reply = ?c.reply, "unexpected registration reply");
            }
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::warn!(error = %e, "waiting for the controller quorum to register");
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One heartbeat within `timeout`. `Ok(is_fenced)`, or the error.
pub async fn heartbeat(
    broker: &Broker,
    client: &ControllerClient,
    want_fence: bool,
    timeout: Duration,
) -> Result<bool, SubmitError> {
    let reply = client
        .submit(heartbeat_request(broker, want_fence), timeout)
        .await?;
    heartbeat_reply(reply.reply)
}

fn heartbeat_request(broker: &Broker, want_fence: bool) -> ControllerRequest {
    ControllerRequest::Heartbeat {
        node_id: broker.node_id(),
        broker_epoch: broker.broker_epoch(),
        current_metadata_offset: broker.applied_offset() - 1,
        want_fence: want_fence || broker.is_shutting_down(),
    }
}

fn heartbeat_reply(reply: ControllerReply) -> Result<bool, SubmitError> {
    match reply {
        ControllerReply::Heartbeat { is_fenced, .. } => Ok(is_fenced),
        other => Err(SubmitError::Unavailable(format!(
            "unexpected heartbeat reply {other:?}"
        ))),
    }
}

/// Heartbeat every `broker.heartbeat.interval.ms` until shutdown, and soon again after one
/// that failed ([`HeartbeatSchedule`]: 100 ms backoff, doubling, jittered; each voter given
/// a short per-attempt timeout), so a controller failover costs a broker a few hundred
/// milliseconds past the new controller's election rather than whole intervals; register
/// again when the controller no longer knows this incarnation.
pub async fn heartbeat_loop(
    broker: Arc<Broker>,
    client: ControllerClient,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(broker.config.cluster.heartbeat_interval_ms);
    let mut schedule = HeartbeatSchedule::new(interval, broker.node_id() as u64);
    let mut fenced: Option<bool> = None;
    loop {
        let sent = client
            .send_heartbeat(heartbeat_request(&broker, false), &schedule)
            .await
            .and_then(|c| heartbeat_reply(c.reply));
        let pause = match sent {
            Ok(is_fenced) => {
                if fenced != Some(is_fenced) {
                    if is_fenced {
                        tracing::warn!(
                            node_id = broker.node_id(),
                            broker_epoch = broker.broker_epoch(),
                            applied = broker.applied_offset(),
                            "the controller reports this broker fenced"
                        );
                    } else {
                        tracing::info!(
                            node_id = broker.node_id(),
                            broker_epoch = broker.broker_epoch(),
                            "broker unfenced: it may lead partitions"
                        );
                    }
                    broker.metrics.broker_fenced.set(is_fenced as i64);
                    fenced = Some(is_fenced);
                }
                schedule.succeeded()
            }
            Err(SubmitError::Refused { code, message })
                if code == ErrorCode::StaleBrokerEpoch.code()
                    || code == ErrorCode::BrokerIdNotRegistered.code() =>
            {
                tracing::warn!(node_id = broker.node_id(), broker_epoch = broker.broker_epoch(), %message,
                    "the controller refused this broker's epoch; registering again");
                broker.metrics.broker_fenced.set(1);
                fenced = Some(true);
                if register(&broker, &client, &mut shutdown).await.is_none() {
                    return;
                }
                schedule.succeeded();
                continue;
            }
            Err(e) => {
                let pause = schedule.failed();
                if schedule.failures() == 3 {
                    tracing::warn!(error = %e, failures = schedule.failures(),
                        "heartbeats to the controller quorum are failing; retrying");
                } else {
                    tracing::debug!(error = %e, retry_in_ms = pause.as_millis() as u64,
                        "heartbeat failed");
                }
                pause
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Controlled shutdown (Kafka's, done the KRaft way): ask the controller to fence this broker,
/// which moves every leadership it holds to another ISR member in one metadata batch and takes
/// it out of the ISRs, then wait until this broker has applied that batch, so clients are
/// already pointed at the new leaders when its listener closes. A single node has nobody to
/// hand over to and skips this.
pub async fn controlled_shutdown(broker: &Arc<Broker>) {
    let ControlPlane::Quorum { client, .. } = &broker.control else {
        return;
    };
    let started = std::time::Instant::now();
    broker.begin_shutdown();
    let led = broker.led_partitions();
    let deadline = started + Duration::from_secs(10);
    loop {
        match heartbeat(broker, client, true, Duration::from_secs(3)).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "controlled shutdown: cannot reach the controller yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "controlled shutdown: the controller did not answer; stopping anyway");
                return;
            }
        }
    }
    // The fence is committed; wait until it is applied here (leaderships gone).
    while broker.led_partitions() > 0 && std::time::Instant::now() < deadline {
        let next = broker.applied_offset() + 1;
        let _ = broker.wait_applied(next, Duration::from_millis(100)).await;
    }
    let left = broker.led_partitions();
    tracing::info!(
        moved = led - left.min(led),
        still_leading = left,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "controlled shutdown: leaderships moved off this broker"
    );
}
