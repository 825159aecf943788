//! `fjord cluster ...`

use clap::Subcommand;

use crate::args::Connect;
use crate::output::{self, alert, Output, Table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers (DescribeCluster, Metadata), with each broker's
    /// cordon / maintenance state when an admin endpoint is given.
    Info {
        /// The admin HTTP address of any node (`admin.listener`), for the brokers' cordon,
        /// maintenance and drain state (Kafka's protocol does not carry it).
        #[arg(long, env = "FJORD_ADMIN")]
        admin: Option<String>,
    },
    /// Nodes, roles, racks, broker epochs, fencing, the active controller and each node's
    /// metadata lag, as the active controller sees them (from any node's admin port).
    Status {
        /// The admin HTTP address of any node (`admin.listener`).
        #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
        admin: String,
        /// Same as `--output json` (kept for scripts written before it).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Bytes between clients and brokers by rack since the brokers started: a matrix of client
    /// rack by broker rack, each kind's cross-rack share (produce, consume, replication,
    /// other) and the estimated cost of the cross-rack bytes.
    Traffic {
        /// The admin HTTP address of any broker (`admin.listener`), which answers for the whole
        /// cluster; or several, comma-separated, each answering for itself.
        #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
        admin: String,
        /// Price of one GB (2^30 bytes) crossing racks, for the cost estimate (AWS charges
        /// $0.01/GB in each direction between availability zones).
        #[arg(long, default_value_t = 0.01, value_name = "USD", value_parser = price)]
        price_per_gb: f64,
    },
    /// Plan (and with --execute carry out) moves that even out replicas, disk bytes and
    /// preferred leaders per broker while keeping every partition's rack spread: prints the
    /// moves, the bytes to move and the imbalance before → after. With --status: what the
    /// continuous balancer (`balancer.mode=continuous`) is doing.
    Rebalance {
        /// Print the plan only (the default).
        #[arg(long, conflicts_with_all = ["execute", "status"])]
        dry_run: bool,
        /// The continuous balancer's state on the active controller (needs --admin).
        #[arg(long, conflicts_with = "execute")]
        status: bool,
        /// The admin HTTP address of any node: cordoned brokers and brokers in maintenance are
        /// then left out of the plan (they receive nothing); needed by --status.
        #[arg(long, env = "FJORD_ADMIN")]
        admin: Option<String>,
        /// Carry the plan out: KIP-455 reassignments, then preferred-leader elections.
        #[arg(long)]
        execute: bool,
        /// At most this many partitions get new replicas in this plan.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        max_moves: u64,
        /// At most this many reassignments in progress at a time (with --execute).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), requires = "execute")]
        max_concurrent: u64,
        /// Bound replication for the moves to this many bytes/s per broker (Kafka's
        /// leader/follower.replication.throttled.rate), removed when the moves are done.
        #[arg(long, value_name = "BYTES_PER_S", value_parser = clap::value_parser!(u64).range(1..), requires = "execute")]
        throttle: Option<u64>,
        /// Give up waiting after this many seconds (moves in progress carry on).
        #[arg(
            long,
            default_value_t = 3600,
            value_name = "SECS",
            requires = "execute"
        )]
        timeout: u64,
    },
}

pub async fn run(connect: &Connect, output: Output, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { admin, json } => {
            let output = if json { Output::Json } else { output };
            status(&admin, output).await
        }
        ClusterCommand::Info { admin } => info(connect, admin.as_deref(), output).await,
        ClusterCommand::Traffic {
            admin,
            price_per_gb,
        } => crate::traffic::cluster_traffic(&admin, price_per_gb, output).await,
        ClusterCommand::Rebalance {
            status: true,
            admin,
            ..
        } => crate::rebalance::status(admin.as_deref().unwrap_or(DEFAULT_ADMIN), output).await,
        ClusterCommand::Rebalance {
            dry_run: _,
            status: false,
            admin,
            execute,
            max_moves,
            max_concurrent,
            throttle,
            timeout,
        } => {
            let args = crate::rebalance::RebalanceArgs {
                execute,
                max_moves: max_moves as usize,
                max_concurrent: max_concurrent as usize,
                throttle,
                timeout: std::time::Duration::from_secs(timeout),
                admin,
            };
            crate::rebalance::run(connect, output, args).await
        }
    }
}

/// The admin address commands use when none is given.
const DEFAULT_ADMIN: &str = "127.0.0.1:9644";

