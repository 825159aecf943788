//! The keys of a batch's records, for sampling (the broker's partition-skew sketch).
//!
//! A second, lighter walk over a batch that [`super::validate`] already accepted: per record
//! only its length and key are read, the rest is skipped. Compressed batches are inflated
//! again, as a stream, with the same cap as validation. A batch that does not parse ends the
//! walk early with the records seen so far; nothing here panics on bad bytes.

use super::{
    batch, byte, over_records, skip_within, varint, varlong, RecordsError, Source, Stop, Visit,
    BATCH_HEADER_LEN,
};

/// Key bytes read per record; a longer key is known by these bytes and its length.
pub const KEY_READ_MAX: usize = 256;

/// One record as the key walk sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey<'a> {
    /// The first [`KEY_READ_MAX`] bytes of the key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The key's full length (0 for a null key).
    pub key_len: usize,
    /// The record's length in bytes (its body, without the length varint).
    pub record_len: usize,
}

/// Call `f` with each record of the first batch in `records` (which passed validation):
/// returns how many records were seen. `max_inflated_bytes` caps what a compressed batch may
/// inflate to, as in validation.
pub fn for_each_key(
    records: &[u8],
    max_inflated_bytes: u64,
    f: &mut dyn FnMut(RecordKey<'_>),
) -> usize {
    let Ok(h) = batch::parse_header(records) else {
        return 0;
    };
    let Some(body) = records.get(BATCH_HEADER_LEN..h.total_size()) else {
        return 0;
    };
    let mut walk = KeyWalk {
        count: h.records_count.max(0),
        seen: 0,
        buf: [0; KEY_READ_MAX],
        f,
    };
    let _ = over_records(body, h.compression(), max_inflated_bytes, &mut walk);
    walk.seen
}

struct KeyWalk<'f> {
    count: i32,
    seen: usize,
    buf: [u8; KEY_READ_MAX],
    f: &'f mut dyn FnMut(RecordKey<'_>),
}

impl Visit for KeyWalk<'_> {
    fn run(&mut self, src: &mut impl Source) -> Result<(), RecordsError> {
        for _ in 0..self.count {
            self.record(src)?;
        }
        Ok(())
    }
}

impl KeyWalk<'_> {
    fn record(&mut self, src: &mut impl Source) -> Result<(), Stop> {
        let length = varint(src)?;
        if length < 6 {
            return Err(Stop::Malformed(format!("invalid record length {length}")));
        }
        let start = src.position();
        byte(src)?;
        varlong(src)?;
        varint(src)?;
        let key_len = varint(src)?;
        let key = if key_len < 0 {
            None
        } else {
            let read = (key_len as usize).min(KEY_READ_MAX);
            if src.position() + key_len as u64 > start + length as u64
                || !src.read_exact(&mut self.buf[..read])?
            {
                return Err(Stop::Malformed("key runs past the record".into()));
            }
            Some(read)
        };
        // The header's varints may claim more than the record length (checked, not assumed:
        // a subtraction that wrapped would skip the rest of the batch wrongly).
        let rest = (start + length as u64)
            .checked_sub(src.position())
            .ok_or_else(|| Stop::Malformed("record header runs past the record".into()))?;
        let key_len = key_len.max(0) as usize;
        (self.f)(RecordKey {
            key: key.map(|n| &self.buf[..n]),
            key_len,
            record_len: length as usize,
        });
        self.seen += 1;
        skip_within(src, rest as i32, start, length)
    }
}
