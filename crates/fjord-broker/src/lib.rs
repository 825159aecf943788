//! The Kafka-facing broker: listeners, connections, request dispatch, one thin handler per API,
//! and the admin HTTP endpoint.
//!
//! Layout:
//! - [`config`]: broker configuration with Kafka key names (file, env, flags).
//! - [`broker`]: shared state — the cluster image, topics and their partitions, producer ids,
//!   fetch sessions — and the topic lifecycle, which goes through the controller. One `impl
//!   Broker` per concept: `broker/mod.rs` (the struct, construction, accessors, topic lookup,
//!   producer ids), `publisher` (`Broker::publish`: metadata applied to topics and partitions),
//!   `topic_admin` (submit paths, create/alter/delete topics and partitions), `log_manager`
//!   (opening and closing partition logs, deleting partition directories, `meta.properties`).
//! - [`control`]: where metadata changes are decided: a single node's own controller and
//!   metadata log, or the active controller of a quorum.
//! - [`cluster`]: a broker of a quorum cluster: metadata follower, registration, heartbeats.
//! - [`partition`]: one hosted partition: its replication state (`fjord-replication`), its log
//!   behind a lock never held across `.await`, and the fetchers waiting for appends.
//! - [`disk`]: metrics of the disk I/O threads (`num.io.threads`) and of every fsync.
//! - [`replica_manager`]: what Produce and Fetch ask of the partitions hosted here; their
//!   handlers only translate. `produce`: append to a partition led here — leadership and
//!   min-ISR checks, the append on the partition's disk I/O thread, acks=all waits. `fetch`:
//!   leader epochs, follower progress and ISR-expand proposals, the KIP-903 broker-epoch
//!   check, KIP-392 preferred read replicas, reads up to the high watermark or log end within
//!   the byte budgets, the reassignment throttle, and the long poll for `min_bytes` (fetches
//!   parked on the partitions, woken by appends).
//! - [`replica_fetcher`]: follower fetchers, one task per leader (truncate, then fetch).
//! - [`replication`]: ISR proposals to the controller, lag checks, replication gauges and
//!   high-watermark checkpoints.
//! - [`throttle`]: reassignment throttles (Kafka's `*.replication.throttled.rate` and
//!   `*.replication.throttled.replicas`), pure token buckets applied by the replica manager's
//!   fetch and the replica fetchers to replicas being added only.
//! - [`server`]: the listener and the per-connection read → handle → write pipeline.
//! - [`conn_limits`], [`memory_pool`]: what the listener enforces — `max.connections`,
//!   `max.connections.per.ip` (+ overrides) and `queued.max.request.bytes` — without I/O.
//! - `handlers`: one file per Kafka API.
//! - [`authz`]: the ACL checks of every API (`authorizer.class.name`), audit log and metric.
//! - [`groups`]: the group coordinator's runtime around `fjord-group` (appends to
//!   `__consumer_offsets`, parks JoinGroup/SyncGroup, replays offsets at startup).
//! - [`txn`]: the transaction coordinator's runtime around `fjord-txn` (appends to
//!   `__transaction_state`, sends transaction markers, replays the ids of the partitions led
//!   here).
//! - [`fetch_session`]: KIP-227 incremental fetch sessions, without I/O.
//! - [`metrics`], [`admin`]: Prometheus metrics and the admin HTTP endpoint.
//! - [`accounting`]: traffic by client rack (cross-AZ) and usage per topic and client id.
//! - [`skew`]: bytes-in rates per partition, sampled top keys, skewed-partition warnings.
//!
//! Entry point: [`start`] binds the listeners from a [`BrokerConfig`] and returns a
//! [`RunningBroker`] handle.

pub mod accounting;
pub mod admin;
pub mod authz;
pub mod balancer;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod config_view;
pub mod conn_limits;
pub mod control;
pub mod disk;
pub mod fetch_session;
pub mod group_lag;
pub mod groups;
mod handlers;
pub mod log_ends;
pub mod maintenance;
pub mod memory_pool;
pub mod metadata_disk;
pub mod metrics;
pub mod partition;
pub mod quota;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replication;
pub mod sasl;
pub mod server;
pub mod skew;
mod stream;
#[cfg(test)]
mod test_batches;
pub mod throttle;
pub mod tls;
pub mod topic_activity;
pub mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fjord_protocol::clock::now_ms;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use broker::Broker;
pub use config::BrokerConfig;

