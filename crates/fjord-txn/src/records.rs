//! Records in `__transaction_state`: Fjord's own format, versioned, like `__consumer_offsets`'
//! (`fjord_group::records`).
//!
//! Key: a 2-byte big-endian key type, then JSON; type 1 is a transactional id
//! `{"transactional_id": ...}`. Value: a 2-byte big-endian value version, then the id's
//! [`TxnValue`] as JSON; a null value (tombstone) removes an expired id, which lets compaction
//! drop it. Unknown key types and newer value versions are skipped on replay, so a newer
//! broker's records do not stop an older one from loading.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::state::TxnState;

pub const TXN_KEY: u16 = 1;
pub const TXN_VALUE_VERSION: u16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnKey {
    pub transactional_id: String,
}

/// What `__transaction_state` keeps of a transactional id (Kafka's `TransactionLogValue`, plus
/// the previous epoch so that a retried InitProducerId is recognized across a coordinator
/// change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnValue {
    pub producer_id: i64,
    /// The producer id before the last rotation (epochs exhausted), to recognize a retried
    /// InitProducerId of the producer that was rotated.
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions in the transaction (empty unless it is open or finishing).
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// A record to append: key and value (`None`: tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

fn frame(kind: u16, json: Vec<u8>) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + json.len());
    b.put_u16(kind);
    b.put_slice(&json);
    b.freeze()
}

pub fn record(transactional_id: &str, value: Option<&TxnValue>) -> Record {
    let key = TxnKey {
        transactional_id: transactional_id.to_string(),
    };
    Record {
        key: frame(TXN_KEY, serde_json::to_vec(&key).expect("serializable")),
        value: value.map(|v| {
            frame(
                TXN_VALUE_VERSION,
                serde_json::to_vec(v).expect("serializable"),
            )
        }),
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Txn(TxnKey, Option<TxnValue>),
    /// A key type or value version this broker does not know: skipped.
    Unknown,
}

fn split(b: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = b.split_at_checked(2)?;
    Some((u16::from_be_bytes([head[0], head[1]]), rest))
}

pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Decoded, String> {
    let (kind, key_json) = split(key).ok_or("record key shorter than its type")?;
    if kind != TXN_KEY {
        return Ok(Decoded::Unknown);
    }
    let key: TxnKey = serde_json::from_slice(key_json).map_err(|e| format!("txn key: {e}"))?;
    let Some(value) = value else {
        return Ok(Decoded::Txn(key, None));
    };
    let (version, json) = split(value).ok_or("record value shorter than its version")?;
    if version != TXN_VALUE_VERSION {
        return Ok(Decoded::Unknown);
    }
    let value = serde_json::from_slice(json).map_err(|e| format!("txn value: {e}"))?;
    Ok(Decoded::Txn(key, Some(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tombstone() {
        let v = TxnValue {
            producer_id: 7,
            previous_producer_id: -1,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [("t".to_string(), 0), ("t".to_string(), 2)].into(),
            start_ms: 10,
            last_update_ms: 20,
        };
        let r = record("app-1", Some(&v));
        assert_eq!(
            decode(&r.key, r.value.as_deref()).unwrap(),
            Decoded::Txn(
                TxnKey {
                    transactional_id: "app-1".into()
                },
                Some(v)
            )
        );
        let t = record("app-1", None);
        assert!(matches!(
            decode(&t.key, None).unwrap(),
            Decoded::Txn(_, None)
        ));
    }

    #[test]
    fn unknown_kinds_are_skipped_and_garbage_is_an_error() {
        assert_eq!(decode(&[0, 9, b'{', b'}'], None).unwrap(), Decoded::Unknown);
        let r = record("x", None);
        assert_eq!(
            decode(&r.key, Some(&[0, 9, b'{', b'}'])).unwrap(),
            Decoded::Unknown
        );
        assert!(decode(&[0], None).is_err());
        assert!(decode(&[0, 1, b'{'], None).is_err());
        assert!(decode(&r.key, Some(&[0, 0, b'x'])).is_err());
    }
}
