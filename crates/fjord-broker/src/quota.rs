//! Client quotas on the broker (KIP-13, KIP-124, KIP-219, KIP-599), as Kafka's
//! `ClientQuotaManager`, `ClientRequestQuotaManager` and `ControllerMutationQuotaManager` do
//! them.
//!
//! The limits come from the metadata image ([`fjord_metadata::client_quota`], which also
//! decides which entity's limit applies to a connection). Each quota type measures what a
//! (user, client id) does in its own sensor, keyed by the tags of the entity the limit came
//! from (so a user quota is shared by all the user's client ids):
//!
//! - `producer_byte_rate`: Produce request bytes; `consumer_byte_rate`: consumer Fetch
//!   response bytes; `request_percentage`: time spent handling the client's requests, in
//!   percent of one thread. These are [`Rate`]s over `quota.window.num` samples of
//!   `quota.window.size.seconds` (Kafka's `SampledStat`/`Rate`). A request that takes the rate
//!   over the limit is answered at once with `throttle_time_ms` set — the time for the rate
//!   to fall back to the limit, `(rate - limit) / limit × window` ([`throttle_time_ms`]) — and
//!   then the connection is muted (not read) for that long (KIP-219). Clients of versions
//!   before KIP-219 get their response after the throttle time instead
//!   ([`client_throttles`]).
//! - `controller_mutation_rate`: partitions created or deleted per second, a [`TokenBucket`]
//!   with a burst of `limit × samples × window` (KIP-599). Once the bucket is in debt,
//!   CreateTopics v6+, CreatePartitions v3+ and DeleteTopics v5+ refuse further topics with
//!   THROTTLING_QUOTA_EXCEEDED; older versions are accepted and only throttled.
//!
//! Everything here but [`ClientQuotaManager`]'s locks is pure: time comes in as milliseconds.
//! Sensors of clients unseen for an hour are dropped (Kafka's
//! `InactiveSensorExpirationTimeSeconds`), which bounds their number by the active clients.

use std::collections::HashMap;
use std::sync::Arc;

use fjord_metadata::client_quota::{
    ClientQuotas, QuotaTags, CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, Opts, Registry};

/// `quota.window.num` and `quota.window.size.seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    pub samples: u32,
    pub window_ms: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            samples: 11,
            window_ms: 1000,
        }
    }
}

impl QuotaConfig {
    /// From the broker config's `get` (Kafka's keys and bounds: both at least 1).
    pub fn parse(get: &dyn Fn(&str) -> String) -> Result<QuotaConfig, String> {
        let int = |key: &str, max: i64| -> Result<i64, String> {
            let v = get(key);
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    format!("invalid value \"{v}\" for {key}: an integer from 1 to {max}")
                })
        };
        Ok(QuotaConfig {
            samples: int("quota.window.num", 1000)? as u32,
            window_ms: int("quota.window.size.seconds", 3600)? * 1000,
        })
    }

    fn full_window_ms(&self) -> i64 {
        self.samples as i64 * self.window_ms
    }
}

/// A quota type: which key limits it and how its throttles are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
    ControllerMutation,
}

impl QuotaType {
    pub const ALL: [QuotaType; 4] = [
        QuotaType::Produce,
        QuotaType::Fetch,
        QuotaType::Request,
        QuotaType::ControllerMutation,
    ];

    /// The quota key of this type.
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
            QuotaType::ControllerMutation => CONTROLLER_MUTATION_RATE,
        }
    }

    /// The metric label (Kafka's `QuotaType` names).
    pub fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "produce",
            QuotaType::Fetch => "fetch",
            QuotaType::Request => "request",
            QuotaType::ControllerMutation => "controller_mutation",
        }
    }
}

/// One sample of a [`Rate`].
#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    last_event_ms: i64,
    value: f64,
}

