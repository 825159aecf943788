//! Malformed input on the Kafka listener: the offending connection is closed (or, for an
//! unsupported ApiVersions version, answered with v0 and error 35), while other clients keep
//! working and the broker never panics.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{count_lines, read_json_lines, wait_timeout, FjordProcess};

const UNSUPPORTED_VERSION: i16 = 35;
const API_VERSIONS: i16 = 18;

fn connect(broker: &FjordProcess) -> TcpStream {
    let s = TcpStream::connect(broker.bootstrap()).expect("connect to broker");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// `[len: i32][payload]`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Request header v1 (non-flexible) or v2 (flexible: + empty tagged fields).
fn header(api_key: i16, version: i16, correlation_id: i32, flexible: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&api_key.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&correlation_id.to_be_bytes());
    let client_id = b"fjord-it";
    v.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    v.extend_from_slice(client_id);
    if flexible {
        v.push(0);
    }
    v
}

/// ApiVersions v3+ body: client software name and version (compact strings), no tags.
fn api_versions_body() -> Vec<u8> {
    let mut v = Vec::new();
    for s in [&b"fjord-it"[..], &b"1.0"[..]] {
        v.push(s.len() as u8 + 1);
        v.extend_from_slice(s);
    }
    v.push(0);
    v
}

/// Reads until the peer closes. Ok(bytes received before close) or Err(description).
fn expect_closed(s: &mut TcpStream) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Ok(total)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "connection still open after 10 s ({total} bytes received)"
                ))
            }
            Err(e) => return Err(format!("unexpected read error {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!("connection still open, {total} bytes received"));
        }
    }
}

/// Writes, tolerating the broker closing early (it may close before reading everything).
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

fn read_exact_or(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)
        .map_err(|e| format!("reading {n} bytes: {e}"))?;
    Ok(v)
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Sends ApiVersions v9 (newer than any broker supports) and checks the v0 answer:
/// correlation id echoed, error 35, and a non-empty api list including ApiVersions itself.
fn check_api_versions_unsupported(broker: &FjordProcess) -> Result<(), String> {
    supported_apis(broker).map(|_| ())
}

/// The (api_key, min, max) list from the v0 answer to ApiVersions v9.
fn supported_apis(broker: &FjordProcess) -> Result<Vec<(i16, i16, i16)>, String> {
    let mut s = connect(broker);
    let mut req = header(API_VERSIONS, 9, 4242, true);
    req.extend(api_versions_body());
    send(&mut s, &frame(&req));
    let len = be_i32(&read_exact_or(&mut s, 4)?);
    if !(10..1_000_000).contains(&len) {
        return Err(format!("implausible response length {len}"));
    }
    let body = read_exact_or(&mut s, len as usize)?;
    let corr = be_i32(&body[0..4]);
    let error = be_i16(&body[4..6]);
    if corr != 4242 {
        return Err(format!("correlation id {corr}, want 4242"));
    }
    if error != UNSUPPORTED_VERSION {
        return Err(format!("error code {error}, want {UNSUPPORTED_VERSION}"));
    }
    // v0 body: error_code, then a classic array (i32 count) of (api_key, min, max).
    let n = be_i32(&body[6..10]);
    if n <= 0 || body.len() != 10 + 6 * n as usize {
        return Err(format!(
            "not a v0 ApiVersions response: array count {n}, body length {} (want {})",
            body.len(),
            10 + 6 * n.max(0) as usize
        ));
    }
    let apis: Vec<(i16, i16, i16)> = body[10..]
        .chunks(6)
        .map(|c| (be_i16(&c[0..2]), be_i16(&c[2..4]), be_i16(&c[4..6])))
        .collect();
    match apis.iter().find(|a| a.0 == API_VERSIONS) {
        Some(&(_, min, max)) if min == 0 && max >= 3 => Ok(apis),
        other => Err(format!(
            "ApiVersions entry {other:?} in the api list (want min 0, max >= 3): {apis:?}"
        )),
    }
}

#[test]
fn api_versions_unsupported_version_gets_v0_error_35_then_v3_works() {
    let broker = FjordProcess::start(&[]);
    check_api_versions_unsupported(&broker).unwrap_or_else(|e| panic!("ApiVersions v9: {e}"));

    // And the version the client then retries with works, on a fresh connection.
    let mut s = connect(&broker);
    let mut req = header(API_VERSIONS, 3, 7, true);
    req.extend(api_versions_body());
    send(&mut s, &frame(&req));
    let len = be_i32(&read_exact_or(&mut s, 4).unwrap());
    let body = read_exact_or(&mut s, len as usize).unwrap();
    // Response header v0 (ApiVersions is always answered with header v0), then error_code.
    assert_eq!(be_i32(&body[0..4]), 7, "correlation id");
    assert_eq!(be_i16(&body[4..6]), 0, "ApiVersions v3 error code");
    broker.assert_no_panic_in_log();
}

