//! Hostile record batches against a real broker: batches whose headers lie about their counts
//! and lengths, malformed varints, decompression bombs for every codec, keyless records on a
//! compacted topic. Each gets the error code Kafka's LogValidator would send, nothing is
//! appended, and afterwards a real client still produces and consumes, ListOffsets by
//! timestamp still answers, and the broker's peak RSS stays bounded.
//!
//! The batches are built here byte by byte (with valid CRCs: an attacker computes them too)
//! and sent as Produce requests through fjord-client's raw connection.

mod common;

use bytes::{Bytes, BytesMut};
use common::FjordProcess;
use fjord_client::{Client, Connection, ConnectionConfig};
use fjord_protocol::clock::now_ms;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;

fn record(i: usize, key: Option<&str>, value: Vec<u8>, ts: i64) -> Record {
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
        value: Some(Bytes::from(value)),
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

/// Overwrite header bytes at `at` and recompute the CRC.
fn forge(mut b: Vec<u8>, at: usize, field: &[u8]) -> Vec<u8> {
    b[at..at + field.len()].copy_from_slice(field);
    let crc = fjord_protocol::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A batch around raw record bytes, header fields as given, CRC valid.
fn raw_batch(attributes: i16, count: i32, body: &[u8]) -> Vec<u8> {
    let ts = now_ms();
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(body);
    forge(b, 0, &0i64.to_be_bytes())
}

struct Raw {
    rt: tokio::runtime::Runtime,
    client: Client,
    conn: Connection,
}

impl Raw {
    fn connect(broker: &FjordProcess) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::connect(broker.bootstrap()))
            .expect("connect");
        let conn = rt
            .block_on(Connection::connect(
                broker.bootstrap(),
                ConnectionConfig::default(),
            ))
            .expect("connect");
        Raw { rt, client, conn }
    }

    /// Produce raw record bytes to partition 0 (by topic id: the connection speaks v13).
    fn produce(&self, topic: &str, records: Vec<u8>) -> PartitionProduceResponse {
        let topic_id = self
            .rt
            .block_on(self.client.topic_metadata(topic))
            .expect("topic metadata")
            .topic_id;
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_topic_id(topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(records)))])]);
        let response = self
            .rt
            .block_on(self.conn.send(&request))
            .expect("produce answered");
        response.responses[0].partition_responses[0].clone()
    }
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

fn log_end(broker: &FjordProcess, topic: &str) -> i64 {
    let out = broker.kcat(&["-Q", "-t", &format!("{topic}:0:-1")], None);
    assert!(out.ok(), "kcat -Q: {}", out.describe());
    out.stdout()
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("kcat -Q output: {}", out.stdout()))
}

/// A real client (kcat) produces and reads back on `topic`.
fn clients_still_work(broker: &FjordProcess, topic: &str, tag: &str) {
    let input = format!("k-{tag}:v-{tag}\n");
    let p = broker.kcat(
        &["-P", "-t", topic, "-p", "0", "-K:"],
        Some(input.as_bytes()),
    );
    assert!(p.ok(), "after {tag}: kcat produce: {}", p.describe());
    let c = broker.kcat(
        &[
            "-C", "-t", topic, "-p", "0", "-o", "-1", "-e", "-f", "%k:%s\n",
        ],
        None,
    );
    assert!(
        c.ok() && c.stdout().contains(&format!("k-{tag}:v-{tag}")),
        "after {tag}: kcat consume: {}",
        c.describe()
    );
}

