//! [`HeartbeatSchedule`]: when a broker sends its next heartbeat to the controller quorum, and
//! how long it waits for one.
//!
//! Every `broker.heartbeat.interval.ms` after a heartbeat that succeeded; soon after one that
//! failed, with a jittered exponential backoff (100 ms, doubling, at most the interval), as
//! Kafka's `BrokerLifecycleManager` does after a failed communication. Each try of a heartbeat
//! gets a short per-attempt timeout, so a voter that accepts the connection but does not answer
//! (a controller that is restarting, or an old one cut off from the quorum) costs a fraction of
//! the interval before the next voter is asked. Together they give a broker several heartbeats
//! within one session timeout while the quorum fails over, instead of one try per interval.
//!
//! The real broker (`fjord_broker::cluster::heartbeat_loop`) and the simulated brokers of the
//! control-plane bench (`examples/control_plane_scale.rs`) both send through
//! [`ControllerClient::send_heartbeat`](super::ControllerClient::send_heartbeat) on this schedule.

use std::time::Duration;

/// First pause after a failed heartbeat, before jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Jitter: a pause is drawn from `[d, d * JITTER_MAX_PERCENT / 100]` for a backoff `d`, so 140
/// brokers that failed together do not retry together (100–250 ms for the first one).
const JITTER_MAX_PERCENT: u64 = 250;

/// The longest a single try may wait for its reply (the interval's half if shorter).
const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(1);

/// The shortest per-attempt timeout: a heartbeat needs one Raft read-index round at least.
const ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_millis(250);

/// When to heartbeat next and how long a heartbeat may take. Not shared between brokers: each
/// one keeps its own count of failures and its own jitter.
#[derive(Debug, Clone)]
pub struct HeartbeatSchedule {
    interval: Duration,
    failures: u32,
    rng: u64,
}

impl HeartbeatSchedule {
    /// The schedule of `broker.heartbeat.interval.ms = interval`; `seed` varies the jitter
    /// between brokers (the node id will do; it is mixed with the clock).
    pub fn new(interval: Duration, seed: u64) -> HeartbeatSchedule {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        HeartbeatSchedule {
            interval,
            failures: 0,
            // xorshift must not start at 0.
            rng: (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ clock) | 1,
        }
    }

    /// How long one heartbeat may take in all, trying voter after voter: one interval (at least
    /// a second), as before this schedule existed.
    pub fn request_timeout(&self) -> Duration {
        self.interval.max(Duration::from_secs(1))
    }

    /// How long one try on one voter may wait for its reply before the next voter is asked:
    /// half the interval, within 250 ms – 1 s.
    pub fn attempt_timeout(&self) -> Duration {
        (self.interval / 2).clamp(ATTEMPT_TIMEOUT_MIN, ATTEMPT_TIMEOUT_MAX)
    }

    /// Consecutive failed heartbeats.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A heartbeat succeeded: the pause before the next one (the interval).
    pub fn succeeded(&mut self) -> Duration {
        self.failures = 0;
        self.interval
    }

    /// A heartbeat failed: the pause before trying again, 100 ms doubling with each failure in
    /// a row, jittered up to 2.5×, never more than the interval.
    pub fn failed(&mut self) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = BACKOFF_BASE.saturating_mul(1 << exp).min(self.interval);
        let base_ms = base.as_millis() as u64;
        let spread = base_ms * (JITTER_MAX_PERCENT - 100) / 100;
        let jitter = if spread == 0 {
            0
        } else {
            self.next_random() % (spread + 1)
        };
        Duration::from_millis(base_ms + jitter).min(self.interval)
    }

    /// xorshift64: enough to spread retries, no dependency.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_soon_after_a_failure_and_backs_off_to_the_interval() {
        let interval = Duration::from_secs(2);
        let mut s = HeartbeatSchedule::new(interval, 7);
        assert_eq!(s.attempt_timeout(), Duration::from_secs(1));
        assert_eq!(s.request_timeout(), interval);
        let first = s.failed();
        assert!(
            (Duration::from_millis(100)..=Duration::from_millis(250)).contains(&first),
            "{first:?}"
        );
        let second = s.failed();
        assert!(
            (Duration::from_millis(200)..=Duration::from_millis(500)).contains(&second),
            "{second:?}"
        );
        for _ in 0..20 {
            assert!(s.failed() <= interval);
        }
        assert_eq!(s.failures(), 22);
        assert_eq!(s.succeeded(), interval);
        assert_eq!(s.failures(), 0);
        assert!(s.failed() <= Duration::from_millis(250));
    }

    /// The default session (9 s) holds several tries even if every one of them times out.
    #[test]
    fn several_tries_fit_in_a_session() {
        let session = Duration::from_secs(9);
        let mut s = HeartbeatSchedule::new(Duration::from_secs(2), 1);
        let (mut t, mut tries) = (Duration::ZERO, 0);
        while t < session {
            t += s.request_timeout() + s.failed();
            tries += 1;
        }
        assert!(tries >= 3, "{tries} tries in a session");
    }

    #[test]
    fn jitter_differs_between_brokers() {
        let pauses: std::collections::BTreeSet<Duration> = (0..20)
            .map(|seed| HeartbeatSchedule::new(Duration::from_secs(2), seed).failed())
            .collect();
        assert!(pauses.len() > 1);
    }

    #[test]
    fn short_intervals_keep_a_usable_attempt_timeout() {
        let s = HeartbeatSchedule::new(Duration::from_millis(100), 3);
        assert_eq!(s.attempt_timeout(), Duration::from_millis(250));
        let mut s = s;
        assert!(s.failed() <= Duration::from_millis(100));
    }
}
