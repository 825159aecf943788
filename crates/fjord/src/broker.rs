//! `fjord broker ...`: cordon, maintenance mode, drains and removal, through the admin HTTP
//! API of any broker (`/v1/brokers/{id}/...`, `/v1/maintenance`), which forwards to the active
//! controller. The decisions and their reasons are the controller's; this file parses and
//! prints.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::output::{self, alert, Output, Table};
use crate::topic::human_ms;
use crate::traffic::human_bytes;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The admin HTTP address of any broker (`admin.listener`).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9644",
        env = "FJORD_ADMIN"
    )]
    admin: String,
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Place no new replicas on broker N (existing ones stay, and so do its leaderships).
    Cordon {
        /// The broker's node id.
        node_id: i32,
    },
    /// Let broker N take new replicas again.
    Uncordon {
        /// The broker's node id.
        node_id: i32,
    },
    /// Maintenance mode: cordon, move leaderships away, optionally drain every replica.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Remove a stopped, drained broker from the cluster (UnregisterBroker); refused, with the
    /// reason, while it runs or holds data.
    Remove {
        /// The broker's node id.
        node_id: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Cordon broker N and move every leadership it holds to another in-sync replica
    /// (clients see only retriable errors); with --drain-replicas, also reassign every
    /// replica on it to other brokers, keeping each partition's rack spread.
    Enable {
        /// The broker's node id.
        node_id: i32,
        /// Move every replica off the broker (refused when a partition would lose rack
        /// spread, e.g. when N is the last broker of its rack).
        #[arg(long)]
        drain_replicas: bool,
        /// Throttle the drain's replication to this rate, e.g. 50MB or 10MiB (per second;
        /// plain numbers are bytes).
        #[arg(long, value_name = "BYTES_PER_S", value_parser = rate, requires = "drain_replicas")]
        throttle: Option<u64>,
    },
    /// End maintenance of broker N: moves off it still in flight are cancelled, it is
    /// uncordoned and gets its preferred leaderships back.
    Disable {
        /// The broker's node id.
        node_id: i32,
    },
    /// Progress of brokers in maintenance: partitions and bytes left, rate, ETA, and whether
    /// a broker is safe to remove. With N on a terminal, a live progress line until it is
    /// safe to remove.
    Status {
        /// One broker's node id (default: every broker in maintenance).
        node_id: Option<i32>,
        /// Follow until broker N is safe to remove (exit 0), printing progress; also when
        /// stdout is not a terminal.
        #[arg(long, requires = "node_id")]
        wait: bool,
        /// Print one snapshot even on a terminal.
        #[arg(long, conflicts_with = "wait")]
        once: bool,
        /// Give up waiting after this many seconds (exit 1).
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
    },
}

/// `--throttle`: bytes per second, with an optional unit: B, KB/MB/GB (powers of 1000),
/// KiB/MiB/GiB (powers of 1024); case does not matter, a trailing `/s` is allowed.
fn rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {s:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * factor as f64 >= 1.0 => {
            Ok((n * factor as f64) as u64)
        }
        _ => Err(format!(
            "expected a rate such as 10MB or 5242880 (bytes per second), got {s:?}"
        )),
    }
}

pub async fn run(output: Output, args: BrokerArgs) -> anyhow::Result<()> {
    let admin = args.admin.as_str();
    match args.command {
        BrokerCommand::Cordon { node_id } => {
            let v = call(admin, "POST", &format!("/v1/brokers/{node_id}/cordon")).await?;
            done(output, &v, || {
                format!("broker {node_id} cordoned: no new replicas go to it")
            })
        }
        BrokerCommand::Uncordon { node_id } => {
            let v = call(admin, "POST", &format!("/v1/brokers/{node_id}/uncordon")).await?;
            done(output, &v, || {
                format!("broker {node_id} uncordoned: it takes new replicas again")
            })
        }
        BrokerCommand::Remove { node_id } => {
            let v = call(admin, "DELETE", &format!("/v1/brokers/{node_id}")).await?;
            done(output, &v, || {
                format!("broker {node_id} removed from the cluster")
            })
        }
        BrokerCommand::Maintenance(MaintenanceCommand::Enable {
            node_id,
            drain_replicas,
            throttle,
        }) => {
            let mut path = format!("/v1/brokers/{node_id}/maintenance");
            if drain_replicas {
                path.push_str("?drain_replicas=true");
                if let Some(t) = throttle {
                    path.push_str(&format!("&throttle={t}"));
                }
            }
            let v = call(admin, "POST", &path).await?;
            done(output, &v, || {
                enabled_message(node_id, &v, drain_replicas, throttle)
            })
        }
        BrokerCommand::Maintenance(MaintenanceCommand::Disable { node_id }) => {
            let v = call(
                admin,
                "DELETE",
                &format!("/v1/brokers/{node_id}/maintenance"),
            )
            .await?;
            done(output, &v, || {
                let o = &v["outcome"];
                format!(
                    "broker {node_id} left maintenance: {} preferred leadership(s) returned, {} \
                     move(s) off it cancelled",
                    o["leaders_moved"].as_u64().unwrap_or(0),
                    o["reassignments_cancelled"].as_u64().unwrap_or(0)
                )
            })
        }
        BrokerCommand::Maintenance(MaintenanceCommand::Status {
            node_id,
            wait,
            once,
            timeout,
        }) => {
            let live = node_id.is_some()
                && !once
                && output == Output::Table
                && std::io::stdout().is_terminal();
            match node_id {
                Some(n) if wait || live => {
                    follow(admin, n, output, timeout.map(Duration::from_secs)).await
                }
                _ => snapshot(admin, node_id, output).await,
            }
        }
    }
}

