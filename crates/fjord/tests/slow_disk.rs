//! A slow disk must never stall the async worker threads (issue 14): every fsync here sleeps
//! (`FJORD_DEBUG_FSYNC_DELAY_MS`), topics fsync on every append (`flush.messages=1`), and
//! producers keep several partitions busy — more than the runtime has worker threads. Requests
//! that need no disk (ApiVersions, Metadata) from another connection must still be answered
//! quickly. When appends or fsyncs ran on the workers (before the disk I/O threads), each
//! worker sat in a 300 ms fsync and these round trips took as long.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FSYNC_DELAY_MS: &str = "300";
/// The worst ApiVersions round trip allowed while the disk is slow.
const BOUND: Duration = Duration::from_millis(150);

fn fsyncs(broker: &FjordProcess) -> f64 {
    let text = broker.http_get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix("fjord_fsyncs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fjord_fsyncs_total in /metrics"))
}

fn perf(broker: &FjordProcess, topic: &str, partitions: u32) -> Child {
    Command::new(fjord_bin())
        .args(["perf", "--bootstrap-server", broker.bootstrap(), "produce"])
        .args(["--topic", topic, "--num-records", "100000000"])
        .args([
            "--record-size",
            "100",
            "--acks",
            "1",
            "--batch-size",
            "2000",
        ])
        .args(["--partitions", &partitions.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fjord perf")
}

#[test]
fn a_slow_disk_never_stalls_requests_that_need_no_disk() {
    let broker =
        FjordProcess::start_with_env(&[], &[("FJORD_DEBUG_FSYNC_DELAY_MS", FSYNC_DELAY_MS)]);
    broker.create_topic("slow", 8, &["flush.messages=1"]);
    let mut load: Vec<Child> = (0..2).map(|_| perf(&broker, "slow", 8)).collect();

    // Wait until the disk is in use (fsyncs under way), then probe for a few seconds.
    let before = fsyncs(&broker);
    assert!(
        wait_until(Duration::from_secs(30), || fsyncs(&broker) >= before + 8.0),
        "the producers never made the broker fsync"
    );
    let mut s = TcpStream::connect(broker.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let probe_start = fsyncs(&broker);
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        trips += 1;
        worst = worst.max(api_versions_round_trip(&mut s, trips));
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = fsyncs(&broker) - probe_start;
    for c in load.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    broker.assert_no_panic_in_log();
    eprintln!(
        "worst ApiVersions round trip {worst:?} over {trips} trips, {during} fsyncs meanwhile"
    );
    assert!(
        during >= 8.0,
        "only {during} fsyncs while probing: the load did not keep the disk busy"
    );
    assert!(
        worst < BOUND,
        "an ApiVersions round trip took {worst:?} (bound {BOUND:?}) while fsyncs took \
         {FSYNC_DELAY_MS} ms each: a worker thread waited for the disk ({trips} round trips, \
         {during} fsyncs meanwhile)"
    );
}

/// Consumers catching up from old segments must not stall the workers either: every first
/// read of a sealed segment (loading its index) sleeps here
/// (`FJORD_DEBUG_COLD_READ_DELAY_MS`), as a cold disk would make it wait, and several kcat
/// consumers read their topics from the beginning at once while ApiVersions round trips on
/// another connection must stay fast. When catch-up reads ran on the workers, each sealed
/// segment's first read held a worker for the whole delay.
#[test]
fn consumers_catching_up_from_a_cold_disk_never_stall_other_requests() {
    const TOPICS: usize = 4;
    const RECORDS: u64 = 6_000;
    const COLD_READ_DELAY_MS: &str = "300";
    let mut broker = FjordProcess::start(&[]);
    for t in 0..TOPICS {
        let topic = format!("old-{t}");
        broker.create_topic(&topic, 1, &["segment.bytes=1048576"]);
        let status = Command::new(fjord_bin())
            .args(["perf", "--bootstrap-server", broker.bootstrap(), "produce"])
            .args(["--topic", &topic, "--num-records", &RECORDS.to_string()])
            .args(["--record-size", "1000", "--acks", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run fjord perf");
        assert!(status.success(), "fjord perf produce failed");
    }
    // Restarted, the broker has loaded no sealed segment's index: every one is a cold read.
    broker.set_env("FJORD_DEBUG_COLD_READ_DELAY_MS", COLD_READ_DELAY_MS);
    broker.restart();
    let consumers: Vec<Child> = (0..TOPICS)
        .map(|t| {
            Command::new(require_tool("kcat"))
                .args(["-b", broker.bootstrap(), "-C", "-t", &format!("old-{t}")])
                .args(["-o", "beginning", "-e", "-q", "-f", "%o\n"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn kcat")
        })
        .collect();
    let mut s = TcpStream::connect(broker.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        trips += 1;
        worst = worst.max(api_versions_round_trip(&mut s, trips));
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in consumers {
        let out = c.wait_with_output().expect("kcat");
        let read = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
        assert_eq!(read, RECORDS, "a catching-up consumer read every record");
    }
    broker.assert_no_panic_in_log();
    eprintln!("worst ApiVersions round trip {worst:?} over {trips} trips while {TOPICS} consumers caught up");
    assert!(
        worst < BOUND,
        "an ApiVersions round trip took {worst:?} (bound {BOUND:?}) while first reads of sealed \
         segments took {COLD_READ_DELAY_MS} ms each: a worker thread waited for the disk"
    );
}
