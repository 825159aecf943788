//! Record validation on produce — what Kafka's `LogValidator` checks, without I/O.
//!
//! Every batch a client sends is checked here before anything is appended, so the log and
//! everything that reads it (indexes, ListOffsets by timestamp, the cleaner, consumers) may
//! trust what it stores:
//! - framing: magic 2, `batch_length` within the bytes, CRC32C, `max.message.bytes`, a known
//!   codec; a client sends exactly one batch per partition and no control batches, and an
//!   idempotent batch carries a sequence;
//! - counts: `last_offset_delta + 1 == records_count ==` the records actually present, with no
//!   bytes left over, and offset deltas `0, 1, 2, …`;
//! - each record: its length and every varint inside the record, key and value lengths within
//!   the record, header counts and lengths sane, the record consuming exactly its length;
//! - per record (KIP-467, reported with the record's index so clients fail only those): a key on
//!   compacted topics, timestamps within `message.timestamp.before.max.ms` /
//!   `message.timestamp.after.max.ms` of the broker's clock on CreateTime topics, and no
//!   LogAppendTime claimed by a producer.
//!
//! Compressed batches are inflated as a stream and parsed as they come: nothing is held but a
//! few small buffers, and inflating stops with MESSAGE_TOO_LARGE once it passes
//! [`RecordRules::max_inflated_bytes`] — a decompression bomb costs a bounded amount of CPU and
//! no memory. Value, key and header bytes are skipped, never copied.
//!
//! The result, [`ValidatedRecords`], carries each batch's header and the maximum timestamp
//! computed from its records (the append path writes it into the header when the producer's
//! differs, as Kafka does, so the time index cannot be poisoned by a lying header).

use std::io::{self, BufRead, BufReader, Read};

use crate::batch::{self, BatchError, BatchHeader, BATCH_HEADER_LEN};
use crate::error::ErrorCode;

/// Inflated bytes allowed per compressed batch, as a multiple of `max.message.bytes` (at least
/// 1 MiB of it). Producers cap a batch by its (estimated) compressed size, so a legitimate
/// batch inflates to a few times its size; 64× leaves room for very repetitive data while
/// bounding what a bomb can cost.
pub const MAX_INFLATE_RATIO: u64 = 64;

/// Largest zstd window a batch may ask for (2^24 = 16 MiB; producers use 2^21 at level 3).
/// Without it a frame header could make the decoder allocate 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Kafka's `RecordBatch.NO_TIMESTAMP`.
const NO_TIMESTAMP: i64 = -1;

/// Who is appending: clients get Kafka's `AppendOrigin.CLIENT` checks (one batch, no control
/// batches), the broker's own coordinators may write several batches and control records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    Client,
    /// A client's produce that carries a transactional id: its batches may be transactional
    /// (with a producer id), otherwise as `Client`.
    TransactionalClient,
    Coordinator,
}

/// What a topic accepts, from its config, and the broker's clock.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules {
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches, producers' timestamps
    /// are not checked.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub timestamp_after_max_ms: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    pub now_ms: i64,
    pub origin: AppendOrigin,
}

impl RecordRules {
    /// The inflated size past which a compressed batch is refused with MESSAGE_TOO_LARGE.
    pub fn max_inflated_bytes(&self) -> u64 {
        (self.max_message_bytes as u64).max(1 << 20) * MAX_INFLATE_RATIO
    }
}

/// One batch that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidBatch {
    /// Byte position of the batch in the validated records.
    pub position: usize,
    pub header: BatchHeader,
    /// The largest record timestamp (-1 with no timestamps), computed from the records.
    pub max_timestamp: i64,
}

/// Records that passed [`validate`]: what the append path may trust.
#[derive(Debug, Clone, Default)]
pub struct ValidatedRecords {
    pub batches: Vec<ValidBatch>,
    /// Length of the validated bytes (the append path checks it was handed the same bytes).
    pub len: usize,
    /// Sum of the batches' record counts.
    pub record_count: u64,
}

/// KIP-467: one invalid record, by its index inside its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// Why records were refused: the code for the partition's response, a message, and the
/// records at fault when the batch itself is sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsError {
    pub code: ErrorCode,
    pub message: String,
    pub record_errors: Vec<RecordError>,
}

