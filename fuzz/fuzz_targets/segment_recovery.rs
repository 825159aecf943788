//! Crash recovery of a partition log from arbitrary files.
//!
//! The input becomes the files of one partition directory, without a clean-shutdown marker, so
//! `Log::open` recovers: it validates the segments batch by batch and truncates at the first
//! bad one. Then everything is read back (batches, records, offsets by timestamp), a batch is
//! appended, the log is cleaned (compacted topic) and maintained, closed cleanly and reopened.
//! Any of these may return an error for garbage; none may panic or abort.
//!
//! Layout of the input: `flags: u16` (big-endian), then for every flag bit set, in order, one
//! file as `len: u16` + bytes; what is left is segment 0 (`00000000000000000000.log`):
//!
//! | bit | file |
//! |-----|------|
//! | 0 | `00000000000000000000.index` |
//! | 1 | `00000000000000000000.timeindex` |
//! | 2 | `leader-epoch-checkpoint` |
//! | 3 | `recovery-point-offset-checkpoint` |
//! | 4 | `log-start-offset-checkpoint` |
//! | 5 | `high-watermark-checkpoint` |
//! | 6 | `cleaner-offset-checkpoint.json` |
//! | 7 | a producer snapshot, at the offset in its first 2 bytes |
//! | 8 | a second segment, at the base offset in its first 2 bytes |
//!
//! Bit 15 recomputes the CRC of every batch in the segments, so the fuzzer gets past the CRC
//! check into record parsing; bit 14 opens the log with `cleanup.policy=compact`.
#![no_main]

mod common;

use bytes::BytesMut;
use fjord_storage::{CleanupPolicy, Log, LogConfig};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FILES: [&str; 7] = [
    "00000000000000000000.index",
    "00000000000000000000.timeindex",
    "leader-epoch-checkpoint",
    "recovery-point-offset-checkpoint",
    "log-start-offset-checkpoint",
    "high-watermark-checkpoint",
    "cleaner-offset-checkpoint.json",
];

/// One directory for the whole run, emptied before each input (tmpfs when there is one: the
/// log fsyncs after recovery).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    })
    .path()
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    if data.len() < 2 {
        let all = *data;
        *data = &[];
        return all;
    }
    let len = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (file, rest) = data[2..].split_at(len);
    *data = rest;
    file
}

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

fn write_files(dir: &Path, mut data: &[u8]) -> Option<(u16, PathBuf)> {
    if data.len() < 2 {
        return None;
    }
    let flags = u16::from_be_bytes([data[0], data[1]]);
    data = &data[2..];
    for (bit, name) in FILES.iter().enumerate() {
        if flags & (1 << bit) != 0 {
            std::fs::write(dir.join(name), take(&mut data)).unwrap();
        }
    }
    if flags & (1 << 7) != 0 {
        let f = take(&mut data);
        let at = f.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        std::fs::write(
            dir.join(format!("{at:020}.snapshot")),
            f.get(2..).unwrap_or(&[]),
        )
        .unwrap();
    }
    if flags & (1 << 8) != 0 {
        let f = take(&mut data);
        let base = f
            .get(..2)
            .map_or(1, |b| u16::from_be_bytes([b[0], b[1]]).max(1));
        let mut seg = f.get(2..).unwrap_or(&[]).to_vec();
        if flags & (1 << 15) != 0 {
            common::fix_crcs(&mut seg);
        }
        std::fs::write(dir.join(segment_name(base as i64)), seg).unwrap();
    }
    let mut seg0 = data.to_vec();
    if flags & (1 << 15) != 0 {
        common::fix_crcs(&mut seg0);
    }
    let seg0_path = dir.join(segment_name(0));
    std::fs::write(&seg0_path, seg0).unwrap();
    Some((flags, seg0_path))
}

fn one_batch(ts: i64) -> Vec<u8> {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: ts,
        key: Some(bytes::Bytes::from_static(b"k")),
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// Read every batch from the log start to the log end, decoding the records as a consumer would.
fn read_everything(log: &Log) {
    let mut next = log.log_start_offset();
    let mut reads = 0;
    while next < log.log_end_offset() && reads < 1000 {
        reads += 1;
        let Ok(r) = log.read(next, 1 << 16, i64::MAX, true) else {
            return;
        };
        if r.records.is_empty() {
            return;
        }
        let mut last = next;
        for item in fjord_protocol::batch::BatchIter::new(&r.records) {
            let Ok(b) = item else { break };
            last = last.max(b.header.last_offset().saturating_add(1));
            let _ = RecordBatchDecoder::decode(&mut r.records.slice(b.position..b.end()));
        }
        if last <= next {
            return;
        }
        next = last;
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.offset_for_timestamp(i64::MAX / 2);
    let _ = log.max_timestamp();
    let _ = log.latest_epoch();
    let _ = log.end_offset_for_epoch(0);
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let Some((flags, _)) = write_files(dir, data) else {
        return;
    };
    let config = LogConfig {
        cleanup_policy: if flags & (1 << 14) != 0 {
            CleanupPolicy::Compact
        } else {
            CleanupPolicy::Delete
        },
        ..LogConfig::default()
    };

    let Ok(mut log) = Log::open(dir, config.clone()) else {
        return;
    };
    read_everything(&log);
    let now = 1_700_000_000_000;
    let _ = log.append(&one_batch(now), 0, now);
    let _ = log.roll(now);
    let _ = log.maintain(now + 1);
    read_everything(&log);
    if log.close().is_err() {
        return;
    }
    // Clean reopen: indexes and checkpoints as the close wrote them.
    if let Ok(log) = Log::open(dir, config) {
        read_everything(&log);
    }
});
