//! A multi-node cluster of real `fjord server` processes for integration tests.
//!
//! Node N (from 1) listens on 127.0.0.N with rack a, b, c, ... (Linux routes all of 127/8 to
//! loopback). Its Kafka and controller ports are picked once and kept across restarts, as a real
//! broker keeps its address, so clients bootstrapped with [`Cluster::bootstrap_all`] reach a
//! restarted node again. Heartbeats every 200 ms and a 2 s session make fencing quick.
//!
//! Every process is a [`FjordProcess`] (killed by its PID, data removed on drop, also when the
//! test panics); background clients are [`Background`] processes with the same guarantee. Set
//! `FJORD_KEEP_TEST_DIRS=1` to keep the directories of a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{append_file, send_signal, wait_timeout, FjordProcess};

/// How long the `wait_*` helpers poll before failing the test.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// One partition as a broker answers it in Metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// -1 when the partition has no leader.
    pub leader: i64,
    pub replicas: Vec<i64>,
    pub isr: Vec<i64>,
}

impl std::fmt::Debug for PartitionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "leader {} replicas {:?} isr {:?}",
            self.leader, self.replicas, self.isr
        )
    }
}

/// Partition index → its leader, replicas and ISR.
pub type Layout = BTreeMap<i64, PartitionInfo>;

/// How to start a [`Cluster`]: roles per node and extra config lines.
pub struct ClusterBuilder {
    roles: Vec<String>,
    config: String,
    node_config: BTreeMap<usize, String>,
    env: Vec<(String, String)>,
}

