//! Replication throttles for partition reassignments, with Kafka's keys: the dynamic broker
//! configs `leader.replication.throttled.rate` and `follower.replication.throttled.rate`
//! (bytes/s) and the topic configs `leader.replication.throttled.replicas` and
//! `follower.replication.throttled.replicas` (`partition:broker` lists or `*`).
//!
//! A throttle applies only to a reassignment's traffic: on the leader, to fetches from a
//! follower the partition is *adding* when the topic's leader list names this broker for the
//! partition; on a follower, to its own fetches of a partition it is being added to when the
//! follower list names it. In-sync followers and clients are never slowed, so a move cannot
//! starve producers waiting on acks=all or consumers (Kafka likewise throttles only replicas
//! outside the ISR).
//!
//! The rate is a token bucket (pure: time comes in as milliseconds): a second's worth of bytes
//! can go at once, and while the balance is spent the throttled partitions are left out of
//! fetches (the leader answers them empty, the follower does not ask for them), as Kafka's
//! `ReplicationQuotaManager` does with its rate window. A fetch may overdraw the balance by up
//! to one batch; the debt is repaid before the next one.

use parking_lot::Mutex;

/// A rate limit in bytes per second (`None`: unlimited).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Option<u64>,
    /// Bytes that may go now; negative after a fetch overdrew it.
    tokens: f64,
    last_ms: i64,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket {
            rate: None,
            tokens: 0.0,
            last_ms: i64::MIN,
        }
    }
}

impl TokenBucket {
    /// Set the rate (`None` or Kafka's `Long.MAX_VALUE`: unlimited). A new limit starts with
    /// a full second's allowance.
    pub fn set_rate(&mut self, rate: Option<u64>, now_ms: i64) {
        let rate = rate.filter(|r| *r < i64::MAX as u64);
        if rate == self.rate {
            return;
        }
        self.rate = rate;
        self.tokens = rate.map_or(0.0, |r| r as f64);
        self.last_ms = now_ms;
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    fn refill(&mut self, now_ms: i64) {
        let Some(rate) = self.rate else {
            return;
        };
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// How many bytes may go now: `None` when unlimited, `Some(0)` when the balance is spent.
    pub fn available(&mut self, now_ms: i64) -> Option<u64> {
        self.rate?;
        self.refill(now_ms);
        Some(self.tokens.max(0.0) as u64)
    }

    /// Bytes that went (they may overdraw the balance).
    pub fn record(&mut self, bytes: u64, now_ms: i64) {
        if self.rate.is_none() {
            return;
        }
        self.refill(now_ms);
        self.tokens -= bytes as f64;
    }
}

/// One fetch's share of a bucket: the bucket's balance when the fetch is built or answered,
/// less what the fetch's throttled partitions take. Without it every throttled partition of
/// one fetch would be offered the whole balance, and a fetch of many partitions would
/// overdraw the bucket by a batch per partition (then repay it with seconds of nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchAllowance {
    /// `None`: unlimited.
    left: Option<u64>,
}

impl FetchAllowance {
    /// From [`TokenBucket::available`].
    pub fn new(available: Option<u64>) -> FetchAllowance {
        FetchAllowance { left: available }
    }

    /// For a throttled partition that could take `max_bytes`: `None` to leave it out (the
    /// balance is spent), else the bytes it may take — at least 1, so one batch can go.
    pub fn grant(&self, max_bytes: usize) -> Option<usize> {
        match self.left {
            None => Some(max_bytes),
            Some(0) => None,
            Some(n) => Some(
                max_bytes
                    .min(usize::try_from(n).unwrap_or(usize::MAX))
                    .max(1),
            ),
        }
    }

    /// A throttled partition took (or was offered) `bytes`.
    pub fn take(&mut self, bytes: u64) {
        if let Some(n) = &mut self.left {
            *n = n.saturating_sub(bytes);
        }
    }
}

/// This broker's two replication quotas.
#[derive(Debug, Default)]
pub struct ReplicationQuotas {
    /// Bytes this broker serves, as leader, to throttled followers.
    pub leader: Mutex<TokenBucket>,
    /// Bytes this broker fetches, as a follower, for throttled partitions.
    pub follower: Mutex<TokenBucket>,
}

/// Which of a partition's reassignment traffic is throttled on this broker (computed when the
/// metadata changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaThrottle {
    /// Followers (being added) whose fetches this broker, when leading, throttles.
    pub leader_throttled: Vec<i32>,
    /// This broker is being added and throttles its own fetches.
    pub follower_throttled: bool,
}

