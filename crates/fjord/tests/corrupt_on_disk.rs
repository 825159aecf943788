//! Reading back is defensive: data damaged on disk while the broker was down is skipped or
//! truncated with an ERROR and a metric, never a failed startup. Garbled checkpoint files, a
//! damaged `__consumer_offsets` batch (found by group replay after a clean shutdown, when no
//! recovery runs), an unreadable record in the metadata log, and a torn segment
//! tail after a crash; after each restart a real client
//! produces and consumes, and consumer groups work.

mod common;

use common::FjordProcess;
use std::path::{Path, PathBuf};

/// `name`'s value in a Prometheus text exposition, summed over label sets that contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| {
            let base = k.split('{').next().unwrap_or(k);
            base == name && k.contains(labels)
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .sum()
}

/// The directories of `topic`'s partitions under the broker's data dir.
fn partition_dirs(data: &Path, topic: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('-'))
                .is_some_and(|(t, i)| t == topic && i.parse::<u32>().is_ok())
        })
        .collect();
    dirs.sort();
    dirs
}

/// The first file named `name` under `dir` (depth-first).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn group_consume(broker: &FjordProcess, group: &str, topic: &str) -> usize {
    let out = broker.kcat(
        &[
            "-G",
            group,
            "-e",
            "-X",
            "auto.offset.reset=earliest",
            "-f",
            "%s\n",
            topic,
        ],
        None,
    );
    assert!(out.ok(), "kcat -G {group}: {}", out.describe());
    out.stdout().lines().filter(|l| !l.is_empty()).count()
}

#[test]
fn damaged_files_are_skipped_with_an_error_and_a_metric_never_a_failed_start() {
    let mut broker = FjordProcess::start(&[]);
    broker.create_topic("data", 1, &[]);
    common::ck_produce(&broker, "data", 20, &[]);
    assert_eq!(group_consume(&broker, "g1", "data"), 20);
    // Committed: a second run reads nothing new.
    assert_eq!(group_consume(&broker, "g1", "data"), 0);
    broker.terminate();

    // 1. Garbled checkpoints of the data partition; every batch of `__consumer_offsets`
    //    damaged inside its CRC range (no recovery runs after a clean shutdown: group replay
    //    is what meets the damage).
    let data = broker.data_dir();
    let data_dir = &partition_dirs(&data, "data")[0];
    for name in ["high-watermark-checkpoint", "leader-epoch-checkpoint"] {
        std::fs::write(data_dir.join(name), b"\xff\xfe garbage").unwrap();
    }
    let mut damaged = 0;
    for dir in partition_dirs(&data, "__consumer_offsets") {
        for seg in segments(&dir) {
            let mut bytes = std::fs::read(&seg).unwrap();
            let ends: Vec<usize> = fjord_protocol::batch::BatchIter::new(&bytes)
                .map(|b| b.unwrap().end())
                .collect();
            for end in ends {
                bytes[end - 1] ^= 0x5a; // last byte of the batch's records
                damaged += 1;
            }
            std::fs::write(&seg, &bytes).unwrap();
        }
    }
    assert!(damaged > 0, "no __consumer_offsets batch found");
    // A complete but unreadable line at the end of the single node's metadata log.
    let meta_log = find_file(&data, "metadata.log").expect("metadata.log under the data dir");
    let mut f = common::append_file(&meta_log);
    std::io::Write::write_all(&mut f, b"{\"log_id\": \xff\xfe}\n").unwrap();
    drop(f);

    broker.restart();
    let m = broker.http_get("/metrics").body;
    assert!(
        metric(
            &m,
            "fjord_corrupt_data_skipped_total",
            "source=\"checkpoint\""
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "fjord_corrupt_data_skipped_total",
            "source=\"consumer_offsets\""
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "fjord_corrupt_data_skipped_total",
            "source=\"metadata\""
        ) >= 1.0,
        "{m}"
    );
    assert!(broker
        .cli(&["topic", "describe", "data"])
        .stdout()
        .contains("data"));
    let logs = broker.all_logs();
    assert!(
        logs.contains("ERROR") && logs.contains("corrupt checkpoint file"),
        "{}",
        broker.log_tail(40)
    );
    assert!(logs.contains("skipping undecodable __consumer_offsets batch"));
    // Every record is still there; the group lost its damaged commits and starts over.
    assert_eq!(common::ck_consume(&broker, "data", 20).len(), 20);
    assert_eq!(group_consume(&broker, "g1", "data"), 20);
    assert_eq!(group_consume(&broker, "g2", "data"), 20);
    assert_eq!(group_consume(&broker, "g2", "data"), 0);

    // 2. A crash, then garbage after the last batch (a torn write): recovery cuts it off.
    //    (It also meets the damaged `__consumer_offsets` batches in segments changed since
    //    the restart, and cuts those too: at least the garbage is counted.)
    common::ck_produce(&broker, "data", 5, &[]);
    broker.kill9();
    let seg = segments(data_dir).pop().unwrap();
    let mut f = common::append_file(&seg);
    std::io::Write::write_all(&mut f, &[0x7f; 333]).unwrap();
    drop(f);
    broker.restart();
    let m = broker.http_get("/metrics").body;
    assert!(
        metric(&m, "fjord_log_recovery_truncated_bytes_total", "") >= 333.0,
        "{m}"
    );
    assert_eq!(common::ck_consume(&broker, "data", 25).len(), 25);
    common::ck_produce(&broker, "data", 1, &[]);
    assert_eq!(group_consume(&broker, "g3", "data"), 26);
    assert_eq!(group_consume(&broker, "g3", "data"), 0);
    broker.assert_no_panic_in_log();
}
