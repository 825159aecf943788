//! `fjord dev cluster`: a local 3-node cluster from one command, in the foreground (SIGTERM
//! stops it) and detached (`stop` stops it, `status` shows it, a second start reuses the data).
//! Every port is 0 (picked per node), so these run alongside other tests.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{fjord_bin, run, send_signal, wait_timeout, wait_until, CmdResult};
use serde_json::Value;
use tempfile::TempDir;

/// How long a cluster may take to print its ready line (three nodes elect a controller).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long stopping may take: a controlled shutdown each, bounded at 30 s by the supervisor.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A dev cluster's directory, its foreground process if any, and every node pid seen: all
/// killed by pid when the test ends, however it ends.
struct Guard {
    root: Option<TempDir>,
    supervisor: Option<Child>,
    pids: Vec<u32>,
}

impl Guard {
    fn new() -> Guard {
        let root = tempfile::Builder::new()
            .prefix("fjord-it-dev-")
            .tempdir()
            .expect("create temp dir");
        Guard {
            root: Some(root),
            supervisor: None,
            pids: Vec::new(),
        }
    }

    /// The cluster directory (`--dir`); created by `fjord dev cluster`.
    fn dir(&self) -> PathBuf {
        self.root.as_ref().unwrap().path().join("cluster")
    }

    fn supervisor_log(&self) -> PathBuf {
        self.root
            .as_ref()
            .unwrap()
            .path()
            .join("dev-cluster.stderr")
    }

    /// `fjord dev cluster --nodes 3 --dir DIR` with every port picked per node, plus `extra`.
    fn start_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "dev",
            "cluster",
            "--nodes",
            "3",
            "--racks",
            "a,b,c",
            "--kafka-port",
            "0",
            "--controller-port",
            "0",
            "--admin-port",
            "0",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.dir().display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs `fjord dev cluster <args> --dir DIR` to completion.
    fn dev(&self, args: &[&str]) -> CmdResult {
        let mut cmd = Command::new(fjord_bin());
        cmd.args(["dev", "cluster"])
            .args(args)
            .arg("--dir")
            .arg(self.dir());
        run(cmd, None, CMD_TIMEOUT)
    }

    /// The node pids in `DIR/cluster.json` (remembered for the cleanup).
    fn state_pids(&mut self) -> Vec<u32> {
        let state = read_state(&self.dir());
        let pids: Vec<u32> = state["nodes"]
            .as_array()
            .expect("nodes in cluster.json")
            .iter()
            .map(|n| n["pid"].as_u64().expect("pid") as u32)
            .collect();
        self.pids.extend(&pids);
        pids
    }

