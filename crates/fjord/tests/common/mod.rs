//! Test harness for integration tests of the `fjord` binary.
//!
//! Every test starts its own broker process ([`FjordProcess`]) on ephemeral ports with a fresh
//! temporary data directory, and talks to it with real clients: the `fjord` CLI, kcat, and the
//! Python scripts in `tests/clients/`. Missing tools make a test fail with a clear message (CI
//! installs them with `scripts/setup-test-deps.sh`); they never make it skip silently.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout for one client command (CLI, kcat, python script).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// The `fjord` binary under test: `FJORD_BIN` when set (a release build, or a copy kept apart
/// from a target directory other builds write to), else the one cargo built for these tests.
pub fn fjord_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FJORD_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_fjord").to_string())
    })
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A running single-node `fjord server` with its own data directory.
pub struct FjordProcess {
    child: Option<Child>,
    /// Holds `data/` (the log dir) and `server-N.log` (stderr of each start).
    dir: Option<TempDir>,
    extra_args: Vec<String>,
    bootstrap: String,
    admin: String,
    starts: u32,
    /// A cluster node: its TOML config (`log.dirs` is added); replaces the single-node flags.
    config: Option<String>,
    /// Extra environment of the server process (e.g. `FJORD_DEBUG_FSYNC_DELAY_MS`).
    env: Vec<(String, String)>,
}

impl FjordProcess {
    /// Starts a broker with `extra_args` appended to the standard single-node flags, and waits
    /// for its ready line.
    pub fn start(extra_args: &[&str]) -> FjordProcess {
        FjordProcess::start_with_env(extra_args, &[])
    }

    /// [`FjordProcess::start`] with extra environment variables for the server (kept for
    /// restarts).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> FjordProcess {
        let dir = tempfile::Builder::new()
            .prefix("fjord-it-")
            .tempdir()
            .expect("create temp dir");
        fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let mut p = FjordProcess {
            child: None,
            dir: Some(dir),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            bootstrap: String::new(),
            admin: String::new(),
            starts: 0,
            config: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.spawn();
        p
    }

    /// Starts a node configured by `config` (TOML; `log.dirs` is set to this node's data dir)
    /// and waits for its ready line.
    pub fn start_node(config: &str) -> FjordProcess {
        let mut p = FjordProcess::create_node(config);
        p.spawn();
        p
    }

    /// A node that is not started yet ([`FjordProcess::restart`] starts it); nodes of a
    /// cluster start together because none is ready before the quorum has a leader.
    pub fn create_node(config: &str) -> FjordProcess {
        let dir = tempfile::Builder::new()
            .prefix("fjord-it-")
            .tempdir()
            .expect("create temp dir");
        fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let toml = format!(
            "{config}\nlog.dirs = {:?}\n",
            dir.path().join("data").display().to_string()
        );
        fs::write(dir.path().join("node.toml"), toml).expect("write node config");
        FjordProcess {
            child: None,
            dir: Some(dir),
            extra_args: Vec::new(),
            bootstrap: String::new(),
            admin: String::new(),
            starts: 0,
            config: Some(config.to_string()),
            env: Vec::new(),
        }
    }

    /// Set an environment variable of the server process from its next start on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Spawn without waiting for the ready line; [`FjordProcess::wait_ready`] waits.
    pub fn spawn_only(&mut self) -> mpsc::Receiver<String> {
        self.spawn_process()
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// The Kafka listener address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The admin HTTP address, `127.0.0.1:PORT`.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// The log dir given to the server (`--log-dirs`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// A scratch directory for test files that is removed with the broker.
    pub fn scratch_dir(&self) -> PathBuf {
        let d = self.dir().join("scratch");
        fs::create_dir_all(&d).expect("create scratch dir");
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir().join(format!("server-{start}.log"))
    }

    fn spawn(&mut self) {
        let rx = self.spawn_process();
        self.wait_ready(rx);
    }

    fn spawn_process(&mut self) -> mpsc::Receiver<String> {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let stderr = File::create(&log_path).expect("create server log");
        let data_dir = self.data_dir();
        let mut cmd = Command::new(fjord_bin());
        cmd.arg("server");
        if self.config.is_some() {
            cmd.arg("--config").arg(self.dir().join("node.toml"));
        } else {
            cmd.args(["--listeners", "PLAINTEXT://127.0.0.1:0"])
                .args(["--admin-listener", "127.0.0.1:0"])
                .arg("--log-dirs")
                .arg(&data_dir);
        }
        cmd.args(&self.extra_args)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn fjord server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads stdout for the life of the process so the pipe never fills up.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        rx
    }

    /// Wait for the ready line of a process started by [`FjordProcess::spawn_only`].
    pub fn wait_ready(&mut self, rx: mpsc::Receiver<String>) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("fjord ready ") {
                        let (kafka, admin) = parse_ready(rest).unwrap_or_else(|| {
                            self.fail(&format!("malformed ready line {line:?}"))
                        });
                        self.bootstrap = kafka;
                        self.admin = admin;
                        return;
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().unwrap().wait().ok();
                    self.child = None;
                    self.fail(&format!(
                        "fjord server exited before printing its ready line (status {status:?}); stdout: {seen:?}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail(&format!(
                    "fjord server printed no ready line within {READY_TIMEOUT:?}; stdout: {seen:?}"
                )),
            }
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n--- server stderr ---\n{}", self.log_tail(80));
    }

