//! Usage per topic and per client id over time windows, for cost attribution (LinkedIn's Bean
//! Counter idea): who wrote and read how much, and what each topic keeps on disk.
//!
//! The hot path adds to a [`UsageCell`] (two atomics): a connection holds its client id's cell,
//! and the produce and fetch handlers add a topic's record bytes to its cell under a read lock
//! of the topic table (as a Prometheus counter vector does). Once a minute [`Usage::roll`]
//! moves what the cells gained since the last roll into a minute bucket and the current hour's
//! bucket; minute buckets are kept for [`MINUTES_KEPT`] minutes, hour buckets for
//! [`HOURS_KEPT`] hours, all in memory (lost on restart). A query over the last `since` adds
//! what the cells gained since the last roll to the buckets inside the window: minute
//! resolution up to [`MINUTES_KEPT`] minutes back, whole hours beyond.
//!
//! The tables are capped ([`MAX_TOPICS`], [`MAX_CLIENT_IDS`]): keys past the cap are counted
//! under [`OVERFLOW_KEY`], so a client inventing client ids (or topic names) cannot make the
//! broker keep unbounded state. A cell that nobody holds and that gained nothing since the
//! last roll is dropped at the roll (its bytes are in the buckets already), which frees its
//! place for new keys.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::conn_limits::LogThrottle;

/// Topics tracked at once; more are counted under [`OVERFLOW_KEY`].
pub const MAX_TOPICS: usize = 10_000;
/// Client ids tracked at once; more are counted under [`OVERFLOW_KEY`].
pub const MAX_CLIENT_IDS: usize = 1_000;
/// The row of keys over a table's cap.
pub const OVERFLOW_KEY: &str = "(other)";
/// Client ids are cut to this many bytes (a request header allows 32 KiB).
pub const MAX_CLIENT_ID_LEN: usize = 255;
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
/// Minute buckets kept: windows up to this many minutes have minute resolution.
pub const MINUTES_KEPT: i64 = 120;
/// Hour buckets kept: the longest window.
pub const HOURS_KEPT: i64 = 48;

