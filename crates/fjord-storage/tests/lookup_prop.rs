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
