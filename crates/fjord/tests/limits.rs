//! Resource limits against a real broker, with hostile clients on loopback: slowloris, a
//! connection flood, `max.connections`, a frame at exactly `socket.request.max.bytes`, and many
//! large requests trickled at once under `queued.max.request.bytes`. After each, the `fjord` CLI
//! must still produce and consume.
//!
//! The tests run one at a time (they measure time and memory on a small machine).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{parse_json_lines, wait_until, FjordProcess};

const API_VERSIONS: i16 = 18;

/// One test at a time: their timing and memory figures mean something only alone.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The value of one Prometheus series, e.g. `fjord_connections_closed_total{reason="idle"}`.
fn metric(broker: &FjordProcess, series: &str) -> f64 {
    let body = broker.http_get("/metrics").body;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
}

/// Produce `n` records to a new topic with the CLI and read them back.
fn produce_and_consume(broker: &FjordProcess, topic: &str, n: usize) {
    broker
        .cli(&["topic", "create", topic, "--partitions", "1"])
        .success("fjord topic create");
    let input: String = (0..n).map(|i| format!("{topic}-{i}\n")).collect();
    broker
        .cli_with_stdin(&["produce", topic], Some(input.as_bytes()))
        .success("fjord produce");
    let out = broker
        .cli(&[
            "consume",
            topic,
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            "json",
        ])
        .success("fjord consume");
    let records = parse_json_lines(&out.stdout());
    assert_eq!(records.len(), n, "records consumed: {}", out.describe());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["value"], format!("{topic}-{i}"), "record {i}: {r}");
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn unsigned_varint(mut n: u32, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// ApiVersions v3 (request header v2) with `software_name` as the client software name.
fn api_versions_payload(correlation_id: i32, software_name: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&API_VERSIONS.to_be_bytes());
    v.extend_from_slice(&3i16.to_be_bytes());
    v.extend_from_slice(&correlation_id.to_be_bytes());
    let client_id = b"fjord-limits-it";
    v.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    v.extend_from_slice(client_id);
    v.push(0); // header tagged fields
    for s in [software_name, &b"1.0"[..]] {
        unsigned_varint(s.len() as u32 + 1, &mut v);
        v.extend_from_slice(s);
    }
    v.push(0); // body tagged fields
    v
}

/// An ApiVersions v3 frame whose payload (the size the prefix announces) is exactly `size`.
fn api_versions_frame_of_size(correlation_id: i32, size: usize) -> Vec<u8> {
    let fixed = api_versions_payload(correlation_id, b"").len();
    for name_len in (size.saturating_sub(fixed + 4)..=size - fixed).rev() {
        let p = api_versions_payload(correlation_id, &vec![b'a'; name_len]);
        if p.len() == size {
            return frame(&p);
        }
    }
    panic!("no ApiVersions request of exactly {size} bytes");
}