impl ReplicaThrottle {
    /// The throttle for `partition` on broker `me`, from the replicas a reassignment is adding
    /// and the topic's throttled-replica lists.
    pub fn of(
        partition: u32,
        me: i32,
        adding: &[i32],
        leader_list: &fjord_storage::config::ThrottledReplicas,
        follower_list: &fjord_storage::config::ThrottledReplicas,
    ) -> ReplicaThrottle {
        if adding.is_empty() {
            return ReplicaThrottle::default();
        }
        ReplicaThrottle {
            leader_throttled: if leader_list.contains(partition, me) {
                adding.iter().copied().filter(|r| *r != me).collect()
            } else {
                Vec::new()
            },
            follower_throttled: adding.contains(&me) && follower_list.contains(partition, me),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_storage::config::ThrottledReplicas;

    #[test]
    fn bucket_paces_to_its_rate() {
        let mut b = TokenBucket::default();
        assert_eq!(b.available(0), None, "unlimited by default");
        b.record(1 << 30, 0);
        b.set_rate(Some(1000), 0);
        assert_eq!(b.available(0), Some(1000), "a second's allowance at once");
        b.record(1500, 0); // one big batch overdraws
        assert_eq!(b.available(0), Some(0));
        assert_eq!(b.available(400), Some(0), "still repaying");
        assert_eq!(b.available(1000), Some(500));
        // Over a long run the bytes that go match the rate.
        let mut sent = 0u64;
        for ms in (1000..=61_000).step_by(10) {
            if let Some(n) = b.available(ms) {
                if n > 0 {
                    let chunk = n.min(300);
                    b.record(chunk, ms);
                    sent += chunk;
                }
            }
        }
        assert!(
            (59_000..=61_500).contains(&sent),
            "{sent} bytes in 60 s at 1000/s"
        );
        // Never more than a second's allowance after idling.
        assert_eq!(b.available(1_000_000), Some(1000));
        b.set_rate(Some(i64::MAX as u64), 0);
        assert_eq!(b.available(0), None, "Long.MAX_VALUE is unlimited");
    }

    #[test]
    fn one_fetch_of_many_partitions_overdraws_by_at_most_a_batch() {
        const BATCH: usize = 64 << 10;
        // A leader answering 1,000 lagging partitions (1 MB each asked) with 20 MB left: a
        // partition reads whole batches up to its grant, and at least one.
        let mut a = FetchAllowance::new(Some(20_000_000));
        let mut sent = 0usize;
        let mut served = 0;
        for _ in 0..1000 {
            let Some(grant) = a.grant(1 << 20) else {
                continue;
            };
            let read = (grant / BATCH).max(1) * BATCH;
            a.take(read as u64);
            sent += read;
            served += 1;
        }
        assert!(
            sent <= 20_000_000 + BATCH,
            "{sent} bytes for a 20 MB balance"
        );
        assert!(sent >= 20_000_000 - BATCH, "{sent}");
        assert!(served < 1000, "the rest left out");
        // Spent: nothing more; unlimited: everything asked.
        assert_eq!(a.grant(1 << 20), None);
        assert_eq!(FetchAllowance::new(Some(10)).grant(1 << 20), Some(10));
        assert_eq!(
            FetchAllowance::new(Some(10)).grant(0),
            Some(1),
            "one batch may go"
        );
        let mut unlimited = FetchAllowance::new(None);
        unlimited.take(u64::MAX);
        assert_eq!(unlimited.grant(1 << 20), Some(1 << 20));
    }

    #[test]
    fn only_replicas_being_added_and_listed_are_throttled() {
        let all = ThrottledReplicas::All;
        let none = ThrottledReplicas::None;
        let listed = ThrottledReplicas::parse("0:1,0:4,1:2").unwrap();
        // Partition 0 adds broker 4; broker 1 leads.
        let t = ReplicaThrottle::of(0, 1, &[4], &listed, &listed);
        assert_eq!(t.leader_throttled, vec![4]);
        assert!(!t.follower_throttled);
        let t = ReplicaThrottle::of(0, 4, &[4], &listed, &listed);
        assert!(t.follower_throttled);
        // Not listed, or nothing being added: nothing throttled.
        assert_eq!(
            ReplicaThrottle::of(0, 3, &[4], &listed, &none),
            ReplicaThrottle::default()
        );
        assert_eq!(
            ReplicaThrottle::of(0, 1, &[], &all, &all),
            ReplicaThrottle::default()
        );
        assert!(ReplicaThrottle::of(5, 4, &[4], &none, &all).follower_throttled);
    }
}
