//! Incremental fetch sessions (KIP-227), as state machines without I/O.
//!
//! A client opens a session with a full fetch (session id 0, epoch 0); later fetches name the
//! session and the next epoch and list only the partitions whose fetch position changed, and
//! the broker answers only for partitions with something new (records, an error, or a moved high
//! watermark or log start). Epoch -1 closes the session and makes a sessionless full fetch.
//!
//! - [`FetchSessionCache`] is the broker's side: every session, bounded by
//!   `max.incremental.fetch.session.cache.slots`. Sessions of followers are *privileged*: a
//!   consumer can only evict a session that has been idle for [`EVICTION_AFTER`], or one older
//!   than that with fewer partitions and no privilege; a follower may also evict any consumer's
//!   session with fewer partitions (Kafka's `FetchSessionCache.tryEvict`). Partitions that
//!   returned records move to the end of the session's order, so the next response reads the
//!   others first and a response budget spent on one partition does not starve the rest.
//! - [`ClientSession`] is the fetcher's side (Kafka's `FetchSessionHandler`), used by the
//!   replica fetchers: from the partitions it wants now it builds the next request (all of them
//!   in a full fetch, else the added or changed ones plus the forgotten ones) and follows the
//!   answer; any error or lost answer makes the next fetch full again.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_protocol::error::ErrorCode;
use uuid::Uuid;

/// One partition in a session. Its identity is what the request names it by — the topic id
/// (Fetch v13+, `by_id`) or the topic name — never the other half, which this broker may
/// learn only later: a follower's first fetch of a new topic can arrive before the leader
/// has its metadata, and a key that then changed name ("" → the name) made a second session
/// entry for the partition, still read at the first fetch's offset (followers got data from
/// offset 0 again and again).
#[derive(Debug, Clone)]
pub struct SessionKey {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
    pub by_id: bool,
}

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
            && self.partition == other.partition
            && if self.by_id {
                self.topic_id == other.topic_id
            } else {
                self.topic == other.topic
            }
    }
}

impl Eq for SessionKey {}

impl std::hash::Hash for SessionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.by_id.hash(state);
        self.partition.hash(state);
        if self.by_id {
            self.topic_id.hash(state);
        } else {
            self.topic.hash(state);
        }
    }
}

/// Where the client wants to read a partition from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionFetch {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The fetcher's leader epoch (-1: unchecked), kept so that a partition an incremental
    /// fetch does not list is still fenced by it.
    pub current_leader_epoch: i32,
}

#[derive(Debug, Clone)]
struct SessionPartition {
    fetch: PartitionFetch,
    /// What the last response said, to decide whether the next one must mention it.
    last_high_watermark: i64,
    last_log_start: i64,
}

#[derive(Debug)]
struct Session {
    /// Opened by a follower: consumers cannot evict it while it is in use.
    privileged: bool,
    created: Instant,
    next_epoch: i32,
    /// In the order the client added them (responses keep that order).
    order: Vec<SessionKey>,
    partitions: HashMap<SessionKey, SessionPartition>,
    last_used: Instant,
}

/// What to fetch for one request.
#[derive(Debug, PartialEq, Eq)]
pub struct FetchPlan {
    /// Session id to put in the response (0 = no session).
    pub session_id: i32,
    /// Only partitions with news go in the response.
    pub incremental: bool,
    pub partitions: Vec<(SessionKey, PartitionFetch)>,
}

/// The outcome of reading one partition, to filter an incremental response.
#[derive(Debug, Clone, Copy)]
pub struct PartitionOutcome {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
    pub error: bool,
}

/// All sessions on this broker, bounded by `max.incremental.fetch.session.cache.slots`.
#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    next_id: i32,
    sessions: HashMap<i32, Session>,
    /// Sessions evicted to make room for new ones, since start.
    evictions: u64,
    /// Sessions of followers (privileged) among `sessions`.
    followers: usize,
}

/// A session unused this long may be evicted by any new one; a session younger than this can
/// only be evicted by a follower's, and only if it is a consumer's (Kafka's
/// `min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_AFTER: Duration = Duration::from_secs(120);

const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

impl FetchSessionCache {
    pub fn new(slots: usize) -> Self {
        FetchSessionCache {
            slots,
            next_id: 1,
            sessions: HashMap::new(),
            evictions: 0,
            followers: 0,
        }
    }

    /// Sessions of followers and of consumers.
    pub fn counts(&self) -> (usize, usize) {
        (self.followers, self.sessions.len() - self.followers)
    }

