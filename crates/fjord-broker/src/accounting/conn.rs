//! What one connection knows for the accounting, and what it charges per request.
//!
//! A connection's client rack comes, from weakest to strongest, from `client.rack.cidrs`
//! (at accept), a `fjord_az=` tag in the `client.id` (first request, and whenever the id
//! changes), a Fetch `rack_id` (Kafka's `client.rack`, KIP-392) and, for a follower broker's
//! connection, that broker's rack in the metadata image; once learned it is kept for the later
//! requests of the connection. The rack's counters are resolved when the rack is learned, so a
//! request costs two atomic adds (request in, response out) and a string comparison of its
//! client id with the previous one.

use std::net::SocketAddr;
use std::sync::Arc;

use fjord_protocol::codec::Request;
use kafka_protocol::messages::{ApiKey, RequestKind};

use super::config::client_id_rack;
use super::traffic::{Direction, Kind, RackCounters, UNKNOWN_RACK};
use super::usage::UsageCell;
use super::Accounting;
use crate::broker::Broker;

/// Where the connection's rack came from; a stronger source replaces a weaker one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RackSource {
    Unknown,
    Cidr,
    ClientId,
    FetchRackId,
}

/// The accounting state of one connection (`None` in the connection when accounting is off).
pub struct ConnAccounting {
    rack: Arc<RackCounters>,
    source: RackSource,
    /// The client id of the previous request, to notice a change cheaply.
    client_id: Option<String>,
    /// The usage cell of that client id.
    client: Option<Arc<UsageCell>>,
    /// The follower broker fetching on this connection, with its rack's counters.
    follower: Option<(i32, Arc<RackCounters>)>,
}

/// Where the response to a request is counted (it may be encoded later, for acks=all).
pub struct Charge {
    counters: Arc<RackCounters>,
    kind: Kind,
    /// The client's usage cell, for consumer fetches (bytes out per client id).
    client_out: Option<Arc<UsageCell>>,
}

impl Charge {
    /// Count a response frame of `bytes` (size prefix and zero-copy record data included).
    pub fn response(&self, bytes: usize) {
        self.counters.add(self.kind, Direction::Out, bytes);
        if let Some(c) = &self.client_out {
            c.add_out(bytes as u64);
        }
    }
}

impl ConnAccounting {
    /// A new connection from `peer`; `None` when accounting is off.
    pub fn new(acct: &Accounting, peer: SocketAddr) -> Option<ConnAccounting> {
        if !acct.enabled() {
            return None;
        }
        let (rack, source) = match acct.config.rack_cidrs.rack_of(peer.ip()) {
            Some(r) => (acct.traffic.rack(r), RackSource::Cidr),
            None => (acct.traffic.unknown_or(UNKNOWN_RACK), RackSource::Unknown),
        };
        Some(ConnAccounting {
            rack,
            source,
            client_id: None,
            client: None,
            follower: None,
        })
    }

    fn learn_rack(&mut self, acct: &Accounting, rack: &str, source: RackSource) {
        if source < self.source || (source == self.source && self.rack.rack() == rack) {
            return;
        }
        self.rack = acct.traffic.rack(rack);
        self.source = source;
    }

    /// Count a request frame of `wire_bytes` (with its size prefix) and say where its response
    /// goes.
    pub fn request(&mut self, broker: &Broker, req: &Request, wire_bytes: usize) -> Charge {
        let acct = &broker.accounting;
        let client_id: &str = req.header.client_id.as_deref().unwrap_or("");
        if self.client_id.as_deref() != Some(client_id) {
            if let Some(rack) = client_id_rack(client_id) {
                self.learn_rack(acct, rack, RackSource::ClientId);
            }
            self.client = Some(acct.usage.client(client_id));
            self.client_id = Some(client_id.to_string());
        }
        let (kind, counters) = match (&req.api_key, &req.body) {
            (ApiKey::Produce, _) => (Kind::Produce, self.rack.clone()),
            (ApiKey::Fetch, RequestKind::Fetch(f)) => {
                let version = req.header.request_api_version;
                let replica_id = if version >= 15 {
                    f.replica_state.replica_id.0
                } else {
                    f.replica_id.0
                };
                if replica_id >= 0 {
                    (Kind::Replication, self.follower_rack(broker, replica_id))
                } else {
                    if version >= 11 && !f.rack_id.is_empty() {
                        self.learn_rack(acct, &f.rack_id, RackSource::FetchRackId);
                    }
                    (Kind::Consume, self.rack.clone())
                }
            }
            _ => (Kind::Other, self.rack.clone()),
        };
        counters.add(kind, Direction::In, wire_bytes);
        if kind == Kind::Produce {
            if let Some(c) = &self.client {
                c.add_in(wire_bytes as u64);
            }
        }
        Charge {
            counters,
            kind,
            client_out: if kind == Kind::Consume {
                self.client.clone()
            } else {
                None
            },
        }
    }

    /// A request answered without a handler (ApiVersions at a version too new): `other`.
    pub fn unhandled(&self, request_bytes: usize, response_bytes: usize) {
        self.rack.add(Kind::Other, Direction::In, request_bytes);
        self.rack.add(Kind::Other, Direction::Out, response_bytes);
    }

