//! Fetch from the partitions hosted here, as Kafka's `ReplicaManager.fetchMessages`: reads
//! whole batches and long-polls for `min_bytes` until `max_wait_ms` (woken by appends and
//! high-watermark moves, no busy waiting).
//!
//! Three kinds of fetcher:
//! - a follower (replica id >= 0, in `replica_state` from v15): served by the leader only, up
//!   to the log end; its fetch offset is its progress, which advances the high watermark and
//!   may bring it back into the ISR ([`crate::replication::propose_isr`]);
//! - a consumer of the leader: up to the high watermark; with `replica.selector.class` set to
//!   the rack-aware selector and a `rack_id` (v11+), the leader may answer with a preferred
//!   read replica in the consumer's rack instead of records (KIP-392);
//! - a consumer of a follower (v11+): served by any replica up to its high watermark.
//!
//! Records leave the log as file ranges ([`FileRange`]): the reads under the partition lock
//! touch batch headers only; the Fetch handler decides how the bytes reach the connection.
//! A fetch that starts below a partition's active segment (catching up) may load an index and
//! read uncached headers, so its reads run off the async worker's other tasks
//! (`block_in_place`); reads at the tail do not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_protocol::clock::now_ms;
use fjord_protocol::error::ErrorCode;
use fjord_storage::FileRange;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::fetch_session::{PartitionFetch, SessionKey};
use crate::partition::{ConsumerRead, Partition};
use crate::throttle::FetchAllowance;

/// Who is fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetcher {
    Follower(i32),
    /// `from_follower`: the request may be served by a follower (KIP-392, v11+);
    /// `read_committed`: Kafka's `isolation_level = 1` (stop at the last stable offset).
    Consumer {
        from_follower: bool,
        read_committed: bool,
    },
}

/// The request-wide parameters of a fetch.
#[derive(Debug, Clone)]
pub struct FetchParams {
    pub fetcher: Fetcher,
    /// The consumer's rack (KIP-392), if it sent one.
    pub client_rack: Option<String>,
    /// The response's byte budget over all partitions.
    pub max_bytes: i32,
    /// Wait until at least this many bytes are available ...
    pub min_bytes: i32,
    /// ... or this long.
    pub max_wait_ms: i32,
    /// The request names topics by id (Fetch v13+), else by name.
    pub by_id: bool,
}

/// What one partition answers.
pub struct PartitionRead {
    pub error: ErrorCode,
    pub records: Option<FileRange>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// For a read_committed consumer: the aborted transactions (producer id, first offset)
    /// its records may hold.
    pub aborted: Option<Vec<(i64, i64)>>,
    pub log_start_offset: i64,
    /// KIP-392: the replica the consumer should fetch from instead (-1: none).
    pub preferred_read_replica: i32,
    /// Served as the partition's leader (else as a follower).
    pub leader: bool,
    /// Left out by the reassignment throttle.
    pub throttled: bool,
}

impl PartitionRead {
    pub(crate) fn failed(
        error: ErrorCode,
        high_watermark: i64,
        log_start_offset: i64,
    ) -> PartitionRead {
        PartitionRead {
            error,
            records: None,
            high_watermark,
            last_stable_offset: high_watermark,
            aborted: None,
            log_start_offset,
            preferred_read_replica: -1,
            leader: true,
            throttled: false,
        }
    }
}

/// KIP-903: a follower's fetch from an older incarnation of its broker is refused before it
/// can count for the ISR or the high watermark.
pub fn check_follower_broker_epoch(b: &Broker, replica: i32, epoch: i64) -> Result<(), ErrorCode> {
    crate::replication::check_follower_broker_epoch(b, replica, epoch)
}

/// One partition to read, resolved.
struct Target {
    fetch: PartitionFetch,
    partition: Result<Arc<Partition>, ErrorCode>,
}

