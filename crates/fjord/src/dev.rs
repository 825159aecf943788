//! `fjord dev cluster`: a local multi-node cluster in one command (like `rpk container start`).
//!
//! Node N is a `fjord server --config DIR/nodeN.toml` child process on 127.0.0.N (Linux routes
//! all of 127.0.0.0/8 to loopback), broker and controller, a voter of the quorum, in a rack
//! from `--racks`. Its data is in `DIR/nodeN/data`, its stdout in `DIR/nodeN.out` (where the
//! ready line is looked for) and its log in `DIR/nodeN.log`. While the cluster runs,
//! `DIR/cluster.json` names each node's pid and addresses, for `stop` and `status`.
//!
//! - [`layout`]: which nodes, on which addresses: new node configs, or the ones an earlier run
//!   left in DIR (a restart reuses them, so the cluster id and the data stay valid).
//! - [`start`]: spawning the nodes and waiting for their ready lines.
//! - [`supervise`]: the foreground: watching the nodes, stopping them on a signal.
//! - [`state`]: `cluster.json`, and finding and signalling the node processes safely.
//! - [`control`]: `stop` and `status`.

/// A progress or status line on stderr. Unlike `eprintln!` it never panics: a closed stderr
/// (`2>&1 | head -1`) must not kill the process that watches the nodes.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod control;
mod layout;
mod start;
mod state;
mod supervise;

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `fjord dev ...`
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Run a local cluster of N nodes (each broker and controller) on 127.0.0.1..N, in the
    /// foreground (Ctrl-C stops it) or detached (`stop` stops it).
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: Option<ClusterAction>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// The same as `fjord dev cluster` with these flags (for those who type `start`).
    Start(StartArgs),
    /// Stop the cluster running from DIR: SIGTERM to every node (a controlled shutdown),
    /// SIGKILL to those still running after 30 s; with --node, only those nodes.
    Stop(StopArgs),
    /// Each node's pid and whether it runs, then `fjord cluster status` from a live node.
    Status(StatusArgs),
}

/// The cluster's directory.
#[derive(Debug, Clone, Args)]
struct DirArg {
    /// Directory of the cluster: node configs, data, logs and `cluster.json`.
    #[arg(long, default_value = DEFAULT_DIR, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct StopArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Stop only node N (repeatable), e.g. a broker drained for removal; the others keep
    /// running.
    #[arg(long = "node", value_name = "N")]
    nodes: Vec<u32>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print one JSON document: the nodes and the `/v1/cluster` answer (as `--output json`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StartArgs {
    /// Number of nodes, 1 to 254 [default: 3; a restart: as many as DIR has].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=254))]
    nodes: Option<u16>,
    /// Racks, assigned to the nodes round-robin [default: a,b,c,... one per node].
    #[arg(long, value_name = "RACK,...", value_delimiter = ',')]
    racks: Option<Vec<String>>,
    #[command(flatten)]
    dir: DirArg,
    /// Kafka port on each node's address; 0 picks a free port per node [default: 9092].
    #[arg(long, value_name = "PORT")]
    kafka_port: Option<u16>,
    /// Controller (Raft) port on each node's address; 0 picks a free port [default: 9093].
    #[arg(long, value_name = "PORT")]
    controller_port: Option<u16>,
    /// Admin HTTP port on each node's address; 0 picks a free port [default: 9644].
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,
    /// How long the nodes may take to print their ready lines.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    timeout_ms: u64,
    /// Leave the nodes running and exit once the cluster is ready (stop it with
    /// `fjord dev cluster stop`).
    #[arg(long)]
    detach: bool,
    /// A broker config for every node, as in `fjord server --set` (repeatable), e.g.
    /// `--set replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector`.
    /// Written into the node configs of a new cluster.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

const DEFAULT_DIR: &str = "./fjord-dev-cluster";

/// `output` is the global `--output`: `json` does what `status --json` does.
pub async fn run(command: DevCommand, output: crate::output::Output) -> anyhow::Result<()> {
    let json = output == crate::output::Output::Json;
    match command {
        DevCommand::Cluster(c) => match c.action {
            None => start::run(c.start).await,
            Some(ClusterAction::Start(a)) => start::run(a).await,
            Some(ClusterAction::Stop(s)) => control::stop(&s.dir.dir, &s.nodes).await,
            Some(ClusterAction::Status(s)) => control::status(&s.dir.dir, s.json || json).await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: DevCommand,
    }

    #[test]
    fn start_flags_and_subcommands_parse() {
        let t = T::parse_from([
            "x",
            "cluster",
            "--nodes",
            "5",
            "--racks",
            "east,west",
            "--dir",
            "/tmp/c",
            "--detach",
            "--set",
            "log.retention.ms=1000",
        ]);
        let DevCommand::Cluster(c) = t.c;
        assert!(c.action.is_none());
        assert_eq!(c.start.set, ["log.retention.ms=1000"]);
        assert_eq!(c.start.nodes, Some(5));
        assert_eq!(
            c.start.racks,
            Some(vec!["east".to_string(), "west".to_string()])
        );
        assert!(c.start.detach);
        assert_eq!(c.start.dir.dir, PathBuf::from("/tmp/c"));

        let t = T::parse_from(["x", "cluster", "stop", "--dir", "d"]);
        let DevCommand::Cluster(c) = t.c;
        assert!(
            matches!(c.action, Some(ClusterAction::Stop(s)) if s.dir.dir.as_path() == Path::new("d") && s.nodes.is_empty())
        );

        let t = T::parse_from(["x", "cluster", "stop", "--node", "4", "--node", "5"]);
        let DevCommand::Cluster(c) = t.c;
        assert!(matches!(c.action, Some(ClusterAction::Stop(s)) if s.nodes == [4, 5]));

        let t = T::parse_from(["x", "cluster", "status", "--json"]);
        let DevCommand::Cluster(c) = t.c;
        assert!(
            matches!(c.action, Some(ClusterAction::Status(s)) if s.json && s.dir.dir.as_path() == Path::new(DEFAULT_DIR))
        );

        let t = T::parse_from(["x", "cluster", "start", "--nodes", "1", "--detach"]);
        let DevCommand::Cluster(c) = t.c;
        assert!(
            matches!(c.action, Some(ClusterAction::Start(a)) if a.nodes == Some(1) && a.detach)
        );

        assert!(T::try_parse_from(["x", "cluster", "--nodes", "0"]).is_err());
        assert!(T::try_parse_from(["x", "cluster", "--nodes", "255"]).is_err());
    }
}
