use super::*;
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const NOW: i64 = 1_700_000_000_000;

fn rules() -> RecordRules {
    RecordRules {
        compacted: false,
        log_append_time: false,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: 3_600_000,
        max_message_bytes: 1_048_588,
        now_ms: NOW,
        origin: AppendOrigin::Client,
    }
}

fn record(i: usize, key: Option<&str>, ts: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: i as i32,
        timestamp: ts,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: Some(Bytes::from(vec![b'v'; 50])),
        headers: Default::default(),
        delete_horizon: false,
    }
}

fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
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
    buf.to_vec()
}

fn keyed(n: usize, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| record(i, Some(&format!("k{i}")), NOW + i as i64))
        .collect();
    encode(&records, compression)
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// A v2 batch with these header fields around raw record bytes, with a valid CRC.
fn raw_batch(
    attributes: i16,
    last_offset_delta: i32,
    count: i32,
    base_ts: i64,
    body: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(body);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn zigzag(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if u < 0x80 {
            out.push(u as u8);
            return out;
        }
        out.push((u as u8 & 0x7f) | 0x80);
        u >>= 7;
    }
}

/// One record's bytes: (offset delta, key, value), length prefix computed.
fn raw_record(offset_delta: i64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend(zigzag(0));
    body.extend(zigzag(offset_delta));
    match key {
        Some(k) => {
            body.extend(zigzag(k.len() as i64));
            body.extend_from_slice(k);
        }
        None => body.extend(zigzag(-1)),
    }
    body.extend(zigzag(value.len() as i64));
    body.extend_from_slice(value);
    body.extend(zigzag(0));
    let mut r = zigzag(body.len() as i64);
    r.extend(body);
    r
}

#[test]
fn accepts_what_clients_send_for_every_codec() {
    for c in CODECS {
        let b = keyed(20, c);
        let v = validate(&b, &rules()).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(v.record_count, 20);
        assert_eq!(v.batches.len(), 1);
        assert_eq!(v.batches[0].max_timestamp, NOW + 19);
        assert_eq!(v.len, b.len());
    }
}

#[test]
fn a_header_claiming_i32_max_records_is_refused_before_any_walk() {
    let body = raw_record(0, Some(b"k"), b"v");
    let b = raw_batch(0, i32::MAX - 1, i32::MAX, NOW, &body);
    let e = validate(&b, &rules()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRecord, "{e}");
    // The count matching the offsets but not the records present.
    let b = raw_batch(0, 2, 3, NOW, &[body.clone(), body.clone()].concat());
    let e = validate(&b, &rules()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRecord, "{e}");
}

#[test]
fn counts_offsets_and_lengths_must_agree() {
    let r0 = raw_record(0, Some(b"a"), b"x");
    let r1 = raw_record(1, Some(b"b"), b"y");
    let ok = raw_batch(0, 1, 2, NOW, &[r0.clone(), r1.clone()].concat());
    validate(&ok, &rules()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("count != offsets", raw_batch(0, 1, 1, NOW, &r0)),
        ("negative delta", raw_batch(0, -1, 0, NOW, &r0)),
        (
            "trailing bytes",
            raw_batch(0, 0, 1, NOW, &[r0.clone(), vec![0]].concat()),
        ),
        (
            "records missing",
            raw_batch(0, 1, 2, NOW, &[r0.clone(), vec![0; 8]].concat()),
        ),
        (
            "offset delta skips",
            raw_batch(
                0,
                1,
                2,
                NOW,
                &[r0.clone(), raw_record(2, Some(b"b"), b"y")].concat(),
            ),
        ),
        (
            "offset delta repeats",
            raw_batch(
                0,
                1,
                2,
                NOW,
                &[r0.clone(), raw_record(0, Some(b"b"), b"y")].concat(),
            ),
        ),
        (
            "length too short",
            raw_batch(0, 0, 1, NOW, &[&[2u8][..], &r0[1..]].concat()),
        ),
        (
            "negative length",
            raw_batch(0, 0, 1, NOW, &[zigzag(-5), r0[1..].to_vec()].concat()),
        ),
        (
            "varint too long",
            raw_batch(0, 0, 1, NOW, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0]),
        ),
        ("key past record", {
            let mut r = raw_record(0, Some(b"abc"), b"");
            let body_len = r.len() - 1;
            // key length 3 -> 60 while the record stays the same size
            let key_pos = 1 + 1 + 1 + 1;
            r[key_pos] = 120;
            assert_eq!(r.len() - 1, body_len);
            raw_batch(0, 0, 1, NOW, &r)
        }),
        ("negative key length", {
            let mut r = raw_record(0, None, b"vv");
            r[4] = 5; // zigzag(-3)
            raw_batch(0, 0, 1, NOW, &r)
        }),
    ];
    for (name, b) in cases {
        let e = validate(&b, &rules()).expect_err(name);
        assert_eq!(e.code, ErrorCode::InvalidRecord, "{name}: {e}");
        assert!(e.record_errors.is_empty(), "{name}");
    }
}

