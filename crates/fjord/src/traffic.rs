//! `fjord cluster traffic` and `fjord usage`: what the brokers' accounting counted, from their
//! admin endpoints (`GET /v1/traffic`, `GET /v1/usage`).
//!
//! One admin address answers for the whole cluster (that broker asks the others); with several
//! addresses (comma-separated) each answers for itself and the answers are merged here, for
//! brokers that cannot reach each other's admin ports.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, ValueEnum};
use fjord_broker::accounting::http::merge_usage_rows;
use fjord_broker::accounting::usage::{parse_since, HOURS_KEPT, HOUR_MS};
use serde_json::{json, Value};

use crate::cluster::admin_get;
use crate::output::{self, Output, Table};

/// Bytes per GB for the cost estimate (GB as cloud providers bill data transfer: 2^30 bytes).
const GB: f64 = (1u64 << 30) as f64;
/// Client racks that say nothing about where the client is.
const UNATTRIBUTED: [&str; 2] = ["unknown", "other"];

/// Every broker's answer to `path` from the admin endpoints in `admin` (comma-separated), by
/// node id, with the brokers that did not answer (node id → reason).
async fn gather(
    admin: &str,
    cluster_path: &str,
    local_path: &str,
) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let addrs: Vec<&str> = admin
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        anyhow::bail!("--admin needs at least one HOST:PORT");
    }
    let path = if addrs.len() == 1 {
        cluster_path
    } else {
        local_path
    };
    let mut brokers: BTreeMap<i64, Value> = BTreeMap::new();
    let mut errors: BTreeMap<i64, Value> = BTreeMap::new();
    for addr in addrs {
        let (code, body) = admin_get(addr, path).await?;
        if code == 404 {
            anyhow::bail!(
                "admin endpoint {addr} does not serve {} (a controller-only node? give a broker's admin address)",
                path.split('?').next().unwrap_or(path)
            );
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("admin endpoint {addr}: not JSON ({e})"))?;
        if code != 200 {
            anyhow::bail!(
                "admin endpoint {addr}: {}",
                v["error"].as_str().unwrap_or(&body)
            );
        }
        for b in v["brokers"].as_array().into_iter().flatten() {
            if let Some(id) = b["node_id"].as_i64() {
                brokers.insert(id, b.clone());
            }
        }
        for e in v["errors"].as_array().into_iter().flatten() {
            if let Some(id) = e["node_id"].as_i64() {
                errors.insert(id, e.clone());
            }
        }
    }
    // Another address may have answered for a broker the first could not reach.
    errors.retain(|id, _| !brokers.contains_key(id));
    Ok((
        brokers.into_values().collect(),
        errors.into_values().collect(),
    ))
}

fn warn_unanswered(errors: &[Value]) {
    for e in errors {
        eprintln!(
            "warning: broker {} is not counted: {}",
            e["node_id"],
            e["error"].as_str().unwrap_or("no answer")
        );
    }
}

/// A byte count for people: B, KiB, MiB, GiB, TiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The traffic of every broker added up: (client rack, broker rack, kind) → bytes.
#[derive(Debug, Default, PartialEq)]
pub struct TrafficSummary {
    pub cells: BTreeMap<(String, String, String), u64>,
}

impl TrafficSummary {
    pub fn from_brokers(brokers: &[Value]) -> TrafficSummary {
        let mut cells = BTreeMap::new();
        for b in brokers {
            let broker_rack = b["rack"].as_str().unwrap_or("unknown").to_string();
            for f in b["flows"].as_array().into_iter().flatten() {
                let key = (
                    f["client_rack"].as_str().unwrap_or("unknown").to_string(),
                    broker_rack.clone(),
                    f["kind"].as_str().unwrap_or("other").to_string(),
                );
                *cells.entry(key).or_insert(0) += f["bytes"].as_u64().unwrap_or(0);
            }
        }
        TrafficSummary { cells }
    }

    pub fn total(&self) -> u64 {
        self.cells.values().sum()
    }

    fn unattributed(client: &str, broker: &str) -> bool {
        UNATTRIBUTED.contains(&client) || broker == "unknown"
    }