fn enabled_message(node_id: i32, v: &Value, drain: bool, throttle: Option<u64>) -> String {
    let o = &v["outcome"];
    let n = |k: &str| o[k].as_u64().unwrap_or(0);
    let mut msg = format!(
        "broker {node_id} in maintenance: cordoned, {} leadership(s) moved",
        n("leaders_moved")
    );
    if n("leaders_kept") > 0 {
        msg.push_str(&format!(
            ", {} kept until another replica is in sync",
            n("leaders_kept")
        ));
    }
    if drain {
        msg.push_str(&format!(
            "; {} partition(s) moving off it{}; follow with `fjord broker maintenance status \
             {node_id}`",
            n("reassignments_started"),
            throttle.map_or(String::new(), |t| format!(
                " (throttled to {})",
                human_rate(t)
            ))
        ));
    }
    msg
}

/// A throttle as given (decimal units, as `--throttle 50MB`): `50 MB/s`, `1.5 MB/s`, `800 B/s`.
fn human_rate(bytes_per_s: u64) -> String {
    let (v, unit) = match bytes_per_s {
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "GB"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "MB"),
        n if n >= 1_000 => (n as f64 / 1e3, "KB"),
        n => return format!("{n} B/s"),
    };
    let text = format!("{v:.1}");
    format!("{} {unit}/s", text.trim_end_matches(".0"))
}

/// Print a change's answer: JSON as it came, or one line.
fn done(output: Output, v: &Value, line: impl FnOnce() -> String) -> anyhow::Result<()> {
    if output == Output::Json {
        output::json(v);
    } else {
        outln!("{}", line());
    }
    Ok(())
}

/// `METHOD path` on the admin endpoint; the JSON answer of a 2xx, else the error as one line
/// with Kafka's error name and code.
pub(crate) async fn call(addr: &str, method: &str, path: &str) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("admin endpoint {addr}: connection timed out"))?
            .map_err(|e| anyhow::anyhow!("admin endpoint {addr}: {e}"))?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| anyhow::anyhow!("admin endpoint {addr}: no answer in 30 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("admin endpoint {addr}: malformed HTTP answer"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("admin endpoint {addr}: malformed status line"))?;
    let v: Value = serde_json::from_str(body).map_err(|_| {
        anyhow::anyhow!(
            "admin endpoint {addr}: {method} {path} answered {code} without JSON (a broker \
             without maintenance mode?)"
        )
    })?;
    if !(200..300).contains(&code) {
        let msg = v["error"].as_str().unwrap_or(body).to_string();
        match (v["error_name"].as_str(), v["error_code"].as_i64()) {
            (Some(name), Some(c)) => bail!("{msg} ({name}, code {c})"),
            _ => bail!("{msg}"),
        }
    }
    Ok(v)
}

async fn fetch(admin: &str, node_id: Option<i32>) -> anyhow::Result<Value> {
    let path = match node_id {
        Some(n) => format!("/v1/maintenance?node_id={n}"),
        None => "/v1/maintenance".to_string(),
    };
    call(admin, "GET", &path).await
}

/// What a broker's maintenance state is, in a few words.
fn state(b: &Value) -> String {
    let m = &b["maintenance"];
    if m.is_null() {
        return if b["cordoned"].as_bool() == Some(true) {
            "cordoned".into()
        } else {
            "in service".into()
        };
    }
    let mut s = if m["drain_replicas"].as_bool() == Some(true) {
        if m["drain_completed"].as_bool() == Some(true) {
            "maintenance, drained".to_string()
        } else {
            "maintenance, draining".to_string()
        }
    } else {
        "maintenance".to_string()
    };
    if let Some(t) = m["throttle_bytes_per_s"].as_u64() {
        s.push_str(&format!(" (throttle {})", human_rate(t)));
    }
    if b["fenced"].as_bool() == Some(true) {
        s.push_str(", stopped");
    }
    s
}

