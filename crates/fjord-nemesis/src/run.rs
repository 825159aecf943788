//! One round: start the cluster, run the load, apply the seeded faults one after the other
//! (each healed and followed by a wait for convergence), stop the load, read everything back
//! and run the checkers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::check::{self, Anomaly, Outage};
use crate::fault::{FaultKind, Schedule, Step};
use crate::history::{History, Outcome};
use crate::load::{self, Env};
use crate::net::{Mode, Net};
use crate::node::Cluster;
use crate::txn_load;

/// Settings of one round.
#[derive(Debug, Clone)]
pub struct RoundConfig {
    pub seed: u64,
    /// How long faults are applied (the load runs a little longer on both ends).
    pub duration: Duration,
    /// The `fjord` binary.
    pub bin: PathBuf,
    /// Where the report, the history and the server logs go.
    pub out_dir: PathBuf,
    /// Use network namespaces when possible.
    pub netns: bool,
    pub kinds: Vec<FaultKind>,
    /// Size of each node's tmpfs data disk (0: no tmpfs, no disk-full faults).
    pub disk_mb: u64,
    pub partitions: i32,
    pub producers: usize,
    /// Transactional producers (skipped, with a note, when the cluster lacks transactions).
    pub txn_producers: usize,
    pub consumers: usize,
    /// Records per produce batch.
    pub batch: usize,
    /// Pause of each producer between batches (keeps a 2-core machine responsive).
    pub produce_pause: Duration,
    /// How long a fault holds: a random duration in this range.
    pub hold: (Duration, Duration),
    /// How long the cluster may take to converge after a fault heals.
    pub converge_bound: Duration,
    /// At most this many faults (0: as many as fit in `duration`).
    pub max_faults: usize,
}

impl RoundConfig {
    pub fn new(seed: u64, bin: PathBuf, out_dir: PathBuf) -> RoundConfig {
        RoundConfig {
            seed,
            duration: Duration::from_secs(60),
            bin,
            out_dir,
            netns: true,
            kinds: FaultKind::ALL.to_vec(),
            disk_mb: 256,
            partitions: 4,
            producers: 2,
            txn_producers: 1,
            consumers: 2,
            batch: 5,
            produce_pause: Duration::from_millis(2),
            hold: (Duration::from_secs(2), Duration::from_secs(6)),
            converge_bound: Duration::from_secs(45),
            max_faults: 0,
        }
    }
}

/// One applied fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub what: String,
    /// Seconds since the round started.
    pub start: f64,
    pub healed: f64,
    /// Seconds from heal until every node agreed on a leader and a full ISR for every
    /// partition; None when it did not within the bound.
    pub converge: Option<f64>,
    /// Nodes that exited on their own during the fault (restarted at heal, as a supervisor
    /// would), with their exit status.
    pub exited: Vec<String>,
}

/// Counts of one operation kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    pub ok: usize,
    pub error: usize,
    pub disconnected: usize,
    pub timeout: usize,
    pub pending: usize,
}

impl OpCounts {
    pub fn total(&self) -> usize {
        self.ok + self.error + self.disconnected + self.timeout + self.pending
    }
}

