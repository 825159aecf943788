#![allow(dead_code)]
//! Test batch builders (real Kafka v2 batches from kafka-protocol's encoder).

use bytes::{Bytes, BytesMut};
use fjord_storage::{Log, LogConfig};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub struct B {
    pub n: usize,
    pub ts: i64,
    pub producer_id: i64,
    pub epoch: i16,
    pub seq: i32,
    pub compression: Compression,
    pub key: Option<String>,
    pub value_len: usize,
    pub transactional: bool,
}

impl Default for B {
    fn default() -> Self {
        B {
            n: 1,
            ts: 1_000,
            producer_id: -1,
            epoch: -1,
            seq: -1,
            compression: Compression::None,
            key: None,
            value_len: 100,
            transactional: false,
        }
    }
}

pub fn records_kv(
    kvs: &[(Option<&str>, Option<&str>)],
    ts: i64,
    compression: Compression,
) -> Vec<u8> {
    let recs: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: ts + i as i64,
            key: k.map(|k| Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

pub fn batch(b: B) -> Vec<u8> {
    let recs: Vec<Record> = (0..b.n)
        .map(|i| Record {
            transactional: b.transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id: b.producer_id,
            producer_epoch: b.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if b.seq < 0 {
                -1 + i as i32
            } else {
                b.seq.wrapping_add(i as i32)
            },
            timestamp: b.ts + i as i64,
            key: Some(Bytes::from(
                b.key.clone().unwrap_or_else(|| format!("key-{i}")),
            )),
            value: Some(Bytes::from(vec![b'v'; b.value_len])),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: b.compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// A simple batch of `n` records with timestamps from `ts`.
pub fn simple(n: usize, ts: i64) -> Vec<u8> {
    batch(B {
        n,
        ts,
        ..Default::default()
    })
}

/// Decode everything readable from `from` to the end: (offset, timestamp, key, value).
pub fn read_all(log: &Log, from: i64) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        let mut b = r.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            for rec in set.records {
                if rec.offset >= next {
                    out.push((rec.offset, rec.timestamp, rec.key, rec.value));
                }
            }
        }
        let mut last = next;
        for b in fjord_protocol::batch::BatchIter::new(&r.records) {
            last = b.unwrap().header.last_offset() + 1;
        }
        next = last;
    }
    out
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}
