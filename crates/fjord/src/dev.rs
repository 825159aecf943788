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
//! - [`start`]: spawning the nodes, waiting for their ready lines, the foreground supervisor.
//! - [`state`]: `cluster.json`, and finding and signalling the node processes safely.
//! - [`control`]: `stop` and `status`.

mod control;
mod layout;
mod start;
mod state;

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
    /// Stop the cluster running from DIR: SIGTERM to every node (a controlled shutdown),
    /// SIGKILL to those still running after 30 s.
    Stop(DirArg),
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
struct StatusArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print one JSON document: the nodes and the `/v1/cluster` answer.
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
}

const DEFAULT_DIR: &str = "./fjord-dev-cluster";

pub async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Cluster(c) => match c.action {
            None => start::run(c.start).await,
            Some(ClusterAction::Stop(d)) => control::stop(&d.dir).await,
            Some(ClusterAction::Status(s)) => control::status(&s.dir.dir, s.json).await,
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
        ]);
        let DevCommand::Cluster(c) = t.c;
        assert!(c.action.is_none());
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
            matches!(c.action, Some(ClusterAction::Stop(d)) if d.dir.as_path() == Path::new("d"))
        );

        let t = T::parse_from(["x", "cluster", "status", "--json"]);
        let DevCommand::Cluster(c) = t.c;
        assert!(
            matches!(c.action, Some(ClusterAction::Status(s)) if s.json && s.dir.dir.as_path() == Path::new(DEFAULT_DIR))
        );

        assert!(T::try_parse_from(["x", "cluster", "--nodes", "0"]).is_err());
        assert!(T::try_parse_from(["x", "cluster", "--nodes", "255"]).is_err());
    }
}
