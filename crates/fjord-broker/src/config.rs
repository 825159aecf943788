//! Broker configuration with Kafka's key names.
//!
//! Sources, in rising precedence: a TOML file (`--config`), `FJORD_*` environment variables
//! (`FJORD_LOG_RETENTION_MS` is `log.retention.ms`), and flags (`--set key=value` and the named
//! flags, which the CLI turns into the same pairs). In the TOML file a key may be written dotted
//! (nested tables) or quoted; both flatten to the same dotted key. Broker-level log defaults
//! (`log.*`, `message.max.bytes`, ...) are parsed by `fjord_storage::config`, which owns them.
//! A bad value or unknown key fails startup with one line naming the key, the value and what is
//! allowed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use fjord_storage::LogConfig;

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    File,
    Env,
    Flag,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "command line",
        }
    }
}

use fjord_metadata::balancer::continuous::{BalancerConfig, CONFIG_KEYS as BALANCER_KEYS};

/// Keys the broker itself owns (log keys are owned by fjord-storage).
const BROKER_KEYS: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("listeners", "PLAINTEXT://127.0.0.1:9092"),
    ("advertised.listeners", ""),
    ("admin.listener", "127.0.0.1:9644"),
    ("log.dirs", "./fjord-data"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("delete.topic.enable", "true"),
    ("socket.request.max.bytes", "104857600"),
    // Connection and request-memory limits (Kafka's names and defaults; see `LimitsConfig`).
    ("max.connections", "2147483647"),
    ("max.connections.per.ip", "2147483647"),
    ("max.connections.per.ip.overrides", ""),
    ("connections.max.idle.ms", "600000"),
    ("queued.max.request.bytes", "-1"),
    ("broker.rack", ""),
    // Authorization (Kafka's keys; `crate::authz`): any non-empty authorizer.class.name turns
    // the ACL authorizer on.
    ("authorizer.class.name", ""),
    ("super.users", ""),
    ("allow.everyone.if.no.acl.found", "false"),
    // Traffic accounting by client rack and usage per topic and client (docs/cross-az.md).
    ("traffic.accounting.enable", "true"),
    ("client.rack.cidrs", ""),
    // Partition skew: bytes-in rates per partition and sampled top keys (docs/operations.md).
    ("skew.sketch.enable", "true"),
    ("skew.sample.rate", "16"),
    ("skew.sketch.counters", "16"),
    ("skew.warn.ratio", "2.0"),
    ("skew.warn.min.bytes.per.sec", "102400"),
    ("skew.check.interval.ms", "30000"),
    ("skew.window.ms", "300000"),
    // Cluster (KRaft key names). No voters: a single node that is its own controller.
    ("process.roles", "broker,controller"),
    ("controller.listener.names", "CONTROLLER"),
    ("controller.quorum.voters", ""),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("broker.session.timeout.ms", "9000"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    // Kafka's name and default (20 MiB): a controller snapshots once this much metadata log
    // has been applied since its last snapshot (as well as every 10,000 Raft entries).
    (
        "metadata.log.max.record.bytes.between.snapshots",
        "20971520",
    ),
    // Kafka's name and default (100 MiB): the metadata log kept behind the last snapshot is
    // cut to this many bytes (-1: no byte limit).
    ("metadata.max.retention.bytes", "104857600"),
    // The continuous balancer (docs/operations.md); its crate owns the defaults.
    BALANCER_KEYS[0],
    BALANCER_KEYS[1],
    BALANCER_KEYS[2],
    BALANCER_KEYS[3],
    BALANCER_KEYS[4],
    BALANCER_KEYS[5],
    ("offsets.topic.replication.factor", "3"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.flush.scheduler.interval.ms", "9223372036854775807"),
    ("max.incremental.fetch.session.cache.slots", "1000"),
    // Dedicated disk I/O threads: appends, fsyncs, rolls, truncation (Kafka's name; its
    // request-handler pool, which is where Kafka's disk writes happen).
    ("num.io.threads", "8"),
    // Replication (Kafka's names and defaults; the backoff is lower than Kafka's 1 s so a
    // follower finds a new leader quickly).
    ("replica.lag.time.max.ms", "30000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.backoff.ms", "200"),
    ("replica.high.watermark.checkpoint.interval.ms", "5000"),
    ("replica.selector.class", ""),
    // Group coordinator.
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.max.size", "2147483647"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offset.metadata.max.bytes", "4096"),
    ("group.consumer.heartbeat.interval.ms", "5000"),
    ("group.consumer.session.timeout.ms", "45000"),
    ("group.consumer.assignors", "uniform,range"),
    ("group.consumer.max.size", "2147483647"),
    // Transaction coordinator (Kafka's names and defaults; `crate::txn`).
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("transaction.state.log.segment.bytes", "104857600"),
    ("transaction.max.timeout.ms", "900000"),
    ("transactional.id.expiration.ms", "604800000"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
    ),
    (
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
    ),
    // Consumer lag evaluation (Fjord's keys; Burrow's `intervals` and `min-distance`).
    ("group.lag.window.intervals", "10"),
    ("group.lag.min.distance.ms", "1000"),
    // Unused topics and topic GC (Fjord's keys; `crate::topic_activity`).
    ("topic.activity.flush.ms", "60000"),
    ("quota.window.num", "11"),
    ("quota.window.size.seconds", "1"),
    ("topic.gc.grace.ms", "86400000"),
    ("topic.gc.exclude", ""),
    ("topic.gc.reject.produce", "false"),
];

/// A listener such as `PLAINTEXT://127.0.0.1:9092`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        (host, self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve listener host {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("listener host {host:?} resolves to no address"))
    }
}

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub roles: Roles,
    /// `controller.quorum.voters`: node id → `host:port` of its controller listener. Empty: a
    /// single node that is its own controller (the default).
    pub voters: BTreeMap<u64, String>,
    /// The controller listener (KIP-291) when this node is a controller of a quorum.
    pub controller_listener: Option<Listener>,
    /// `controller.quorum.election.timeout.ms`: a voter that hears nothing from the leader for
    /// this long (to twice this long) stands for election; Raft heartbeats go at a tenth of it.
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// `leader.imbalance.check.interval.seconds` when `auto.leader.rebalance.enable`.
    pub leader_rebalance_interval_ms: Option<u64>,
    /// `offsets.topic.replication.factor` (capped by the live brokers when the topic is made).
    pub offsets_topic_replication_factor: u16,
    /// The continuous balancer (`balancer.*`), run by the active controller.
    pub balancer: BalancerConfig,
    /// `metadata.log.max.record.bytes.between.snapshots`: a controller snapshots its state
    /// once this many bytes of Raft log were applied since the last snapshot.
    pub snapshot_max_log_bytes: u64,
    /// `metadata.max.retention.bytes`: the Raft log kept behind the last snapshot is cut to
    /// this many bytes (`None`: -1, no byte limit).
    pub metadata_retention_bytes: Option<u64>,
}