    fn remove(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.followers -= usize::from(s.privileged);
        }
    }

    /// Sessions evicted to make room for new ones, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decide what a fetch request reads. `requested` are the partitions in the request,
    /// `forgotten` the ones it drops from the session; `follower`: the request comes from a
    /// replica (its new session is privileged).
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: Vec<(SessionKey, PartitionFetch)>,
        forgotten: &[SessionKey],
        follower: bool,
        now: Instant,
    ) -> Result<FetchPlan, ErrorCode> {
        match epoch {
            FINAL_EPOCH => {
                if session_id != 0 {
                    self.remove(session_id);
                }
                Ok(FetchPlan {
                    session_id: 0,
                    incremental: false,
                    partitions: requested,
                })
            }
            INITIAL_EPOCH => {
                if session_id != 0 {
                    self.remove(session_id);
                }
                let id = self.create(&requested, follower, now);
                Ok(FetchPlan {
                    session_id: id,
                    incremental: false,
                    partitions: requested,
                })
            }
            _ => {
                let session = self
                    .sessions
                    .get_mut(&session_id)
                    .ok_or(ErrorCode::FetchSessionIdNotFound)?;
                if session.next_epoch != epoch {
                    return Err(ErrorCode::InvalidFetchSessionEpoch);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                for key in forgotten {
                    if session.partitions.remove(key).is_some() {
                        session.order.retain(|k| k != key);
                    }
                }
                for (key, fetch) in requested {
                    match session.partitions.remove_entry(&key) {
                        Some((_, mut p)) => {
                            // The same partition; the key may now carry the name (or id)
                            // the first request could not resolve.
                            p.fetch = fetch;
                            if let Some(slot) = session.order.iter_mut().find(|k| **k == key) {
                                *slot = key.clone();
                            }
                            session.partitions.insert(key, p);
                        }
                        None => {
                            session.order.push(key.clone());
                            session.partitions.insert(
                                key,
                                SessionPartition {
                                    fetch,
                                    last_high_watermark: -1,
                                    last_log_start: -1,
                                },
                            );
                        }
                    }
                }
                let partitions = session
                    .order
                    .iter()
                    .map(|k| (k.clone(), session.partitions[k].fetch))
                    .collect();
                Ok(FetchPlan {
                    session_id,
                    incremental: true,
                    partitions,
                })
            }
        }
    }

    /// Record what was sent and say, per partition, whether it belongs in the response.
    /// Full responses include every partition.
    pub fn finish(&mut self, plan: &FetchPlan, outcomes: &[PartitionOutcome]) -> Vec<bool> {
        let session = (plan.session_id != 0)
            .then(|| self.sessions.get_mut(&plan.session_id))
            .flatten();
        let Some(session) = session else {
            return vec![true; outcomes.len()];
        };
        let include = plan
            .partitions
            .iter()
            .zip(outcomes)
            .map(|((key, _), o)| {
                let Some(p) = session.partitions.get_mut(key) else {
                    return true;
                };
                let changed = o.has_records
                    || o.error
                    || p.last_high_watermark != o.high_watermark
                    || p.last_log_start != o.log_start_offset;
                // After an error, the partition is answered again once it is readable.
                p.last_high_watermark = if o.error { -1 } else { o.high_watermark };
                p.last_log_start = o.log_start_offset;
                !plan.incremental || changed
            })
            .collect();
        // Partitions that returned records go to the end of the order: the next read serves
        // the others first (Kafka's session rotation).
        let read: HashSet<&SessionKey> = plan
            .partitions
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| o.has_records)
            .map(|((k, _), _)| k)
            .collect();
        if !read.is_empty() {
            let (rest, moved): (Vec<SessionKey>, Vec<SessionKey>) =
                std::mem::take(&mut session.order)
                    .into_iter()
                    .partition(|k| !read.contains(k));
            session.order = rest;
            session.order.extend(moved);
        }
        include
    }

    fn create(
        &mut self,
        requested: &[(SessionKey, PartitionFetch)],
        privileged: bool,
        now: Instant,
    ) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        if self.sessions.len() >= self.slots {
            // The evicted session's client gets FETCH_SESSION_ID_NOT_FOUND and starts anew.
            match self.evictable(privileged, requested.len(), now) {
                Some(old) => {
                    self.remove(old);
                    self.evictions += 1;
                }
                // Full of sessions worth more: this fetch stays sessionless.
                None => return 0,
            }
        }
        let id = loop {
            let id = self.next_id;
            self.next_id = if self.next_id == i32::MAX {
                1
            } else {
                self.next_id + 1
            };
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let mut session = Session {
            privileged,
            created: now,
            next_epoch: 1,
            order: Vec::with_capacity(requested.len()),
            partitions: HashMap::with_capacity(requested.len()),
            last_used: now,
        };
        for (k, f) in requested {
            if session
                .partitions
                .insert(
                    k.clone(),
                    SessionPartition {
                        fetch: *f,
                        last_high_watermark: -1,
                        last_log_start: -1,
                    },
                )
                .is_none()
            {
                session.order.push(k.clone());
            }
        }
        self.sessions.insert(id, session);
        self.followers += usize::from(privileged);
        id
    }
}