/// A started broker. Dropping it does not stop the broker; call [`RunningBroker::shutdown`].
pub struct RunningBroker {
    /// `None` on a controller-only node.
    kafka_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    broker: Option<Arc<Broker>>,
    /// This node's controller, when it is a voter.
    controller: Option<Arc<fjord_metadata::quorum::ControllerService>>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// The bound Kafka listener address (the real port when configured with port 0).
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }
    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The broker (`None` on a controller-only node).
    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.broker.as_ref()
    }
    /// Resolves, with why, if this node's controller stops on its own (its Raft core quit on
    /// an error); never on a node without a controller. The node cannot rejoin the quorum
    /// without a restart.
    pub async fn controller_stopped(&self) -> String {
        match &self.controller {
            Some(c) => c.stopped().await,
            None => std::future::pending().await,
        }
    }
    /// Controlled shutdown: in a cluster, first move this broker's leaderships away (and wait
    /// for that); then stop accepting, finish in-flight requests, flush and close every log.
    pub async fn shutdown(self) {
        if let Some(b) = &self.broker {
            cluster::controlled_shutdown(b).await;
            // What was used since the last activity report, while the controller still answers.
            topic_activity::flush(b).await;
        }
        self.stop().await;
    }

    /// Stop without the controlled shutdown (for a node that must go at once, e.g. its
    /// controller stopped): finish in-flight requests, flush and close every log. Leaderships
    /// move when the controller fences this broker.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

/// Start a broker with `config`: open the logs, bind the listeners and serve. Without
/// `controller.quorum.voters` the node is a single-node cluster, its own controller; with them it
/// starts its controller (when it has the role), registers with the active controller and
/// follows the metadata log before it serves clients.
pub async fn start(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    if !config.cluster.roles.broker {
        return start_controller_only(config).await;
    }
    let kafka_bind = config.listener.socket_addr().map_err(anyhow::Error::msg)?;
    let admin_bind: SocketAddr = config.admin_listener.parse().context("admin.listener")?;
    let listener = TcpListener::bind(kafka_bind)
        .await
        .with_context(|| format!("cannot listen on {kafka_bind} (listeners)"))?;
    let admin = TcpListener::bind(admin_bind)
        .await
        .with_context(|| format!("cannot listen on {admin_bind} (admin.listener)"))?;
    let kafka_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    // The bound admin address (port 0 resolved) is registered for peers' `/v1/traffic`.
    let mut config = config;
    config.admin_listener = admin_addr.to_string();
    let (host, port) = config.advertised(kafka_addr);
    let (tx, rx) = watch::channel(false);
    let mut cluster_tasks = Vec::new();
    let mut service: Option<Arc<fjord_metadata::quorum::ControllerService>> = None;
    let broker = if config.cluster.is_quorum() {
        let (broker, svc, tasks) = start_quorum_member(config, &host, port, rx.clone()).await?;
        service = svc;
        cluster_tasks = tasks;
        broker
    } else {
        let broker = tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .context("opening logs")??;
        broker.set_advertised(host.clone(), port);
        broker
    };
    {
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.groups.load(&b))
            .await
            .context("loading groups")?
            .context("loading groups from __consumer_offsets")?;
    }
    tracing::info!(node_id = broker.node_id(), cluster_id = %broker.cluster_id,
        broker_epoch = broker.broker_epoch(), listener = %kafka_addr,
        advertised = %format!("{host}:{port}"), admin = %admin_addr, "broker started");
    broker
        .config
        .sasl
        .log_startup_warnings(&broker.config.listener.name);

    let tls = match broker.config.tls.clone() {
        Some(settings) => Some(Arc::new(tls_listener(settings).await?)),
        None => None,
    };
    let accept = tokio::spawn(server::accept_loop(
        broker.clone(),
        listener,
        tls,
        rx.clone(),
    ));
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
    let usage_roll = tokio::spawn(accounting::roll_loop(broker.clone(), rx.clone()));
    let skew_check = tokio::spawn(skew::check_loop(broker.clone(), rx.clone()));
    broker.fetchers.start(broker.clone(), rx.clone());
    let upkeep = tokio::spawn(replication::upkeep_loop(broker.clone(), rx.clone()));
    let group_timers = tokio::spawn(groups::GroupRuntime::tick_loop(broker.clone(), rx.clone()));
    let txn_timers = tokio::spawn(txn::TxnRuntime::tick_loop(broker.clone(), rx.clone()));
    let activity_flush = tokio::spawn(topic_activity::flush_loop(broker.clone(), rx.clone()));
    let lag_ends = tokio::spawn(log_ends::poll_loop(broker.clone(), rx.clone()));
    let b = broker.clone();
    let service_for_shutdown = service.clone();
    let done = tokio::spawn(async move {
        let _ = accept.await;
        let _ = upkeep.await;
        for t in cluster_tasks {
            let _ = t.await;
        }
        let _ = maintenance.await;
        let _ = usage_roll.await;
        let _ = skew_check.await;
        let _ = group_timers.await;
        let _ = txn_timers.await;
        let _ = activity_flush.await;
        let _ = lag_ends.await;
        let _ = admin_task.await;
        if let Some(s) = service_for_shutdown {
            s.shutdown().await;
        }
        let closing = b.clone();
        let _ = tokio::task::spawn_blocking(move || closing.close_logs()).await;
        tracing::info!("broker stopped; logs flushed and closed");
    });
    Ok(RunningBroker {
        kafka_addr: Some(kafka_addr),
        admin_addr,
        broker: Some(broker),
        controller: service,
        shutdown: tx,
        done,
    })
}

