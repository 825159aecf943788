//! Bytes on the wire by (client rack, kind, direction), on the broker that served them.
//!
//! One [`RackCounters`] per client rack holds a Prometheus counter for each kind and
//! direction; a connection resolves its rack's counters once (when it learns its rack) and
//! then only adds to them, so a request costs an atomic add, never a lock. The racks that get
//! a label are capped at [`MAX_CLIENT_RACKS`]: a peer can name any rack it likes, and the
//! metric's label set must not grow with what peers send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use super::config::valid_rack;
use crate::conn_limits::LogThrottle;

/// The client rack of a connection that has not said (and is not in `client.rack.cidrs`);
/// also the broker rack of a broker without `broker.rack`.
pub const UNKNOWN_RACK: &str = "unknown";
/// Where racks beyond [`MAX_CLIENT_RACKS`], or names that cannot be labels, are counted.
pub const OVERFLOW_RACK: &str = "other";
/// Distinct client racks that get their own label (besides `unknown` and `other`).
pub const MAX_CLIENT_RACKS: usize = 64;

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Produce requests and their responses.
    Produce,
    /// Fetch from a consumer (replica id < 0), from the leader or a follower (KIP-392).
    Consume,
    /// Fetch from a follower broker (replica id >= 0); the client rack is the follower's.
    Replication,
    /// Everything else: metadata, groups, offsets, admin.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Produce, Kind::Consume, Kind::Replication, Kind::Other];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Consume => "consume",
            Kind::Replication => "replication",
            Kind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which way bytes went: `In` to the broker (request frames), `Out` from it (response frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The counters of one client rack: `[kind][direction]`.
pub struct RackCounters {
    rack: Arc<str>,
    counters: [[IntCounter; 2]; 4],
}

impl RackCounters {
    pub fn rack(&self) -> &str {
        &self.rack
    }

    pub fn add(&self, kind: Kind, direction: Direction, bytes: usize) {
        self.counters[kind.index()][direction as usize].inc_by(bytes as u64);
    }

    pub fn get(&self, kind: Kind, direction: Direction) -> u64 {
        self.counters[kind.index()][direction as usize].get()
    }
}

/// One row of `/v1/traffic`: the bytes of one kind between clients of one rack and this broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub client_rack: String,
    pub kind: Kind,
    /// `bytes_in + bytes_out`.
    pub bytes: u64,
    /// Request frames received (with their 4-byte size prefix).
    pub bytes_in: u64,
    /// Response frames sent (with their size prefix; zero-copy record data included).
    pub bytes_out: u64,
}

/// Traffic by client rack on this broker.
pub struct Traffic {
    broker_rack: Arc<str>,
    bytes: IntCounterVec,
    racks: RwLock<HashMap<Arc<str>, Arc<RackCounters>>>,
    /// Connections whose rack was counted under `other`: over the cap or not a valid name.
    overflow: IntCounter,
    overflow_log: Mutex<LogThrottle>,
}

