//! `fjord cluster ...`

use clap::Subcommand;

use crate::args::Connect;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers (DescribeCluster, Metadata).
    Info,
    /// Nodes, roles, racks, broker epochs, fencing, the active controller and each node's
    /// metadata lag, as the active controller sees them (from any node's admin port).
    Status {
        /// The admin HTTP address of any node (`admin.listener`).
        #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
        admin: String,
        /// Print the JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(connect: &Connect, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { admin, json } => status(&admin, json).await,
        ClusterCommand::Info => info(connect).await,
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

async fn status(admin: &str, json: bool) -> anyhow::Result<()> {
    let (code, body) = admin_get(admin, "/v1/cluster").await?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("admin endpoint {admin}: not JSON ({e})"))?;
    if code != 200 {
        anyhow::bail!(
            "cluster status unavailable: {}",
            v["error"].as_str().unwrap_or(&body)
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = &v["status"];
    let active = s["active_controller"].as_i64();
    let offset = s["metadata_offset"].as_i64().unwrap_or(0);
    println!(
        "cluster id:        {}",
        v["cluster_id"].as_str().unwrap_or("-")
    );
    println!(
        "active controller: {}",
        active.map_or("none".to_string(), |a| a.to_string())
    );
    println!("metadata offset:   {offset}");
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
    println!(
        "{:<6} {:<26} {:<8} {:<8} {:<22} {:<8} {:<9} METADATA LAG",
        "NODE", "ROLES", "RACK", "EPOCH", "ADDRESS", "FENCED", "CORDONED"
    );
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
        let addr = field("endpoints")
            .as_array()
            .and_then(|e| e.first().cloned())
            .map(|e| format!("{}:{}", e["host"].as_str().unwrap_or("?"), e["port"]))
            .unwrap_or_else(|| "-".into());
        let lag = match field("metadata_offset").as_i64() {
            Some(o) => (offset - 1 - o).max(0).to_string(),
            None => "-".into(),
        };
        let yes_no = |v: serde_json::Value| match v.as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!(
            "{:<6} {:<26} {:<8} {:<8} {:<22} {:<8} {:<9} {}",
            id,
            roles.join(","),
            field("rack").as_str().unwrap_or("-"),
            field("broker_epoch")
                .as_i64()
                .map_or("-".into(), |e| e.to_string()),
            addr,
            yes_no(field("fenced")),
            yes_no(field("cordoned")),
            lag
        );
    }
    Ok(())
}

async fn info(connect: &Connect) -> anyhow::Result<()> {
    let client = connect.client().await?;
    {
        {
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
            println!("cluster id: {}", cluster_id.as_deref().unwrap_or("-"));
            println!("controller: {controller}");
            println!("brokers:");
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
                println!("{line}");
            }
        }
    }
    Ok(())
}