#[test]
fn lying_and_hostile_batches_get_kafkas_errors_and_the_broker_keeps_serving() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("plain", 1, &[]);
    broker.create_topic("compacted", 1, &["cleanup.policy=compact"]);
    let raw = Raw::connect(&broker);
    let pid = broker.pid();
    let baseline_kb = peak_rss_kb(pid);
    let now = now_ms();

    // The batch: ~100 bytes, valid CRC, header claiming 2^31-1 records. It aborted the
    // broker on a compacted topic and moved a plain topic's log end to 2^31-1.
    let honest = encode(
        &[record(0, Some("k"), b"v".to_vec(), now)],
        Compression::None,
    );
    let lying = forge(honest.clone(), 23, &(i32::MAX - 1).to_be_bytes());
    let lying = forge(lying, 57, &i32::MAX.to_be_bytes());
    for topic in ["compacted", "plain"] {
        let r = raw.produce(topic, lying.clone());
        assert_eq!(r.error_code, INVALID_RECORD, "{topic}: {r:?}");
        assert_eq!(log_end(&broker, topic), 0, "{topic}: nothing appended");
    }
    // ListOffsets by timestamp (it aborted the broker after the lying batch was taken).
    let q = broker.kcat(&["-Q", "-t", &format!("plain:0:{now}")], None);
    assert!(q.ok(), "offsets for times: {}", q.describe());
    clients_still_work(&broker, "plain", "lying-count");

    // Counts and records that disagree, lengths and varints that lie.
    let rec = |delta: u8, key: &[u8]| -> Vec<u8> {
        // attributes, ts delta 0, offset delta, key, value "x", no headers
        let mut body = vec![0u8, 0, delta * 2, (key.len() * 2) as u8];
        body.extend_from_slice(key);
        body.extend_from_slice(&[2, b'x', 0]);
        let mut r = vec![(body.len() * 2) as u8];
        r.extend(body);
        r
    };
    let r0 = rec(0, b"a");
    let cases: Vec<(&str, Vec<u8>, i16)> = vec![
        (
            "three claimed, one present",
            raw_batch(0, 3, &r0),
            INVALID_RECORD,
        ),
        (
            "one claimed, two present",
            raw_batch(0, 1, &[r0.clone(), rec(1, b"b")].concat()),
            INVALID_RECORD,
        ),
        (
            "offset deltas not sequential",
            raw_batch(0, 2, &[r0.clone(), rec(5, b"b")].concat()),
            INVALID_RECORD,
        ),
        (
            "record length past the batch",
            raw_batch(0, 1, &[&[0x7e][..], &r0[1..]].concat()),
            INVALID_RECORD,
        ),
        (
            "negative record length",
            raw_batch(0, 1, &[&[0x09][..], &r0[1..]].concat()),
            INVALID_RECORD,
        ),
        (
            "negative key length",
            raw_batch(0, 1, &[0x0c, 0, 0, 0, 0x09, 0, 2, b'x', 0, 0, 0, 0]),
            INVALID_RECORD,
        ),
        (
            "varint longer than five bytes",
            raw_batch(0, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0]),
            INVALID_RECORD,
        ),
        (
            "bad CRC",
            {
                let mut b = honest.clone();
                *b.last_mut().unwrap() ^= 1;
                b
            },
            CORRUPT_MESSAGE,
        ),
        (
            "timestamp two hours ahead",
            encode(
                &[record(0, Some("k"), b"v".to_vec(), now + 7_200_000)],
                Compression::None,
            ),
            INVALID_TIMESTAMP,
        ),
        (
            "two batches in one partition",
            [honest.clone(), honest.clone()].concat(),
            INVALID_RECORD,
        ),
    ];
    for (name, batch, code) in cases {
        let r = raw.produce("plain", batch);
        assert_eq!(r.error_code, code, "{name}: {r:?}");
    }
    assert_eq!(log_end(&broker, "plain"), 1, "only kcat's record is in");
    clients_still_work(&broker, "plain", "lying-lengths");

    // Decompression bombs: 128 MiB of zeros in one record (twice the 64 MiB cap at the default
    // max.message.bytes), a few hundred KB on the wire.
    for c in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let bomb = encode(&[record(0, Some("k"), vec![0u8; 128 << 20], now)], c);
        assert!(bomb.len() < 1_000_000, "{c:?} bomb is {} bytes", bomb.len());
        let r = raw.produce("plain", bomb);
        assert_eq!(r.error_code, MESSAGE_TOO_LARGE, "{c:?} bomb: {r:?}");
    }
    // Snappy inflates at most ~22x; its bomb is a block that claims 2 GiB.
    let mut snappy = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    let block = [0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
    snappy.extend_from_slice(&(block.len() as u32).to_be_bytes());
    snappy.extend_from_slice(&block);
    let r = raw.produce("plain", raw_batch(2, 1, &snappy));
    assert_eq!(r.error_code, INVALID_RECORD, "snappy bomb: {r:?}");
    clients_still_work(&broker, "plain", "bombs");

    // Keyless records on a compacted topic fail one by one (KIP-467).
    let records: Vec<Record> = (0..20)
        .map(|i| {
            let key = (i % 10 != 0).then(|| format!("k{i}"));
            record(i, key.as_deref(), b"v".to_vec(), now)
        })
        .collect();
    let r = raw.produce("compacted", encode(&records, Compression::Zstd));
    assert_eq!(r.error_code, INVALID_RECORD, "{r:?}");
    let idx: Vec<i32> = r.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(idx, vec![0, 10], "{r:?}");
    assert!(r.error_message.is_some());
    clients_still_work(&broker, "compacted", "keyless");

    // Client writes to the group coordinator's internal topic (a consumer group creates it).
    common::ck_consume(&broker, "compacted", 1);
    let r = raw.produce("__consumer_offsets", honest.clone());
    assert!(
        r.error_code == INVALID_TOPIC_EXCEPTION,
        "produce to __consumer_offsets: {r:?}"
    );

    let peak_kb = peak_rss_kb(pid);
    eprintln!("broker peak RSS: {baseline_kb} KiB before, {peak_kb} KiB after the hostile batches");
    assert!(
        peak_kb < baseline_kb + 200 * 1024,
        "peak RSS grew from {baseline_kb} KiB to {peak_kb} KiB"
    );
    broker.assert_no_panic_in_log();
}