impl FetchSessionCache {
    /// The session a new one (`privileged`, with `size` partitions) may evict, if any: the
    /// least recently used if it has been idle for [`EVICTION_AFTER`]; otherwise the least
    /// valuable (unprivileged first, then fewest partitions) among those the new one may
    /// evict — for a follower, consumers' sessions and sessions older than
    /// [`EVICTION_AFTER`]; for a consumer, sessions older than that — provided the new one is
    /// worth more (privileged over unprivileged, else strictly more partitions).
    fn evictable(&self, privileged: bool, size: usize, now: Instant) -> Option<i32> {
        let (&lru, oldest) = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used, **id))?;
        if now.saturating_duration_since(oldest.last_used) > EVICTION_AFTER {
            return Some(lru);
        }
        let old = |s: &Session| now.saturating_duration_since(s.created) > EVICTION_AFTER;
        let (&id, victim) = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                if privileged {
                    !s.privileged || old(s)
                } else {
                    old(s)
                }
            })
            .min_by_key(|(id, s)| (s.privileged, s.partitions.len(), **id))?;
        ((privileged, size) > (victim.privileged, victim.partitions.len())).then_some(id)
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// The fetcher's side of a session with one broker (Kafka's `FetchSessionHandler`). `K`
/// names a partition, `D` is what the fetcher asks of it (offsets, sizes, epoch): a partition
/// is listed again only when its `D` changes.
#[derive(Debug)]
pub struct ClientSession<K, D> {
    /// 0: none.
    session_id: i32,
    /// 0: the next fetch is full (and closes `session_id` on the broker, if any).
    next_epoch: i32,
    /// What the broker's session holds, as sent in requests it answered.
    sent: HashMap<K, D>,
}

/// One request of a [`ClientSession`].
#[derive(Debug, PartialEq, Eq)]
pub struct NextFetch<K, D> {
    pub session_id: i32,
    pub session_epoch: i32,
    /// The partitions to list: all wanted in a full fetch, else the added and changed ones.
    pub listed: Vec<(K, D)>,
    /// Partitions to drop from the session (`forgotten_topics_data`).
    pub forgotten: Vec<(K, D)>,
}

impl<K, D> NextFetch<K, D> {
    /// A full fetch (opening a session) rather than an incremental one.
    pub fn is_full(&self) -> bool {
        self.session_epoch == INITIAL_EPOCH
    }
}