    /// Bytes between a client and a broker in different known racks, optionally of one kind.
    pub fn cross_rack(&self, kind: Option<&str>) -> u64 {
        self.cells
            .iter()
            .filter(|((c, b, k), _)| {
                c != b && !Self::unattributed(c, b) && kind.is_none_or(|want| want == k)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Bytes whose client or broker rack is not known, optionally of one kind.
    pub fn unknown(&self, kind: Option<&str>) -> u64 {
        self.cells
            .iter()
            .filter(|((c, b, k), _)| Self::unattributed(c, b) && kind.is_none_or(|want| want == k))
            .map(|(_, v)| v)
            .sum()
    }

    fn of_kind(&self, kind: &str) -> u64 {
        self.cells
            .iter()
            .filter(|((_, _, k), _)| k == kind)
            .map(|(_, v)| v)
            .sum()
    }

    /// Racks in table order: named racks sorted, then `unknown` and `other`.
    fn order(racks: BTreeSet<String>) -> Vec<String> {
        let (mut named, special): (Vec<String>, Vec<String>) = racks
            .into_iter()
            .partition(|r| !UNATTRIBUTED.contains(&r.as_str()));
        named.sort();
        for s in UNATTRIBUTED {
            if special.iter().any(|r| r == s) {
                named.push(s.to_string());
            }
        }
        named
    }

    fn client_racks(&self) -> Vec<String> {
        Self::order(self.cells.keys().map(|(c, _, _)| c.clone()).collect())
    }

    fn broker_racks(&self) -> Vec<String> {
        Self::order(self.cells.keys().map(|(_, b, _)| b.clone()).collect())
    }

    fn between(&self, client: &str, broker: &str) -> u64 {
        self.cells
            .iter()
            .filter(|((c, b, _), _)| c == client && b == broker)
            .map(|(_, v)| v)
            .sum()
    }
}

/// `fjord cluster traffic`.
pub async fn cluster_traffic(admin: &str, price_per_gb: f64, output: Output) -> anyhow::Result<()> {
    let (brokers, errors) = gather(admin, "/v1/traffic", "/v1/traffic?scope=local").await?;
    let s = TrafficSummary::from_brokers(&brokers);
    let total = s.total();
    let cross = s.cross_rack(None);
    let unknown = s.unknown(None);
    let cost = cross as f64 / GB * price_per_gb;
    if output == Output::Json {
        let matrix: Vec<Value> = s
            .cells
            .iter()
            .map(
                |((c, b, k), v)| json!({"client_rack": c, "broker_rack": b, "kind": k, "bytes": v}),
            )
            .collect();
        output::json(&json!({
            "brokers": brokers,
            "errors": errors,
            "matrix": matrix,
            "total_bytes": total,
            "cross_rack_bytes": cross,
            "unknown_rack_bytes": unknown,
            "cross_rack_share": if total == 0 { 0.0 } else { cross as f64 / total as f64 },
            "price_per_gb": price_per_gb,
            "estimated_cost": cost,
        }));
        warn_unanswered(&errors);
        return Ok(());
    }
    let disabled: Vec<String> = brokers
        .iter()
        .filter(|b| b["enabled"].as_bool() == Some(false))
        .map(|b| b["node_id"].to_string())
        .collect();
    let ids: Vec<String> = brokers.iter().map(|b| b["node_id"].to_string()).collect();
    outln!(
        "traffic since each broker started (request and response frames), brokers {}",
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.join(", ")
        }
    );
    if !disabled.is_empty() {
        outln!(
            "accounting is off on brokers {} (traffic.accounting.enable=false)",
            disabled.join(", ")
        );
    }
    outln!();
    let broker_racks = s.broker_racks();
    let mut headers = vec!["CLIENT RACK \\ BROKER RACK".to_string()];
    headers.extend(broker_racks.iter().map(|r| format!(">{r}")));
    headers.push(">TOTAL".into());
    let mut matrix = Table::with_headers(headers);
    for c in s.client_racks() {
        let mut row = vec![c.clone()];
        let mut sum = 0;
        for b in &broker_racks {
            let v = s.between(&c, b);
            sum += v;
            row.push(human_bytes(v));
        }
        row.push(human_bytes(sum));
        matrix.row(row);
    }
    matrix.print();
    outln!();
    let mut kinds = Table::new(&["KIND", ">BYTES", ">CROSS-RACK", ">SHARE", ">RACK UNKNOWN"]);
    for kind in ["produce", "consume", "replication", "other"] {
        let all = s.of_kind(kind);
        let x = s.cross_rack(Some(kind));
        kinds.row(vec![
            kind.to_string(),
            human_bytes(all),
            human_bytes(x),
            percent(x, all),
            human_bytes(s.unknown(Some(kind))),
        ]);
    }
    kinds.print();
    outln!();
    outln!(
        "cross-rack: {} of {} ({}); rack unknown: {}",
        human_bytes(cross),
        human_bytes(total),
        percent(cross, total),
        human_bytes(unknown)
    );
    outln!("estimated cross-rack cost: ${cost:.4} at ${price_per_gb}/GB (GB = 2^30 bytes)");
    warn_unanswered(&errors);
    Ok(())
}

/// What usage is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageBy {
    Topic,
    Client,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Break usage down by topic (record bytes in and out, bytes stored on disk counting every
    /// replica) or by client id (bytes of its produce requests in, of its fetch responses out).
    #[arg(long, value_enum, default_value = "topic")]
    by: UsageBy,
    /// The window: the last 24h, 90m, 1h30m, 2d, ... (at most 48h; minute resolution up to
    /// 2h, whole hours beyond).
    #[arg(long, default_value = "24h", value_parser = since)]
    since: String,
    /// The admin HTTP address of any broker (`admin.listener`), which answers for the whole
    /// cluster; or several, comma-separated, each answering for itself.
    #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
    admin: String,
    /// Show only the first N rows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
}

fn since(s: &str) -> Result<String, String> {
    match parse_since(s) {
        Ok(ms) if ms <= HOURS_KEPT * HOUR_MS => Ok(s.trim().to_string()),
        Ok(_) => Err(format!(
            "at most {HOURS_KEPT}h: usage is kept in memory for {HOURS_KEPT} hours"
        )),
        Err(e) => Err(e),
    }
}

/// `fjord usage`.
pub async fn usage(args: UsageArgs, output: Output) -> anyhow::Result<()> {
    let by = match args.by {
        UsageBy::Topic => "topic",
        UsageBy::Client => "client",
    };
    let cluster = format!("/v1/usage?by={by}&since={}", args.since);
    let local = format!("{cluster}&scope=local");
    let (brokers, errors) = gather(&args.admin, &cluster, &local).await?;
    let mut rows = merge_usage_rows(&brokers);
    if let Some(n) = args.top {
        rows.truncate(n);
    }
    if output == Output::Json {
        output::json(&json!({
            "by": by,
            "since": args.since,
            "rows": rows,
            "brokers": brokers,
            "errors": errors,
        }));
        warn_unanswered(&errors);
        return Ok(());
    }
    let ids: Vec<String> = brokers.iter().map(|b| b["node_id"].to_string()).collect();
    let hourly = brokers
        .iter()
        .any(|b| b["resolution"].as_str() == Some("hour"));
    let covered = brokers
        .iter()
        .filter_map(|b| b["covered_from_ms"].as_i64())
        .min();
    let now = fjord_protocol::clock::now_ms();
    let short = covered.map(|c| now - c + 1000 < parse_since(&args.since).unwrap_or(0));
    outln!(
        "usage over the last {}{} by {by}, brokers {}{}",
        args.since,
        if hourly { " (whole hours)" } else { "" },
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.join(", ")
        },
        match (short, covered) {
            (Some(true), Some(c)) => format!(
                " (counted for the last {} only: usage is kept in memory since the brokers started)",
                crate::topic::human_ms(now - c)
            ),
            _ => String::new(),
        }
    );
    let mut table = match args.by {
        UsageBy::Topic => Table::new(&["TOPIC", ">BYTES IN", ">BYTES OUT", ">STORED"]),
        UsageBy::Client => Table::new(&["CLIENT ID", ">BYTES IN", ">BYTES OUT"]),
    };
    for r in &rows {
        let n = |k: &str| human_bytes(r[k].as_u64().unwrap_or(0));
        let mut row = vec![
            r["name"].as_str().unwrap_or("?").to_string(),
            n("bytes_in"),
            n("bytes_out"),
        ];
        if args.by == UsageBy::Topic {
            row.push(n("bytes_stored"));
        }
        table.row(row);
    }
    table.print();
    warn_unanswered(&errors);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn cross_rack_leaves_out_same_rack_and_unknown() {
        let brokers = vec![
            json!({"node_id": 1, "rack": "a", "flows": [
                {"client_rack": "a", "kind": "produce", "bytes": 100},
                {"client_rack": "b", "kind": "produce", "bytes": 10},
                {"client_rack": "unknown", "kind": "other", "bytes": 5},
            ]}),
            json!({"node_id": 2, "rack": "b", "flows": [
                {"client_rack": "a", "kind": "replication", "bytes": 7},
                {"client_rack": "b", "kind": "consume", "bytes": 50},
                {"client_rack": "other", "kind": "consume", "bytes": 3},
            ]}),
        ];
        let s = TrafficSummary::from_brokers(&brokers);
        assert_eq!(s.total(), 175);
        assert_eq!(s.cross_rack(None), 17);
        assert_eq!(s.cross_rack(Some("replication")), 7);
        assert_eq!(s.unknown(None), 8);
        assert_eq!(s.between("b", "a"), 10);
        assert_eq!(s.client_racks(), vec!["a", "b", "unknown", "other"]);
        assert_eq!(s.broker_racks(), vec!["a", "b"]);
    }

    #[test]
    fn since_is_checked() {
        assert!(since("24h").is_ok());
        assert!(since("48h").is_ok());
        assert!(since("49h").is_err());
        assert!(since("yesterday").is_err());
    }
}
