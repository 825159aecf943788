//! Lengths, counts and compressed sizes sent by a peer never turn into allocations beyond the
//! bytes present (the vendored `kafka-protocol` patch, `vendor/kafka-protocol/FJORD-PATCH.md`).
//!
//! Each case decodes hostile bytes on the test's own thread and checks, with a counting
//! allocator, the largest single allocation and the peak of live bytes on that thread while it
//! decodes, and that it fails within a second.

// A counting wrapper around the system allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to `System` and touches const-initialised thread locals. Test code only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fjord_protocol::codec::decode_request;
use kafka_protocol::compression::MIN_MAX_INFLATED_SIZE;
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size as isize;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn on_dealloc(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Debug)]
struct Usage {
    /// The largest single allocation.
    largest: usize,
    /// Live bytes at the peak, above what was live before.
    peak: usize,
    elapsed: Duration,
}

/// Run `f` on this thread, measuring its allocations.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|l| l.set(0));
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    let usage = Usage {
        largest: LARGEST.with(Cell::get),
        peak: (PEAK.with(Cell::get) - base).max(0) as usize,
        elapsed,
    };
    (r, usage)
}

const MIB: usize = 1 << 20;

/// Decoding failed quickly without allocating more than `max_bytes` at once or in total. Quickly:
/// well under a second on an idle machine (inflating 64 MiB takes ~0.1 s); the
/// bound is looser so a loaded CI machine does not fail it, and still far below what inflating
/// a whole 1 GiB bomb takes.
#[track_caller]
fn assert_bounded<T: std::fmt::Debug>(r: Result<T, impl std::fmt::Display>, u: &Usage, max: usize) {
    match r {
        Ok(v) => panic!("hostile input decoded: {v:?}"),
        Err(e) => eprintln!("refused as expected: {e} ({u:?})"),
    }
    assert!(u.largest <= max, "largest allocation {} > {max}", u.largest);
    assert!(u.peak <= max, "peak live bytes {} > {max}", u.peak);
    assert!(u.elapsed < Duration::from_secs(5), "took {:?}", u.elapsed);
}

fn request_frame(key: ApiKey, version: i16, body: &[u8]) -> BytesMut {
    let mut f = BytesMut::new();
    f.put_i16(key as i16);
    f.put_i16(version);
    f.put_i32(7); // correlation id
    f.put_i16(-1); // null client id
    if key.request_header_version(version) >= 2 {
        f.put_u8(0); // no tagged fields
    }
    f.extend_from_slice(body);
    f
}

#[test]
fn array_of_2_pow_31_minus_1_elements_in_a_few_bytes() {
    // Metadata v1: `topics` (an Int32-counted array) first.
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.extend_from_slice(b"\x00\x01a\x00");
    let frame = request_frame(ApiKey::Metadata, 1, &body);
    let (r, u) = measure(|| decode_request(frame));
    assert_bounded(r, &u, 64 << 10);

    // Metadata v12: a compact array of u32::MAX - 1 elements.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend_from_slice(&[0u8; 20]);
    let frame = request_frame(ApiKey::Metadata, 12, &body);
    let (r, u) = measure(|| decode_request(frame));
    assert_bounded(r, &u, 64 << 10);

    // Produce v3 and v9: `topic_data` claims 2^31 - 1 topics, the bytes hold a few.
    for version in [3, 9] {
        let mut body = BytesMut::new();
        if version >= 9 {
            body.put_u8(0); // null compact transactional id
        } else {
            body.put_i16(-1);
        }
        body.put_i16(1); // acks
        body.put_i32(1000); // timeout
        if version >= 9 {
            body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // 2^31 as compact length
        } else {
            body.put_i32(i32::MAX);
        }
        body.extend_from_slice(&[0x00, 0x01, b't', 0, 0, 0, 1]);
        let (r, u) = measure(|| ProduceRequest::decode(&mut body.clone().freeze(), version));
        assert_bounded(r, &u, 64 << 10);
    }
}