/// Read `partitions` (a fetch session's plan) for `params.fetcher`: one [`PartitionRead`] per
/// partition, in order. Leader epochs are checked on every partition; a follower's fetch
/// offsets are its progress; if fewer than `min_bytes` are available the fetch waits, parked
/// on the partitions, until an append wakes it or `max_wait_ms` passes.
pub async fn fetch(
    b: &Arc<Broker>,
    params: &FetchParams,
    partitions: &[(SessionKey, PartitionFetch)],
) -> Vec<PartitionRead> {
    let fetcher = params.fetcher;
    let targets: Vec<Target> = partitions
        .iter()
        .map(|(key, fetch)| {
            let partition = lookup(b, key, params.by_id).and_then(|p| {
                match fetcher {
                    Fetcher::Consumer {
                        from_follower: true,
                        ..
                    } => p.check_replica_epoch(fetch.current_leader_epoch),
                    _ => p.check_leader_epoch(fetch.current_leader_epoch),
                }
                .map(|()| p)
            });
            Target {
                fetch: *fetch,
                partition,
            }
        })
        .collect();

    match fetcher {
        Fetcher::Follower(replica) => record_follower_progress(b, &targets, replica),
        Fetcher::Consumer { .. } => {
            // A consumer polling, with or without data, uses the topic (`crate::topic_activity`).
            for p in targets.iter().filter_map(|t| t.partition.as_ref().ok()) {
                p.activity.fetched();
            }
        }
    }
    // KIP-392: a consumer in another rack than the leader is sent to an in-sync replica in
    // its own rack.
    let redirects: Vec<Option<i32>> = targets
        .iter()
        .map(|t| match (&t.partition, &params.client_rack, fetcher) {
            (
                Ok(p),
                Some(rack),
                Fetcher::Consumer {
                    from_follower: true,
                    ..
                },
            ) if b.config.replication.rack_aware_selector && p.is_leader() => {
                preferred_read_replica(b, p, rack, t.fetch.fetch_offset)
            }
            _ => None,
        })
        .collect();
    // Reassignment throttle (leader side): partitions this follower is being added to, when
    // the topic's leader list names this broker, share `leader.replication.throttled.rate`.
    let throttled: Vec<bool> = match fetcher {
        Fetcher::Follower(replica) => targets
            .iter()
            .map(|t| {
                t.partition
                    .as_ref()
                    .is_ok_and(|p| p.leader_throttles(replica))
            })
            .collect(),
        Fetcher::Consumer { .. } => Vec::new(),
    };
    let throttle = Throttle {
        throttled: &throttled,
        quota: &b.replication_quotas.leader,
    };
    let throttle = throttled.iter().any(|t| *t).then_some(&throttle);
    let results = read_or_wait(&targets, &redirects, params, throttle).await;
    if let Some(t) = throttle {
        t.charge(b, &results);
    }
    if !redirects.iter().all(Option::is_none) {
        b.metrics
            .preferred_replica_redirects
            .inc_by(redirects.iter().flatten().count() as u64);
    }
    results
}

/// A follower's fetch offsets are its progress: they may advance the high watermark and
/// propose it back into the ISR.
fn record_follower_progress(b: &Arc<Broker>, targets: &[Target], replica: i32) {
    let now = now_ms();
    for t in targets {
        if let Ok(p) = &t.partition {
            match p.on_follower_fetch(replica, t.fetch.fetch_offset, now) {
                Ok(effect) => {
                    if let Some(isr) = effect.propose_isr {
                        tracing::warn!(topic = %p.topic, partition = p.index, replica,
                            fetch_offset = t.fetch.fetch_offset, new_isr = ?isr,
                            "ISR expand proposed: follower caught up with the high watermark");
                        crate::replication::propose_isr(b, p, isr);
                    }
                }
                Err(_) => tracing::debug!(topic = %p.topic, partition = p.index, replica,
                    "fetch from a broker that is not a replica"),
            }
        }
    }
}

/// The waiting area: read; while fewer than `min_bytes` are available (and no partition
/// failed), park on every partition until an append or a high-watermark move wakes the fetch,
/// or `max_wait_ms` passes.
async fn read_or_wait(
    targets: &[Target],
    redirects: &[Option<i32>],
    params: &FetchParams,
    throttle: Option<&Throttle<'_>>,
) -> Vec<PartitionRead> {
    let (fetcher, max_bytes) = (params.fetcher, params.max_bytes);
    let deadline = Instant::now() + Duration::from_millis(params.max_wait_ms.max(0) as u64);
    let waiter = Arc::new(Notify::new());
    let mut registered = false;
    // Reads below the active segment (catching up) may wait for the disk: they run where
    // waiting holds up no other connection. Reads at the tail come from the page cache.
    let catching_up = targets.iter().any(|t| {
        t.partition
            .as_ref()
            .is_ok_and(|p| p.reads_sealed_segment(t.fetch.fetch_offset))
    });
    let results = loop {
        let (results, bytes, any_error) = if catching_up {
            off_worker(|| read_all(targets, redirects, max_bytes, fetcher, throttle))
        } else {
            read_all(targets, redirects, max_bytes, fetcher, throttle)
        };
        let now = Instant::now();
        if bytes >= params.min_bytes.max(0) as usize || any_error || now >= deadline {
            break results;
        }
        if !registered {
            // Register, then read again: an append between the read and the registration
            // would otherwise be missed until the deadline.
            register(targets, &waiter);
            registered = true;
            continue;
        }
        if tokio::time::timeout(deadline - now, waiter.notified())
            .await
            .is_err()
        {
            let (results, _, _) = read_all(targets, redirects, max_bytes, fetcher, throttle);
            break results;
        }
        register(targets, &waiter);
    };
    if registered {
        for p in targets.iter().filter_map(|t| t.partition.as_ref().ok()) {
            p.unregister_waiter(&waiter);
        }
    }
    results
}