/// Each broker's cordon / maintenance state from `GET /v1/cluster` (the active controller's
/// metadata image): node id → `cordoned`, `maintenance`, `draining`, `drained`, or absent
/// when the broker takes replicas.
pub(crate) async fn broker_states(
    admin: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, String>> {
    let v = admin_json(admin, "/v1/cluster", "cluster status").await?;
    let mut out = std::collections::BTreeMap::new();
    for b in v["status"]["brokers"].as_array().into_iter().flatten() {
        if let (Some(id), Some(state)) = (b["node_id"].as_i64(), broker_state(b)) {
            out.insert(id as i32, state.to_string());
        }
    }
    Ok(out)
}

/// A broker's state in a `/v1/cluster` answer, if it does not take replicas.
fn broker_state(b: &serde_json::Value) -> Option<&'static str> {
    let m = &b["maintenance"];
    if m.is_object() {
        Some(if m["drain_completed"] == true {
            "drained"
        } else if m["drain_replicas"] == true {
            "draining"
        } else {
            "maintenance"
        })
    } else if b["cordoned"] == true {
        Some("cordoned")
    } else {
        None
    }
}

/// `--price-per-gb`: a number of dollars, not negative.
fn price(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("expected a price such as 0.01, got {s:?}")),
    }
}

/// GET `path` from the admin endpoint at `addr` (HTTP/1.1, one request per connection).
pub async fn admin_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("admin endpoint {addr}: connection timed out"))?
    .map_err(|e| anyhow::anyhow!("admin endpoint {addr}: {e}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        stream.read_to_end(&mut raw),
    )
    .await
    .map_err(|_| anyhow::anyhow!("admin endpoint {addr}: no answer in 15 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("admin endpoint {addr}: malformed HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("admin endpoint {addr}: malformed status line"))?;
    Ok((code, body.to_string()))
}

/// GET `path` from the admin endpoint at `admin` as JSON; unless it answers 200, an error
/// saying `what` is unavailable and why.
pub(crate) async fn admin_json(
    admin: &str,
    path: &str,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let (code, body) = admin_get(admin, path).await?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("admin endpoint {admin}: not JSON ({e})"))?;
    if code != 200 {
        anyhow::bail!(
            "{what} unavailable: {}",
            v["error"].as_str().unwrap_or(&body)
        );
    }
    Ok(v)
}