impl ClusterBuilder {
    /// `process.roles` of node N is `roles[N - 1]` ("broker,controller", "broker" or
    /// "controller"); the controllers are the quorum's voters.
    pub fn roles(mut self, roles: &[&str]) -> ClusterBuilder {
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    /// TOML lines added to every node's config (Kafka key names, e.g.
    /// `"replica.lag.time.max.ms = 2000"`); a line setting a key the harness sets too
    /// (`broker.session.timeout.ms`, ...) replaces the harness's.
    pub fn config(mut self, lines: &str) -> ClusterBuilder {
        self.config.push_str(lines);
        self.config.push('\n');
        self
    }

    /// TOML lines added to node `id`'s config only.
    pub fn node_config(mut self, id: usize, lines: &str) -> ClusterBuilder {
        let c = self.node_config.entry(id).or_default();
        c.push_str(lines);
        c.push('\n');
        self
    }

    /// An environment variable of every node's process (e.g. `FJORD_DEBUG_FSYNC_DELAY_MS`).
    pub fn env(mut self, key: &str, value: &str) -> ClusterBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Start every node and wait for each ready line (they start together: none is ready
    /// before the controller quorum has a leader).
    pub fn start(self) -> Cluster {
        let n = self.roles.len();
        // Hold every probe socket until all ports are picked, so no two are the same.
        let mut held = Vec::new();
        let mut pick = |ip: &str| {
            let l = TcpListener::bind((ip, 0)).expect("bind a free port");
            let port = l.local_addr().unwrap().port();
            held.push(l);
            port
        };
        let ips: Vec<String> = (1..=n).map(|i| format!("127.0.0.{i}")).collect();
        let controller_ports: Vec<u16> = ips.iter().map(|ip| pick(ip)).collect();
        let kafka_ports: Vec<u16> = ips.iter().map(|ip| pick(ip)).collect();
        drop(held);
        let voters = (1..=n)
            .filter(|i| self.roles[i - 1].contains("controller"))
            .map(|i| format!("{i}@{}:{}", ips[i - 1], controller_ports[i - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<FjordProcess> = (1..=n)
            .map(|i| {
                let roles = &self.roles[i - 1];
                let ip = &ips[i - 1];
                let mut listeners = Vec::new();
                if roles.contains("broker") {
                    listeners.push(format!("PLAINTEXT://{ip}:{}", kafka_ports[i - 1]));
                }
                if roles.contains("controller") {
                    listeners.push(format!("CONTROLLER://{ip}:{}", controller_ports[i - 1]));
                }
                let extra = format!(
                    "{}{}",
                    self.config,
                    self.node_config.get(&i).map_or("", |s| s.as_str())
                );
                let base = format!(
                    r#"node.id = {i}
process.roles = "{roles}"
broker.rack = "{rack}"
listeners = "{listeners}"
controller.quorum.voters = "{voters}"
admin.listener = "{ip}:0"
broker.heartbeat.interval.ms = 200
broker.session.timeout.ms = 2000
group.initial.rebalance.delay.ms = 0
"#,
                    rack = (b'a' + (i as u8 - 1)) as char,
                    listeners = listeners.join(","),
                );
                // A key given in the extra lines replaces the default (TOML allows no
                // duplicate keys).
                let overridden = |line: &str| {
                    let key = line.split('=').next().unwrap_or("").trim();
                    extra
                        .lines()
                        .any(|l| l.split('=').next().unwrap_or("").trim() == key)
                };
                let mut toml: String = base
                    .lines()
                    .filter(|l| !overridden(l))
                    .map(|l| format!("{l}\n"))
                    .collect();
                toml.push_str(&extra);
                let mut node = FjordProcess::create_node(&toml);
                for (k, v) in &self.env {
                    node.set_env(k, v);
                }
                node
            })
            .collect();
        let pending: Vec<_> = nodes.iter_mut().map(|n| n.spawn_only()).collect();
        for (node, rx) in nodes.iter_mut().zip(pending) {
            node.wait_ready(rx);
        }
        let brokers = (1..=n)
            .filter(|i| self.roles[i - 1].contains("broker"))
            .collect();
        let kafka = (1..=n)
            .map(|i| format!("{}:{}", ips[i - 1], kafka_ports[i - 1]))
            .collect();
        Cluster {
            nodes,
            voters,
            brokers,
            kafka,
            scratch: Some(
                tempfile::Builder::new()
                    .prefix("fjord-it-cluster-")
                    .tempdir()
                    .expect("create scratch dir"),
            ),
            frozen: BTreeSet::new(),
        }
    }
}

/// A running cluster; node ids start at 1.
pub struct Cluster {
    pub nodes: Vec<FjordProcess>,
    /// `controller.quorum.voters`.
    pub voters: String,
    /// Ids of the nodes with the broker role.
    brokers: Vec<usize>,
    /// Kafka listener `host:port` of every node (fixed for the cluster's life).
    kafka: Vec<String>,
    /// Files of the test's clients (acks, dumps, client logs); removed on drop.
    scratch: Option<TempDir>,
    /// Nodes stopped with SIGSTOP ([`Cluster::freeze`]).
    frozen: BTreeSet<usize>,
}

impl Cluster {
    /// Three nodes, each broker and controller, racks a, b, c.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            roles: vec!["broker,controller".to_string(); 3],
            config: String::new(),
            node_config: BTreeMap::new(),
            env: Vec::new(),
        }
    }

    /// Three nodes, each broker and controller, racks a, b, c.
    pub fn start() -> Cluster {
        Cluster::builder().start()
    }

    /// Node N on 127.0.0.N with `roles[N - 1]`.
    pub fn start_with(roles: &[&str]) -> Cluster {
        Cluster::builder().roles(roles).start()
    }

    pub fn node(&self, id: usize) -> &FjordProcess {
        &self.nodes[id - 1]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut FjordProcess {
        &mut self.nodes[id - 1]
    }

    /// Ids of the broker nodes.
    pub fn brokers(&self) -> &[usize] {
        &self.brokers
    }

    /// Whether node `id`'s process is alive.
    pub fn is_running(&mut self, id: usize) -> bool {
        self.node_mut(id).is_running()
    }

    /// Broker nodes whose process is alive and not frozen.
    pub fn running_brokers(&mut self) -> Vec<usize> {
        let ids = self.brokers.clone();
        ids.into_iter()
            .filter(|i| !self.frozen.contains(i) && self.is_running(*i))
            .collect()
    }

    /// SIGSTOP node `id`: alive but silent (no heartbeats, no fetches, no answers).
    pub fn freeze(&mut self, id: usize) {
        send_signal(self.node(id).pid(), "STOP");
        self.frozen.insert(id);
    }

    /// SIGCONT node `id` after [`Cluster::freeze`].
    pub fn thaw(&mut self, id: usize) {
        send_signal(self.node(id).pid(), "CONT");
        self.frozen.remove(&id);
    }

    /// The Kafka address of every broker node, running or not, comma-separated: a bootstrap
    /// list that stays valid across restarts.
    pub fn bootstrap_all(&self) -> String {
        self.brokers
            .iter()
            .map(|i| self.kafka[i - 1].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A directory for the test's client files, removed with the cluster.
    pub fn scratch(&self) -> PathBuf {
        self.scratch
            .as_ref()
            .expect("scratch dir")
            .path()
            .to_path_buf()
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill9(&mut self, id: usize) {
        self.node_mut(id).kill9();
        self.frozen.remove(&id);
    }

    /// SIGTERM node `id` and wait up to `timeout` for it to exit; returns the exit status and
    /// how long it took. Fails the test (after SIGKILL) if it does not exit in time.
    pub fn terminate(&mut self, id: usize, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        match self.node_mut(id).terminate_within(timeout) {
            Some(status) => (status, t0.elapsed()),
            None => panic!(
                "node {id} did not exit within {timeout:?} of SIGTERM (killed)\n{}",
                self.node(id).log_tail(60)
            ),
        }
    }

    /// Start node `id` again on its data dir (stopped by [`Cluster::kill9`] or
    /// [`Cluster::terminate`]) and wait for its ready line.
    pub fn start_node(&mut self, id: usize) {
        assert!(!self.is_running(id), "node {id} is still running");
        self.node_mut(id).restart();
    }

    /// `fjord cluster status --json` from node `via` (None if it does not answer).
    pub fn status(&self, via: usize) -> Option<Value> {
        let r = self.node(via).cli(&[
            "cluster",
            "status",
            "--json",
            "--admin",
            self.node(via).admin(),
        ]);
        r.ok()
            .then(|| serde_json::from_str(&r.stdout()).expect("status JSON"))
    }

    /// Poll `f` on the status (the `"status"` object) from `via` until it holds.
    pub fn wait_status(&self, via: usize, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status(via) {
                if f(&s["status"]) {
                    return s;
                }
                if Instant::now() > deadline {
                    panic!("{what}: last status {s:#}");
                }
            } else if Instant::now() > deadline {
                panic!("{what}: no status from node {via}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The active controller as node `via` reports it.
    pub fn active_controller(&self, via: usize) -> usize {
        let s = self.wait_status(via, "an active controller", |s| {
            s["active_controller"].is_i64()
        });
        s["status"]["active_controller"].as_i64().unwrap() as usize
    }

    /// Partition layout of `topic` as node `via` answers Metadata (kcat -L -J); None if the
    /// node does not answer or does not know the topic.
    pub fn layout(&self, via: usize, topic: &str) -> Option<Layout> {
        let r = self.node(via).kcat(&["-L", "-J", "-t", topic], None);
        if !r.ok() {
            return None;
        }
        let v: Value = serde_json::from_str(&r.stdout()).ok()?;
        let t = &v["topics"][0];
        if !t["error"].is_null() {
            return None;
        }
        let ids = |a: &Value| -> Vec<i64> {
            a.as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_i64()).collect())
                .unwrap_or_default()
        };
        Some(
            t["partitions"]
                .as_array()?
                .iter()
                .map(|p| {
                    (
                        p["partition"].as_i64().unwrap(),
                        PartitionInfo {
                            leader: p["leader"].as_i64().unwrap_or(-1),
                            replicas: ids(&p["replicas"]),
                            isr: ids(&p["isrs"]),
                        },
                    )
                })
                .collect(),
        )
    }

    /// The layout from the first running broker that answers.
    pub fn layout_any(&mut self, topic: &str) -> Option<Layout> {
        for id in self.running_brokers() {
            if let Some(l) = self.layout(id, topic) {
                return Some(l);
            }
        }
        None
    }

    /// Poll the layout of `topic` until every running broker answers one for which `ok`
    /// holds (so a just-restarted broker with a stale view cannot satisfy it alone); returns
    /// the first broker's.
    pub fn wait_layout(&mut self, topic: &str, what: &str, ok: impl Fn(&Layout) -> bool) -> Layout {
        self.wait_layout_for(topic, what, WAIT_TIMEOUT, ok)
    }

    pub fn wait_layout_for(
        &mut self,
        topic: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Layout) -> bool,
    ) -> Layout {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<(usize, Option<Layout>)> = self
                .running_brokers()
                .into_iter()
                .map(|id| (id, self.layout(id, topic)))
                .collect();
            if !views.is_empty() && views.iter().all(|(_, l)| l.as_ref().is_some_and(&ok)) {
                return views.into_iter().next().unwrap().1.unwrap();
            }
            if Instant::now() > deadline {
                panic!(
                    "{topic}: {what} not reached within {timeout:?}; last layout by broker \
                     {views:#?}"
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until every node in `via` answers the same layout for `topic` and `ok` holds.
    pub fn converged(&self, via: &[usize], topic: &str, ok: impl Fn(&Layout) -> bool) -> Layout {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let views: Vec<Option<Layout>> = via.iter().map(|i| self.layout(*i, topic)).collect();
            if views.iter().all(Option::is_some)
                && views.windows(2).all(|w| w[0] == w[1])
                && ok(views[0].as_ref().unwrap())
            {
                return views[0].clone().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "brokers {via:?} disagree on {topic}: {views:#?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The leader of `topic`/`partition` (-1: none) as a running broker answers.
    pub fn leader(&mut self, topic: &str, partition: i64) -> i64 {
        self.wait_layout(topic, "metadata", |l| l.contains_key(&partition))[&partition].leader
    }

    /// Wait until `partition` (every partition if None) of `topic` has an ISR of `size` and a
    /// leader; returns the layout.
    pub fn wait_isr(&mut self, topic: &str, partition: Option<i64>, size: usize) -> Layout {
        self.wait_layout(topic, &format!("ISR of {size} on {partition:?}"), |l| {
            !l.is_empty()
                && l.iter()
                    .filter(|(p, _)| partition.is_none_or(|want| **p == want))
                    .all(|(_, i)| i.isr.len() == size && i.leader >= 0)
        })
    }

    /// Four nodes with `config`: 1-3 brokers and controllers in racks a, b, c, 4 a broker in
    /// rack a, stopped at once (registered, fenced) so that it holds nothing when it comes
    /// back; then the RF-3 topic `spread` (6 partitions) and the RF-1 topic `single` (8).
    pub fn with_an_empty_fourth_broker(config: &str) -> Cluster {
        let mut c = Cluster::builder()
            .roles(&[
                "broker,controller",
                "broker,controller",
                "broker,controller",
                "broker",
            ])
            .config(config)
            .node_config(4, "broker.rack = \"a\"")
            .start();
        c.terminate(4, Duration::from_secs(30));
        // Its exit does not fence it at once (its session has to expire): topics created
        // before that could be placed on it, and an RF-1 partition there would have no leader.
        c.wait_status(1, "the stopped fourth broker fenced", |s| {
            s["brokers"]
                .as_array()
                .is_some_and(|bs| bs.iter().any(|b| b["node_id"] == 4 && b["fenced"] == true))
        });
        c.create_topics(&[("spread", 6, 3), ("single", 8, 1)]);
        c
    }

    /// Create each `(topic, partitions, replication factor)` through node 1's CLI and wait
    /// until every partition has a leader and a full ISR.
    pub fn create_topics(&mut self, topics: &[(&str, u32, usize)]) {
        for (topic, partitions, rf) in topics {
            self.node(1)
                .cli(&[
                    "topic",
                    "create",
                    topic,
                    "--partitions",
                    &partitions.to_string(),
                    "--replication-factor",
                    &rf.to_string(),
                ])
                .success("topic create");
        }
        for (topic, _, rf) in topics {
            self.wait_isr(topic, None, *rf);
        }
    }

    /// Sum of the samples of metric `name` on node `id`'s `/metrics` whose labels include all
    /// of `labels`; None if there is no such sample.
    pub fn metric(&self, id: usize, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.node(id).http_get("/metrics").body;
        metric_value(&text, name, labels)
    }

    /// CPU time (user + system, seconds) node `id`'s process has used so far.
    pub fn cpu_seconds(&self, id: usize) -> f64 {
        let pid = self.node(id).pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
        // Fields after the command name (which may contain spaces) in parentheses; utime and
        // stime are fields 14 and 15 of the whole line, in clock ticks.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks as f64 / clock_ticks_per_second()
    }

    /// Fails the test if any node's log contains a panic.
    pub fn assert_no_panic_in_logs(&self) {
        for n in &self.nodes {
            n.assert_no_panic_in_log();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The nodes are killed by their own Drop; keep the clients' files of a failed test if
        // asked to.
        if thread::panicking() && std::env::var_os("FJORD_KEEP_TEST_DIRS").is_some() {
            if let Some(dir) = self.scratch.take() {
                eprintln!("keeping cluster scratch dir {}", dir.keep().display());
            }
        }
    }
}

/// Sum of the samples of `name` in a Prometheus text exposition whose labels include all of
/// `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            if let Ok(v) = value.trim().parse::<f64>() {
                *sum.get_or_insert(0.0) += v;
            }
        }
    }
    sum
}

/// Lines of `log` at WARN level that contain `needle`, ignoring case.
pub fn warn_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    let needle = needle.to_lowercase();
    log.lines()
        .filter(|l| l.contains(" WARN ") && l.to_lowercase().contains(&needle))
        .collect()
}

/// A client process running in the background (a producer during a failure scenario), with
/// stdout and stderr in files. Killed by its PID when dropped, also when the test panics.
pub struct Background {
    child: Option<Child>,
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Spawn `cmd` with stdout and stderr appended to `<dir>/<name>.out` / `.err`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Background {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(append_file(&stdout)))
            .stderr(Stdio::from(append_file(&stderr)))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        Background {
            child: Some(child),
            what,
            stdout,
            stderr,
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Wait up to `timeout` for the process to exit; fails the test (after SIGKILL) if it
    /// does not.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("already waited");
        match wait_timeout(&mut child, timeout) {
            Some(s) => s,
            None => {
                send_signal(child.id(), "KILL");
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.what,
                    self.output()
                );
            }
        }
    }

    /// Its stdout and stderr so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            tail(&fs::read_to_string(&self.stdout).unwrap_or_default(), 4000),
            tail(&fs::read_to_string(&self.stderr).unwrap_or_default(), 4000)
        )
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
