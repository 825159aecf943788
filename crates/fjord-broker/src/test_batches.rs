//! Record batches for unit tests.

use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One v2 batch of one uncompressed record with a `value_len`-byte value, at `offset`.
pub fn batch(offset: i64, value_len: usize) -> Vec<u8> {
    encode(offset, value_len, None)
}

/// [`batch`] of a transactional producer (`producer_id`, epoch 0, its first sequence).
pub fn txn_batch(offset: i64, value_len: usize, producer_id: i64) -> Vec<u8> {
    encode(offset, value_len, Some(producer_id))
}

fn encode(offset: i64, value_len: usize, transactional: Option<i64>) -> Vec<u8> {
    let record = Record {
        transactional: transactional.is_some(),
        control: false,
        partition_leader_epoch: 0,
        producer_id: transactional.unwrap_or(-1),
        producer_epoch: if transactional.is_some() { 0 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: if transactional.is_some() { 0 } else { -1 },
        timestamp: 0,
        key: None,
        value: Some(bytes::Bytes::from(vec![b'v'; value_len])),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).expect("encodes");
    buf.to_vec()
}