    /// The last `lines` lines of the server's stderr, over all starts.
    pub fn log_tail(&self, lines: usize) -> String {
        let all = self.all_logs();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Everything the server wrote to stderr, over all starts.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            if let Ok(s) = fs::read(self.log_path(n)) {
                out.push_str(&format!("=== start {n} ===\n"));
                out.push_str(&String::from_utf8_lossy(&s));
            }
        }
        out
    }

    pub fn assert_no_panic_in_log(&self) {
        let logs = self.all_logs();
        if let Some(pos) = logs.find("panicked") {
            let start = logs[..pos].rfind('\n').map_or(0, |i| i + 1);
            let end = (pos + 2000).min(logs.len());
            let end = (end..=logs.len())
                .find(|&i| logs.is_char_boundary(i))
                .unwrap();
            panic!("broker log contains a panic:\n{}", &logs[start..end]);
        }
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        send_signal(child.id(), "KILL");
        let _ = child.wait();
    }

    /// SIGTERM and wait for exit; fails the test if the broker doesn't exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        match self.terminate_within(SHUTDOWN_TIMEOUT) {
            Some(status) => status,
            None => self.fail(&format!(
                "fjord server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM"
            )),
        }
    }

    /// SIGTERM and wait up to `timeout` for exit; None (after SIGKILL) if it did not exit.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("broker is not running");
        send_signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, timeout);
        if status.is_none() {
            send_signal(child.id(), "KILL");
            let _ = child.wait();
        }
        status
    }

    /// Starts the broker again on the same data dir (after `kill9` or `terminate`; terminates
    /// it first if it is still running). Ports may change.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    /// Runs the `fjord` CLI against this broker (`--bootstrap-server` is prepended).
    pub fn cli(&self, args: &[&str]) -> CmdResult {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
        let mut cmd = Command::new(fjord_bin());
        cmd.args(["--bootstrap-server", self.bootstrap()])
            .args(args);
        run(cmd, stdin, CMD_TIMEOUT)
    }

    /// Runs kcat with `-b <bootstrap>` prepended.
    pub fn kcat(&self, args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
        let mut cmd = Command::new(require_tool("kcat"));
        cmd.args(["-b", self.bootstrap()]).args(args);
        run(cmd, stdin, CMD_TIMEOUT)
    }

    /// The ISR size of each partition of `topic` as this node reports it, asked with kcat
    /// (`-L -J`) with the client settings `auth` (`-X` pairs); empty while it cannot say.
    pub fn isr_sizes(&self, topic: &str, auth: &[&str]) -> Vec<usize> {
        let mut args = auth.to_vec();
        args.extend(["-L", "-J", "-t", topic]);
        let r = self.kcat(&args, None);
        let Ok(v) = serde_json::from_str::<serde_json::Value>(r.stdout().trim()) else {
            return Vec::new();
        };
        v["topics"][0]["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["isrs"].as_array().map_or(0, Vec::len))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `tests/clients/<script>` with `--bootstrap <addr>` prepended to `args`.
    pub fn python(&self, script: &str, args: &[&str]) -> CmdResult {
        let mut full = vec!["--bootstrap", self.bootstrap()];
        full.extend_from_slice(args);
        python(script, &full, CMD_TIMEOUT)
    }

    /// Creates a topic with the confluent-kafka AdminClient (independent of the fjord CLI).
    pub fn create_topic(&self, name: &str, partitions: u32, configs: &[&str]) {
        let parts = partitions.to_string();
        let mut args = vec!["create", name, "--partitions", &parts];
        for c in configs {
            args.extend_from_slice(&["--config", c]);
        }
        self.python("admin.py", &args).success("create topic");
    }

    /// GET `path` on the admin HTTP listener.
    pub fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.admin(), path)
    }
}

impl Drop for FjordProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "KILL");
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- fjord server stderr (last 60 lines) ---\n{}",
                self.log_tail(60)
            );
            if std::env::var_os("FJORD_KEEP_TEST_DIRS").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("keeping test dir {}", dir.keep().display());
                }
            }
        }
        // `dir` (TempDir) is dropped after this, removing the data: disk is the scarce resource.
    }
}

fn parse_ready(rest: &str) -> Option<(String, String)> {
    let mut kafka = None;
    let mut admin = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("kafka=") {
            kafka = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("admin=") {
            admin = Some(v.to_string());
        }
    }
    Some((kafka?, admin?))
}

pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The result of a finished command, with helpers that fail the test with its full output.
pub struct CmdResult {
    pub what: String,
    pub output: Output,
}

impl CmdResult {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.output.status,
            truncate(&self.stdout(), 4000),
            truncate(&self.stderr(), 4000)
        )
    }

    /// Panics unless the command exited 0.
    pub fn success(self, context: &str) -> CmdResult {
        assert!(self.ok(), "{context}: {}", self.describe());
        self
    }

    /// Panics unless the command exited non-zero.
    pub fn failure(self, context: &str) -> CmdResult {
        assert!(
            !self.ok(),
            "{context}: expected failure but {}",
            self.describe()
        );
        self
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...[{} bytes omitted]...{}", start, &s[start..])
}

