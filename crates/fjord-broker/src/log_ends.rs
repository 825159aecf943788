//! Log ends of partitions this broker holds no replica of, for lag evaluation.
//!
//! A group coordinator samples (committed offset, log end, time) on every commit
//! ([`crate::group_lag`]); for a partition hosted here the log end is the local high watermark.
//! A group's partitions are usually spread over the cluster, so most of them are not: the
//! coordinator learns their high watermarks the way Burrow does, by asking their leaders —
//! one ListOffsets (LATEST, as a consumer: the high watermark) per leader broker every
//! [`POLL_INTERVAL`], for the partitions commits arrived for (and at once when a partition is
//! first asked for). Samples use the last answer while
//! it is younger than [`MAX_AGE_MS`]; past that (leader unreachable) the partition gets no
//! sample rather than a wrong one. A partition nobody asked about for [`FORGET_MS`] is dropped,
//! so what is polled is bounded by the partitions with recent commits or lag windows here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fjord_client::Connection;
use fjord_protocol::clock::now_ms;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::Broker;

/// How often the leaders are asked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How old an answer may be and still be used for a sample or an evaluation.
pub const MAX_AGE_MS: i64 = 30_000;
/// A partition not asked about for this long is no longer polled.
pub const FORGET_MS: i64 = 300_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The leader's last answer and when it came.
    end: Option<(i64, i64)>,
    /// When a commit or an evaluation last asked for this partition.
    wanted_ms: i64,
}

/// The polled log ends, by topic and partition (nested, so a lookup borrows the topic name).
#[derive(Debug, Default)]
pub struct RemoteEnds {
    entries: Mutex<HashMap<String, HashMap<i32, Entry>>>,
    /// Woken when a partition is first wanted, so its leader is asked at once rather than at
    /// the next tick (a consumer's second commit then already has a sample).
    wake: tokio::sync::Notify,
}

impl RemoteEnds {
    /// The partition's log end if a fresh enough answer is known; either way the partition is
    /// (still) wanted, so the poller asks its leader.
    pub fn get(&self, topic: &str, partition: i32, now: i64) -> Option<i64> {
        let mut entries = self.entries.lock();
        // Borrowed lookup first: a known partition allocates nothing.
        if let Some(e) = entries.get_mut(topic).and_then(|t| t.get_mut(&partition)) {
            e.wanted_ms = now;
            return e
                .end
                .filter(|&(_, at)| now.saturating_sub(at) <= MAX_AGE_MS)
                .map(|(end, _)| end);
        }
        entries.entry(topic.to_string()).or_default().insert(
            partition,
            Entry {
                end: None,
                wanted_ms: now,
            },
        );
        drop(entries);
        self.wake.notify_one();
        None
    }

    /// The partitions to poll; forgets the ones nobody asked about for [`FORGET_MS`].
    fn wanted(&self, now: i64) -> Vec<(String, i32)> {
        let mut entries = self.entries.lock();
        entries.retain(|_, parts| {
            parts.retain(|_, e| now.saturating_sub(e.wanted_ms) <= FORGET_MS);
            !parts.is_empty()
        });
        entries
            .iter()
            .flat_map(|(t, parts)| parts.keys().map(move |p| (t.clone(), *p)))
            .collect()
    }

    fn set(&self, topic: &str, partition: i32, end: i64, now: i64) {
        if let Some(e) = self
            .entries
            .lock()
            .get_mut(topic)
            .and_then(|t| t.get_mut(&partition))
        {
            e.end = Some((end, now));
        }
    }

    /// Partitions tracked (for tests and sizing).
    pub fn len(&self) -> usize {
        self.entries.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Poll the leaders of the wanted partitions every [`POLL_INTERVAL`] until shutdown.
pub async fn poll_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conns: HashMap<i32, Connection> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            _ = broker.groups.remote_ends.wake.notified() => {}
        }
        let wanted = broker.groups.remote_ends.wanted(now_ms());
        if wanted.is_empty() {
            continue;
        }
        for (leader, topics) in by_leader(&broker, wanted) {
            let asked: usize = topics.values().map(Vec::len).sum();
            if let Err(e) = poll_leader(&broker, &mut conns, leader, topics).await {
                conns.remove(&leader);
                crate::group_lag::metrics(&broker)
                    .end_polls
                    .with_label_values(&["error"])
                    .inc();
                tracing::debug!(leader, partitions = asked, error = %e, "lag: log-end poll failed");
            } else {
                crate::group_lag::metrics(&broker)
                    .end_polls
                    .with_label_values(&["ok"])
                    .inc();
            }
        }
        // Connections to brokers that lead none of them any more are closed.
        conns.retain(|id, _| broker.broker_address(*id).is_some());
    }
}

/// The wanted partitions by their current leader, leaving out those hosted here (a local
/// replica answers directly) and those without a leader.
fn by_leader(
    broker: &Broker,
    wanted: Vec<(String, i32)>,
) -> BTreeMap<i32, BTreeMap<String, Vec<i32>>> {
    let me = broker.node_id();
    let mut out: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    broker.with_image(|image| {
        for (topic, p) in wanted {
            if broker
                .partition(&topic, p)
                .is_some_and(|local| local.is_replica())
            {
                continue;
            }
            let Some(t) = image.topic(&topic) else {
                continue;
            };
            let Some(state) = u32::try_from(p)
                .ok()
                .and_then(|i| image.partition(&t.id, i))
            else {
                continue;
            };
            if state.leader < 0 || state.leader == me {
                continue;
            }
            out.entry(state.leader)
                .or_default()
                .entry(topic)
                .or_default()
                .push(p);
        }
    });
    out
}

async fn poll_leader(
    broker: &Broker,
    conns: &mut HashMap<i32, Connection>,
    leader: i32,
    topics: BTreeMap<String, Vec<i32>>,
) -> fjord_client::Result<()> {
    let conn = match conns.entry(leader) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(crate::replica_fetcher::connect_peer(broker, leader, "lag").await?)
        }
    };
    let request = fjord_client::list_offsets_request(
        topics.iter().map(|(t, ps)| (t.as_str(), &ps[..])),
        fjord_client::OffsetSpec::Latest,
        5_000,
    );
    let response = conn.send(&request).await?;
    let now = now_ms();
    for t in &response.topics {
        for p in &t.partitions {
            // NOT_LEADER and friends: the metadata will say who leads next round.
            if p.error_code == 0 && p.offset >= 0 {
                broker
                    .groups
                    .remote_ends
                    .set(t.name.as_str(), p.partition_index, p.offset, now);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_answers_are_used_stale_ones_not() {
        let r = RemoteEnds::default();
        assert_eq!(r.get("t", 0, 1_000), None, "unknown: wanted, no answer yet");
        assert_eq!(r.wanted(1_000), vec![("t".to_string(), 0)]);
        r.set("t", 0, 42, 1_000);
        assert_eq!(r.get("t", 0, 2_000), Some(42));
        assert_eq!(r.get("t", 0, 1_000 + MAX_AGE_MS + 1), None, "too old");
        // An answer for a partition nobody asked about is not kept.
        r.set("u", 1, 7, 1_000);
        assert_eq!(r.get("u", 1, 1_000), None);
    }

    #[test]
    fn partitions_nobody_asks_about_are_forgotten() {
        let r = RemoteEnds::default();
        r.get("t", 0, 0);
        r.get("t", 1, FORGET_MS);
        assert_eq!(r.wanted(FORGET_MS + 1), vec![("t".to_string(), 1)]);
        assert_eq!(r.len(), 1);
    }
}