/// The result of a round.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub mode: String,
    pub fallback_reason: Option<String>,
    pub skipped_kinds: Vec<FaultKind>,
    pub faults: Vec<FaultRecord>,
    pub ops: BTreeMap<String, OpCounts>,
    /// Acknowledged records, and records read back.
    pub acked_records: usize,
    pub read_records: usize,
    pub anomalies: Vec<Anomaly>,
    /// Findings that are not anomalies (stale reads from a deposed coordinator).
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Report {
    /// Client-visible errors (any outcome but ok) over all operations.
    pub fn error_rate(&self) -> f64 {
        let total: usize = self.ops.values().map(|c| c.total()).sum();
        let ok: usize = self.ops.values().map(|c| c.ok).sum();
        if total == 0 {
            0.0
        } else {
            (total - ok) as f64 / total as f64
        }
    }

    /// The short human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fjord-nemesis round: seed {} ({} mode{}), {:.0}s",
            self.seed,
            self.mode,
            self.fallback_reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            self.seconds
        );
        if !self.skipped_kinds.is_empty() {
            let names: Vec<&str> = self.skipped_kinds.iter().map(|k| k.name()).collect();
            let _ = writeln!(s, "  skipped fault kinds: {}", names.join(", "));
        }
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  fault {:<18} {:<40} {:>6.1}s..{:>6.1}s  converged {}",
                f.kind.name(),
                f.what,
                f.start,
                f.healed,
                f.converge
                    .map(|c| format!("after {c:.1}s"))
                    .unwrap_or_else(|| "NOT within the bound".into())
            );
            for e in &f.exited {
                let _ = writeln!(s, "    {e}; restarted");
            }
        }
        for (kind, c) in &self.ops {
            let _ = writeln!(
                s,
                "  ops {kind:<14} total {:>6}  ok {:>6}  error {:>5}  disconnected {:>4}  timeout {:>3}  pending {:>3}",
                c.total(),
                c.ok,
                c.error,
                c.disconnected,
                c.timeout,
                c.pending
            );
        }
        let _ = writeln!(
            s,
            "  client-visible error rate {:.1}%, {} records acknowledged, {} read back",
            self.error_rate() * 100.0,
            self.acked_records,
            self.read_records
        );
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if self.anomalies.is_empty() {
            let _ = writeln!(s, "  anomalies: none");
        } else {
            let _ = writeln!(s, "  anomalies: {}", self.anomalies.len());
            for a in &self.anomalies {
                let _ = writeln!(s, "    [{}] {}", a.kind, a.detail);
            }
        }
        s
    }
}

fn ips(net: &Net, nodes: &[usize]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| net.node_ip(*n)).collect();
    format!("{{ {} }}", v.join(", "))
}

/// A fault in force, to be healed.
enum Active {
    Killed(usize),
    Paused(usize),
    Rules,
    Slowed(usize),
    Disk(usize),
}

/// Cut `a` and `b` (sets of nodes) apart: rules on both sides, both directions.
fn cut(net: &Net, a: &[usize], b: &[usize]) -> Result<()> {
    for (side, other) in [(a, b), (b, a)] {
        for n in side {
            net.set_rules(
                *n,
                &[format!("ip saddr {} drop", ips(net, other))],
                &[format!("ip daddr {} drop", ips(net, other))],
            )?;
        }
    }
    Ok(())
}