impl ClusterConfig {
    /// A cluster with a Raft quorum (not the single-node default).
    pub fn is_quorum(&self) -> bool {
        !self.voters.is_empty()
    }
}

/// `replica.*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: an ISR member not caught up for this long leaves the ISR.
    pub lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader for data.
    pub fetch_wait_max_ms: i32,
    pub fetch_min_bytes: i32,
    /// `replica.fetch.max.bytes`: per partition.
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per fetch.
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: after a fetch error or a lost connection.
    pub fetch_backoff_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub high_watermark_checkpoint_interval_ms: u64,
    /// `replica.selector.class` is Kafka's `RackAwareReplicaSelector`: consumers that send
    /// `client.rack` are pointed at an in-sync replica in their rack (KIP-392).
    pub rack_aware_selector: bool,
}

/// Kafka's rack-aware selector, the one `replica.selector.class` we implement.
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
/// Kafka's default: always the leader.
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";

/// Limits that keep one client from taking the broker's connections or memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `max.connections`, `max.connections.per.ip` and `max.connections.per.ip.overrides`
    /// (host names resolved at startup, as Kafka resolves them).
    pub connections: crate::conn_limits::ConnectionLimits,
    /// `connections.max.idle.ms`: a connection that neither completes a request nor is sent a
    /// response for this long is closed — also when it is in the middle of sending a request
    /// (slowloris). `None` (a negative value, as in Kafka) disables it.
    pub connections_max_idle: Option<std::time::Duration>,
    /// `queued.max.request.bytes` as configured (`<= 0`: Kafka's "no pool").
    pub queued_max_request_bytes: i64,
    /// The memory pool's size: `queued.max.request.bytes`, or Fjord's implicit bound when it is
    /// not positive (see `memory_pool::pool_bytes`).
    pub memory_pool_bytes: usize,
}

/// The validated broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The data (Kafka) listener.
    pub listener: Listener,
    pub advertised_listener: Option<Listener>,
    pub cluster: ClusterConfig,
    pub admin_listener: String,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub socket_request_max_bytes: usize,
    /// Connection limits, the idle timeout and the request memory pool.
    pub limits: LimitsConfig,
    pub rack: Option<String>,
    /// The data listener's security protocol and SASL settings (`crate::sasl`).
    pub sasl: crate::sasl::SaslConfig,
    /// The data listener's TLS settings (`crate::tls`) when its protocol is SSL or SASL_SSL;
    /// checked at startup by loading the stores once.
    pub tls: Option<crate::tls::TlsSettings>,
    /// How this broker connects to other brokers' TLS listeners (replication, transaction
    /// markers): the listener's truststore verifies them and its keystore is the client
    /// certificate.
    pub inter_broker_tls: Option<fjord_client::TlsClient>,
    /// TLS of the controller listener (`crate::tls::controller_tls`).
    pub controller_tls: Option<crate::tls::ControllerTls>,
    /// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found`: `None` when
    /// no authorizer is configured (everything is allowed).
    pub authorizer: Option<fjord_security::authorizer::AuthorizerConfig>,
    /// `traffic.accounting.enable`, `client.rack.cidrs`.
    pub accounting: crate::accounting::AccountingConfig,
    /// `skew.*`: partition skew detection.
    pub skew: crate::skew::SkewConfig,
    pub retention_check_interval_ms: u64,
    pub flush_scheduler_interval_ms: u64,
    pub fetch_session_cache_slots: usize,
    /// `num.io.threads`: threads that run partition writes and fsyncs.
    pub io_threads: usize,
    /// Follower fetching, ISR and follower-fetching settings (replica.*).
    pub replication: ReplicationConfig,
    /// Group coordinator settings (group.*, offsets.*).
    pub group: fjord_group::Config,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval_ms: u64,
    /// Transaction coordinator settings (transaction.*, transactional.id.expiration.ms).
    pub txn: TxnConfig,
    /// `topic.activity.flush.ms`, `topic.gc.*`.
    pub topic_gc: crate::topic_activity::TopicGcConfig,
    /// `quota.window.num`, `quota.window.size.seconds`: client quota sampling.
    pub quota: crate::quota::QuotaConfig,
    /// Broker-level defaults for every topic's log.
    pub log: LogConfig,
    /// Every key that was set explicitly (any source), for DescribeConfigs.
    pub explicit: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::from_props(BTreeMap::new()).expect("defaults are valid")
    }
}

