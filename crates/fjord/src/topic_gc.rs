//! `fjord topic unused --idle 7d` and `fjord topic gc --idle 30d [--dry-run|--execute]`,
//! through the admin endpoint of any broker (`GET /v1/topics/unused`, `GET|POST
//! /v1/topics/gc`). The decisions and their reasons are `fjord_metadata::topic_gc`'s; this
//! file parses and prints.

use anyhow::bail;
use clap::Args;
use fjord_metadata::topic_gc::human_ms;
use serde_json::Value;

use crate::output::{self, Output, Table};
use crate::traffic::human_bytes;

/// `--idle`: a duration such as 30s, 10m, 2h, 7d (or 1d12h).
fn idle_duration(s: &str) -> Result<i64, String> {
    fjord_broker::accounting::usage::parse_since(s)
}

#[derive(Debug, Args)]
pub struct UnusedArgs {
    /// List topics idle at least this long: 30s, 10m, 2h, 7d.
    #[arg(long, value_parser = idle_duration)]
    idle: i64,
    /// The admin HTTP address of any broker (`admin.listener`).
    #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
    admin: String,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// A topic is idle when neither produced to nor fetched by a consumer this long.
    #[arg(long, value_parser = idle_duration)]
    idle: i64,
    /// Print what would be marked and deleted, and why other topics are left alone (the
    /// default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Mark idle topics, delete topics marked for topic.gc.grace.ms and still idle, unmark
    /// topics in use again.
    #[arg(long)]
    execute: bool,
    /// The admin HTTP address of any broker (`admin.listener`).
    #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
    admin: String,
}

async fn get(admin: &str, path: &str) -> anyhow::Result<Value> {
    let (code, body) = crate::cluster::admin_get(admin, path).await?;
    let v: Value = serde_json::from_str(&body).map_err(|_| {
        anyhow::anyhow!("admin endpoint {admin}: {path} answered {code} without JSON (a broker without topic GC?)")
    })?;
    if code != 200 {
        bail!("{}", v["error"].as_str().unwrap_or(&body));
    }
    Ok(v)
}

/// `t` as "3d2h ago", or "never".
fn ago(now: i64, t: &Value) -> String {
    t.as_i64()
        .map_or_else(|| "never".into(), |t| format!("{} ago", human_ms(now - t)))
}

fn warn_missing(v: &Value) {
    for e in v["errors"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: broker {} did not answer ({}); its sizes and groups are missing",
            e["node_id"],
            e["error"].as_str().unwrap_or("")
        );
    }
}

pub async fn unused(a: UnusedArgs, output: Output) -> anyhow::Result<()> {
    let v = get(&a.admin, &format!("/v1/topics/unused?idle_ms={}", a.idle)).await?;
    if output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    warn_missing(&v);
    let now = v["now_ms"].as_i64().unwrap_or(0);
    let mut table = Table::new(&[
        "TOPIC",
        ">PARTITIONS",
        ">SIZE",
        "LAST-PRODUCE",
        "LAST-FETCH",
        ">IDLE",
        "MARKED",
        "GROUPS",
    ]);
    for t in v["topics"].as_array().into_iter().flatten() {
        table.row(vec![
            t["topic"].as_str().unwrap_or("").to_string(),
            t["partitions"].to_string(),
            human_bytes(t["size_bytes"].as_u64().unwrap_or(0)),
            ago(now, &t["last_produce_ms"]),
            ago(now, &t["last_fetch_ms"]),
            human_ms(t["idle_ms"].as_i64().unwrap_or(0)),
            t["marked_ms"]
                .as_i64()
                .map_or("-".into(), |m| format!("{} ago", human_ms(now - m))),
            groups(t),
        ]);
    }
    table.print();
    Ok(())
}

fn groups(t: &Value) -> String {
    let g: Vec<&str> = t["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if g.is_empty() {
        "-".into()
    } else {
        g.join(",")
    }
}

pub async fn gc(a: GcArgs, output: Output) -> anyhow::Result<()> {
    let path = format!("/v1/topics/gc?idle_ms={}", a.idle);
    let v = if a.execute {
        crate::broker::call(&a.admin, "POST", &path).await?
    } else {
        get(&a.admin, &path).await?
    };
    if output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    warn_missing(&v);
    let executed = v["executed"].as_bool() == Some(true);
    let mut decisions: Vec<&Value> = v["decisions"].as_array().into_iter().flatten().collect();
    let rank = |d: &Value| match d["action"].as_str() {
        Some("delete") => 0,
        Some("mark") => 1,
        Some("unmark") => 2,
        Some("wait") => 3,
        _ => 4,
    };
    decisions.sort_by_key(|d| rank(d));
    let mut table = Table::new(&["ACTION", "TOPIC", ">SIZE", ">IDLE", "GROUPS", "REASON"]);
    let mut counts = std::collections::BTreeMap::new();
    for d in &decisions {
        let action = d["action"].as_str().unwrap_or("?");
        *counts.entry(action).or_insert(0) += 1;
        table.row(vec![
            action.to_string(),
            d["topic"].as_str().unwrap_or("").to_string(),
            human_bytes(d["size_bytes"].as_u64().unwrap_or(0)),
            d["idle_ms"].as_i64().map_or("?".into(), human_ms),
            groups(d),
            d["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    table.print();
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    if executed {
        outln!(
            "marked {}, deleted {}, unmarked {}, waiting {}, skipped {}",
            n("mark"),
            n("delete"),
            n("unmark"),
            n("wait"),
            n("skip")
        );
    } else {
        outln!(
            "dry run: would mark {}, delete {}, unmark {}; waiting {}, skipped {} (run with --execute to carry it out)",
            n("mark"),
            n("delete"),
            n("unmark"),
            n("wait"),
            n("skip")
        );
    }
    Ok(())
}
