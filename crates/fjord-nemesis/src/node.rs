//! The `fjord server` processes of a run, each in its node's namespace (see [`crate::net`]),
//! with its data dir on a small tmpfs when the run may mount (root), so a disk can be filled.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process, Pid, Signal};

use crate::net::{sh, Mode, Net};

/// Kafka, controller and admin HTTP ports of every node (each node has its own address).
pub const KAFKA_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
pub const ADMIN_PORT: u16 = 9094;
/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node: its config, data dir and (while running) its process.
pub struct Node {
    pub id: usize,
    pub ip: String,
    dir: PathBuf,
    log_dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    pub paused: bool,
    mounted: bool,
}

impl Node {
    pub fn kafka_addr(&self) -> String {
        format!("{}:{KAFKA_PORT}", self.ip)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn fill_path(&self) -> PathBuf {
        self.data_dir().join("nemesis-fill.bin")
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid().context("node is not running")?;
        let pid = Pid::from_raw(pid).context("bad pid")?;
        kill_process(pid, sig).with_context(|| format!("signal {sig:?} to node {}", self.id))?;
        Ok(())
    }

    /// The log of every start, concatenated.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            if let Ok(s) = fs::read(self.log_dir.join(format!("node{}-{n}.log", self.id))) {
                out.push_str(&format!("=== node {} start {n} ===\n", self.id));
                out.push_str(&String::from_utf8_lossy(&s));
            }
        }
        out
    }
}

/// The line `fjord server` logs when its controller's Raft core stopped and it exits to be
/// restarted.
const SERVER_STOPS_FOR_RESTART: &str =
    "the controller stopped on its own; stopping to be restarted";

/// The nodes of a run and the network they live in. Dropping it kills every node (by pid)
/// and then tears the network down.
pub struct Cluster {
    pub nodes: Vec<Node>,
    bin: PathBuf,
    // Declared last: dropped after the nodes are killed (see `Drop`).
    pub net: Net,
}

fn node_config(net: &Net, id: usize, data: &Path, extra: &str) -> String {
    let voters = (1..=net.nodes)
        .map(|n| format!("{n}@{}:{CONTROLLER_PORT}", net.node_ip(n)))
        .collect::<Vec<_>>()
        .join(",");
    let ip = net.node_ip(id);
    format!(
        r#"node.id = {id}
process.roles = "broker,controller"
broker.rack = "{rack}"
listeners = "PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}"
controller.quorum.voters = "{voters}"
admin.listener = "{ip}:{ADMIN_PORT}"
log.dirs = {data:?}
broker.heartbeat.interval.ms = 200
broker.session.timeout.ms = 2000
replica.lag.time.max.ms = 4000
group.initial.rebalance.delay.ms = 0
offsets.topic.num.partitions = 3
default.replication.factor = 3
auto.create.topics.enable = false
log.segment.bytes = 8388608
{extra}
"#,
        rack = (b'a' + (id as u8 - 1)) as char,
        data = data.display().to_string(),
    )
}