/// Reads one response frame; `Ok(None)` if nothing arrived within the socket's read timeout.
fn read_response(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes(len);
    assert!((6..10_000_000).contains(&len), "response length {len}");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Sends ApiVersions v3 and checks the answer (correlation id, error 0).
fn api_versions_round_trip(s: &mut TcpStream, correlation_id: i32) -> Result<(), String> {
    s.write_all(&frame(&api_versions_payload(correlation_id, b"fjord-it")))
        .map_err(|e| format!("write: {e}"))?;
    match read_response(s) {
        Ok(Some(body)) => check_api_versions_response(&body, correlation_id),
        Ok(None) => Err("no response".into()),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn check_api_versions_response(body: &[u8], correlation_id: i32) -> Result<(), String> {
    let corr = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let error = i16::from_be_bytes([body[4], body[5]]);
    if corr != correlation_id || error != 0 {
        return Err(format!(
            "correlation id {corr} (want {correlation_id}), error {error} (want 0)"
        ));
    }
    Ok(())
}

/// Whether the broker has closed this connection (EOF or reset), without consuming data.
fn closed_by_peer(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).expect("blocking");
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Waits (up to `within`) for the broker to close `s`, reading and discarding what it sends.
fn wait_closed(s: &mut TcpStream, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(()),
        }
    }
    Err(format!("connection still open after {within:?}"))
}

/// Connects from a chosen loopback source address (the flood must not come from the address
/// the CLI uses, or the per-address limit would apply to the CLI too).
fn connect_from(
    rt: &tokio::runtime::Runtime,
    source: Ipv4Addr,
    broker: &str,
) -> std::io::Result<TcpStream> {
    let dest: SocketAddr = broker.parse().expect("broker address");
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source.into(), 0))?;
        let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(dest))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        Ok(s)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn count_in_log(broker: &FjordProcess, needle: &str) -> usize {
    broker.all_logs().matches(needle).count()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Connections trickling a request one byte a second are closed once
/// `connections.max.idle.ms` passes without a complete request, like silent ones; a connection
/// that keeps completing requests stays; other clients are served all along.
#[test]
fn slowloris_connections_are_closed_within_the_idle_bound_and_others_are_served() {
    let _serial = serial();
    let idle = Duration::from_millis(3000);
    let broker = FjordProcess::start(&["--set", "connections.max.idle.ms=3000"]);
    let start = Instant::now();

    // Eight tricklers: the first trickles even the size prefix, the others announce a
    // 200-byte request and then send one byte of it a second.
    let mut tricklers: Vec<(TcpStream, Vec<u8>)> = (0..8)
        .map(|i| {
            let s = TcpStream::connect(broker.bootstrap()).expect("connect");
            let mut bytes = frame(&[b'x'; 200]);
            if i > 0 {
                let prefix: Vec<u8> = bytes.drain(..4).collect();
                (&s).write_all(&prefix).expect("write size prefix");
            }
            (s, bytes)
        })
        .collect();
    let silent = TcpStream::connect(broker.bootstrap()).expect("connect");
    let mut active = TcpStream::connect(broker.bootstrap()).expect("connect");
    active
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let trickle = thread::spawn(move || {
        let mut closed_after: Vec<Option<Duration>> = vec![None; tricklers.len()];
        // Bounded: 20 ticks of a second, far more than the 3 s idle bound.
        for _tick in 0..20 {
            for (i, (s, rest)) in tricklers.iter_mut().enumerate() {
                if closed_after[i].is_some() {
                    continue;
                }
                if closed_by_peer(s) {
                    closed_after[i] = Some(start.elapsed());
                    continue;
                }
                if !rest.is_empty() {
                    let _ = s.write_all(&rest[..1]);
                    rest.remove(0);
                }
            }
            if closed_after.iter().all(Option::is_some) {
                break;
            }
            thread::sleep(Duration::from_secs(1));
        }
        closed_after
    });

    // A connection completing a request every second outlives twice the idle bound.
    let keep_alive = thread::spawn(move || {
        let mut corr = 1;
        while start.elapsed() < idle * 2 + Duration::from_secs(1) {
            api_versions_round_trip(&mut active, corr)
                .map_err(|e| format!("active connection at {:?}: {e}", start.elapsed()))?;
            corr += 1;
            thread::sleep(Duration::from_secs(1));
        }
        Ok::<TcpStream, String>(active)
    });
    // Meanwhile a real client works.
    produce_and_consume(&broker, "during-slowloris", 100);

    let active = keep_alive.join().expect("keep-alive thread").unwrap();
    let closed_after = trickle.join().expect("trickle thread");
    for (i, c) in closed_after.iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("trickler {i} still open after 20 s"));
        // Closed after the bound (they were kept while within it) and not much later (the
        // check runs once a second).
        assert!(
            c >= idle - Duration::from_millis(500) && c <= idle + Duration::from_secs(3),
            "trickler {i} closed after {c:?}, bound {idle:?}"
        );
    }
    assert!(closed_by_peer(&silent), "the silent connection is closed");
    assert!(
        !closed_by_peer(&active),
        "the connection completing requests stays open"
    );
    assert!(
        metric(
            &broker,
            r#"fjord_connections_closed_total{reason="incomplete_request"}"#
        ) >= 8.0
    );
    assert!(metric(&broker, r#"fjord_connections_closed_total{reason="idle"}"#) >= 1.0);
    // Eight closes within a second: one log line, the others counted in it.
    let lines = count_in_log(&broker, "a request was not completed within");
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for 8 slowloris closes"
    );

    produce_and_consume(&broker, "after-slowloris", 100);
    broker.assert_no_panic_in_log();
}