impl<K: Eq + Hash + Clone, D: PartialEq + Clone> Default for ClientSession<K, D> {
    fn default() -> Self {
        ClientSession {
            session_id: 0,
            next_epoch: INITIAL_EPOCH,
            sent: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, D: PartialEq + Clone> ClientSession<K, D> {
    /// The request for the partitions wanted now, in the order given (a full fetch keeps it).
    pub fn next_fetch(&self, wanted: Vec<(K, D)>) -> NextFetch<K, D> {
        if self.next_epoch == INITIAL_EPOCH {
            return NextFetch {
                session_id: self.session_id,
                session_epoch: INITIAL_EPOCH,
                listed: wanted,
                forgotten: Vec::new(),
            };
        }
        let keys: HashSet<&K> = wanted.iter().map(|(k, _)| k).collect();
        let forgotten = self
            .sent
            .iter()
            .filter(|(k, _)| !keys.contains(k))
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        let listed = wanted
            .into_iter()
            .filter(|(k, d)| self.sent.get(k) != Some(d))
            .collect();
        NextFetch {
            session_id: self.session_id,
            session_epoch: self.next_epoch,
            listed,
            forgotten,
        }
    }

    /// The broker answered `fetch` without a top-level error, naming `session_id` (0: no
    /// session).
    pub fn answered(&mut self, fetch: NextFetch<K, D>, session_id: i32) {
        if session_id == 0 {
            // Sessionless (no slot free, or the broker closed it): the next fetch is full.
            *self = ClientSession::default();
            return;
        }
        if fetch.is_full() {
            self.sent = fetch.listed.into_iter().collect();
        } else {
            for (k, _) in fetch.forgotten {
                self.sent.remove(&k);
            }
            self.sent.extend(fetch.listed);
        }
        self.session_id = session_id;
        self.next_epoch = next_epoch(fetch.session_epoch);
    }

    /// The request failed (a top-level error, no answer, a lost connection): the broker's
    /// session may not match ours, so the next fetch is full and replaces it.
    pub fn failed(&mut self) {
        self.next_epoch = INITIAL_EPOCH;
        self.sent.clear();
    }

    /// The broker's session id (0: none).
    pub fn session_id(&self) -> i32 {
        self.session_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> SessionKey {
        SessionKey {
            topic: Arc::from("t"),
            topic_id: Uuid::nil(),
            partition: p,
            by_id: false,
        }
    }
    fn fetch(o: i64) -> PartitionFetch {
        PartitionFetch {
            fetch_offset: o,
            max_bytes: 1024,
            current_leader_epoch: -1,
        }
    }
    fn outcome(hw: i64, recs: bool) -> PartitionOutcome {
        PartitionOutcome {
            high_watermark: hw,
            log_start_offset: 0,
            has_records: recs,
            error: false,
        }
    }

    /// A follower's first fetch of a new topic (by id) reached the leader before its metadata:
    /// the name did not resolve. Once it does, the partition is still one session entry, read
    /// at the offset the follower sends now.
    #[test]
    fn a_partition_keeps_one_entry_when_its_name_resolves_later() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(10);
        let id = Uuid::from_u128(7);
        let by_id = |name: &str| SessionKey {
            topic: Arc::from(name),
            topic_id: id,
            partition: 1,
            by_id: true,
        };
        let plan = c
            .begin(0, 0, vec![(by_id(""), fetch(0))], &[], true, now)
            .unwrap();
        c.finish(&plan, &[outcome(48, true)]);
        let plan = c
            .begin(
                plan.session_id,
                1,
                vec![(by_id("warmup"), fetch(48))],
                &[],
                true,
                now,
            )
            .unwrap();
        assert_eq!(plan.partitions.len(), 1, "{:?}", plan.partitions);
        assert_eq!(plan.partitions[0].1.fetch_offset, 48);
        assert_eq!(&*plan.partitions[0].0.topic, "warmup");
    }

    #[test]
    fn session_lifecycle() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(10);
        let plan = c
            .begin(
                0,
                0,
                vec![(key(0), fetch(0)), (key(1), fetch(0))],
                &[],
                false,
                now,
            )
            .unwrap();
        assert!(plan.session_id > 0 && !plan.incremental);
        assert_eq!(
            c.finish(&plan, &[outcome(5, true), outcome(0, false)]),
            vec![true, true]
        );
        let id = plan.session_id;

        // Incremental: client moves partition 0 forward; partition 1 unchanged.
        let plan = c
            .begin(id, 1, vec![(key(0), fetch(5))], &[], false, now)
            .unwrap();
        assert!(plan.incremental);
        // Partition 0 returned records: it went to the end of the order.
        assert_eq!(
            plan.partitions,
            vec![(key(1), fetch(0)), (key(0), fetch(5))]
        );
        // Nothing new anywhere: empty response.
        assert_eq!(
            c.finish(&plan, &[outcome(0, false), outcome(5, false)]),
            vec![false, false]
        );
        // New data on 1 only.
        let plan = c.begin(id, 2, vec![], &[], false, now).unwrap();
        assert_eq!(
            c.finish(&plan, &[outcome(3, true), outcome(5, false)]),
            vec![true, false]
        );

        // Wrong epoch and unknown session.
        assert_eq!(
            c.begin(id, 2, vec![], &[], false, now).unwrap_err(),
            ErrorCode::InvalidFetchSessionEpoch
        );
        assert_eq!(
            c.begin(id + 100, 1, vec![], &[], false, now).unwrap_err(),
            ErrorCode::FetchSessionIdNotFound
        );

        // Forget partition 0.
        let plan = c.begin(id, 3, vec![], &[key(0)], false, now).unwrap();
        assert_eq!(plan.partitions, vec![(key(1), fetch(0))]);

        // Close.
        let plan = c
            .begin(id, -1, vec![(key(0), fetch(1))], &[], false, now)
            .unwrap();
        assert_eq!(plan.session_id, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn cache_is_bounded_and_evicts_idle_sessions_first() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut c = FetchSessionCache::new(2);
        let a = c.begin(0, 0, vec![], &[], false, t0).unwrap().session_id;
        let b = c
            .begin(0, 0, vec![], &[], false, t0 + ms(1))
            .unwrap()
            .session_id;
        // Both in use and young: a third consumer gets no session.
        assert_eq!(
            c.begin(0, 0, vec![], &[], false, t0 + ms(2))
                .unwrap()
                .session_id,
            0
        );
        assert_eq!(c.len(), 2);
        // `a` idle for longer than EVICTION_AFTER: the next session takes its slot.
        let late = t0 + EVICTION_AFTER + ms(2);
        assert!(c.begin(b, 1, vec![], &[], false, late).is_ok());
        let d = c
            .begin(0, 0, vec![], &[], false, late + ms(1))
            .unwrap()
            .session_id;
        assert!(d > 0);
        assert_eq!(c.evictions(), 1);
        assert_eq!(
            c.begin(a, 1, vec![], &[], false, late).unwrap_err(),
            ErrorCode::FetchSessionIdNotFound
        );
        let mut none = FetchSessionCache::new(0);
        assert_eq!(
            none.begin(0, 0, vec![], &[], false, t0).unwrap().session_id,
            0
        );
    }

    #[test]
    fn consumers_cannot_evict_followers_sessions() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let many = |n: i32| (0..n).map(|p| (key(p), fetch(0))).collect::<Vec<_>>();
        let mut c = FetchSessionCache::new(2);
        let f1 = c.begin(0, 0, many(2), &[], true, t0).unwrap().session_id;
        let f2 = c.begin(0, 0, many(3), &[], true, t0).unwrap().session_id;
        assert_eq!(c.counts(), (2, 0));
        // Long after creation, but in use: a consumer with more partitions still cannot take
        // a follower's slot.
        let later = t0 + EVICTION_AFTER + ms(10);
        c.begin(f1, 1, vec![], &[], true, later).unwrap();
        c.begin(f2, 1, vec![], &[], true, later).unwrap();
        assert_eq!(
            c.begin(0, 0, many(100), &[], false, later)
                .unwrap()
                .session_id,
            0
        );
        assert_eq!(c.counts(), (2, 0));

        // A follower evicts a young consumer session, whatever its size; a consumer only an
        // old one with fewer partitions.
        let mut c = FetchSessionCache::new(2);
        let c1 = c.begin(0, 0, many(50), &[], false, t0).unwrap().session_id;
        let c2 = c.begin(0, 0, many(5), &[], false, t0).unwrap().session_id;
        let f = c
            .begin(0, 0, many(1), &[], true, t0 + ms(1))
            .unwrap()
            .session_id;
        assert!(f > 0);
        assert_eq!(c.counts(), (1, 1));
        assert!(
            c.begin(c2, 1, vec![], &[], false, t0).is_err(),
            "smaller evicted first"
        );
        assert!(c.begin(c1, 1, vec![], &[], false, t0 + ms(2)).is_ok());
        let old = t0 + EVICTION_AFTER + ms(3);
        assert!(c.begin(f, 1, vec![], &[], true, old).is_ok());
        assert!(c.begin(c1, 2, vec![], &[], false, old).is_ok());
        assert_eq!(
            c.begin(0, 0, many(50), &[], false, old).unwrap().session_id,
            0
        );
        assert!(c.begin(0, 0, many(51), &[], false, old).unwrap().session_id > 0);
        assert_eq!(c.counts(), (1, 1));
    }

    #[test]
    fn partitions_that_returned_records_rotate_to_the_end() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(10);
        let all = (0..4).map(|p| (key(p), fetch(0))).collect();
        let plan = c.begin(0, 0, all, &[], true, now).unwrap();
        let order = |plan: &FetchPlan| {
            plan.partitions
                .iter()
                .map(|(k, _)| k.partition)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&plan), vec![0, 1, 2, 3]);
        c.finish(
            &plan,
            &[
                outcome(1, true),
                outcome(0, false),
                outcome(1, true),
                outcome(0, false),
            ],
        );
        let plan = c.begin(plan.session_id, 1, vec![], &[], true, now).unwrap();
        assert_eq!(order(&plan), vec![1, 3, 0, 2]);
    }

