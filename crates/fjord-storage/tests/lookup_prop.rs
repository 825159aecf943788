mod common;

use common::*;
use fjord_storage::{Log, LogConfig};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Offset and timestamp lookups agree with a brute-force scan of what was appended,
    /// across segment rolls, sparse indexes and a reopen.
    #[test]
    fn lookups_match_brute_force(
        batches in proptest::collection::vec((1usize..6, 0i64..50, 0usize..200), 1..60),
        interval in 1usize..600,
        seg in 1200u64..3000,
        reopen in any::<bool>(),
    ) {
        let d = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: seg, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = Log::open(d.path(), cfg.clone()).unwrap();
        // (offset, timestamp) of every record; timestamps jump around (not monotonic).
        let mut all: Vec<(i64, i64)> = Vec::new();
        for (n, ts, vlen) in &batches {
            let b = batch(B { n: *n, ts: *ts * 10, value_len: *vlen, ..Default::default() });
            let info = log.append(&b, 0, 0).unwrap();
            for i in 0..*n as i64 {
                all.push((info.base_offset + i, *ts * 10 + i));
            }
        }
        if reopen {
            log.close().unwrap();
            log = Log::open(d.path(), cfg).unwrap();
        }
        for &(o, _) in &all {
            let r = log.read(o, 1, i64::MAX, true).unwrap();
            let h = fjord_protocol::batch::parse_header(&r.records).unwrap();
            prop_assert!(h.base_offset <= o && o <= h.last_offset());
        }
        for target in (-1..=510).step_by(7) {
            let want = all.iter().find(|(_, t)| *t >= target).copied();
            let got = log.offset_for_timestamp(target).unwrap().map(|(o, t, _)| (o, t));
            prop_assert_eq!(got, want, "target {}", target);
        }
        let max = all.iter().map(|x| x.1).max().unwrap();
        let want = all.iter().find(|x| x.1 == max).unwrap().0;
        prop_assert_eq!(log.max_timestamp().map(|m| (m.0, m.1)), Some((want, max)));
    }
}

/// Whole batches of one segment file, parsed from disk: (base offset, last offset, bytes).
fn segment_batches(path: &std::path::Path) -> Vec<(i64, i64, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    fjord_protocol::batch::BatchIter::new(&data)
        .map(|b| {
            let b = b.unwrap();
            (
                b.header.base_offset,
                b.header.last_offset(),
                b.bytes.to_vec(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A read returns exactly the whole batches a scan of the segment file would pick: from
    /// the batch holding the fetch offset, while under `max_bytes` (at least one batch if
    /// asked) and starting below `max_offset` — whatever the index interval, so the index
    /// walk that finds the end without reading the records agrees with the scan. The range
    /// form points at the same bytes.
    #[test]
    fn reads_match_a_scan_of_the_segment(
        batches in proptest::collection::vec((1usize..8, 0usize..200), 1..50),
        interval in 1usize..2000,
        seg in 3000u64..8000,
        reads in proptest::collection::vec((0.0f64..1.0, 0usize..5000, 0.0f64..1.2, any::<bool>()), 20),
    ) {
        let d = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: seg, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = Log::open(d.path(), cfg).unwrap();
        for (n, vlen) in &batches {
            let b = batch(B { n: *n, ts: 5, value_len: *vlen, ..Default::default() });
            log.append(&b, 0, 0).unwrap();
        }
        let leo = log.log_end_offset();
        let mut files: Vec<_> = std::fs::read_dir(d.path()).unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        for (at, max_bytes, bound, min_one) in reads {
            let fetch = ((leo as f64) * at) as i64;
            let max_offset = ((leo as f64) * bound) as i64;
            let file = files.iter().rev().find(|p| {
                let base: i64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                base <= fetch
            }).unwrap();
            let mut want = Vec::new();
            if fetch < max_offset {
                for (base, last, bytes) in segment_batches(file) {
                    if last < fetch {
                        continue;
                    }
                    if base >= max_offset || (want.len() + bytes.len() > max_bytes && !(want.is_empty() && min_one)) {
                        break;
                    }
                    want.extend_from_slice(&bytes);
                }
            }
            let got = log.read(fetch, max_bytes, max_offset, min_one).unwrap();
            prop_assert_eq!(&got.records[..], &want[..], "fetch {} max_bytes {} max_offset {}", fetch, max_bytes, max_offset);
            let range = log.read_range(fetch, max_bytes, max_offset, min_one).unwrap().records;
            prop_assert_eq!(range.map_or(0, |r| r.len()), want.len());
        }
    }
}
