//! Provides compression utilities for encoding records.
//!
//! This module has implementations of gzip, Snappy, as well as a noop compression format that
//! allows encoding and decoding records into a [`Record`](crate::records::Record).

use crate::protocol::buf::{ByteBuf, ByteBufMut};
use anyhow::Result;

#[cfg(feature = "gzip")]
mod gzip;
#[cfg(feature = "lz4")]
mod lz4;
mod none;
#[cfg(feature = "snappy")]
mod snappy;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(feature = "gzip")]
pub use gzip::Gzip;
#[cfg(feature = "lz4")]
pub use lz4::Lz4;
pub use none::None;
#[cfg(feature = "snappy")]
pub use snappy::Snappy;
#[cfg(feature = "zstd")]
pub use zstd::Zstd;

/// A trait for record compression algorithms.
pub trait Compressor<B: ByteBufMut> {
    /// Target buffer type for compression.
    type BufMut: ByteBufMut;
    /// Compresses into provided [`ByteBufMut`], with records encoded by `F` into `R`.
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>;
}

/// Fjord patch: by default a compressed batch may inflate to this many times its compressed size
/// (but see [`MIN_MAX_INFLATED_SIZE`]).
pub const MAX_INFLATE_RATIO: usize = 64;

/// Fjord patch: the default cap on inflated bytes is never below this (32 MiB), so that small but
/// legitimately very compressible batches (repeated values) still decode.
pub const MIN_MAX_INFLATED_SIZE: usize = 32 << 20;

/// Fjord patch: the default cap on the bytes a compressed batch of `compressed_len` bytes may
/// inflate to: [`MAX_INFLATE_RATIO`] times its size, at least [`MIN_MAX_INFLATED_SIZE`]. Every
/// decompressor streams its output and fails as soon as it would exceed the cap (a decompression
/// bomb is an error, not gigabytes of memory); no buffer is sized from a length the input
/// declares beyond it. Use `decompress_with_limit` on a codec, or
/// [`RecordBatchDecoder::decode_with_max_inflated_size`](crate::records::RecordBatchDecoder::decode_with_max_inflated_size),
/// to choose another cap.
pub fn default_max_inflated_size(compressed_len: usize) -> usize {
    compressed_len
        .saturating_mul(MAX_INFLATE_RATIO)
        .max(MIN_MAX_INFLATED_SIZE)
}

/// Fjord patch: read `reader` to its end, failing as soon as more than `max` bytes come out. The
/// buffer grows with the output (doubling, never past `max + 1` bytes), never from a size the
/// compressed data declares.
#[allow(dead_code)] // unused without the gzip, lz4 and zstd features
pub(crate) fn read_to_end_limited<R: std::io::Read>(
    mut reader: R,
    max: usize,
    codec: &str,
) -> Result<bytes::Bytes> {
    use anyhow::{bail, Context};
    const CHUNK: usize = 64 << 10;
    let limit = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let start = out.len();
        let end = limit.min(start.saturating_add(CHUNK));
        if start == end {
            break;
        }
        if end > out.capacity() {
            let target = out.capacity().saturating_mul(2).max(end).min(limit);
            out.reserve_exact(target - start);
        }
        out.resize(end, 0);
        match reader.read(&mut out[start..end]) {
            Ok(0) => {
                out.truncate(start);
                break;
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => return Err(e).context(format!("Failed to decompress {codec}")),
        }
    }
    if out.len() > max {
        bail!("{codec} batch inflates to more than {max} bytes");
    }
    Ok(out.into())
}

/// A trait for record decompression algorithms.
pub trait Decompressor<B: ByteBuf> {
    /// Target buffer type for decompression.
    type Buf: ByteBuf;
    /// Decompress records from `B` mapped using `F` into `R`.
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>;
}
