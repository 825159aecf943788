//! `fjord server`: flags → config overrides → `fjord_broker::start`, then wait for a signal.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::ExitStatus;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kafka listeners (`listeners`), e.g. PLAINTEXT://0.0.0.0:9092.
    #[arg(long, value_name = "URL")]
    listeners: Option<String>,
    /// Addresses advertised to clients (`advertised.listeners`).
    #[arg(long, value_name = "URL")]
    advertised_listeners: Option<String>,
    /// Admin HTTP listener (`admin.listener`).
    #[arg(long, value_name = "HOST:PORT")]
    admin_listener: Option<String>,
    /// Data directories (`log.dirs`).
    #[arg(long, value_name = "DIR")]
    log_dirs: Option<String>,
    /// This node's id (`node.id`).
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Any other setting, by its Kafka key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::args::key_value)]
    set: Vec<(String, String)>,
}

impl ServerArgs {
    /// The flags as `(key, value)` overrides, named flags first so `--set` can still win.
    fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        push("listeners", self.listeners.clone());
        push("advertised.listeners", self.advertised_listeners.clone());
        push("admin.listener", self.admin_listener.clone());
        push("log.dirs", self.log_dirs.clone());
        push("node.id", self.node_id.map(|n| n.to_string()));
        out.extend(self.set.iter().cloned());
        out
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = fjord_broker::BrokerConfig::load(args.config.as_deref(), &args.overrides())
        .map_err(|message| ExitStatus { code: 2, message })?;
    init_tracing();
    let broker = fjord_broker::start(config)
        .await
        .context("starting the broker")?;
    {
        // Tests parse this line to learn the bound (possibly ephemeral) ports.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fjord ready kafka={} admin={}",
            broker
                .kafka_addr()
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            broker.admin_addr()
        )?;
        out.flush()?;
    }
    // A controller whose Raft core quit on an error (a full disk, a panic in the core) cannot
    // rejoin the quorum in this process: stop with an error so that the supervisor restarts
    // the node, as Kafka halts a node whose metadata log fails.
    let stopped = tokio::select! {
        r = wait_for_signal() => {
            r?;
            None
        }
        why = broker.controller_stopped() => Some(why),
    };
    let Some(why) = stopped else {
        tracing::info!("shutting down");
        broker.shutdown().await;
        return Ok(());
    };
    // At once, without the controlled shutdown: logs are flushed and closed, and the other
    // controllers fence this broker and move its leaderships.
    tracing::error!(reason = %why, "the controller stopped on its own; stopping to be restarted");
    broker.stop().await;
    Err(ExitStatus {
        code: 1,
        message: format!("the metadata Raft core of this node stopped: {why}"),
    }
    .into())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FJORD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServerArgs,
    }

    #[test]
    fn flags_become_kafka_keys() {
        let t = T::parse_from([
            "x",
            "--listeners",
            "PLAINTEXT://127.0.0.1:0",
            "--admin-listener",
            "127.0.0.1:0",
            "--log-dirs",
            "/tmp/d",
            "--node-id",
            "3",
            "--set",
            "broker.rack=az1",
            "--set",
            "num.partitions=3",
        ]);
        assert_eq!(
            t.a.overrides(),
            vec![
                ("listeners".into(), "PLAINTEXT://127.0.0.1:0".into()),
                ("admin.listener".into(), "127.0.0.1:0".into()),
                ("log.dirs".into(), "/tmp/d".into()),
                ("node.id".into(), "3".into()),
                ("broker.rack".into(), "az1".into()),
                ("num.partitions".into(), "3".into()),
            ]
        );
    }
}