    /// Everything a failed test needs: the supervisor's stderr and each node log's tail.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(s) = fs::read_to_string(self.supervisor_log()) {
            out.push_str(&format!("--- fjord dev cluster stderr ---\n{s}\n"));
        }
        for i in 1..=3 {
            if let Ok(s) = fs::read_to_string(self.dir().join(format!("node{i}.log"))) {
                let lines: Vec<&str> = s.lines().collect();
                out.push_str(&format!(
                    "--- node{i}.log (last 30 lines) ---\n{}\n",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
        }
        out
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            send_signal(child.id(), "KILL");
            let _ = child.wait();
        }
        let dir = self.dir();
        for &pid in &self.pids {
            // Only a process that is still one of this cluster's nodes (not a reused pid).
            if cmdline(pid).contains(&dir.display().to_string()) {
                send_signal(pid, "KILL");
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
            if std::env::var_os("FJORD_KEEP_TEST_DIRS").is_some() {
                if let Some(root) = self.root.take() {
                    eprintln!("keeping test dir {}", root.keep().display());
                }
            }
        }
    }
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting for its parent to reap it).
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

fn read_state(dir: &Path) -> Value {
    let path = dir.join("cluster.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `bootstrap=` and `admin=` of `fjord dev cluster ready nodes=3 bootstrap=... admin=... dir=...`.
fn parse_ready(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("fjord dev cluster ready ")
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|p| p.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    assert_eq!(field("nodes="), "3", "{line}");
    let bootstrap = field("bootstrap=");
    assert_eq!(bootstrap.split(',').count(), 3, "{line}");
    for (i, addr) in bootstrap.split(',').enumerate() {
        assert!(
            addr.starts_with(&format!("127.0.0.{}:", i + 1)),
            "node {} should listen on 127.0.0.{}: {line}",
            i + 1,
            i + 1
        );
    }
    (bootstrap, field("admin="))
}

fn cli(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
    let mut cmd = Command::new(fjord_bin());
    cmd.args(["--bootstrap-server", bootstrap]).args(args);
    run(cmd, stdin, CMD_TIMEOUT)
}

/// Node `i`'s address (from 1) in the ready line's bootstrap list. The `fjord` CLI takes one
/// bootstrap address, so each step goes through another node.
fn node_addr(bootstrap: &str, i: usize) -> &str {
    bootstrap.split(',').nth(i - 1).expect("node address")
}

/// A topic replicated to all three nodes takes records and gives them back, through the
/// `fjord` CLI: created through node 2, produced to node 1, consumed from node 3.
fn produce_and_consume(bootstrap: &str, topic: &str, count: usize) {
    cli(
        node_addr(bootstrap, 2),
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    )
    .success("topic create --replication-factor 3");
    let records: Vec<String> = (0..count).map(|i| format!("{topic}-{i}")).collect();
    let input = records.join("\n") + "\n";
    cli(
        node_addr(bootstrap, 1),
        &["produce", topic],
        Some(input.as_bytes()),
    )
    .success("produce");
    consume_all(node_addr(bootstrap, 3), topic, &records);
}

fn consume_all(addr: &str, topic: &str, records: &[String]) {
    let n = records.len().to_string();
    let out = cli(
        addr,
        &["consume", topic, "--from-beginning", "--count", &n],
        None,
    )
    .success("consume");
    let mut got: Vec<String> = out.stdout().lines().map(str::to_string).collect();
    got.sort();
    let mut want = records.to_vec();
    want.sort();
    assert_eq!(got, want, "records read back from {topic} via {addr}");
}

/// `fjord dev cluster status --dir`: three running nodes in racks a, b, c, by its own table and
/// by the cluster's answer (`--json`).
fn check_status(g: &Guard) {
    let text = g.dev(&["status"]).success("dev cluster status");
    let stdout = text.stdout();
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "one line per node: {}", text.describe());
    for (i, (row, rack)) in rows.iter().zip(["a", "b", "c"]).enumerate() {
        assert_eq!(row[0], (i + 1).to_string(), "{}", text.describe());
        assert_eq!(row[2], "running", "{}", text.describe());
        assert_eq!(row[3], rack, "{}", text.describe());
    }
    assert!(
        stdout.contains("active controller:") && stdout.contains("controller(active)"),
        "status should include `fjord cluster status`: {}",
        text.describe()
    );

    let json = g
        .dev(&["status", "--json"])
        .success("dev cluster status --json");
    let v: Value = serde_json::from_str(&json.stdout())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", json.describe()));
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{v}");
    assert!(nodes.iter().all(|n| n["running"] == true), "{v}");
    let mut racks: Vec<(i64, String)> = v["cluster"]["status"]["brokers"]
        .as_array()
        .unwrap_or_else(|| panic!("cluster.status.brokers in {v}"))
        .iter()
        .map(|b| {
            (
                b["node_id"].as_i64().unwrap(),
                b["rack"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    racks.sort();
    assert_eq!(
        racks,
        [(1, "a".into()), (2, "b".into()), (3, "c".into())],
        "brokers and racks as the controller sees them: {v}"
    );
}

fn assert_gone(pids: &[u32]) {
    assert!(
        wait_until(STOP_TIMEOUT, || pids.iter().all(|p| !alive(*p))),
        "node processes still running: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

fn assert_one_line_error(r: &CmdResult, context: &str, needle: &str) {
    assert!(!r.ok(), "{context}: expected failure: {}", r.describe());
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{context}: expected one line `error: ...{needle}...`: {}",
        r.describe()
    );
}

#[test]
fn dev_cluster_foreground_serves_and_stops_on_sigterm() {
    let mut g = Guard::new();
    let stderr = fs::File::create(g.supervisor_log()).expect("create stderr file");
    let mut child = Command::new(fjord_bin())
        .args(g.start_args(&[]))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn fjord dev cluster");
    let stdout = child.stdout.take().unwrap();
    let supervisor_pid = child.id();
    g.supervisor = Some(child);
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    // The ready line is the first thing on stdout (progress goes to stderr).
    let ready = rx
        .recv_timeout(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no ready line within {READY_TIMEOUT:?} ({e})"));
    let (bootstrap, admin) = parse_ready(&ready);
    assert!(admin.starts_with("127.0.0.1:"), "{ready}");

    let state = read_state(&g.dir());
    assert_eq!(state["supervisor_pid"], supervisor_pid, "{state}");
    let pids = g.state_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| alive(*p)), "nodes {pids:?} should run");
    for i in 1..=3 {
        assert!(g.dir().join(format!("node{i}.toml")).is_file());
        assert!(g
            .dir()
            .join(format!("node{i}/data/meta.properties"))
            .is_file());
    }

    produce_and_consume(&bootstrap, "dev-orders", 30);
    check_status(&g);

    send_signal(supervisor_pid, "TERM");
    let status = wait_timeout(g.supervisor.as_mut().unwrap(), STOP_TIMEOUT).unwrap_or_else(|| {
        panic!("fjord dev cluster did not exit within {STOP_TIMEOUT:?} of SIGTERM")
    });
    g.supervisor = None;
    assert!(status.success(), "fjord dev cluster exited with {status}");
    assert_gone(&pids);
    assert!(
        !g.dir().join("cluster.json").exists(),
        "cluster.json should be removed"
    );
    let log = fs::read_to_string(g.supervisor_log()).unwrap();
    assert!(
        log.contains("starting node 2 (rack b) on 127.0.0.2:"),
        "progress on stderr: {log}"
    );
}

#[test]
fn dev_cluster_detach_status_stop_and_restart() {
    let mut g = Guard::new();
    let args = g.start_args(&["--detach"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = Command::new(fjord_bin());
    cmd.args(&args);
    let started = run(cmd, None, READY_TIMEOUT).success("dev cluster --detach");
    let ready = started.stdout();
    assert_eq!(ready.lines().count(), 1, "{}", started.describe());
    let (bootstrap, _) = parse_ready(ready.trim_end());
    let pids = g.state_pids();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "detached nodes {pids:?} should run"
    );
    assert_eq!(read_state(&g.dir())["supervisor_pid"], Value::Null);

    produce_and_consume(&bootstrap, "kept", 10);
    check_status(&g);

    // A second start on a running cluster's directory is refused.
    let mut cmd = Command::new(fjord_bin());
    cmd.args(&args);
    let again = run(cmd, None, CMD_TIMEOUT);
    assert_one_line_error(&again, "start while running", "fjord dev cluster stop");
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the refusal must not touch the nodes"
    );

    let stopped = g.dev(&["stop"]).success("dev cluster stop");
    let lines: Vec<String> = stopped.stdout().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "one line per node: {}", stopped.describe());
    for (i, (line, pid)) in lines.iter().zip(&pids).enumerate() {
        assert_eq!(
            line,
            &format!("node {} (pid {pid}) stopped", i + 1),
            "{}",
            stopped.describe()
        );
    }
    assert_gone(&pids);
    assert!(!g.dir().join("cluster.json").exists());

    // Starting again on the same directory restarts the same cluster: same ports, same data.
    let mut cmd = Command::new(fjord_bin());
    cmd.args(&args);
    let restarted = run(cmd, None, READY_TIMEOUT).success("dev cluster --detach (restart)");
    let (bootstrap2, _) = parse_ready(restarted.stdout().trim_end());
    assert_eq!(bootstrap2, bootstrap, "a restart keeps the addresses");
    let pids2 = g.state_pids();
    let records: Vec<String> = (0..10).map(|i| format!("kept-{i}")).collect();
    consume_all(node_addr(&bootstrap2, 2), "kept", &records);

    g.dev(&["stop"]).success("dev cluster stop (after restart)");
    assert_gone(&pids2);
    let again = g.dev(&["stop"]);
    assert_one_line_error(&again, "stop without a cluster", "cluster.json");
    let status = g.dev(&["status"]);
    assert_one_line_error(&status, "status without a cluster", "cluster.json");
}

#[test]
fn dev_cluster_node_that_cannot_start_fails_the_start_and_stops_the_others() {
    let g = Guard::new();
    // Node 2's Kafka port is taken on 127.0.0.2 (and free on 127.0.0.1 and .3).
    let (taken, port) = loop {
        let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        let free_elsewhere = [1, 3]
            .iter()
            .all(|i| std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).is_ok());
        if free_elsewhere {
            break (l, port);
        }
    };
    let port = port.to_string();
    let r = g.dev(&[
        "--kafka-port",
        &port,
        "--controller-port",
        "0",
        "--admin-port",
        "0",
        "--timeout-ms",
        "60000",
    ]);
    drop(taken);
    assert!(!r.ok(), "start should fail: {}", r.describe());
    let err = r.stderr();
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let log = g.dir().join("node2.log").display().to_string();
    assert!(
        last.starts_with("error: node 2 ") && last.contains(&log),
        "expected `error: node 2 ...` naming {log}: {}",
        r.describe()
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{}",
        r.describe()
    );
    assert!(!g.dir().join("cluster.json").exists());
    // No node of this cluster is left running.
    let dir = g.dir().display().to_string();
    let left: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid) && cmdline(*pid).contains(&dir))
        .collect();
    assert!(left.is_empty(), "nodes left running: {left:?}");
}
