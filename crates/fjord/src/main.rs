//! The `fjord` binary: `fjord server` runs a broker; the other commands are a small Kafka CLI
//! on top of `fjord-client`. This crate only parses arguments and prints; the logic lives in
//! the library crates.

mod args;
mod cluster;
mod consume;
mod format;
mod group;
mod perf;
mod perf_group;
mod produce;
mod server;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord: a Kafka-compatible streaming platform"
)]
struct Cli {
    /// Broker to bootstrap from (client commands).
    #[arg(
        long,
        global = true,
        env = "FJORD_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    bootstrap_server: String,

    /// Per-request timeout in milliseconds (client commands).
    #[arg(long, global = true, default_value_t = 30_000, value_name = "MS")]
    request_timeout_ms: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Server(server::ServerArgs),
    /// Create, list, describe, delete topics and alter their configs.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce lines from stdin as records.
    Produce(produce::ProduceArgs),
    /// Print records from a topic.
    Consume(consume::ConsumeArgs),
    /// Cluster information.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Consumer groups: list, describe (members, offsets, lag), delete, reset offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Load generators (like kafka-producer-perf-test / kafka-consumer-perf-test).
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

/// An error that exits with a specific status (e.g. 2 for a bad server configuration).
#[derive(Debug)]
pub struct ExitStatus {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitStatus {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Don't wait for detached tasks (e.g. a blocked stdin reader) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<ExitStatus>().map(|s| s.code).unwrap_or(1);
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = args::Connect {
        bootstrap: cli.bootstrap_server,
        request_timeout: std::time::Duration::from_millis(cli.request_timeout_ms),
    };
    match cli.command {
        Command::Server(a) => server::run(a).await,
        Command::Topic(c) => topic::run(&connect, c).await,
        Command::Produce(a) => produce::run(&connect, a).await,
        Command::Consume(a) => consume::run(&connect, a).await,
        Command::Cluster(c) => cluster::run(&connect, c).await,
        Command::Perf(c) => perf::run(&connect, c).await,
        Command::Group(c) => group::run(&connect, c).await,
    }
}
