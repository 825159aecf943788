//! `fjord group lag [GROUP] [--watch]`: Burrow-style lag status from the admin endpoint
//! (`GET /v1/groups`, `GET /v1/groups/{group}/lag`), which any broker answers (it forwards a
//! group's question to the group's coordinator).

use anyhow::bail;
use serde_json::Value;

use crate::cluster::admin_get;
use crate::output::{self, Output, Table};

pub async fn run(
    admin: &str,
    group: Option<String>,
    watch: Option<u64>,
    output: Output,
) -> anyhow::Result<()> {
    loop {
        once(admin, group.as_deref(), output).await?;
        let Some(secs) = watch else { return Ok(()) };
        tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await;
        outln!();
    }
}

async fn get(admin: &str, path: &str) -> anyhow::Result<Option<Value>> {
    let (code, body) = admin_get(admin, path).await?;
    if code == 404 {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("admin endpoint {admin}: not JSON ({e})"))?;
    if code != 200 {
        bail!(
            "admin endpoint {admin}: {code} {}",
            v["message"].as_str().unwrap_or("")
        );
    }
    Ok(Some(v))
}

async fn once(admin: &str, group: Option<&str>, output: Output) -> anyhow::Result<()> {
    let groups: Vec<String> = match group {
        Some(g) => vec![g.to_string()],
        None => get(admin, "/v1/groups")
            .await?
            .and_then(|v| v["consumers"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
    };
    let mut statuses = Vec::new();
    for g in &groups {
        match get(admin, &format!("/v1/groups/{g}/lag")).await? {
            Some(v) => statuses.push(v["status"].clone()),
            None if group.is_some() => bail!("group {g}: no commits seen by its coordinator"),
            None => {}
        }
    }
    if output == Output::Json {
        output::json(&Value::Array(statuses));
        return Ok(());
    }
    let mut table = Table::new(&[
        "GROUP",
        "STATUS",
        "TOPIC",
        ">PARTITION",
        "PARTITION-STATUS",
        ">COMMITTED",
        ">LOG-END",
        ">LAG",
        ">TIME-LAG",
    ]);
    for s in &statuses {
        for p in s["partitions"].as_array().into_iter().flatten() {
            let end = &p["end"];
            let committed = end["offset"].as_i64().unwrap_or(0);
            table.row(vec![
                s["group"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
                p["topic"].as_str().unwrap_or("").to_string(),
                p["partition"].to_string(),
                p["status"].as_str().unwrap_or("").to_string(),
                committed.to_string(),
                (committed + p["current_lag"].as_i64().unwrap_or(0)).to_string(),
                p["current_lag"].to_string(),
                format!(
                    "{:.1}s",
                    p["time_lag_ms"].as_i64().unwrap_or(0) as f64 / 1000.0
                ),
            ]);
        }
    }
    table.print();
    Ok(())
}