/// Run `f`, which may wait for the disk, without holding up the other tasks of this async
/// worker: on the multi-threaded runtime the worker hands them to another thread first
/// (`block_in_place`); elsewhere (a single-threaded test runtime) `f` just runs.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn register(targets: &[Target], waiter: &Arc<Notify>) {
    for p in targets.iter().filter_map(|t| t.partition.as_ref().ok()) {
        p.register_waiter(waiter);
    }
}

fn lookup(b: &Broker, key: &SessionKey, by_id: bool) -> Result<Arc<Partition>, ErrorCode> {
    let topic = if by_id {
        b.topic_by_id(&key.topic_id)
            .ok_or(ErrorCode::UnknownTopicId)?
    } else {
        b.topic(&key.topic)
            .ok_or(ErrorCode::UnknownTopicOrPartition)?
    };
    usize::try_from(key.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i).cloned())
        .ok_or(ErrorCode::UnknownTopicOrPartition)
}

/// The rack-aware replica selector (Kafka's `RackAwareReplicaSelector`): `None` keeps the
/// consumer on the leader (the leader is in its rack, or no in-sync replica there has the
/// offset); otherwise the in-sync, unfenced replica in the consumer's rack that is furthest
/// ahead.
fn preferred_read_replica(b: &Broker, p: &Partition, rack: &str, fetch_offset: i64) -> Option<i32> {
    let state = p.state();
    let rack_of = |id: i32| -> Option<(Option<String>, bool)> {
        b.with_image(|img| img.broker(id).map(|x| (x.rack.clone(), x.fenced)))
    };
    if rack_of(state.leader).is_some_and(|(r, _)| r.as_deref() == Some(rack)) {
        return None;
    }
    state
        .isr
        .iter()
        .copied()
        .filter(|r| *r != state.leader)
        .filter(|r| rack_of(*r).is_some_and(|(x, fenced)| !fenced && x.as_deref() == Some(rack)))
        .filter_map(|r| {
            let leo = p.with_replica(|x| x.follower(r))?.log_end_offset;
            (leo >= fetch_offset).then_some((leo, r))
        })
        .max_by_key(|(leo, r)| (*leo, -*r))
        .map(|(_, r)| r)
}

/// The leader's reassignment throttle over one follower fetch.
struct Throttle<'a> {
    /// Per target: is it throttled?
    throttled: &'a [bool],
    quota: &'a parking_lot::Mutex<crate::throttle::TokenBucket>,
}

impl Throttle<'_> {
    fn is_throttled(&self, i: usize) -> bool {
        self.throttled.get(i).copied().unwrap_or(false)
    }

    /// The rate's balance for one answer: its throttled targets share it.
    fn allowance(&self) -> FetchAllowance {
        FetchAllowance::new(self.quota.lock().available(now_ms()))
    }

    /// Charge the throttled bytes of the answer sent to the rate.
    fn charge(&self, b: &Broker, results: &[PartitionRead]) {
        let bytes: u64 = results
            .iter()
            .zip(self.throttled)
            .filter(|(_, t)| **t)
            .filter_map(|(r, _)| r.records.as_ref().map(|f| f.len() as u64))
            .sum();
        let left_out = results
            .iter()
            .zip(self.throttled)
            .any(|(r, t)| *t && r.throttled);
        if bytes > 0 {
            self.quota.lock().record(bytes, now_ms());
            b.metrics
                .replication_throttled_bytes
                .with_label_values(&["leader"])
                .inc_by(bytes);
        }
        if left_out {
            b.metrics
                .replication_throttled_fetches
                .with_label_values(&["leader"])
                .inc();
        }
    }
}

