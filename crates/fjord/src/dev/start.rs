//! Starting a dev cluster: spawn the nodes, wait for every ready line, then either exit
//! (`--detach`) or watch the nodes until Ctrl-C/SIGTERM and stop them.

use std::io::Write;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::layout::NodeSpec;
use super::state::{self, NodeState, State};
use super::supervise::{shutdown, supervise, Signals};
use super::StartArgs;

/// Settings the node configs decide: a `FJORD_*` variable for one of these in the caller's
/// environment would put every node on the same address or data directory.
const LAYOUT_ENV: &[&str] = &[
    "FJORD_NODE_ID",
    "FJORD_PROCESS_ROLES",
    "FJORD_BROKER_RACK",
    "FJORD_LISTENERS",
    "FJORD_ADVERTISED_LISTENERS",
    "FJORD_CONTROLLER_LISTENER_NAMES",
    "FJORD_CONTROLLER_QUORUM_VOTERS",
    "FJORD_LOG_DIRS",
    "FJORD_LOG_DIR",
    "FJORD_ADMIN_LISTENER",
];

/// A node process of this run.
pub(super) struct Node {
    pub spec: NodeSpec,
    pub child: Child,
    pub pid: u32,
    /// Kafka and admin address from its ready line.
    pub ready: Option<(String, String)>,
    pub exited: Option<ExitStatus>,
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shown_dir = args.dir.dir.clone();
    tokio::fs::create_dir_all(&shown_dir)
        .await
        .with_context(|| format!("creating {}", shown_dir.display()))?;
    let dir = tokio::fs::canonicalize(&shown_dir)
        .await
        .with_context(|| format!("{}", shown_dir.display()))?;
    if let Some(old) = state::read(&dir).await? {
        let mut live = Vec::new();
        for n in &old.nodes {
            if state::is_node_process(n.pid, &n.config).await {
                live.push(format!("node {} pid {}", n.node_id, n.pid));
            }
        }
        if !live.is_empty() {
            anyhow::bail!(
                "a cluster is already running from {} ({}); stop it first with `fjord dev cluster stop --dir {}`",
                shown_dir.display(),
                live.join(", "),
                shown_dir.display()
            );
        }
    }
    let specs = super::layout::prepare(&dir, &args).await?;
    let mut nodes = Vec::new();
    let started = start_all(&dir, &args, specs, &mut nodes, &mut signals).await;
    if let Err(e) = started {
        if !nodes.is_empty() {
            note!("stopping the other nodes");
            shutdown(&mut nodes, &mut signals).await;
        }
        state::remove(&dir).await?;
        return Err(e);
    }

    let bootstrap = nodes
        .iter()
        .filter_map(|n| n.ready.as_ref().map(|(k, _)| k.as_str()))
        .filter(|k| *k != "-")
        .collect::<Vec<_>>()
        .join(",");
    let admin = nodes[0].ready.as_ref().map_or("-", |(_, a)| a.as_str());
    let ready_line = format!(
        "fjord dev cluster ready nodes={} bootstrap={bootstrap} admin={admin} dir={}",
        nodes.len(),
        shown_dir.display()
    );
    let announced = async {
        state::write(&dir, &node_state(&dir, &args, &nodes, &bootstrap)).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready_line}")?;
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = announced {
        shutdown(&mut nodes, &mut signals).await;
        state::remove(&dir).await?;
        return Err(e.context("announcing the ready cluster"));
    }
    print_table(&nodes);
    if args.detach {
        note!(
            "the nodes keep running; `fjord dev cluster status --dir {0}` shows them, `fjord dev cluster stop --dir {0}` stops them",
            shown_dir.display()
        );
        return Ok(());
    }
    note!(
        "Ctrl-C stops the cluster; node logs are in {}",
        dir.display()
    );
    let outcome = supervise(&mut nodes, &mut signals).await;
    state::remove(&dir).await?;
    outcome
}

/// Spawn every node and wait for their ready lines; on an error the nodes started so far are
/// in `nodes` for the caller to stop.
async fn start_all(
    dir: &Path,
    args: &StartArgs,
    specs: Vec<NodeSpec>,
    nodes: &mut Vec<Node>,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the fjord executable")?;
    for spec in specs {
        note!(
            "starting node {} (rack {}) on {}...",
            spec.id,
            spec.rack.as_deref().unwrap_or("-"),
            spec.kafka
                .as_deref()
                .or(spec.controller.as_deref())
                .unwrap_or("-")
        );
        let child = spawn(&exe, &spec)
            .await
            .with_context(|| format!("node {}: starting {}", spec.id, exe.display()))?;
        let pid = child.id().unwrap_or_default();
        nodes.push(Node {
            spec,
            child,
            pid,
            ready: None,
            exited: None,
        });
    }
    // Written now so `stop` finds the nodes even if this process dies before they are ready.
    state::write(dir, &node_state(dir, args, nodes, "")).await?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes.iter_mut().filter(|n| n.ready.is_none()) {
            if let Some(status) = n.child.try_wait()? {
                n.exited = Some(status);
                anyhow::bail!(
                    "node {} exited ({status}) before it was ready: {}",
                    n.spec.id,
                    log_tail(&n.spec.log).await
                );
            }
            let out = tokio::fs::read(&n.spec.out).await.unwrap_or_default();
            if let Some(ready) = ready_line(&String::from_utf8_lossy(&out)) {
                note!(
                    "node {} ready: kafka {} admin {}",
                    n.spec.id,
                    ready.0,
                    ready.1
                );
                n.ready = Some(ready);
            }
        }
        let Some(waiting) = nodes.iter().find(|n| n.ready.is_none()) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "node {} printed no ready line within {} ms (--timeout-ms): {}",
                waiting.spec.id,
                timeout.as_millis(),
                log_tail(&waiting.spec.log).await
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            sig = signals.recv() => anyhow::bail!("{sig} before the cluster was ready"),
        }
    }
}