impl Traffic {
    /// Counters registered in `registry` as `fjord_traffic_bytes_total` and
    /// `fjord_traffic_rack_overflow_total`.
    pub fn new(broker_rack: Option<&str>, registry: &Registry) -> Traffic {
        let bytes = IntCounterVec::new(
            Opts::new(
                "traffic_bytes_total",
                "Bytes of request frames received (direction=in) and response frames sent (direction=out), by client rack, this broker's rack and kind (produce, consume, replication, other)",
            ),
            &["client_rack", "broker_rack", "kind", "direction"],
        )
        .expect("metric");
        let overflow = IntCounter::new(
            "traffic_rack_overflow_total",
            "Connections whose client rack was counted as \"other\": more distinct racks than the label cap, or a rack name that cannot be a label",
        )
        .expect("metric");
        for m in [
            Box::new(bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(overflow.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        let traffic = Traffic {
            broker_rack: broker_rack.unwrap_or(UNKNOWN_RACK).into(),
            bytes,
            racks: RwLock::new(HashMap::new()),
            overflow,
            overflow_log: Mutex::new(LogThrottle::new(Duration::from_secs(60))),
        };
        traffic.insert(UNKNOWN_RACK, usize::MAX);
        traffic.insert(OVERFLOW_RACK, usize::MAX);
        traffic
    }

    pub fn broker_rack(&self) -> &str {
        &self.broker_rack
    }

    /// The counters of `rack`, created unless the table already holds `limit` racks.
    fn insert(&self, rack: &str, limit: usize) -> Option<Arc<RackCounters>> {
        let mut racks = self.racks.write();
        if let Some(c) = racks.get(rack) {
            return Some(c.clone());
        }
        if racks.len() >= limit {
            return None;
        }
        let name: Arc<str> = rack.into();
        let counter = |kind: Kind, dir: Direction| {
            self.bytes
                .with_label_values(&[rack, &self.broker_rack, kind.label(), dir.label()])
        };
        let counters = Kind::ALL.map(|k| [counter(k, Direction::In), counter(k, Direction::Out)]);
        let c = Arc::new(RackCounters {
            rack: name.clone(),
            counters,
        });
        racks.insert(name, c.clone());
        Some(c)
    }

    /// The counters of client rack `rack`: its own label if it is a valid name and the cap
    /// allows, else `other` (counted, and logged at most once a minute).
    pub fn rack(&self, rack: &str) -> Arc<RackCounters> {
        if let Some(c) = self.racks.read().get(rack) {
            return c.clone();
        }
        if valid_rack(rack) {
            // `unknown` and `other` are in the table too.
            if let Some(c) = self.insert(rack, MAX_CLIENT_RACKS + 2) {
                return c;
            }
        }
        self.overflow.inc();
        if let Some(more) = self.overflow_log.lock().admit(Instant::now()) {
            let shown: String = rack.chars().take(80).collect();
            tracing::warn!(rack = %shown, max_racks = MAX_CLIENT_RACKS, times_before = more,
                "client rack counted as \"other\" in traffic accounting: too many distinct racks or not a valid rack name");
        }
        self.unknown_or(OVERFLOW_RACK)
    }

    /// The counters of `unknown` (or `other`): always present.
    pub fn unknown_or(&self, special: &str) -> Arc<RackCounters> {
        self.racks
            .read()
            .get(special)
            .cloned()
            .expect("special racks are created with the table")
    }

    /// Every non-zero flow, by client rack then kind.
    pub fn flows(&self) -> Vec<Flow> {
        let racks: Vec<Arc<RackCounters>> = self.racks.read().values().cloned().collect();
        let mut out = Vec::new();
        for r in racks {
            for kind in Kind::ALL {
                let bytes_in = r.get(kind, Direction::In);
                let bytes_out = r.get(kind, Direction::Out);
                if bytes_in + bytes_out > 0 {
                    out.push(Flow {
                        client_rack: r.rack.to_string(),
                        kind,
                        bytes: bytes_in + bytes_out,
                        bytes_in,
                        bytes_out,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.client_rack, a.kind).cmp(&(&b.client_rack, b.kind)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_rack_kind_and_direction() {
        let registry = Registry::new_custom(Some("fjord".into()), None).unwrap();
        let t = Traffic::new(Some("a"), &registry);
        let b = t.rack("b");
        b.add(Kind::Produce, Direction::In, 100);
        b.add(Kind::Produce, Direction::Out, 20);
        t.rack("b").add(Kind::Consume, Direction::Out, 7);
        t.unknown_or(UNKNOWN_RACK)
            .add(Kind::Other, Direction::In, 3);
        assert_eq!(
            t.flows(),
            vec![
                Flow {
                    client_rack: "b".into(),
                    kind: Kind::Produce,
                    bytes: 120,
                    bytes_in: 100,
                    bytes_out: 20
                },
                Flow {
                    client_rack: "b".into(),
                    kind: Kind::Consume,
                    bytes: 7,
                    bytes_in: 0,
                    bytes_out: 7
                },
                Flow {
                    client_rack: "unknown".into(),
                    kind: Kind::Other,
                    bytes: 3,
                    bytes_in: 3,
                    bytes_out: 0
                },
            ]
        );
        let text = {
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains(
            "fjord_traffic_bytes_total{broker_rack=\"a\",client_rack=\"b\",direction=\"in\",kind=\"produce\"} 100"
        ), "{text}");
    }

    #[test]
    fn a_hostile_client_cannot_grow_the_label_set() {
        let registry = Registry::new();
        let t = Traffic::new(None, &registry);
        for i in 0..1000 {
            t.rack(&format!("rack-{i}"))
                .add(Kind::Other, Direction::In, 1);
        }
        let labels = t.racks.read().len();
        assert_eq!(labels, MAX_CLIENT_RACKS + 2);
        assert_eq!(t.overflow.get(), 1000 - MAX_CLIENT_RACKS as u64);
        let other = t.unknown_or(OVERFLOW_RACK);
        assert_eq!(
            other.get(Kind::Other, Direction::In),
            1000 - MAX_CLIENT_RACKS as u64
        );
        // A known rack keeps its label after the cap is reached; bad names go to `other`.
        assert_eq!(t.rack("rack-3").rack(), "rack-3");
        assert_eq!(t.rack("bad rack").rack(), OVERFLOW_RACK);
        assert_eq!(t.rack(&"x".repeat(65)).rack(), OVERFLOW_RACK);
        assert_eq!(t.broker_rack(), UNKNOWN_RACK);
    }
}
