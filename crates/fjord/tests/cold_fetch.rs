//! Cold reads off the async workers (issue 14): a fetch of records that are not in the page
//! cache (a consumer catching up from old segments) is read on a blocking thread and sent
//! from memory, instead of `sendfile`/`pread` waiting for the disk on the worker that serves
//! the connection. Here the topic's segment files are dropped from the page cache, a real
//! client (kcat) reads the whole topic, and the broker must report those bytes as cold reads
//! and deliver every record; a second read, cached again, delivers every record too.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const RECORDS: u64 = 20_000;
const RECORD_SIZE: &str = "1000";

fn cold_bytes(broker: &FjordProcess) -> f64 {
    let text = broker.http_get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix("fjord_fetch_cold_read_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fjord_fetch_cold_read_bytes_total in /metrics"))
}

/// Sync the partition's segment files and drop their pages from the page cache.
fn evict(dir: &Path) {
    let mut evicted = 0;
    for entry in std::fs::read_dir(dir).expect("partition dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let f = File::open(&path).expect("open segment");
            f.sync_all().expect("sync segment");
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
            evicted += 1;
        }
    }
    assert!(evicted > 0, "no segment files in {}", dir.display());
}

/// Read the partition's segment files, so their pages are in the page cache.
fn warm(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("partition dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::read(&path).expect("read segment");
        }
    }
}

/// Every offset of the topic, read from the beginning with kcat.
fn read_all(broker: &FjordProcess, topic: &str) -> Vec<u64> {
    let out = broker
        .kcat(
            &[
                "-C",
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%o\n",
            ],
            None,
        )
        .success("kcat consume");
    out.stdout()
        .lines()
        .map(|l| l.trim().parse().expect("offset"))
        .collect()
}

#[test]
fn cold_records_are_read_off_the_workers_and_all_delivered() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("cold", 1, &["segment.bytes=4194304"]);
    let status = Command::new(fjord_bin())
        .args(["perf", "--bootstrap-server", broker.bootstrap(), "produce"])
        .args(["--topic", "cold", "--num-records", &RECORDS.to_string()])
        .args(["--record-size", RECORD_SIZE, "--acks", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run fjord perf");
    assert!(status.success(), "fjord perf produce failed");

    let dir = broker.data_dir().join("cold-0");
    if fjord_storage_probe(&dir) {
        evict(&dir);
        let before = cold_bytes(&broker);
        let offsets = read_all(&broker, "cold");
        assert_eq!(
            offsets,
            (0..RECORDS).collect::<Vec<_>>(),
            "every record, in order"
        );
        let cold = cold_bytes(&broker) - before;
        eprintln!("{cold} bytes read cold of ~{} MB", RECORDS / 1000);
        // The first fetch is cold; the kernel's readahead behind the blocking reads warms
        // much of what follows, so not every byte is read cold.
        assert!(
            cold >= 256.0 * 1024.0,
            "only {cold} bytes were counted as cold reads after the page cache was dropped"
        );
        // Read again, now cached: every record again. How much of it counts as cold is only
        // printed: this machine's kernel (a Firecracker VM) evicts page-cache pages on its
        // own, with gigabytes free, so a strict "nothing cold" would be flaky.
        warm(&dir);
        let before = cold_bytes(&broker);
        assert_eq!(read_all(&broker, "cold").len() as u64, RECORDS);
        eprintln!(
            "{} bytes read cold again once cached",
            cold_bytes(&broker) - before
        );
    }
    broker.assert_no_panic_in_log();
}

/// Whether this kernel can tell cached pages from cold ones (`cachestat`, Linux 6.5+) and
/// the data dir's filesystem drops pages on request (not tmpfs). Without both there is
/// nothing to check, and the test says so.
fn fjord_storage_probe(dir: &Path) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 5) {
        eprintln!("kernel {} has no cachestat(2): skipping", release.trim());
        return false;
    }
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if fs == "tmpfs" {
        eprintln!(
            "{} is on tmpfs (pages cannot be dropped): skipping",
            dir.display()
        );
        return false;
    }
    true
}