impl RecordsError {
    fn new(code: ErrorCode, message: impl Into<String>) -> RecordsError {
        RecordsError {
            code,
            message: message.into(),
            record_errors: Vec::new(),
        }
    }
    fn invalid(message: impl Into<String>) -> RecordsError {
        RecordsError::new(ErrorCode::InvalidRecord, message)
    }
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecordsError {}

impl From<BatchError> for RecordsError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::UnsupportedMagic(_) => {
                RecordsError::new(ErrorCode::UnsupportedForMessageFormat, e.to_string())
            }
            e => RecordsError::new(ErrorCode::CorruptMessage, e.to_string()),
        }
    }
}

/// Validate one or more v2 batches. Nothing is modified; see the module docs for the checks.
pub fn validate(records: &[u8], rules: &RecordRules) -> Result<ValidatedRecords, RecordsError> {
    if records.is_empty() {
        return Err(RecordsError::new(
            ErrorCode::CorruptMessage,
            "produce request has no records",
        ));
    }
    let mut out = ValidatedRecords {
        batches: Vec::with_capacity(1),
        len: records.len(),
        record_count: 0,
    };
    for (index, batch) in batch::BatchIter::new(records).enumerate() {
        if rules.origin != AppendOrigin::Coordinator && index > 0 {
            return Err(RecordsError::invalid(
                "produce requests are only allowed to contain exactly one record batch per partition",
            ));
        }
        let batch::Batch {
            position,
            header: h,
            bytes,
        } = batch?;
        let size = bytes.len();
        if size > rules.max_message_bytes {
            return Err(RecordsError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "record batch of {size} bytes exceeds max.message.bytes {}",
                    rules.max_message_bytes
                ),
            ));
        }
        batch::verify_crc(bytes, &h)?;
        let max_timestamp = validate_batch(bytes, &h, rules)?;
        out.record_count += h.records_count as u64;
        out.batches.push(ValidBatch {
            position,
            header: h,
            max_timestamp,
        });
    }
    Ok(out)
}

/// Check one CRC-verified batch; returns its computed maximum timestamp.
fn validate_batch(bytes: &[u8], h: &BatchHeader, rules: &RecordRules) -> Result<i64, RecordsError> {
    let codec = h.compression();
    if codec > 4 {
        return Err(RecordsError::new(
            ErrorCode::UnsupportedCompressionType,
            format!("unsupported compression codec id {codec}"),
        ));
    }
    if h.last_offset_delta < 0 || h.records_count <= 0 {
        return Err(RecordsError::invalid(format!(
            "batch has an invalid offset range: last offset delta {}, {} records",
            h.last_offset_delta, h.records_count
        )));
    }
    if h.records_count as i64 != h.offset_count() {
        return Err(RecordsError::invalid(format!(
            "inner record count {} does not match the count computed from offsets {}",
            h.records_count,
            h.offset_count()
        )));
    }
    if rules.origin != AppendOrigin::Coordinator {
        if h.is_control() {
            return Err(RecordsError::invalid(
                "clients are not allowed to write control records",
            ));
        }
        if h.is_transactional() && !h.has_producer_id() {
            return Err(RecordsError::invalid(
                "transactional record batch without a producer id",
            ));
        }
        if h.is_transactional() && rules.origin == AppendOrigin::Client {
            // Kafka authorizes the request's transactional id for transactional batches: a
            // produce without one may not carry them.
            return Err(RecordsError::new(
                ErrorCode::TransactionalIdAuthorizationFailed,
                "transactional records were produced without a transactional id",
            ));
        }
        if h.has_producer_id() && h.base_sequence < 0 {
            return Err(RecordsError::invalid(format!(
                "invalid sequence number {} in record batch with producer id {}",
                h.base_sequence, h.producer_id
            )));
        }
    }
    // Every record takes at least 7 bytes (a length and six one-byte fields) before inflation:
    // an uncompressed batch claiming more records than fit is refused without walking it.
    let body = &bytes[BATCH_HEADER_LEN..];
    if codec == 0 && (h.records_count as u64) * 7 > body.len() as u64 {
        return Err(RecordsError::invalid(format!(
            "batch claims {} records in {} bytes",
            h.records_count,
            body.len()
        )));
    }
    let mut walk = Walk::new(h, rules);
    over_records(body, codec, rules.max_inflated_bytes(), &mut walk)?;
    walk.finish()
}

/// Something that reads one batch's records from a [`Source`].
trait Visit {
    fn run(&mut self, src: &mut impl Source) -> Result<(), RecordsError>;
}

impl Visit for Walk<'_> {
    fn run(&mut self, src: &mut impl Source) -> Result<(), RecordsError> {
        Walk::run(self, src)
    }
}