impl BrokerConfig {
    /// Load from an optional TOML file, `FJORD_*` env vars and `key=value` overrides (flags),
    /// in rising precedence.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<BrokerConfig, String> {
        let mut props: BTreeMap<String, (String, Source)> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            for (k, v) in
                flatten_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            {
                props.insert(k, (v, Source::File));
            }
        }
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("FJORD_") {
                let key = rest.to_ascii_lowercase().replace('_', ".");
                if is_known_key(&key) {
                    props.insert(key, (v, Source::Env));
                } else {
                    tracing::debug!(var = %k, "ignoring environment variable: not a config key");
                }
            }
        }
        for (k, v) in overrides {
            props.insert(k.clone(), (v.clone(), Source::Flag));
        }
        for (k, (_, src)) in &props {
            if !is_known_key(k) {
                return Err(format!(
                    "unknown configuration key \"{k}\" (from {})",
                    src.describe()
                ));
            }
        }
        Self::from_props(props.into_iter().map(|(k, (v, _))| (k, v)).collect())
    }

    /// Build from already-merged properties (Kafka key → value).
    pub fn from_props(props: BTreeMap<String, String>) -> Result<BrokerConfig, String> {
        let mut props = props;
        if let Some(v) = props.remove("log.dir") {
            props.entry("log.dirs".into()).or_insert(v);
        }
        let get = |key: &str| -> String {
            props.get(key).cloned().unwrap_or_else(|| {
                BROKER_KEYS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default()
            })
        };
        let node_id: i32 = parse_int(&get("node.id"), "node.id", 0, i32::MAX as i64)? as i32;
        let controller_names: Vec<String> = get("controller.listener.names")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let listeners = parse_listeners(&get("listeners"), "listeners")?;
        let (controller_listeners, data_listeners): (Vec<Listener>, Vec<Listener>) = listeners
            .into_iter()
            .partition(|l| controller_names.contains(&l.name));
        let cluster = cluster_config(&get, node_id, controller_listeners)?;
        let listener = match (data_listeners.len(), cluster.roles.broker) {
            (1, _) => data_listeners.into_iter().next().expect("one"),
            (0, false) => Listener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 0,
            },
            _ => {
                return Err(format!(
                    "invalid value \"{}\" for listeners: a broker needs exactly one data listener such as PLAINTEXT://127.0.0.1:9092 (controller listeners, named by controller.listener.names, come in addition)",
                    get("listeners")
                ))
            }
        };
        let sasl = crate::sasl::SaslConfig::parse(&get, &listener.name)?;
        let tls = if sasl.protocol.tls() {
            let lookup = |k: &str| Some(get(k)).filter(|v| !v.is_empty());
            let settings = crate::tls::TlsSettings::from_config(&listener.name, &lookup)?;
            settings.load()?;
            Some(settings)
        } else {
            None
        };
        let controller_tls = crate::tls::controller_tls(
            &|k: &str| Some(get(k)).filter(|v| !v.is_empty()),
            &controller_names,
            cluster.roles.controller && cluster.is_quorum(),
        )?;
        let inter_broker_tls = match &tls {
            Some(_) => Some(crate::tls::inter_broker_client(
                &|k: &str| Some(get(k)).filter(|v| !v.is_empty()),
                &listener.name,
                cluster.is_quorum(),
            )?),
            None => None,
        };
        let advertised = get("advertised.listeners");
        let advertised_listener = if advertised.is_empty() {
            None
        } else {
            parse_listeners(&advertised, "advertised.listeners")?
                .into_iter()
                .find(|l| l.name == listener.name)
        };
        let admin_listener = get("admin.listener");
        admin_listener.parse::<SocketAddr>().map_err(|_| {
            format!(
                "invalid value \"{admin_listener}\" for admin.listener: expected host:port with an IP address, e.g. 127.0.0.1:9644"
            )
        })?;
        let log_dirs = get("log.dirs");
        let dirs: Vec<&str> = log_dirs.split(',').map(str::trim).collect();
        if dirs.len() != 1 || dirs[0].is_empty() {
            return Err(format!(
                "invalid value \"{log_dirs}\" for log.dirs: expected exactly one directory (JBOD is not supported yet)"
            ));
        }
        let log = {
            let log_props: BTreeMap<String, String> = props
                .iter()
                .filter(|(k, _)| fjord_storage::config::is_broker_log_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            LogConfig::broker_defaults(&log_props).map_err(|e| e.to_string())?
        };
        let rack = get("broker.rack");
        let socket_request_max_bytes = parse_int(
            &get("socket.request.max.bytes"),
            "socket.request.max.bytes",
            1024,
            i32::MAX as i64,
        )? as usize;
        let limits = limits_config(&get, socket_request_max_bytes)?;
        let accounting = crate::accounting::AccountingConfig::parse(
            &get("traffic.accounting.enable"),
            &get("client.rack.cidrs"),
        )?;
        Ok(BrokerConfig {
            node_id,
            listener,
            advertised_listener,
            cluster,
            admin_listener,
            log_dir: PathBuf::from(dirs[0]),
            num_partitions: parse_int(&get("num.partitions"), "num.partitions", 1, 1_000_000)?
                as i32,
            default_replication_factor: parse_int(
                &get("default.replication.factor"),
                "default.replication.factor",
                1,
                i16::MAX as i64,
            )? as i16,
            auto_create_topics_enable: parse_bool(
                &get("auto.create.topics.enable"),
                "auto.create.topics.enable",
            )?,
            delete_topic_enable: parse_bool(&get("delete.topic.enable"), "delete.topic.enable")?,
            socket_request_max_bytes,
            limits,
            rack: (!rack.is_empty()).then_some(rack),
            sasl,
            tls,
            inter_broker_tls,
            controller_tls,
            authorizer: crate::authz::config(&get)?,
            accounting,
            skew: crate::skew::SkewConfig::parse(&get)?,
            retention_check_interval_ms: parse_int(
                &get("log.retention.check.interval.ms"),
                "log.retention.check.interval.ms",
                1,
                i64::MAX,
            )? as u64,
            flush_scheduler_interval_ms: parse_int(
                &get("log.flush.scheduler.interval.ms"),
                "log.flush.scheduler.interval.ms",
                1,
                i64::MAX,
            )? as u64,
            replication: replication_config(&get)?,
            io_threads: parse_int(&get("num.io.threads"), "num.io.threads", 1, 256)? as usize,
            fetch_session_cache_slots: parse_int(
                &get("max.incremental.fetch.session.cache.slots"),
                "max.incremental.fetch.session.cache.slots",
                0,
                i32::MAX as i64,
            )? as usize,
            group: group_config(&get)?,
            offsets_retention_check_interval_ms: parse_int(
                &get("offsets.retention.check.interval.ms"),
                "offsets.retention.check.interval.ms",
                1,
                i64::MAX,
            )? as u64,
            txn: txn_config(&get)?,
            topic_gc: crate::topic_activity::TopicGcConfig::parse(&get)?,
            quota: crate::quota::QuotaConfig::parse(&get)?,
            log,
            explicit: props,
        })
    }

    /// The listener clients should connect to, with the port actually bound.
    pub fn advertised(&self, bound: SocketAddr) -> (String, u16) {
        if let Some(a) = &self.advertised_listener {
            let port = if a.port == 0 { bound.port() } else { a.port };
            return (a.host.clone(), port);
        }
        let host = match bound.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) => format!("{ip}"),
            IpAddr::V4(ip) => format!("{ip}"),
        };
        (host, bound.port())
    }

    /// The effective value of every broker-owned key (explicit or default), for DescribeConfigs.
    pub fn broker_entries(&self) -> Vec<(String, String, bool)> {
        BROKER_KEYS
            .iter()
            .map(|(k, d)| match self.explicit.get(*k) {
                Some(v) => (k.to_string(), v.clone(), false),
                None => (k.to_string(), d.to_string(), true),
            })
            .collect()
    }
}

