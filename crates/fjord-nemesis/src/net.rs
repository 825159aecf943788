//! The network of a run: one network namespace per node, each with a veth pair to a bridge in
//! the root namespace (`10.77.X.0/24`, node N at `10.77.X.1N`, the bridge at `.1`, clients in
//! the root namespace), and nft rules inside the node namespaces for partitions and loss.
//!
//! `X` is picked per run so that parallel runs do not collide; the run owns it through the file
//! `/run/fjord-nemesis/X.pid` (created exclusively). Everything a run creates is removed by
//! [`Net`]'s `Drop` (also on panic); leftovers of a run whose owner process is gone (killed
//! before its `Drop` ran) are removed at the start of the next run.
//!
//! Without root, or when `ip netns add` fails, [`Net::setup`] falls back to loopback addresses
//! (`127.77.X.1N`): the nodes still get their own addresses, but no network faults are possible.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Name prefix of every namespace, bridge and veth a run creates.
const PREFIX: &str = "fjnm";
/// Owner files of the run numbers in use.
const OWNERS: &str = "/run/fjord-nemesis";
/// Data directories of every run live under this root (`ROOT/X/`).
pub const DATA_ROOT: &str = "/tmp/fjord-nemesis";
/// The nft table the faults write into (one per node namespace).
const TABLE: &str = "fjord_nemesis";

/// How the nodes are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per node: every fault kind is possible.
    Netns,
    /// Loopback addresses in the root namespace: no network faults.
    Loopback,
}

/// The network of one run; tears itself down on drop.
pub struct Net {
    pub mode: Mode,
    /// The per-run number `X` (1..=250).
    pub run: u8,
    pub nodes: usize,
    /// Whether tmpfs mounts (disk-full faults) are possible: root.
    pub can_mount: bool,
    /// Why the run fell back to loopback, when it did.
    pub fallback_reason: Option<String>,
    owner_file: Option<PathBuf>,
    torn_down: bool,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Run a command, failing with its stderr when it exits non-zero.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command, ignoring failure (teardown of things that may be gone already).
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn ns_name(run: u8, node: usize) -> String {
    format!("{PREFIX}{run}-{node}")
}

fn bridge_name(run: u8) -> String {
    format!("{PREFIX}{run}br")
}

fn veth_host(run: u8, node: usize) -> String {
    format!("{PREFIX}{run}h{node}")
}

fn veth_peer(run: u8, node: usize) -> String {
    format!("{PREFIX}{run}n{node}")
}

/// The data root of run `X` (`DATA_ROOT/X` as root, `DATA_ROOT-<uid>/X` otherwise, where
/// `DATA_ROOT` may belong to root).
pub fn run_dir(run: u8) -> PathBuf {
    let uid = rustix::process::geteuid();
    let root = if uid.is_root() {
        PathBuf::from(DATA_ROOT)
    } else {
        PathBuf::from(format!("{DATA_ROOT}-{}", uid.as_raw()))
    };
    root.join(run.to_string())
}

/// Remove everything run `run` may have left: mounts under its data dir, its namespaces
/// (their veth ends go with them), the bridge and host veths, the data dir.
fn teardown_run(run: u8, nodes: usize) {
    let dir = run_dir(run);
    kill_servers_of(&dir);
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        let prefix = format!("{}/", dir.display());
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            sh_quiet(&["umount", "-l", p]);
        }
    }
    for n in 1..=nodes.max(9) {
        let ns = ns_name(run, n);
        if Path::new("/run/netns").join(&ns).exists() {
            sh_quiet(&["ip", "netns", "del", &ns]);
        }
        if Path::new("/sys/class/net").join(veth_host(run, n)).exists() {
            sh_quiet(&["ip", "link", "del", &veth_host(run, n)]);
        }
    }
    if Path::new("/sys/class/net").join(bridge_name(run)).exists() {
        sh_quiet(&["ip", "link", "del", &bridge_name(run)]);
    }
    let _ = fs::remove_dir_all(&dir);
}

/// SIGKILL every process whose command line names a file under `dir` (the node servers of a
/// run whose harness was killed before it could stop them: their config is `dir/nN/node.toml`).
fn kill_servers_of(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for e in procs.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let named = cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).starts_with(&needle));
        if named && pid != std::process::id() as i32 {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Runs whose leftovers exist (namespaces, bridges or data dirs with our prefix).
fn leftover_runs() -> BTreeSet<u8> {
    let mut runs = BTreeSet::new();
    let mut add = |name: &str| {
        if let Some(rest) = name.strip_prefix(PREFIX) {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(r) = digits.parse::<u8>() {
                runs.insert(r);
            }
        }
    };
    for dir in ["/run/netns", "/sys/class/net"] {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                add(&e.file_name().to_string_lossy());
            }
        }
    }
    if let Ok(rd) = fs::read_dir(DATA_ROOT) {
        for e in rd.flatten() {
            if let Ok(r) = e.file_name().to_string_lossy().parse::<u8>() {
                runs.insert(r);
            }
        }
    }
    runs
}