/// The client side of the controller listener's TLS, for this node's controller client.
fn controller_client_tls(config: &BrokerConfig) -> Option<Arc<rustls::ClientConfig>> {
    config
        .controller_tls
        .as_ref()
        .map(|t| t.client.config().clone())
}

/// Load a TLS listener's stores off the async workers (file reads).
async fn tls_listener(settings: tls::TlsSettings) -> anyhow::Result<tls::TlsListener> {
    tokio::task::spawn_blocking(move || tls::TlsListener::new(settings))
        .await
        .context("loading the TLS stores")?
        .map_err(anyhow::Error::msg)
}

/// Both sides of the controller listener's TLS, for this node's controller.
async fn quorum_tls(
    config: &BrokerConfig,
) -> anyhow::Result<Option<fjord_metadata::quorum::QuorumTls>> {
    let Some(t) = &config.controller_tls else {
        return Ok(None);
    };
    let settings = t
        .server
        .clone()
        .context("the controller listener's TLS settings")?;
    let listener = Arc::new(tls_listener(settings).await?);
    // The controller listener's certificates are reloaded like the data listener's, for the
    // life of the process (a controller stops with it).
    let name = config
        .cluster
        .controller_listener
        .as_ref()
        .map_or_else(|| "CONTROLLER".to_string(), |l| l.name.clone());
    tokio::spawn(tls::reload_loop(
        listener.clone(),
        name,
        None,
        std::time::Duration::from_secs(10),
    ));
    Ok(Some(fjord_metadata::quorum::QuorumTls {
        server: Arc::new(move || listener.current()),
        client: t.client.config().clone(),
    }))
}

/// `process.roles=controller`: a voter of the controller quorum with no Kafka listener, only
/// the controller listener and the admin endpoint.
async fn start_controller_only(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let admin_bind: SocketAddr = config.admin_listener.parse().context("admin.listener")?;
    let admin = TcpListener::bind(admin_bind)
        .await
        .with_context(|| format!("cannot listen on {admin_bind} (admin.listener)"))?;
    let admin_addr = admin.local_addr()?;
    let service = start_controller(&config).await?;
    let client = fjord_metadata::quorum::ControllerClient::with_tls(
        config.cluster.voters.clone(),
        controller_client_tls(&config),
    );
    tracing::info!(node_id = config.node_id, admin = %admin_addr, "controller-only node started");
    let (tx, rx) = watch::channel(false);
    let mut admin_rx = rx.clone();
    let router = admin::controller_router(service.clone(), client);
    let controller = Some(service.clone());
    let done = tokio::spawn(async move {
        let _ = axum::serve(admin, router)
            .with_graceful_shutdown(async move {
                let _ = admin_rx.changed().await;
            })
            .await;
        service.shutdown().await;
        tracing::info!("controller stopped");
    });
    Ok(RunningBroker {
        kafka_addr: None,
        admin_addr,
        broker: None,
        controller,
        shutdown: tx,
        done,
    })
}