/// librdkafka's test 0011 (`test_message_single_partition_record_fail`) with confluent-kafka:
/// in one batch the keyless records fail with INVALID_RECORD and the rest with
/// _INVALID_DIFFERENT_RECORD; one record per batch, only the keyless ones fail.
#[test]
fn keyless_records_on_a_compacted_topic_fail_alone_for_librdkafka() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("rf-one", 1, &["cleanup.policy=compact"]);
    let out = broker
        .python("ck_record_errors.py", &["--topic", "rf-one", "--one-batch"])
        .success("one batch");
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert_eq!(v["errors"]["INVALID_RECORD"], 10, "{v}");
    assert_eq!(v["errors"]["_INVALID_DIFFERENT_RECORD"], 90, "{v}");

    broker.create_topic("rf-many", 1, &["cleanup.policy=compact"]);
    let out = broker
        .python("ck_record_errors.py", &["--topic", "rf-many"])
        .success("one record per batch");
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert_eq!(v["errors"]["INVALID_RECORD"], 10, "{v}");
    assert_eq!(v["delivered"], 90, "{v}");
    broker.assert_no_panic_in_log();
}

/// Writes to `__consumer_offsets` with confluent-kafka's producer and admin client: produce and
/// DeleteRecords get INVALID_TOPIC_EXCEPTION (as from Kafka), DeleteTopics and CreatePartitions
/// INVALID_TOPIC_EXCEPTION, dropping compaction INVALID_CONFIG, creating an internal topic
/// INVALID_REQUEST (TOPIC_ALREADY_EXISTS once it exists); a harmless config change passes. The
/// group's committed offsets are still there afterwards. (librdkafka names code 17
/// TOPIC_EXCEPTION.)
#[test]
fn internal_topics_refuse_client_writes_and_breaking_changes() {
    let broker = FjordProcess::start(&[]);
    broker.create_topic("data", 1, &[]);
    common::ck_produce(&broker, "data", 10, &[]);
    let group = "internal-check";
    let consumed = broker.kcat(
        &[
            "-G",
            group,
            "-e",
            "-X",
            "auto.offset.reset=earliest",
            "data",
        ],
        None,
    );
    assert!(consumed.ok(), "kcat group consume: {}", consumed.describe());
    let lag_before = broker.cli(&["group", "describe", group]);

    let out = broker
        .python("ck_internal_topics.py", &[])
        .success("ck_internal_topics.py");
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert_eq!(v["produce"], "TOPIC_EXCEPTION", "{v}");
    assert_eq!(v["delete_records"], "TOPIC_EXCEPTION", "{v}");
    assert_eq!(v["delete_topics"], "TOPIC_EXCEPTION", "{v}");
    assert_eq!(v["create_partitions"], "TOPIC_EXCEPTION", "{v}");
    assert_eq!(v["drop_compaction"], "INVALID_CONFIG", "{v}");
    assert_eq!(v["segment_bytes"], "OK", "{v}");
    assert_eq!(v["create_transaction_state"], "INVALID_REQUEST", "{v}");
    assert_eq!(v["create_consumer_offsets"], "TOPIC_ALREADY_EXISTS", "{v}");
    assert_eq!(v["partitions"], 50, "{v}");

    let lag_after = broker.cli(&["group", "describe", group]);
    assert!(
        lag_before.ok() && lag_after.ok(),
        "{}",
        lag_after.describe()
    );
    assert_eq!(
        lag_before.stdout(),
        lag_after.stdout(),
        "the group's offsets changed"
    );
    assert!(
        lag_after.stdout().contains("data"),
        "{}",
        lag_after.stdout()
    );
    let configs = broker.cli(&["topic", "describe", "__consumer_offsets"]);
    assert!(
        configs.stdout().contains("compact"),
        "{}",
        configs.describe()
    );
    broker.assert_no_panic_in_log();
}
