//! Traffic accounting by rack (cross-AZ traffic) and usage per topic and client (cost
//! attribution). See docs/cross-az.md, "Traffic accounting" and "Usage per topic and client".
//!
//! Layout:
//! - [`config`]: `traffic.accounting.enable`, `client.rack.cidrs` and the `fjord_az=<rack>` tag
//!   in `client.id`; pure parsing.
//! - [`traffic`]: wire bytes by (client rack, kind, direction) as Prometheus counters, the rack
//!   label set capped.
//! - [`conn`]: a connection's rack and client id, and what each request is charged to; the
//!   listener (`server.rs`) calls it with each request frame's and response frame's size.
//! - [`usage`]: bytes in and out per topic (record bytes, from the produce and fetch handlers)
//!   and per client id (wire bytes), in minute and hour buckets.
//! - [`http`]: `GET /v1/traffic` and `GET /v1/usage` on the admin port; by default the
//!   answering broker asks every other broker's admin endpoint (registered with the
//!   controller beside the Kafka listener) and merges.

pub mod config;
pub mod conn;
pub mod http;
pub mod traffic;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::clock::now_ms;
use prometheus::{IntGauge, Registry};
use tokio::sync::watch;

pub use config::AccountingConfig;
pub use conn::{Charge, ConnAccounting};
pub use traffic::{Kind, Traffic};
pub use usage::Usage;

use crate::broker::Broker;

/// How often usage moves into its minute buckets.
pub const ROLL_INTERVAL: Duration = Duration::from_secs(60);

/// The broker's traffic and usage accounting.
pub struct Accounting {
    pub config: AccountingConfig,
    pub traffic: Traffic,
    pub usage: Usage,
}

impl Accounting {
    /// Counters registered in `registry` (also when off, so dashboards see zeros and
    /// `fjord_traffic_accounting_enabled 0`).
    pub fn new(config: &AccountingConfig, broker_rack: Option<&str>, registry: &Registry) -> Self {
        let enabled = IntGauge::new(
            "traffic_accounting_enabled",
            "1 while traffic and usage accounting is on (traffic.accounting.enable)",
        )
        .expect("metric");
        enabled.set(config.enabled as i64);
        if !config.enabled {
            tracing::info!("traffic and usage accounting is off (traffic.accounting.enable=false)");
        }
        registry.register(Box::new(enabled)).expect("unique metric");
        Accounting {
            config: config.clone(),
            traffic: Traffic::new(broker_rack, registry),
            usage: Usage::new(now_ms(), registry),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Record bytes a producer appended to `topic` on this broker.
    pub fn topic_in(&self, topic: &str, bytes: u64) {
        if self.config.enabled {
            self.usage.topic_in(topic, bytes);
        }
    }

    /// Record bytes this broker served to consumers of `topic`.
    pub fn topic_out(&self, topic: &str, bytes: u64) {
        if self.config.enabled {
            self.usage.topic_out(topic, bytes);
        }
    }
}

/// Roll usage into its buckets every [`ROLL_INTERVAL`] until shutdown.
pub async fn roll_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    if !broker.accounting.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(ROLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        // Up to a few thousand cells under the table's lock: off the async workers.
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.accounting.usage.roll(now_ms())).await;
    }
}