/// Bytes in and out of one topic or client id, as they grow.
#[derive(Debug, Default)]
pub struct UsageCell {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl UsageCell {
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
    fn load(&self) -> InOut {
        InOut {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Bytes in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InOut {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl InOut {
    fn add(&mut self, o: InOut) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
    fn minus(self, o: InOut) -> InOut {
        InOut {
            bytes_in: self.bytes_in.saturating_sub(o.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(o.bytes_out),
        }
    }
    fn is_zero(self) -> bool {
        self.bytes_in == 0 && self.bytes_out == 0
    }
}

/// What a window is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Topic,
    Client,
}

impl By {
    pub fn parse(s: &str) -> Result<By, String> {
        match s {
            "topic" => Ok(By::Topic),
            "client" => Ok(By::Client),
            _ => Err(format!("by must be topic or client, got {s:?}")),
        }
    }
    fn label(self) -> &'static str {
        match self {
            By::Topic => "topic",
            By::Client => "client",
        }
    }
}

/// Cells by key, capped.
struct CellTable {
    by: By,
    cells: RwLock<HashMap<Arc<str>, Arc<UsageCell>>>,
    cap: usize,
    overflow_log: Mutex<LogThrottle>,
}

impl CellTable {
    fn new(by: By, cap: usize) -> CellTable {
        let mut cells = HashMap::new();
        cells.insert(Arc::from(OVERFLOW_KEY), Arc::new(UsageCell::default()));
        CellTable {
            by,
            cells: RwLock::new(cells),
            cap,
            overflow_log: Mutex::new(LogThrottle::new(Duration::from_secs(60))),
        }
    }

    /// The cell of `key`; the overflow cell when the table is full (`overflowed` counts it).
    fn cell(&self, key: &str, overflowed: &IntCounterVec) -> Arc<UsageCell> {
        if let Some(c) = self.cells.read().get(key) {
            return c.clone();
        }
        let mut cells = self.cells.write();
        if let Some(c) = cells.get(key) {
            return c.clone();
        }
        // The overflow row does not take a place.
        if cells.len() > self.cap {
            overflowed.with_label_values(&[self.by.label()]).inc();
            if let Some(more) = self.overflow_log.lock().admit(Instant::now()) {
                let shown: String = key.chars().take(80).collect();
                tracing::warn!(table = self.by.label(), key = %shown, cap = self.cap, times_before = more,
                    "usage counted under \"(other)\": too many distinct keys in use");
            }
            return cells.get(OVERFLOW_KEY).expect("overflow cell").clone();
        }
        let c = Arc::new(UsageCell::default());
        cells.insert(key.into(), c.clone());
        c
    }

    /// Add to `key`'s cell without holding on to it.
    fn add(&self, key: &str, n: InOut, overflowed: &IntCounterVec) {
        {
            let cells = self.cells.read();
            if let Some(c) = cells.get(key) {
                c.add_in(n.bytes_in);
                c.add_out(n.bytes_out);
                return;
            }
        }
        let c = self.cell(key, overflowed);
        c.add_in(n.bytes_in);
        c.add_out(n.bytes_out);
    }

    /// What every cell gained since `last` (updated); drops cells nobody holds that gained
    /// nothing, since their bytes are in the buckets already.
    fn take_deltas(&self, last: &mut HashMap<Arc<str>, InOut>) -> HashMap<Arc<str>, InOut> {
        let mut out = HashMap::new();
        let mut cells = self.cells.write();
        cells.retain(|key, cell| {
            let now = cell.load();
            let before = last.get(key).copied().unwrap_or_default();
            let delta = now.minus(before);
            if !delta.is_zero() {
                out.insert(key.clone(), delta);
                last.insert(key.clone(), now);
                return true;
            }
            // Only the table holds it (no connection; handlers add under the read lock).
            let idle = Arc::strong_count(cell) == 1 && &**key != OVERFLOW_KEY;
            if idle {
                last.remove(key);
            }
            !idle
        });
        out
    }

    /// What every cell gained since `last`, without changing anything.
    fn live_deltas(&self, last: &HashMap<Arc<str>, InOut>) -> Vec<(Arc<str>, InOut)> {
        self.cells
            .read()
            .iter()
            .filter_map(|(k, c)| {
                let d = c.load().minus(last.get(k).copied().unwrap_or_default());
                (!d.is_zero()).then(|| (k.clone(), d))
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.cells.read().len()
    }
}

/// The bytes of one period.
#[derive(Debug, Default)]
struct Bucket {
    start_ms: i64,
    end_ms: i64,
    topics: HashMap<Arc<str>, InOut>,
    clients: HashMap<Arc<str>, InOut>,
}

impl Bucket {
    fn merge(&mut self, from: &Bucket) {
        self.end_ms = self.end_ms.max(from.end_ms);
        for (k, v) in &from.topics {
            self.topics.entry(k.clone()).or_default().add(*v);
        }
        for (k, v) in &from.clients {
            self.clients.entry(k.clone()).or_default().add(*v);
        }
    }

    fn table(&self, by: By) -> &HashMap<Arc<str>, InOut> {
        match by {
            By::Topic => &self.topics,
            By::Client => &self.clients,
        }
    }
}

struct History {
    /// When the last roll happened (the start of the live period).
    rolled_ms: i64,
    last_topics: HashMap<Arc<str>, InOut>,
    last_clients: HashMap<Arc<str>, InOut>,
    minutes: VecDeque<Bucket>,
    /// Wall-clock hours (a roll's bucket goes to the hour it ended in).
    hours: VecDeque<Bucket>,
}

/// A window's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The start the caller asked for (now - since).
    pub from_ms: i64,
    pub to_ms: i64,
    /// The earliest time the answer covers: the first bucket counted, or when this broker
    /// started counting if later.
    pub covered_from_ms: i64,
    /// `minute`, or `hour` for windows longer than the minute buckets reach.
    pub resolution: String,
    pub rows: BTreeMap<String, InOut>,
}

/// Usage per topic and per client id on this broker.
pub struct Usage {
    topics: CellTable,
    clients: CellTable,
    history: Mutex<History>,
    started_ms: i64,
    /// Keys counted under `(other)` because their table was full, by table.
    overflowed: IntCounterVec,
}

impl Usage {
    pub fn new(now_ms: i64, registry: &Registry) -> Usage {
        let overflowed = IntCounterVec::new(
            Opts::new(
                "usage_overflow_total",
                "Usage additions counted under \"(other)\" because the table of topics or client ids was full",
            ),
            &["table"],
        )
        .expect("metric");
        for t in ["topic", "client"] {
            overflowed.with_label_values(&[t]);
        }
        registry
            .register(Box::new(overflowed.clone()))
            .expect("unique metric");
        Usage {
            topics: CellTable::new(By::Topic, MAX_TOPICS),
            clients: CellTable::new(By::Client, MAX_CLIENT_IDS),
            history: Mutex::new(History {
                rolled_ms: now_ms,
                last_topics: HashMap::new(),
                last_clients: HashMap::new(),
                minutes: VecDeque::new(),
                hours: VecDeque::new(),
            }),
            started_ms: now_ms,
            overflowed,
        }
    }

    /// Record bytes a producer appended to `topic` (this broker leads the partition).
    pub fn topic_in(&self, topic: &str, bytes: u64) {
        self.topics.add(
            topic,
            InOut {
                bytes_in: bytes,
                bytes_out: 0,
            },
            &self.overflowed,
        );
    }

    /// Record bytes this broker served to consumers of `topic`.
    pub fn topic_out(&self, topic: &str, bytes: u64) {
        self.topics.add(
            topic,
            InOut {
                bytes_in: 0,
                bytes_out: bytes,
            },
            &self.overflowed,
        );
    }

    /// The cell of a client id (cut to [`MAX_CLIENT_ID_LEN`] bytes), for a connection to hold.
    pub fn client(&self, client_id: &str) -> Arc<UsageCell> {
        let mut end = client_id.len().min(MAX_CLIENT_ID_LEN);
        while !client_id.is_char_boundary(end) {
            end -= 1;
        }
        self.clients.cell(&client_id[..end], &self.overflowed)
    }

    /// Close the current period: its bytes go to a minute bucket and the hour's bucket; old
    /// buckets are dropped.
    pub fn roll(&self, now_ms: i64) {
        let mut h = self.history.lock();
        let h = &mut *h;
        let topics = self.topics.take_deltas(&mut h.last_topics);
        let clients = self.clients.take_deltas(&mut h.last_clients);
        let bucket = Bucket {
            start_ms: h.rolled_ms,
            end_ms: now_ms,
            topics,
            clients,
        };
        h.rolled_ms = now_ms;
        let hour = now_ms - now_ms.rem_euclid(HOUR_MS);
        match h.hours.back_mut() {
            Some(b) if b.start_ms == hour => b.merge(&bucket),
            _ => {
                let mut b = Bucket {
                    start_ms: hour,
                    end_ms: now_ms,
                    ..Bucket::default()
                };
                b.merge(&bucket);
                h.hours.push_back(b);
            }
        }
        if !(bucket.topics.is_empty() && bucket.clients.is_empty()) {
            h.minutes.push_back(bucket);
        }
        while h
            .minutes
            .front()
            .is_some_and(|b| b.end_ms < now_ms - MINUTES_KEPT * MINUTE_MS)
        {
            h.minutes.pop_front();
        }
        while h
            .hours
            .front()
            .is_some_and(|b| b.start_ms + HOUR_MS < now_ms - HOURS_KEPT * HOUR_MS)
        {
            h.hours.pop_front();
        }
    }

    /// Bytes in and out per topic or client id over the last `since_ms` (at most
    /// [`HOURS_KEPT`] hours).
    pub fn query(&self, by: By, since_ms: i64, now_ms: i64) -> Window {
        let from_ms = now_ms - since_ms;
        let h = self.history.lock();
        let (table, last) = match by {
            By::Topic => (&self.topics, &h.last_topics),
            By::Client => (&self.clients, &h.last_clients),
        };
        let mut rows: BTreeMap<String, InOut> = BTreeMap::new();
        for (k, v) in table.live_deltas(last) {
            rows.entry(k.to_string()).or_default().add(v);
        }
        let mut covered_from_ms = h.rolled_ms;
        let minute_resolution = since_ms <= MINUTES_KEPT * MINUTE_MS;
        let buckets: Box<dyn Iterator<Item = &Bucket>> = if minute_resolution {
            Box::new(h.minutes.iter().filter(|b| b.end_ms > from_ms))
        } else {
            Box::new(h.hours.iter().filter(|b| b.start_ms + HOUR_MS > from_ms))
        };
        for b in buckets {
            covered_from_ms = covered_from_ms.min(b.start_ms);
            for (k, v) in b.table(by) {
                rows.entry(k.to_string()).or_default().add(*v);
            }
        }
        // Periods without traffic have no minute bucket: the window is covered back to its
        // start (or this broker's start).
        if minute_resolution {
            covered_from_ms = covered_from_ms.min(from_ms);
        }
        Window {
            from_ms,
            to_ms: now_ms,
            covered_from_ms: covered_from_ms.max(self.started_ms),
            resolution: if minute_resolution { "minute" } else { "hour" }.into(),
            rows,
        }
    }

    /// Keys tracked now (with the overflow row), for tests and gauges.
    pub fn tracked(&self, by: By) -> usize {
        match by {
            By::Topic => self.topics.len(),
            By::Client => self.clients.len(),
        }
    }
}

/// `24h`, `90m`, `30s`, `2d`, `1h30m`, or a number of seconds: a window length in ms.
pub fn parse_since(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 24h, 90m, 30s, 1h30m or 2d");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<i64>() {
        return if secs > 0 {
            Ok(secs * 1000)
        } else {
            Err(bad())
        };
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => MINUTE_MS,
            'h' => HOUR_MS,
            'd' => 24 * HOUR_MS,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage::new(0, &Registry::new())
    }

    #[test]
    fn windows_add_buckets_and_the_live_period() {
        let t0 = 10 * HOUR_MS;
        let u = Usage::new(t0, &Registry::new());
        u.topic_in("t", 100);
        let c = u.client("app");
        c.add_in(1000);
        u.roll(t0 + MINUTE_MS);
        u.topic_out("t", 5);
        c.add_out(50);
        u.roll(t0 + 2 * MINUTE_MS);
        u.topic_in("t", 1);
        // Live (not rolled yet) bytes count at once.
        let w = u.query(By::Topic, 10 * MINUTE_MS, t0 + 2 * MINUTE_MS + 10);
        assert_eq!(w.resolution, "minute");
        assert_eq!(
            w.rows["t"],
            InOut {
                bytes_in: 101,
                bytes_out: 5
            }
        );
        assert_eq!(w.covered_from_ms, t0);
        let w = u.query(By::Client, 10 * MINUTE_MS, t0 + 2 * MINUTE_MS + 10);
        assert_eq!(
            w.rows["app"],
            InOut {
                bytes_in: 1000,
                bytes_out: 50
            }
        );
        // A window that starts after the first minute leaves it out.
        let w = u.query(By::Topic, MINUTE_MS / 2, t0 + 2 * MINUTE_MS + 10);
        assert_eq!(
            w.rows["t"],
            InOut {
                bytes_in: 1,
                bytes_out: 5
            }
        );
        // Hours: the same bytes, at hour resolution.
        let w = u.query(By::Topic, 5 * HOUR_MS, t0 + 2 * MINUTE_MS + 10);
        assert_eq!(w.resolution, "hour");
        assert_eq!(w.rows["t"].bytes_in, 101);
    }

    #[test]
    fn old_buckets_leave_the_window_and_memory() {
        let t0 = 100 * HOUR_MS;
        let u = Usage::new(t0, &Registry::new());
        u.topic_in("old", 7);
        u.roll(t0 + MINUTE_MS);
        let later = t0 + 3 * HOUR_MS;
        u.topic_in("new", 3);
        u.roll(later);
        let w = u.query(By::Topic, HOUR_MS, later + 1);
        assert!(!w.rows.contains_key("old"), "{w:?}");
        assert_eq!(w.rows["new"].bytes_in, 3);
        let w = u.query(By::Topic, 24 * HOUR_MS, later + 1);
        assert_eq!(w.rows["old"].bytes_in, 7);
        u.roll(t0 + 60 * HOUR_MS);
        let h = u.history.lock();
        assert!(h.minutes.is_empty());
        assert!(h.hours.len() <= 1, "{}", h.hours.len());
    }

    #[test]
    fn tables_are_capped_with_an_overflow_row() {
        let u = usage();
        let held: Vec<_> = (0..MAX_CLIENT_IDS + 50)
            .map(|i| u.client(&format!("client-{i}")))
            .collect();
        for c in &held {
            c.add_in(1);
        }
        assert_eq!(u.tracked(By::Client), MAX_CLIENT_IDS + 1);
        let w = u.query(By::Client, HOUR_MS, 1);
        assert_eq!(w.rows[OVERFLOW_KEY].bytes_in, 50);
        assert_eq!(u.overflowed.with_label_values(&["client"]).get(), 50);
        // Idle cells nobody holds are dropped at a roll, freeing their places.
        drop(held);
        u.roll(MINUTE_MS);
        u.roll(2 * MINUTE_MS);
        assert_eq!(u.tracked(By::Client), 1);
        let w = u.query(By::Client, HOUR_MS, 2 * MINUTE_MS);
        assert_eq!(w.rows[OVERFLOW_KEY].bytes_in, 50);
        assert_eq!(w.rows["client-0"].bytes_in, 1);
        // A long client id is cut.
        let long = "é".repeat(200);
        u.client(&long).add_in(1);
        let w = u.query(By::Client, HOUR_MS, 2 * MINUTE_MS);
        assert!(w.rows.keys().all(|k| k.len() <= MAX_CLIENT_ID_LEN));
    }

    #[test]
    fn cells_held_by_connections_are_kept() {
        let u = usage();
        let c = u.client("held");
        u.roll(MINUTE_MS);
        u.roll(2 * MINUTE_MS);
        c.add_out(9);
        let w = u.query(By::Client, HOUR_MS, 2 * MINUTE_MS);
        assert_eq!(w.rows["held"].bytes_out, 9);
    }

    #[test]
    fn since_parses_units() {
        assert_eq!(parse_since("24h"), Ok(24 * HOUR_MS));
        assert_eq!(parse_since("90m"), Ok(90 * MINUTE_MS));
        assert_eq!(parse_since("30s"), Ok(30_000));
        assert_eq!(parse_since("2d"), Ok(48 * HOUR_MS));
        assert_eq!(parse_since("1h30m"), Ok(90 * MINUTE_MS));
        assert_eq!(parse_since("600"), Ok(600_000));
        for bad in ["", "0", "-5", "h", "5x", "10h5", "99999999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
