//! Framing and request/response headers, without I/O.
//!
//! A Kafka frame is a big-endian `i32` size followed by that many bytes. An incomplete frame is
//! the normal state of a socket buffer, not an error: [`split_frame`] returns `Ok(None)` and the
//! caller reads more. A negative or oversized size is an error and the connection must close,
//! because nothing after it can be trusted to be a frame boundary.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchResponse, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

/// Kafka's `socket.request.max.bytes` default.
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// The frame cannot be read: the connection must be closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    Negative { size: i32 },
    #[error("frame size {size} exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// The size of the frame at the front of `buf` (without its prefix), once the 4-byte prefix is
/// there. As in Kafka's `NetworkReceive`, a size of exactly `max` is allowed and one byte more
/// is an error (`InvalidReceiveException`: the connection closes).
pub fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(Some(size))
}

/// Split one complete frame (without its size prefix) off the front of `buf`.
///
/// Nothing is reserved for an incomplete frame: the size is the peer's claim, so the caller
/// decides how much room to make as bytes arrive (a peer announcing 100 MB and sending nothing
/// must cost nothing).
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, FrameError> {
    let Some(size) = frame_size(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size)))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a request frame could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Too short to hold even api key, version and correlation id.
    #[error("request frame of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// Known API, version outside [`crate::versions::SUPPORTED`]. For ApiVersions the broker
    /// answers with a v0 UNSUPPORTED_VERSION response; for anything else it closes the connection.
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

/// Decode a request frame (as returned by [`split_frame`]).
pub fn decode_request(frame: BytesMut) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    if !crate::versions::is_supported(raw_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let mut bytes = frame.freeze();
    let header = RequestHeader::decode(&mut bytes, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("{e:#}")))?;
    let body = RequestKind::decode(api_key, &mut bytes, version)
        .map_err(|e| malformed(format!("{e:#}")))?;
    Ok(Request {
        api_key,
        header,
        body,
    })
}

/// Encode a whole response frame (size prefix, header, body) into `out`.
pub fn encode_response(
    out: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<(), String> {
    encode_frame(out, correlation_id, api_key, version, |out| {
        body.encode(out, version).map_err(|e| format!("{e:#}"))
    })
}

/// Size, response header, then whatever `body` writes.
fn encode_frame(
    out: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<(), String> {
    let start = out.len();
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(out, api_key.response_header_version(version))
        .map_err(|e| format!("{e:#}"))?;
    body(out)?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// The reply to an ApiVersions request whose version is too new: always encoded as v0 (whose
/// header every client can read), with UNSUPPORTED_VERSION and our full table so the client
/// retries with a version we support. This is what Apache Kafka does.
pub fn unsupported_api_versions_response(out: &mut BytesMut, correlation_id: i32) {
    let mut resp = crate::api_versions_response();
    resp.error_code = kafka_protocol::ResponseError::UnsupportedVersion.code();
    encode_response(
        out,
        correlation_id,
        ApiKey::ApiVersions,
        0,
        &ResponseKind::ApiVersions(resp),
    )
    .expect("ApiVersions v0 always encodes");
}

/// Build the ApiVersions response body listing [`crate::versions::SUPPORTED`].
pub fn api_versions_body() -> ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    let keys = crate::versions::SUPPORTED
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min)
                .with_max_version(a.max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}

/// Encode a request frame (used by the client).
pub fn encode_request(
    out: &mut BytesMut,
    header: &RequestHeader,
    body: &RequestKind,
) -> Result<(), String> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| format!("unknown api key {}", header.request_api_key))?;
    let version = header.request_api_version;
    let start = out.len();
    out.put_i32(0);
    header
        .encode(out, api_key.request_header_version(version))
        .map_err(|e| format!("{e:#}"))?;
    body.encode(out, version).map_err(|e| format!("{e:#}"))?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Fetch responses with less record data than this are copied into one buffer: splitting
/// them would cost more than the copy.
pub const SPLICE_MIN_BYTES: usize = 16 * 1024;

/// Record data that a Fetch response refers to instead of holding: the broker's ranges of
/// segment files, which the connection sends with `sendfile`. The codec needs only the length.
pub trait RecordData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes themselves, for the rare frame that is encoded by copying after all.
    fn to_bytes(&self) -> Result<Bytes, String>;
}

