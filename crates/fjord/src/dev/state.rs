//! `DIR/cluster.json` (which processes run the cluster) and the node processes themselves: a
//! pid from the file is only signalled while `/proc/PID/cmdline` is still `fjord ... server
//! --config DIR/nodeN.toml`, so a pid the kernel reused for another process is never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How long stopping nodes may take before they get SIGKILL: a controlled shutdown waits up to
/// 10 s for the controller.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The running cluster, as written to `DIR/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The cluster's directory (absolute).
    pub dir: PathBuf,
    /// The `fjord dev cluster` process watching the nodes; None when it was started with
    /// `--detach`.
    pub supervisor_pid: Option<u32>,
    /// Every node's Kafka address, comma-separated.
    pub bootstrap: String,
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub node_id: u32,
    pub pid: u32,
    pub rack: Option<String>,
    pub kafka: Option<String>,
    pub controller: Option<String>,
    pub admin: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// The state file of `dir`, None if there is none.
pub async fn read(dir: &Path) -> anyhow::Result<Option<State>> {
    let p = path(dir);
    let text = match tokio::fs::read_to_string(&p).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let state = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a dev cluster state file", p.display()))?;
    Ok(Some(state))
}

/// Write the state file (a temporary file renamed over it, so a reader never sees half).
pub async fn write(dir: &Path, state: &State) -> anyhow::Result<()> {
    let p = path(dir);
    let tmp = dir.join("cluster.json.tmp");
    let text = serde_json::to_string_pretty(state)?;
    tokio::fs::write(&tmp, text + "\n")
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &p)
        .await
        .with_context(|| format!("writing {}", p.display()))
}

pub async fn remove(dir: &Path) -> anyhow::Result<()> {
    let p = path(dir);
    match tokio::fs::remove_file(&p).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `pid` is (still) the `fjord server` started with `config`: a live process (not a
/// zombie) whose command line mentions fjord and has `config` as an argument.
pub async fn is_node_process(pid: u32, config: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(raw) = tokio::fs::read(format!("/proc/{pid}/cmdline")).await else {
        return false;
    };
    // A zombie's command line is empty.
    let mentions_fjord = raw.windows(5).any(|w| w == b"fjord");
    let config = config.as_os_str().as_bytes();
    mentions_fjord && raw.split(|b| *b == 0).any(|arg| arg == config)
}

pub fn terminate(pid: u32) -> std::io::Result<()> {
    send(pid, rustix::process::Signal::TERM)
}

pub fn kill(pid: u32) -> std::io::Result<()> {
    send(pid, rustix::process::Signal::KILL)
}

fn send(pid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("invalid pid {pid}")))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// How a node of [`stop_nodes`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running (or its pid now belongs to another process).
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It was still running after [`SHUTDOWN_TIMEOUT`] and got SIGKILL.
    Killed,
}

/// SIGTERM every node of `nodes` that is still running, wait until they are gone (SIGKILL
/// after `timeout`), and say how each ended. These are not our children: liveness is polled
/// in `/proc`.
pub async fn stop_nodes(
    nodes: &[NodeState],
    timeout: Duration,
) -> Vec<(u32, u32, std::io::Result<Stopped>)> {
    let mut out = Vec::new();
    let mut waiting = Vec::new();
    for n in nodes {
        if !is_node_process(n.pid, &n.config).await {
            out.push((n.node_id, n.pid, Ok(Stopped::NotRunning)));
            continue;
        }
        match terminate(n.pid) {
            Ok(()) => waiting.push(n),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {
                out.push((n.node_id, n.pid, Ok(Stopped::NotRunning)))
            }
            Err(e) => out.push((n.node_id, n.pid, Err(e))),
        }
    }
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for n in waiting {
            if is_node_process(n.pid, &n.config).await {
                still.push(n);
            } else {
                out.push((n.node_id, n.pid, Ok(Stopped::Terminated)));
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for n in waiting.drain(..) {
                let r = if is_node_process(n.pid, &n.config).await {
                    kill(n.pid).map(|()| Stopped::Killed)
                } else {
                    Ok(Stopped::Terminated)
                };
                if r.is_ok() {
                    // SIGKILL is not instant either (the kernel frees the memory first).
                    let gone = Instant::now() + Duration::from_secs(5);
                    while is_node_process(n.pid, &n.config).await && Instant::now() < gone {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                out.push((n.node_id, n.pid, r));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out.sort_by_key(|(id, _, _)| *id);
    out
}
