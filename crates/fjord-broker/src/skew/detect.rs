//! Partition skew detection, without I/O: rates from counter samples, each topic's mean rate
//! per partition, which partitions are skewed, and skew episodes (a WARN when one starts, an
//! INFO when it ends, not one per check).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::config::SkewConfig;

/// A skewed partition leaves its episode only once its ratio falls below this fraction of
/// `skew.warn.ratio` (or its rate below this fraction of the floor): no flapping at the edge.
pub const HYSTERESIS: f64 = 0.8;
/// Rates are over at least this long, so a partition seen a moment ago has no absurd rate.
const MIN_ELAPSED_MS: i64 = 1000;

/// Samples of one partition's bytes-in counter, oldest first.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    samples: VecDeque<(i64, u64)>,
}

impl RateWindow {
    /// A window whose counter was 0 at `since_ms` (when the partition's counter was created).
    pub fn new(since_ms: i64) -> RateWindow {
        RateWindow {
            samples: VecDeque::from([(since_ms, 0)]),
        }
    }

    /// Keep a sample; drop those no longer needed for a window of `window_ms`.
    pub fn push(&mut self, now_ms: i64, bytes: u64, window_ms: u64) {
        self.samples.push_back((now_ms, bytes));
        let start = now_ms - window_ms as i64;
        // Keep the newest sample at or before the window's start: the rate's base.
        while self.samples.len() > 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window ending `now_ms` with the counter at `bytes`, and the
    /// bytes counted in it.
    pub fn rate(&self, now_ms: i64, bytes: u64, window_ms: u64) -> (f64, u64) {
        let start = now_ms - window_ms as i64;
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= start)
            .or(self.samples.front())
            .copied()
            .unwrap_or((now_ms, bytes));
        let delta = bytes.saturating_sub(base.1);
        let elapsed = (now_ms - base.0).max(MIN_ELAPSED_MS);
        (delta as f64 * 1000.0 / elapsed as f64, delta)
    }
}

/// One partition's rate as one broker (its leader) reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionRate {
    pub partition: i32,
    pub rate: f64,
    /// Bytes in over the window.
    pub bytes: u64,
}

/// A partition at or above its topic's skew threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub topic: String,
    pub partition: i32,
    pub rate: f64,
    /// The topic's mean rate per partition (over the partitions whose leader answered).
    pub mean: f64,
    pub ratio: f64,
}

/// Each topic's mean rate per partition over the partitions reported (every partition whose
/// leader answered, idle ones at 0), and each partition's ratio to it.
pub fn ratios(topics: &BTreeMap<String, Vec<PartitionRate>>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (topic, parts) in topics {
        if parts.is_empty() {
            continue;
        }
        let mean = parts.iter().map(|p| p.rate).sum::<f64>() / parts.len() as f64;
        for p in parts {
            out.push(Finding {
                topic: topic.clone(),
                partition: p.partition,
                rate: p.rate,
                mean,
                ratio: if mean > 0.0 { p.rate / mean } else { 0.0 },
            });
        }
    }
    out
}

/// A skew episode starting or ending.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(Finding),
    Ended(Finding),
}

/// The partitions in a skew episode now.
#[derive(Debug, Default)]
pub struct Episodes {
    skewed: HashMap<(String, i32), Finding>,
}

impl Episodes {
    /// Take this check's findings for the partitions this broker leads; returns the episodes
    /// that started and ended. A partition missing from `findings` (no longer led here, or
    /// its topic gone) ends its episode.
    pub fn update(&mut self, findings: &[Finding], cfg: &SkewConfig) -> Vec<Event> {
        let mut events = Vec::new();
        let mut now: HashMap<(String, i32), Finding> = HashMap::new();
        for f in findings {
            let id = (f.topic.clone(), f.partition);
            let was = self.skewed.contains_key(&id);
            let (ratio_min, rate_min) = if was {
                (cfg.warn_ratio * HYSTERESIS, cfg.min_rate * HYSTERESIS)
            } else {
                (cfg.warn_ratio, cfg.min_rate)
            };
            let skewed = f.rate >= rate_min && f.rate > 0.0 && f.ratio >= ratio_min;
            if skewed {
                if !was {
                    events.push(Event::Started(f.clone()));
                }
                now.insert(id, f.clone());
            } else if was {
                events.push(Event::Ended(f.clone()));
            }
        }
        let seen: HashSet<(&str, i32)> = findings
            .iter()
            .map(|f| (f.topic.as_str(), f.partition))
            .collect();
        for ((topic, partition), f) in self.skewed.drain() {
            if !seen.contains(&(topic.as_str(), partition)) {
                events.push(Event::Ended(f));
            }
        }
        self.skewed = now;
        events
    }