fn safe_line(b: &Value) -> String {
    if b["safe_to_remove"].as_bool() == Some(true) {
        let id = b["node_id"].as_i64().unwrap_or(-1);
        if b["fenced"].as_bool() == Some(true) {
            format!("safe to remove: yes (`fjord broker remove {id}`)")
        } else {
            format!("safe to remove: yes (stop broker {id}, then `fjord broker remove {id}`)")
        }
    } else {
        let reasons: Vec<&str> = b["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        format!("safe to remove: no ({})", reasons.join("; "))
    }
}

fn bytes_cell(b: &Value) -> String {
    b["bytes_left"]
        .as_u64()
        .map_or_else(|| "?".to_string(), human_bytes)
}

async fn snapshot(admin: &str, node_id: Option<i32>, output: Output) -> anyhow::Result<()> {
    let v = fetch(admin, node_id).await?;
    if output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    let empty = Vec::new();
    let brokers = v["brokers"].as_array().unwrap_or(&empty);
    for e in v["errors"].as_array().unwrap_or(&empty) {
        eprintln!(
            "warning: broker {} did not report its log sizes: {}",
            e["node_id"],
            e["error"].as_str().unwrap_or("?")
        );
    }
    if node_id.is_some() {
        for b in brokers {
            outln!(
                "broker {} (rack {}): {}",
                b["node_id"],
                b["rack"].as_str().unwrap_or("-"),
                state(b)
            );
            outln!(
                "  partitions left: {} ({} moving), leaderships: {} ({} with no other in-sync \
                 replica), bytes left: {}",
                b["replicas"],
                b["moving"],
                b["leaders"],
                b["leaders_stuck"],
                bytes_cell(b)
            );
            outln!("  {}", safe_line(b));
        }
        return Ok(());
    }
    if brokers.is_empty() {
        outln!("no broker is in maintenance");
        return Ok(());
    }
    let mut table = Table::new(&[
        "NODE",
        "RACK",
        "STATE",
        ">PARTITIONS LEFT",
        ">LEADERS",
        ">BYTES LEFT",
        "SAFE TO REMOVE",
    ]);
    for b in brokers {
        let safe = if b["safe_to_remove"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            alert("no")
        };
        table.row(vec![
            b["node_id"].to_string(),
            b["rack"].as_str().unwrap_or("-").to_string(),
            state(b),
            b["replicas"].to_string(),
            b["leaders"].to_string(),
            bytes_cell(b),
            safe,
        ]);
    }
    table.print();
    Ok(())
}

/// Drain rate from the bytes left over a sliding window of samples.
struct RateWindow {
    samples: Vec<(Instant, u64)>,
    window: Duration,
}

impl RateWindow {
    fn new(window: Duration) -> RateWindow {
        RateWindow {
            samples: Vec::new(),
            window,
        }
    }

    /// Add a sample; the rate (bytes/s) over the window, once two samples span a second.
    fn add(&mut self, at: Instant, bytes_left: u64) -> Option<f64> {
        self.samples.push((at, bytes_left));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= self.window {
            self.samples.remove(0);
        }
        let (t0, b0) = self.samples[0];
        let dt = at.duration_since(t0).as_secs_f64();
        (dt >= 1.0).then(|| (b0.saturating_sub(bytes_left)) as f64 / dt)
    }
}

/// What the progress bar measures from: the most bytes and partitions left seen.
#[derive(Debug, Default, Clone, Copy)]
struct Start {
    bytes: u64,
    partitions: u64,
}

/// One progress line: a bar of the bytes copied since the start (of the partitions when no
/// bytes are known), partitions and bytes left, rate and ETA.
fn progress_line(b: &Value, start: Start, rate: Option<f64>) -> String {
    let left = b["bytes_left"].as_u64();
    let partitions = b["replicas"].as_u64().unwrap_or(0);
    let done = |left: u64, start: u64| 1.0 - left.min(start) as f64 / start as f64;
    let fraction = match left {
        Some(l) if start.bytes > 0 => done(l, start.bytes),
        _ if start.partitions > 0 => done(partitions, start.partitions),
        _ if partitions == 0 => 1.0,
        _ => 0.0,
    };
    const WIDTH: usize = 24;
    let filled = (fraction * WIDTH as f64).round() as usize;
    let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled));
    let rate_text = rate.map_or_else(
        || "-".to_string(),
        |r| format!("{}/s", human_bytes(r as u64)),
    );
    let eta = match (left, rate) {
        (Some(0), _) => "0s".to_string(),
        (Some(l), Some(r)) if r > 0.0 => human_ms((l as f64 / r * 1000.0) as i64),
        _ => "-".to_string(),
    };
    format!(
        "{bar} {:>3.0}%  partitions left {}  leaderships {}  bytes left {}  rate {rate_text}  ETA {eta}",
        fraction * 100.0,
        b["replicas"],
        b["leaders"],
        bytes_cell(b),
    )
}

