//! Consumer lag evaluation with Burrow's rules, without I/O.
//!
//! Every accepted offset commit adds a [`Sample`] (committed offset, the partition's log end
//! offset as consumers see it — the high watermark — and the time) to the partition's
//! [`Window`]: a ring of at most [`LagConfig::intervals`] samples (Burrow's `intervals`,
//! default 10). A commit closer than [`LagConfig::min_distance_ms`] (Burrow's `min-distance`,
//! default 1 s) to the newest sample replaces it rather than adding one, so a consumer that
//! commits every few milliseconds still leaves a window that spans some time.
//!
//! [`evaluate_partition`] applies Burrow's rules, in Burrow's order, given the partition's
//! current log end and the time (both passed in):
//! 1. the current lag is zero, or some sample in the window has zero lag → `OK`;
//! 2. a committed offset went back between two samples → `REWIND`;
//! 3. the time since the newest sample is longer than the window's span (newest − oldest
//!    sample time) → `STOP` (the consumer stopped committing while there is lag);
//! 4. every sample has the same committed offset → `STALL`;
//! 5. the lag never decreased from one sample to the next → `WARN`;
//! 6. otherwise `OK`.
//!
//! A group's status ([`evaluate_group`]) is the worst of its partitions', where `STOP`, `STALL`
//! and `REWIND` count as `ERR` (the statuses a group can have are `NOTFOUND`, `OK`, `WARN`,
//! `ERR`); it names the partition with the largest current lag (`maxlag`) and sums the lags.
//! `complete` is the share of partitions whose window is full.
//!
//! [`LagWindows`] holds the windows of every group and partition a coordinator has seen
//! commits for; the runtime drops those whose group or committed offset no longer exists
//! ([`LagWindows::retain`]), so memory is bounded by `intervals` × committed partitions.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

/// Window configuration (Burrow's storage `intervals` and `min-distance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagConfig {
    /// Samples kept per partition (at least 2 for any rule but "zero lag" to apply).
    pub intervals: usize,
    /// Commits closer than this to the newest sample replace it.
    pub min_distance_ms: i64,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            intervals: 10,
            min_distance_ms: 1000,
        }
    }
}

/// One commit as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The committed offset.
    pub offset: i64,
    /// When it was committed (ms since the epoch).
    pub timestamp: i64,
    /// The partition's log end offset (high watermark) when it was committed.
    pub log_end_offset: i64,
    /// `log_end_offset - offset`, at least 0.
    pub lag: i64,
}