#[test]
fn malformed_requests_close_the_connection_and_others_keep_working() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("bystander", 1, &[]);

    // A well-behaved client producing steadily the whole time.
    let scratch = broker.scratch_dir();
    let acks_path = scratch.join("acks.jsonl");
    let stop = scratch.join("stop");
    let mut producer = common::python_command("ck_produce.py")
        .args(["--bootstrap", broker.bootstrap(), "--topic", "bystander"])
        .args(["--count", "0", "--rate", "300", "--timeout", "100"])
        .arg("--acks-out")
        .arg(&acks_path)
        .arg("--stop-file")
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(common::append_file(
            &scratch.join("producer.err"),
        )))
        .spawn()
        .expect("spawn ck_produce.py");
    assert!(
        common::wait_until(Duration::from_secs(30), || count_lines(&acks_path) >= 50),
        "bystander producer got no acknowledgements"
    );

    let mut failures = Vec::new();
    let mut check = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("{name}: {e}"));
        }
    };
    let close_case = |payload: &[u8], half_close: bool| -> Result<(), String> {
        let mut s = connect(&broker);
        send(&mut s, payload);
        if half_close {
            let _ = s.shutdown(Shutdown::Write);
        }
        expect_closed(&mut s).map(|_| ())
    };

    // (a) garbage: text (its first 4 bytes read as a ~1.2 GB length), a small frame of
    // random-looking bytes, a negative length, and an empty frame.
    check(
        "garbage: HTTP request",
        close_case(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false),
    );
    let junk: Vec<u8> = (0..64u32).map(|i| (i * 97 + 13) as u8).collect();
    check("garbage: junk frame", close_case(&frame(&junk), false));
    check(
        "garbage: negative length",
        close_case(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3], false),
    );
    check("garbage: empty frame", close_case(&frame(&[]), false));
    check(
        "garbage: frame shorter than a header",
        close_case(&frame(&[0, 18, 0]), false),
    );

    // (b) a frame cut short, then the client goes away.
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend(header(API_VERSIONS, 3, 1, true));
    check("truncated frame", close_case(&truncated, true));

    // (c) a length prefix over socket.request.max.bytes (100 MiB): closed without waiting
    // for 200 MiB to arrive.
    let mut huge = (200i32 * 1024 * 1024).to_be_bytes().to_vec();
    huge.extend(header(0, 9, 1, true));
    check("200 MiB length prefix", close_case(&huge, false));

    // (d) well-framed request with an unknown api key.
    let mut unknown = header(9999, 0, 1, false);
    unknown.extend_from_slice(&[0; 8]);
    check("unknown api key 9999", close_case(&frame(&unknown), false));
    let mut unknown_ver = header(3, 999, 1, true); // Metadata v999
    unknown_ver.extend_from_slice(&[0; 8]);
    check("Metadata v999", close_case(&frame(&unknown_ver), false));

    // (e) ApiVersions v9 gets a v0 response with error 35.
    check("ApiVersions v9", check_api_versions_unsupported(&broker));

    // The broker still serves a new client...
    let md = broker.kcat(&["-L", "-m", "10"], None);
    if !md.ok() || !md.stdout().contains("topic \"bystander\"") {
        failures.push(format!("kcat -L after bad input: {}", md.describe()));
    }
    // ...and the client that was connected all along.
    let before = count_lines(&acks_path);
    let progressed = common::wait_until(Duration::from_secs(15), || {
        count_lines(&acks_path) > before + 50
    });
    std::fs::write(&stop, b"").unwrap();
    let status = wait_timeout(&mut producer, Duration::from_secs(60));
    if status.is_none() {
        common::send_signal(producer.id(), "KILL");
    }
    let out = producer.wait_with_output().unwrap();
    let err = std::fs::read_to_string(scratch.join("producer.err")).unwrap_or_default();
    if !progressed {
        failures.push("bystander producer stopped getting acknowledgements".into());
    }
    if !out.status.success() {
        failures.push(format!(
            "bystander producer failed: {}\n{}{err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let acked = read_json_lines(&acks_path).len();
    let dump = common::ck_consume(&broker, "bystander", acked as u64);
    if dump.len() < acked {
        failures.push(format!(
            "bystander: {acked} acknowledged but {} consumed",
            dump.len()
        ));
    }

    let panic = std::panic::catch_unwind(|| broker.assert_no_panic_in_log());
    if panic.is_err() {
        failures.push("broker log contains \"panicked\" (see above)".into());
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Every supported (api, version) with random bodies, under both request header versions:
/// the broker may answer with an error or close the connection, but must not panic or stop
/// serving. The seed is printed so a failure can be replayed (FJORD_FUZZ_SEED).
#[test]
fn random_bodies_for_every_supported_api_never_panic() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("fuzz", 2, &[]);
    let apis = supported_apis(&broker).unwrap_or_else(|e| panic!("ApiVersions: {e}"));
    let seed: u64 = std::env::var("FJORD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzz seed: FJORD_FUZZ_SEED={seed}");
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut cases = 0;
    for &(api, min, max) in &apis {
        for version in min..=max {
            for flexible in [false, true] {
                for _ in 0..6 {
                    let mut req = header(api, version, 1, flexible);
                    let len = (next() % 160) as usize;
                    // Small numbers are likelier to be plausible lengths and counts.
                    req.extend((0..len).map(|_| {
                        let r = next();
                        if r % 3 == 0 {
                            (r >> 8) as u8 & 0x03
                        } else {
                            (r >> 8) as u8
                        }
                    }));
                    let mut s = connect(&broker);
                    send(&mut s, &frame(&req));
                    let _ = s.shutdown(Shutdown::Write);
                    if let Err(e) = expect_closed(&mut s) {
                        panic!(
                            "api {api} v{version} (flexible header: {flexible}), seed {seed}: {e}"
                        );
                    }
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{cases} random requests sent");
    assert!(cases > 50, "too few cases: supported apis {apis:?}");
    let md = broker
        .kcat(&["-L", "-m", "10"], None)
        .success("kcat -L after fuzzing");
    assert!(md.stdout().contains("topic \"fuzz\""), "{}", md.describe());
    common::ck_produce(&broker, "fuzz", 100, &[]);
    assert_eq!(common::ck_consume(&broker, "fuzz", 100).len(), 100);
    broker.assert_no_panic_in_log();
}
