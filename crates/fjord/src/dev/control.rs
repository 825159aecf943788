//! `fjord dev cluster stop` and `fjord dev cluster status`: both start from `DIR/cluster.json`.

use std::path::Path;

use super::state::{self, State, Stopped, SHUTDOWN_TIMEOUT};

async fn read_state(dir: &Path) -> anyhow::Result<State> {
    state::read(dir).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no cluster is running from {}: {} does not exist",
            dir.display(),
            state::path(dir).display()
        )
    })
}

/// Stop every node, or only `only` (node ids; the cluster's state file stays for the others).
pub async fn stop(dir: &Path, only: &[u32]) -> anyhow::Result<()> {
    let st = read_state(dir).await?;
    if let Some(id) = only
        .iter()
        .find(|id| !st.nodes.iter().any(|n| n.node_id == **id))
    {
        anyhow::bail!("the cluster in {} has no node {id}", dir.display());
    }
    let nodes: Vec<_> = st
        .nodes
        .iter()
        .filter(|n| only.is_empty() || only.contains(&n.node_id))
        .cloned()
        .collect();
    let results = state::stop_nodes(&nodes, SHUTDOWN_TIMEOUT).await;
    let mut failed = Vec::new();
    for (id, pid, r) in results {
        match r {
            Ok(Stopped::Terminated) => outln!("node {id} (pid {pid}) stopped"),
            Ok(Stopped::Killed) => outln!(
                "node {id} (pid {pid}) killed: still running {} s after SIGTERM",
                SHUTDOWN_TIMEOUT.as_secs()
            ),
            Ok(Stopped::NotRunning) => outln!("node {id} (pid {pid}) was not running"),
            Err(e) => {
                outln!("node {id} (pid {pid}) could not be stopped: {e}");
                failed.push(id.to_string());
            }
        }
    }
    if !only.is_empty() && failed.is_empty() {
        return Ok(()); // the others still run from the state file
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "node {} could not be stopped; {} is kept",
            failed.join(", "),
            state::path(dir).display()
        );
    }
    state::remove(dir).await
}

pub async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let st = read_state(dir).await?;
    let mut alive = Vec::new();
    for n in &st.nodes {
        alive.push(state::is_node_process(n.pid, &n.config).await);
    }
    let live_admins: Vec<&str> = st
        .nodes
        .iter()
        .zip(&alive)
        .filter(|(_, a)| **a)
        .map(|(n, _)| n.admin.as_str())
        .collect();
    if json {
        let (cluster, error) = match cluster_json(&live_admins).await {
            Ok(v) => (v, None),
            Err(e) => (serde_json::Value::Null, Some(format!("{e:#}"))),
        };
        let nodes: Vec<serde_json::Value> = st
            .nodes
            .iter()
            .zip(&alive)
            .map(|(n, a)| {
                serde_json::json!({
                    "node_id": n.node_id,
                    "pid": n.pid,
                    "running": a,
                    "rack": n.rack,
                    "kafka": n.kafka,
                    "controller": n.controller,
                    "admin": n.admin,
                    "log": n.log,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "dir": st.dir,
            "bootstrap": st.bootstrap,
            "nodes": nodes,
            "cluster": cluster,
            "error": error,
        });
        crate::output::json(&doc);
        return match error {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => Ok(()),
        };
    }
    let mut table =
        crate::output::Table::new(&["NODE", ">PID", "PROCESS", "RACK", "KAFKA", "ADMIN"]);
    for (n, a) in st.nodes.iter().zip(&alive) {
        table.row(vec![
            n.node_id.to_string(),
            n.pid.to_string(),
            if *a { "running" } else { "not running" }.to_string(),
            n.rack.clone().unwrap_or_else(|| "-".into()),
            n.kafka.clone().unwrap_or_else(|| "-".into()),
            n.admin.clone(),
        ]);
    }
    table.print();
    if live_admins.is_empty() {
        anyhow::bail!(
            "no node of the cluster in {} is running; `fjord dev cluster --dir {}` starts it again",
            dir.display(),
            dir.display()
        );
    }
    outln!();
    // The first node whose admin endpoint answers prints what `fjord cluster status` prints.
    let mut last = None;
    for admin in &live_admins {
        match crate::cluster::status(admin, crate::output::Output::Table).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one live node was asked"))
}

/// `/v1/cluster` from the first live node that answers it.
async fn cluster_json(admins: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut last = anyhow::anyhow!("no node of the cluster is running");
    for admin in admins {
        match crate::cluster::admin_get(admin, "/v1/cluster").await {
            Ok((200, body)) => {
                return serde_json::from_str(&body)
                    .map_err(|e| anyhow::anyhow!("admin endpoint {admin}: not JSON ({e})"))
            }
            Ok((code, body)) => {
                last = anyhow::anyhow!("admin endpoint {admin}: HTTP {code}: {}", body.trim())
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
