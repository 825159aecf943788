//! kafka-protocol's `RecordBatchDecoder` on arbitrary bytes: record batches as a producer sends
//! them and as Fjord reads them back (cleaner, key check on compacted topics, ListOffsets by
//! timestamp, group replay), with all four codecs.
//!
//! The input is record data (one or more v2 batches). CRCs are checked by the decoder, so the
//! fuzzer mostly stops at the CRC; to get past it, the first byte of the input chooses whether
//! every batch's CRC is recomputed before decoding (odd) or left as it is (even).
//!
//! Nothing may panic, abort or allocate without bound: compressed batches inflate under a cap
//! (the default, and a small explicit one), counts and lengths are bounded by the bytes present.
#![no_main]

mod common;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 == 1 {
        common::fix_crcs(&mut bytes);
    }
    let bytes = Bytes::from(bytes);

    // One batch, then all of them, then headers only.
    let _ = RecordBatchDecoder::decode(&mut bytes.clone());
    let _ = RecordBatchDecoder::decode_all(&mut bytes.clone());
    let _ = RecordBatchDecoder::decode_batch_info(&mut bytes.clone());
    // A small explicit cap on inflated bytes, to exercise the limit itself.
    let _ = RecordBatchDecoder::decode_with_max_inflated_size(&mut bytes.clone(), 4096);
});