#[test]
fn truncated_and_overlong_varints_are_errors() {
    // A compact string whose length varint has a continuation bit on its 5th byte.
    let mut body = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    body.extend_from_slice(&[0u8; 8]);
    let frame = request_frame(ApiKey::Metadata, 12, &body);
    let (r, u) = measure(|| decode_request(frame));
    assert_bounded(r, &u, 64 << 10);
    // Fewer bytes than the request header needs never panic (the public helper peeks 4 bytes).
    for n in 0..4 {
        let mut b = Bytes::from(vec![0u8; n]);
        assert!(kafka_protocol::protocol::decode_request_header_from_buffer(&mut b).is_err());
    }
}

fn records(n: usize, value: &[u8]) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Offset minus sequence constant: the encoder keeps the records in one batch.
            sequence: -1 + i as i32,
            timestamp: 1_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect()
}

fn encode(records: &[Record], compression: Compression) -> BytesMut {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf
}

/// Offsets inside a v2 batch.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const RECORD_COUNT_AT: usize = 57;
const RECORDS_AT: usize = 61;

fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
}

/// A batch header (one record, the given codec) around `payload` as its record data, with a
/// correct length and CRC.
fn batch_around(payload: &[u8], compression: Compression, record_count: i32) -> Bytes {
    let mut b = BytesMut::from(&encode(&records(1, b"v"), Compression::None)[..RECORDS_AT]);
    b.extend_from_slice(payload);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]);
    let attributes = (attributes & !0x7) | compression as i16;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    b[RECORD_COUNT_AT..RECORDS_AT].copy_from_slice(&record_count.to_be_bytes());
    fix_crc(&mut b);
    b.freeze()
}

#[test]
fn record_batch_claiming_i32_max_records_with_a_valid_crc() {
    // The batch of the issue: one real record, a header claiming 2^31 - 1, a valid CRC.
    let mut b = encode(&records(1, b"v"), Compression::None);
    b[RECORD_COUNT_AT..RECORDS_AT].copy_from_slice(&i32::MAX.to_be_bytes());
    fix_crc(&mut b);
    let batch = b.freeze();
    assert!(batch.len() < 100);
    let (r, u) = measure(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert_bounded(r, &u, 64 << 10);

    // The same inside a compressed batch, for every codec.
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = encode(&records(3, b"value"), codec);
        b[RECORD_COUNT_AT..RECORDS_AT].copy_from_slice(&i32::MAX.to_be_bytes());
        fix_crc(&mut b);
        let (r, u) = measure(|| RecordBatchDecoder::decode(&mut b.clone().freeze()));
        assert_bounded(r, &u, 2 * MIB);
    }

    // A record claiming 2^31 - 1 headers.
    let mut record = BytesMut::new();
    let body = [0u8, 0, 0, 2, b'k', 2, b'v', 0xfe, 0xff, 0xff, 0xff, 0x0f]; // varint i32::MAX
    record.put_u8((body.len() as u8) << 1); // zigzag length
    record.extend_from_slice(&body);
    let batch = batch_around(&record, Compression::None, 1);
    let (r, u) = measure(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert_bounded(r, &u, 64 << 10);

    // Valid batches still decode.
    let mut ok = encode(&records(5000, b"v"), Compression::None).freeze();
    assert_eq!(
        RecordBatchDecoder::decode(&mut ok).unwrap().records.len(),
        5000
    );
}

/// `len` zero bytes compressed with `codec`, streaming (the input is never in memory).
fn zeros_compressed(codec: Compression, len: usize) -> Vec<u8> {
    let mut zeros = std::io::repeat(0).take(len as u64);
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::copy(&mut zeros, &mut e).unwrap();
            e.finish().unwrap()
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            std::io::copy(&mut zeros, &mut e).unwrap();
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        Compression::Zstd => zstd::stream::encode_all(zeros, 1).unwrap(),
        Compression::Snappy => {
            // Kafka's (xerial) framing: magic header, then length-prefixed raw blocks.
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            let block = vec![0u8; 32 << 10];
            let compressed = snap::raw::Encoder::new().compress_vec(&block).unwrap();
            for _ in 0..len / block.len() {
                out.write_all(&(compressed.len() as u32).to_be_bytes())
                    .unwrap();
                out.write_all(&compressed).unwrap();
            }
            out
        }
        Compression::None => unreachable!(),
    }
}

