//! Partition skew: bytes-in rates per partition on its leader, a sampled top-keys sketch per
//! partition, and a periodic check that warns when a partition takes far more than its share
//! of its topic. See docs/architecture.md, "Partition skew", and docs/operations.md.
//!
//! Layout:
//! - [`config`]: `skew.*` settings; pure parsing.
//! - [`sketch`]: the weighted Space-Saving sketch (fixed counters per partition).
//! - [`detect`]: rates from counter samples, ratios to each topic's mean, skew episodes —
//!   without I/O.
//! - [`http`]: `GET /v1/skew` on the admin port (every leader's rates and top keys, gathered
//!   by the answering broker), which `fjord topic skew` reads.
//!
//! Hot path: the produce handler calls [`Skew::on_produce`] after an append, which adds the
//! batch's bytes to the partition's own counter (one relaxed atomic add). With
//! `skew.sketch.enable`, one batch in `skew.sample.rate` per partition is also walked for its
//! keys (inflated again if compressed) and counted into that partition's sketch, taken with
//! `try_lock`: a batch arriving while another is being sampled is simply not sampled, so no
//! producer ever waits on the sketch, and there is no lock shared between partitions.

pub mod config;
pub mod detect;
pub mod http;
pub mod sketch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::clock::now_ms;
use fjord_protocol::records::{for_each_key, MAX_INFLATE_RATIO};
use parking_lot::Mutex;
use prometheus::{GaugeVec, IntCounter, IntGauge, Opts, Registry};
use serde_json::{json, Value};
use tokio::sync::watch;

pub use config::SkewConfig;
use detect::{Episodes, Event, Finding, PartitionRate, RateWindow};
use sketch::{Counter, KeyPrefix, SpaceSaving};

use crate::broker::Broker;
use crate::partition::Partition;

/// Partitions led here whose bytes-in rate gets a `fjord_partition_bytes_in_rate` series: the
/// hottest ones (and every skewed one), so the label set does not grow with the partitions.
pub const MAX_RATE_SERIES: usize = 20;
/// Top keys reported per partition by default.
pub const DEFAULT_TOP_KEYS: usize = 5;
/// A key is reported only if it surely has this share of its partition's sampled bytes.
pub const MIN_KEY_SHARE: f64 = 0.01;

/// One partition's skew counters (a field of [`Partition`]).
pub struct PartitionSkew {
    /// Record bytes appended as leader since this broker started (duplicates not counted).
    bytes_in: AtomicU64,
    /// Batches seen, for 1-in-N sampling.
    batches: AtomicU64,
    /// Made on the first sampled batch: partitions without sampled traffic cost no sketch.
    sketch: Mutex<Option<Box<SpaceSaving>>>,
    /// When `bytes_in` was 0.
    since_ms: i64,
}

impl Default for PartitionSkew {
    fn default() -> Self {
        PartitionSkew {
            bytes_in: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            sketch: Mutex::new(None),
            since_ms: now_ms(),
        }
    }
}

impl PartitionSkew {
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }
}

struct SkewMetrics {
    rate: GaugeVec,
    ratio: GaugeVec,
    skewed: IntGauge,
    episodes: IntCounter,
    sampled: IntCounter,
}

/// What the periodic check keeps between runs.
#[derive(Default)]
struct CheckState {
    windows: HashMap<(Arc<str>, i32), RateWindow>,
    episodes: Episodes,
    /// Label sets of `fjord_partition_bytes_in_rate` set at the last check.
    rate_series: BTreeSet<(String, String)>,
}

/// The broker's partition-skew state.
pub struct Skew {
    pub config: SkewConfig,
    /// Keyed per process, so key hashes cannot be chosen to collide.
    hasher: std::hash::RandomState,
    metrics: SkewMetrics,
    state: Mutex<CheckState>,
}