/// The connection and memory limits, checked against each other as Kafka checks them.
fn limits_config(
    get: &dyn Fn(&str) -> String,
    socket_request_max_bytes: usize,
) -> Result<LimitsConfig, String> {
    let int = |key: &str, min: i64, max: i64| parse_int(&get(key), key, min, max);
    let max_connections = int("max.connections", 0, i32::MAX as i64)? as usize;
    let max_connections_per_ip = int("max.connections.per.ip", 0, i32::MAX as i64)? as usize;
    let overrides_value = get("max.connections.per.ip.overrides");
    let bad_override = |why: String| {
        format!("invalid value \"{overrides_value}\" for max.connections.per.ip.overrides: {why}")
    };
    let mut overrides = BTreeMap::new();
    for (host, count) in
        crate::conn_limits::parse_overrides(&overrides_value).map_err(bad_override)?
    {
        let addrs = (host.as_str(), 0)
            .to_socket_addrs()
            .map_err(|e| bad_override(format!("cannot resolve {host:?}: {e}")))?;
        let mut any = false;
        for a in addrs {
            overrides.insert(a.ip().to_canonical(), count);
            any = true;
        }
        if !any {
            return Err(bad_override(format!("{host:?} resolves to no address")));
        }
    }
    if max_connections_per_ip == 0 && overrides.is_empty() {
        return Err(
            "max.connections.per.ip can be set to zero only if max.connections.per.ip.overrides is set"
                .into(),
        );
    }
    let idle_ms = int("connections.max.idle.ms", i64::MIN, i64::MAX)?;
    let queued_max_request_bytes = int("queued.max.request.bytes", i64::MIN, i64::MAX)?;
    if queued_max_request_bytes > 0
        && (queued_max_request_bytes as u64) < socket_request_max_bytes as u64
    {
        return Err(format!(
            "queued.max.request.bytes ({queued_max_request_bytes}) must be larger or equal to socket.request.max.bytes ({socket_request_max_bytes})"
        ));
    }
    Ok(LimitsConfig {
        connections: crate::conn_limits::ConnectionLimits {
            max_connections,
            max_connections_per_ip,
            overrides,
        },
        connections_max_idle: (idle_ms >= 0)
            .then(|| std::time::Duration::from_millis(idle_ms as u64)),
        queued_max_request_bytes,
        memory_pool_bytes: crate::memory_pool::pool_bytes(
            queued_max_request_bytes,
            socket_request_max_bytes,
        ),
    })
}