#[test]
fn framing_errors_are_corrupt_message() {
    let mut b = keyed(3, Compression::None);
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_eq!(
        validate(&b, &rules()).unwrap_err().code,
        ErrorCode::CorruptMessage
    );
    let b = keyed(3, Compression::None);
    assert_eq!(
        validate(&b[..b.len() - 1], &rules()).unwrap_err().code,
        ErrorCode::CorruptMessage
    );
    assert_eq!(
        validate(&[], &rules()).unwrap_err().code,
        ErrorCode::CorruptMessage
    );
}

#[test]
fn clients_send_one_batch_and_no_control_batches() {
    let two = [keyed(1, Compression::None), keyed(1, Compression::None)].concat();
    assert_eq!(
        validate(&two, &rules()).unwrap_err().code,
        ErrorCode::InvalidRecord
    );
    let coordinator = RecordRules {
        origin: AppendOrigin::Coordinator,
        ..rules()
    };
    assert_eq!(validate(&two, &coordinator).unwrap().batches.len(), 2);
    let r0 = raw_record(0, Some(b"a"), b"x");
    let control = raw_batch(batch::attributes::CONTROL, 0, 1, NOW, &r0);
    assert_eq!(
        validate(&control, &rules()).unwrap_err().code,
        ErrorCode::InvalidRecord
    );
    validate(&control, &coordinator).unwrap();
}

#[test]
fn keyless_records_on_compacted_topics_fail_one_by_one() {
    for c in CODECS {
        let records: Vec<Record> = (0..30)
            .map(|i| {
                let key = (i % 10 != 0).then(|| format!("k{i}"));
                record(i, key.as_deref(), NOW)
            })
            .collect();
        let b = encode(&records, c);
        let compacted = RecordRules {
            compacted: true,
            ..rules()
        };
        let e = validate(&b, &compacted).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRecord, "{c:?}");
        let idx: Vec<i32> = e.record_errors.iter().map(|r| r.batch_index).collect();
        assert_eq!(idx, vec![0, 10, 20], "{c:?}");
        assert!(e.message.contains("3 record errors"), "{}", e.message);
        validate(&b, &rules()).unwrap();
    }
}

#[test]
fn timestamps_outside_the_allowed_window_are_invalid_timestamp() {
    let records = vec![
        record(0, Some("a"), NOW),
        record(1, Some("b"), NOW + 3_600_001),
        record(2, Some("c"), -1),
        record(3, Some("d"), NOW - 10_000),
    ];
    let b = encode(&records, Compression::None);
    let e = validate(&b, &rules()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidTimestamp);
    assert_eq!(e.record_errors.len(), 1);
    assert_eq!(e.record_errors[0].batch_index, 1);
    let before = RecordRules {
        timestamp_before_max_ms: 5_000,
        timestamp_after_max_ms: i64::MAX,
        ..rules()
    };
    let e = validate(&b, &before).unwrap_err();
    assert_eq!(
        e.record_errors
            .iter()
            .map(|r| r.batch_index)
            .collect::<Vec<_>>(),
        vec![3]
    );
    let log_append = RecordRules {
        log_append_time: true,
        ..rules()
    };
    validate(&b, &log_append).unwrap();
    // A producer claiming LogAppendTime on a CreateTime topic.
    let r0 = raw_record(0, Some(b"a"), b"x");
    let lat = raw_batch(batch::attributes::TIMESTAMP_TYPE_LOG_APPEND, 0, 1, NOW, &r0);
    assert_eq!(
        validate(&lat, &rules()).unwrap_err().code,
        ErrorCode::InvalidTimestamp
    );
}