    /// The counters of follower `node_id`'s rack, from the metadata image (kept once found).
    fn follower_rack(&mut self, broker: &Broker, node_id: i32) -> Arc<RackCounters> {
        if let Some((id, c)) = &self.follower {
            if *id == node_id {
                return c.clone();
            }
        }
        let rack = broker.with_image(|i| i.broker(node_id).map(|b| b.rack.clone()));
        let acct = &broker.accounting;
        match rack {
            Some(rack) => {
                let c = acct.traffic.rack(rack.as_deref().unwrap_or(UNKNOWN_RACK));
                self.follower = Some((node_id, c.clone()));
                c
            }
            // Not in the image yet: asked again on the next fetch.
            None => acct.traffic.unknown_or(UNKNOWN_RACK),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::{
        BrokerId, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::accounting::traffic::Flow;
    use crate::accounting::usage::By;
    use crate::config::BrokerConfig;
    use fjord_protocol::clock::now_ms;

    fn broker(extra: &[(&str, &str)]) -> (tempfile::TempDir, std::sync::Arc<Broker>) {
        let dir = tempfile::tempdir().unwrap();
        let mut props = BTreeMap::new();
        props.insert("log.dirs".to_string(), dir.path().display().to_string());
        props.insert("broker.rack".to_string(), "a".to_string());
        for (k, v) in extra {
            props.insert(k.to_string(), v.to_string());
        }
        let b = Broker::open(BrokerConfig::from_props(props).unwrap()).unwrap();
        (dir, b)
    }

    fn request(api: ApiKey, version: i16, client_id: &str, body: RequestKind) -> Request {
        Request {
            api_key: api,
            header: RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_client_id(Some(StrBytes::from_string(client_id.to_string()))),
            body,
        }
    }

    fn flow(b: &Broker, rack: &str, kind: Kind) -> (u64, u64) {
        b.accounting
            .traffic
            .flows()
            .into_iter()
            .find(|f: &Flow| f.client_rack == rack && f.kind == kind)
            .map_or((0, 0), |f| (f.bytes_in, f.bytes_out))
    }

    #[test]
    fn requests_are_charged_by_rack_and_kind() {
        let (_dir, b) = broker(&[("client.rack.cidrs", "lo=127.0.0.0/8")]);
        let peer: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let mut c = ConnAccounting::new(&b.accounting, peer).unwrap();
        // Before any tag: the CIDR rack.
        let md = request(
            ApiKey::Metadata,
            12,
            "app",
            RequestKind::Metadata(MetadataRequest::default()),
        );
        c.request(&b, &md, 40).response(400);
        assert_eq!(flow(&b, "lo", Kind::Other), (40, 400));
        // The client.id tag overrides the CIDR.
        let produce = request(
            ApiKey::Produce,
            9,
            "app,fjord_az=b",
            RequestKind::Produce(ProduceRequest::default()),
        );
        c.request(&b, &produce, 1000).response(60);
        assert_eq!(flow(&b, "b", Kind::Produce), (1000, 60));
        // A Fetch rack_id overrides the tag, and stays for the connection's later requests.
        let fetch = request(
            ApiKey::Fetch,
            12,
            "app,fjord_az=b",
            RequestKind::Fetch(
                FetchRequest::default().with_rack_id(StrBytes::from_static_str("c")),
            ),
        );
        c.request(&b, &fetch, 100).response(5000);
        assert_eq!(flow(&b, "c", Kind::Consume), (100, 5000));
        c.request(&b, &produce, 10).response(1);
        assert_eq!(flow(&b, "c", Kind::Produce), (10, 1));
        // Usage per client id: produce bytes in, consume bytes out.
        let w = b.accounting.usage.query(By::Client, 60_000, now_ms());
        assert_eq!(w.rows["app,fjord_az=b"].bytes_in, 1010);
        assert_eq!(w.rows["app,fjord_az=b"].bytes_out, 5000);
        assert!(
            !w.rows.contains_key("app"),
            "no produce or consume bytes: {w:?}"
        );
    }

    #[test]
    fn follower_fetches_are_replication_in_the_followers_rack() {
        let (_dir, b) = broker(&[]);
        let peer: SocketAddr = "10.9.9.9:40000".parse().unwrap();
        let mut c = ConnAccounting::new(&b.accounting, peer).unwrap();
        // Broker 1 (this one, rack a) is in the image; an unknown follower is `unknown`.
        for (version, fetch) in [
            (12, FetchRequest::default().with_replica_id(BrokerId(1))),
            (
                15,
                FetchRequest::default().with_replica_state(
                    kafka_protocol::messages::fetch_request::ReplicaState::default()
                        .with_replica_id(BrokerId(1)),
                ),
            ),
        ] {
            let r = request(ApiKey::Fetch, version, "f", RequestKind::Fetch(fetch));
            c.request(&b, &r, 50).response(70);
        }
        assert_eq!(flow(&b, "a", Kind::Replication), (100, 140));
        let r = request(
            ApiKey::Fetch,
            12,
            "f",
            RequestKind::Fetch(FetchRequest::default().with_replica_id(BrokerId(7))),
        );
        c.request(&b, &r, 50).response(70);
        assert_eq!(flow(&b, UNKNOWN_RACK, Kind::Replication), (50, 70));
        // Consumer bytes of a replica fetch are not a client's usage.
        let w = b.accounting.usage.query(By::Client, 60_000, now_ms());
        assert_eq!(w.rows.get("f").map_or(0, |r| r.bytes_out), 0);
    }

    #[test]
    fn off_means_no_connection_state() {
        let (_dir, b) = broker(&[("traffic.accounting.enable", "false")]);
        assert!(ConnAccounting::new(&b.accounting, "127.0.0.1:1".parse().unwrap()).is_none());
        b.accounting.topic_in("t", 5);
        let w = b.accounting.usage.query(By::Topic, 60_000, now_ms());
        assert!(w.rows.is_empty());
    }
}
