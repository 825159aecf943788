use std::io::Write;

use anyhow::{Context, Result};
use bytes::buf::BufMut;
use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder; // Fjord patch: a streaming reader, for the cap
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::protocol::buf::{ByteBuf, ByteBufMut};

use super::{default_max_inflated_size, read_to_end_limited}; // Fjord patch
use super::{Compressor, Decompressor};

/// Gzip compression algorithm. See [Kafka's broker configuration](https://kafka.apache.org/documentation/#brokerconfigs_compression.type)
/// for more information.
pub struct Gzip;

impl<B: ByteBufMut> Compressor<B> for Gzip {
    type BufMut = BytesMut;
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>,
    {
        // Write uncompressed bytes into a temporary buffer
        let mut tmp = BytesMut::new();
        let res = f(&mut tmp)?;

        // Compress directly into the target buffer
        let mut e = GzEncoder::new(buf.writer(), Compression::default());
        e.write_all(&tmp).context("Failed to compress gzip")?;
        e.finish().context("Failed to compress gzip")?;

        Ok(res)
    }
}

impl<B: ByteBuf> Decompressor<B> for Gzip {
    type Buf = Bytes;
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>,
    {
        // Fjord patch: with the default cap on inflated bytes.
        let max = default_max_inflated_size(buf.remaining());
        Gzip::decompress_with_limit(buf, max, f)
    }
}

impl Gzip {
    /// Fjord patch: decompress, failing once the output exceeds `max_inflated_size` bytes.
    /// Streams through the decoder (concatenated members are read, as Java's GZIPInputStream
    /// does); memory grows with the output only, up to the cap.
    pub fn decompress_with_limit<B: ByteBuf, R, F>(
        buf: &mut B,
        max_inflated_size: usize,
        f: F,
    ) -> Result<R>
    where
        F: FnOnce(&mut Bytes) -> Result<R>,
    {
        let compressed = buf.copy_to_bytes(buf.remaining());
        let decoder = MultiGzDecoder::new(&compressed[..]);
        let mut tmp = read_to_end_limited(decoder, max_inflated_size, "gzip")?;
        f(&mut tmp)
    }
}
