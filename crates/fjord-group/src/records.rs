//! Records in `__consumer_offsets`: Fjord's own format, versioned.
//!
//! Key: a 2-byte big-endian key type, then JSON. Type 1 is a committed offset
//! `{group, topic, partition}`; type 2 is a group's metadata `{group}`. Value: a 2-byte
//! big-endian value version, then JSON; a null value (tombstone) deletes the key, which lets
//! compaction drop deleted offsets and groups. Unknown key types are skipped on replay, so a
//! newer broker's extra record kinds do not stop an older one from loading.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const OFFSET_KEY: u16 = 1;
pub const GROUP_KEY: u16 = 2;
pub const OFFSET_VALUE_VERSION: u16 = 0;
pub const GROUP_VALUE_VERSION: u16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    pub group: String,
}

/// A group's persisted metadata. Classic groups keep their members so a static member can
/// rejoin across a coordinator restart without a rebalance; consumer (KIP-848) groups keep
/// their epoch (members re-join with epoch 0 after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    /// "classic" or "consumer".
    pub group_type: String,
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberValue>,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Offset(OffsetKey, Option<OffsetValue>),
    Group(GroupKey, Option<GroupValue>),
    Unknown,
}

fn frame(kind: u16, json: Vec<u8>) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + json.len());
    b.put_u16(kind);
    b.put_slice(&json);
    b.freeze()
}

pub fn offset_key(k: &OffsetKey) -> Bytes {
    frame(OFFSET_KEY, serde_json::to_vec(k).expect("json"))
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    frame(OFFSET_VALUE_VERSION, serde_json::to_vec(v).expect("json"))
}

pub fn group_key(k: &GroupKey) -> Bytes {
    frame(GROUP_KEY, serde_json::to_vec(k).expect("json"))
}

pub fn group_value(v: &GroupValue) -> Bytes {
    frame(GROUP_VALUE_VERSION, serde_json::to_vec(v).expect("json"))
}

fn split(b: &[u8]) -> Option<(u16, &[u8])> {
    (b.len() >= 2).then(|| (u16::from_be_bytes([b[0], b[1]]), &b[2..]))
}

/// Decode one record; `Err` for a record of a known type that does not parse.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Decoded, String> {
    let (kind, k) = split(key).ok_or("key shorter than 2 bytes")?;
    let value = match value {
        None => None,
        Some(v) => {
            let (version, body) = split(v).ok_or("value shorter than 2 bytes")?;
            Some((version, body))
        }
    };
    match kind {
        OFFSET_KEY => {
            let key: OffsetKey = serde_json::from_slice(k).map_err(|e| e.to_string())?;
            let value = match value {
                None => None,
                Some((_, body)) => Some(serde_json::from_slice(body).map_err(|e| e.to_string())?),
            };
            Ok(Decoded::Offset(key, value))
        }
        GROUP_KEY => {
            let key: GroupKey = serde_json::from_slice(k).map_err(|e| e.to_string())?;
            let value = match value {
                None => None,
                Some((_, body)) => Some(serde_json::from_slice(body).map_err(|e| e.to_string())?),
            };
            Ok(Decoded::Group(key, value))
        }
        _ => Ok(Decoded::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_round_trip_and_tombstone() {
        let k = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let v = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        let kb = offset_key(&k);
        assert_eq!(&kb[..2], &[0, 1]);
        assert_eq!(
            decode(&kb, Some(&offset_value(&v))).unwrap(),
            Decoded::Offset(k.clone(), Some(v))
        );
        assert_eq!(decode(&kb, None).unwrap(), Decoded::Offset(k, None));
        assert_eq!(decode(&[0, 9, 1], None).unwrap(), Decoded::Unknown);
        assert!(decode(&[0], None).is_err());
    }
}
