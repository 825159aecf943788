//! A read-only view of Kafka record batches (magic v2) over raw bytes.
//!
//! The broker never decodes individual records on the produce or fetch path: it reads the
//! 61-byte batch header, checks the CRC32C, and patches `base_offset` and
//! `partition_leader_epoch` in place. Both patched fields sit *before* the CRC-covered range
//! (which starts at `attributes`), so patching never invalidates the checksum.
//!
//! Layout (big-endian):
//! ```text
//! 0  base_offset i64        | 8  batch_length i32  | 12 partition_leader_epoch i32
//! 16 magic i8               | 17 crc u32 (CRC32C of bytes 21..end)
//! 21 attributes i16         | 23 last_offset_delta i32 | 27 base_timestamp i64
//! 35 max_timestamp i64      | 43 producer_id i64   | 51 producer_epoch i16
//! 53 base_sequence i32      | 57 records_count i32 | 61 records...
//! ```

use thiserror::Error;

/// Size of the v2 batch header, up to and including `records_count`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `base_offset` + `batch_length`: the bytes not counted by `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the first byte covered by the CRC.
const CRC_START: usize = 21;

/// Bits of the batch `attributes` field.
pub mod attributes {
    pub const COMPRESSION_MASK: i16 = 0x07;
    pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
    pub const DELETE_HORIZON: i16 = 0x40;
}

/// Why a batch could not be accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, or than `batch_length` announces.
    #[error("truncated record batch: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    /// `batch_length` smaller than the header it must contain.
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    /// Only record batch v2 is supported (Kafka 4.x dropped v0/v1 message formats).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC32C does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc { stored: u32, computed: u32 },
}

/// Header fields of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Total size of the batch on the wire and on disk.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// Number of offsets the batch occupies (`last_offset_delta + 1`).
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & attributes::COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & attributes::TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & attributes::CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & attributes::TIMESTAMP_TYPE_LOG_APPEND != 0
    }
    /// The producer id is set (idempotent or transactional producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// Sequence number of the last record (wrapping at i32::MAX as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Check what the start of `buf` already tells about the batch there, most telling first:
/// `batch_length` once its bytes are present, the magic once its byte is, then that the 61-byte
/// header is present. So a malformed prefix is reported as malformed even when the buffer ends
/// early, and `Truncated` means only "more bytes might make this a good batch".
/// Returns the batch's total size.
fn check_prefix(buf: &[u8]) -> Result<usize, BatchError> {
    let truncated = |needed| BatchError::Truncated {
        needed,
        have: buf.len(),
    };
    let Some(length) = buf.get(8..LOG_OVERHEAD) else {
        return Err(truncated(BATCH_HEADER_LEN));
    };
    let batch_length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
    if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength(batch_length));
    }
    if let Some(&magic) = buf.get(16) {
        if magic as i8 != 2 {
            return Err(BatchError::UnsupportedMagic(magic as i8));
        }
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if buf.len() < BATCH_HEADER_LEN {
        return Err(truncated(total));
    }
    Ok(total)
}

/// The header fields; `buf` holds at least [`BATCH_HEADER_LEN`] bytes checked by
/// [`check_prefix`].
fn read_header(buf: &[u8]) -> BatchHeader {
    BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length: be_i32(buf, 8),
        partition_leader_epoch: be_i32(buf, 12),
        magic: buf[16] as i8,
        crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        records_count: be_i32(buf, 57),
    }
}

/// Parse the header of the batch at the start of `buf`. Checks that the whole batch is present
/// and that the magic is 2; does not check the CRC (see [`verify_crc`]).
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let total = check_prefix(buf)?;
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            have: buf.len(),
        });
    }
    Ok(read_header(buf))
}

/// Parse only the 61-byte header at the start of `buf`, without requiring the rest of the batch
/// to be present (for reading headers from disk). Checks `batch_length` and magic like
/// [`parse_header`].
pub fn parse_header_prefix(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    check_prefix(buf)?;
    Ok(read_header(buf))
}