/// The transaction coordinator's settings (Kafka's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`, `transactional.id.expiration.ms`,
    /// `transaction.state.log.num.partitions` (and `offsets.topic.num.partitions`).
    pub coordinator: fjord_txn::Config,
    /// `transaction.state.log.replication.factor` (capped by the live brokers when the topic
    /// is made).
    pub state_log_replication_factor: u16,
    /// `transaction.state.log.min.isr` (capped by the replication factor).
    pub state_log_min_isr: i32,
    /// `transaction.state.log.segment.bytes`.
    pub state_log_segment_bytes: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub remove_expired_interval_ms: u64,
}

fn txn_config(get: &dyn Fn(&str) -> String) -> Result<TxnConfig, String> {
    let int = |key: &str, min: i64, max: i64| parse_int(&get(key), key, min, max);
    Ok(TxnConfig {
        coordinator: fjord_txn::Config {
            max_timeout_ms: int("transaction.max.timeout.ms", 1, i32::MAX as i64)? as i32,
            id_expiration_ms: int("transactional.id.expiration.ms", 1, i32::MAX as i64)?,
            txn_partitions: int("transaction.state.log.num.partitions", 1, 10_000)? as i32,
            offsets_partitions: int("offsets.topic.num.partitions", 1, 10_000)? as i32,
        },
        state_log_replication_factor: int("transaction.state.log.replication.factor", 1, 32_767)?
            as u16,
        state_log_min_isr: int("transaction.state.log.min.isr", 1, i32::MAX as i64)? as i32,
        state_log_segment_bytes: int(
            "transaction.state.log.segment.bytes",
            1 << 20,
            i32::MAX as i64,
        )?,
        abort_interval_ms: int(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            1,
            i32::MAX as i64,
        )? as u64,
        remove_expired_interval_ms: int(
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            1,
            i32::MAX as i64,
        )? as u64,
    })
}

/// The group coordinator keys, validated against each other like Kafka does.
fn group_config(get: &dyn Fn(&str) -> String) -> Result<fjord_group::Config, String> {
    let int = |key: &str, min: i64, max: i64| parse_int(&get(key), key, min, max);
    let min_session = int("group.min.session.timeout.ms", 1, i32::MAX as i64)? as i32;
    let max_session = int("group.max.session.timeout.ms", 1, i32::MAX as i64)? as i32;
    if max_session < min_session {
        return Err(format!(
            "group.max.session.timeout.ms ({max_session}) must be at least group.min.session.timeout.ms ({min_session})"
        ));
    }
    let heartbeat = int("group.consumer.heartbeat.interval.ms", 1, i32::MAX as i64)? as i32;
    let session = int("group.consumer.session.timeout.ms", 1, i32::MAX as i64)? as i32;
    if heartbeat >= session {
        return Err(format!(
            "group.consumer.heartbeat.interval.ms ({heartbeat}) must be less than group.consumer.session.timeout.ms ({session})"
        ));
    }
    let assignors: Vec<String> = get("group.consumer.assignors")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if assignors.is_empty() || assignors.iter().any(|a| a != "uniform" && a != "range") {
        return Err(format!(
            "invalid value \"{}\" for group.consumer.assignors: expected a comma-separated list of uniform, range",
            get("group.consumer.assignors")
        ));
    }
    Ok(fjord_group::Config {
        initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms", 0, i32::MAX as i64)?,
        min_session_timeout_ms: min_session,
        max_session_timeout_ms: max_session,
        max_size: int("group.max.size", 1, i32::MAX as i64)? as usize,
        offsets_partitions: int("offsets.topic.num.partitions", 1, 10_000)? as i32,
        offsets_retention_ms: int("offsets.retention.minutes", 1, i32::MAX as i64)? * 60_000,
        offset_metadata_max_bytes: int("offset.metadata.max.bytes", 0, i32::MAX as i64)? as usize,
        consumer_heartbeat_interval_ms: heartbeat,
        consumer_session_timeout_ms: session,
        consumer_assignors: assignors,
        consumer_max_size: int("group.consumer.max.size", 1, i32::MAX as i64)? as usize,
        lag: fjord_group::lag::LagConfig {
            intervals: int("group.lag.window.intervals", 2, 1000)? as usize,
            min_distance_ms: int("group.lag.min.distance.ms", 0, i32::MAX as i64)?,
        },
    })
}

fn is_known_key(key: &str) -> bool {
    key == "log.dir"
        || BROKER_KEYS.iter().any(|(k, _)| *k == key)
        || fjord_storage::config::is_broker_log_key(key)
        || crate::sasl::is_config_key(key)
        || crate::tls::is_config_key(key)
}

pub(crate) fn parse_int(v: &str, key: &str, min: i64, max: i64) -> Result<i64, String> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid value \"{v}\" for {key}: expected an integer in [{min}, {max}]"
        )),
    }
}

pub(crate) fn parse_bool(v: &str, key: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "invalid value \"{v}\" for {key}: expected true or false"
        )),
    }
}