#[test]
fn lying_max_timestamp_is_recomputed() {
    let mut b = keyed(3, Compression::None);
    b[35..43].copy_from_slice(&(NOW + 10_000_000).to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let v = validate(&b, &rules()).unwrap();
    assert_eq!(v.batches[0].max_timestamp, NOW + 2);
    assert_eq!(v.batches[0].header.max_timestamp, NOW + 10_000_000);
}

#[test]
fn oversized_batches_and_unknown_codecs_are_refused() {
    let b = keyed(100, Compression::None);
    let small = RecordRules {
        max_message_bytes: 1000,
        ..rules()
    };
    assert_eq!(
        validate(&b, &small).unwrap_err().code,
        ErrorCode::MessageTooLarge
    );
    let r0 = raw_record(0, Some(b"a"), b"x");
    let b = raw_batch(5, 0, 1, NOW, &r0);
    assert_eq!(
        validate(&b, &rules()).unwrap_err().code,
        ErrorCode::UnsupportedCompressionType
    );
}

/// A single record whose value is `size` zero bytes, compressed with `c`: tiny on the wire,
/// huge inflated.
fn bomb(c: Compression, size: usize) -> Vec<u8> {
    let mut r = record(0, Some("k"), NOW);
    r.value = Some(Bytes::from(vec![0u8; size]));
    encode(&[r], c)
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let rules = RecordRules {
        max_message_bytes: 16 * 1024,
        ..rules()
    };
    // 1 MiB of max.message.bytes at least, times the ratio: 64 MiB.
    assert_eq!(rules.max_inflated_bytes(), 64 << 20);
    // Snappy cannot inflate more than ~22x, so a snappy batch within max.message.bytes never
    // reaches the cap; its lying block lengths are covered below.
    for c in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let b = bomb(c, 80 << 20);
        assert!(b.len() < 4 << 20, "{c:?}: {}", b.len());
        let bigger = RecordRules {
            max_message_bytes: b.len() + 1,
            ..rules
        };
        let started = std::time::Instant::now();
        let e = validate(&b, &bigger).unwrap_err();
        assert!(
            e.code == ErrorCode::MessageTooLarge,
            "{c:?}: {} ({} bytes on the wire)",
            e,
            b.len()
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // Below the cap the same shape is fine.
        let ok = bomb(c, 1 << 20);
        validate(
            &ok,
            &RecordRules {
                max_message_bytes: ok.len() + 1,
                ..rules
            },
        )
        .unwrap();
    }
}

#[test]
fn a_snappy_block_claiming_more_than_it_can_hold_is_refused() {
    // Framed header, then one block whose preamble claims 2^31 bytes.
    let mut body = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    let block = [0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
    body.extend_from_slice(&(block.len() as u32).to_be_bytes());
    body.extend_from_slice(&block);
    let b = raw_batch(2, 0, 1, NOW, &body);
    assert_eq!(
        validate(&b, &rules()).unwrap_err().code,
        ErrorCode::InvalidRecord
    );
}

#[test]
fn garbage_compressed_payloads_are_invalid_records() {
    for codec in 1..=4i16 {
        for len in [0usize, 1, 7, 64] {
            let body: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let b = raw_batch(codec, 0, 1, NOW, &body);
            let e = validate(&b, &rules()).unwrap_err();
            assert!(
                matches!(
                    e.code,
                    ErrorCode::InvalidRecord | ErrorCode::MessageTooLarge
                ),
                "codec {codec}, {len} bytes: {e}"
            );
        }
    }
}

proptest::proptest! {
    /// Arbitrary bytes after a valid header never panic, and whatever passes has records that
    /// fill the batch exactly.
    #[test]
    fn arbitrary_record_bytes_never_panic(
        codec in 0i16..=4,
        count in 0i32..50,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
    ) {
        let b = raw_batch(codec, count - 1, count, NOW, &body);
        let _ = validate(&b, &rules());
        let compacted = RecordRules { compacted: true, origin: AppendOrigin::Coordinator, ..rules() };
        let _ = validate(&b, &compacted);
        let _ = keys_of(&b);
    }
}

fn keys_of(records: &[u8]) -> Vec<(Option<Vec<u8>>, usize)> {
    let mut out = Vec::new();
    for_each_key(records, 1 << 20, &mut |r| {
        out.push((r.key.map(<[u8]>::to_vec), r.key_len))
    });
    out
}

#[test]
fn keys_of_plain_and_compressed_batches() {
    let long = "x".repeat(KEY_READ_MAX + 10);
    for c in CODECS {
        let bytes = encode(
            &[
                record(0, Some("hot"), NOW),
                record(1, None, NOW),
                record(2, Some(&long), NOW),
            ],
            c,
        );
        let got = keys_of(&bytes);
        assert_eq!(got.len(), 3, "{c:?}");
        assert_eq!(got[0], (Some(b"hot".to_vec()), 3));
        assert_eq!(got[1], (None, 0));
        assert_eq!(
            got[2],
            (Some(long.as_bytes()[..KEY_READ_MAX].to_vec()), long.len())
        );
    }
}

#[test]
fn a_record_header_longer_than_its_record_stops_the_key_walk() {
    // Length 6, then a 10-byte timestamp delta: the header ends 7 bytes past the record.
    let mut body = vec![12u8, 0];
    body.extend_from_slice(&[0x80; 9]);
    body.extend_from_slice(&[0x01, 0x00, 0x01]);
    let b = raw_batch(0, 0, 1, NOW, &body);
    assert!(keys_of(&b).is_empty());
}

#[test]
fn a_key_walk_over_garbage_stops_without_panicking() {
    for c in CODECS {
        let bytes = keyed(3, c);
        for cut in 0..bytes.len() {
            keys_of(&bytes[..cut]);
        }
        let mut bad = bytes.clone();
        for i in batch::BATCH_HEADER_LEN..bad.len() {
            bad[i] ^= 0xa5;
            assert!(keys_of(&bad).len() <= 3);
        }
    }
}