impl Skew {
    pub fn new(config: &SkewConfig, registry: &Registry) -> Skew {
        let rate = GaugeVec::new(
            Opts::new(
                "partition_bytes_in_rate",
                "Record bytes per second appended to a partition led by this broker, over skew.window.ms (the hottest partitions and every skewed one)",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        let ratio = GaugeVec::new(
            Opts::new(
                "partition_skew_ratio",
                "A skewed partition's bytes-in rate over its topic's mean per partition (only partitions in a skew episode)",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        let skewed = IntGauge::new(
            "skewed_partitions",
            "Partitions led by this broker in a skew episode (rate >= skew.warn.ratio x the topic's mean and >= skew.warn.min.bytes.per.sec)",
        )
        .expect("metric");
        let episodes = IntCounter::new(
            "skew_episodes_total",
            "Skew episodes started on partitions led by this broker",
        )
        .expect("metric");
        let sampled = IntCounter::new(
            "skew_sampled_batches_total",
            "Produce batches sampled into the partitions' top-keys sketches",
        )
        .expect("metric");
        let enabled = IntGauge::new(
            "skew_sketch_enabled",
            "1 while produce batches are sampled for top keys (skew.sketch.enable)",
        )
        .expect("metric");
        enabled.set(config.sketch_enabled as i64);
        for m in [
            Box::new(rate.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ratio.clone()),
            Box::new(skewed.clone()),
            Box::new(episodes.clone()),
            Box::new(sampled.clone()),
            Box::new(enabled),
        ] {
            registry.register(m).expect("unique metric");
        }
        Skew {
            config: config.clone(),
            hasher: std::hash::RandomState::new(),
            metrics: SkewMetrics {
                rate,
                ratio,
                skewed,
                episodes,
                sampled,
            },
            state: Mutex::new(CheckState::default()),
        }
    }

    /// A batch of `bytes` record bytes (`records`, validated) was appended to `p` as leader.
    pub fn on_produce(&self, p: &Partition, records: &[u8], bytes: u64) {
        let s = &p.skew;
        s.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        if !self.config.sketch_enabled
            || !s
                .batches
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.config.sample_every)
        {
            return;
        }
        let Some(mut guard) = s.sketch.try_lock() else {
            return;
        };
        let sketch = guard.get_or_insert_with(|| Box::new(SpaceSaving::new(self.config.counters)));
        self.sample(sketch, records);
        self.metrics.sampled.inc();
    }

    /// Count the keys of one batch into `sketch`, weighted by record size.
    fn sample(&self, sketch: &mut SpaceSaving, records: &[u8]) {
        // The batch passed validation with a cap at least this large.
        let cap = (records.len() as u64).max(1 << 20) * MAX_INFLATE_RATIO;
        for_each_key(records, cap, &mut |r| {
            let hash = self.hasher.hash_one((r.key, r.key_len));
            let prefix = || r.key.map(|k| KeyPrefix::new(k, r.key_len));
            sketch.add(hash, prefix, r.record_len as f64);
        });
    }

    /// This broker's report for `topic` (every topic with traffic here if `None`): each
    /// partition it leads with its rate and, with `top_keys > 0`, its heaviest keys.
    pub fn local_report(&self, b: &Broker, topic: Option<&str>, top_keys: usize) -> Value {
        let now = now_ms();
        let me = b.node_id();
        let window = self.config.window_ms;
        let topics = match topic {
            Some(t) => b.topic(t).into_iter().collect(),
            None => b.topics(),
        };
        let mut state = self.state.lock();
        let mut rows = Vec::new();
        for t in topics {
            let mut led = Vec::new();
            for p in &t.partitions {
                if p.with_replica(|r| r.assignment().leader) != me {
                    continue;
                }
                let bytes = p.skew.bytes_in();
                let w = state
                    .windows
                    .entry((t.name.clone(), p.index))
                    .or_insert_with(|| RateWindow::new(p.skew.since_ms));
                let (rate, in_window) = w.rate(now, bytes, window);
                led.push((p, rate, in_window));
            }
            if topic.is_none() && led.iter().all(|(_, r, _)| *r == 0.0) {
                continue;
            }
            for (p, rate, in_window) in led {
                let mut row = json!({
                    "topic": &*t.name,
                    "partition": p.index,
                    "rate": rate,
                    "bytes": in_window,
                    "warned": state.episodes.contains(&t.name, p.index),
                });
                if top_keys > 0 {
                    let (total, top) = top_of(p, top_keys);
                    row["sampled_bytes"] = json!(total);
                    row["top_keys"] =
                        Value::Array(top.iter().map(|c| key_json(c, total)).collect());
                }
                rows.push(row);
            }
        }
        json!({
            "node_id": me,
            "sketch_enabled": self.config.sketch_enabled,
            "window_ms": window,
            "partitions": rows,
        })
    }

    /// One check: sample the counters, decay the sketches, compare each partition led here
    /// with its topic's mean (all leaders' reports in `brokers`), log and count episodes.
    fn check(&self, b: &Broker, brokers: &[Value]) {
        let now = now_ms();
        let me = b.node_id();
        let answered: BTreeSet<i32> = brokers
            .iter()
            .filter_map(|v| v["node_id"].as_i64().map(|n| n as i32))
            .collect();
        let topics = topic_rates(b, brokers, &answered, None);
        let findings = detect::ratios(&topics);
        let decay = 0.5f64.powf(self.config.interval_ms as f64 / self.config.window_ms as f64);
        let mut led_here: HashMap<(String, i32), Arc<Partition>> = HashMap::new();
        let mut state = self.state.lock();
        let mut alive = std::collections::HashSet::new();
        for t in b.topics() {
            for p in &t.partitions {
                let key = (t.name.clone(), p.index);
                if p.with_replica(|r| r.assignment().leader) == me {
                    let bytes = p.skew.bytes_in();
                    state
                        .windows
                        .entry(key.clone())
                        .or_insert_with(|| RateWindow::new(p.skew.since_ms))
                        .push(now, bytes, self.config.window_ms);
                    led_here.insert((t.name.to_string(), p.index), p.clone());
                }
                if let Some(s) = p.skew.sketch.lock().as_mut() {
                    s.decay(decay);
                }
                alive.insert(key);
            }
        }
        state.windows.retain(|k, _| alive.contains(k));
        let mine: Vec<Finding> = findings
            .into_iter()
            .filter(|f| led_here.contains_key(&(f.topic.clone(), f.partition)))
            .collect();
        let events = state.episodes.update(&mine, &self.config);
        for e in events {
            match e {
                Event::Started(f) => {
                    self.metrics.episodes.inc();
                    let top = led_here
                        .get(&(f.topic.clone(), f.partition))
                        .map(|p| top_of(p, 1))
                        .and_then(|(total, top)| top.first().map(|c| key_json(c, total)));
                    let (key, share) = match &top {
                        Some(k) => (
                            k["key"].as_str().unwrap_or("").to_string(),
                            format!("{:.0}%", k["share"].as_f64().unwrap_or(0.0) * 100.0),
                        ),
                        None => ("(not sampled)".into(), "-".into()),
                    };
                    tracing::warn!(topic = %f.topic, partition = f.partition,
                        rate_bytes_per_sec = f.rate.round(), topic_mean_bytes_per_sec = f.mean.round(),
                        ratio = format!("{:.2}", f.ratio), top_key = %key, top_key_share = %share,
                        "partition skew: this partition takes far more bytes than its topic's mean per partition");
                }
                Event::Ended(f) => {
                    tracing::info!(topic = %f.topic, partition = f.partition,
                        rate_bytes_per_sec = f.rate.round(), ratio = format!("{:.2}", f.ratio),
                        "partition skew ended");
                    let _ = self
                        .metrics
                        .ratio
                        .remove_label_values(&[&f.topic, &f.partition.to_string()]);
                }
            }
        }
        // Gauges: ratios of the skewed, rates of the hottest and the skewed.
        let mut by_rate: Vec<&Finding> = mine.iter().filter(|f| f.rate > 0.0).collect();
        by_rate.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        let mut series = BTreeSet::new();
        for (i, f) in by_rate.iter().enumerate() {
            let skewed = state.episodes.contains(&f.topic, f.partition);
            let labels = [f.topic.as_str(), &f.partition.to_string()];
            if skewed {
                self.metrics.ratio.with_label_values(&labels).set(f.ratio);
            }
            if skewed || i < MAX_RATE_SERIES {
                self.metrics.rate.with_label_values(&labels).set(f.rate);
                series.insert((labels[0].to_string(), labels[1].to_string()));
            }
        }
        for (t, p) in state.rate_series.difference(&series) {
            let _ = self.metrics.rate.remove_label_values(&[t, p]);
        }
        state.rate_series = series;
        self.metrics.skewed.set(state.episodes.len() as i64);
    }
}

/// The heaviest `n` keys of `p`'s sketch and the weight it counted.
/// The heaviest `n` keys of `p`'s sketch that surely have at least [`MIN_KEY_SHARE`] of its
/// weight (estimate minus error), and the weight it counted. Without the floor, a partition
/// of evenly spread keys would show whichever keys last took a counter, each with an
/// estimate of about 1/k inherited from the key it replaced.
fn top_of(p: &Partition, n: usize) -> (f64, Vec<Counter>) {
    let Some(s) = p
        .skew
        .sketch
        .lock()
        .as_ref()
        .map(|s| (s.total(), s.top(s.capacity())))
    else {
        return (0.0, Vec::new());
    };
    let (total, mut top) = s;
    top.retain(|c| total > 0.0 && (c.weight - c.error) / total >= MIN_KEY_SHARE);
    top.truncate(n);
    (total, top)
}

/// A key for people: UTF-8 when printable, else hex; `(null)` for records without a key.
pub fn display_key(key: Option<&KeyPrefix>) -> (String, &'static str) {
    match key {
        None => ("(null)".into(), "null"),
        Some(k) => {
            let printable = std::str::from_utf8(k.bytes())
                .ok()
                .filter(|s| !s.chars().any(char::is_control));
            let (mut s, enc) = match printable {
                Some(s) => (s.to_string(), "utf8"),
                None => (
                    k.bytes().iter().map(|b| format!("{b:02x}")).collect(),
                    "hex",
                ),
            };
            if k.truncated() {
                s.push('…');
            }
            (s, enc)
        }
    }
}

fn key_json(c: &Counter, total: f64) -> Value {
    let (key, encoding) = display_key(c.key.as_ref());
    let share = |w: f64| if total > 0.0 { w / total } else { 0.0 };
    json!({
        "key": key,
        "encoding": encoding,
        "key_len": c.key.map_or(0, |k| k.len),
        "share": share(c.weight),
        // The estimate may overcount by at most this share.
        "error_share": share(c.error),
    })
}

/// Every topic's partitions with the rate their leader reported, from the leaders' reports in
/// `brokers`: a partition whose leader answered but did not list it is idle (rate 0); one whose
/// leader did not answer (or that has none) is left out, so the mean is over what is known.
pub fn topic_rates(
    b: &Broker,
    brokers: &[Value],
    answered: &BTreeSet<i32>,
    only: Option<&str>,
) -> BTreeMap<String, Vec<PartitionRate>> {
    let mut reported: BTreeMap<(String, i32), (f64, u64)> = BTreeMap::new();
    for v in brokers {
        for r in v["partitions"].as_array().into_iter().flatten() {
            if let (Some(t), Some(p)) = (r["topic"].as_str(), r["partition"].as_i64()) {
                reported.insert(
                    (t.to_string(), p as i32),
                    (
                        r["rate"].as_f64().unwrap_or(0.0),
                        r["bytes"].as_u64().unwrap_or(0),
                    ),
                );
            }
        }
    }
    let topics: BTreeSet<&str> = reported.keys().map(|(t, _)| t.as_str()).collect();
    let mut out = BTreeMap::new();
    for name in topics.into_iter().chain(only) {
        let Some(t) = b.topic(name) else { continue };
        let mut parts = Vec::new();
        for p in &t.partitions {
            let leader = p.with_replica(|r| r.assignment().leader);
            match reported.get(&(name.to_string(), p.index)) {
                Some((rate, bytes)) => parts.push(PartitionRate {
                    partition: p.index,
                    rate: *rate,
                    bytes: *bytes,
                }),
                None if answered.contains(&leader) => parts.push(PartitionRate {
                    partition: p.index,
                    rate: 0.0,
                    bytes: 0,
                }),
                None => {}
            }
        }
        out.insert(name.to_string(), parts);
    }
    out
}

/// Check every `skew.check.interval.ms` until shutdown.
pub async fn check_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.skew.config.interval_ms);
    loop {
        // A sleep after each check: a slow check (peers timing out) delays the next one.
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let b = broker.clone();
        let Ok(me) = tokio::task::spawn_blocking(move || b.skew.local_report(&b, None, 0)).await
        else {
            continue;
        };
        let mut brokers = vec![me];
        let mut errors = Vec::new();
        crate::accounting::http::gather(
            &broker,
            "/v1/skew?scope=local&keys=0",
            &mut brokers,
            &mut errors,
        )
        .await;
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.skew.check(&b, &brokers)).await;
    }
}