async fn apply(cluster: &mut Cluster, env: &Env, step: &Step) -> Result<(Active, String)> {
    let n = cluster.nodes.len();
    let all: Vec<usize> = (1..=n).collect();
    let node = step.node(n);
    Ok(match step.kind {
        FaultKind::Kill => {
            cluster.kill(node)?;
            (Active::Killed(node), format!("kill -9 node {node}"))
        }
        FaultKind::Pause => {
            cluster.pause(node)?;
            (Active::Paused(node), format!("SIGSTOP node {node}"))
        }
        FaultKind::Isolate | FaultKind::IsolateController => {
            let target = if step.kind == FaultKind::IsolateController {
                load::controller(env).await.unwrap_or(node)
            } else {
                node
            };
            let rest: Vec<usize> = all.iter().copied().filter(|x| *x != target).collect();
            cut(&cluster.net, &[target], &rest)?;
            (Active::Rules, format!("node {target} | nodes {rest:?}"))
        }
        FaultKind::Bridge => {
            let a = node;
            let b = step.other(n);
            cut(&cluster.net, &[a], &[b])?;
            let middle: Vec<usize> = all.iter().copied().filter(|x| *x != a && *x != b).collect();
            (
                Active::Rules,
                format!("node {a} x node {b}, {middle:?} sees both"),
            )
        }
        FaultKind::OneWay => {
            let from = node;
            let to = step.other(n);
            cluster.net.set_rules(
                to,
                &[format!("ip saddr {} drop", cluster.net.node_ip(from))],
                &[],
            )?;
            (Active::Rules, format!("node {from} -> node {to} dropped"))
        }
        FaultKind::Loss => {
            for x in &all {
                let others: Vec<usize> = all.iter().copied().filter(|y| y != x).collect();
                cluster.net.set_rules(
                    *x,
                    &[format!(
                        "ip saddr {} numgen random mod 100 < {} drop",
                        ips(&cluster.net, &others),
                        step.loss_pct
                    )],
                    &[],
                )?;
            }
            (
                Active::Rules,
                format!("{}% loss between all nodes", step.loss_pct),
            )
        }
        FaultKind::Slow => {
            let others: Vec<usize> = all.iter().copied().filter(|x| *x != node).collect();
            let kbit = step.slow_kbit();
            cluster
                .net
                .slow_links(node, &others, kbit, Duration::from_secs(2))?;
            (
                Active::Slowed(node),
                format!("node {node} <-> {others:?} at {kbit} kbit/s (queue up to 2 s)"),
            )
        }
        FaultKind::DiskFull | FaultKind::DiskFullController => {
            let node = if step.kind == FaultKind::DiskFullController {
                load::controller(env).await.unwrap_or(node)
            } else {
                node
            };
            let bytes = cluster.fill_disk(node)?;
            (
                Active::Disk(node),
                format!("disk of node {node} full (+{} MiB)", bytes >> 20),
            )
        }
    })
}

fn heal(cluster: &mut Cluster, active: &Active) -> Result<()> {
    match active {
        Active::Killed(n) => tokio::task::block_in_place(|| cluster.restart(*n)),
        Active::Paused(n) => cluster.resume(*n),
        Active::Rules => cluster.net.clear_rules(),
        Active::Slowed(n) => cluster.net.clear_slow(*n),
        Active::Disk(n) => cluster.free_disk(*n),
    }
}