/// Kafka's `Rate` over a `SampledStat` (`WindowedSum`): `samples` samples of `window_ms` each
/// (plus one that may overlap the window's start), the rate being the samples' sum over the
/// time they cover, counted as at least `samples - 1` whole windows so a new client's first
/// bytes do not look like a huge rate.
#[derive(Debug, Clone)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    pub fn new(now_ms: i64) -> Rate {
        Rate {
            samples: vec![Sample {
                start_ms: now_ms,
                last_event_ms: now_ms,
                value: 0.0,
            }],
            current: 0,
        }
    }

    /// Add `value` at `now_ms`.
    pub fn record(&mut self, cfg: &QuotaConfig, value: f64, now_ms: i64) {
        let sample = self.samples[self.current];
        if now_ms - sample.start_ms >= cfg.window_ms {
            // Advance to the next sample (one beyond `samples` overlaps the window's start).
            let max = cfg.samples as usize + 1;
            self.current = (self.current + 1) % max;
            let fresh = Sample {
                start_ms: now_ms,
                last_event_ms: now_ms,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        let s = &mut self.samples[self.current];
        s.value += value;
        s.last_event_ms = now_ms;
    }

    fn purge(&mut self, cfg: &QuotaConfig, now_ms: i64) {
        let expire = cfg.full_window_ms();
        for s in &mut self.samples {
            if now_ms - s.last_event_ms >= expire {
                *s = Sample {
                    start_ms: now_ms,
                    last_event_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// The time the rate is taken over, in milliseconds (Kafka's `Rate.windowSize`).
    pub fn window_ms(&mut self, cfg: &QuotaConfig, now_ms: i64) -> i64 {
        self.purge(cfg, now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed = now_ms - oldest;
        let full = elapsed / cfg.window_ms;
        let min_full = cfg.samples as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * cfg.window_ms;
        }
        elapsed.max(1)
    }

    /// The rate per second at `now_ms`, and the window it was taken over.
    pub fn measure(&mut self, cfg: &QuotaConfig, now_ms: i64) -> (f64, i64) {
        let window = self.window_ms(cfg, now_ms);
        let sum: f64 = self.samples.iter().map(|s| s.value).sum();
        (sum * 1000.0 / window as f64, window)
    }

    /// How long from `now_ms` until the bytes of the current sample are within `limit` per
    /// second of the sample's time: the pace that keeps every one-second sample at the limit
    /// (see [`ClientQuotaManager::record`]). 0 when the sample is within it.
    pub fn sample_pace_ms(&self, limit: f64, now_ms: i64) -> i64 {
        if limit <= 0.0 {
            return 0;
        }
        let s = &self.samples[self.current];
        let due = s.start_ms as f64 + s.value / limit * 1000.0;
        (due - now_ms as f64).ceil().max(0.0) as i64
    }

    #[cfg(test)]
    fn last_event_ms(&self) -> i64 {
        self.samples
            .iter()
            .map(|s| s.last_event_ms)
            .max()
            .unwrap_or(0)
    }
}

/// How long a client over its quota must wait for its rate to fall back to the limit, if it
/// sends nothing more: with the rate `observed` over `window_ms` and the `limit`, the wait X
/// that makes `observed × W / (W + X) = limit` (Kafka's `QuotaUtils.throttleTime`). 0 within
/// the limit.
pub fn throttle_time_ms(observed: f64, limit: f64, window_ms: i64) -> i64 {
    if observed <= limit || limit <= 0.0 {
        return 0;
    }
    ((observed - limit) / limit * window_ms as f64).round() as i64
}

/// The token bucket of `controller_mutation_rate` (Kafka's `TokenBucket`): it holds up to
/// `limit × samples × window` permits and refills at `limit` per second; recording may take it
/// into debt, and while it is in debt the throttle time is the time to repay it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket for `limit`.
    pub fn new(cfg: &QuotaConfig, limit: f64, now_ms: i64) -> TokenBucket {
        TokenBucket {
            tokens: Self::burst(cfg, limit),
            last_ms: now_ms,
        }
    }

    fn burst(cfg: &QuotaConfig, limit: f64) -> f64 {
        limit * cfg.samples as f64 * cfg.window_ms as f64 / 1000.0
    }

    fn refill(&mut self, cfg: &QuotaConfig, limit: f64, now_ms: i64) {
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * limit).min(Self::burst(cfg, limit));
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// The throttle time at `now_ms`: 0 unless the bucket is in debt.
    pub fn throttle_ms(&mut self, cfg: &QuotaConfig, limit: f64, now_ms: i64) -> i64 {
        self.refill(cfg, limit, now_ms);
        if self.tokens >= 0.0 {
            0
        } else {
            (-self.tokens / limit * 1000.0).round() as i64
        }
    }

    /// Take `permits` (they may take the bucket into debt).
    pub fn record(&mut self, cfg: &QuotaConfig, limit: f64, permits: f64, now_ms: i64) {
        self.refill(cfg, limit, now_ms);
        self.tokens -= permits;
    }
}

/// Whether a response of `api` at `version` is throttled by the client itself (KIP-219): the
/// broker answers at once and mutes the connection. For older versions the broker holds the
/// response for the throttle time (Kafka's `shouldClientThrottle`).
pub fn client_throttles(api: ApiKey, version: i16) -> bool {
    use ApiKey as A;
    let since = match api {
        A::Produce => 6,
        A::Fetch => 8,
        A::Metadata => 6,
        A::ListOffsets => 3,
        A::OffsetCommit | A::OffsetFetch => 4,
        A::FindCoordinator
        | A::Heartbeat
        | A::LeaveGroup
        | A::SyncGroup
        | A::DescribeGroups
        | A::ListGroups
        | A::ApiVersions
        | A::DeleteTopics
        | A::DescribeConfigs => 2,
        A::JoinGroup | A::CreateTopics => 3,
        A::AddOffsetsToTxn
        | A::AddPartitionsToTxn
        | A::AlterConfigs
        | A::CreateAcls
        | A::CreatePartitions
        | A::DeleteAcls
        | A::DeleteGroups
        | A::DeleteRecords
        | A::DescribeAcls
        | A::DescribeLogDirs
        | A::EndTxn
        | A::InitProducerId
        | A::TxnOffsetCommit => 1,
        A::IncrementalAlterConfigs
        | A::OffsetDelete
        | A::AlterPartitionReassignments
        | A::ListPartitionReassignments
        | A::ElectLeaders
        | A::UnregisterBroker
        | A::AlterUserScramCredentials
        | A::DescribeUserScramCredentials => 0,
        _ => return false,
    };
    version >= since
}

/// Put `throttle_time_ms` into a response that has the field (versions without it skip it
/// when encoding).
pub fn set_throttle_time(body: &mut ResponseKind, ms: i32) {
    macro_rules! set {
        ($($v:ident),* $(,)?) => {
            match body {
                $(ResponseKind::$v(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    set!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeCluster,
        DescribeProducers,
        UnregisterBroker,
        DescribeTransactions,
        ListTransactions,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
    );
}

/// What one sensor measures.
enum Measure {
    Rate(Rate),
    Bucket(TokenBucket),
}

struct Sensor {
    measure: Measure,
    last_used_ms: i64,
}

/// Prometheus metrics of client quotas (bounded: by quota type only).
#[derive(Clone)]
struct QuotaMetrics {
    throttled: IntCounterVec,
    throttle_ms: IntCounterVec,
    mutations_refused: IntCounterVec,
}

impl QuotaMetrics {
    fn new(registry: &Registry) -> QuotaMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let m = QuotaMetrics {
            throttled: counter(
                "quota_throttled_requests_total",
                "Requests whose client was over a client quota and was throttled, by quota type (produce, fetch, request, controller_mutation).",
                &["quota_type"],
            ),
            throttle_ms: counter(
                "quota_throttle_time_ms_total",
                "Milliseconds of throttle time given to clients over a client quota, by quota type.",
                &["quota_type"],
            ),
            mutations_refused: counter(
                "quota_mutations_refused_total",
                "Topics refused with THROTTLING_QUOTA_EXCEEDED (controller_mutation_rate), by API.",
                &["api"],
            ),
        };
        for t in QuotaType::ALL {
            m.throttled.with_label_values(&[t.label()]);
            m.throttle_ms.with_label_values(&[t.label()]);
        }
        m
    }
}

/// A sensor's identity: quota type and the tags of the entity whose limit applies.
type SensorKey = (QuotaType, QuotaTags);

/// Sensors of clients unseen this long are dropped.
const INACTIVE_SENSOR_MS: i64 = 3_600_000;
/// How often idle sensors are looked for.
const PURGE_INTERVAL_MS: i64 = 60_000;

/// The broker's client quota state: the limits from the image and every active client's
/// sensors.
pub struct ClientQuotaManager {
    cfg: QuotaConfig,
    limits: RwLock<Arc<ClientQuotas>>,
    sensors: Mutex<Sensors>,
    metrics: QuotaMetrics,
}

#[derive(Default)]
struct Sensors {
    by_key: HashMap<SensorKey, Sensor>,
    last_purge_ms: i64,
}

/// A client's (user, client id): whose quotas a request counts against.
#[derive(Debug, Clone, Copy)]
pub struct QuotaClient<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

impl ClientQuotaManager {
    pub fn new(cfg: QuotaConfig, registry: &Registry) -> ClientQuotaManager {
        ClientQuotaManager {
            cfg,
            limits: RwLock::new(Arc::new(ClientQuotas::default())),
            sensors: Mutex::new(Sensors::default()),
            metrics: QuotaMetrics::new(registry),
        }
    }

    pub fn config(&self) -> QuotaConfig {
        self.cfg
    }

    /// New limits from the metadata image. Sensors stay (Kafka keeps measuring across a
    /// change of limit); a sensor whose entity lost its quota is simply no longer used.
    pub fn update(&self, quotas: &ClientQuotas) {
        let mut limits = self.limits.write();
        if **limits != *quotas {
            *limits = Arc::new(quotas.clone());
        }
    }

    /// Whether any entity has a quota of type `t` (else nothing is measured).
    pub fn enabled(&self, t: QuotaType) -> bool {
        self.limits.read().any_for(t.key())
    }

    /// The limit of type `t` for `client` and the key of its sensor, if any.
    fn limit(&self, t: QuotaType, client: QuotaClient<'_>) -> Option<(f64, SensorKey)> {
        let limits = self.limits.read();
        if limits.is_empty() {
            return None;
        }
        let r = limits.resolve(t.key(), client.user, client.client_id)?;
        Some((r.limit, (t, r.tags)))
    }

    fn with_sensor<T>(
        &self,
        key: SensorKey,
        now_ms: i64,
        new: impl FnOnce() -> Measure,
        f: impl FnOnce(&mut Measure) -> T,
    ) -> T {
        let mut sensors = self.sensors.lock();
        if now_ms - sensors.last_purge_ms >= PURGE_INTERVAL_MS {
            sensors.last_purge_ms = now_ms;
            sensors
                .by_key
                .retain(|_, s| now_ms - s.last_used_ms < INACTIVE_SENSOR_MS);
        }
        let s = sensors.by_key.entry(key).or_insert_with(|| Sensor {
            measure: new(),
            last_used_ms: now_ms,
        });
        s.last_used_ms = now_ms;
        f(&mut s.measure)
    }

    /// Record `value` (bytes, or percent of a thread for [`QuotaType::Request`]) for `client`
    /// at `now_ms` and return the throttle time in milliseconds (0: within its quota, or no
    /// quota). `request_percentage` throttles are capped at one window, as Kafka's; byte
    /// rates are also paced within each one-second sample ([`Rate::sample_pace_ms`]).
    pub fn record(&self, t: QuotaType, client: QuotaClient<'_>, value: f64, now_ms: i64) -> i64 {
        let Some((limit, key)) = self.limit(t, client) else {
            return 0;
        };
        let cfg = self.cfg;
        let throttle = self.with_sensor(
            key,
            now_ms,
            || Measure::Rate(Rate::new(now_ms)),
            |m| match m {
                Measure::Rate(rate) => {
                    rate.record(&cfg, value, now_ms);
                    let (observed, window) = rate.measure(&cfg, now_ms);
                    let throttle = throttle_time_ms(observed, limit, window);
                    if t == QuotaType::Request {
                        throttle
                    } else {
                        // Byte rates are also paced within each sample. Kafka's rate alone
                        // counts at least `samples - 1` windows, so a saturating client may
                        // send ~10 s worth at once whenever its window empties: ~10 MB
                        // bursts every 11-13 s at 1 MB/s, and a 30 s window then reads
                        // anywhere from 0.75 to 1.1 of the quota. Holding each one-second
                        // sample to the limit as well keeps every 30 s within a few percent
                        // and spares the neighbours the bursts; the long-window rule still
                        // applies on top.
                        throttle.max(rate.sample_pace_ms(limit, now_ms))
                    }
                }
                Measure::Bucket(_) => 0,
            },
        );
        if t == QuotaType::Request {
            throttle.min(cfg.window_ms)
        } else {
            throttle
        }
    }

    /// The measured rate of `client`'s sensor of type `t` (for tests and views); `None`
    /// without a quota or sensor.
    pub fn rate(&self, t: QuotaType, client: QuotaClient<'_>, now_ms: i64) -> Option<f64> {
        let (_, key) = self.limit(t, client)?;
        let cfg = self.cfg;
        let mut sensors = self.sensors.lock();
        match &mut sensors.by_key.get_mut(&key)?.measure {
            Measure::Rate(r) => Some(r.measure(&cfg, now_ms).0),
            Measure::Bucket(_) => None,
        }
    }

    /// `controller_mutation_rate`, before a topic's mutations: the throttle time if the
    /// client's bucket is already in debt (then a strict request refuses the topic), else 0.
    pub fn mutation_throttle(&self, client: QuotaClient<'_>, now_ms: i64) -> i64 {
        let Some((limit, key)) = self.limit(QuotaType::ControllerMutation, client) else {
            return 0;
        };
        let cfg = self.cfg;
        self.with_sensor(
            key,
            now_ms,
            || Measure::Bucket(TokenBucket::new(&cfg, limit, now_ms)),
            |m| match m {
                Measure::Bucket(b) => b.throttle_ms(&cfg, limit, now_ms),
                Measure::Rate(_) => 0,
            },
        )
    }

    /// `controller_mutation_rate`: take `partitions` permits for a topic's mutations.
    pub fn record_mutations(&self, client: QuotaClient<'_>, partitions: f64, now_ms: i64) {
        let Some((limit, key)) = self.limit(QuotaType::ControllerMutation, client) else {
            return;
        };
        let cfg = self.cfg;
        self.with_sensor(
            key,
            now_ms,
            || Measure::Bucket(TokenBucket::new(&cfg, limit, now_ms)),
            |m| {
                if let Measure::Bucket(b) = m {
                    b.record(&cfg, limit, partitions, now_ms);
                }
            },
        )
    }

    /// Count a throttle given to a client.
    pub fn note_throttle(&self, t: QuotaType, ms: i64) {
        if ms > 0 {
            self.metrics.throttled.with_label_values(&[t.label()]).inc();
            self.metrics
                .throttle_ms
                .with_label_values(&[t.label()])
                .inc_by(ms as u64);
        }
    }

    /// Count a topic refused with THROTTLING_QUOTA_EXCEEDED.
    pub fn note_refused(&self, api: &str) {
        self.metrics
            .mutations_refused
            .with_label_values(&[api])
            .inc();
    }

    /// Active sensors (bounded by the clients seen within the last hour).
    pub fn sensors(&self) -> usize {
        self.sensors.lock().by_key.len()
    }

    #[cfg(test)]
    fn last_event(&self, t: QuotaType, client: QuotaClient<'_>) -> Option<i64> {
        let (_, key) = self.limit(t, client)?;
        match &self.sensors.lock().by_key.get(&key)?.measure {
            Measure::Rate(r) => Some(r.last_event_ms()),
            Measure::Bucket(_) => None,
        }
    }
}

/// A connection's mute (KIP-219): while it holds, the connection's next request is neither
/// read from the socket nor handled. Shared by the connection's reader and processor.
pub struct Mute {
    origin: std::time::Instant,
    /// Milliseconds after `origin` until which the connection is muted.
    until_ms: std::sync::atomic::AtomicU64,
}

impl Default for Mute {
    fn default() -> Self {
        Mute {
            origin: std::time::Instant::now(),
            until_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Mute {
    /// Mute for `ms` from now (a longer mute already set stays).
    pub fn mute_for(&self, ms: i64) {
        if ms <= 0 {
            return;
        }
        let until = self.origin.elapsed().as_millis() as u64 + ms as u64;
        self.until_ms
            .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wait until the mute ends; how long that was.
    pub async fn wait(&self) -> std::time::Duration {
        let mut waited = std::time::Duration::ZERO;
        loop {
            let until = self.until_ms.load(std::sync::atomic::Ordering::Relaxed);
            let now = self.origin.elapsed().as_millis() as u64;
            if until <= now {
                return waited;
            }
            let d = std::time::Duration::from_millis(until - now);
            tokio::time::sleep(d).await;
            waited += d;
        }
    }
}

/// What a request counts against its client's quotas, taken before it is handled.
pub struct RequestUsage {
    /// The request counts against `producer_byte_rate` with its size (a Produce).
    pub produce_bytes: Option<usize>,
    /// The response counts against `consumer_byte_rate` (a consumer's Fetch).
    pub consumer_fetch: bool,
    /// Broker-to-broker traffic (follower fetches, transaction markers): never throttled.
    pub exempt: bool,
    /// The handler may wait (a long-poll Fetch, a rebalance, a controller commit): its time
    /// is not counted against `request_percentage`. Kafka counts request-thread time only,
    /// and parks such requests in purgatory; an async handler's elapsed time would count the
    /// waiting too.
    pub waits: bool,
}

impl RequestUsage {
    pub fn of(req: &fjord_protocol::codec::Request, wire_bytes: usize) -> RequestUsage {
        use kafka_protocol::messages::RequestKind as K;
        let mut u = RequestUsage {
            produce_bytes: None,
            consumer_fetch: false,
            exempt: false,
            waits: matches!(
                req.body,
                K::Fetch(_)
                    | K::JoinGroup(_)
                    | K::SyncGroup(_)
                    | K::ConsumerGroupHeartbeat(_)
                    | K::OffsetCommit(_)
                    | K::TxnOffsetCommit(_)
                    | K::CreateTopics(_)
                    | K::DeleteTopics(_)
                    | K::CreatePartitions(_)
                    | K::DeleteRecords(_)
                    | K::AlterConfigs(_)
                    | K::IncrementalAlterConfigs(_)
                    | K::AlterClientQuotas(_)
                    | K::ElectLeaders(_)
                    | K::AlterPartitionReassignments(_)
                    | K::InitProducerId(_)
                    | K::AddPartitionsToTxn(_)
                    | K::AddOffsetsToTxn(_)
                    | K::EndTxn(_)
                    | K::FindCoordinator(_)
                    | K::Metadata(_)
            ),
        };
        match &req.body {
            K::Produce(_) => u.produce_bytes = Some(wire_bytes),
            K::Fetch(f) => {
                let follower = f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0;
                u.exempt = follower;
                u.consumer_fetch = !follower;
            }
            K::WriteTxnMarkers(_) => u.exempt = true,
            _ => {}
        }
        u
    }
}

/// The bytes of record data in a Fetch response (in the body and beside it, as file ranges):
/// what counts against `consumer_byte_rate`.
pub fn fetch_response_bytes(
    body: &ResponseKind,
    ranges: &[Option<fjord_storage::FileRange>],
) -> usize {
    let in_body: usize = match body {
        ResponseKind::Fetch(f) => f
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum(),
        _ => 0,
    };
    in_body + ranges.iter().flatten().map(|r| r.len()).sum::<usize>()
}

impl ClientQuotaManager {
    /// The throttle a handled request earns its client before its response is known:
    /// `producer_byte_rate` by the request's size and `request_percentage` by the time its
    /// handler took. The larger throttle wins (Kafka's `max(bandwidth, request)`), with its
    /// type.
    pub fn request_throttle(
        &self,
        usage: &RequestUsage,
        client: QuotaClient<'_>,
        handler_time: std::time::Duration,
        now_ms: i64,
    ) -> (i64, QuotaType) {
        if usage.exempt {
            return (0, QuotaType::Request);
        }
        let percent = if usage.waits {
            0.0
        } else {
            handler_time.as_nanos() as f64 * 100.0 / 1e9
        };
        let request = self.record(QuotaType::Request, client, percent, now_ms);
        let produce = usage.produce_bytes.map_or(0, |n| {
            self.record(QuotaType::Produce, client, n as f64, now_ms)
        });
        if produce > request {
            (produce, QuotaType::Produce)
        } else {
            (request, QuotaType::Request)
        }
    }
}

/// Kafka's THROTTLING_QUOTA_EXCEEDED (KIP-599).
pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;

/// A topic mutation (created or deleted partitions) under `controller_mutation_rate`, for one
/// CreateTopics, CreatePartitions or DeleteTopics request: strict versions (KIP-599) refuse
/// the topics that come once the client's bucket is in debt.
pub struct Mutations<'a> {
    quotas: &'a ClientQuotaManager,
    client: QuotaClient<'a>,
    strict: bool,
    api: &'static str,
}

impl<'a> Mutations<'a> {
    pub fn new(
        quotas: &'a ClientQuotaManager,
        client: QuotaClient<'a>,
        strict: bool,
        api: &'static str,
    ) -> Self {
        Mutations {
            quotas,
            client,
            strict,
            api,
        }
    }

    /// Whether the next topic may go ahead; `false` (strict only): answer it
    /// THROTTLING_QUOTA_EXCEEDED.
    pub fn admit(&self) -> bool {
        let t = self
            .quotas
            .mutation_throttle(self.client, fjord_protocol::clock::now_ms());
        if t > 0 && self.strict {
            self.quotas.note_refused(self.api);
            false
        } else {
            true
        }
    }

    /// A topic's `partitions` were created or deleted.
    pub fn record(&self, partitions: i64) {
        if partitions > 0 {
            self.quotas.record_mutations(
                self.client,
                partitions as f64,
                fjord_protocol::clock::now_ms(),
            );
        }
    }

    /// The response's `throttle_time_ms`: how long until the bucket is out of debt.
    pub fn throttle_time_ms(&self) -> i32 {
        let t = self
            .quotas
            .mutation_throttle(self.client, fjord_protocol::clock::now_ms());
        if t > 0 {
            self.quotas.note_throttle(QuotaType::ControllerMutation, t);
        }
        t.min(i32::MAX as i64) as i32
    }
}

/// The message Kafka sends with THROTTLING_QUOTA_EXCEEDED.
pub const THROTTLED_MESSAGE: &str = "The throttling quota has been exceeded.";

#[cfg(test)]
mod tests {
    use fjord_metadata::client_quota::{EntityName, QuotaEntity, QuotaValue};

    use super::*;

    const CFG: QuotaConfig = QuotaConfig {
        samples: 11,
        window_ms: 1000,
    };

    /// A manager with one quota set.
    fn manager(entity: QuotaEntity, key: &str, value: f64) -> ClientQuotaManager {
        let m = ClientQuotaManager::new(CFG, &Registry::new());
        let mut q = ClientQuotas::default();
        q.apply(&entity, key, Some(QuotaValue(value)));
        m.update(&q);
        m
    }

    #[test]
    fn rate_counts_at_least_the_full_windows() {
        let mut r = Rate::new(0);
        r.record(&CFG, 10_000.0, 0);
        // One event at the start: taken over 10 windows, not 1 ms.
        assert_eq!(r.measure(&CFG, 0), (1000.0, 10_000));
        // 20 s of 1000 bytes every 100 ms: 10 kB/s.
        let mut r = Rate::new(0);
        for t in (0..20_000).step_by(100) {
            r.record(&CFG, 1000.0, t);
        }
        let (rate, window) = r.measure(&CFG, 20_000);
        assert!((rate - 10_000.0).abs() < 1000.0, "{rate}");
        assert!((10_000..=12_000).contains(&window), "{window}");
        // Long idle: every sample expires.
        assert_eq!(r.measure(&CFG, 60_000).0, 0.0);
    }

    #[test]
    fn throttle_time_brings_the_rate_back_to_the_limit() {
        assert_eq!(throttle_time_ms(100.0, 100.0, 10_000), 0);
        assert_eq!(throttle_time_ms(50.0, 100.0, 10_000), 0);
        // Twice the limit over 10 s: wait 10 s more.
        assert_eq!(throttle_time_ms(200.0, 100.0, 10_000), 10_000);
        assert_eq!(throttle_time_ms(110.0, 100.0, 10_000), 1000);
        // Check the definition: observed × W / (W + X) = limit.
        let x = throttle_time_ms(1234.0, 1000.0, 10_500) as f64;
        assert!((1234.0 * 10_500.0 / (10_500.0 + x) - 1000.0).abs() < 0.5);
    }

    /// A client sending as fast as it is allowed, honouring each throttle, ends at its limit.
    #[test]
    fn a_throttled_client_converges_to_its_limit() {
        let m = manager(
            QuotaEntity {
                user: None,
                client_id: Some(EntityName::Name("app".into())),
            },
            PRODUCER_BYTE_RATE,
            1_000_000.0,
        );
        let c = QuotaClient {
            user: "ANONYMOUS",
            client_id: "app",
        };
        let other = QuotaClient {
            user: "ANONYMOUS",
            client_id: "other",
        };
        assert!(m.enabled(QuotaType::Produce));
        assert!(!m.enabled(QuotaType::Fetch));
        let (mut now, mut sent) = (0i64, 0f64);
        let mut throttled = 0;
        while now < 30_000 {
            // 100 kB per request, 1 ms apart unless throttled: 100 MB/s wanted.
            sent += 100_000.0;
            let t = m.record(QuotaType::Produce, c, 100_000.0, now);
            if t > 0 {
                throttled += 1;
            }
            now += 1 + t;
            // Unlimited clients are not measured.
            assert_eq!(m.record(QuotaType::Produce, other, 100_000.0, now), 0);
        }
        let rate = sent / (now as f64 / 1000.0);
        assert!((rate - 1_000_000.0).abs() < 100_000.0, "{rate}");
        assert!(throttled > 20, "{throttled}");
        assert!(m.last_event(QuotaType::Produce, c).is_some());
        assert_eq!(m.sensors(), 1);
        // Sensors idle for an hour go.
        m.record(QuotaType::Produce, c, 1.0, now);
        m.record(
            QuotaType::Produce,
            c,
            1.0,
            now + INACTIVE_SENSOR_MS + PURGE_INTERVAL_MS,
        );
        assert_eq!(m.sensors(), 1);
    }

    /// A saturating client (64 KiB requests, honouring each throttle) measured over every
    /// 30 s window after its start stays within 5 % of its byte rate: no bursts. (With Kafka's
    /// long-window rule alone the same client read 0.75-1.10 of the quota.)
    #[test]
    fn a_saturating_client_is_paced_without_bursts() {
        let m = manager(
            QuotaEntity {
                user: None,
                client_id: Some(EntityName::Name("app".into())),
            },
            PRODUCER_BYTE_RATE,
            1_048_576.0,
        );
        let c = QuotaClient {
            user: "ANONYMOUS",
            client_id: "app",
        };
        let mut now = 0i64;
        let mut sent: Vec<(i64, f64)> = Vec::new();
        while now < 120_000 {
            let t = m.record(QuotaType::Produce, c, 65_536.0, now);
            sent.push((now, 65_536.0));
            now += 2 + t;
        }
        for start in (5_000..85_000).step_by(1000) {
            let bytes: f64 = sent
                .iter()
                .filter(|(at, _)| (start..start + 30_000).contains(at))
                .map(|(_, b)| b)
                .sum();
            let rate = bytes / 30.0 / 1_048_576.0;
            assert!(
                (rate - 1.0).abs() < 0.05,
                "{rate:.3} of the quota from {start} ms"
            );
        }
    }

    #[test]
    fn request_throttle_is_capped_at_one_window() {
        let m = manager(
            QuotaEntity {
                user: Some(EntityName::Default),
                client_id: None,
            },
            REQUEST_PERCENTAGE,
            1.0,
        );
        let c = QuotaClient {
            user: "alice",
            client_id: "x",
        };
        // 5 s of handler time at once: far over 1 %.
        assert_eq!(m.record(QuotaType::Request, c, 500.0, 0), 1000);
    }

    #[test]
    fn mutation_bucket_allows_a_burst_then_throttles() {
        let m = manager(
            QuotaEntity {
                user: None,
                client_id: Some(EntityName::Default),
            },
            CONTROLLER_MUTATION_RATE,
            2.0,
        );
        let c = QuotaClient {
            user: "u",
            client_id: "admin",
        };
        // Burst: 2/s × 11 × 1 s = 22 permits.
        assert_eq!(m.mutation_throttle(c, 0), 0);
        m.record_mutations(c, 20.0, 0);
        assert_eq!(m.mutation_throttle(c, 0), 0);
        // A topic of 10 partitions goes in (the bucket may go into debt) ...
        m.record_mutations(c, 10.0, 0);
        // ... and then the client waits 8 permits at 2/s.
        assert_eq!(m.mutation_throttle(c, 0), 4000);
        assert_eq!(m.mutation_throttle(c, 1000), 3000);
        assert_eq!(m.mutation_throttle(c, 4000), 0);
    }

    #[test]
    fn old_versions_are_throttled_by_the_broker() {
        assert!(client_throttles(ApiKey::Produce, 6));
        assert!(!client_throttles(ApiKey::Produce, 5));
        assert!(client_throttles(ApiKey::Fetch, 8));
        assert!(!client_throttles(ApiKey::Fetch, 7));
        assert!(!client_throttles(ApiKey::DescribeClientQuotas, 1));
    }

    #[test]
    fn throttle_time_lands_in_responses() {
        let mut r = ResponseKind::Produce(Default::default());
        set_throttle_time(&mut r, 42);
        let ResponseKind::Produce(p) = r else {
            unreachable!()
        };
        assert_eq!(p.throttle_time_ms, 42);
    }

    #[test]
    fn config_bounds() {
        let get = |k: &str| match k {
            "quota.window.num" => "11".to_string(),
            _ => "2".to_string(),
        };
        assert_eq!(
            QuotaConfig::parse(&get).unwrap(),
            QuotaConfig {
                samples: 11,
                window_ms: 2000
            }
        );
        assert!(QuotaConfig::parse(&|_: &str| "0".to_string()).is_err());
    }
}
