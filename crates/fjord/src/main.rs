//! The `fjord` binary: `fjord server` runs a broker; the other commands are a small Kafka CLI
//! on top of `fjord-client`. This crate only parses arguments and prints; the logic lives in
//! the library crates.

#[macro_use]
mod output;

mod acl;
mod args;
mod broker;
mod cluster;
mod consume;
mod dev;
mod docs;
mod format;
mod group;
mod group_lag;
mod perf;
mod perf_group;
mod produce;
mod quota;
mod rebalance;
mod server;
mod topic;
mod topic_gc;
mod topic_skew;
mod traffic;
mod transaction;
mod user;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The end of `fjord --help` and of the man page.
const EXIT_STATUS: &str =
    "Exit status: 0 on success, also when stdout is closed early (`fjord topic list | head -1`); \
1 when the command failed (the broker refused it, could not be reached, or did not answer within \
--request-timeout-ms); 2 for bad arguments or a bad server configuration. Errors are one line \
on stderr, with Kafka's error name and code when the broker sent one.

Environment: FJORD_BOOTSTRAP_SERVER (--bootstrap-server), FJORD_ADMIN (--admin), FJORD_LOG \
(server log filter, e.g. debug), NO_COLOR (no colour even on a terminal).";

#[derive(Debug, Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord: a Kafka-compatible streaming platform",
    after_long_help = EXIT_STATUS
)]
struct Cli {
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT...] (client commands; the first reachable).
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

    /// Kafka client properties for client commands (like kafka-*.sh --command-config):
    /// `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); for SASL
    /// `sasl.mechanism` and `sasl.jaas.config` or `sasl.username` / `sasl.password`; for TLS
    /// `ssl.truststore.location` (PEM CAs, required), `ssl.keystore.location` (PEM key and
    /// certificate, mutual TLS), `ssl.key.password`, `ssl.endpoint.identification.algorithm`.
    #[arg(long, global = true, env = "FJORD_COMMAND_CONFIG", value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,

    /// How listing and describe commands print: aligned columns, or one JSON document.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: output::Output,

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
    /// Cordon brokers, maintenance mode (leaderships away, drains), remove drained brokers.
    Broker(broker::BrokerArgs),
    /// Bytes in, out and stored per topic or client id over a time window (cost attribution).
    Usage(traffic::UsageArgs),
    /// Consumer groups: list, describe (members, offsets, lag), delete, reset offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Transactions: list transactional ids, describe one (like kafka-transactions.sh).
    #[command(subcommand)]
    Transaction(transaction::TransactionCommand),
    /// Client quotas: set or remove, describe (like kafka-configs.sh for users and clients).
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Users: SCRAM credentials (like kafka-configs.sh --entity-type users).
    #[command(subcommand)]
    User(user::UserCommand),
    /// ACLs: add, list, remove (like kafka-acls.sh).
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Load generators (like kafka-producer-perf-test / kafka-consumer-perf-test).
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// Local development: `fjord dev cluster` runs a multi-node cluster on 127.0.0.1..N.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Print a shell completion script, e.g. `fjord completions bash > /etc/bash_completion.d/fjord`.
    Completions(docs::CompletionsArgs),
    /// Print the man page (`fjord man > fjord.1`), or write one per subcommand with --dir.
    Man(docs::ManArgs),
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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
    // --command-config and the TLS stores it names are read here, before the runtime runs,
    // so no blocking file read happens on an async worker.
    let security = match &cli.command_config {
        Some(path) => args::command_config(path),
        None => Ok(args::Security::default()),
    };
    let result = match security {
        Ok(security) => runtime.block_on(run(cli, security)),
        Err(e) => Err(e),
    };
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

/// `--help` and `--version` print as clap prints them; a usage error is one line on stderr
/// (clap's reason, then where to look) with exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Help on a closed stdout (`fjord --help | head -1`) is not an error.
            let failed = e
                .print()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::BrokenPipe);
            let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                u8::from(failed)
            };
            ExitCode::from(code)
        }
        _ => {
            let rendered = e.render().to_string();
            let reason = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            // clap puts a suggestion ("tip: ...") on a later line: keep it on this one.
            let tip = rendered
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("tip:"))
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            eprintln!("error: {reason}{tip} (see `fjord --help`)");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli, security: args::Security) -> anyhow::Result<()> {
    let connect = args::Connect {
        bootstrap: cli.bootstrap_server,
        request_timeout: std::time::Duration::from_millis(cli.request_timeout_ms),
        security,
    };
    match cli.command {
        Command::Server(a) => server::run(a).await,
        Command::Topic(c) => topic::run(&connect, cli.output, c).await,
        Command::Produce(a) => produce::run(&connect, a).await,
        Command::Consume(a) => consume::run(&connect, a).await,
        Command::Cluster(c) => cluster::run(&connect, cli.output, c).await,
        Command::Broker(a) => broker::run(cli.output, a).await,
        Command::Perf(c) => perf::run(&connect, c).await,
        Command::Acl(c) => acl::run(&connect, cli.output, c).await,
        Command::Group(c) => group::run(&connect, cli.output, c).await,
        Command::Transaction(c) => transaction::run(&connect, cli.output, c).await,
        Command::Quota(c) => quota::run(&connect, cli.output, c).await,
        Command::User(c) => user::run(&connect, cli.output, c).await,
        Command::Usage(a) => traffic::usage(a, cli.output).await,
        Command::Dev(c) => dev::run(c, cli.output).await,
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}