/// Run `visit` over the records of a batch body (after its header) compressed with `codec`,
/// inflating as a stream and stopping past `cap` inflated bytes.
fn over_records(
    body: &[u8],
    codec: i16,
    cap: u64,
    visit: &mut impl Visit,
) -> Result<(), RecordsError> {
    match codec {
        0 => visit.run(&mut SliceSource { buf: body, pos: 0 }),
        1 => visit.run(&mut StreamSource::new(
            flate2::read::MultiGzDecoder::new(body),
            cap,
        )),
        2 => visit.run(&mut StreamSource::new(SnappyReader::new(body), cap)),
        3 => {
            let dec = lz4::Decoder::new(body).map_err(|e| inflate_error("lz4", &e))?;
            visit.run(&mut StreamSource::new(dec, cap))
        }
        _ => {
            let mut ctx = zstd::zstd_safe::DCtx::create();
            ctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                ZSTD_WINDOW_LOG_MAX,
            ))
            .map_err(|_| RecordsError::invalid("zstd: cannot set the window limit"))?;
            let dec = zstd::stream::read::Decoder::with_context(BufReader::new(body), &mut ctx);
            let mut src = StreamSource::new(dec, cap);
            visit.run(&mut src)?;
            Ok(())
        }
    }
}

fn inflate_error(codec: &str, e: &io::Error) -> RecordsError {
    RecordsError::invalid(format!("cannot decompress {codec} batch: {e}"))
}

/// Why reading the records stopped early.
enum Stop {
    /// The records end inside a record, or a field is malformed.
    Malformed(String),
    /// Inflating passed the cap.
    TooLarge(u64),
    /// The decompressor failed.
    Inflate(String),
}

impl From<Stop> for RecordsError {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Malformed(m) => RecordsError::invalid(m),
            Stop::TooLarge(cap) => RecordsError::new(
                ErrorCode::MessageTooLarge,
                format!("compressed record batch inflates to more than {cap} bytes"),
            ),
            Stop::Inflate(m) => RecordsError::invalid(format!("cannot decompress batch: {m}")),
        }
    }
}

