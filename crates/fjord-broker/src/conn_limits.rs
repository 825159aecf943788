//! Connection limits with Kafka's semantics (`SocketServer`'s `ConnectionQuotas`), without I/O.
//!
//! - `max.connections`: when the broker holds this many connections the acceptor stops
//!   accepting until one closes ("new connections are blocked"); waiting clients stay in the
//!   kernel's listen backlog. Fjord has one data listener, so Kafka's exception for the
//!   inter-broker listener (and closing the least recently used connection of another
//!   listener) does not arise.
//! - `max.connections.per.ip` (+ `max.connections.per.ip.overrides`, `host:count,...`): a
//!   connection over its address's limit is closed right after accept and does not count.
//!
//! [`ConnectionQuotas`] is the bookkeeping; [`SharedQuotas`] puts it behind a lock and hands
//! out [`ConnectionSlot`] guards that give the slot back when the connection ends, waking an
//! acceptor that waits for one. [`LogThrottle`] keeps a flood of rejections from flooding the
//! log.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `max.connections`: the broker-wide limit.
    pub max_connections: usize,
    /// `max.connections.per.ip`: the default per-address limit.
    pub max_connections_per_ip: usize,
    /// `max.connections.per.ip.overrides`, host names resolved to addresses.
    pub overrides: BTreeMap<IpAddr, usize>,
}

impl ConnectionLimits {
    /// Kafka's defaults: no limit (`Integer.MAX_VALUE` for both).
    pub fn unlimited() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: i32::MAX as usize,
            max_connections_per_ip: i32::MAX as usize,
            overrides: BTreeMap::new(),
        }
    }

    /// The limit for one address.
    pub fn max_for(&self, ip: IpAddr) -> usize {
        self.overrides
            .get(&canonical(ip))
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The address already holds its maximum (`max.connections.per.ip` or its override).
    MaxConnectionsPerIp { max: usize },
    /// The broker holds `max.connections`. The acceptor waits for a slot before accepting, so
    /// this is only seen if a caller admits without waiting.
    MaxConnections { max: usize },
}

impl Rejected {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::MaxConnectionsPerIp { .. } => "max_connections_per_ip",
            Rejected::MaxConnections { .. } => "max_connections",
        }
    }
}

/// Open connections per address and in total.
#[derive(Debug)]
pub struct ConnectionQuotas {
    limits: ConnectionLimits,
    counts: HashMap<IpAddr, usize>,
    total: usize,
}

impl ConnectionQuotas {
    pub fn new(limits: ConnectionLimits) -> ConnectionQuotas {
        ConnectionQuotas {
            limits,
            counts: HashMap::new(),
            total: 0,
        }
    }

    /// Whether the acceptor may accept another connection (`max.connections`).
    pub fn slot_available(&self) -> bool {
        self.total < self.limits.max_connections
    }

    /// Count a new connection from `ip`, or say why it must be closed. A rejected connection
    /// is not counted (Kafka counts it and uncounts it when it closes it at once).
    pub fn try_inc(&mut self, ip: IpAddr) -> Result<(), Rejected> {
        let ip = canonical(ip);
        if !self.slot_available() {
            return Err(Rejected::MaxConnections {
                max: self.limits.max_connections,
            });
        }
        let max = self.limits.max_for(ip);
        let count = self.counts.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                self.counts.remove(&ip);
            }
            return Err(Rejected::MaxConnectionsPerIp { max });
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// A counted connection from `ip` closed.
    pub fn dec(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        match self.counts.get_mut(&ip) {
            Some(c) if *c > 1 => *c -= 1,
            Some(_) => {
                self.counts.remove(&ip);
            }
            None => {
                debug_assert!(
                    false,
                    "closing a connection from {ip} that was never counted"
                );
                return;
            }
        }
        self.total -= 1;
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

/// An IPv4 client of a dual-stack listener shows up as `::ffff:a.b.c.d`; count it as
/// `a.b.c.d` so its limit and overrides apply.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// [`ConnectionQuotas`] shared by the acceptor and the connections.
pub struct SharedQuotas {
    quotas: Mutex<ConnectionQuotas>,
    released: Notify,
}

impl SharedQuotas {
    pub fn new(limits: ConnectionLimits) -> Arc<SharedQuotas> {
        Arc::new(SharedQuotas {
            quotas: Mutex::new(ConnectionQuotas::new(limits)),
            released: Notify::new(),
        })
    }

    /// Wait until the broker is below `max.connections`. Returns at once when it is.
    pub async fn wait_for_slot(&self) {
        loop {
            if self.quotas.lock().slot_available() {
                return;
            }
            // `notify_one` stores a permit when nobody waits, so a release between the check
            // and this await is not lost.
            self.released.notified().await;
        }
    }

    pub fn slot_available(&self) -> bool {
        self.quotas.lock().slot_available()
    }

    /// Admit a connection from `ip`: a slot that is given back when dropped.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Rejected> {
        self.quotas.lock().try_inc(ip)?;
        Ok(ConnectionSlot {
            shared: self.clone(),
            ip,
        })
    }

    pub fn total(&self) -> usize {
        self.quotas.lock().total()
    }
}

/// One admitted connection; dropping it frees its slot.
pub struct ConnectionSlot {
    shared: Arc<SharedQuotas>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.shared.quotas.lock().dec(self.ip);
        self.shared.released.notify_one();
    }
}

