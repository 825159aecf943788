//! Request decoding, as a connection's reader does it, for every API and version.
//!
//! The first byte chooses the mode; the rest is:
//! - mode 0: the bytes a client sends on a connection: frames (`i32` size + body) split with
//!   `split_frame` and decoded with `decode_request` (Fjord's supported versions only);
//! - mode 1: one request frame body (header + request), decoded by kafka-protocol for *any* API
//!   it knows, the version folded into that API's valid range, bypassing Fjord's version table;
//! - mode 2: the same for responses (what `fjord-client` and the replica fetcher decode).
//!
//! Nothing may panic, abort or allocate far beyond the input (libFuzzer's `-malloc_limit_mb`).
#![no_main]

use bytes::{Bytes, BytesMut};
use fjord_protocol::codec::{decode_request, split_frame};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

/// Small, so the fuzzer does not spend its time on incomplete frames.
const MAX_FRAME: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let mut buf = BytesMut::from(rest);
            while let Ok(Some(frame)) = split_frame(&mut buf, MAX_FRAME) {
                let _ = decode_request(frame);
            }
        }
        mode => {
            if rest.len() < 4 {
                return;
            }
            let Ok(api_key) = ApiKey::try_from(i16::from_be_bytes([rest[0], rest[1]])) else {
                return;
            };
            let range = api_key.valid_versions();
            let span = (range.max - range.min + 1) as u16;
            let version = range.min + (u16::from_be_bytes([rest[2], rest[3]]) % span) as i16;
            if mode == 1 {
                let mut body = Bytes::copy_from_slice(rest);
                let header_version = api_key.request_header_version(version);
                if RequestHeader::decode(&mut body, header_version).is_ok() {
                    let _ = RequestKind::decode(api_key, &mut body, version);
                }
            } else {
                let mut body = Bytes::copy_from_slice(&rest[4..]);
                let header_version = api_key.response_header_version(version);
                if ResponseHeader::decode(&mut body, header_version).is_ok() {
                    let _ = ResponseKind::decode(api_key, &mut body, version);
                }
            }
        }
    }
});
