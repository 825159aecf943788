//! `segment::scan_file` over real batch files: batches that straddle its 1 MiB read chunks, one
//! larger than a chunk, a torn tail and a malformed length.

mod common;

use common::{batch, B};
use fjord_protocol::batch::BatchError;
use fjord_storage::segment::{scan_file, ScanEnd};
use std::fs::File;

/// The scan's read chunk (`SCAN_CHUNK` in segment.rs).
const CHUNK: usize = 1 << 20;

/// Scan `bytes` as a file; returns the positions seen and how the scan ended.
fn scan(bytes: &[u8]) -> (Vec<u64>, ScanEnd) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.log");
    std::fs::write(&path, bytes).unwrap();
    let file = File::open(&path).unwrap();
    let mut seen = Vec::new();
    let end = scan_file(&file, &path, 0, bytes.len() as u64, true, |pos, h, b| {
        assert_eq!(b.len(), h.total_size());
        assert_eq!(b, &bytes[pos as usize..pos as usize + b.len()]);
        seen.push(pos);
        Ok(true)
    })
    .unwrap();
    (seen, end)
}

#[test]
fn scan_crosses_chunks_and_reads_batches_larger_than_a_chunk() {
    let mut file = Vec::new();
    let mut starts = Vec::new();
    for value_len in [300_000, 300_000, 300_000, 300_000, CHUNK + 5, 10] {
        starts.push(file.len() as u64);
        file.extend(batch(B {
            value_len,
            ..B::default()
        }));
    }
    let (seen, end) = scan(&file);
    assert_eq!(seen, starts);
    assert_eq!(end.valid_end, file.len() as u64);
    assert!(end.error.is_none());

    // A torn tail: the last batch cut short is a truncated error at its start.
    let (seen, end) = scan(&file[..file.len() - 3]);
    assert_eq!(seen, starts[..starts.len() - 1]);
    assert_eq!(end.valid_end, starts[starts.len() - 1]);
    assert!(end.error.unwrap().is_truncated());

    // A bad length in the big batch is damage, not a tail.
    let big = starts[4] as usize;
    file[big + 8..big + 12].copy_from_slice(&3i32.to_be_bytes());
    let (seen, end) = scan(&file);
    assert_eq!(seen, starts[..4]);
    assert_eq!(end.valid_end, starts[4]);
    assert_eq!(end.error, Some(BatchError::InvalidLength(3)));
}