    #[test]
    fn an_error_is_answered_again_when_it_clears() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(10);
        let plan = c
            .begin(0, 0, vec![(key(0), fetch(0))], &[], true, now)
            .unwrap();
        c.finish(&plan, &[outcome(5, false)]);
        let plan = c.begin(plan.session_id, 1, vec![], &[], true, now).unwrap();
        let failed = PartitionOutcome {
            error: true,
            ..outcome(5, false)
        };
        assert_eq!(c.finish(&plan, &[failed]), vec![true]);
        let plan = c.begin(plan.session_id, 2, vec![], &[], true, now).unwrap();
        assert_eq!(c.finish(&plan, &[outcome(5, false)]), vec![true]);
    }

    type Client = ClientSession<i32, i64>;

    #[test]
    fn client_lists_only_changes_after_the_full_fetch() {
        let mut s = Client::default();
        let first = s.next_fetch(vec![(1, 0), (2, 0), (3, 0)]);
        assert!(first.is_full());
        assert_eq!((first.session_id, first.listed.len()), (0, 3));
        s.answered(first, 42);
        assert_eq!(s.session_id(), 42);

        // Partition 1 moved, 3 went away, 4 is new; 2 is unchanged.
        let next = s.next_fetch(vec![(1, 10), (2, 0), (4, 0)]);
        assert_eq!((next.session_id, next.session_epoch), (42, 1));
        assert_eq!(next.listed, vec![(1, 10), (4, 0)]);
        assert_eq!(next.forgotten, vec![(3, 0)]);
        s.answered(next, 42);

        // Steady state: nothing listed.
        let idle = s.next_fetch(vec![(1, 10), (2, 0), (4, 0)]);
        assert_eq!(
            (idle.session_epoch, idle.listed.len(), idle.forgotten.len()),
            (2, 0, 0)
        );
        s.answered(idle, 42);

        // An error: the next fetch is full again and closes session 42 on the broker.
        let lost = s.next_fetch(vec![(1, 11)]);
        s.failed();
        drop(lost);
        let full = s.next_fetch(vec![(1, 11), (2, 0)]);
        assert_eq!((full.session_id, full.session_epoch), (42, 0));
        assert_eq!(full.listed.len(), 2);
        // The broker had no slot: sessionless, and full again next time.
        s.answered(full, 0);
        let again = s.next_fetch(vec![(1, 11)]);
        assert_eq!((again.session_id, again.session_epoch), (0, 0));
    }

    #[test]
    fn client_and_broker_sessions_agree() {
        // The client's requests, replayed on the broker's cache, give the broker the
        // partitions and offsets the client wants, through changes and a session loss.
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(1);
        let mut client = ClientSession::<i32, PartitionFetch>::default();
        let wanted_rounds: Vec<Vec<(i32, i64)>> = vec![
            vec![(0, 0), (1, 0), (2, 0)],
            vec![(0, 5), (1, 0), (2, 0)],
            vec![(0, 5), (2, 7)],
            vec![(0, 5), (2, 7), (3, 0)],
            vec![(3, 1)],
        ];
        for (round, wanted) in wanted_rounds.into_iter().enumerate() {
            if round == 3 {
                // The broker lost the session (restart, eviction).
                cache = FetchSessionCache::new(1);
            }
            let want: Vec<(i32, PartitionFetch)> =
                wanted.iter().map(|(p, o)| (*p, fetch(*o))).collect();
            let mut next = client.next_fetch(want.clone());
            let to_keys = |v: &[(i32, PartitionFetch)]| -> Vec<(SessionKey, PartitionFetch)> {
                v.iter().map(|(p, f)| (key(*p), *f)).collect()
            };
            let forgotten: Vec<SessionKey> = next.forgotten.iter().map(|(p, _)| key(*p)).collect();
            let plan = match cache.begin(
                next.session_id,
                next.session_epoch,
                to_keys(&next.listed),
                &forgotten,
                true,
                now,
            ) {
                Ok(plan) => plan,
                Err(code) => {
                    assert_eq!(code, ErrorCode::FetchSessionIdNotFound, "round {round}");
                    client.failed();
                    next = client.next_fetch(want.clone());
                    assert!(next.is_full());
                    cache
                        .begin(next.session_id, 0, to_keys(&next.listed), &[], true, now)
                        .unwrap()
                }
            };
            let mut got = plan.partitions.clone();
            got.sort_by_key(|(k, _)| k.partition);
            assert_eq!(got, to_keys(&want), "round {round}");
            client.answered(next, plan.session_id);
        }
    }
}