impl RecordData for Bytes {
    fn len(&self) -> usize {
        Bytes::len(self)
    }
    fn to_bytes(&self) -> Result<Bytes, String> {
        Ok(self.clone())
    }
}

/// One piece of a response frame, in order: encoded bytes, or record data sent as it is.
#[derive(Debug, Clone)]
pub enum Chunk<D> {
    Bytes(Bytes),
    Records(D),
}

impl<D: RecordData> Chunk<D> {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::Records(d) => d.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A partition's records while a Fetch frame is put together.
enum Part<D> {
    Memory(Bytes),
    Data(D),
}

impl<D: RecordData> Part<D> {
    fn len(&self) -> usize {
        match self {
            Part::Memory(b) => b.len(),
            Part::Data(d) => d.len(),
        }
    }
}

/// Encode a response frame as a list of chunks whose concatenation is exactly what
/// [`encode_response`] writes, but without copying Fetch record data: each partition's records
/// become their own chunk — a `Bytes` already read from the log, or, from `data`, record data
/// the connection sends itself (`data[i]`, when present, is the records of the i-th
/// partition of the response, whose `records` field is then ignored). Other responses come
/// back as one chunk.
///
/// The Fetch layout stays with `kafka-protocol`: the response is encoded twice without its
/// record data — once with every `records` null, once with every `records` empty. The two
/// encodings differ exactly at the records length fields, in partition order, which tells us
/// where to splice each length prefix and its data chunk. If the layout ever differs from what
/// we expect, or the response is small, this falls back to the plain (copying) encoding.
pub fn encode_response_chunks<D: RecordData>(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: ResponseKind,
    mut data: Vec<Option<D>>,
) -> Result<Vec<Chunk<D>>, String> {
    let ResponseKind::Fetch(mut fetch) = body else {
        let mut out = BytesMut::new();
        encode_response(&mut out, correlation_id, api_key, version, &body)?;
        return Ok(vec![Chunk::Bytes(out.freeze())]);
    };
    let mut records: Vec<Option<Part<D>>> = Vec::new();
    let mut ext = data.drain(..);
    for t in &mut fetch.responses {
        for p in &mut t.partitions {
            let mem = p.records.take();
            records.push(match ext.next().flatten() {
                Some(d) => Some(Part::Data(d)),
                None => mem.map(Part::Memory),
            });
        }
    }
    drop(ext);
    let data_len: usize = records.iter().flatten().map(Part::len).sum();
    if data_len >= SPLICE_MIN_BYTES {
        if let Some(chunks) = splice_fetch(correlation_id, version, &mut fetch, &mut records)? {
            return Ok(chunks);
        }
    }
    let mut it = records.into_iter();
    for t in &mut fetch.responses {
        for p in &mut t.partitions {
            p.records = match it.next().flatten() {
                Some(Part::Memory(b)) => Some(b),
                Some(Part::Data(d)) => Some(d.to_bytes()?),
                None => None,
            };
        }
    }
    let mut out = BytesMut::new();
    encode_frame(&mut out, correlation_id, api_key, version, |o| {
        fetch.encode(o, version).map_err(|e| format!("{e:#}"))
    })?;
    Ok(vec![Chunk::Bytes(out.freeze())])
}

/// See [`encode_response_chunks`]. `fetch` has its records taken out (`None`); `None` back
/// means the layout was not as expected (`records` untouched then).
fn splice_fetch<D: RecordData>(
    correlation_id: i32,
    version: i16,
    fetch: &mut FetchResponse,
    records: &mut [Option<Part<D>>],
) -> Result<Option<Vec<Chunk<D>>>, String> {
    let mut nulls = BytesMut::new();
    encode_frame(&mut nulls, correlation_id, ApiKey::Fetch, version, |o| {
        fetch.encode(o, version).map_err(|e| format!("{e:#}"))
    })?;
    for t in &mut fetch.responses {
        for p in &mut t.partitions {
            p.records = Some(Bytes::new());
        }
    }
    let mut empties = BytesMut::new();
    encode_frame(&mut empties, correlation_id, ApiKey::Fetch, version, |o| {
        fetch.encode(o, version).map_err(|e| format!("{e:#}"))
    })?;
    for t in &mut fetch.responses {
        for p in &mut t.partitions {
            p.records = None;
        }
    }
    if nulls.len() != empties.len() {
        return Ok(None);
    }
    // Flexible versions (12+) write a nullable length as unsigned varint length+1 (null = 0),
    // older ones as i32 (null = -1).
    let flexible = version >= 12;
    let (null_mark, empty_mark): (&[u8], &[u8]) = if flexible {
        (&[0], &[1])
    } else {
        (&[0xff; 4], &[0; 4])
    };
    let mut marks = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < nulls.len() {
        if nulls[i] == empties[i] {
            i += 1;
            continue;
        }
        let m = null_mark.len();
        if nulls.get(i..i + m) != Some(null_mark) || empties.get(i..i + m) != Some(empty_mark) {
            return Ok(None);
        }
        marks.push(i);
        i += m;
    }
    if marks.len() != records.len() {
        return Ok(None);
    }
    let data_len: usize = records.iter().flatten().map(Part::len).sum();
    // Each non-null records field grows from its null mark to its length prefix.
    let prefixes: usize = records
        .iter()
        .flatten()
        .map(|r| length_prefix_len(r.len(), flexible))
        .sum();
    let non_null = records.iter().filter(|r| r.is_some()).count();
    let size = nulls.len() - 4 + data_len + prefixes - non_null * null_mark.len();
    let size = i32::try_from(size).map_err(|_| "fetch response too large".to_string())?;
    nulls[0..4].copy_from_slice(&size.to_be_bytes());

    let mut head = BytesMut::with_capacity(nulls.len() + 8 * records.len());
    let mut chunks = Vec::with_capacity(2 * records.len() + 1);
    let mut prev = 0;
    for (&at, r) in marks.iter().zip(records.iter_mut()) {
        head.extend_from_slice(&nulls[prev..at]);
        prev = at + null_mark.len();
        match r.take() {
            None => head.extend_from_slice(null_mark),
            Some(part) => {
                let len = part.len();
                if flexible {
                    put_unsigned_varint(&mut head, len as u64 + 1);
                } else {
                    head.put_i32(len as i32);
                }
                if len > 0 {
                    chunks.push(Chunk::Bytes(head.split().freeze()));
                    chunks.push(match part {
                        Part::Memory(b) => Chunk::Bytes(b),
                        Part::Data(d) => Chunk::Records(d),
                    });
                }
            }
        }
    }
    head.extend_from_slice(&nulls[prev..]);
    chunks.push(Chunk::Bytes(head.freeze()));
    Ok(Some(chunks))
}

fn length_prefix_len(len: usize, flexible: bool) -> usize {
    if !flexible {
        return 4;
    }
    let mut v = len as u64 + 1;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_unsigned_varint(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Decode a response frame (used by the client): header then body of the given API version.
pub fn decode_response(
    frame: BytesMut,
    api_key: ApiKey,
    version: i16,
) -> Result<(i32, ResponseKind), String> {
    let mut bytes: Bytes = frame.freeze();
    let header = ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
        .map_err(|e| format!("{e:#}"))?;
    let body = ResponseKind::decode(api_key, &mut bytes, version).map_err(|e| format!("{e:#}"))?;
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(key: ApiKey, version: i16, body: RequestKind) -> BytesMut {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut out = BytesMut::new();
        encode_request(&mut out, &header, &body).unwrap();
        out
    }

    #[test]
    fn incomplete_frame_is_not_an_error() {
        let full = request_frame(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default()),
        );
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(
                split_frame(&mut b, DEFAULT_MAX_FRAME),
                Ok(None),
                "cut {cut}"
            );
        }
        let mut b = full.clone();
        let frame = split_frame(&mut b, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert!(b.is_empty());
        let req = decode_request(frame).unwrap();
        assert_eq!(req.api_key, ApiKey::Metadata);
        assert_eq!(req.header.correlation_id, 77);
    }

    #[test]
    fn a_frame_of_exactly_max_is_accepted_and_one_byte_more_is_not() {
        let max = 1024;
        let mut b = BytesMut::from(&(max as i32).to_be_bytes()[..]);
        assert_eq!(frame_size(&b, max), Ok(Some(max)));
        assert_eq!(split_frame(&mut b, max), Ok(None));
        assert!(
            b.capacity() < max,
            "nothing reserved from the announced size"
        );
        b.extend_from_slice(&vec![7u8; max]);
        assert_eq!(split_frame(&mut b, max).unwrap().unwrap().len(), max);
        let over = ((max + 1) as i32).to_be_bytes();
        assert_eq!(
            frame_size(&over, max),
            Err(FrameError::TooLarge { size: max + 1, max })
        );
        assert_eq!(frame_size(&over[..3], max), Ok(None));
    }

    #[test]
    fn oversized_and_negative_frames_are_errors() {
        let mut b = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut b, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut b, 1024),
            Err(FrameError::Negative { .. })
        ));
    }

    #[test]
    fn too_new_api_versions_is_reported_with_correlation_id() {
        let mut f = request_frame(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        );
        // Pretend to be a future client speaking v9.
        f[6..8].copy_from_slice(&9i16.to_be_bytes());
        let frame = split_frame(&mut f, DEFAULT_MAX_FRAME).unwrap().unwrap();
        match decode_request(frame) {
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version: 9,
                correlation_id: 77,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let mut out = BytesMut::new();
        unsupported_api_versions_response(&mut out, 77);
        let mut frame = split_frame(&mut out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let (corr, body) = decode_response(frame.split(), ApiKey::ApiVersions, 0).unwrap();
        assert_eq!(corr, 77);
        let ResponseKind::ApiVersions(body) = body else {
            panic!()
        };
        assert_eq!(body.error_code, 35);
        assert!(!body.api_keys.is_empty());
    }

    /// Valid headers of every supported API and version followed by random bodies, including
    /// huge array and string lengths: decoding fails cleanly, it never aborts or panics.
    #[test]
    fn random_bodies_of_every_api_never_panic() {
        use proptest::prelude::*;
        let cases: Vec<(i16, i16)> = crate::versions::SUPPORTED
            .iter()
            .flat_map(|r| (r.min..=r.max).map(move |v| (r.key as i16, v)))
            .collect();
        proptest!(ProptestConfig::with_cases(2000), |(
            case in proptest::sample::select(cases),
            body in proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0x7f), Just(0), any::<u8>()], 0..64),
        )| {
            let mut frame = BytesMut::new();
            frame.put_i16(case.0);
            frame.put_i16(case.1);
            frame.put_i32(1);
            frame.put_i16(-1); // null client id
            frame.extend_from_slice(&body);
            let _ = decode_request(frame);
        });
    }

    fn concat(chunks: &[Chunk<Bytes>]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) | Chunk::Records(b) => out.extend_from_slice(b),
            }
        }
        out
    }

    /// Record data given beside the response (as the broker gives file ranges) lands in the
    /// right partitions: the frame is byte for byte the plain encoding of the response with
    /// that data inside, the large ones stay `Chunk::Records`, and a small response is copied.
    #[test]
    fn fetch_chunks_with_record_data_beside_the_response() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        let big = Bytes::from((0..40_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        let small = Bytes::from_static(b"tiny");
        let partition = |i: i32, r: Option<Bytes>| {
            PartitionData::default()
                .with_partition_index(i)
                .with_high_watermark(7)
                .with_records(r)
        };
        let response = |with_data: bool| {
            let inline = |b: &Bytes| (!with_data).then(|| b.clone());
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    partition(0, inline(&big)),
                    partition(1, Some(small.clone())),
                    partition(2, Some(Bytes::new())),
                    partition(3, inline(&big.slice(..30_000))),
                ])])
        };
        for version in [4, 11, 12, 16] {
            let mut plain = BytesMut::new();
            let whole = ResponseKind::Fetch(response(false));
            encode_response(&mut plain, 5, ApiKey::Fetch, version, &whole).unwrap();
            let data = vec![Some(big.clone()), None, None, Some(big.slice(..30_000))];
            let body = ResponseKind::Fetch(response(true));
            let chunks = encode_response_chunks(5, ApiKey::Fetch, version, body, data).unwrap();
            assert_eq!(concat(&chunks), plain.to_vec(), "v{version}");
            let external: Vec<usize> = chunks
                .iter()
                .filter_map(|c| match c {
                    Chunk::Records(d) => Some(d.len()),
                    Chunk::Bytes(_) => None,
                })
                .collect();
            assert_eq!(external, vec![40_000, 30_000], "v{version}");

            // Below the splice threshold everything is copied into one chunk.
            let tiny = vec![None, Some(small.clone())];
            let body = ResponseKind::Fetch(response(true));
            let chunks = encode_response_chunks(5, ApiKey::Fetch, version, body, tiny).unwrap();
            assert!(matches!(chunks[..], [Chunk::Bytes(_)]), "v{version}");
        }
    }

    /// The chunked Fetch encoding is byte for byte the plain one, at every supported version,
    /// with records large enough to be spliced, small, empty and null.
    #[test]
    fn fetch_chunks_concatenate_to_the_plain_encoding() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let records = [
            Some(big.clone()),
            Some(Bytes::from_static(b"small")),
            Some(Bytes::new()),
            None,
            Some(big.slice(..20_000)),
        ];
        let range = crate::versions::SUPPORTED
            .iter()
            .find(|r| r.key == ApiKey::Fetch)
            .unwrap();
        for version in range.min..=range.max {
            let topic = |name: &str, parts: &[Option<Bytes>]| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name.into())))
                    .with_partitions(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(i, r)| {
                                PartitionData::default()
                                    .with_partition_index(i as i32)
                                    .with_high_watermark(1000)
                                    .with_records(r.clone())
                            })
                            .collect(),
                    )
            };
            let body = ResponseKind::Fetch(
                FetchResponse::default()
                    .with_session_id(if version >= 7 { 3 } else { 0 })
                    .with_responses(vec![topic("a", &records), topic("b", &records[..2])]),
            );
            let mut plain = BytesMut::new();
            encode_response(&mut plain, 9, ApiKey::Fetch, version, &body).unwrap();
            let chunks =
                encode_response_chunks::<Bytes>(9, ApiKey::Fetch, version, body, vec![]).unwrap();
            assert!(chunks.len() > 1, "v{version} was not spliced");
            assert_eq!(concat(&chunks), plain.to_vec(), "v{version}");
            // The large record sets are the caller's buffers, not copies.
            assert!(
                chunks
                    .iter()
                    .any(|c| matches!(c, Chunk::Bytes(b) if b.as_ptr() == big.as_ptr())),
                "v{version}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        proptest!(|(data in proptest::collection::vec(any::<u8>(), 0..256))| {
            let _ = decode_request(BytesMut::from(&data[..]));
        });
    }
}