/// Read every target once within the budgets: the answers, the record bytes found, and
/// whether a partition failed (or redirected), which ends the wait.
fn read_all(
    targets: &[Target],
    redirects: &[Option<i32>],
    max_bytes: i32,
    fetcher: Fetcher,
    throttle: Option<&Throttle<'_>>,
) -> (Vec<PartitionRead>, usize, bool) {
    let mut remaining = max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut any_error = false;
    let mut first_data = true;
    let mut allowance = throttle.map(Throttle::allowance);
    let out = targets
        .iter()
        .zip(redirects)
        .enumerate()
        .map(|(i, (t, redirect))| {
            let p = match &t.partition {
                Ok(p) => p,
                Err(code) => {
                    any_error = true;
                    return PartitionRead::failed(*code, -1, -1);
                }
            };
            if let Some(replica) = redirect {
                // Answer at once, with no records: the consumer moves to that replica.
                any_error = true;
                let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                return PartitionRead {
                    preferred_read_replica: *replica,
                    ..PartitionRead::failed(ErrorCode::None, hw, ls)
                };
            }
            let mut budget = (t.fetch.max_bytes.max(0) as usize).min(remaining);
            let throttled = throttle.is_some_and(|th| th.is_throttled(i));
            if let (true, Some(a)) = (throttled, &allowance) {
                match a.grant(budget) {
                    Some(n) => budget = n,
                    None => {
                        // Rate spent: answer without records (not an error, so the fetch
                        // still waits for others' data).
                        let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                        return PartitionRead {
                            error: ErrorCode::None,
                            throttled: true,
                            leader: p.is_leader(),
                            ..PartitionRead::failed(ErrorCode::None, hw, ls)
                        };
                    }
                }
            }
            // Only the first partition with records may go over the budget, with one batch
            // (Kafka's `minOneMessage`); later ones read at most what is left of it.
            let read = match fetcher {
                Fetcher::Follower(_) => p
                    .read_for_follower(t.fetch.fetch_offset, budget, first_data)
                    .map(|read| ConsumerRead {
                        last_stable_offset: read.log_end_offset,
                        read,
                        aborted: None,
                    }),
                Fetcher::Consumer { read_committed, .. } => {
                    p.read_for_consumer(t.fetch.fetch_offset, budget, first_data, read_committed)
                }
            };
            match read {
                Ok(ConsumerRead {
                    read: r,
                    last_stable_offset,
                    aborted,
                }) => {
                    if let Some(range) = &r.records {
                        first_data = false;
                        total += range.len();
                        remaining = remaining.saturating_sub(range.len());
                        if let (true, Some(a)) = (throttled, &mut allowance) {
                            a.take(range.len() as u64);
                        }
                    }
                    PartitionRead {
                        error: ErrorCode::None,
                        records: r.records,
                        high_watermark: r.log_end_offset,
                        last_stable_offset,
                        aborted,
                        log_start_offset: r.log_start_offset,
                        preferred_read_replica: -1,
                        leader: p.is_leader(),
                        throttled: false,
                    }
                }
                Err(e) => {
                    any_error = true;
                    let (ls, hw) = p.offsets().unwrap_or((-1, -1));
                    PartitionRead::failed(e.error_code(), hw, ls)
                }
            }
        })
        .collect();
    (out, total, any_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_storage::{Log, LogConfig};
    use std::path::Path;
    use uuid::Uuid;

    use crate::test_batches::batch;

    /// A partition led elsewhere whose log holds one batch per value length; with the batches'
    /// sizes.
    fn partition(dir: &Path, index: i32, value_lens: &[usize]) -> (Arc<Partition>, Vec<usize>) {
        let batches: Vec<Vec<u8>> = value_lens
            .iter()
            .enumerate()
            .map(|(i, len)| batch(i as i64, *len))
            .collect();
        let mut log = Log::open(dir.join(format!("t-{index}")), LogConfig::default()).unwrap();
        log.append_as_follower(&batches.concat(), 0).unwrap();
        let p = Partition::new("t".into(), Uuid::nil(), index, 1);
        p.install_log(log);
        (Arc::new(p), batches.iter().map(Vec::len).collect())
    }

    /// What a follower's fetch of `parts` from offset 0 reads: record bytes per partition.
    fn follower_read(
        parts: &[&Arc<Partition>],
        partition_max_bytes: i32,
        max_bytes: i32,
    ) -> Vec<usize> {
        let targets: Vec<Target> = parts
            .iter()
            .map(|p| Target {
                fetch: PartitionFetch {
                    fetch_offset: 0,
                    max_bytes: partition_max_bytes,
                    current_leader_epoch: -1,
                },
                partition: Ok(Arc::clone(p)),
            })
            .collect();
        let redirects = vec![None; targets.len()];
        let (reads, total, any_error) =
            read_all(&targets, &redirects, max_bytes, Fetcher::Follower(2), None);
        assert!(!any_error);
        let sizes: Vec<usize> = reads
            .iter()
            .map(|r| r.records.as_ref().map_or(0, FileRange::len))
            .collect();
        assert_eq!(total, sizes.iter().sum::<usize>());
        sizes
    }

    #[test]
    fn follower_fetch_stays_within_the_response_budget_across_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (a, sizes) = partition(dir.path(), 0, &[100; 4]);
        let (b, _) = partition(dir.path(), 1, &[100; 4]);
        let (c, _) = partition(dir.path(), 2, &[100; 4]);
        let s = sizes[0];
        assert!(sizes.iter().all(|x| *x == s));
        // The response budget: a takes its 4 batches, b the 2 whole ones left of it, c none
        // (half a batch is left: it is not the first partition with data).
        let budget = (6 * s + s / 2) as i32;
        assert_eq!(
            follower_read(&[&a, &b, &c], 1 << 20, budget),
            [4 * s, 2 * s, 0]
        );
        // The partition budget.
        let per_partition = (2 * s + 1) as i32;
        assert_eq!(
            follower_read(&[&a, &b, &c], per_partition, 1 << 20),
            [2 * s, 2 * s, 2 * s]
        );
        // A budget spent by the first partition leaves nothing to the others.
        assert_eq!(
            follower_read(&[&c, &a, &b], 1 << 20, (4 * s) as i32),
            [4 * s, 0, 0]
        );
    }

    #[test]
    fn one_batch_larger_than_the_budget_goes_out_only_when_it_is_the_first_data() {
        let dir = tempfile::tempdir().unwrap();
        let (big, big_sizes) = partition(dir.path(), 0, &[5000, 100]);
        let (small, sizes) = partition(dir.path(), 1, &[100; 4]);
        let (empty, _) = partition(dir.path(), 2, &[]);
        let (b, s) = (big_sizes[0], sizes[0]);
        let budget = 1000;
        assert!(b > budget && 4 * s < budget);
        // First with data (an empty partition before it does not count): its first batch goes
        // out whole, over both budgets, and nothing else fits.
        assert_eq!(
            follower_read(&[&empty, &big, &small], 1 << 20, budget as i32),
            [0, b, 0]
        );
        assert_eq!(
            follower_read(&[&big, &small], budget as i32, 1 << 20),
            [b, 4 * s]
        );
        // After another partition's data it waits for a fetch where it comes first (the
        // fetch session rotates the partitions after the last one that returned records).
        assert_eq!(
            follower_read(&[&small, &big], 1 << 20, budget as i32),
            [4 * s, 0]
        );
        assert_eq!(
            follower_read(&[&small, &big], 1 << 20, 1 << 20),
            [4 * s, b + big_sizes[1]]
        );
    }

    /// A read_committed consumer reads up to the last stable offset (the first offset of the
    /// oldest open transaction) and is told which aborted transactions its records hold; a
    /// read_uncommitted one reads to the high watermark.
    #[test]
    fn read_committed_stops_at_the_last_stable_offset_and_names_aborted_transactions() {
        use fjord_protocol::control::{marker_batch, EndTxnMarker};
        let dir = tempfile::tempdir().unwrap();
        let mut abort = marker_batch(
            7,
            0,
            EndTxnMarker {
                commit: false,
                coordinator_epoch: 0,
            },
            0,
            0,
        );
        fjord_protocol::batch::set_base_offset(&mut abort, 2);
        let batches = [
            batch(0, 10),
            crate::test_batches::txn_batch(1, 10, 7), // aborted by the marker at 2
            abort,
            crate::test_batches::txn_batch(3, 10, 8), // still open
            batch(4, 10),
        ];
        let mut log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
        log.append_as_follower(&batches.concat(), 0).unwrap();
        log.set_high_watermark(5);
        let p = Partition::new("t".into(), Uuid::nil(), 0, 1);
        p.install_log(log);

        let committed = p.read_for_consumer(0, 1 << 20, true, true).unwrap();
        assert_eq!(committed.last_stable_offset, 3);
        assert_eq!(committed.aborted, Some(vec![(7, 1)]));
        let stable: usize = batches[..3].iter().map(Vec::len).sum();
        assert_eq!(committed.read.records.map(|r| r.len()), Some(stable));

        let all = p.read_for_consumer(0, 1 << 20, true, false).unwrap();
        assert_eq!((all.last_stable_offset, all.aborted), (3, None));
        let total: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(all.read.records.map(|r| r.len()), Some(total));
    }
}
