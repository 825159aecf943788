//! A connection's byte stream — TCP, or TLS over TCP — and its read and write halves for the
//! request pipeline (`crate::server`).
//!
//! On TCP the reader waits for readiness before it makes room for bytes (an idle connection
//! holds no buffer) and file ranges go out with `sendfile(2)`. On TLS the bytes must pass
//! through rustls to be encrypted, so a file range is read in pieces off the async workers
//! (`spawn_blocking`, `pread`) and written through the TLS stream: zero-copy fetch falls back
//! to one copy, as in Kafka (kTLS would keep it zero-copy; not done).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use fjord_security::KafkaPrincipal;
use fjord_storage::FileRange;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::broker::Broker;
use crate::tls::TlsListener;

/// How long a client has to finish the TLS handshake after connecting.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The piece of a file range read at a time on a TLS connection.
const COPY_CHUNK: usize = 256 * 1024;

/// A connection's stream, before it is split for the pipeline.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The halves the reader and the writer own.
    pub fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadSide::Plain(r), WriteSide::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ReadSide::Tls(r), WriteSide::Tls(w))
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// The reader's half.
pub enum ReadSide {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl ReadSide {
    /// Read what has arrived into `buf`, making room for up to `lookahead` more bytes;
    /// `Ok(0)` at end of stream. On TCP the room is made only once bytes are readable.
    pub async fn read_some(
        &mut self,
        buf: &mut BytesMut,
        lookahead: usize,
    ) -> std::io::Result<usize> {
        match self {
            ReadSide::Plain(rd) => loop {
                rd.readable().await?;
                buf.reserve(lookahead);
                match rd.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            ReadSide::Tls(rd) => {
                buf.reserve(lookahead);
                rd.read_buf(buf).await
            }
        }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadSide::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The writer's half.
pub enum WriteSide {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl WriteSide {
    /// Send a file range: `sendfile(2)` on TCP, read and copied through TLS otherwise.
    pub async fn send_file(&mut self, range: &FileRange) -> std::io::Result<()> {
        match self {
            WriteSide::Plain(w) => send_file(w.as_ref(), range).await,
            WriteSide::Tls(w) => copy_file(w, range).await,
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteSide::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteSide::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            WriteSide::Plain(w) => w.is_write_vectored(),
            WriteSide::Tls(w) => w.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Send a file range to the socket with `sendfile(2)`: the kernel moves the bytes from the
/// page cache to the socket. A file that ends before the range does (truncated meanwhile by a
/// follower's truncation) is an error: the frame's length is already on the wire, so the
/// connection must close.
async fn send_file(sock: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    let mut offset = range.position();
    let end = offset + range.len() as u64;
    while offset < end {
        sock.writable().await?;
        let sent = sock.try_io(Interest::WRITABLE, || {
            let count = (end - offset) as usize;
            rustix::fs::sendfile(sock, range.file(), Some(&mut offset), count)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(truncated()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "segment file ends before the records being sent",
    )
}

/// Copy a file range through a TLS stream in [`COPY_CHUNK`] pieces, each read with `pread`
/// on the blocking pool (the page may not be cached).
async fn copy_file(
    w: &mut WriteHalf<TlsStream<TcpStream>>,
    range: &FileRange,
) -> std::io::Result<()> {
    let mut offset = range.position();
    let end = offset + range.len() as u64;
    while offset < end {
        let want = ((end - offset) as usize).min(COPY_CHUNK);
        let r = range.clone();
        let piece = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut piece = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match r
                    .file()
                    .read_at(&mut piece[filled..], offset + filled as u64)
                {
                    Ok(0) => return Err(truncated()),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(piece)
        })
        .await
        .map_err(std::io::Error::other)??;
        w.write_all(&piece).await?;
        offset += want as u64;
    }
    Ok(())
}

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Run the server side of a TLS handshake on a new connection, within
/// [`TLS_HANDSHAKE_TIMEOUT`]. `None` when it failed: logged (one line naming the cause) and
/// counted; the caller closes the connection.
pub async fn accept_tls(
    broker: &Arc<Broker>,
    tls: &TlsListener,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(Stream, KafkaPrincipal)> {
    let metrics = &broker.metrics.tls;
    let fail = |reason: &'static str, what: String| {
        metrics.handshakes.with_label_values(&[reason]).inc();
        if matches!(reason, "eof" | "io") {
            // The client went away (a probe, a client shutting down): nothing to act on.
            tracing::debug!(%peer, reason, %what, "TLS handshake abandoned by the client");
        } else {
            tracing::info!(%peer, reason, %what, "closing connection: TLS handshake failed");
        }
        None
    };
    let handshake = async {
        // A plaintext client on a TLS port is the common mistake: say so, not "corrupt message".
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err(("eof", "the client closed before the handshake".to_string())),
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                return Err((
                    "not_tls",
                    format!(
                        "the first byte is {:#04x}, not a TLS handshake: a client using security.protocol=PLAINTEXT (or SASL_PLAINTEXT) on this {} listener?",
                        first[0],
                        broker.config.sasl.protocol.name()
                    ),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(("io", e.to_string())),
        }
        tls.acceptor().accept(tcp).await.map_err(|e| {
            use std::io::ErrorKind::*;
            match e.kind() {
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                    ("eof", e.to_string())
                }
                _ => ("error", e.to_string()),
            }
        })
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => {
            return fail(
                "timeout",
                format!("not finished within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
            )
        }
        Ok(Err((reason, what))) => return fail(reason, what),
        Ok(Ok(s)) => s,
    };
    let principal = match tls.principal(stream.get_ref().1.peer_certificates()) {
        Ok(p) => p,
        Err(e) => return fail("principal", e),
    };
    metrics.handshakes.with_label_values(&["success"]).inc();
    tracing::debug!(%peer, principal = %principal, "TLS handshake done");
    Some((Stream::Tls(Box::new(stream)), principal))
}