/// `fjord server --config DIR/nodeN.toml`, in its own process group (Ctrl-C in the terminal
/// reaches only us; we stop the nodes) with stdin closed, so it outlives us with `--detach`.
async fn spawn(exe: &Path, spec: &NodeSpec) -> anyhow::Result<Child> {
    let out = tokio::fs::File::create(&spec.out)
        .await
        .with_context(|| format!("creating {}", spec.out.display()))?;
    let mut log = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .await
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let since_epoch = fjord_protocol::clock::now_ms() / 1000;
    log.write_all(
        format!(
            "=== fjord dev cluster: node {} starting (unix time {since_epoch}) ===\n",
            spec.id
        )
        .as_bytes(),
    )
    .await?;
    log.flush().await?;
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--config")
        .arg(&spec.config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.into_std().await))
        .stderr(Stdio::from(log.into_std().await))
        .process_group(0);
    for var in LAYOUT_ENV {
        cmd.env_remove(var);
    }
    Ok(cmd.spawn()?)
}

/// The Kafka and admin address of a node's `fjord ready kafka=... admin=...` line (a whole
/// line: the file may be read while the line is being written).
fn ready_line(out: &str) -> Option<(String, String)> {
    let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
    let rest = complete
        .lines()
        .find_map(|l| l.strip_prefix("fjord ready "))?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_string)
    };
    Some((field("kafka=")?, field("admin=")?))
}

/// The last line of a node's log and where the log is, for a one-line error.
async fn log_tail(log: &Path) -> String {
    let text = tokio::fs::read(log).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("=== fjord dev cluster"));
    match last {
        Some(l) => {
            let l: String = l.chars().take(300).collect();
            format!("{l:?} (log: {})", log.display())
        }
        None => format!("nothing logged (log: {})", log.display()),
    }
}

fn node_state(dir: &Path, args: &StartArgs, nodes: &[Node], bootstrap: &str) -> State {
    State {
        dir: dir.to_path_buf(),
        supervisor_pid: (!args.detach).then(std::process::id),
        bootstrap: bootstrap.to_string(),
        nodes: nodes
            .iter()
            .map(|n| NodeState {
                node_id: n.spec.id,
                pid: n.pid,
                rack: n.spec.rack.clone(),
                kafka: match &n.ready {
                    Some((k, _)) if k != "-" => Some(k.clone()),
                    Some(_) => None,
                    None => n.spec.kafka.clone(),
                },
                controller: n.spec.controller.clone(),
                admin: n
                    .ready
                    .as_ref()
                    .map_or_else(|| n.spec.admin.clone(), |(_, a)| a.clone()),
                config: n.spec.config.clone(),
                log: n.spec.log.clone(),
            })
            .collect(),
    }
}

fn print_table(nodes: &[Node]) {
    let rows: Vec<[String; 5]> = nodes
        .iter()
        .map(|n| {
            let (kafka, admin) = n.ready.clone().unwrap_or_default();
            [
                n.spec.id.to_string(),
                n.spec.rack.clone().unwrap_or_else(|| "-".into()),
                kafka,
                admin,
                n.pid.to_string(),
            ]
        })
        .collect();
    let header = ["NODE", "RACK", "KAFKA", "ADMIN", "PID"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line(header));
    for r in &rows {
        let _ = writeln!(
            err,
            "{}",
            line([&r[0], &r[1], &r[2], &r[3], &r[4]].map(String::as_str))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_fields() {
        assert_eq!(
            ready_line("x\nfjord ready kafka=127.0.0.2:9092 admin=127.0.0.2:9644\n"),
            Some(("127.0.0.2:9092".into(), "127.0.0.2:9644".into()))
        );
        assert_eq!(
            ready_line("fjord ready kafka=- admin=127.0.0.1:1\n"),
            Some(("-".into(), "127.0.0.1:1".into()))
        );
        assert_eq!(ready_line("fjord starting\n"), None);
        assert_eq!(ready_line("fjord ready kafka=1.2.3.4:1\n"), None);
        assert_eq!(
            ready_line("fjord ready kafka=1.2.3.4:1 admin=1.2.3.4:9"),
            None
        );
    }
}