/// `listeners` / `advertised.listeners`: `NAME://host:port[,NAME://host:port...]`, names unique.
fn parse_listeners(v: &str, key: &str) -> Result<Vec<Listener>, String> {
    let bad = |why: String| format!("invalid value \"{v}\" for {key}: {why}");
    let mut out: Vec<Listener> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item.split_once("://").ok_or_else(|| {
            bad(format!(
                "{item:?} is not NAME://host:port, e.g. PLAINTEXT://127.0.0.1:9092"
            ))
        })?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!("{name:?} is not a listener name")));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{item:?} has no :port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad(format!("{item:?}: port must be a number in [0, 65535]")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if out.iter().any(|l| l.name == name) {
            return Err(bad(format!("listener name {name} appears twice")));
        }
        out.push(Listener {
            name: name.to_string(),
            host: host.to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err(bad(
            "expected a listener like PLAINTEXT://127.0.0.1:9092".into()
        ));
    }
    Ok(out)
}

/// `process.roles`, `controller.quorum.voters` and the controller listener, checked against
/// each other the way Kafka checks a KRaft configuration.
fn cluster_config(
    get: &dyn Fn(&str) -> String,
    node_id: i32,
    controller_listeners: Vec<Listener>,
) -> Result<ClusterConfig, String> {
    let roles_value = get("process.roles");
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in roles_value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            _ => {
                return Err(format!(
                    "invalid value \"{roles_value}\" for process.roles: expected broker, controller or broker,controller"
                ))
            }
        }
    }
    if !roles.broker && !roles.controller {
        return Err(format!(
            "invalid value \"{roles_value}\" for process.roles: expected broker, controller or broker,controller"
        ));
    }
    let voters_value = get("controller.quorum.voters");
    let voters = if voters_value.trim().is_empty() {
        BTreeMap::new()
    } else {
        fjord_metadata::quorum::parse_quorum_voters(&voters_value)
            .map_err(|e| format!("invalid value \"{voters_value}\" for {e}"))?
    };
    if controller_listeners.len() > 1 {
        return Err("listeners: only one controller listener is supported".into());
    }
    let controller_listener = controller_listeners.into_iter().next();
    if voters.is_empty() {
        if !(roles.broker && roles.controller) {
            return Err(format!(
                "process.roles={roles_value} needs controller.quorum.voters; without voters a node runs alone as broker and controller"
            ));
        }
        if let Some(l) = &controller_listener {
            return Err(format!(
                "listeners has a controller listener ({}) but controller.quorum.voters is empty",
                l.name
            ));
        }
    } else {
        let me = u64::try_from(node_id).expect("node.id is not negative");
        match (roles.controller, voters.get(&me)) {
            (true, None) => {
                return Err(format!(
                    "node.id {node_id} has the controller role but is not in controller.quorum.voters ({voters_value})"
                ))
            }
            (false, Some(_)) => {
                return Err(format!(
                    "node.id {node_id} is in controller.quorum.voters but process.roles ({roles_value}) has no controller role"
                ))
            }
            (true, Some(addr)) => {
                let l = controller_listener.as_ref().ok_or_else(|| {
                    format!(
                        "node.id {node_id} is a controller but listeners has no controller listener (controller.listener.names = {}); add e.g. CONTROLLER://{addr}",
                        get("controller.listener.names")
                    )
                })?;
                let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
                if port != l.port.to_string() {
                    return Err(format!(
                        "the controller listener {}://{}:{} does not match node {node_id}'s entry {addr} in controller.quorum.voters",
                        l.name, l.host, l.port
                    ));
                }
            }
            (false, None) => {
                if controller_listener.is_some() {
                    return Err(format!(
                        "listeners has a controller listener but process.roles ({roles_value}) has no controller role"
                    ));
                }
            }
        }
    }
    let int = |key: &str, min: i64, max: i64| parse_int(&get(key), key, min, max);
    let heartbeat_interval_ms = int("broker.heartbeat.interval.ms", 1, i32::MAX as i64)? as u64;
    let session_timeout_ms = int("broker.session.timeout.ms", 1, i32::MAX as i64)? as u64;
    if heartbeat_interval_ms >= session_timeout_ms {
        return Err(format!(
            "broker.heartbeat.interval.ms ({heartbeat_interval_ms}) must be less than broker.session.timeout.ms ({session_timeout_ms})"
        ));
    }
    let rebalance = parse_bool(
        &get("auto.leader.rebalance.enable"),
        "auto.leader.rebalance.enable",
    )?;
    let check = int(
        "leader.imbalance.check.interval.seconds",
        1,
        i32::MAX as i64,
    )? as u64;
    Ok(ClusterConfig {
        roles,
        voters,
        controller_listener,
        election_timeout_ms: int("controller.quorum.election.timeout.ms", 50, 600_000)? as u64,
        heartbeat_interval_ms,
        session_timeout_ms,
        leader_rebalance_interval_ms: rebalance.then_some(check * 1000),
        offsets_topic_replication_factor: int(
            "offsets.topic.replication.factor",
            1,
            i16::MAX as i64,
        )? as u16,
        balancer: BalancerConfig::from_keys(get)?,
        snapshot_max_log_bytes: int(
            "metadata.log.max.record.bytes.between.snapshots",
            1,
            i64::MAX,
        )? as u64,
        metadata_retention_bytes: match int("metadata.max.retention.bytes", -1, i64::MAX)? {
            -1 => None,
            n => Some(n as u64),
        },
    })
}