    pub fn len(&self) -> usize {
        self.skewed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.skewed.is_empty()
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.skewed.contains_key(&(topic.to_string(), partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SkewConfig {
        SkewConfig {
            min_rate: 100.0,
            ..SkewConfig::default()
        }
    }

    fn topic(rates: &[f64]) -> BTreeMap<String, Vec<PartitionRate>> {
        let parts = rates
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionRate {
                partition: i as i32,
                rate: *r,
                bytes: 0,
            })
            .collect();
        BTreeMap::from([("t".to_string(), parts)])
    }

    #[test]
    fn rates_over_the_window() {
        let mut w = RateWindow::new(0);
        w.push(10_000, 1000, 30_000);
        w.push(20_000, 3000, 30_000);
        // From the creation (0 bytes at 0 ms): 3000 B in 20 s.
        assert_eq!(w.rate(20_000, 3000, 30_000), (150.0, 3000));
        w.push(40_000, 5000, 30_000);
        // Window 10..40 s: 4000 B in 30 s.
        assert_eq!(w.rate(40_000, 5000, 30_000), (4000.0 / 30.0, 4000));
        assert!(w.samples.len() <= 3);
        // A live query between checks counts the bytes since.
        assert_eq!(w.rate(45_000, 8000, 30_000).1, 7000);
        // Just created: at least a second.
        assert_eq!(RateWindow::new(0).rate(10, 500, 30_000), (500.0, 500));
    }

    #[test]
    fn one_hot_partition_is_skewed_once_per_episode() {
        let c = cfg();
        let mut e = Episodes::default();
        // 4 partitions, one at 10× the others: mean 3250, ratio ≈ 3.08.
        let f = ratios(&topic(&[10_000.0, 1000.0, 1000.0, 1000.0]));
        assert!((f[0].ratio - 10_000.0 / 3250.0).abs() < 1e-9);
        let ev = e.update(&f, &c);
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], Event::Started(x) if x.partition == 0));
        // Still skewed: no new event.
        assert!(e.update(&f, &c).is_empty());
        assert_eq!(e.len(), 1);
        // Slightly below the ratio but above the hysteresis: stays.
        let f = ratios(&topic(&[2500.0, 1000.0, 1000.0, 1000.0]));
        assert!(f[0].ratio < 2.0 && f[0].ratio > 1.6, "{}", f[0].ratio);
        assert!(e.update(&f, &c).is_empty());
        // Even: the episode ends.
        let f = ratios(&topic(&[1000.0; 4]));
        assert!(matches!(&e.update(&f, &c)[..], [Event::Ended(x)] if x.partition == 0));
        assert!(e.is_empty());
    }

    #[test]
    fn idle_even_and_single_partition_topics_never_warn() {
        let c = cfg();
        let mut e = Episodes::default();
        // Below the floor.
        assert!(e
            .update(&ratios(&topic(&[90.0, 1.0, 1.0, 1.0])), &c)
            .is_empty());
        // Even.
        assert!(e.update(&ratios(&topic(&[5000.0; 8])), &c).is_empty());
        // One partition: ratio 1.
        assert!(e.update(&ratios(&topic(&[1e9])), &c).is_empty());
        // Nothing at all.
        assert!(e.update(&ratios(&topic(&[0.0, 0.0])), &c).is_empty());
    }

    #[test]
    fn a_partition_no_longer_led_here_ends_its_episode() {
        let c = cfg();
        let mut e = Episodes::default();
        e.update(&ratios(&topic(&[10_000.0, 0.0, 0.0])), &c);
        assert!(e.contains("t", 0));
        let ev = e.update(&[], &c);
        assert!(matches!(&ev[..], [Event::Ended(x)] if x.partition == 0));
        assert!(e.is_empty());
    }
}
