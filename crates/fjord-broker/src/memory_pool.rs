//! `queued.max.request.bytes`: a broker-wide bound on the memory held by requests that have
//! been read but not yet handled, as Kafka's `SimpleMemoryPool` bounds its network threads.
//!
//! A connection reserves a frame's whole size from the pool as soon as it has read the frame's
//! size prefix, before reading its body (Kafka's `NetworkReceive` allocates from the pool at the
//! same point). When the pool cannot cover it, the connection stops reading — its bytes wait in
//! the kernel and TCP pushes back on the client — until other requests are handled and give
//! their memory back. A reservation is all or nothing, so a connection that holds one can always
//! finish its frame: waiting connections hold nothing, and the pool cannot deadlock. The frame
//! buffer itself grows only as bytes arrive, so a peer announcing a large frame costs pool
//! budget but not memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Counter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Kafka's default for `queued.max.request.bytes` is -1 (no pool: requests are bounded only by
/// the JVM heap). Fjord has no heap limit, so "no pool" gets this implicit bound instead (or
/// `socket.request.max.bytes` if that is larger, so that one largest frame fits).
pub const IMPLICIT_POOL_BYTES: usize = 512 * 1024 * 1024;

/// The pool's size for a configured `queued.max.request.bytes` (`<= 0`: Kafka's "no pool").
pub fn pool_bytes(queued_max_request_bytes: i64, socket_request_max_bytes: usize) -> usize {
    if queued_max_request_bytes > 0 {
        (queued_max_request_bytes as u64).min(Semaphore::MAX_PERMITS as u64) as usize
    } else {
        IMPLICIT_POOL_BYTES.max(socket_request_max_bytes)
    }
}

/// Gauges and counters the pool keeps current.
#[derive(Clone)]
pub struct PoolMetrics {
    pub used: IntGauge,
    pub available: IntGauge,
    /// Seconds connections spent waiting for memory.
    pub depleted_seconds: Counter,
}

/// The broker-wide pool for request memory.
#[derive(Clone)]
pub struct MemoryPool {
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: PoolMetrics,
}

impl MemoryPool {
    pub fn new(capacity: usize, metrics: PoolMetrics) -> MemoryPool {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        metrics.used.set(0);
        metrics.available.set(capacity as i64);
        MemoryPool {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            metrics,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Reserve `bytes` for one frame, waiting (first come, first served) until the pool has
    /// them; also returns how long it waited. A frame larger than the whole pool (config
    /// validation rules that out) takes the whole pool rather than waiting forever.
    pub async fn reserve(&self, bytes: usize) -> (Reservation, Duration) {
        let n = bytes.min(self.capacity).min(u32::MAX as usize) as u32;
        let (permit, waited) = match self.permits.clone().try_acquire_many_owned(n) {
            Ok(p) => (p, Duration::ZERO),
            Err(_) => {
                let start = Instant::now();
                let p = self
                    .permits
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .expect("the pool's semaphore is never closed");
                let waited = start.elapsed();
                self.metrics.depleted_seconds.inc_by(waited.as_secs_f64());
                (p, waited)
            }
        };
        self.metrics.used.add(n as i64);
        self.metrics.available.sub(n as i64);
        (
            Reservation {
                permit: Some(permit),
                bytes: n as usize,
                metrics: self.metrics.clone(),
            },
            waited,
        )
    }
}

/// Pool memory held for one request; given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    metrics: PoolMetrics,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            drop(p);
            self.metrics.used.sub(self.bytes as i64);
            self.metrics.available.add(self.bytes as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> PoolMetrics {
        PoolMetrics {
            used: IntGauge::new("used", "used").unwrap(),
            available: IntGauge::new("available", "available").unwrap(),
            depleted_seconds: Counter::new("depleted", "depleted").unwrap(),
        }
    }

    #[test]
    fn no_pool_gets_the_implicit_bound_and_a_pool_is_taken_as_configured() {
        assert_eq!(pool_bytes(-1, 100 << 20), IMPLICIT_POOL_BYTES);
        assert_eq!(pool_bytes(0, 100 << 20), IMPLICIT_POOL_BYTES);
        assert_eq!(pool_bytes(-1, 1 << 30), 1 << 30);
        assert_eq!(pool_bytes(1 << 20, 1 << 20), 1 << 20);
    }

    #[tokio::test]
    async fn a_full_pool_makes_readers_wait_until_memory_is_given_back() {
        let m = metrics();
        let pool = MemoryPool::new(1000, m.clone());
        let (a, waited) = pool.reserve(600).await;
        assert_eq!((a.bytes(), waited), (600, Duration::ZERO));
        let (b, _) = pool.reserve(400).await;
        assert_eq!(
            (pool.used(), m.used.get(), m.available.get()),
            (1000, 1000, 0)
        );

        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.reserve(500).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "the pool is full");
        drop(b);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "400 free is not enough for 500");
        drop(a);
        let (c, waited) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(c.bytes(), 500);
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(m.depleted_seconds.get() >= 0.05);
        assert_eq!(m.used.get(), 500);
        drop(c);
        assert_eq!((pool.used(), m.used.get(), m.available.get()), (0, 0, 1000));
    }

    #[tokio::test]
    async fn an_oversized_request_takes_the_whole_pool_instead_of_waiting_forever() {
        let pool = MemoryPool::new(100, metrics());
        let (r, _) = tokio::time::timeout(Duration::from_secs(5), pool.reserve(1000))
            .await
            .expect("not stuck");
        assert_eq!(r.bytes(), 100);
    }
}