/// Runs `cmd` to completion with an optional stdin, killing it after `timeout` (test fails).
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdResult {
    cmd.env("NO_COLOR", "1");
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out_reader = spawn_reader(child.stdout.take().unwrap());
    let err_reader = spawn_reader(child.stderr.take().unwrap());
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            send_signal(child.id(), "KILL");
            let _ = child.wait();
            let stdout = out_reader.join().unwrap();
            let stderr = err_reader.join().unwrap();
            panic!(
                "{what} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                truncate(&String::from_utf8_lossy(&stdout), 4000),
                truncate(&String::from_utf8_lossy(&stderr), 4000)
            );
        }
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    CmdResult {
        what,
        output: Output {
            status,
            stdout,
            stderr,
        },
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Finds `name` on PATH, or fails the test saying how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found on PATH: run scripts/setup-test-deps.sh (CI installs it)");
}

/// `$FJORD_PYTHON`, or `<repo>/.venv/bin/python`. Fails the test if neither exists.
pub fn python_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FJORD_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "FJORD_PYTHON={} does not exist: run scripts/setup-test-deps.sh",
            p.display()
        );
        return p;
    }
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} not found (and FJORD_PYTHON not set): run scripts/setup-test-deps.sh",
        p.display()
    );
    p
}

pub fn client_script(name: &str) -> PathBuf {
    let p = repo_root().join("tests/clients").join(name);
    assert!(p.is_file(), "missing client script {}", p.display());
    p
}

/// Runs the Python client script `tests/clients/<script>` with `args`.
pub fn python(script: &str, args: &[&str], timeout: Duration) -> CmdResult {
    let mut cmd = python_command(script);
    cmd.args(args);
    run(cmd, None, timeout)
}

/// A `Command` for a client script, for callers that run it in the background.
pub fn python_command(script: &str) -> Command {
    let mut cmd = Command::new(python_bin());
    cmd.arg("-u").arg(client_script(script));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// A minimal HTTP/1.1 GET (the admin API is plain HTTP; no client crate needed).
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

pub fn http_get(addr: &str, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read response of GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response to GET {path}: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("malformed status line: {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Reads a JSON-lines file into values (blank lines ignored).
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_json_lines(&text)
}

pub fn parse_json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Number of complete lines in a file that another process is appending to.
pub fn count_lines(path: &Path) -> usize {
    match fs::read(path) {
        Ok(b) => b.iter().filter(|&&c| c == b'\n').count(),
        Err(_) => 0,
    }
}

/// Polls `cond` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Opens a file for appending (used for background process logs).
pub fn append_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

pub mod cluster;
pub mod java;
pub mod kafka;
pub mod member;
pub mod records;

/// Produces records `0..count` of the record set with ck_produce.py; returns the acks.
pub fn ck_produce(
    broker: &FjordProcess,
    topic: &str,
    count: u64,
    extra: &[&str],
) -> Vec<records::Ack> {
    let acks_path = broker
        .scratch_dir()
        .join(format!("acks-{topic}-{}.jsonl", unique()));
    let count_s = count.to_string();
    let acks_s = acks_path.to_str().unwrap().to_string();
    let mut args = vec!["--topic", topic, "--count", &count_s, "--acks-out", &acks_s];
    args.extend_from_slice(extra);
    broker
        .python("ck_produce.py", &args)
        .success("ck_produce.py");
    let acks = records::parse_acks(&read_json_lines(&acks_path));
    let _ = fs::remove_file(&acks_path);
    assert_eq!(acks.len() as u64, count, "acknowledged records");
    acks
}

/// Reads a whole topic with ck_consume.py (stopping once every partition is at its end and at
/// least `expect` records were read).
pub fn ck_consume(broker: &FjordProcess, topic: &str, expect: u64) -> Vec<records::Dumped> {
    let out = broker
        .scratch_dir()
        .join(format!("dump-{topic}-{}.jsonl", unique()));
    let expect_s = expect.to_string();
    broker
        .python(
            "ck_consume.py",
            &[
                "--topic",
                topic,
                "--out",
                out.to_str().unwrap(),
                "--expect",
                &expect_s,
            ],
        )
        .success("ck_consume.py");
    let dump = records::parse_dump(&read_json_lines(&out));
    let _ = fs::remove_file(&out);
    dump
}

/// A number unique within this test process (for file names).
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One ApiVersions v0 round trip on `s` (a request that needs no disk and no lock: tests of
/// stalled async workers time it); its duration.
pub fn api_versions_round_trip(s: &mut TcpStream, correlation_id: i32) -> Duration {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    let start = Instant::now();
    s.write_all(&framed).expect("send ApiVersions");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("read response length");
    let mut resp = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
    s.read_exact(&mut resp).expect("read response");
    assert_eq!(
        i32::from_be_bytes(resp[..4].try_into().unwrap()),
        correlation_id
    );
    start.elapsed()
}