/// Overwrite `last_offset_delta` and `base_sequence` and fix the CRC (used by compaction to
/// keep a rewritten batch's original last offset and sequence, as Kafka does).
pub fn set_last_offset_delta_and_base_sequence(batch: &mut [u8], delta: i32, base_sequence: i32) {
    batch[23..27].copy_from_slice(&delta.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Compute the CRC32C of a whole batch (bytes from `attributes` to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Check the stored CRC32C of one whole batch (`batch` must be exactly one batch).
pub fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CorruptCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Overwrite `base_offset` in place (not CRC-covered).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrite `partition_leader_epoch` in place (not CRC-covered).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Overwrite `max_timestamp` and set the LogAppendTime attribute bit, then fix the CRC.
/// Used when a topic has `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attrs = be_i16(batch, 21) | attributes::TIMESTAMP_TYPE_LOG_APPEND;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Overwrite `max_timestamp` (keeping the timestamp type), then fix the CRC. Used when the
/// records' own timestamps disagree with the producer's header.
pub fn set_max_timestamp(batch: &mut [u8], timestamp: i64) {
    batch[35..43].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

impl BatchError {
    /// The bytes end inside a batch that looks well formed so far: more bytes could complete
    /// it. A fetch response cut at `max_bytes` ends like this (normal: the next fetch starts
    /// there); a log file ends like this after a crash mid-write (a torn tail, for recovery).
    /// Every other error is damage that no further bytes can repair.
    pub fn is_truncated(&self) -> bool {
        matches!(self, BatchError::Truncated { .. })
    }
}

/// One whole batch found by [`BatchIter`]: where it starts, its header, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Where the batch starts in the buffer the iterator walks.
    pub position: usize,
    pub header: BatchHeader,
    /// The whole batch, `header.total_size()` bytes.
    pub bytes: &'a [u8],
}

impl Batch<'_> {
    /// Where the next batch starts in the buffer.
    pub fn end(&self) -> usize {
        self.position + self.bytes.len()
    }
}

/// The one walker over concatenated record batches (a fetch response, a produce request's
/// records, a chunk of a log file). Yields each whole batch in order, then `None`; or, where
/// the bytes stop being whole batches, one error and then `None`:
/// - [`BatchError::Truncated`] ([`BatchError::is_truncated`]) when the buffer ends inside a
///   batch whose header is good so far — each caller decides whether that is normal (a fetch
///   response cut at `max_bytes`) or a torn tail (a log file);
/// - any other [`BatchError`] for a malformed header (bad `batch_length`, magic other than 2).
///
/// It reads only headers (no CRC check: see [`verify_crc`]), borrows the buffer, never
/// allocates and never panics, whatever the bytes. [`BatchIter::position`] is the end of the
/// whole batches walked so far: after an error, the length of the good prefix.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            done: false,
        }
    }
    /// Bytes taken by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// The length of the whole batches at the start of `buf`, ignoring a truncated tail (what
    /// a fetcher keeps of a response cut at `max_bytes`); an error if a header is malformed.
    pub fn whole_len(buf: &'a [u8]) -> Result<usize, BatchError> {
        let mut it = BatchIter::new(buf);
        for batch in it.by_ref() {
            if let Err(e) = batch {
                if !e.is_truncated() {
                    return Err(e);
                }
            }
        }
        Ok(it.position())
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<Batch<'a>, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..).filter(|r| !r.is_empty());
        let rest = match rest {
            Some(rest) if !self.done => rest,
            _ => return None,
        };
        match parse_header(rest) {
            Ok(header) => {
                let position = self.pos;
                let bytes = &rest[..header.total_size()];
                self.pos += bytes.len();
                Some(Ok(Batch {
                    position,
                    header,
                    bytes,
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    pub(crate) fn encode(n: usize, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(vec![b'v'; 100])),
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

    #[test]
    fn parses_header_of_encoded_batch() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let b = encode(10, c);
            let h = parse_header(&b).unwrap();
            assert_eq!(h.total_size(), b.len());
            assert_eq!(h.records_count, 10);
            assert_eq!(h.last_offset_delta, 9);
            assert_eq!(h.producer_id, 7);
            assert_eq!(h.base_sequence, 0);
            assert_eq!(h.last_sequence(), 9);
            assert_eq!(h.max_timestamp, 1_009);
            verify_crc(&b, &h).unwrap();
        }
    }

    #[test]
    fn patching_offset_and_epoch_keeps_crc_valid() {
        let mut b = encode(3, Compression::None);
        set_base_offset(&mut b, 12345);
        set_partition_leader_epoch(&mut b, 9);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.base_offset, 12345);
        assert_eq!(h.partition_leader_epoch, 9);
        verify_crc(&b, &h).unwrap();
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let b = encode(3, Compression::None);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let h = parse_header(&bad).unwrap();
        assert!(matches!(
            verify_crc(&bad, &h),
            Err(BatchError::CorruptCrc { .. })
        ));
        for cut in 0..b.len() {
            assert!(parse_header(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn iterates_concatenated_batches() {
        let mut all = encode(2, Compression::None);
        all.extend(encode(5, Compression::Lz4));
        let got: Vec<_> = BatchIter::new(&all)
            .map(|r| {
                let b = r.unwrap();
                assert_eq!(b.bytes, &all[b.position..b.end()]);
                (b.position, b.header.records_count)
            })
            .collect();
        let first = parse_header(&all).unwrap().total_size();
        assert_eq!(got, vec![(0, 2), (first, 5)]);
    }

    #[test]
    fn truncated_tail_and_malformed_header_are_told_apart() {
        let one = encode(2, Compression::None);
        let mut all = one.clone();
        all.extend(encode(3, Compression::None));
        // Cut anywhere inside the second batch: one good batch, then a truncated tail.
        for cut in one.len() + 1..all.len() {
            let mut it = BatchIter::new(&all[..cut]);
            assert_eq!(it.next().unwrap().unwrap().bytes, &one[..]);
            let e = it.next().unwrap().unwrap_err();
            assert!(e.is_truncated(), "cut at {cut}: {e}");
            assert!(it.next().is_none());
            assert_eq!(it.position(), one.len());
            assert_eq!(BatchIter::whole_len(&all[..cut]), Ok(one.len()));
        }
        // A bad length or magic in the second batch is damage, even with few bytes of it.
        for (at, byte, cut) in [(8, 0xff, 12), (16, 1, 17), (16, 1, 61)] {
            let mut bad = all.clone();
            bad[one.len() + at] = byte;
            let bad = &bad[..one.len() + cut];
            let mut it = BatchIter::new(bad);
            assert!(it.next().unwrap().is_ok());
            let e = it.next().unwrap().unwrap_err();
            assert!(!e.is_truncated(), "byte {at}: {e}");
            assert!(it.next().is_none());
            assert_eq!(it.position(), one.len());
            assert_eq!(BatchIter::whole_len(bad), Err(e));
        }
        assert_eq!(BatchIter::new(&[]).next(), None);
    }

    proptest::proptest! {
        /// Any bytes: no panic; the batches yielded tile the prefix up to `position()`; an
        /// error comes at most once, last.
        #[test]
        fn iterator_never_panics_and_tiles_its_prefix(
            seed in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            patch_length in proptest::option::of(0i32..300),
            keep_magic in proptest::bool::ANY,
            cut in proptest::num::usize::ANY,
        ) {
            // Mostly random bytes; sometimes a real batch with a patched length and magic so the
            // walk gets past the first header.
            let mut buf = encode(2, Compression::None);
            buf.extend(seed);
            if let Some(len) = patch_length {
                buf[8..12].copy_from_slice(&len.to_be_bytes());
            }
            if !keep_magic {
                buf[16] = buf[buf.len() - 1];
            }
            let buf = &buf[..cut % (buf.len() + 1)];
            let mut it = BatchIter::new(buf);
            let mut end = 0;
            let mut errors = 0;
            for item in it.by_ref() {
                proptest::prop_assert_eq!(errors, 0);
                match item {
                    Ok(b) => {
                        proptest::prop_assert_eq!(b.position, end);
                        proptest::prop_assert_eq!(b.bytes.len(), b.header.total_size());
                        end = b.end();
                    }
                    Err(_) => errors += 1,
                }
            }
            proptest::prop_assert_eq!(it.position(), end);
            proptest::prop_assert!(end <= buf.len());
            proptest::prop_assert_eq!(errors == 0, end == buf.len());
        }
    }

    #[test]
    fn header_prefix_parses_without_body() {
        let b = encode(3, Compression::None);
        let full = parse_header(&b).unwrap();
        assert_eq!(parse_header_prefix(&b[..BATCH_HEADER_LEN]).unwrap(), full);
        assert!(parse_header_prefix(&b[..BATCH_HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn patch_last_offset_delta_keeps_crc_valid() {
        let mut b = encode(3, Compression::None);
        set_last_offset_delta_and_base_sequence(&mut b, 7, 4);
        let h = parse_header(&b).unwrap();
        assert_eq!((h.last_offset_delta, h.base_sequence), (7, 4));
        verify_crc(&b, &h).unwrap();
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut b = encode(2, Compression::None);
        set_log_append_time(&mut b, 42);
        let h = parse_header(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 42);
        verify_crc(&b, &h).unwrap();
    }
}