#[cfg(test)]
mod tests {
    use fjord_client::{Client, Compression, ProduceRecord};

    use super::*;

    /// One batch of `n` records of `value` bytes, 4 in 5 with key `hot`.
    fn batch(n: usize, value: usize, compression: Compression) -> bytes::Bytes {
        let records: Vec<ProduceRecord> = (0..n)
            .map(|i| {
                let key = if i % 5 == 4 {
                    format!("user-{i}")
                } else {
                    "hot".into()
                };
                ProduceRecord::new(Some(key), vec![b'v'; value])
            })
            .collect();
        Client::encode_batch(&records, compression).unwrap()
    }

    fn skew(enabled: bool, every: u64) -> Skew {
        let cfg = SkewConfig {
            sketch_enabled: enabled,
            sample_every: every,
            ..SkewConfig::default()
        };
        Skew::new(&cfg, &Registry::new())
    }

    fn partition() -> Partition {
        Partition::new("t".into(), uuid::Uuid::nil(), 0, 1)
    }

    #[test]
    fn sampled_batches_feed_the_partitions_sketch() {
        let s = skew(true, 2);
        let p = partition();
        for c in [Compression::None, Compression::Lz4] {
            let b = batch(100, 50, c);
            // Batches 0 and 2 of 4 are sampled.
            for _ in 0..4 {
                s.on_produce(&p, &b, b.len() as u64);
            }
        }
        assert_eq!(s.metrics.sampled.get(), 4);
        let (total, top) = top_of(&p, 3);
        // The other keys appear once each: below the floor, not reported.
        assert_eq!(top.len(), 1, "{top:?}");
        let hot = key_json(&top[0], total);
        assert_eq!(hot["key"], "hot");
        let share = hot["share"].as_f64().unwrap();
        // By record bytes: the hot records have the shorter key.
        assert!((0.77..0.81).contains(&share), "{share}");
        // A batch arriving while the sketch is busy is counted in bytes but not sampled.
        let guard = p.skew.sketch.lock();
        let b = batch(10, 10, Compression::None);
        let before = p.skew.bytes_in();
        s.on_produce(&p, &b, 7);
        s.on_produce(&p, &b, 7);
        drop(guard);
        assert_eq!(p.skew.bytes_in(), before + 14);
        assert_eq!(s.metrics.sampled.get(), 4);
    }