/// Parse `max.connections.per.ip.overrides`: `host:count,host:count` (the count after the last
/// colon, so IPv6 addresses work; brackets are allowed). Hosts are returned as written.
pub fn parse_overrides(value: &str) -> Result<Vec<(String, usize)>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, count) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} is not host:count"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{item:?} has no host"));
        }
        let count: usize = count
            .trim()
            .parse()
            .ok()
            .filter(|&c| c <= i32::MAX as usize)
            .ok_or_else(|| format!("{item:?}: the count must be an integer in [0, 2147483647]"))?;
        out.push((host.to_string(), count));
    }
    Ok(out)
}

/// Admits one log message per interval and counts the ones it held back, so a flood of the
/// same event costs one line per interval.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, mentioning the `n` messages held back since the last one.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(max: usize, per_ip: usize, overrides: &[(&str, usize)]) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            overrides: overrides.iter().map(|(h, c)| (ip(h), *c)).collect(),
        }
    }

    #[test]
    fn per_ip_limit_admits_up_to_the_limit_and_rejected_ones_do_not_count() {
        let mut q = ConnectionQuotas::new(limits(100, 2, &[]));
        let a = ip("127.0.0.2");
        assert_eq!(q.try_inc(a), Ok(()));
        assert_eq!(q.try_inc(a), Ok(()));
        for _ in 0..5 {
            assert_eq!(q.try_inc(a), Err(Rejected::MaxConnectionsPerIp { max: 2 }));
        }
        assert_eq!((q.count(a), q.total()), (2, 2));
        // Another address has its own budget.
        assert_eq!(q.try_inc(ip("127.0.0.3")), Ok(()));
        q.dec(a);
        assert_eq!(q.try_inc(a), Ok(()));
        assert_eq!(q.total(), 3);
    }

    #[test]
    fn overrides_replace_the_default_and_zero_refuses_everything() {
        let mut q = ConnectionQuotas::new(limits(100, 0, &[("127.0.0.1", 3)]));
        assert_eq!(
            q.try_inc(ip("127.0.0.9")),
            Err(Rejected::MaxConnectionsPerIp { max: 0 })
        );
        assert_eq!(
            q.count(ip("127.0.0.9")),
            0,
            "no entry left for a refused address"
        );
        for _ in 0..3 {
            assert_eq!(q.try_inc(ip("127.0.0.1")), Ok(()));
        }
        assert!(q.try_inc(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mut q = ConnectionQuotas::new(limits(100, 1, &[("10.0.0.1", 2)]));
        assert_eq!(q.try_inc(ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(q.try_inc(ip("10.0.0.1")), Ok(()));
        assert!(q.try_inc(ip("::ffff:10.0.0.1")).is_err());
        assert_eq!(q.count(ip("10.0.0.1")), 2);
        q.dec(ip("::ffff:10.0.0.1"));
        assert_eq!(q.count(ip("10.0.0.1")), 1);
    }

    #[test]
    fn max_connections_is_broker_wide() {
        let mut q = ConnectionQuotas::new(limits(3, 10, &[]));
        for i in 1..=3 {
            assert!(q.slot_available());
            q.try_inc(ip(&format!("127.0.0.{i}"))).unwrap();
        }
        assert!(!q.slot_available());
        assert_eq!(
            q.try_inc(ip("127.0.0.4")),
            Err(Rejected::MaxConnections { max: 3 })
        );
        q.dec(ip("127.0.0.2"));
        assert!(q.slot_available());
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn overrides_parse_like_kafka() {
        assert_eq!(
            parse_overrides("hostName:100, 127.0.0.1:200,[::1]:5,::2:7").unwrap(),
            vec![
                ("hostName".to_string(), 100),
                ("127.0.0.1".to_string(), 200),
                ("::1".to_string(), 5),
                ("::2".to_string(), 7),
            ]
        );
        assert_eq!(parse_overrides("").unwrap(), vec![]);
        for bad in ["host", "host:", ":5", "host:-1", "host:x", "h:9999999999"] {
            assert!(parse_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_throttle_admits_one_message_per_interval_and_counts_the_rest() {
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        for s in 1..10 {
            assert_eq!(t.admit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.admit(t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(t.admit(t0 + Duration::from_secs(11)), None);
    }

    #[tokio::test]
    async fn a_dropped_slot_wakes_the_acceptor() {
        let shared = SharedQuotas::new(limits(1, 10, &[]));
        let slot = shared.try_acquire(ip("127.0.0.1")).unwrap();
        assert!(!shared.slot_available());
        let waiter = tokio::spawn({
            let shared = shared.clone();
            async move { shared.wait_for_slot().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no slot yet");
        drop(slot);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(shared.total(), 0);
    }
}