impl Cluster {
    /// Create the node dirs (tmpfs of `disk_mb` MiB each when possible) and start every node;
    /// returns once each printed its ready line. Server logs go to `log_dir`.
    pub fn start(
        net: Net,
        bin: &Path,
        log_dir: &Path,
        disk_mb: u64,
        extra: &str,
    ) -> Result<Cluster> {
        fs::create_dir_all(log_dir)?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            bin: bin.to_path_buf(),
            net,
        };
        for id in 1..=cluster.net.nodes {
            let dir = cluster.net.node_dir(id);
            let data = dir.join("data");
            fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
            let mut mounted = false;
            if cluster.net.can_mount && disk_mb > 0 {
                sh(&[
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={disk_mb}m"),
                    "fjord-nemesis",
                    &data.display().to_string(),
                ])?;
                mounted = true;
            }
            fs::write(
                dir.join("node.toml"),
                node_config(&cluster.net, id, &data, extra),
            )?;
            cluster.nodes.push(Node {
                id,
                ip: cluster.net.node_ip(id),
                dir,
                log_dir: log_dir.to_path_buf(),
                child: None,
                starts: 0,
                paused: false,
                mounted,
            });
        }
        let pending: Vec<_> = (1..=cluster.nodes.len())
            .map(|id| cluster.spawn(id))
            .collect::<Result<_>>()?;
        for (id, rx) in (1..).zip(pending) {
            cluster.wait_ready(id, rx)?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id - 1]
    }

    fn node_mut(&mut self, id: usize) -> &mut Node {
        &mut self.nodes[id - 1]
    }

    /// Whether disk-full faults are possible (the data dirs are small tmpfs mounts).
    pub fn can_fill_disk(&self) -> bool {
        self.nodes.iter().all(|n| n.mounted)
    }

    pub fn mode(&self) -> Mode {
        self.net.mode
    }

    /// `host:port` of every node's Kafka listener, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka_addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, id: usize) -> Result<mpsc::Receiver<String>> {
        let prefix = self.net.exec_prefix(id);
        let bin = self.bin.clone();
        let node = self.node_mut(id);
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        node.starts += 1;
        let log = File::create(node.log_dir.join(format!("node{id}-{}.log", node.starts)))?;
        let mut cmd = if prefix.is_empty() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(&prefix[0]);
            c.args(&prefix[1..]).arg(&bin);
            c
        };
        cmd.arg("server")
            .arg("--config")
            .arg(node.dir.join("node.toml"))
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // `ip netns exec` execs the program, so the child's pid is the server's.
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        node.child = Some(child);
        node.paused = false;
        Ok(rx)
    }

    fn wait_ready(&mut self, id: usize, rx: mpsc::Receiver<String>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("fjord ready ") => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    let tail: Vec<String> = self
                        .node(id)
                        .logs()
                        .lines()
                        .rev()
                        .take(30)
                        .map(String::from)
                        .collect();
                    let tail: Vec<String> = tail.into_iter().rev().collect();
                    bail!(
                        "node {id} printed no ready line ({e}); log tail:\n{}",
                        tail.join("\n")
                    );
                }
            }
        }
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: usize) -> Result<()> {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = kill_process(
                Pid::from_raw(child.id() as i32).context("pid")?,
                Signal::KILL,
            );
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// Nodes whose process ended on its own (not by [`Cluster::kill`]): id and exit status.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((n.id, status.to_string()));
                    n.child = None;
                    n.paused = false;
                }
            }
        }
        out
    }

    /// Start node `id` again on its data and wait for its ready line.
    pub fn restart(&mut self, id: usize) -> Result<()> {
        let rx = self.spawn(id)?;
        self.wait_ready(id, rx)
    }

    pub fn pause(&mut self, id: usize) -> Result<()> {
        self.node(id).signal(Signal::STOP)?;
        self.node_mut(id).paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: usize) -> Result<()> {
        self.node(id).signal(Signal::CONT)?;
        self.node_mut(id).paused = false;
        Ok(())
    }

    /// Fill node `id`'s data disk with a file until the write fails (ENOSPC); returns the
    /// bytes written.
    pub fn fill_disk(&self, id: usize) -> Result<u64> {
        let node = self.node(id);
        if !node.mounted {
            bail!("node {id}'s data dir is not a tmpfs mount");
        }
        let mut f = File::create(node.fill_path())?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        Ok(written)
    }

    pub fn free_disk(&self, id: usize) -> Result<()> {
        let p = self.node(id).fill_path();
        if p.exists() {
            fs::remove_file(p)?;
        }
        Ok(())
    }

    /// What the nodes' logs show went fatally wrong (a Raft core that quit counts only if its
    /// node did not then stop to be restarted): each node's first panic (`panicked at`
    /// and the message on the next line) and each time a node's metadata Raft core quit on
    /// an error (it does not come back without a restart). (node, kind, line) with kind
    /// `raft-reversion-panic` (openraft's "follower log reversion" assertion, openraft issue
    /// 1500: a delayed heartbeat conflict), `panic`, or `raft-stopped`.
    pub fn fatal_log_lines(&self) -> Vec<(usize, &'static str, String)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let logs = n.logs();
            let lines: Vec<&str> = logs.lines().collect();
            if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
                let message = lines.get(i + 1).copied().unwrap_or("");
                let kind = if message.contains("follower log reversion is not allowed") {
                    "raft-reversion-panic"
                } else {
                    "panic"
                };
                out.push((
                    n.id,
                    kind,
                    format!("{} {}", lines[i].trim(), message.trim()),
                ));
            }
            // A core that quit is handled when the node then stopped to be restarted (what
            // `fjord server` does, as Kafka halts a node whose metadata log fails); one that
            // quit and left the node running with frozen metadata is the anomaly.
            for (i, l) in lines.iter().enumerate() {
                if !l.contains("quit RaftCore::main on error") {
                    continue;
                }
                let stopped = lines[i..]
                    .iter()
                    .any(|l| l.contains(SERVER_STOPS_FOR_RESTART));
                if !stopped {
                    out.push((n.id, "raft-stopped", l.to_string()));
                }
            }
        }
        out
    }

    /// Notes from the nodes' logs that are not anomalies: how often a leader saw a follower's
    /// log go back (openraft's `loosen-follower-log-revert` warning). With fsynced Raft logs
    /// that is openraft issue 1500's late conflict answer to a heartbeat, which the leader
    /// now survives by searching for the match again; before the feature it was the
    /// `raft-reversion-panic` of seed 410.
    pub fn log_notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let reverted = n
                .logs()
                .lines()
                .filter(|l| l.contains("follower log is reverted"))
                .count();
            if reverted > 0 {
                out.push(format!(
                    "[raft-log-reverted] node {}: a follower's log seen going back {reverted} time(s); replication searched again",
                    n.id
                ));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                if let Some(pid) = Pid::from_raw(child.id() as i32) {
                    let _ = kill_process(pid, Signal::CONT);
                    let _ = kill_process(pid, Signal::KILL);
                }
                let _ = child.wait();
            }
        }
        // Then `net` drops: mounts, namespaces, bridge and data dirs go.
    }
}