#[test]
fn decompression_bombs_are_refused_with_bounded_memory() {
    // 1 GiB of zeros for gzip (~1 MB) and zstd (a few KB); 256 MiB for lz4 (~1 MB: lz4 tops
    // out near 255:1, so 1 GiB would take ~4.5 MB and a 287 MiB cap, slow for a unit test).
    for (codec, zeros) in [
        (Compression::Gzip, 1 << 30),
        (Compression::Lz4, 256 << 20),
        (Compression::Zstd, 1 << 30),
    ] {
        let bomb = zeros_compressed(codec, zeros);
        let batch = batch_around(&bomb, codec, 1);
        // max(64 x its size, 32 MiB): 32 MiB for zstd, ~64 MiB for gzip and lz4.
        let cap = kafka_protocol::compression::default_max_inflated_size(bomb.len());
        assert!(
            cap >= MIN_MAX_INFLATED_SIZE && cap < zeros,
            "{codec:?}: {} bytes",
            bomb.len()
        );
        let (r, u) = measure(|| RecordBatchDecoder::decode(&mut batch.clone()));
        // The inflated bytes up to the cap, and the decoders' own buffers.
        assert_bounded(r, &u, cap + 8 * MIB);
        // A smaller cap stops it sooner.
        let (r, u) =
            measure(|| RecordBatchDecoder::decode_with_max_inflated_size(&mut batch.clone(), MIB));
        assert_bounded(r, &u, MIB + 8 * MIB);
    }

    // Snappy cannot inflate more than ~21x, so its bombs are large: 1 GiB of zeros takes
    // ~48 MB, within the default cap's ratio. Under an explicit cap it stops there.
    let bomb = zeros_compressed(Compression::Snappy, 1 << 30);
    let batch = batch_around(&bomb, Compression::Snappy, 1);
    let cap = 16 * MIB;
    let (r, u) =
        measure(|| RecordBatchDecoder::decode_with_max_inflated_size(&mut batch.clone(), cap));
    assert_bounded(r, &u, cap + 32 * MIB);

    // Declared lengths are checked before they are allocated: raw snappy claiming 4 GiB - 1
    // in 10 bytes, and a xerial block claiming more than its bytes can yield.
    let mut raw = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    raw.extend_from_slice(&[0u8; 5]);
    let batch = batch_around(&raw, Compression::Snappy, 1);
    let (r, u) = measure(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert_bounded(r, &u, 64 << 10);
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&10u32.to_be_bytes());
    framed.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0]);
    let batch = batch_around(&framed, Compression::Snappy, 1);
    let (r, u) = measure(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert_bounded(r, &u, 64 << 10);
}

#[test]
fn compressed_batches_within_the_cap_still_decode() {
    // Very compressible but legitimate: 2,000 records of 4 KiB zeros (8 MiB inflated).
    let recs = records(2000, &[0u8; 4096]);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut batch = encode(&recs, codec).freeze();
        let set = RecordBatchDecoder::decode(&mut batch).unwrap();
        assert_eq!(set.records.len(), 2000, "{codec:?}");
        assert_eq!(set.records[1999].value.as_ref().unwrap().len(), 4096);
    }
}

#[test]
fn random_request_kinds_of_every_api_never_panic() {
    // kafka-protocol's decoders for every API it knows (not only those Fjord serves), every
    // version, on bodies made of extreme length prefixes.
    let patterns: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x00, 0x00, 0x7f, 0xff],
        &[0x80, 0x80, 0x80, 0x80, 0x08],
    ];
    for key in 0..=i16::MAX {
        let Ok(api_key) = ApiKey::try_from(key) else {
            if key > 200 {
                break;
            }
            continue;
        };
        let v = api_key.valid_versions();
        for version in v.min..=v.max {
            for p in patterns {
                let body: Vec<u8> = p.iter().copied().cycle().take(64).collect();
                let (r, u) = measure(|| {
                    RequestKind::decode(api_key, &mut Bytes::from(body.clone()), version)
                });
                assert!(u.largest <= 64 << 10, "{api_key:?} v{version}: {u:?}");
                drop(r);
            }
        }
    }
}