/// Bind the controller listener and start this node's controller of the quorum.
async fn start_controller(
    config: &BrokerConfig,
) -> anyhow::Result<Arc<fjord_metadata::quorum::ControllerService>> {
    use fjord_metadata::quorum::{raft_config, ControllerService, ControllerServiceConfig};
    let cluster = &config.cluster;
    let l = cluster
        .controller_listener
        .as_ref()
        .context("a controller needs a controller listener")?;
    let bind = l.socket_addr().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (controller listener)"))?;
    let svc = ControllerService::start(
        ControllerServiceConfig {
            node_id: config.node_id as u64,
            dir: config.log_dir.join(broker::QUORUM_DIR),
            voters: cluster.voters.clone(),
            controller: fjord_metadata::ControllerConfig {
                session_timeout_ms: cluster.session_timeout_ms as i64,
                // The broker-level default; a topic's own setting overrides it.
                unclean_leader_election_enable: config.log.unclean_leader_election_enable,
            },
            raft: raft_config(
                (cluster.election_timeout_ms / 10).max(10),
                cluster.election_timeout_ms,
                10_000,
            ),
            leader_rebalance_interval: cluster
                .leader_rebalance_interval_ms
                .map(Duration::from_millis),
            window_records: 100_000,
            image_part_bytes: fjord_metadata::quorum::feed::MAX_PART_BYTES,
            log_bounds: fjord_metadata::quorum::LogBounds {
                snapshot_every_bytes: cluster.snapshot_max_log_bytes,
                retain_bytes: cluster.metadata_retention_bytes,
            },
            balancer: cluster.balancer,
            tls: quorum_tls(config).await?,
        },
        listener,
    )
    .await
    .context("starting the controller")?;
    tracing::info!(node_id = config.node_id, controller_listener = %bind, voters = cluster.voters.len(),
        "controller started");
    Ok(svc)
}

type QuorumMember = (
    Arc<Broker>,
    Option<Arc<fjord_metadata::quorum::ControllerService>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Start this node's controller (if it is a voter), follow the metadata log, register, catch up
/// to the registration and get unfenced.
async fn start_quorum_member(
    config: BrokerConfig,
    host: &str,
    port: u16,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<QuorumMember> {
    use fjord_metadata::quorum::ControllerClient;
    let cluster = config.cluster.clone();
    let service = if cluster.roles.controller {
        Some(start_controller(&config).await?)
    } else {
        None
    };
    let client = ControllerClient::with_tls(cluster.voters.clone(), controller_client_tls(&config));
    let source = match &service {
        Some(s) => cluster::MetadataSource::Local(s.feed()),
        None => cluster::MetadataSource::Remote(client.clone()),
    };
    let control = control::ControlPlane::Quorum {
        client: client.clone(),
        service: service.clone(),
    };
    let broker = Arc::new(
        tokio::task::spawn_blocking(move || Broker::open_quorum(config, control))
            .await
            .context("opening the data directory")??,
    );
    broker.set_advertised(host.to_string(), port);
    if let Some(s) = &service {
        s.set_balancer_load(balancer::load_source(Arc::downgrade(&broker)));
    }
    let follower = tokio::spawn(cluster::follow(broker.clone(), source, shutdown.clone()));
    let mut rx = shutdown.clone();
    let Some(epoch) = cluster::register(&broker, &client, &mut rx).await else {
        anyhow::bail!("shut down before the controller quorum answered");
    };
    // Caught up once the registration record itself has been applied here.
    loop {
        if broker
            .wait_applied(epoch + 1, Duration::from_secs(5))
            .await
            .is_ok()
        {
            break;
        }
        tracing::warn!(
            broker_epoch = epoch,
            applied = broker.applied_offset(),
            "catching up with the metadata log"
        );
    }
    // Logs of replicas that were moved away while this broker was down.
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.remove_stray_partition_dirs()).await;
    match cluster::heartbeat(&broker, &client, false, Duration::from_secs(5)).await {
        Ok(fenced) => broker.metrics.broker_fenced.set(fenced as i64),
        Err(e) => tracing::warn!(error = %e, "first heartbeat failed"),
    }
    let heartbeats = tokio::spawn(cluster::heartbeat_loop(
        broker.clone(),
        client,
        shutdown.clone(),
    ));
    Ok((broker, service, vec![follower, heartbeats]))
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
            let now = now_ms();
            for p in b.all_partitions() {
                // Compaction's reads and writes run without the partition's lock.
                let r = match p.maintain(now) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "log maintenance failed");
                        continue;
                    }
                    None => continue,
                };
                if r.segments_deleted > 0 {
                    tracing::info!(topic = %p.topic, partition = p.index,
                        segments = r.segments_deleted, bytes = r.bytes_deleted, "retention deleted segments");
                }
                let passes = &b.metrics.log_compaction_passes;
                if r.cleaned.is_some() {
                    passes.with_label_values(&["completed"]).inc();
                } else if r.compaction_stale {
                    passes.with_label_values(&["stale"]).inc();
                }
            }
        })
        .await;
    }
}
