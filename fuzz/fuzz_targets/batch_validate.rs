//! Produce validation (`fjord_protocol::records::validate`, Kafka's LogValidator) on arbitrary
//! record data, for every codec: counts, offset deltas, record lengths and varints, keys,
//! timestamps, per-record errors, and compressed batches inflated as a capped stream.
//!
//! The first input byte picks the rules (compacted or not, LogAppendTime or CreateTime, client
//! or coordinator origin, a small `max.message.bytes` so the inflate cap is small too) and
//! whether each batch's CRC is recomputed so mutations reach the record walk.
//!
//! Nothing may panic, abort or allocate without bound, and what passes must be what the append
//! path relies on: batches that tile the input exactly, with counts matching their offsets.
#![no_main]

mod common;

use fjord_protocol::batch;
use fjord_protocol::records::{validate, AppendOrigin, RecordRules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 == 1 {
        common::fix_crcs(&mut bytes);
    }
    let rules = RecordRules {
        compacted: flags & 2 != 0,
        log_append_time: flags & 4 != 0,
        timestamp_before_max_ms: if flags & 8 != 0 { 3_600_000 } else { i64::MAX },
        timestamp_after_max_ms: 3_600_000,
        // Small limits keep the inflate cap (64 MiB at least) reachable but cheap to hit.
        max_message_bytes: if flags & 16 != 0 { 1 << 20 } else { 16 << 10 },
        now_ms: 1_700_000_000_000,
        origin: if flags & 32 != 0 {
            AppendOrigin::Coordinator
        } else {
            AppendOrigin::Client
        },
    };
    if let Ok(v) = validate(&bytes, &rules) {
        // What the append path trusts.
        assert_eq!(v.len, bytes.len());
        let mut pos = 0;
        let mut count = 0u64;
        for b in &v.batches {
            assert_eq!(b.position, pos);
            let h = batch::parse_header(&bytes[pos..]).unwrap();
            assert_eq!(h, b.header);
            assert!(h.records_count > 0);
            assert_eq!(h.records_count as i64, h.offset_count());
            batch::verify_crc(&bytes[pos..pos + h.total_size()], &h).unwrap();
            count += h.records_count as u64;
            pos += h.total_size();
        }
        assert_eq!(pos, bytes.len());
        assert_eq!(count, v.record_count);
    }
});
