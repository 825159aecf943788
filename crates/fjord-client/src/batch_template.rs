//! A record batch encoded once and sent many times, for load generators (`fjord perf`).
//!
//! Encoding records one by one (a `Record` per record, varints, a copy of every value) costs the
//! client more CPU per MB than the broker spends appending them, so a load generator that did it
//! for every request would measure itself. A [`BatchTemplate`] encodes its records once; each
//! send takes the same bytes (a reference-count increment) and only when the millisecond clock
//! has moved re-stamps a copy: base and max timestamp in the header (every record's timestamp
//! delta is 0, so all its records carry the new time) and the CRC. Offsets need no patching:
//! the broker assigns them.

use bytes::{Bytes, BytesMut};
use fjord_protocol::batch::{parse_header, set_max_timestamp};

use crate::client::{Client, ProduceRecord};
use crate::error::{Error, Result};
use crate::Compression;

/// Where `base_timestamp` sits in a v2 batch header (see `fjord_protocol::batch`).
const BASE_TIMESTAMP_AT: usize = 27;

/// `records` copies of one value as one encoded batch, re-stamped with the current time on use.
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    batch: Bytes,
    records: u64,
    timestamp_ms: i64,
}

impl BatchTemplate {
    /// A batch of `records` records (at least one), each with `value`, no key and no headers,
    /// stamped `now_ms`.
    pub fn new(
        records: usize,
        value: Bytes,
        compression: Compression,
        now_ms: i64,
    ) -> Result<BatchTemplate> {
        if records == 0 {
            return Err(Error::Invalid("a batch needs at least one record".into()));
        }
        let record = ProduceRecord {
            value: Some(value),
            timestamp: Some(now_ms),
            ..ProduceRecord::default()
        };
        let batch = Client::encode_batch(&vec![record; records], compression)?;
        Ok(BatchTemplate {
            batch,
            records: records as u64,
            timestamp_ms: now_ms,
        })
    }

    /// Records in the batch.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Encoded size of the batch in bytes.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Never true: a template holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The batch with every record stamped `now_ms`: the stored bytes if already so, else a
    /// re-stamped copy that is kept for the next calls.
    pub fn stamped(&mut self, now_ms: i64) -> Bytes {
        if now_ms != self.timestamp_ms {
            let mut b = BytesMut::from(&self.batch[..]);
            b[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
            // Writes max_timestamp and recomputes the CRC over the whole batch.
            set_max_timestamp(&mut b, now_ms);
            debug_assert_eq!(
                parse_header(&b).map(|h| h.base_timestamp).ok(),
                Some(now_ms)
            );
            self.batch = b.freeze();
            self.timestamp_ms = now_ms;
        }
        self.batch.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::decode_records;
    use fjord_protocol::batch::verify_crc;

    fn check(batch: &Bytes, records: usize, value: &[u8], ts: i64) {
        let header = parse_header(batch).expect("header");
        verify_crc(batch, &header).expect("crc");
        assert_eq!(header.records_count as usize, records);
        assert_eq!((header.base_timestamp, header.max_timestamp), (ts, ts));
        let (decoded, next) = decode_records(0, batch.clone(), 0).expect("decodes");
        assert_eq!((decoded.len(), next), (records, records as i64));
        for (i, r) in decoded.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, ts);
            assert_eq!(r.value.as_deref(), Some(value));
            assert!(r.key.is_none());
        }
    }

    #[test]
    fn restamps_timestamps_and_crc_only_when_the_clock_moves() {
        for compression in [Compression::None, Compression::Lz4] {
            let value = Bytes::from_static(b"ABCDEFGHIJ");
            let mut t = BatchTemplate::new(7, value.clone(), compression, 1_000).expect("template");
            assert_eq!(t.records(), 7);
            let first = t.stamped(1_000);
            check(&first, 7, &value, 1_000);
            // Same millisecond: the same bytes, not a copy.
            assert_eq!(t.stamped(1_000).as_ptr(), first.as_ptr());
            let later = t.stamped(1_700_000_000_123);
            assert_ne!(later.as_ptr(), first.as_ptr());
            check(&later, 7, &value, 1_700_000_000_123);
            assert_eq!(later.len(), t.len());
        }
    }

    #[test]
    fn empty_batch_is_an_error() {
        assert!(BatchTemplate::new(0, Bytes::new(), Compression::None, 0).is_err());
    }
}