/// The samples of one group's partition, oldest first; never more than `intervals`.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    /// Add a commit (see the module doc for `min_distance_ms`).
    pub fn push(&mut self, cfg: &LagConfig, offset: i64, log_end_offset: i64, now: i64) {
        let sample = Sample {
            offset,
            timestamp: now,
            log_end_offset,
            lag: (log_end_offset - offset).max(0),
        };
        if let Some(last) = self.samples.back_mut() {
            if now - last.timestamp < cfg.min_distance_ms {
                *last = sample;
                return;
            }
        }
        let cap = cfg.intervals.max(1);
        while self.samples.len() >= cap {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

/// Burrow's status constants, in Burrow's order (worse is greater; `as i64` is Burrow's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    NotFound = 0,
    Ok = 1,
    Warn = 2,
    Err = 3,
    Stop = 4,
    Stall = 5,
    Rewind = 6,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotFound => "NOTFOUND",
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Err => "ERR",
            Status::Stop => "STOP",
            Status::Stall => "STALL",
            Status::Rewind => "REWIND",
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One partition's evaluation (Burrow's `PartitionStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub status: Status,
    /// The oldest and newest samples of the window.
    pub start: Option<Sample>,
    pub end: Option<Sample>,
    /// The partition's log end now minus the newest committed offset.
    pub current_lag: i64,
    /// Share of the window filled (1.0 once it holds `intervals` samples).
    pub complete: f32,
    /// Estimated time behind, in ms (see [`time_lag_ms`]).
    pub time_lag_ms: i64,
}

/// Evaluate one partition's window against its current log end at `now`.
pub fn evaluate_partition(
    cfg: &LagConfig,
    topic: &str,
    partition: i32,
    window: &Window,
    log_end_offset: i64,
    now: i64,
) -> PartitionStatus {
    let s = &window.samples;
    let current_lag = s.back().map_or(0, |l| (log_end_offset - l.offset).max(0));
    PartitionStatus {
        topic: topic.to_string(),
        partition,
        status: rules(s, current_lag, now),
        start: s.front().copied(),
        end: s.back().copied(),
        current_lag,
        complete: (s.len() as f32 / cfg.intervals.max(1) as f32).min(1.0),
        time_lag_ms: time_lag_ms(window, now),
    }
}

fn rules(s: &VecDeque<Sample>, current_lag: i64, now: i64) -> Status {
    let (Some(first), Some(last)) = (s.front(), s.back()) else {
        return Status::Ok;
    };
    let pairs = || s.iter().zip(s.iter().skip(1));
    // Rule 1: lag was zero at some point of the window (or is zero now).
    if current_lag == 0 || s.iter().any(|x| x.lag == 0) {
        return Status::Ok;
    }
    // Rule 2: the committed offset went back.
    if pairs().any(|(a, b)| b.offset < a.offset) {
        return Status::Rewind;
    }
    // Rule 3: no commit for longer than the window spans.
    if now - last.timestamp > last.timestamp - first.timestamp {
        return Status::Stop;
    }
    // Rule 4: the same offset committed over the whole window.
    if pairs().all(|(a, b)| a.offset == b.offset) {
        return Status::Stall;
    }
    // Rule 5: lag never decreased.
    if pairs().all(|(a, b)| b.lag >= a.lag) {
        return Status::Warn;
    }
    Status::Ok
}

/// How far behind in time the consumer is, estimated from the window without reading records:
/// the record at the newest committed offset `c` was appended before the first sample whose
/// log end passed `c`, so the consumer is about `now` minus that sample's time behind. When the
/// oldest sample already had `c` in the log this is a lower bound; with no lag it is 0.
pub fn time_lag_ms(window: &Window, now: i64) -> i64 {
    let Some(last) = window.samples.back() else {
        return 0;
    };
    if last.lag == 0 {
        return 0;
    }
    window
        .samples
        .iter()
        .find(|x| x.log_end_offset > last.offset)
        .map_or(0, |x| (now - x.timestamp).max(0))
}

/// A group's evaluation (Burrow's `ConsumerGroupStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub status: Status,
    pub complete: f32,
    /// Every partition with a window, sorted by topic and partition.
    pub partitions: Vec<PartitionStatus>,
    pub partition_count: usize,
    /// The partition with the largest current lag.
    pub maxlag: Option<PartitionStatus>,
    pub totallag: i64,
}

/// Worst of the partitions (STOP, STALL and REWIND count as ERR), max lag, total lag.
pub fn evaluate_group(group: &str, mut partitions: Vec<PartitionStatus>) -> GroupStatus {
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut status = if partitions.is_empty() {
        Status::NotFound
    } else {
        Status::Ok
    };
    let mut maxlag: Option<&PartitionStatus> = None;
    let mut complete = 0usize;
    let mut totallag = 0i64;
    for p in &partitions {
        let s = p.status.min(Status::Err);
        if s > status {
            status = s;
        }
        if maxlag.is_none_or(|m| p.current_lag > m.current_lag) {
            maxlag = Some(p);
        }
        if p.complete >= 1.0 {
            complete += 1;
        }
        totallag += p.current_lag;
    }
    GroupStatus {
        group: group.to_string(),
        status,
        complete: if partitions.is_empty() {
            0.0
        } else {
            complete as f32 / partitions.len() as f32
        },
        partition_count: partitions.len(),
        maxlag: maxlag.cloned(),
        totallag,
        partitions,
    }
}

/// The windows of every group and partition with commits on this coordinator.
#[derive(Debug, Default)]
pub struct LagWindows {
    pub config: LagConfig,
    /// group → topic → partition → window.
    groups: HashMap<String, HashMap<String, HashMap<i32, Window>>>,
}

impl LagWindows {
    pub fn new(config: LagConfig) -> LagWindows {
        LagWindows {
            config,
            groups: HashMap::new(),
        }
    }

    /// Record one accepted commit.
    pub fn record(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        log_end_offset: i64,
        now: i64,
    ) {
        let cfg = self.config;
        // Borrowed lookups first: a commit to a known partition allocates nothing.
        let topics = match self.groups.get_mut(group) {
            Some(t) => t,
            None => self.groups.entry(group.to_string()).or_default(),
        };
        let partitions = match topics.get_mut(topic) {
            Some(p) => p,
            None => topics.entry(topic.to_string()).or_default(),
        };
        partitions
            .entry(partition)
            .or_default()
            .push(&cfg, offset, log_end_offset, now);
    }

    /// Keep only the windows `keep(group, topic, partition)` accepts (groups deleted, offsets
    /// expired or deleted, a coordinator partition moved away).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, i32) -> bool) {
        self.groups.retain(|g, topics| {
            topics.retain(|t, parts| {
                parts.retain(|p, _| keep(g, t, *p));
                !parts.is_empty()
            });
            !topics.is_empty()
        });
    }

    /// Every (group, topic, partition) with a window.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str, i32)> {
        self.groups.iter().flat_map(|(g, topics)| {
            topics
                .iter()
                .flat_map(move |(t, parts)| parts.keys().map(move |p| (g.as_str(), t.as_str(), *p)))
        })
    }

    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(|s| s.as_str())
    }

    /// Windows held (for tests and sizing).
    pub fn len(&self) -> usize {
        self.groups
            .values()
            .flat_map(|t| t.values())
            .map(|p| p.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Evaluate one group; `log_end(topic, partition)` gives each partition's log end now
    /// (`None`: unknown, the newest sample's is used).
    pub fn evaluate(
        &self,
        group: &str,
        log_end: impl Fn(&str, i32) -> Option<i64>,
        now: i64,
    ) -> GroupStatus {
        let partitions = self
            .groups
            .get(group)
            .map(|topics| {
                topics
                    .iter()
                    .flat_map(|(t, parts)| parts.iter().map(move |(p, w)| (t, p, w)))
                    .map(|(t, p, w)| {
                        let end = log_end(t, *p)
                            .or_else(|| w.last().map(|s| s.log_end_offset))
                            .unwrap_or(0);
                        evaluate_partition(&self.config, t, *p, w, end, now)
                    })
                    .collect()
            })
            .unwrap_or_default();
        evaluate_group(group, partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: LagConfig = LagConfig {
        intervals: 5,
        min_distance_ms: 1000,
    };

    /// A window from (offset, log end) pairs committed one second apart from t = 0.
    fn window(commits: &[(i64, i64)]) -> Window {
        let mut w = Window::default();
        for (i, (o, e)) in commits.iter().enumerate() {
            w.push(&CFG, *o, *e, i as i64 * 1000);
        }
        w
    }

    fn status(commits: &[(i64, i64)], log_end: i64, now: i64) -> Status {
        evaluate_partition(&CFG, "t", 0, &window(commits), log_end, now).status
    }

    #[test]
    fn keeping_up_is_ok() {
        let c = [(10, 10), (20, 25), (30, 30), (40, 45), (50, 55)];
        assert_eq!(status(&c, 60, 4500), Status::Ok);
        // Zero current lag is OK even with lag in every sample.
        let c = [(10, 15), (20, 25), (30, 35), (40, 45), (50, 55)];
        assert_eq!(status(&c, 50, 100_000), Status::Ok);
    }

    #[test]
    fn lag_decreasing_somewhere_is_ok() {
        let c = [(10, 20), (20, 40), (30, 35), (40, 60), (50, 80)];
        assert_eq!(status(&c, 80, 4500), Status::Ok);
    }

    #[test]
    fn lag_rising_through_the_window_is_warn() {
        let c = [(10, 20), (20, 40), (30, 60), (40, 80), (50, 100)];
        assert_eq!(status(&c, 100, 4500), Status::Warn);
        // Equal lag counts as not decreasing.
        let c = [(10, 20), (20, 30), (30, 40), (40, 50), (50, 60)];
        assert_eq!(status(&c, 60, 4500), Status::Warn);
    }

    #[test]
    fn commits_stopped_with_lag_is_stop() {
        let c = [(10, 20), (20, 30), (30, 35), (40, 50), (50, 60)];
        // The window spans 4 s: 4 s after the last commit still OK, 4.001 s is STOP.
        assert_eq!(status(&c, 90, 8000), Status::Ok);
        assert_eq!(status(&c, 90, 8001), Status::Stop);
        // Stopped but caught up: OK.
        assert_eq!(status(&c, 50, 60_000), Status::Ok);
        // One sample spans nothing: stopped as soon as time passes.
        assert_eq!(status(&[(10, 20)], 20, 1), Status::Stop);
    }

    #[test]
    fn same_offset_with_lag_is_stall() {
        let c = [(10, 20), (10, 30), (10, 40), (10, 50), (10, 60)];
        assert_eq!(status(&c, 60, 4500), Status::Stall);
    }

    #[test]
    fn offset_going_back_is_rewind() {
        let c = [(10, 20), (20, 30), (5, 40), (15, 50), (25, 60)];
        assert_eq!(status(&c, 60, 4500), Status::Rewind);
        // Rewind wins over stop (Burrow checks it first).
        assert_eq!(status(&c, 60, 100_000), Status::Rewind);
    }

    #[test]
    fn window_is_bounded_and_min_distance_replaces() {
        let mut w = Window::default();
        for i in 0..20 {
            w.push(&CFG, i, i + 5, i * 1000);
        }
        assert_eq!(w.samples().count(), 5);
        assert_eq!(w.samples().next().unwrap().offset, 15);
        // 999 ms later: replaces the newest sample.
        w.push(&CFG, 100, 105, 19_999);
        assert_eq!(w.samples().count(), 5);
        assert_eq!(w.last().unwrap().offset, 100);
        assert_eq!(w.samples().nth(3).unwrap().offset, 18);
    }

    #[test]
    fn group_is_worst_partition_with_err_for_stop_stall_rewind() {
        let p = |partition, status, lag| PartitionStatus {
            topic: "t".into(),
            partition,
            status,
            start: None,
            end: None,
            current_lag: lag,
            complete: 1.0,
            time_lag_ms: 0,
        };
        let g = evaluate_group("g", vec![p(0, Status::Ok, 1), p(1, Status::Warn, 7)]);
        assert_eq!(g.status, Status::Warn);
        assert_eq!(g.maxlag.as_ref().unwrap().partition, 1);
        assert_eq!(g.totallag, 8);
        for s in [Status::Stop, Status::Stall, Status::Rewind] {
            let g = evaluate_group("g", vec![p(0, s, 3), p(1, Status::Warn, 1)]);
            assert_eq!(g.status, Status::Err);
            assert_eq!(g.maxlag.unwrap().status, s);
        }
        assert_eq!(evaluate_group("g", vec![]).status, Status::NotFound);
    }

    #[test]
    fn complete_is_the_share_of_full_windows() {
        let mut lw = LagWindows::new(CFG);
        for i in 0..5 {
            lw.record("g", "t", 0, i, i, i * 1000);
        }
        lw.record("g", "t", 1, 0, 0, 0);
        let g = lw.evaluate("g", |_, _| None, 4000);
        assert_eq!(g.complete, 0.5);
        assert_eq!(g.partitions[1].complete, 0.2);
        lw.retain(|_, _, p| p == 0);
        assert_eq!(lw.len(), 1);
        lw.retain(|_, _, _| false);
        assert!(lw.is_empty());
    }

    #[test]
    fn time_lag_from_samples() {
        // Offset 30 was in the log by the sample at t = 2 s (log end 35).
        let w = window(&[(10, 20), (20, 30), (25, 35), (28, 40), (30, 45)]);
        assert_eq!(time_lag_ms(&w, 10_000), 8000);
        assert_eq!(time_lag_ms(&window(&[(10, 10)]), 10_000), 0);
    }

    /// Commit-path cost: 10,000 groups × 10 partitions, every partition committed repeatedly.
    /// Prints ns per commit; not an assertion on time. Run with
    /// `cargo test -p fjord-group --release lag::tests::commit_path_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn commit_path_cost() {
        let mut lw = LagWindows::new(LagConfig::default());
        let groups: Vec<String> = (0..10_000).map(|g| format!("group-{g}")).collect();
        let rounds = 12i64;
        let start = std::time::Instant::now();
        for r in 0..rounds {
            for g in &groups {
                for p in 0..10 {
                    lw.record(g, "topic", p, r * 100, r * 100 + 50, r * 1000);
                }
            }
        }
        let n = rounds * 100_000;
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{n} commits into {} windows: {ns:.0} ns per commit",
            lw.len()
        );
        assert_eq!(lw.len(), 100_000);
    }
}
