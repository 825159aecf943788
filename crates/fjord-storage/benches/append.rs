//! Append and read throughput of the partition log, CRC32C verification and produce validation
//! of a batch (uncompressed and with each codec). 16 KB batches of 100-byte records, as a
//! typical producer sends them.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord_protocol::records::{self, AppendOrigin};
use fjord_storage::{Log, LogConfig};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const NOW: i64 = 1_700_000_000_000;

fn batch_16k() -> Vec<u8> {
    batch_16k_with(Compression::None)
}

fn batch_16k_with(compression: Compression) -> Vec<u8> {
    // ~16 KB: 100 B values plus a few bytes of key and record framing each.
    let records: Vec<Record> = (0..150)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1 + i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'x'; 100])),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
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

fn bench(c: &mut Criterion) {
    let b = batch_16k();
    let header = fjord_protocol::batch::parse_header(&b).unwrap();

    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("verify_crc_16k", |bench| {
        bench.iter(|| fjord_protocol::batch::verify_crc(std::hint::black_box(&b), &header))
    });
    // Produce validation (LogValidator's work: CRC, counts, every record's varints, keys,
    // timestamps; compressed batches inflated as a stream), per uncompressed byte.
    let rules = LogConfig::default().record_rules(NOW, AppendOrigin::Client);
    for (name, c) in [
        ("validate_16k_none", Compression::None),
        ("validate_16k_gzip", Compression::Gzip),
        ("validate_16k_snappy", Compression::Snappy),
        ("validate_16k_lz4", Compression::Lz4),
        ("validate_16k_zstd", Compression::Zstd),
    ] {
        let batch = batch_16k_with(c);
        g.bench_function(name, |bench| {
            bench.iter(|| records::validate(std::hint::black_box(&batch), &rules).unwrap())
        });
    }
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 256 << 20,
        retention_bytes: 512 << 20,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path().join("append"), cfg.clone()).unwrap();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(b.len() as u64));
    let mut until_maintain = 20_000u32;
    g.bench_function("append_16k_batch", |bench| {
        bench.iter(|| {
            log.append(&b, 0, NOW).unwrap();
            // Keep the disk footprint bounded (retention.bytes).
            until_maintain -= 1;
            if until_maintain == 0 {
                until_maintain = 20_000;
                log.maintain(NOW).unwrap();
            }
        })
    });

    let mut rlog = Log::open(dir.path().join("read"), cfg).unwrap();
    for _ in 0..4096 {
        rlog.append(&b, 0, NOW).unwrap();
    }
    let leo = rlog.log_end_offset();
    let mut next = 0i64;
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("read_1mb", |bench| {
        bench.iter(|| {
            let r = rlog.read(next, 1 << 20, i64::MAX, true).unwrap();
            next = (next + 64 * 150) % leo;
            r.records.len()
        })
    });
    // What a fetch does under the partition lock now: find the whole batches of 1 MB from
    // headers and the index, read nothing else (the bytes then go out with sendfile).
    let mut next = 0i64;
    g.bench_function("read_range_1mb", |bench| {
        bench.iter(|| {
            let r = rlog.read_range(next, 1 << 20, leo - 1, true).unwrap();
            next = (next + 64 * 150) % leo;
            r.records.map_or(0, |range| range.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