/// The owner pid of run `run`, when its owner file exists.
fn owner_of(run: u8) -> Option<i32> {
    fs::read_to_string(Path::new(OWNERS).join(format!("{run}.pid")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Remove the leftovers of every run whose owner is gone.
pub fn remove_stale_runs() {
    for run in leftover_runs() {
        match owner_of(run) {
            Some(pid) if pid_alive(pid) => {}
            _ => {
                eprintln!("fjord-nemesis: removing leftovers of an earlier run {run}");
                teardown_run(run, 9);
                let _ = fs::remove_file(Path::new(OWNERS).join(format!("{run}.pid")));
            }
        }
    }
}

/// Claim a free run number: the owner file is created exclusively, so two runs starting at
/// once get different numbers.
fn claim_run() -> Result<(u8, PathBuf)> {
    fs::create_dir_all(OWNERS).context("creating /run/fjord-nemesis")?;
    let start = (std::process::id() % 250) as u8;
    for k in 0..250u16 {
        let run = ((start as u16 + k) % 250 + 1) as u8;
        let path = Path::new(OWNERS).join(format!("{run}.pid"));
        if let Some(pid) = owner_of(run) {
            if pid_alive(pid) {
                continue;
            }
            teardown_run(run, 9);
            let _ = fs::remove_file(&path);
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                writeln!(f, "{}", std::process::id())?;
                return Ok((run, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context("creating a run owner file"),
        }
    }
    bail!("no free run number under {OWNERS}")
}

/// A run number for the loopback fallback without root: from the pid (no owner files).
fn loopback_run() -> u8 {
    (std::process::id() % 250 + 1) as u8
}

impl Net {
    /// Set up `nodes` namespaces (when `want_netns` and possible), else the loopback fallback.
    pub fn setup(nodes: usize, want_netns: bool) -> Net {
        let root = is_root();
        if root {
            remove_stale_runs();
        }
        let claimed = if root { claim_run().ok() } else { None };
        let (run, owner_file) = match claimed {
            Some((r, p)) => (r, Some(p)),
            None => (loopback_run(), None),
        };
        let mut net = Net {
            mode: Mode::Loopback,
            run,
            nodes,
            can_mount: root,
            fallback_reason: None,
            owner_file,
            torn_down: false,
        };
        if !want_netns {
            net.fallback_reason = Some("network namespaces disabled (--no-netns)".into());
        } else if !root {
            net.fallback_reason = Some("not root: no network namespaces".into());
        } else if let Err(e) = net.create_namespaces() {
            net.fallback_reason = Some(format!("network namespaces unavailable: {e:#}"));
            teardown_run(run, nodes);
            fs::create_dir_all(run_dir(run)).ok();
        } else {
            net.mode = Mode::Netns;
        }
        net
    }

    fn create_namespaces(&mut self) -> Result<()> {
        let run = self.run;
        let br = bridge_name(run);
        let subnet = format!("10.77.{run}");
        sh(&["ip", "link", "add", &br, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{subnet}.1/24"), "dev", &br])?;
        sh(&["ip", "link", "set", &br, "up"])?;
        for n in 1..=self.nodes {
            let ns = ns_name(run, n);
            let (host, peer) = (veth_host(run, n), veth_peer(run, n));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
            ])?;
            sh(&["ip", "link", "set", &peer, "netns", &ns])?;
            sh(&["ip", "link", "set", &host, "master", &br])?;
            sh(&["ip", "link", "set", &host, "up"])?;
            let ip = format!("{subnet}.{}/24", 10 + n);
            sh(&["ip", "-n", &ns, "addr", "add", &ip, "dev", &peer])?;
            sh(&["ip", "-n", &ns, "link", "set", &peer, "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("{subnet}.1"),
            ])?;
        }
        // nft must work inside a namespace, or partitions are impossible.
        self.nft(
            1,
            &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
        )
        .context("nft in a node namespace (is the nftables package installed?)")?;
        Ok(())
    }

    /// The address of node `n` (from 1).
    pub fn node_ip(&self, n: usize) -> String {
        match self.mode {
            Mode::Netns => format!("10.77.{}.{}", self.run, 10 + n),
            Mode::Loopback => format!("127.77.{}.{}", self.run, 10 + n),
        }
    }

    /// The command prefix that runs a program in node `n`'s namespace (empty on loopback).
    pub fn exec_prefix(&self, n: usize) -> Vec<String> {
        match self.mode {
            Mode::Netns => vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                ns_name(self.run, n),
            ],
            Mode::Loopback => Vec::new(),
        }
    }

    /// Where the data of node `n` lives.
    pub fn node_dir(&self, n: usize) -> PathBuf {
        run_dir(self.run).join(format!("n{n}"))
    }

    fn nft(&self, n: usize, script: &str) -> Result<()> {
        let ns = ns_name(self.run, n);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nft")?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {ns} failed: {}\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Replace node `n`'s fault rules with `input` and `output` rule lines (nft syntax, e.g.
    /// `ip saddr 10.77.3.12 drop`); empty lists remove the table.
    pub fn set_rules(&self, n: usize, input: &[String], output: &[String]) -> Result<()> {
        if self.mode != Mode::Netns {
            bail!("network faults need network namespaces");
        }
        let mut script = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
        if !input.is_empty() || !output.is_empty() {
            script.push_str(&format!(
                "table inet {TABLE} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n{}\n }}\n chain output {{\n  type filter hook output priority 0; policy accept;\n{}\n }}\n}}\n",
                input.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"),
                output.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"),
            ));
        }
        self.nft(n, &script)
    }

    /// Remove the fault rules of every node.
    pub fn clear_rules(&self) -> Result<()> {
        if self.mode != Mode::Netns {
            return Ok(());
        }
        for n in 1..=self.nodes {
            self.set_rules(n, &[], &[])?;
        }
        Ok(())
    }

    /// Slow node `n`'s links to `others` down to `kbit` kbit/s both ways, with a queue of
    /// about `max_delay` at that rate (tail drops past it): an HTB class for packets to the
    /// others on the node's veth and one for packets from them on its host-side veth; every
    /// other packet (clients) passes at full speed.
    pub fn slow_links(
        &self,
        n: usize,
        others: &[usize],
        kbit: u32,
        max_delay: Duration,
    ) -> Result<()> {
        if self.mode != Mode::Netns {
            bail!("network faults need network namespaces");
        }
        let packets = (u64::from(kbit) * 1000 / 8 * max_delay.as_millis() as u64 / 1000 / 1500)
            .max(8)
            .to_string();
        let rate = format!("{kbit}kbit");
        let ns = ns_name(self.run, n);
        let ends = [
            (Some(ns.as_str()), veth_peer(self.run, n), "dst"),
            (None, veth_host(self.run, n), "src"),
        ];
        for (ns, dev, dir) in &ends {
            let tc = |args: &[&str]| -> Result<String> {
                let mut cmd: Vec<&str> = vec!["tc"];
                if let Some(ns) = ns {
                    cmd.extend(["-n", ns]);
                }
                cmd.extend(args);
                sh(&cmd)
            };
            tc(&[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20",
            ])?;
            tc(&[
                "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate",
                &rate, "ceil", &rate,
            ])?;
            tc(&[
                "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate",
                "10gbit",
            ])?;
            tc(&[
                "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo", "limit",
                &packets,
            ])?;
            for o in others {
                let ip = format!("{}/32", self.node_ip(*o));
                tc(&[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "u32", "match",
                    "ip", dir, &ip, "flowid", "1:10",
                ])?;
            }
        }
        Ok(())
    }

    /// Undo [`Net::slow_links`] on node `n`.
    pub fn clear_slow(&self, n: usize) -> Result<()> {
        if self.mode != Mode::Netns {
            return Ok(());
        }
        let ns = ns_name(self.run, n);
        sh_quiet(&[
            "tc",
            "-n",
            &ns,
            "qdisc",
            "del",
            "dev",
            &veth_peer(self.run, n),
            "root",
        ]);
        sh_quiet(&["tc", "qdisc", "del", "dev", &veth_host(self.run, n), "root"]);
        Ok(())
    }

    /// Remove everything this run created (idempotent; also run by `Drop`).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if self.can_mount || self.mode == Mode::Netns {
            teardown_run(self.run, self.nodes);
        } else {
            let _ = fs::remove_dir_all(run_dir(self.run));
        }
        if let Some(f) = self.owner_file.take() {
            let _ = fs::remove_file(f);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}