/// 2,000 connections from one address with `max.connections.per.ip` = 50: 50 are kept, the
/// rest closed right after accept, counted, and logged a few times, not 1,950 times; an
/// override gives another address its own limit; the CLI (from 127.0.0.1) keeps working.
#[test]
fn connection_flood_from_one_address_is_cut_at_its_limit_and_others_are_served() {
    let _serial = serial();
    let broker = FjordProcess::start(&[
        "--set",
        "max.connections.per.ip=50",
        "--set",
        "max.connections.per.ip.overrides=127.0.0.3:5",
    ]);
    let rt = runtime();
    let flood_source = Ipv4Addr::new(127, 0, 0, 2);
    let started = Instant::now();
    let mut flood = Vec::with_capacity(2000);
    for i in 0..2000 {
        match connect_from(&rt, flood_source, broker.bootstrap()) {
            Ok(s) => flood.push(s),
            Err(e) => panic!("flood connection {i}: {e}"),
        }
    }
    let rejected = r#"fjord_connections_rejected_total{reason="max_connections_per_ip"}"#;
    assert!(
        wait_until(Duration::from_secs(30), || metric(&broker, rejected)
            >= 1950.0),
        "rejections counted: {}",
        metric(&broker, rejected)
    );
    let mut open = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            open = flood.iter().filter(|s| !closed_by_peer(s)).count();
            open == 50
        }),
        "{open} flood connections open, want 50"
    );
    assert_eq!(metric(&broker, rejected), 1950.0);
    assert_eq!(metric(&broker, "fjord_connections"), 50.0);
    // The kept ones are served.
    for (i, s) in flood
        .iter_mut()
        .filter(|s| !closed_by_peer(s))
        .take(3)
        .enumerate()
    {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        api_versions_round_trip(s, i as i32).unwrap_or_else(|e| panic!("kept connection: {e}"));
    }

    // 127.0.0.3 has an override of 5.
    let other: Vec<TcpStream> = (0..20)
        .map(|_| connect_from(&rt, Ipv4Addr::new(127, 0, 0, 3), broker.bootstrap()).unwrap())
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || metric(&broker, rejected)
            >= 1965.0),
        "rejections from 127.0.0.3"
    );
    assert!(wait_until(Duration::from_secs(10), || other
        .iter()
        .filter(|s| !closed_by_peer(s))
        .count()
        == 5));

    produce_and_consume(&broker, "during-flood", 100);

    let lines = count_in_log(&broker, "rejected connection");
    let bound = started.elapsed().as_secs() as usize / 10 + 2;
    assert!(
        (1..=bound).contains(&lines),
        "{lines} log lines for 1,965 rejections (at most one per 10 s: {bound})"
    );

    // Closing the flood frees the address's slots.
    drop(flood);
    drop(other);
    assert!(wait_until(Duration::from_secs(10), || metric(
        &broker,
        "fjord_connections"
    ) == 0.0));
    let again: Vec<TcpStream> = (0..50)
        .map(|_| connect_from(&rt, flood_source, broker.bootstrap()).unwrap())
        .collect();
    assert!(wait_until(Duration::from_secs(10), || metric(
        &broker,
        "fjord_connections"
    ) == 50.0));
    assert_eq!(
        metric(&broker, rejected),
        1965.0,
        "no rejections under the limit"
    );
    drop(again);
    produce_and_consume(&broker, "after-flood", 100);
    broker.assert_no_panic_in_log();
}

/// `max.connections`: like Kafka, the broker stops accepting when it holds that many
/// connections (new clients wait in the listen backlog) and accepts again when one closes.
#[test]
fn max_connections_blocks_new_connections_until_one_closes() {
    let _serial = serial();
    let broker = FjordProcess::start(&["--set", "max.connections=20"]);
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(broker.bootstrap()).expect("connect"))
        .collect();
    assert!(wait_until(Duration::from_secs(10), || metric(
        &broker,
        "fjord_connections"
    ) == 20.0));

    // The 21st: the kernel completes the handshake, the broker does not take it yet.
    let mut waiting = TcpStream::connect(broker.bootstrap()).expect("connect (backlog)");
    waiting
        .write_all(&frame(&api_versions_payload(21, b"fjord-it")))
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    assert!(
        read_response(&mut waiting).expect("read").is_none(),
        "answered beyond max.connections"
    );

    // One closes: the waiting one is accepted and answered.
    drop(idle.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = read_response(&mut waiting)
        .expect("read")
        .expect("answered once a slot was free");
    check_api_versions_response(&body, 21).unwrap();
    assert!(metric(&broker, "fjord_acceptor_blocked_seconds_total") >= 1.0);
    assert!(count_in_log(&broker, "max.connections reached") >= 1);

    drop(idle);
    drop(waiting);
    assert!(wait_until(Duration::from_secs(10), || metric(
        &broker,
        "fjord_connections"
    ) == 0.0));
    produce_and_consume(&broker, "after-max-connections", 100);
    broker.assert_no_panic_in_log();
}

/// A request of exactly `socket.request.max.bytes` is answered; one byte more closes the
/// connection (Kafka: InvalidReceiveException), without waiting for the body.
#[test]
fn frame_of_exactly_socket_request_max_bytes_is_served_and_one_byte_more_closes() {
    let _serial = serial();
    let max = 65536;
    let broker = FjordProcess::start(&["--set", "socket.request.max.bytes=65536"]);

    let mut s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let exact = api_versions_frame_of_size(1, max);
    assert_eq!(exact.len(), 4 + max);
    s.write_all(&exact).unwrap();
    let body = read_response(&mut s)
        .unwrap()
        .expect("answer to a max-size request");
    check_api_versions_response(&body, 1).unwrap();
    // The connection goes on serving.
    api_versions_round_trip(&mut s, 2).unwrap();

    let bad_before = metric(&broker, "fjord_connections_closed_bad_request_total");
    let mut s = TcpStream::connect(broker.bootstrap()).unwrap();
    let over = api_versions_frame_of_size(3, max + 1);
    let _ = s.write_all(&over);
    wait_closed(&mut s, Duration::from_secs(10)).unwrap();

    // Only the size prefix: closed at once, nothing more is awaited.
    let mut s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.write_all(&((max + 1) as i32).to_be_bytes()).unwrap();
    wait_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(
        metric(&broker, "fjord_connections_closed_bad_request_total"),
        bad_before + 2.0
    );

    produce_and_consume(&broker, "after-max-frame", 100);
    broker.assert_no_panic_in_log();
}

