//! The Kafka-facing broker: listeners, connections, request dispatch, one thin handler per API,
//! and the admin HTTP endpoint.
//!
//! Entry point: [`start`] binds the listeners from a [`config::BrokerConfig`] and returns a
//! [`RunningBroker`] handle.

pub mod config;

use std::net::SocketAddr;

pub use config::BrokerConfig;

/// A started broker. Dropping it does not stop the broker; call [`RunningBroker::shutdown`].
pub struct RunningBroker {
    kafka_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// The bound Kafka listener address (the real port when configured with port 0).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }
    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// Stop accepting, finish in-flight requests, flush and close every log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

/// Start a broker with `config`: open the logs, bind the listeners and serve.
pub async fn start(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let _ = config;
    anyhow::bail!("broker not implemented yet")
}