/// `fjord cluster status`: what `GET /v1/cluster` on `admin` answers, as a table or JSON.
pub(crate) async fn status(admin: &str, output: Output) -> anyhow::Result<()> {
    let v = admin_json(admin, "/v1/cluster", "cluster status").await?;
    if output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    let s = &v["status"];
    let active = s["active_controller"].as_i64();
    let offset = s["metadata_offset"].as_i64().unwrap_or(0);
    outln!(
        "cluster id:        {}",
        v["cluster_id"].as_str().unwrap_or("-")
    );
    outln!(
        "active controller: {}",
        active.map_or("none".to_string(), |a| a.to_string())
    );
    outln!("metadata offset:   {offset}");
    let health = &v["partitions"];
    if let Some(total) = health["partitions"].as_u64() {
        let count = |k: &str| {
            let n = health[k].as_u64().unwrap_or(0);
            if n > 0 {
                alert(&n.to_string())
            } else {
                n.to_string()
            }
        };
        outln!(
            "partitions:        {total} (under-replicated: {}, offline: {})",
            count("under_replicated"),
            count("offline")
        );
    }
    let voters: Vec<i64> = s["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["node_id"].as_i64()).collect())
        .unwrap_or_default();
    let empty = Vec::new();
    let brokers = s["brokers"].as_array().unwrap_or(&empty);
    let mut ids: Vec<i64> = voters.clone();
    ids.extend(brokers.iter().filter_map(|b| b["node_id"].as_i64()));
    ids.sort_unstable();
    ids.dedup();
    let mut table = Table::new(&[
        "NODE",
        "ROLES",
        "RACK",
        ">EPOCH",
        "ADDRESS",
        "FENCED",
        "CORDONED",
        ">LEADERS",
        ">REPLICAS",
        ">OUT OF ISR",
        ">METADATA LAG",
    ]);
    for id in ids {
        let b = brokers.iter().find(|b| b["node_id"].as_i64() == Some(id));
        let mut roles = Vec::new();
        if b.is_some() {
            roles.push("broker");
        }
        if voters.contains(&id) {
            roles.push(if active == Some(id) {
                "controller(active)"
            } else {
                "controller"
            });
        }
        let field = |k: &str| b.map(|b| b[k].clone()).unwrap_or(serde_json::Value::Null);
        // A broker's Kafka endpoint; a controller-only node's controller address.
        let addr = field("endpoints")
            .as_array()
            .and_then(|e| e.first().cloned())
            .map(|e| format!("{}:{}", e["host"].as_str().unwrap_or("?"), e["port"]))
            .or_else(|| {
                s["voters"].as_array().and_then(|vs| {
                    vs.iter()
                        .find(|x| x["node_id"].as_i64() == Some(id))
                        .and_then(|x| x["addr"].as_str())
                        .filter(|a| !a.starts_with('('))
                        .map(|a| format!("{a} (controller)"))
                })
            })
            .unwrap_or_else(|| "-".into());
        let lag = match field("metadata_offset").as_i64() {
            Some(o) => (offset - 1 - o).max(0).to_string(),
            None => "-".into(),
        };
        let yes_no = |v: serde_json::Value, bad: bool| match v.as_bool() {
            Some(true) if bad => alert("yes"),
            Some(true) => "yes".to_string(),
            Some(false) => "no".to_string(),
            None => "-".to_string(),
        };
        let load = &health["per_broker"][id.to_string()];
        let n = |k: &str| {
            if b.is_none() {
                "-".to_string()
            } else {
                load[k].as_u64().unwrap_or(0).to_string()
            }
        };
        let out_of_sync = match load["out_of_sync"].as_u64() {
            Some(n) if n > 0 => alert(&n.to_string()),
            _ => n("out_of_sync"),
        };
        table.row(vec![
            id.to_string(),
            roles.join(","),
            field("rack").as_str().unwrap_or("-").to_string(),
            field("broker_epoch")
                .as_i64()
                .map_or("-".into(), |e| e.to_string()),
            addr,
            yes_no(field("fenced"), true),
            match b.and_then(broker_state) {
                Some("cordoned") => "yes".into(),
                Some(state) => format!("yes ({state})"),
                None => yes_no(field("cordoned"), false),
            },
            n("leaders"),
            n("replicas"),
            out_of_sync,
            lag,
        ]);
    }
    table.print();
    Ok(())
}

async fn info(connect: &Connect, admin: Option<&str>, output: Output) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let states = match admin {
        Some(a) => Some(broker_states(a).await?),
        None => None,
    };
    let state = |id: i32| -> Option<String> {
        let s = states.as_ref()?;
        Some(s.get(&id).cloned().unwrap_or_else(|| "active".into()))
    };
    let md = client.metadata(Some(&[])).await?;
    // DescribeCluster adds fencing state; fall back to Metadata if unsupported.
    let (cluster_id, controller, mut brokers) = match client.describe_cluster().await {
        Ok(d) => (Some(d.cluster_id), d.controller_id, d.brokers),
        Err(fjord_client::Error::UnsupportedApi { .. }) => {
            (md.cluster_id.clone(), md.controller_id, md.brokers.clone())
        }
        Err(e) => return Err(e.into()),
    };
    brokers.sort_by_key(|b| b.node_id);
    if output == Output::Json {
        let list: Vec<_> = brokers
            .iter()
            .map(|b| {
                serde_json::json!({
                    "node_id": b.node_id,
                    "host": b.host,
                    "port": b.port,
                    "rack": b.rack,
                    "fenced": b.is_fenced,
                    "state": state(b.node_id),
                })
            })
            .collect();
        output::json(&serde_json::json!({
            "cluster_id": cluster_id,
            "controller_id": controller,
            "brokers": list,
        }));
        return Ok(());
    }
    outln!("cluster id: {}", cluster_id.as_deref().unwrap_or("-"));
    outln!("controller: {controller}");
    outln!("brokers:");
    for b in brokers {
        let mut line = format!(
            "  {}  {}  rack={}",
            b.node_id,
            b.addr(),
            b.rack.as_deref().unwrap_or("-")
        );
        if b.is_fenced {
            line.push_str("  (fenced)");
        }
        match state(b.node_id).as_deref() {
            None | Some("active") => {}
            Some(s) => line.push_str(&format!("  ({s})")),
        }
        outln!("{line}");
    }
    Ok(())
}