fn replication_config(get: &dyn Fn(&str) -> String) -> Result<ReplicationConfig, String> {
    let int = |key: &str, min: i64, max: i64| parse_int(&get(key), key, min, max);
    let selector = get("replica.selector.class");
    let rack_aware_selector = match selector.as_str() {
        "" | LEADER_SELECTOR => false,
        RACK_AWARE_SELECTOR => true,
        other => {
            return Err(format!(
                "invalid value \"{other}\" for replica.selector.class: expected {RACK_AWARE_SELECTOR} or {LEADER_SELECTOR}"
            ))
        }
    };
    let max = i32::MAX as i64;
    Ok(ReplicationConfig {
        lag_time_max_ms: int("replica.lag.time.max.ms", 1, max)?,
        fetch_wait_max_ms: int("replica.fetch.wait.max.ms", 0, max)? as i32,
        fetch_min_bytes: int("replica.fetch.min.bytes", 1, max)? as i32,
        fetch_max_bytes: int("replica.fetch.max.bytes", 1, max)? as i32,
        fetch_response_max_bytes: int("replica.fetch.response.max.bytes", 1, max)? as i32,
        fetch_backoff_ms: int("replica.fetch.backoff.ms", 0, max)? as u64,
        high_watermark_checkpoint_interval_ms: int(
            "replica.high.watermark.checkpoint.interval.ms",
            1,
            max,
        )? as u64,
        rack_aware_selector,
    })
}

/// Flatten a TOML document into dotted keys: `log.retention.ms = 1` (nested tables) and
/// `"log.retention.ms" = 1` (one quoted key) both give `log.retention.ms`. Arrays become
/// comma-separated lists (e.g. `listeners = ["PLAINTEXT://..."]`).
pub fn flatten_toml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string()
    })?;
    let mut out = BTreeMap::new();
    flatten_table("", &value, &mut out)?;
    Ok(out)
}

fn flatten_table(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten_table(&key, t, out)?,
            other => {
                let s = scalar(other).ok_or_else(|| format!("unsupported value for {key}"))?;
                if out.insert(key.clone(), s).is_some() {
                    return Err(format!("key {key} is set twice"));
                }
            }
        }
    }
    Ok(())
}

