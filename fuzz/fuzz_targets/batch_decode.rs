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

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;

/// Recompute the CRC32C of every complete batch in `data`, so mutations inside the
/// CRC-covered range reach the record decoder.
fn fix_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while data.len() >= pos + 21 {
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap());
        if len < 9 {
            return;
        }
        let end = pos + 12 + len as usize;
        if end > data.len() {
            return;
        }
        let crc = crc32c::crc32c(&data[pos + 21..end]);
        data[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 == 1 {
        fix_crcs(&mut bytes);
    }
    let bytes = Bytes::from(bytes);

    // One batch, then all of them, then headers only.
    let _ = RecordBatchDecoder::decode(&mut bytes.clone());
    let _ = RecordBatchDecoder::decode_all(&mut bytes.clone());
    let _ = RecordBatchDecoder::decode_batch_info(&mut bytes.clone());
    // A small explicit cap on inflated bytes, to exercise the limit itself.
    let _ = RecordBatchDecoder::decode_with_max_inflated_size(&mut bytes.clone(), 4096);
});
