//! Control plane at scale (issue 22): three real controller processes (`fjord server` with
//! `process.roles = "controller"`, the real openraft quorum and metadata log) and N simulated
//! brokers in this process that register, heartbeat at the real interval and follow the
//! metadata log over the controller listener, keeping no partition data.
//!
//! ```text
//! cargo build --release -p fjord
//! cargo run --release -p fjord-metadata --example control_plane_scale -- \
//!     [--replicas 100000] [--brokers 140] [--per-topic 1000] [--rf 3] \
//!     [--fjord target/release/fjord] [--out bench/results/control-plane] [--work /tmp] \
//!     [--skip-snapshot] [--skip-delete]
//! ```
//!
//! Scenarios, in order: register the brokers; create the topics (one CreateTopic of
//! `--per-topic` partitions per request, one at a time, as an operator's script would); sizes
//! on disk and a snapshot built from a broker's image; small writes until every controller
//! has written a snapshot (its policy: every 10,000 Raft entries); one real `fjord server`
//! broker joining (its RSS with the whole image, a Metadata request for all topics); a broker
//! that stops heartbeating (time to fence it and move its leaderships); a broker bounced
//! (controlled shutdown, restart from an empty metadata cache, ISR expansion by the leaders,
//! preferred election: time to move its leaderships away and back, bytes of metadata every
//! other broker fetched); the active
//! controller killed with SIGKILL (time until a new one commits a request) and restarted
//! (time until it has caught up); every topic deleted. Throughout, each controller's RSS and
//! CPU time are sampled every second, and every failed or late heartbeat and every fencing
//! nobody asked for is counted (there must be none).
//!
//! The simulated brokers read the controller listener's frames themselves (4-byte length and
//! JSON, [`fjord_metadata::quorum::network`]) to count the bytes they fetch, and fetch the
//! image part by part as a real broker does (`FetchImagePart`); a frame larger than
//! `MAX_FRAME` is counted as an error a real broker would hit and then accepted, so the run
//! goes on. One extra follower (the "observer") keeps a full [`ClusterImage`], as a real
//! broker does, and tells the driver when leaderships have moved.
//!
//! It prints a table (scenario, size, figure) and writes it with the raw samples and events to
//! `--out`. The controllers are killed by their PIDs and the temp dir under `--work` removed
//! on the way out, also on a panic; a benchmark killed by a signal leaves them running (their
//! `fjord server` processes and `fjord-control-plane-*` dir are to be cleaned up by hand).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fjord_metadata::quorum::network::{read_frame, write_frame, Reply, Request, MAX_FRAME};
use fjord_metadata::quorum::{ControllerClient, HeartbeatSchedule, MetadataChunk, SubmitError};
use fjord_metadata::rpc::AlterPartitionItem;
use fjord_metadata::{ClusterImage, ControllerReply, ControllerRequest, MetadataRecord, NodeId};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use uuid::Uuid;

/// The controllers' defaults (`broker.heartbeat.interval.ms`, `broker.session.timeout.ms`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2_000);
const SESSION_TIMEOUT: Duration = Duration::from_millis(9_000);
/// A gap between two successful heartbeats of one broker longer than this is "late".
const LATE_GAP: Duration = Duration::from_millis(3_000);
/// Longest wait of any one scenario step before it is reported as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
const FIRST_BROKER: NodeId = 101;

struct Args {
    replicas: u64,
    brokers: usize,
    per_topic: u32,
    rf: u16,
    fjord: PathBuf,
    out: PathBuf,
    work: PathBuf,
    skip_delete: bool,
    skip_snapshot: bool,
}

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut a = Args {
        replicas: 100_000,
        brokers: 140,
        per_topic: 1_000,
        rf: 3,
        fjord: std::env::var_os("FJORD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/fjord")),
        out: root.join("bench/results/control-plane"),
        work: std::env::temp_dir(),
        skip_delete: false,
        skip_snapshot: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--skip-delete" {
            a.skip_delete = true;
            continue;
        }
        if flag == "--skip-snapshot" {
            a.skip_snapshot = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--replicas" => a.replicas = num(&value)?,
            "--brokers" => a.brokers = num(&value)? as usize,
            "--per-topic" => a.per_topic = num(&value)? as u32,
            "--rf" => a.rf = num(&value)? as u16,
            "--fjord" => a.fjord = value.into(),
            "--out" => a.out = value.into(),
            "--work" => a.work = value.into(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.brokers < a.rf as usize || a.per_topic == 0 || a.rf == 0 {
        return Err("need --brokers >= --rf and positive --per-topic/--rf".into());
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------
// Controller processes

struct ControllerProc {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ControllerProc {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn quorum_dir(&self) -> PathBuf {
        self.dir.join("data/__cluster_quorum")
    }

    /// Spawn `fjord server`; the receiver gets its stdout lines (the ready line).
    fn spawn(&mut self, fjord: &Path) -> mpsc::Receiver<String> {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("server-{}.log", self.starts)))
            .expect("create controller log");
        let mut child = Command::new(fjord)
            .arg("server")
            .arg("--config")
            .arg(self.dir.join("node.toml"))
            .env("FJORD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn fjord server (build it: cargo build --release -p fjord)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        rx
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL, by this child's PID
            let _ = c.wait();
        }
    }
}

fn wait_ready(rx: &mpsc::Receiver<String>, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("fjord ready") => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("{what}: no ready line ({e})")),
        }
    }
}

struct Controllers {
    procs: Vec<ControllerProc>,
    voters: BTreeMap<u64, String>,
    /// The temp dir's path (the real broker's directory goes there too).
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }
}