/// Follow broker `node_id` until it is safe to remove: a line redrawn in place on a terminal,
/// a line every few seconds otherwise (and JSON at the end with `--output json`).
async fn follow(
    admin: &str,
    node_id: i32,
    output: Output,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let tty = output == Output::Table && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut rates = RateWindow::new(Duration::from_secs(10));
    let mut start = Start::default();
    let mut last_print: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let v = match fetch(admin, Some(node_id)).await {
            Ok(v) => {
                failures = 0;
                v
            }
            // A broker restarting or a controller failing over: keep following.
            Err(e) if failures < 30 => {
                failures += 1;
                if !tty && failures == 1 {
                    eprintln!("warning: {e:#}; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(b) = v["brokers"].as_array().and_then(|a| a.first()).cloned() else {
            bail!("broker {node_id} is not registered");
        };
        let left = b["bytes_left"].as_u64();
        start.bytes = start.bytes.max(left.unwrap_or(0));
        start.partitions = start.partitions.max(b["replicas"].as_u64().unwrap_or(0));
        let rate = left.and_then(|l| rates.add(Instant::now(), l));
        let safe = b["safe_to_remove"].as_bool() == Some(true);
        if output == Output::Table {
            let line = progress_line(&b, start, rate);
            if tty {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[K{line}");
                if let Err(e) = out.flush() {
                    output::stdout_failed(e);
                }
            } else if safe || last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                outln!("{line}");
                last_print = Some(Instant::now());
            }
        }
        if safe {
            if tty {
                outln!();
            }
            if output == Output::Json {
                output::json(&v);
            } else {
                outln!("{}", safe_line(&b));
            }
            return Ok(());
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            if tty {
                outln!();
            }
            bail!(
                "broker {node_id} is not safe to remove after {}s: {}",
                started.elapsed().as_secs(),
                safe_line(&b).trim_start_matches("safe to remove: no ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_rates_with_units() {
        assert_eq!(rate("5242880"), Ok(5_242_880));
        assert_eq!(rate("10MB"), Ok(10_000_000));
        assert_eq!(rate("10MiB"), Ok(10 << 20));
        assert_eq!(rate("1.5 GB/s"), Ok(1_500_000_000));
        assert_eq!(rate("500kb"), Ok(500_000));
        for bad in ["", "0", "-5", "10XB", "fast", "0.1"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn throttles_print_as_given() {
        assert_eq!(human_rate(50_000_000), "50 MB/s");
        assert_eq!(human_rate(1_500_000), "1.5 MB/s");
        assert_eq!(human_rate(10 << 20), "10.5 MB/s");
        assert_eq!(human_rate(800), "800 B/s");
    }

    #[test]
    fn rate_window_measures_over_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(10));
        assert_eq!(w.add(t0, 1000), None);
        assert_eq!(w.add(t0 + Duration::from_millis(500), 900), None);
        assert_eq!(w.add(t0 + Duration::from_secs(2), 800), Some(100.0));
        // Old samples leave the window.
        w.add(t0 + Duration::from_secs(12), 200);
        let r = w.add(t0 + Duration::from_secs(14), 0).unwrap();
        assert!((r - 800.0 / 12.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn progress_line_shows_bar_rate_and_eta() {
        let b = serde_json::json!({"replicas": 3, "leaders": 0, "bytes_left": 250});
        let start = Start {
            bytes: 1000,
            partitions: 4,
        };
        let line = progress_line(&b, start, Some(50.0));
        assert!(
            line.starts_with("[##################......]  75%"),
            "{line}"
        );
        assert!(line.contains("partitions left 3"), "{line}");
        assert!(line.contains("ETA 5.0s"), "{line}");
        let unknown = serde_json::json!({"replicas": 3, "leaders": 1, "bytes_left": null});
        let line = progress_line(&unknown, start, None);
        assert!(line.contains("bytes left ?  rate -  ETA -"), "{line}");
        assert!(line.contains(" 25%"), "by partitions: {line}");
    }
}
