//! `fjord topic skew TOPIC`: the topic's hottest partitions against its mean per partition and
//! the keys driving them, from any broker's admin endpoint (`GET /v1/skew?topic=TOPIC`, which
//! gathers every leader's rates and sampled top keys).

use clap::Args;
use serde_json::Value;

use crate::cluster::admin_get;
use crate::output::{self, alert, Output, Table};
use crate::traffic::human_bytes;

#[derive(Debug, Args)]
pub struct SkewArgs {
    /// The topic.
    topic: String,
    /// The admin HTTP address of any broker (`admin.listener`); it asks the other leaders.
    #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
    admin: String,
    /// Partitions shown, hottest first (0: all).
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Top keys shown per partition.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=64))]
    keys: u16,
    /// Print JSON (the same as `-o json`).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: SkewArgs, output: Output) -> anyhow::Result<()> {
    let path = format!("/v1/skew?topic={}&keys={}", args.topic, args.keys);
    let (code, body) = admin_get(&args.admin, &path).await?;
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("admin endpoint {}: not JSON ({e})", args.admin))?;
    if code == 404 && v["error"].is_string() {
        anyhow::bail!("{}", v["error"].as_str().unwrap_or_default());
    }
    if code != 200 {
        anyhow::bail!(
            "admin endpoint {}: {}",
            args.admin,
            v["error"].as_str().unwrap_or(&body)
        );
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: broker {} did not answer, its partitions are left out: {}",
            e["node_id"],
            e["error"].as_str().unwrap_or("no answer")
        );
    }
    if args.json || output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    print_view(&v, args.top);
    Ok(())
}

fn rate(v: &Value) -> String {
    format!(
        "{}/s",
        human_bytes(v.as_f64().unwrap_or(0.0).round() as u64)
    )
}

fn print_view(v: &Value, top: usize) {
    let skewed = v["skewed"].as_u64().unwrap_or(0);
    outln!(
        "topic {}: {} partitions, {} in, mean {} per partition (rates over up to {} s); {}",
        v["topic"].as_str().unwrap_or(""),
        v["partition_count"],
        rate(&v["total_rate"]),
        rate(&v["mean_rate"]),
        v["window_ms"].as_u64().unwrap_or(0) / 1000,
        if skewed == 0 {
            "no skewed partition".to_string()
        } else {
            alert(&format!(
                "{skewed} skewed (at least {}x the mean)",
                v["warn_ratio"]
            ))
        }
    );
    let mut t = Table::new(&[
        ">PARTITION",
        ">LEADER",
        ">RATE",
        ">RATIO",
        ">SHARE",
        "SKEWED",
        "TOP KEYS (share of the partition's sampled bytes)",
    ]);
    let parts = v["partitions"].as_array().cloned().unwrap_or_default();
    let shown = if top == 0 { parts.len() } else { top };
    for p in parts.iter().take(shown) {
        let keys: Vec<String> = p["top_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| {
                format!(
                    "{} {:.0}%",
                    k["key"].as_str().unwrap_or(""),
                    k["share"].as_f64().unwrap_or(0.0) * 100.0
                )
            })
            .collect();
        t.row(vec![
            p["partition"].to_string(),
            p["leader"].to_string(),
            rate(&p["rate"]),
            format!("{:.2}", p["ratio"].as_f64().unwrap_or(0.0)),
            format!("{:.1}%", p["share"].as_f64().unwrap_or(0.0) * 100.0),
            if p["skewed"] == true {
                alert("yes")
            } else {
                "no".into()
            },
            if keys.is_empty() {
                "-".into()
            } else {
                keys.join(", ")
            },
        ]);
    }
    t.print();
    if parts.len() > shown {
        outln!(
            "({} more partitions; --top 0 shows all)",
            parts.len() - shown
        );
    }
    if let Some(m) = v["missing"].as_array().filter(|m| !m.is_empty()) {
        outln!(
            "partitions without an answering leader (left out of the mean): {}",
            m.iter().map(Value::to_string).collect::<Vec<_>>().join(",")
        );
    }
}