    #[test]
    fn with_the_sketch_off_only_bytes_are_counted() {
        let s = skew(false, 1);
        let p = partition();
        let b = batch(10, 10, Compression::None);
        s.on_produce(&p, &b, 100);
        assert_eq!(p.skew.bytes_in(), 100);
        assert!(p.skew.sketch.lock().is_none());
        assert_eq!(s.metrics.sampled.get(), 0);
    }

    #[test]
    fn keys_print_as_text_or_hex() {
        let k = |b: &[u8], len| display_key(Some(&KeyPrefix::new(b, len)));
        assert_eq!(k(b"customer-42", 11), ("customer-42".into(), "utf8"));
        assert_eq!(k(&[0, 1, 0xff], 3), ("0001ff".into(), "hex"));
        assert_eq!(k(b"a\nb", 3), ("610a62".into(), "hex"));
        assert_eq!(k(&[b'x'; 32], 40).0, format!("{}…", "x".repeat(32)));
        assert_eq!(display_key(None), ("(null)".into(), "null"));
    }

    /// ns per sampled record, key walk and sketch together, for docs/performance.md:
    /// `cargo test --release -p fjord-broker --lib skew::tests::ns_per_sampled_record -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn ns_per_sampled_record() {
        for (c, name) in [(Compression::None, "none"), (Compression::Lz4, "lz4")] {
            // About 16 KB of values: fjord perf's batch of 100-byte records.
            let b = batch(160, 100, c);
            let s = skew(true, 1);
            let p = partition();
            let rounds = 20_000;
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                s.on_produce(&p, &b, b.len() as u64);
            }
            let ns = t.elapsed().as_nanos() as f64 / (rounds * 160) as f64;
            println!(
                "{name}: {ns:.1} ns per sampled record ({:.1} µs per 160-record batch of {} bytes)",
                ns * 160.0 / 1000.0,
                b.len()
            );
        }
    }
}
