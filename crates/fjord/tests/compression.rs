//! 100k records per codec through confluent-kafka (librdkafka) and back, byte for byte:
//! keys, values, headers (including empty and null values), explicit CreateTime timestamps,
//! and contiguous offsets.

mod common;

use common::records::{self, Expect};
use common::{ck_consume, ck_produce, FjordProcess};

const COUNT: u64 = 100_000;

fn round_trip(codec: &str) {
    let broker = FjordProcess::start(&[]);
    let topic = format!("codec-{codec}");
    broker.create_topic(&topic, 3, &[]);
    let base = records::timestamp_base();
    let base_s = base.to_string();
    let acks = ck_produce(
        &broker,
        &topic,
        COUNT,
        &[
            "--compression",
            codec,
            "--headers",
            "--timestamp-base",
            &base_s,
            "-X",
            "linger.ms=20",
        ],
    );
    let dump = ck_consume(&broker, &topic, COUNT);
    records::assert_dump_matches(
        &dump,
        &Expect {
            count: COUNT,
            pad: 0,
            headers: true,
            timestamp_base: Some(base),
        },
    );
    records::assert_acks_present(&acks, &dump, 0);
    broker.assert_no_panic_in_log();
}

#[test]
fn codec_none_100k() {
    round_trip("none");
}

#[test]
fn codec_gzip_100k() {
    round_trip("gzip");
}

#[test]
fn codec_snappy_100k() {
    round_trip("snappy");
}

#[test]
fn codec_lz4_100k() {
    round_trip("lz4");
}

#[test]
fn codec_zstd_100k() {
    round_trip("zstd");
}
