//! The Kafka-facing broker: listeners, connections, request dispatch, one thin handler per API,
//! and the admin HTTP endpoint.
//!
//! Layout:
//! - [`config`]: broker configuration with Kafka key names (file, env, flags).
//! - [`broker`]: shared state — topics and their partitions, the metadata log, producer ids,
//!   fetch sessions — and the topic lifecycle.
//! - [`partition`]: one hosted partition: its log behind a lock never held across `.await`,
//!   and the fetchers waiting for appends.
//! - [`server`]: the listener and the per-connection read → handle → write pipeline.
//! - `handlers`: one file per Kafka API.
//! - [`groups`]: the group coordinator's runtime around `fjord-group` (appends to
//!   `__consumer_offsets`, parks JoinGroup/SyncGroup, replays offsets at startup).
//! - [`fetch_session`]: KIP-227 incremental fetch sessions, without I/O.
//! - [`metrics`], [`admin`]: Prometheus metrics and the admin HTTP endpoint.
//!
//! Entry point: [`start`] binds the listeners from a [`BrokerConfig`] and returns a
//! [`RunningBroker`] handle.

pub mod admin;
pub mod broker;
pub mod config;
pub mod config_view;
pub mod fetch_session;
pub mod groups;
mod handlers;
pub mod metrics;
pub mod partition;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use broker::Broker;
pub use config::BrokerConfig;

/// A started broker. Dropping it does not stop the broker; call [`RunningBroker::shutdown`].
pub struct RunningBroker {
    kafka_addr: SocketAddr,
    admin_addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// The bound Kafka listener address (the real port when configured with port 0).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }
    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
    /// Stop accepting, finish in-flight requests, flush and close every log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

/// Start a broker with `config`: open the logs, bind the listeners and serve.
pub async fn start(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let kafka_bind = config.listener.socket_addr().map_err(anyhow::Error::msg)?;
    let admin_bind: SocketAddr = config.admin_listener.parse().context("admin.listener")?;
    let broker = Arc::new(
        tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .context("opening logs")??,
    );
    {
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.groups.load(&b))
            .await
            .context("loading groups")?
            .context("loading groups from __consumer_offsets")?;
    }
    let listener = TcpListener::bind(kafka_bind)
        .await
        .with_context(|| format!("cannot listen on {kafka_bind} (listeners)"))?;
    let admin = TcpListener::bind(admin_bind)
        .await
        .with_context(|| format!("cannot listen on {admin_bind} (admin.listener)"))?;
    let kafka_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (host, port) = broker.config.advertised(kafka_addr);
    broker.set_advertised(host.clone(), port);
    tracing::info!(node_id = broker.node_id(), cluster_id = %broker.cluster_id,
        listener = %kafka_addr, advertised = %format!("{host}:{port}"), admin = %admin_addr,
        "broker started");

    let (tx, rx) = watch::channel(false);
    let accept = tokio::spawn(server::accept_loop(broker.clone(), listener, rx.clone()));
    let mut admin_rx = rx.clone();
    let admin_task = tokio::spawn({
        let router = admin::router(broker.clone());
        async move {
            let _ = axum::serve(admin, router)
                .with_graceful_shutdown(async move {
                    let _ = admin_rx.changed().await;
                })
                .await;
        }
    });
    let maintenance = tokio::spawn(maintenance_loop(broker.clone(), rx.clone()));
    let group_timers = tokio::spawn(groups::GroupRuntime::tick_loop(broker.clone(), rx.clone()));
    let b = broker.clone();
    let done = tokio::spawn(async move {
        let _ = accept.await;
        let _ = maintenance.await;
        let _ = group_timers.await;
        let _ = admin_task.await;
        let closing = b.clone();
        let _ = tokio::task::spawn_blocking(move || closing.close_logs()).await;
        tracing::info!("broker stopped; logs flushed and closed");
    });
    Ok(RunningBroker {
        kafka_addr,
        admin_addr,
        broker,
        shutdown: tx,
        done,
    })
}

/// Periodic log maintenance: time-based rolls, retention, compaction and `flush.ms`.
async fn maintenance_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let period = broker
        .config
        .retention_check_interval_ms
        .min(broker.config.flush_scheduler_interval_ms)
        .max(10);
    let mut tick = tokio::time::interval(Duration::from_millis(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = broker::now_ms();
            for p in b.all_partitions() {
                let report = p.with_log_mut(|l| l.maintain(now));
                match report {
                    Some(Err(e)) => tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "log maintenance failed"),
                    Some(Ok(r)) if r.segments_deleted > 0 => tracing::info!(topic = %p.topic, partition = p.index,
                        segments = r.segments_deleted, bytes = r.bytes_deleted, "retention deleted segments"),
                    _ => {}
                }
            }
        })
        .await;
    }
}