impl Controllers {
    fn start(fjord: &Path, work: &Path) -> Result<Controllers, String> {
        let tmp = tempfile::Builder::new()
            .prefix("fjord-control-plane-")
            .tempdir_in(work)
            .map_err(|e| e.to_string())?;
        let mut held = Vec::new();
        let mut addrs = Vec::new();
        for i in 1..=3u64 {
            let ip = format!("127.0.1.{i}");
            let l = std::net::TcpListener::bind((ip.as_str(), 0)).map_err(|e| e.to_string())?;
            addrs.push(format!(
                "{ip}:{}",
                l.local_addr().map_err(|e| e.to_string())?.port()
            ));
            held.push(l);
        }
        drop(held);
        let voters: BTreeMap<u64, String> = (1..=3u64).zip(addrs.iter().cloned()).collect();
        let voters_str = voters
            .iter()
            .map(|(id, a)| format!("{id}@{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Vec::new();
        for (id, addr) in &voters {
            let dir = tmp.path().join(format!("controller-{id}"));
            std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
            let ip = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            let toml = format!(
                "node.id = {id}\nprocess.roles = \"controller\"\nlisteners = \"CONTROLLER://{addr}\"\n\
                 controller.quorum.voters = \"{voters_str}\"\nadmin.listener = \"{ip}:0\"\n\
                 log.dirs = {:?}\n",
                dir.join("data").display().to_string()
            );
            std::fs::write(dir.join("node.toml"), toml).map_err(|e| e.to_string())?;
            procs.push(ControllerProc {
                id: *id,
                addr: addr.clone(),
                dir,
                child: None,
                starts: 0,
            });
        }
        let mut c = Controllers {
            procs,
            voters,
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        let rxs: Vec<_> = c.procs.iter_mut().map(|p| p.spawn(fjord)).collect();
        for (p, rx) in c.procs.iter().zip(rxs) {
            wait_ready(&rx, &format!("controller {}", p.id))?;
        }
        Ok(c)
    }

    fn by_id(&mut self, id: u64) -> &mut ControllerProc {
        self.procs.iter_mut().find(|p| p.id == id).expect("voter")
    }
}

/// RSS (KiB), peak RSS (KiB) and CPU seconds (user + system) of a process.
fn proc_usage(pid: u32) -> Option<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15 (clock ticks, 100 per s).
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((field("VmRSS:")?, field("VmHWM:")?, ticks as f64 / 100.0))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

// ---------------------------------------------------------------------------------------
// Events and simulated brokers

/// The fields are read through `Debug` (the events file).
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum EventKind {
    HeartbeatFailed(String),
    HeartbeatRefused(String),
    HeartbeatGap(u64),
    /// No successful heartbeat for a whole session timeout (an active controller would fence).
    NoHeartbeatForSession,
    ReportedFenced,
    Registered(i64),
    FetchFailed(String),
    FrameTooLarge(usize),
    SnapshotChunk(usize),
    /// The observer applied a FenceBroker record.
    FenceRecord,
    /// The observer applied a RegisterBroker record.
    RegisterRecord,
}

struct Event {
    at: Instant,
    node: NodeId,
    kind: EventKind,
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn push(&self, node: NodeId, kind: EventKind) {
        self.push_at(Instant::now(), node, kind)
    }

    fn push_at(&self, at: Instant, node: NodeId, kind: EventKind) {
        self.0
            .lock()
            .expect("events")
            .push(Event { at, node, kind });
    }
}

struct Sim {
    id: NodeId,
    rack: String,
    client: ControllerClient,
    epoch: AtomicI64,
    /// Next metadata offset to fetch (records applied).
    applied: AtomicI64,
    /// Heartbeats are sent while this holds (the fencing scenario clears it).
    heartbeating: AtomicBool,
    /// Tasks of an older incarnation stop when this moves on.
    generation: AtomicU64,
    fetched_bytes: AtomicU64,
    fetched_records: AtomicU64,
    heartbeats: AtomicU64,
}

/// A fetch reply read without building the records: only their count matters here.
#[derive(Deserialize)]
enum LiteReply {
    Metadata(LiteChunk),
    ImagePart(Option<LitePart>),
}

#[derive(Deserialize)]
struct LitePart {
    offset: i64,
    part: u32,
    parts: u32,
    records: Vec<IgnoredAny>,
}

/// What a follower asks next after applying a reply.
enum Step {
    /// Records from where the follower now is.
    Next,
    /// This part of the image at `offset`.
    Part { offset: i64, part: u32 },
}

#[derive(Deserialize)]
enum LiteChunk {
    Records {
        base: i64,
        records: Vec<IgnoredAny>,
    },
    Snapshot {
        offset: i64,
        records: Vec<IgnoredAny>,
    },
}

/// One metadata fetch on `conn`: the body of the reply frame, or an error.
async fn fetch_frame(
    conn: &mut TcpStream,
    req: &Request,
    events: &Events,
    node: NodeId,
) -> std::io::Result<Vec<u8>> {
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        write_frame(conn, req).await?;
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            // A real broker's read_frame refuses it; counted, then read anyway so the
            // benchmark goes on.
            events.push(node, EventKind::FrameTooLarge(len));
        }
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "fetch timed out"))??;
    Ok(body)
}

