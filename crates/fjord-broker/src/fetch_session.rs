//! Incremental fetch sessions (KIP-227), as a state machine without I/O.
//!
//! A client opens a session with a full fetch (session id 0, epoch 0); later fetches name the
//! session and the next epoch and list only the partitions whose fetch position changed, and
//! the broker answers only for partitions with something new (records, an error, or a moved high
//! watermark or log start). Epoch -1 closes the session and makes a sessionless full fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fjord_protocol::error::ErrorCode;
use uuid::Uuid;

/// One partition in a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// Where the client wants to read a partition from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionFetch {
    pub fetch_offset: i64,
    pub max_bytes: i32,
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
}

const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

impl FetchSessionCache {
    pub fn new(slots: usize) -> Self {
        FetchSessionCache {
            slots,
            next_id: 1,
            sessions: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decide what a fetch request reads. `requested` are the partitions in the request,
    /// `forgotten` the ones it drops from the session.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: Vec<(SessionKey, PartitionFetch)>,
        forgotten: &[SessionKey],
        now: Instant,
    ) -> Result<FetchPlan, ErrorCode> {
        match epoch {
            FINAL_EPOCH => {
                if session_id != 0 {
                    self.sessions.remove(&session_id);
                }
                Ok(FetchPlan {
                    session_id: 0,
                    incremental: false,
                    partitions: requested,
                })
            }
            INITIAL_EPOCH => {
                if session_id != 0 {
                    self.sessions.remove(&session_id);
                }
                let id = self.create(&requested, now);
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
                    match session.partitions.get_mut(&key) {
                        Some(p) => p.fetch = fetch,
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
        plan.partitions
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
                p.last_high_watermark = o.high_watermark;
                p.last_log_start = o.log_start_offset;
                !plan.incremental || changed
            })
            .collect()
    }

    fn create(&mut self, requested: &[(SessionKey, PartitionFetch)], now: Instant) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        if self.sessions.len() >= self.slots {
            // Evict the least recently used session; its client gets FETCH_SESSION_ID_NOT_FOUND
            // and starts a new one.
            if let Some((&old, _)) = self.sessions.iter().min_by_key(|(_, s)| s.last_used) {
                self.sessions.remove(&old);
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
        id
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
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
        }
    }
    fn fetch(o: i64) -> PartitionFetch {
        PartitionFetch {
            fetch_offset: o,
            max_bytes: 1024,
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

    #[test]
    fn session_lifecycle() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(10);
        let plan = c
            .begin(0, 0, vec![(key(0), fetch(0)), (key(1), fetch(0))], &[], now)
            .unwrap();
        assert!(plan.session_id > 0 && !plan.incremental);
        assert_eq!(
            c.finish(&plan, &[outcome(5, true), outcome(0, false)]),
            vec![true, true]
        );
        let id = plan.session_id;

        // Incremental: client moves partition 0 forward; partition 1 unchanged.
        let plan = c.begin(id, 1, vec![(key(0), fetch(5))], &[], now).unwrap();
        assert!(plan.incremental);
        assert_eq!(
            plan.partitions,
            vec![(key(0), fetch(5)), (key(1), fetch(0))]
        );
        // Nothing new anywhere: empty response.
        assert_eq!(
            c.finish(&plan, &[outcome(5, false), outcome(0, false)]),
            vec![false, false]
        );
        // New data on 1 only.
        let plan = c.begin(id, 2, vec![], &[], now).unwrap();
        assert_eq!(
            c.finish(&plan, &[outcome(5, false), outcome(3, true)]),
            vec![false, true]
        );

        // Wrong epoch and unknown session.
        assert_eq!(
            c.begin(id, 2, vec![], &[], now).unwrap_err(),
            ErrorCode::InvalidFetchSessionEpoch
        );
        assert_eq!(
            c.begin(id + 100, 1, vec![], &[], now).unwrap_err(),
            ErrorCode::FetchSessionIdNotFound
        );

        // Forget partition 0.
        let plan = c.begin(id, 3, vec![], &[key(0)], now).unwrap();
        assert_eq!(plan.partitions, vec![(key(1), fetch(0))]);

        // Close.
        let plan = c.begin(id, -1, vec![(key(0), fetch(1))], &[], now).unwrap();
        assert_eq!(plan.session_id, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn cache_is_bounded_and_evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut c = FetchSessionCache::new(2);
        let a = c.begin(0, 0, vec![], &[], t0).unwrap().session_id;
        let b = c
            .begin(0, 0, vec![], &[], t0 + std::time::Duration::from_millis(1))
            .unwrap()
            .session_id;
        let _ = c
            .begin(0, 0, vec![], &[], t0 + std::time::Duration::from_millis(2))
            .unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.begin(a, 1, vec![], &[], t0).is_err());
        assert!(c.begin(b, 1, vec![], &[], t0).is_ok());
        let mut none = FetchSessionCache::new(0);
        assert_eq!(none.begin(0, 0, vec![], &[], t0).unwrap().session_id, 0);
    }
}