fn scalar(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(","),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Table(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_documented_single_node() {
        let c = BrokerConfig::default();
        assert_eq!(c.node_id, 1);
        assert_eq!(
            c.listener.socket_addr().unwrap().to_string(),
            "127.0.0.1:9092"
        );
        assert_eq!(c.admin_listener, "127.0.0.1:9644");
        assert_eq!(c.log_dir, PathBuf::from("./fjord-data"));
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
    }

    #[test]
    fn transaction_keys_have_kafkas_defaults() {
        let c = BrokerConfig::default().txn;
        assert_eq!(c.coordinator, fjord_txn::Config::default());
        assert_eq!(
            (c.state_log_replication_factor, c.state_log_min_isr),
            (3, 2)
        );
        assert_eq!(c.state_log_segment_bytes, 104_857_600);
        assert_eq!(
            (c.abort_interval_ms, c.remove_expired_interval_ms),
            (10_000, 3_600_000)
        );
        let c = BrokerConfig::from_props(props(&[
            ("transaction.max.timeout.ms", "5000"),
            ("transaction.state.log.num.partitions", "3"),
        ]))
        .unwrap()
        .txn;
        assert_eq!(
            (c.coordinator.max_timeout_ms, c.coordinator.txn_partitions),
            (5000, 3)
        );
        let e =
            BrokerConfig::from_props(props(&[("transaction.max.timeout.ms", "0")])).unwrap_err();
        assert!(e.contains("transaction.max.timeout.ms"), "{e}");
    }

    #[test]
    fn dotted_and_quoted_toml_keys_are_the_same() {
        let a = flatten_toml("[log.retention]\nms = 60000\n").unwrap();
        let b = flatten_toml("\"log.retention.ms\" = 60000\n").unwrap();
        let c = flatten_toml("log.retention.ms = 60000\n").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a["log.retention.ms"], "60000");
        assert!(flatten_toml("\"log.retention.ms\" = 1\nlog.retention.ms = 2\n").is_err());
    }

    #[test]
    fn bad_values_name_the_key_value_and_allowed_range() {
        let e = BrokerConfig::from_props(props(&[("num.partitions", "0")])).unwrap_err();
        assert!(
            e.contains("num.partitions") && e.contains("\"0\"") && e.contains("[1,"),
            "{e}"
        );
        let e = BrokerConfig::from_props(props(&[("listeners", "127.0.0.1:9092")])).unwrap_err();
        assert!(e.contains("listeners"), "{e}");
        let e =
            BrokerConfig::from_props(props(&[("auto.create.topics.enable", "yes")])).unwrap_err();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_source() {
        let e = BrokerConfig::load(None, &[("no.such.key".into(), "1".into())]).unwrap_err();
        assert_eq!(
            e,
            "unknown configuration key \"no.such.key\" (from command line)"
        );
    }

    #[test]
    fn file_then_flag_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, "num.partitions = 3\nnode.id = 7\n").unwrap();
        let c = BrokerConfig::load(Some(&path), &[("num.partitions".into(), "5".into())]).unwrap();
        assert_eq!(c.num_partitions, 5);
        assert_eq!(c.node_id, 7);
    }

    #[test]
    fn group_keys_are_validated_against_each_other() {
        let c =
            BrokerConfig::from_props(props(&[("group.initial.rebalance.delay.ms", "0")])).unwrap();
        assert_eq!(c.group.initial_rebalance_delay_ms, 0);
        assert_eq!(c.group.offsets_partitions, 50);
        let e =
            BrokerConfig::from_props(props(&[("group.max.session.timeout.ms", "10")])).unwrap_err();
        assert!(e.contains("group.min.session.timeout.ms"), "{e}");
        let e =
            BrokerConfig::from_props(props(&[("group.consumer.assignors", "sticky")])).unwrap_err();
        assert!(e.contains("group.consumer.assignors"), "{e}");
    }

    #[test]
    fn limits_have_kafkas_defaults_and_checks() {
        let c = BrokerConfig::default();
        let l = &c.limits;
        assert_eq!(l.connections.max_connections, i32::MAX as usize);
        assert_eq!(l.connections.max_connections_per_ip, i32::MAX as usize);
        assert!(l.connections.overrides.is_empty());
        assert_eq!(
            l.connections_max_idle,
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(l.queued_max_request_bytes, -1);
        assert_eq!(
            l.memory_pool_bytes,
            crate::memory_pool::IMPLICIT_POOL_BYTES,
            "no pool (-1) still gets a bound"
        );

        let c = BrokerConfig::from_props(props(&[
            ("max.connections", "100"),
            ("max.connections.per.ip", "0"),
            (
                "max.connections.per.ip.overrides",
                "127.0.0.1:5, [::1]:6, localhost:7",
            ),
            ("connections.max.idle.ms", "-1"),
            ("socket.request.max.bytes", "65536"),
            ("queued.max.request.bytes", "65536"),
        ]))
        .unwrap();
        let l = &c.limits;
        assert_eq!(l.connections.max_connections, 100);
        assert_eq!(l.connections.max_for("127.0.0.1".parse().unwrap()), 7);
        assert_eq!(l.connections.max_for("127.0.0.2".parse().unwrap()), 0);
        assert_eq!(l.connections_max_idle, None);
        assert_eq!(l.memory_pool_bytes, 65536);

        for (pairs, expect) in [
            (
                &[("max.connections.per.ip", "0")][..],
                "max.connections.per.ip can be set to zero only if",
            ),
            (
                &[("max.connections.per.ip.overrides", "127.0.0.1")][..],
                "max.connections.per.ip.overrides",
            ),
            (
                &[("max.connections.per.ip.overrides", "no-such-host.invalid:3")][..],
                "cannot resolve",
            ),
            (&[("max.connections", "-1")][..], "max.connections"),
            (
                &[
                    ("socket.request.max.bytes", "65536"),
                    ("queued.max.request.bytes", "65535"),
                ][..],
                "must be larger or equal to socket.request.max.bytes",
            ),
        ] {
            let e = BrokerConfig::from_props(props(pairs)).unwrap_err();
            assert!(e.contains(expect), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn advertised_address_uses_bound_port() {
        let c = BrokerConfig::from_props(props(&[("listeners", "PLAINTEXT://0.0.0.0:0")])).unwrap();
        let (h, p) = c.advertised("0.0.0.0:4321".parse().unwrap());
        assert_eq!((h.as_str(), p), ("127.0.0.1", 4321));
    }

    #[test]
    fn cluster_config_is_checked_like_kraft() {
        let voters = "1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093";
        let node = |id: &str, roles: &str, listeners: &str| {
            BrokerConfig::from_props(props(&[
                ("node.id", id),
                ("process.roles", roles),
                ("listeners", listeners),
                ("controller.quorum.voters", voters),
            ]))
        };
        let c = node(
            "2",
            "broker,controller",
            "PLAINTEXT://127.0.0.2:9092,CONTROLLER://127.0.0.2:9093",
        )
        .unwrap();
        assert!(c.cluster.is_quorum());
        assert_eq!(c.listener.port, 9092);
        assert_eq!(c.cluster.controller_listener.unwrap().port, 9093);
        assert_eq!(c.cluster.voters.len(), 3);
        // A broker-only node outside the voters needs no controller listener.
        let c = node("4", "broker", "PLAINTEXT://127.0.0.4:9092").unwrap();
        assert!(c.cluster.roles.broker && !c.cluster.roles.controller);
        // A controller-only node needs no data listener.
        let c = node("3", "controller", "CONTROLLER://127.0.0.3:9093").unwrap();
        assert!(!c.cluster.roles.broker);
        for (id, roles, listeners, expect) in [
            (
                "4",
                "broker,controller",
                "PLAINTEXT://h:1,CONTROLLER://h:9093",
                "not in controller.quorum.voters",
            ),
            ("1", "broker", "PLAINTEXT://h:1", "no controller role"),
            (
                "1",
                "broker,controller",
                "PLAINTEXT://h:1",
                "no controller listener",
            ),
            (
                "1",
                "broker,controller",
                "PLAINTEXT://h:1,CONTROLLER://h:9999",
                "does not match",
            ),
            (
                "1",
                "broker,controller",
                "CONTROLLER://h:9093",
                "exactly one data listener",
            ),
            ("1", "queen", "PLAINTEXT://h:1", "process.roles"),
            (
                "1",
                "broker,controller",
                "SSL://h:1,CONTROLLER://h:9093",
                "ssl.keystore.location",
            ),
        ] {
            let e = node(id, roles, listeners).unwrap_err();
            assert!(e.contains(expect), "{id} {roles} {listeners}: {e}");
        }
        let e = BrokerConfig::from_props(props(&[("process.roles", "broker")])).unwrap_err();
        assert!(e.contains("needs controller.quorum.voters"), "{e}");
        let e =
            BrokerConfig::from_props(props(&[("controller.quorum.voters", "1@h")])).unwrap_err();
        assert!(e.contains("controller.quorum.voters"), "{e}");
        let e =
            BrokerConfig::from_props(props(&[("listeners", "PLAINTEXT://h:1,CONTROLLER://h:2")]))
                .unwrap_err();
        assert!(e.contains("controller.quorum.voters is empty"), "{e}");
    }
}