/// Wait until every node reports a leader and a full ISR for every partition, and keeps doing
/// so for [`STABLE`]; returns the seconds until that state was first seen.
async fn wait_converged(
    env: &Env,
    cluster: &mut Cluster,
    exited: &mut Vec<String>,
    bound: Duration,
) -> std::result::Result<f64, String> {
    const STABLE: Duration = Duration::from_secs(1);
    let t = Instant::now();
    let mut since: Option<Instant> = None;
    let mut last = String::new();
    while t.elapsed() < bound {
        // A supervisor's part: a node that exited on its own (a controller whose Raft core
        // stopped exits to be restarted) is started again whenever it happens.
        for (n, status) in cluster.exited() {
            exited.push(format!("node {n} exited ({status})"));
            since = None;
            if let Err(e) = tokio::task::block_in_place(|| cluster.restart(n)) {
                last = format!("restarting node {n}, which exited: {e:#}");
            }
        }
        match load::converged(env, &env.topic, 3).await {
            Ok(()) => {
                let s = *since.get_or_insert_with(Instant::now);
                if s.elapsed() >= STABLE {
                    return Ok((s - t).as_secs_f64());
                }
            }
            Err(why) => {
                since = None;
                last = why;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// Run one round. Needs a multi-threaded tokio runtime (node restarts block in place).
pub async fn run_round(cfg: &RoundConfig) -> Result<Report> {
    let t0 = Instant::now();
    let net = tokio::task::block_in_place(|| Net::setup(3, cfg.netns));
    let mode = net.mode;
    let fallback_reason = net.fallback_reason.clone();
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let disk_mb = if net.can_mount { cfg.disk_mb } else { 0 };
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(net, &cfg.bin, &cfg.out_dir, disk_mb, ""))?;
    let mut skipped = Vec::new();
    let kinds: Vec<FaultKind> = cfg
        .kinds
        .iter()
        .copied()
        .filter(|k| {
            let ok = match k {
                k if k.needs_netns() => mode == Mode::Netns,
                k if k.needs_disk() => cluster.can_fill_disk(),
                _ => true,
            };
            if !ok {
                skipped.push(*k);
            }
            ok
        })
        .collect();
    let history = History::new(t0);
    let stop = Arc::new(AtomicBool::new(false));
    let env = Env {
        history: history.clone(),
        nodes: cluster.nodes.iter().map(|n| n.kafka_addr()).collect(),
        topic: "nemesis".into(),
        partitions: cfg.partitions,
        group: "nemesis-group".into(),
        stop: stop.clone(),
        run_tag: format!("nemesis-{}", cfg.seed),
    };
    load::create_main_topic(&env, Duration::from_secs(60)).await?;
    let mut notes = Vec::new();
    let txn_producers = if cfg.txn_producers == 0 {
        0
    } else if txn_load::supported(&env).await {
        load::create_topic_retrying(&env, &txn_load::txn_topic(&env), Duration::from_secs(60))
            .await?;
        cfg.txn_producers
    } else {
        notes.push("the cluster does not serve EndTxn: no transactional producers".to_string());
        0
    };
    let mut late_exits = Vec::new();
    if let Err(why) =
        wait_converged(&env, &mut cluster, &mut late_exits, Duration::from_secs(60)).await
    {
        anyhow::bail!("the new cluster did not converge: {why}");
    }
    let mut tasks = Vec::new();
    for i in 0..cfg.producers {
        tasks.push(tokio::spawn(load::producer(
            env.clone(),
            i,
            cfg.batch,
            cfg.produce_pause,
            cfg.seed ^ (0x100 + i as u64),
        )));
    }
    for i in 0..txn_producers {
        tasks.push(tokio::spawn(txn_load::txn_producer(
            env.clone(),
            i,
            cfg.seed ^ (0x400 + i as u64),
        )));
    }
    for i in 0..cfg.consumers {
        tasks.push(tokio::spawn(load::consumer(
            env.clone(),
            i,
            cfg.consumers,
            cfg.seed ^ (0x200 + i as u64),
        )));
    }
    tasks.push(tokio::spawn(load::admin(env.clone(), cfg.seed ^ 0x300)));
    tasks.push(tokio::spawn(load::sampler(
        env.clone(),
        Duration::from_millis(500),
    )));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut anomalies = Vec::new();
    let mut faults = Vec::new();
    let mut outages = Vec::new();
    let faults_start = Instant::now();
    for step in Schedule::new(cfg.seed, &kinds, cfg.hold) {
        if faults_start.elapsed() >= cfg.duration
            || (cfg.max_faults > 0 && faults.len() >= cfg.max_faults)
        {
            break;
        }
        let start = history.now();
        let (active, what) = apply(&mut cluster, &env, &step)
            .await
            .with_context(|| format!("applying {:?}", step.kind))?;
        eprintln!(
            "fjord-nemesis: {:>6.1}s fault {}: {what}",
            start,
            step.kind.name()
        );
        tokio::time::sleep(step.hold).await;
        heal(&mut cluster, &active).with_context(|| format!("healing {what}"))?;
        let mut exited = Vec::new();
        for (n, status) in cluster.exited() {
            exited.push(format!("node {n} exited ({status})"));
            tokio::task::block_in_place(|| cluster.restart(n))
                .with_context(|| format!("restarting node {n}, which exited"))?;
            outages.push(Outage {
                node: n,
                start,
                end: history.now(),
            });
        }
        let healed = history.now();
        if let Active::Killed(n) | Active::Paused(n) = active {
            outages.push(Outage {
                node: n,
                start,
                end: healed,
            });
        }
        let converge =
            match wait_converged(&env, &mut cluster, &mut exited, cfg.converge_bound).await {
                Ok(s) => Some(s),
                Err(why) => {
                    anomalies.push(Anomaly::new(
                        "not-converged",
                        format!(
                            "{:.0}s after healing {} ({what}): {why}",
                            cfg.converge_bound.as_secs_f64(),
                            step.kind.name()
                        ),
                    ));
                    None
                }
            };
        eprintln!(
            "fjord-nemesis: {:>6.1}s healed {}; converged {}",
            healed,
            step.kind.name(),
            converge.map_or("NOT".to_string(), |c| format!("after {c:.1}s"))
        );
        faults.push(FaultRecord {
            kind: step.kind,
            what,
            start,
            healed,
            converge,
            exited,
        });
        tokio::time::sleep(step.gap).await;
    }

    // Let the load run on a healed cluster, then stop it; every task ends once its request in
    // flight is answered or times out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let drain = Duration::from_secs(45);
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(drain, t).await.is_err() {
            abort.abort();
        }
    }
    if let Err(why) = wait_converged(&env, &mut cluster, &mut late_exits, cfg.converge_bound).await
    {
        anomalies.push(Anomaly::new(
            "not-converged",
            format!("after the last fault: {why}"),
        ));
    }
    // Nodes that exited after the last fault healed count with that fault.
    if let Some(last) = faults.last_mut() {
        last.exited.append(&mut late_exits);
    }
    let log = load::read_all(&env)
        .await
        .context("reading the topic back")?;
    let ops = history.ops();
    match load::final_committed(&env).await {
        Ok((_, committed)) => check::check_final_commits(&ops, &committed, &mut anomalies),
        Err(e) => anomalies.push(Anomaly::new("not-converged", format!("{e:#}"))),
    }
    check::check_log(&ops, &log, &mut anomalies);
    if txn_producers > 0 {
        match txn_load::read_committed(&env, Duration::from_secs(60)).await {
            Ok(txn_log) => check::check_txns(&ops, &txn_log, &mut anomalies),
            Err(e) => anomalies.push(Anomaly::new("txn-unresolved", format!("{e:#}"))),
        }
    }
    check::check_commits(&ops, &history.commit_samples(), &mut anomalies, &mut notes);
    check::check_leaders(&history.meta_samples(), &mut anomalies);
    check::check_answered(&ops, &outages, &mut anomalies);
    for (node, kind, line) in cluster.fatal_log_lines() {
        anomalies.push(Anomaly::new(kind, format!("node {node}: {line}")));
    }
    notes.extend(cluster.log_notes());

    let mut counts: BTreeMap<String, OpCounts> = BTreeMap::new();
    let mut acked = 0;
    for op in &ops {
        let c = counts.entry(op.kind.name().to_string()).or_default();
        match &op.outcome {
            Outcome::Ok { .. } => {
                c.ok += 1;
                if let crate::history::OpKind::Produce { values, .. } = &op.kind {
                    acked += values.len();
                }
            }
            Outcome::Error { .. } => c.error += 1,
            Outcome::Disconnected { .. } => c.disconnected += 1,
            Outcome::Timeout => c.timeout += 1,
            Outcome::Pending => c.pending += 1,
        }
    }
    let report = Report {
        seed: cfg.seed,
        mode: match mode {
            Mode::Netns => "netns".into(),
            Mode::Loopback => "loopback".into(),
        },
        fallback_reason,
        skipped_kinds: skipped,
        faults,
        ops: counts,
        acked_records: acked,
        read_records: log.values().map(|v| v.len()).sum(),
        anomalies,
        notes,
        seconds: t0.elapsed().as_secs_f64(),
    };
    std::fs::write(
        cfg.out_dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(cfg.out_dir.join("report.txt"), report.text())?;
    let dir = &cfg.out_dir;
    write_jsonl(&dir.join("history.jsonl"), &ops)?;
    write_jsonl(&dir.join("metadata-samples.jsonl"), &history.meta_samples())?;
    write_jsonl(&dir.join("commit-samples.jsonl"), &history.commit_samples())?;
    drop(cluster);
    Ok(report)
}

/// One JSON object a line.
fn write_jsonl<T: Serialize>(path: &std::path::Path, items: &[T]) -> Result<()> {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::to_string(item)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