/// The records of one batch as a byte source: a slice, or an inflating stream.
trait Source {
    /// The next byte; `None` at the end of the records.
    fn next_byte(&mut self) -> Result<Option<u8>, Stop>;
    /// Skip `n` bytes; false if the records end first.
    fn skip(&mut self, n: usize) -> Result<bool, Stop>;
    /// Bytes consumed so far.
    fn position(&self) -> u64;
    /// Fill `buf` from the records; false if they end first.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, Stop> {
        for b in buf.iter_mut() {
            match self.next_byte()? {
                Some(x) => *b = x,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

struct SliceSource<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Source for SliceSource<'_> {
    #[inline]
    fn next_byte(&mut self) -> Result<Option<u8>, Stop> {
        let b = self.buf.get(self.pos).copied();
        self.pos += b.is_some() as usize;
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<bool, Stop> {
        if self.buf.len() - self.pos < n {
            self.pos = self.buf.len();
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }
    fn position(&self) -> u64 {
        self.pos as u64
    }
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, Stop> {
        let end = self.pos.saturating_add(buf.len());
        let Some(src) = self.buf.get(self.pos..end) else {
            self.pos = self.buf.len();
            return Ok(false);
        };
        buf.copy_from_slice(src);
        self.pos = end;
        Ok(true)
    }
}

/// Inflated bytes read through a small buffer, refused past the cap.
struct StreamSource<R: Read> {
    inner: BufReader<Capped<R>>,
    pos: u64,
    cap: u64,
}

impl<R: Read> StreamSource<R> {
    fn new(inner: R, cap: u64) -> Self {
        StreamSource {
            inner: BufReader::with_capacity(
                16 * 1024,
                Capped {
                    inner,
                    read: 0,
                    cap,
                },
            ),
            pos: 0,
            cap,
        }
    }
    fn fill(&mut self) -> Result<&[u8], Stop> {
        loop {
            match self.inner.fill_buf() {
                Ok(_) => return Ok(self.inner.buffer()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                    return Err(Stop::TooLarge(self.cap))
                }
                Err(e) => return Err(Stop::Inflate(e.to_string())),
            }
        }
    }
}

impl<R: Read> Source for StreamSource<R> {
    fn next_byte(&mut self) -> Result<Option<u8>, Stop> {
        let b = self.fill()?.first().copied();
        if b.is_some() {
            self.inner.consume(1);
            self.pos += 1;
        }
        Ok(b)
    }
    fn skip(&mut self, mut n: usize) -> Result<bool, Stop> {
        while n > 0 {
            let have = self.fill()?.len();
            if have == 0 {
                return Ok(false);
            }
            let take = have.min(n);
            self.inner.consume(take);
            self.pos += take as u64;
            n -= take;
        }
        Ok(true)
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

/// A reader that fails with `FileTooLarge` once more than `cap` bytes came through.
struct Capped<R> {
    inner: R,
    read: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read > self.cap {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        // Never ask for more than one byte past the cap: the decoder inflates at most that.
        let room = (self.cap + 1 - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        Ok(n)
    }
}

/// Kafka's snappy framing (snappy-java's `SnappyOutputStream`): a 16-byte magic header, then
/// blocks of `[u32 compressed length][raw snappy block]`; without the header, one raw block.
/// Each block's inflated length is read from the block before anything is allocated, and a
/// block may not claim more than snappy can produce from its size.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    out: Vec<u8>,
    out_pos: usize,
    decoder: snap::raw::Decoder,
}

const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER_LEN: usize = 16;
/// Snappy's best case: a 3-byte copy element yields 64 bytes.
const SNAPPY_MAX_RATIO: usize = 22;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        let framed = input.len() >= SNAPPY_HEADER_LEN && input.starts_with(SNAPPY_MAGIC);
        SnappyReader {
            input: if framed {
                &input[SNAPPY_HEADER_LEN..]
            } else {
                input
            },
            framed,
            out: Vec::new(),
            out_pos: 0,
            decoder: snap::raw::Decoder::new(),
        }
    }
    /// Inflate the next block into `out`; false at the end.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let block = if self.framed {
            if self.input.len() < 4 {
                return Err(io::Error::other("snappy block length cut short"));
            }
            let len = u32::from_be_bytes(self.input[..4].try_into().expect("4 bytes")) as usize;
            let rest = &self.input[4..];
            if len > rest.len() {
                return Err(io::Error::other(format!(
                    "snappy block of {len} bytes, {} left",
                    rest.len()
                )));
            }
            self.input = &rest[len..];
            &rest[..len]
        } else {
            std::mem::take(&mut self.input)
        };
        let n = snap::raw::decompress_len(block).map_err(io::Error::other)?;
        if n > block.len().saturating_mul(SNAPPY_MAX_RATIO).max(64) {
            return Err(io::Error::other(format!(
                "snappy block of {} bytes claims {n} inflated bytes",
                block.len()
            )));
        }
        self.out.clear();
        self.out.resize(n, 0);
        let got = self
            .decoder
            .decompress(block, &mut self.out)
            .map_err(io::Error::other)?;
        self.out.truncate(got);
        self.out_pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = (self.out.len() - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// The walk over one batch's records.
struct Walk<'a> {
    header: &'a BatchHeader,
    rules: &'a RecordRules,
    max_timestamp: i64,
    errors: Vec<RecordError>,
    timestamp_errors: bool,
}

/// How many record errors are kept (their messages go back to the client).
const MAX_RECORD_ERRORS: usize = 1000;

impl<'a> Walk<'a> {
    fn new(header: &'a BatchHeader, rules: &'a RecordRules) -> Self {
        Walk {
            header,
            rules,
            max_timestamp: NO_TIMESTAMP,
            errors: Vec::new(),
            timestamp_errors: false,
        }
    }

    fn run(&mut self, src: &mut impl Source) -> Result<(), RecordsError> {
        let count = self.header.records_count;
        for index in 0..count {
            self.record(src, index).map_err(|s| match s {
                Stop::Malformed(m) => {
                    RecordsError::invalid(format!("record {index} of {count}: {m}"))
                }
                other => other.into(),
            })?;
        }
        match src.next_byte()? {
            None => Ok(()),
            Some(_) => Err(RecordsError::invalid(format!(
                "incorrect declared batch size: bytes remain after {count} records"
            ))),
        }
    }

    fn record(&mut self, src: &mut impl Source, index: i32) -> Result<(), Stop> {
        let length = varint(src)?;
        if length < 6 {
            return Err(Stop::Malformed(format!("invalid record length {length}")));
        }
        let start = src.position();
        let _attributes = byte(src)?;
        let timestamp_delta = varlong(src)?;
        let offset_delta = varint(src)?;
        if offset_delta != index {
            return Err(Stop::Malformed(format!(
                "offset delta {offset_delta}, expected {index}: inner offsets must increase by one"
            )));
        }
        let key_len = varint(src)?;
        if key_len < -1 {
            return Err(Stop::Malformed(format!("negative key length {key_len}")));
        }
        skip_within(src, key_len.max(0), start, length)?;
        let value_len = varint(src)?;
        if value_len < -1 {
            return Err(Stop::Malformed(format!(
                "negative value length {value_len}"
            )));
        }
        skip_within(src, value_len.max(0), start, length)?;
        let headers = varint(src)?;
        if headers < 0 {
            return Err(Stop::Malformed(format!(
                "invalid number of record headers {headers}"
            )));
        }
        for _ in 0..headers {
            let k = varint(src)?;
            if k < 0 {
                return Err(Stop::Malformed(format!(
                    "invalid negative header key size {k}"
                )));
            }
            skip_within(src, k, start, length)?;
            let v = varint(src)?;
            if v < -1 {
                return Err(Stop::Malformed(format!("invalid header value size {v}")));
            }
            skip_within(src, v.max(0), start, length)?;
        }
        let read = src.position() - start;
        if read != length as u64 {
            return Err(Stop::Malformed(format!(
                "invalid record size: expected to read {length} bytes in record payload, but instead read {read}"
            )));
        }

        let timestamp = self.header.base_timestamp.wrapping_add(timestamp_delta);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        if self.rules.compacted && key_len < 0 {
            self.error(
                index,
                "compacted topic cannot accept message without key".into(),
            );
        }
        if !self.rules.log_append_time {
            if self.header.is_log_append_time() {
                self.timestamp_errors = true;
                self.error(
                    index,
                    "invalid timestamp type in message: producer should not set timestamp type to LogAppendTime".into(),
                );
            } else if timestamp != NO_TIMESTAMP {
                let now = self.rules.now_ms;
                let low = now.saturating_sub(self.rules.timestamp_before_max_ms);
                let high = now.saturating_add(self.rules.timestamp_after_max_ms);
                if timestamp < low || timestamp > high {
                    self.timestamp_errors = true;
                    self.error(
                        index,
                        format!(
                            "timestamp {timestamp} of message with offset delta {index} is out of range; it should be within [{low}, {high}]"
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    fn error(&mut self, index: i32, message: String) {
        if self.errors.len() < MAX_RECORD_ERRORS {
            self.errors.push(RecordError {
                batch_index: index,
                message,
            });
        }
    }

    /// The batch's computed max timestamp, or the per-record errors (Kafka's
    /// `processRecordErrors`: INVALID_TIMESTAMP if any timestamp was refused, else
    /// INVALID_RECORD, with at most three errors in the message).
    fn finish(self) -> Result<i64, RecordsError> {
        if self.errors.is_empty() {
            return Ok(self.max_timestamp);
        }
        let shown: Vec<String> = self
            .errors
            .iter()
            .take(3)
            .map(|e| format!("record {}: {}", e.batch_index, e.message))
            .collect();
        let (code, message) = if self.timestamp_errors {
            (
                ErrorCode::InvalidTimestamp,
                "one or more records have been rejected due to invalid timestamp".to_string(),
            )
        } else {
            (
                ErrorCode::InvalidRecord,
                format!(
                    "one or more records have been rejected due to {} record errors in total, showing at most the first three: [{}]",
                    self.errors.len(),
                    shown.join("; ")
                ),
            )
        };
        Err(RecordsError {
            code,
            message,
            record_errors: self.errors,
        })
    }
}

fn byte(src: &mut impl Source) -> Result<u8, Stop> {
    src.next_byte()?
        .ok_or_else(|| Stop::Malformed("records end inside a record".into()))
}

/// Skip `n` bytes that must lie inside the record starting at `start` of `length` bytes.
fn skip_within(src: &mut impl Source, n: i32, start: u64, length: i32) -> Result<(), Stop> {
    let end = start + length as u64;
    if src.position() + n as u64 > end {
        return Err(Stop::Malformed(format!(
            "a field of {n} bytes runs past the record's length {length}"
        )));
    }
    if !src.skip(n as usize)? {
        return Err(Stop::Malformed("records end inside a record".into()));
    }
    Ok(())
}

/// A zigzag varint of at most 5 bytes (Kafka's `ByteUtils.readVarint`).
fn varint(src: &mut impl Source) -> Result<i32, Stop> {
    let mut raw: u32 = 0;
    for i in 0..5 {
        let b = byte(src)?;
        raw |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32));
        }
    }
    Err(Stop::Malformed("varint is too long".into()))
}

/// A zigzag varlong of at most 10 bytes (Kafka's `ByteUtils.readVarlong`).
fn varlong(src: &mut impl Source) -> Result<i64, Stop> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let b = byte(src)?;
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(Stop::Malformed("varlong is too long".into()))
}

mod keys;
pub use keys::{for_each_key, RecordKey, KEY_READ_MAX};

#[cfg(test)]
mod tests;