/// 64 connections each announce a 4 MiB request and trickle its body without ever finishing
/// it (256 MiB offered in all). With `queued.max.request.bytes` = 16 MiB only four are read at
/// a time; the rest wait in the kernel. The broker's peak RSS stays near its baseline plus the
/// pool, the pool is recycled as `connections.max.idle.ms` closes the stalled ones, and a
/// client works afterwards.
#[test]
fn queued_max_request_bytes_bounds_memory_of_unfinished_requests() {
    let _serial = serial();
    const FRAME: usize = 4 << 20;
    const POOL: usize = 16 << 20;
    const CONNS: usize = 64;
    let broker = FjordProcess::start(&[
        "--set",
        &format!("socket.request.max.bytes={FRAME}"),
        "--set",
        &format!("queued.max.request.bytes={POOL}"),
        "--set",
        "connections.max.idle.ms=4000",
    ]);
    produce_and_consume(&broker, "before-pool", 100);
    let pid = broker.pid();
    let (hwm_before, rss_before) = memory_kib(pid);

    let addr = broker.bootstrap().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut conns: Vec<(TcpStream, usize)> = (0..CONNS)
                .map(|_| {
                    let s = TcpStream::connect(&addr).expect("connect");
                    (&s).write_all(&(FRAME as i32).to_be_bytes()).unwrap();
                    s.set_nonblocking(true).unwrap();
                    (s, 0)
                })
                .collect();
            let chunk = vec![b'x'; 256 << 10];
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut offered = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                for (s, sent) in conns.iter_mut() {
                    // Never the last byte: the request is never complete.
                    let left = FRAME - 1 - *sent;
                    if left == 0 {
                        continue;
                    }
                    match s.write(&chunk[..left.min(chunk.len())]) {
                        Ok(n) => {
                            *sent += n;
                            offered += n;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => *sent = FRAME - 1, // closed by the broker
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            offered
        }
    });

    let used = "fjord_memory_pool_used_bytes";
    let closed = r#"fjord_connections_closed_total{reason="incomplete_request"}"#;
    let mut max_used = 0.0f64;
    let mut max_rss = rss_before;
    // Two rounds of stalled requests closed by the idle bound, each making room for the next.
    let recycled = wait_until(Duration::from_secs(45), || {
        max_used = max_used.max(metric(&broker, used));
        max_rss = max_rss.max(memory_kib(pid).1);
        metric(&broker, closed) >= 8.0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let offered = attack.join().expect("attack thread");
    let released = wait_until(Duration::from_secs(15), || metric(&broker, used) == 0.0);
    let (hwm_after, _) = memory_kib(pid);
    let grown_mib = (hwm_after.saturating_sub(hwm_before)) as f64 / 1024.0;
    eprintln!(
        "queued.max.request.bytes: pool {} MiB, {CONNS} connections x {} MiB announced, {:.0} MiB offered; broker VmHWM {:.1} MiB before, {:.1} MiB after (+{grown_mib:.1} MiB), VmRSS before {:.1} MiB, max sampled {:.1} MiB; pool used max {:.1} MiB",
        POOL >> 20,
        FRAME >> 20,
        offered as f64 / (1 << 20) as f64,
        hwm_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        max_used / (1 << 20) as f64,
    );
    assert!(
        recycled,
        "stalled requests were not closed by connections.max.idle.ms"
    );
    assert!(max_used <= POOL as f64, "pool use {max_used} over {POOL}");
    assert!(max_used > 0.0, "the pool was used");
    assert!(released, "pool memory given back after the attackers left");
    assert!(
        offered > 2 * POOL,
        "the attack offered only {offered} bytes"
    );
    // The pool plus buffer growth and allocator slack; without the pool the broker would take
    // in every byte offered.
    assert!(
        grown_mib < (POOL >> 20) as f64 * 2.0 + 16.0,
        "peak RSS grew by {grown_mib:.1} MiB with a {} MiB pool",
        POOL >> 20
    );

    produce_and_consume(&broker, "after-pool", 100);
    broker.assert_no_panic_in_log();
}
