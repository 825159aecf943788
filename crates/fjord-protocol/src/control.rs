//! Control batches: the commit and abort markers that end a transaction in each of its
//! partitions (Kafka's `EndTransactionMarker` in a batch with the control and transactional
//! attributes). A partition leader builds one from a WriteTxnMarkers request
//! ([`marker_batch`]); the log reads it back when it rebuilds its producer state
//! ([`read_marker`]). Clients may not produce control batches (the produce validation refuses
//! them), so [`read_marker`] only ever reads batches a leader wrote, and still checks every
//! length against the bytes present.
//!
//! One record, uncompressed: key = version (i16, 0) and type (i16: 0 abort, 1 commit); value =
//! version (i16, 0) and the coordinator epoch (i32).

use crate::batch::{self, attributes, BATCH_HEADER_LEN, LOG_OVERHEAD};

/// `ControlRecordType` of a transaction marker.
pub const ABORT: i16 = 0;
pub const COMMIT: i16 = 1;

/// The end of a transaction in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    /// The coordinator's epoch (its `__transaction_state` partition's leader epoch): a marker
    /// from an older coordinator is refused.
    pub coordinator_epoch: i32,
}

/// Why a control batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed control batch: {0}")]
pub struct ControlError(String);

/// A zigzag varint (Kafka's `ByteUtils.writeVarlong`).
fn put_varint(out: &mut Vec<u8>, v: i64) {
    crate::codec::put_unsigned_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A batch (magic 2, one control record) holding `marker` for `producer_id` / `producer_epoch`,
/// base offset 0 (the log assigns it) and `timestamp_ms`.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp_ms: i64,
    partition_leader_epoch: i32,
) -> Vec<u8> {
    let key_type = if marker.commit { COMMIT } else { ABORT };
    let mut record_body = Vec::with_capacity(24);
    record_body.push(0); // attributes
    put_varint(&mut record_body, 0); // timestamp delta
    put_varint(&mut record_body, 0); // offset delta
    put_varint(&mut record_body, 4);
    record_body.extend_from_slice(&0i16.to_be_bytes());
    record_body.extend_from_slice(&key_type.to_be_bytes());
    put_varint(&mut record_body, 6);
    record_body.extend_from_slice(&0i16.to_be_bytes());
    record_body.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    put_varint(&mut record_body, 0); // headers
    let mut record = Vec::with_capacity(record_body.len() + 2);
    put_varint(&mut record, record_body.len() as i64);
    record.extend_from_slice(&record_body);

    let total = BATCH_HEADER_LEN + record.len();
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
    b.extend_from_slice(&partition_leader_epoch.to_be_bytes());
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&(attributes::CONTROL | attributes::TRANSACTIONAL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records
    b.extend_from_slice(&record);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Reads a v2 record's fields from a slice, refusing any length past its end.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn err(what: &str) -> ControlError {
        ControlError(what.to_string())
    }

    fn varint(&mut self) -> Result<i64, ControlError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(Self::err("varint past the end"))?;
            self.buf = rest;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(Self::err("varint too long"))
    }

    fn bytes(&mut self, n: i64) -> Result<&'a [u8], ControlError> {
        let n = usize::try_from(n).map_err(|_| Self::err("negative length"))?;
        let (head, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or(Self::err("a field runs past the batch"))?;
        self.buf = rest;
        Ok(head)
    }
}

/// The marker in control batch `batch` (the whole batch, header included); `None` for a
/// control batch that is not a transaction marker (Kafka also writes LeaderChange records).
pub fn read_marker(batch: &[u8]) -> Result<Option<EndTxnMarker>, ControlError> {
    let h = batch::parse_header_prefix(batch).map_err(|e| ControlError(e.to_string()))?;
    if !h.is_control() {
        return Err(Cursor::err("not a control batch"));
    }
    if h.compression() != 0 {
        return Err(Cursor::err("compressed control batch"));
    }
    let end = h.total_size().min(batch.len());
    let mut c = Cursor {
        buf: batch
            .get(BATCH_HEADER_LEN..end)
            .ok_or(Cursor::err("shorter than its header"))?,
    };
    let len = c.varint()?;
    let mut r = Cursor { buf: c.bytes(len)? };
    r.bytes(1)?; // attributes
    r.varint()?; // timestamp delta
    r.varint()?; // offset delta
    let key_len = r.varint()?;
    let key = r.bytes(key_len)?;
    let [_, _, t0, t1] = key else {
        return Err(Cursor::err("control record key is not 4 bytes"));
    };
    let kind = i16::from_be_bytes([*t0, *t1]);
    if kind != ABORT && kind != COMMIT {
        return Ok(None);
    }
    let value_len = r.varint()?;
    let value = r.bytes(value_len)?;
    let epoch = value
        .get(2..6)
        .ok_or(Cursor::err("marker value shorter than its epoch"))?;
    Ok(Some(EndTxnMarker {
        commit: kind == COMMIT,
        coordinator_epoch: i32::from_be_bytes([epoch[0], epoch[1], epoch[2], epoch[3]]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_with_a_valid_crc() {
        for commit in [true, false] {
            let m = EndTxnMarker {
                commit,
                coordinator_epoch: 42,
            };
            let b = marker_batch(7, 3, m, 1_700_000_000_000, 5);
            let h = batch::parse_header(&b).unwrap();
            batch::verify_crc(&b, &h).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (7, 3, 1)
            );
            assert_eq!(h.total_size(), b.len());
            assert_eq!(read_marker(&b).unwrap(), Some(m));
        }
    }

    #[test]
    fn kafkas_encoding_reads_the_same() {
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        // Kafka's control record: key (version 0, type 1 = commit), value (version 0, epoch 9).
        let record = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 11,
            producer_epoch: 2,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 5,
            key: Some(bytes::Bytes::from_static(&[0, 0, 0, 1])),
            value: Some(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 9])),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [record].iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: kafka_protocol::records::Compression::None,
            },
        )
        .unwrap();
        assert_eq!(
            read_marker(&buf).unwrap(),
            Some(EndTxnMarker {
                commit: true,
                coordinator_epoch: 9
            })
        );
    }

    #[test]
    fn truncated_or_lying_batches_are_errors_not_panics() {
        let b = marker_batch(
            7,
            3,
            EndTxnMarker {
                commit: true,
                coordinator_epoch: 1,
            },
            0,
            0,
        );
        for cut in 0..b.len() {
            let _ = read_marker(&b[..cut]);
        }
        let mut lying = b.clone();
        lying[BATCH_HEADER_LEN] = 0x7e; // record length 63 > the bytes left
        assert!(read_marker(&lying).is_err());
        let mut data = b.clone();
        data[22] = 0; // attributes: not control
        assert!(read_marker(&data).is_err());
    }
}