/// Follow the metadata log as a broker does: from a voter picked by the node id (a real
/// broker's `ControllerClient` picks one at random), staying with the one that answers. `apply` gets each frame body and says what to ask next (the parts of an image come
/// from the voter that sent its first part; any failure starts over from `offset()`).
async fn follow_loop(
    voters: Vec<String>,
    node: NodeId,
    events: Arc<Events>,
    offset: impl Fn() -> i64,
    mut apply: impl FnMut(&[u8]) -> Result<Step, String>,
    alive: impl Fn() -> bool,
) {
    let mut idx = usize::try_from(node).unwrap_or(0);
    let mut conn: Option<TcpStream> = None;
    let mut part: Option<(i64, u32)> = None;
    while alive() {
        if conn.is_none() {
            let addr = &voters[idx % voters.len()];
            match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                _ => {
                    idx += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let req = match part.take() {
            Some((offset, part)) => Request::FetchImagePart { offset, part },
            None => Request::FetchMetadata {
                from: offset(),
                max_wait_ms: 500,
            },
        };
        let result = match conn.as_mut() {
            Some(c) => fetch_frame(c, &req, &events, node).await,
            None => continue,
        };
        match result.map_err(|e| e.to_string()).and_then(|b| apply(&b)) {
            Ok(Step::Next) => {}
            Ok(Step::Part { offset, part: p }) => part = Some((offset, p)),
            Err(e) => {
                events.push(node, EventKind::FetchFailed(e));
                conn = None;
                idx += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn start_sim_tasks(sim: Arc<Sim>, voters: Vec<String>, events: Arc<Events>) {
    let gen = sim.generation.load(Ordering::SeqCst);
    let s = sim.clone();
    let ev = events.clone();
    tokio::spawn(async move {
        let s2 = s.clone();
        let s3 = s.clone();
        let ev2 = ev.clone();
        follow_loop(
            voters,
            s.id,
            ev,
            move || s2.applied.load(Ordering::SeqCst),
            move |body| {
                let n = body.len() as u64 + 4;
                let reply: LiteReply = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                s.fetched_bytes.fetch_add(n, Ordering::Relaxed);
                let next = match reply {
                    LiteReply::Metadata(LiteChunk::Records { base, records }) => {
                        let from = s.applied.load(Ordering::SeqCst);
                        if base != from {
                            return Ok(Step::Next);
                        }
                        s.fetched_records
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                        base + records.len() as i64
                    }
                    LiteReply::Metadata(LiteChunk::Snapshot { offset, records }) => {
                        ev2.push(s.id, EventKind::SnapshotChunk(n as usize));
                        s.fetched_records
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                        offset
                    }
                    LiteReply::ImagePart(Some(p)) => {
                        ev2.push(s.id, EventKind::SnapshotChunk(n as usize));
                        s.fetched_records
                            .fetch_add(p.records.len() as u64, Ordering::Relaxed);
                        if p.part + 1 < p.parts {
                            return Ok(Step::Part {
                                offset: p.offset,
                                part: p.part + 1,
                            });
                        }
                        p.offset
                    }
                    LiteReply::ImagePart(None) => return Err("the image is no longer held".into()),
                };
                s.applied.store(next, Ordering::SeqCst);
                Ok(Step::Next)
            },
            move || s3.generation.load(Ordering::SeqCst) == gen,
        )
        .await
    });
    tokio::spawn(heartbeat_loop(sim, events, gen));
}

async fn register(sim: &Sim, events: &Events) -> bool {
    let incarnation_id = Uuid::new_v4();
    for _ in 0..120 {
        let req = ControllerRequest::RegisterBroker {
            node_id: sim.id,
            incarnation_id,
            rack: Some(sim.rack.clone()),
            endpoints: vec![fjord_metadata::Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
                security_protocol: "PLAINTEXT".into(),
            }],
        };
        match sim.client.submit(req, Duration::from_secs(10)).await {
            Ok(c) => {
                if let ControllerReply::Registered { broker_epoch } = c.reply {
                    sim.epoch.store(broker_epoch, Ordering::SeqCst);
                    events.push(sim.id, EventKind::Registered(broker_epoch));
                    return true;
                }
            }
            Err(e) => events.push(sim.id, EventKind::HeartbeatFailed(format!("register: {e}"))),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// A broker's heartbeats as `fjord_broker::cluster::heartbeat_loop` sends them: the same
/// [`HeartbeatSchedule`] (next one an interval after a success, soon after a failure) and the
/// same [`ControllerClient::send_heartbeat`]; what differs is only what is recorded.
async fn heartbeat_loop(sim: Arc<Sim>, events: Arc<Events>, gen: u64) {
    let mut schedule = HeartbeatSchedule::new(HEARTBEAT_INTERVAL, sim.id as u64);
    let mut last_ok = Instant::now();
    let mut session_lapsed = false;
    let mut first_failure: Option<Instant> = None;
    let mut fenced = true;
    while sim.generation.load(Ordering::SeqCst) == gen {
        if sim.heartbeating.load(Ordering::SeqCst) {
            let req = ControllerRequest::Heartbeat {
                node_id: sim.id,
                broker_epoch: sim.epoch.load(Ordering::SeqCst),
                current_metadata_offset: sim.applied.load(Ordering::SeqCst) - 1,
                want_fence: false,
            };
            let pause = match sim.client.send_heartbeat(req, &schedule).await {
                Ok(c) => {
                    sim.heartbeats.fetch_add(1, Ordering::Relaxed);
                    let gap = last_ok.elapsed();
                    if gap >= SESSION_TIMEOUT && !session_lapsed {
                        // A gap as long as a session: only a new active controller's fresh
                        // sessions (Controller::activate) would keep this broker unfenced.
                        events.push_at(
                            first_failure.unwrap_or_else(Instant::now),
                            sim.id,
                            EventKind::NoHeartbeatForSession,
                        );
                    }
                    if gap > LATE_GAP {
                        // Counted in the scenario where heartbeats began to fail.
                        events.push_at(
                            first_failure.unwrap_or_else(Instant::now),
                            sim.id,
                            EventKind::HeartbeatGap(gap.as_millis() as u64),
                        );
                    }
                    last_ok = Instant::now();
                    first_failure = None;
                    session_lapsed = false;
                    if let ControllerReply::Heartbeat { is_fenced, .. } = c.reply {
                        if is_fenced && !fenced {
                            events.push(sim.id, EventKind::ReportedFenced);
                        }
                        fenced = is_fenced;
                    }
                    schedule.succeeded()
                }
                Err(SubmitError::Refused { code, message }) => {
                    events.push(
                        sim.id,
                        EventKind::HeartbeatRefused(format!("{code}: {message}")),
                    );
                    if sim.generation.load(Ordering::SeqCst) == gen && register(&sim, &events).await
                    {
                        fenced = true;
                    }
                    schedule.succeeded();
                    continue;
                }
                Err(e) => {
                    first_failure.get_or_insert_with(Instant::now);
                    events.push(sim.id, EventKind::HeartbeatFailed(e.to_string()));
                    if !session_lapsed && last_ok.elapsed() >= SESSION_TIMEOUT {
                        session_lapsed = true;
                        events.push(sim.id, EventKind::NoHeartbeatForSession);
                    }
                    schedule.failed()
                }
            };
            tokio::time::sleep(pause).await;
        } else {
            last_ok = Instant::now();
            fenced = true;
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The observer: one follower with a full image

#[derive(Default)]
struct Observer {
    image: ClusterImage,
    offset: i64,
    /// The image being fetched part by part.
    parts: ClusterImage,
}

fn start_observer(voters: Vec<String>, events: Arc<Events>) -> Arc<Mutex<Observer>> {
    let obs = Arc::new(Mutex::new(Observer::default()));
    let o = obs.clone();
    // Its own thread and runtime: applying records must not delay the brokers' heartbeats.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("observer runtime");
        let o2 = o.clone();
        let ev = events.clone();
        rt.block_on(follow_loop(
            voters,
            0,
            events,
            move || o2.lock().expect("observer").offset,
            move |body| {
                let reply: Reply = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                let mut g = o.lock().expect("observer");
                let chunk = match reply {
                    Reply::Metadata(chunk) => chunk,
                    Reply::ImagePart(Some(p)) => {
                        if p.part == 0 {
                            g.parts = ClusterImage::default();
                        }
                        for r in &p.records {
                            g.parts.apply(r);
                        }
                        if p.part + 1 < p.parts {
                            return Ok(Step::Part {
                                offset: p.offset,
                                part: p.part + 1,
                            });
                        }
                        MetadataChunk::Image {
                            offset: p.offset,
                            image: Box::new(std::mem::take(&mut g.parts)),
                        }
                    }
                    _ => return Err("unexpected reply".into()),
                };
                match chunk {
                    MetadataChunk::Records { base, records } => {
                        if base != g.offset {
                            return Ok(Step::Next);
                        }
                        for r in &records {
                            match r {
                                MetadataRecord::FenceBroker { node_id, .. } => {
                                    ev.push(*node_id, EventKind::FenceRecord)
                                }
                                MetadataRecord::RegisterBroker { node_id, .. } => {
                                    ev.push(*node_id, EventKind::RegisterRecord)
                                }
                                _ => {}
                            }
                            g.image.apply(r);
                        }
                        g.offset = base + records.len() as i64;
                    }
                    MetadataChunk::Image { offset, image } => {
                        g.image = *image;
                        g.offset = offset;
                    }
                }
                Ok(Step::Next)
            },
            || true,
        ));
    });
    obs
}

// ---------------------------------------------------------------------------------------
// The driver

struct Figure {
    scenario: String,
    figure: String,
    value: String,
}

struct Bench {
    args: Args,
    ctl: Controllers,
    voters: Vec<String>,
    client: ControllerClient,
    sims: Vec<Arc<Sim>>,
    events: Arc<Events>,
    obs: Arc<Mutex<Observer>>,
    figures: Vec<Figure>,
    /// (name, start, end, nodes fenced on purpose)
    phases: Vec<(String, Instant, Instant, Vec<NodeId>)>,
    samples: Arc<Mutex<Vec<String>>>,
    pids: Arc<Mutex<BTreeMap<u64, u32>>>,
    t0: Instant,
    topics: Vec<String>,
    failures: Vec<String>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl Bench {
    fn fig(&mut self, scenario: &str, figure: &str, value: impl Into<String>) {
        let value = value.into();
        println!("  {scenario:<22} {figure:<58} {value}");
        self.figures.push(Figure {
            scenario: scenario.into(),
            figure: figure.into(),
            value,
        });
    }

    fn fail(&mut self, what: String) {
        println!("  FAILED: {what}");
        self.failures.push(what);
    }

    fn sim(&self, id: NodeId) -> &Arc<Sim> {
        &self.sims[(id - FIRST_BROKER) as usize]
    }

    /// Poll `cond` every 50 ms until it holds; the time it took, or `None` after `limit`.
    async fn wait(
        &self,
        limit: Duration,
        mut cond: impl FnMut(&Bench) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn observed<T>(&self, f: impl FnOnce(&Observer) -> T) -> T {
        f(&self.obs.lock().expect("observer"))
    }

    fn led_by(&self, id: NodeId) -> usize {
        self.observed(|o| o.image.partitions_led_by(id).count())
    }

    fn all_caught_up(&self, offset: i64) -> bool {
        self.observed(|o| o.offset) >= offset
            && self
                .sims
                .iter()
                .all(|s| s.applied.load(Ordering::SeqCst) >= offset)
    }

    fn controllers_usage(&mut self, scenario: &str) {
        let pids = self.pids.lock().expect("pids").clone();
        for (id, pid) in pids {
            if let Some((rss, hwm, cpu)) = proc_usage(pid) {
                self.fig(
                    scenario,
                    &format!("controller {id}: RSS / peak RSS / CPU time"),
                    format!("{} / {} / {cpu:.1} s", mib(rss << 10), mib(hwm << 10)),
                );
            }
        }
    }

    fn disk_usage(&mut self, scenario: &str) {
        for i in 0..self.ctl.procs.len() {
            let (id, q) = (self.ctl.procs[i].id, self.ctl.procs[i].quorum_dir());
            let log = file_size(&q.join("raft-log.jsonl")).unwrap_or(0);
            let snap = file_size(&q.join("snapshot.json"));
            self.fig(
                scenario,
                &format!("controller {id}: raft log / snapshot / quorum dir"),
                format!(
                    "{} / {} / {}",
                    mib(log),
                    snap.map_or("none".into(), mib),
                    mib(dir_size(&q))
                ),
            );
        }
    }

    async fn submit(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<(ControllerReply, i64), String> {
        self.client
            .submit(req, timeout)
            .await
            .map(|c| (c.reply, c.offset))
            .map_err(|e| e.to_string())
    }

    fn begin(&self) -> Instant {
        Instant::now()
    }

    fn end(&mut self, name: &str, start: Instant, fenced_on_purpose: Vec<NodeId>) {
        self.phases
            .push((name.into(), start, Instant::now(), fenced_on_purpose));
    }

    async fn register_all(&mut self) {
        let start = self.begin();
        let mut set = tokio::task::JoinSet::new();
        for s in &self.sims {
            let (s, ev) = (s.clone(), self.events.clone());
            set.spawn(async move { register(&s, &ev).await });
        }
        while set.join_next().await.is_some() {}
        for s in &self.sims {
            start_sim_tasks(s.clone(), self.voters.clone(), self.events.clone());
        }
        let n = self.sims.len();
        let unfenced = self
            .wait(STEP_TIMEOUT, |b| {
                b.observed(|o| o.image.brokers().filter(|x| !x.fenced).count()) == n
            })
            .await;
        match unfenced {
            Some(_) => {
                let t = start.elapsed();
                self.fig(
                    "register",
                    &format!("{n} brokers registered and unfenced"),
                    secs(t),
                );
            }
            None => self.fail("brokers were not all unfenced".into()),
        }
        self.end("register", start, vec![]);
    }

    async fn create_topics(&mut self) {
        let a = &self.args;
        let per_topic_replicas = a.per_topic as u64 * a.rf as u64;
        let topics = a.replicas.div_ceil(per_topic_replicas);
        let (per_topic, rf) = (a.per_topic, a.rf);
        let start = self.begin();
        let mut latencies = Vec::new();
        let mut last_offset = 0;
        for i in 0..topics {
            let name = format!("scale-{i:05}");
            let t = Instant::now();
            let req = ControllerRequest::CreateTopic {
                name: name.clone(),
                topic_id: Uuid::new_v4(),
                partitions: per_topic,
                replication_factor: rf,
                configs: BTreeMap::new(),
                validate_only: false,
            };
            match self.submit(req, Duration::from_secs(120)).await {
                Ok((_, offset)) => last_offset = offset,
                Err(e) => {
                    self.fail(format!("CreateTopic {name}: {e}"));
                    break;
                }
            }
            latencies.push(t.elapsed());
            self.topics.push(name);
        }
        let created = start.elapsed();
        let replicas = self.topics.len() as u64 * per_topic_replicas;
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        self.fig(
            "create topics",
            &format!(
                "{} topics x {per_topic} partitions, RF {rf} ({replicas} replicas)",
                self.topics.len()
            ),
            secs(created),
        );
        if !latencies.is_empty() {
            self.fig(
                "create topics",
                "one CreateTopic: p50 / p99 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    pct(0.5).as_secs_f64() * 1e3,
                    pct(0.99).as_secs_f64() * 1e3,
                    latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
                ),
            );
            self.fig(
                "create topics",
                "partitions created per second",
                format!(
                    "{:.0}",
                    (self.topics.len() as f64 * per_topic as f64) / created.as_secs_f64()
                ),
            );
        }
        match self
            .wait(STEP_TIMEOUT, |b| b.all_caught_up(last_offset))
            .await
        {
            Some(_) => {
                let t = start.elapsed();
                self.fig(
                    "create topics",
                    "every broker caught up (from first request)",
                    secs(t),
                );
            }
            None => self.fail(format!("brokers did not catch up to offset {last_offset}")),
        }
        self.fig(
            "create topics",
            "metadata offset (records)",
            last_offset.to_string(),
        );
        let bytes: Vec<u64> = self
            .sims
            .iter()
            .map(|s| s.fetched_bytes.load(Ordering::Relaxed))
            .collect();
        self.fig(
            "create topics",
            "metadata fetched per broker (incl. registration)",
            mib(bytes.iter().sum::<u64>() / bytes.len().max(1) as u64),
        );
        self.end("create topics", start, vec![]);
        self.controllers_usage("after create");
        self.disk_usage("after create");
    }

    /// Drive the controllers to their snapshot policy (a snapshot every 10,000 Raft entries,
    /// as `fjord server` configures it): small writes (one topic config record each, 16 in
    /// flight) until `snapshot.json` is on every controller. Times the writes and the
    /// appearance of each snapshot; the heartbeats of this phase show whether building one
    /// stalls the controller.
    async fn snapshot_on_controllers(&mut self) {
        let scenario = "snapshot (controllers)";
        let start = self.begin();
        let Some(topic) = self.topics.first().cloned() else {
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for w in 0..16u64 {
            let (client, stop, writes, errors, topic) = (
                ControllerClient::new(self.ctl.voters.clone()),
                stop.clone(),
                writes.clone(),
                errors.clone(),
                topic.clone(),
            );
            set.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let req = ControllerRequest::AlterTopicConfigs {
                        name: topic.clone(),
                        changes: vec![(
                            "retention.ms".into(),
                            Some((86_400_000 + w * 1_000_000 + i).to_string()),
                        )],
                    };
                    match client.submit(req, Duration::from_secs(30)).await {
                        Ok(_) => writes.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        let mut seen: BTreeMap<u64, (Duration, u64, u64)> = BTreeMap::new();
        let limit = Duration::from_secs(300);
        while start.elapsed() < limit && seen.len() < self.ctl.procs.len() {
            for p in &self.ctl.procs {
                if seen.contains_key(&p.id) {
                    continue;
                }
                if let Some(size) = file_size(&p.quorum_dir().join("snapshot.json")) {
                    seen.insert(
                        p.id,
                        (start.elapsed(), writes.load(Ordering::Relaxed), size),
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::SeqCst);
        while set.join_next().await.is_some() {}
        let n = writes.load(Ordering::Relaxed);
        let t = start.elapsed();
        self.fig(
            scenario,
            &format!(
                "{n} one-record writes, 16 in flight ({} failed)",
                errors.load(Ordering::Relaxed)
            ),
            format!("{} ({:.0}/s)", secs(t), n as f64 / t.as_secs_f64()),
        );
        for p in 0..self.ctl.procs.len() {
            let id = self.ctl.procs[p].id;
            match seen.get(&id) {
                Some((at, after, size)) => self.fig(
                    scenario,
                    &format!("controller {id}: snapshot.json on disk (after {after} writes)"),
                    format!("{} at {}", mib(*size), secs(*at)),
                ),
                None => self.fail(format!(
                    "{scenario}: controller {id} wrote no snapshot within {limit:?}"
                )),
            }
        }
        // Let the file be complete (it is written whole, then renamed) and the log purged.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for p in 0..self.ctl.procs.len() {
            let (id, dir, starts) = {
                let c = &self.ctl.procs[p];
                (c.id, c.dir.clone(), c.starts)
            };
            let log = std::fs::read_to_string(dir.join(format!("server-{starts}.log")))
                .unwrap_or_default();
            if let Some(t) = snapshot_build_secs(&log) {
                self.fig(
                    scenario,
                    &format!("controller {id}: snapshot build + write (openraft log lines)"),
                    format!("{t:.2} s"),
                );
            }
        }
        self.end(scenario, start, vec![]);
        self.controllers_usage("after snapshot");
        self.disk_usage("after snapshot");
    }

    /// One real broker (`fjord server`, `process.roles = "broker"`) joins after the topics
    /// exist, so it hosts no replica: the time until it is ready (registered, image loaded,
    /// unfenced), its RSS with the whole image, and a Kafka Metadata request for all topics
    /// (v1, as old clients send it) answered by it. Then it shuts down (controlled).
    async fn real_broker(&mut self) {
        let scenario = "real broker";
        const NODE: NodeId = 900;
        let start = self.begin();
        let dir = self.ctl.dir.join("broker-900");
        let port = match std::net::TcpListener::bind(("127.0.1.9", 0)).and_then(|l| l.local_addr())
        {
            Ok(a) => a.port(),
            Err(e) => {
                self.fail(format!("{scenario}: {e}"));
                return;
            }
        };
        let voters = self
            .ctl
            .voters
            .iter()
            .map(|(id, a)| format!("{id}@{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let toml = format!(
            "node.id = {NODE}\nprocess.roles = \"broker\"\nlisteners = \"PLAINTEXT://127.0.1.9:{port}\"\n\
             controller.quorum.voters = \"{voters}\"\nadmin.listener = \"127.0.1.9:0\"\n\
             log.dirs = {:?}\n",
            dir.join("data").display().to_string()
        );
        if let Err(e) = std::fs::create_dir_all(dir.join("data"))
            .and_then(|_| std::fs::write(dir.join("node.toml"), toml))
        {
            self.fail(format!("{scenario}: {e}"));
            return;
        }
        let mut proc = ControllerProc {
            id: NODE as u64,
            addr: format!("127.0.1.9:{port}"),
            dir,
            child: None,
            starts: 0,
        };
        let t = Instant::now();
        let rx = proc.spawn(&self.args.fjord);
        if let Err(e) = wait_ready(&rx, "real broker") {
            self.fail(format!("{scenario}: {e}"));
            proc.kill();
            return;
        }
        self.fig(
            scenario,
            "ready (registered, image loaded, unfenced)",
            secs(t.elapsed()),
        );
        let pid = proc.pid().unwrap_or(0);
        if let Some((rss, hwm, cpu)) = proc_usage(pid) {
            self.fig(
                scenario,
                "RSS / peak RSS / CPU time with the whole image",
                format!("{} / {} / {cpu:.1} s", mib(rss << 10), mib(hwm << 10)),
            );
        }
        for round in 1..=3 {
            match kafka_metadata_all(&proc.addr).await {
                Ok((bytes, took)) => self.fig(
                    scenario,
                    &format!("Metadata v1, all topics (round {round}): response"),
                    format!(
                        "{} in {:.0} ms",
                        mib(bytes as u64),
                        took.as_secs_f64() * 1e3
                    ),
                ),
                Err(e) => self.fail(format!("{scenario}: Metadata request: {e}")),
            }
        }
        if let Some((rss, hwm, _)) = proc_usage(pid) {
            self.fig(
                scenario,
                "RSS / peak RSS after the Metadata requests",
                format!("{} / {}", mib(rss << 10), mib(hwm << 10)),
            );
        }
        // Controlled shutdown (SIGTERM, by its PID): it asks to be fenced before it stops.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if let Some(mut c) = proc.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Its fencing is on purpose: wait for it inside this scenario.
        self.wait(Duration::from_secs(30), |b| {
            b.observed(|o| o.image.broker(NODE).is_none_or(|x| x.fenced))
        })
        .await;
        self.end(scenario, start, vec![NODE]);
    }

    /// Build a snapshot from the observer's image as the state machine does
    /// (`to_records`, JSON, then the file as `state_machine` writes it: a header line and the
    /// data), write it, read it back and rebuild the image.
    fn snapshot_costs(&mut self) {
        #[derive(Serialize, Deserialize)]
        struct Data {
            offset: i64,
            records: Vec<MetadataRecord>,
        }
        let (image, offset) = self.observed(|o| (o.image.clone(), o.offset));
        let t = Instant::now();
        let records = image.to_records();
        let t_records = t.elapsed();
        let data = serde_json::to_vec(&Data { offset, records }).expect("encode");
        let t_data = t.elapsed();
        // The header line (openraft's snapshot meta, small), the data, a newline.
        let mut file = br#"{"format":2,"meta":{}}"#.to_vec();
        file.push(b'\n');
        file.extend_from_slice(&data);
        file.push(b'\n');
        let t_file = t.elapsed();
        let path = self.args.work.join(format!(
            "fjord-control-plane-snapshot-{}.json",
            std::process::id()
        ));
        let written =
            std::fs::write(&path, &file).and_then(|_| std::fs::File::open(&path)?.sync_all());
        let t_write = t.elapsed();
        self.fig(
            "snapshot (in bench)",
            "image -> records / + JSON / + file (header line + data) / + write+fsync",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} s",
                t_records.as_secs_f64(),
                t_data.as_secs_f64(),
                t_file.as_secs_f64(),
                t_write.as_secs_f64()
            ),
        );
        self.fig(
            "snapshot (in bench)",
            "records JSON / snapshot.json as written (header line + data)",
            format!("{} / {}", mib(data.len() as u64), mib(file.len() as u64)),
        );
        if let Err(e) = written {
            self.fail(format!("writing the snapshot: {e}"));
        }
        drop(data);
        let t = Instant::now();
        let eol = file.iter().position(|b| *b == b'\n').expect("header line");
        let d: Data = serde_json::from_slice(&file[eol + 1..file.len() - 1]).expect("decode");
        let rebuilt = ClusterImage::from_records(&d.records);
        let t_load = t.elapsed();
        assert_eq!(rebuilt.topic_count(), image.topic_count());
        self.fig(
            "snapshot (in bench)",
            "load: records JSON + image",
            secs(t_load),
        );
        let _ = std::fs::remove_file(&path);
    }

    /// The leaders put `node` back into the ISRs it was taken out of (as each leader would
    /// once the follower caught up: one AlterPartitions per leader), then the preferred
    /// election moves its leaderships back. Returns (ISR expansion, election) times.
    async fn restore(&mut self, node: NodeId, scenario: &str) -> Option<(Duration, Duration)> {
        let start = Instant::now();
        let by_leader: HashMap<NodeId, Vec<AlterPartitionItem>> = self.observed(|o| {
            let mut m: HashMap<NodeId, Vec<AlterPartitionItem>> = HashMap::new();
            for (topic_id, partition, st) in o.image.all_partitions() {
                if st.replicas.contains(&node) && !st.isr.contains(&node) && st.leader >= 0 {
                    let mut new_isr = st.isr.clone();
                    new_isr.push(node);
                    m.entry(st.leader).or_default().push(AlterPartitionItem {
                        topic_id,
                        partition,
                        leader_epoch: st.leader_epoch,
                        partition_epoch: st.partition_epoch,
                        new_isr,
                    });
                }
            }
            m
        });
        let expected: usize = by_leader.values().map(Vec::len).sum();
        let mut set = tokio::task::JoinSet::new();
        for (leader, items) in by_leader {
            let sim = self.sim(leader).clone();
            set.spawn(async move {
                let req = ControllerRequest::AlterPartitions {
                    node_id: leader,
                    broker_epoch: sim.epoch.load(Ordering::SeqCst),
                    partitions: items,
                };
                match sim.client.submit(req, Duration::from_secs(60)).await {
                    Ok(c) => match c.reply {
                        ControllerReply::PartitionsAltered { results } => {
                            Ok(results.iter().filter(|r| r.error != 0).count())
                        }
                        other => Err(format!("{other:?}")),
                    },
                    Err(e) => Err(e.to_string()),
                }
            });
        }
        let mut refused = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(n)) => refused += n,
                Ok(Err(e)) => self.fail(format!("{scenario}: AlterPartitions: {e}")),
                Err(e) => self.fail(format!("{scenario}: AlterPartitions task: {e}")),
            }
        }
        let isr_done = self
            .wait(STEP_TIMEOUT, |b| {
                b.observed(|o| {
                    o.image
                        .all_partitions()
                        .filter(|(_, _, s)| s.replicas.contains(&node) && !s.isr.contains(&node))
                        .count()
                }) == 0
            })
            .await;
        let t_isr = start.elapsed();
        self.fig(
            scenario,
            &format!("ISR expansion: {expected} partitions back in sync ({refused} refused)"),
            if isr_done.is_some() {
                secs(t_isr)
            } else {
                "TIMEOUT".into()
            },
        );
        isr_done?;
        let preferred = self.observed(|o| {
            o.image
                .all_partitions()
                .filter(|(_, _, s)| s.preferred_leader() == node)
                .count()
        });
        let t = Instant::now();
        match self
            .submit(
                ControllerRequest::ElectPreferredLeaders,
                Duration::from_secs(60),
            )
            .await
        {
            Ok((ControllerReply::LeadersElected { partitions }, _)) => self.fig(
                scenario,
                "preferred election: partitions moved",
                partitions.to_string(),
            ),
            Ok((other, _)) => self.fail(format!("{scenario}: ElectPreferredLeaders: {other:?}")),
            Err(e) => self.fail(format!("{scenario}: ElectPreferredLeaders: {e}")),
        }
        let back = self
            .wait(STEP_TIMEOUT, |b| b.led_by(node) >= preferred)
            .await;
        let t_elect = t.elapsed();
        self.fig(
            scenario,
            &format!("preferred election: {preferred} leaderships back"),
            if back.is_some() {
                secs(t_elect)
            } else {
                "TIMEOUT".into()
            },
        );
        back.map(|_| (t_isr, t_elect))
    }

    async fn missed_heartbeats(&mut self) {
        let scenario = "heartbeats stop";
        let node = FIRST_BROKER;
        let start = self.begin();
        let led = self.led_by(node);
        let sim = self.sim(node).clone();
        // Stop right after a heartbeat, so the session runs from a known time.
        let before = sim.heartbeats.load(Ordering::SeqCst);
        self.wait(Duration::from_secs(10), |_| {
            sim.heartbeats.load(Ordering::SeqCst) > before
        })
        .await;
        sim.heartbeating.store(false, Ordering::SeqCst);
        let last = Instant::now();
        let fenced = self
            .wait(STEP_TIMEOUT, |b| {
                b.observed(|o| o.image.broker(node).is_some_and(|x| x.fenced))
            })
            .await;
        let t_fenced = last.elapsed();
        let moved = self.wait(STEP_TIMEOUT, |b| b.led_by(node) == 0).await;
        let t_moved = last.elapsed();
        match (fenced, moved) {
            (Some(_), Some(_)) => {
                self.fig(scenario, "fenced, after the last heartbeat", secs(t_fenced));
                self.fig(
                    scenario,
                    &format!("{led} leaderships moved, after the last heartbeat"),
                    secs(t_moved),
                );
                self.fig(
                    scenario,
                    "... of which beyond the session timeout (9 s)",
                    secs(t_moved.saturating_sub(SESSION_TIMEOUT)),
                );
            }
            _ => self.fail(format!(
                "{scenario}: broker {node} not fenced / leaderships not moved"
            )),
        }
        sim.heartbeating.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let unfenced = self
            .wait(STEP_TIMEOUT, |b| {
                b.observed(|o| o.image.broker(node).is_some_and(|x| !x.fenced))
            })
            .await;
        self.fig(
            scenario,
            "unfenced after heartbeats resume",
            if unfenced.is_some() {
                secs(t.elapsed())
            } else {
                "TIMEOUT".into()
            },
        );
        self.end(scenario, start, vec![node]);
        let start = self.begin();
        self.restore(node, scenario).await;
        self.end("heartbeats stop: restore", start, vec![]);
    }

    async fn bounce(&mut self) {
        let scenario = "broker bounce";
        let node = FIRST_BROKER + 1;
        let start = self.begin();
        let led = self.led_by(node);
        let sim = self.sim(node).clone();
        let bytes_before: Vec<u64> = self
            .sims
            .iter()
            .map(|s| s.fetched_bytes.load(Ordering::Relaxed))
            .collect();
        // Controlled shutdown: heartbeats stop (a real broker's carry want_fence from now on),
        // then one asks to be fenced; the controller moves the leaderships in one batch.
        sim.heartbeating.store(false, Ordering::SeqCst);
        let t = Instant::now();
        let req = ControllerRequest::Heartbeat {
            node_id: node,
            broker_epoch: sim.epoch.load(Ordering::SeqCst),
            current_metadata_offset: sim.applied.load(Ordering::SeqCst) - 1,
            want_fence: true,
        };
        let committed = sim.client.submit(req, Duration::from_secs(30)).await;
        let t_commit = t.elapsed();
        let away = self.wait(STEP_TIMEOUT, |b| b.led_by(node) == 0).await;
        let t_away = t.elapsed();
        match (committed, away) {
            (Ok(c), Some(_)) => {
                self.fig(
                    scenario,
                    &format!("controlled shutdown: {led} leaderships moved, committed"),
                    secs(t_commit),
                );
                self.fig(
                    scenario,
                    "controlled shutdown: seen by a broker",
                    secs(t_away),
                );
                let _ = c;
            }
            (c, _) => self.fail(format!("{scenario}: controlled shutdown: {:?}", c.err())),
        }
        // Stop, and start again with an empty metadata cache (as a restarted broker does).
        sim.generation.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(700)).await;
        sim.applied.store(0, Ordering::SeqCst);
        let own_before = sim.fetched_bytes.load(Ordering::Relaxed);
        sim.heartbeating.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let ok = register(&sim, &self.events).await;
        start_sim_tasks(sim.clone(), self.voters.clone(), self.events.clone());
        let unfenced = ok
            && self
                .wait(STEP_TIMEOUT, |b| {
                    b.observed(|o| o.image.broker(node).is_some_and(|x| !x.fenced))
                })
                .await
                .is_some();
        let t_unfenced = t.elapsed();
        self.fig(
            scenario,
            "restart: registered, caught up and unfenced",
            if unfenced {
                secs(t_unfenced)
            } else {
                "TIMEOUT".into()
            },
        );
        self.fig(
            scenario,
            "restart: metadata the restarted broker fetched",
            mib(sim.fetched_bytes.load(Ordering::Relaxed) - own_before),
        );
        if let Some((isr, elect)) = self.restore(node, scenario).await {
            self.fig(
                scenario,
                "restart to leaderships back (register .. election)",
                secs(t_unfenced + isr + elect),
            );
        }
        let mut deltas: Vec<u64> = self
            .sims
            .iter()
            .zip(&bytes_before)
            .filter(|(s, _)| s.id != node)
            .map(|(s, b)| s.fetched_bytes.load(Ordering::Relaxed) - b)
            .collect();
        deltas.sort();
        if !deltas.is_empty() {
            self.fig(
                scenario,
                "metadata deltas each other broker fetched: min / median / max",
                format!(
                    "{:.0} / {:.0} / {:.0} KiB",
                    deltas[0] as f64 / 1024.0,
                    deltas[deltas.len() / 2] as f64 / 1024.0,
                    deltas[deltas.len() - 1] as f64 / 1024.0
                ),
            );
        }
        self.end(scenario, start, vec![node]);
    }

    async fn failover(&mut self) {
        let scenario = "controller failover";
        let start = self.begin();
        let active = match self.client.status(Duration::from_secs(10)).await {
            Ok(s) => s.active_controller,
            Err(e) => {
                self.fail(format!("{scenario}: status: {e}"));
                None
            }
        };
        let Some(active) = active.map(|a| a as u64) else {
            self.end(scenario, start, vec![]);
            return;
        };
        self.fig(
            scenario,
            "killed (SIGKILL) the active controller",
            format!("node {active}"),
        );
        let t = Instant::now();
        self.ctl.by_id(active).kill();
        self.pids.lock().expect("pids").remove(&active);
        let probe = ControllerRequest::CreateTopic {
            name: "failover-probe".into(),
            topic_id: Uuid::new_v4(),
            partitions: 1,
            replication_factor: 3,
            configs: BTreeMap::new(),
            validate_only: false,
        };
        let served = self.submit(probe, Duration::from_secs(120)).await;
        let t_served = t.elapsed();
        let new_active = self
            .client
            .status(Duration::from_secs(10))
            .await
            .ok()
            .and_then(|s| s.active_controller);
        let probe_offset = match served {
            Ok((_, offset)) => {
                self.fig(
                    scenario,
                    &format!("new active controller (node {new_active:?}) committed a request"),
                    secs(t_served),
                );
                offset
            }
            Err(e) => {
                self.fail(format!(
                    "{scenario}: no controller served within 120 s: {e}"
                ));
                0
            }
        };
        self.topics.push("failover-probe".into());
        self.controllers_usage("after failover");
        // Restart the killed one: ready line, then caught up with the quorum.
        let fjord = self.args.fjord.clone();
        let t = Instant::now();
        let rx = self.ctl.by_id(active).spawn(&fjord);
        match wait_ready(&rx, "restarted controller") {
            Ok(()) => self.fig(
                scenario,
                "killed controller restarted: ready line",
                secs(t.elapsed()),
            ),
            Err(e) => self.fail(format!("{scenario}: {e}")),
        }
        if let Some(pid) = self.ctl.by_id(active).pid() {
            self.pids.lock().expect("pids").insert(active, pid);
        }
        let addr = self.ctl.by_id(active).addr.clone();
        let mut caught_up = None;
        while probe_offset > 0 && t.elapsed() < Duration::from_secs(180) {
            if let Ok(Some(Reply::Status(s))) = raw_call(&addr, &Request::Status).await {
                if s.metadata_offset >= probe_offset {
                    caught_up = Some(t.elapsed());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.fig(
            scenario,
            "killed controller restarted: caught up with the log",
            match caught_up {
                Some(t) => secs(t),
                None if probe_offset == 0 => "n/a (no request committed)".into(),
                None => "TIMEOUT (180 s)".into(),
            },
        );
        self.end(scenario, start, vec![]);
        self.controllers_usage("after restart");
    }

    async fn delete_topics(&mut self) {
        let scenario = "delete topics";
        let start = self.begin();
        let names = std::mem::take(&mut self.topics);
        let mut last = 0;
        let mut deleted = 0;
        for name in &names {
            match self
                .submit(
                    ControllerRequest::DeleteTopic { name: name.clone() },
                    Duration::from_secs(120),
                )
                .await
            {
                Ok((_, offset)) => {
                    last = offset;
                    deleted += 1;
                }
                Err(e) => {
                    self.fail(format!("DeleteTopic {name}: {e}"));
                    break;
                }
            }
        }
        self.fig(
            scenario,
            &format!("{deleted} of {} topics deleted", names.len()),
            secs(start.elapsed()),
        );
        let caught = self.wait(STEP_TIMEOUT, |b| b.all_caught_up(last)).await;
        self.fig(
            scenario,
            "every broker caught up",
            caught.map_or("TIMEOUT".into(), |_| secs(start.elapsed())),
        );
        self.end(scenario, start, vec![]);
        self.controllers_usage("after delete");
        self.disk_usage("after delete");
    }

    /// Heartbeat failures, late heartbeats and fencings nobody asked for, per phase.
    fn heartbeat_health(&mut self) {
        let events = self.events.0.lock().expect("events");
        let mut rows = Vec::new();
        let mut accidental_total = 0;
        for (name, start, end, on_purpose) in &self.phases {
            let within = |e: &&Event| e.at >= *start && e.at <= *end;
            let mine = |e: &&Event| on_purpose.contains(&e.node);
            let failed = events
                .iter()
                .filter(within)
                .filter(|e| !mine(e))
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::HeartbeatFailed(_) | EventKind::HeartbeatRefused(_)
                    )
                })
                .count();
            let gaps: Vec<u64> = events
                .iter()
                .filter(within)
                .filter(|e| !mine(e))
                .filter_map(|e| match e.kind {
                    EventKind::HeartbeatGap(ms) => Some(ms),
                    _ => None,
                })
                .collect();
            let accidental = events
                .iter()
                .filter(within)
                .filter(|e| !mine(e))
                .filter(|e| matches!(e.kind, EventKind::FenceRecord | EventKind::ReportedFenced))
                .count();
            accidental_total += accidental;
            let lapsed = events
                .iter()
                .filter(within)
                .filter(|e| !mine(e))
                .filter(|e| matches!(e.kind, EventKind::NoHeartbeatForSession))
                .count();
            rows.push((
                name.clone(),
                format!(
                    "{failed} failed, {} late (> {} s, max {:.1} s), {lapsed} gaps >= the session timeout, {accidental} accidental fencings",
                    gaps.len(),
                    LATE_GAP.as_secs(),
                    gaps.iter().max().copied().unwrap_or(0) as f64 / 1e3
                ),
            ));
        }
        let too_large = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::FrameTooLarge(_)))
            .count();
        let fetch_failed = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::FetchFailed(_)))
            .count();
        drop(events);
        for (name, v) in rows {
            self.fig("heartbeats", &format!("during {name}"), v);
        }
        self.fig(
            "heartbeats",
            "accidental fencings, all scenarios",
            accidental_total.to_string(),
        );
        self.fig(
            "metadata fetch",
            &format!(
                "frames over MAX_FRAME ({}) / failed fetches",
                mib(MAX_FRAME as u64)
            ),
            format!("{too_large} / {fetch_failed}"),
        );
    }
}

/// Seconds between openraft's "push snapshot building command" and the "update_snapshot"
/// that follows it (both at INFO) in a controller's log: building and writing one snapshot.
fn snapshot_build_secs(log: &str) -> Option<f64> {
    // "2026-12-05T08:36:17.875060Z  INFO ...": seconds of the day.
    let secs_of = |line: &str| -> Option<f64> {
        let t = line.get(11..26)?;
        let h: f64 = t.get(0..2)?.parse().ok()?;
        let m: f64 = t.get(3..5)?.parse().ok()?;
        let s: f64 = t.get(6..)?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("push snapshot building command"))?;
    let end = lines[start..]
        .iter()
        .find(|l| l.contains("update_snapshot"))?;
    Some(secs_of(end)? - secs_of(lines[start])?)
}

/// A Kafka Metadata request v1 for all topics (`topics` null) to `addr`: the response's size
/// and the time until it was read whole.
async fn kafka_metadata_all(addr: &str) -> std::io::Result<(usize, Duration)> {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await?;
    let mut req = Vec::new();
    req.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    req.extend_from_slice(&1i16.to_be_bytes()); // version 1
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&5i16.to_be_bytes());
    req.extend_from_slice(b"bench");
    req.extend_from_slice(&(-1i32).to_be_bytes()); // topics: null = all
    let mut frame = (req.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), async {
        s.write_all(&frame).await?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 30 {
            return Err(std::io::Error::other("response larger than 1 GiB"));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await?;
        Ok((len + 4, t.elapsed()))
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

/// One request to one controller, its reply.
async fn raw_call(addr: &str, req: &Request) -> std::io::Result<Option<Reply>> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = TcpStream::connect(addr).await?;
        write_frame(&mut s, req).await?;
        read_frame::<_, Reply>(&mut s).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

fn start_sampler(
    pids: Arc<Mutex<BTreeMap<u64, u32>>>,
    samples: Arc<Mutex<Vec<String>>>,
    t0: Instant,
    own: u32,
) {
    std::thread::spawn(move || loop {
        let now = t0.elapsed().as_secs_f64();
        let mut all: Vec<(String, u32)> = pids
            .lock()
            .expect("pids")
            .iter()
            .map(|(id, pid)| (format!("controller-{id}"), *pid))
            .collect();
        all.push(("bench".into(), own));
        let mut out = samples.lock().expect("samples");
        for (name, pid) in all {
            if let Some((rss, _, cpu)) = proc_usage(pid) {
                out.push(format!("{now:.1},{name},{rss},{cpu:.2}"));
            }
        }
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    });
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("control_plane_scale: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(run(args));
    // Pending tasks (followers, heartbeats) are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let t0 = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "control plane at scale: {} replicas (RF {}, {} partitions per CreateTopic), {} brokers, fjord {}",
        args.replicas,
        args.rf,
        args.per_topic,
        args.brokers,
        args.fjord.display()
    );
    let ctl = match Controllers::start(&args.fjord, &args.work) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("starting the controllers: {e}");
            return 1;
        }
    };
    let startup = t0.elapsed();
    let voters: Vec<String> = ctl.voters.values().cloned().collect();
    let pids: BTreeMap<u64, u32> = ctl
        .procs
        .iter()
        .filter_map(|p| p.pid().map(|pid| (p.id, pid)))
        .collect();
    let pids = Arc::new(Mutex::new(pids));
    let samples = Arc::new(Mutex::new(vec!["t_s,process,rss_kib,cpu_s".to_string()]));
    start_sampler(pids.clone(), samples.clone(), t0, std::process::id());
    let events = Arc::new(Events::default());
    let obs = start_observer(voters.clone(), events.clone());
    let sims = (0..args.brokers)
        .map(|i| {
            Arc::new(Sim {
                id: FIRST_BROKER + i as NodeId,
                rack: ["a", "b", "c"][i % 3].to_string(),
                client: ControllerClient::new(ctl.voters.clone()),
                epoch: AtomicI64::new(-1),
                applied: AtomicI64::new(0),
                heartbeating: AtomicBool::new(true),
                generation: AtomicU64::new(0),
                fetched_bytes: AtomicU64::new(0),
                fetched_records: AtomicU64::new(0),
                heartbeats: AtomicU64::new(0),
            })
        })
        .collect();
    let mut b = Bench {
        client: ControllerClient::new(ctl.voters.clone()),
        args,
        ctl,
        voters,
        sims,
        events,
        obs,
        figures: Vec::new(),
        phases: Vec::new(),
        samples,
        pids,
        t0,
        topics: Vec::new(),
        failures: Vec::new(),
    };
    b.fig("startup", "3 controllers ready", secs(startup));
    b.register_all().await;
    b.create_topics().await;
    b.snapshot_costs();
    if !b.args.skip_snapshot {
        b.snapshot_on_controllers().await;
    }
    b.real_broker().await;
    let bench_rss = proc_usage(std::process::id()).map_or(0, |u| u.0);
    b.fig(
        "after create",
        "bench process RSS (one full broker image + light brokers)",
        mib(bench_rss << 10),
    );
    b.missed_heartbeats().await;
    b.bounce().await;
    b.failover().await;
    if !b.args.skip_delete {
        b.delete_topics().await;
    }
    b.heartbeat_health();
    write_results(&mut b, started_at);
    if b.failures.is_empty() {
        0
    } else {
        1
    }
}

fn write_results(b: &mut Bench, started_at: u64) {
    let a = &b.args;
    let stamp = format!("{started_at}");
    let base = format!("{}-replicas-{}-brokers-{stamp}", a.replicas, a.brokers);
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        eprintln!("cannot create {}: {e}", a.out.display());
        return;
    }
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "# control plane at scale: {} replicas requested, RF {}, {} per topic, {} brokers, \
         heartbeat {} ms / session {} ms; {date} (unix {stamp}); machine: {} cores\n",
        a.replicas,
        a.rf,
        a.per_topic,
        a.brokers,
        HEARTBEAT_INTERVAL.as_millis(),
        SESSION_TIMEOUT.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(table, "| scenario | figure | value |\n|---|---|---|");
    for f in &b.figures {
        let _ = writeln!(table, "| {} | {} | {} |", f.scenario, f.figure, f.value);
    }
    if !b.failures.is_empty() {
        let _ = writeln!(table, "\nFAILURES:");
        for f in &b.failures {
            let _ = writeln!(table, "- {f}");
        }
    }
    let _ = std::fs::write(a.out.join(format!("{base}.md")), &table);
    let samples = b.samples.lock().expect("samples").join("\n");
    let _ = std::fs::write(a.out.join(format!("{base}-samples.csv")), samples + "\n");
    let mut ev = String::from("t_s,node,event\n");
    for e in b.events.0.lock().expect("events").iter() {
        if matches!(
            e.kind,
            EventKind::FenceRecord | EventKind::RegisterRecord | EventKind::Registered(_)
        ) {
            continue;
        }
        let _ = writeln!(
            ev,
            "{:.2},{},{:?}",
            (e.at - b.t0).as_secs_f64(),
            e.node,
            e.kind
        );
    }
    let _ = std::fs::write(a.out.join(format!("{base}-events.csv")), ev);
    // WARN and ERROR lines of the controllers' logs.
    let mut logs = String::new();
    for p in &b.ctl.procs {
        for start in 1..=p.starts {
            let path = p.dir.join(format!("server-{start}.log"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            let _ = writeln!(
                logs,
                "== controller {} start {start}: {} WARN/ERROR lines",
                p.id,
                bad.len()
            );
            for l in bad.iter().take(100) {
                let _ = writeln!(logs, "{l}");
            }
        }
    }
    let _ = std::fs::write(a.out.join(format!("{base}-controller-warnings.log")), logs);
    println!("\n{table}");
    println!("results in {}/{base}*", a.out.display());
}
