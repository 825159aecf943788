//! The Kafka listener and per-connection request pipeline.
//!
//! Each connection runs three stages: a reader that splits frames and decodes requests ahead of
//! time, a processor that handles them strictly one at a time in arrival order (so appends from
//! one producer connection keep their order, as in Kafka), and a writer that coalesces queued
//! responses into few vectored writes (`writev`): a Fetch response arrives as chunks, its record
//! data still the buffer read from the log, so record bytes are not copied again in user space.
//! Large record sets are not in the response at all but file ranges beside it
//! ([`Chunk::Records`]), which the writer sends with `sendfile`: from the page cache to the
//! socket without a copy through user space (zero-copy, as Kafka's `transferTo`).
//! A frame that cannot be decoded closes that one connection; every other connection is
//! unaffected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use fjord_protocol::codec::{self, Chunk, DecodeError, Request};
use fjord_storage::FileRange;
use kafka_protocol::messages::ApiKey;
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};

/// A response frame in pieces: encoded bytes and record data sent from segment files.
type Chunks = Vec<Chunk<FileRange>>;

/// What the processor hands to the writer, in request order.
enum Outbound {
    Ready(Chunks),
    /// A deferred response (acks=all): the writer waits for it before anything queued after
    /// it; `None` closes the connection.
    Later(oneshot::Receiver<Option<Chunks>>),
}

/// What the reader hands to the processor.
enum Inbound {
    Request(Box<Request>, Instant),
    /// A reply that needs no handler (ApiVersions with a too-new version).
    Raw(bytes::Bytes),
    /// The connection must close after what is already queued.
    Close(String),
}

/// Accept connections until `shutdown` flips, then wait for them to finish.
pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let b = broker.clone();
                    let sd = shutdown.clone();
                    conns.spawn(async move { serve_connection(b, stream, peer, sd).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    broker.metrics.connections.inc();
    let (mut rd, mut wr) = stream.into_split();
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(32);
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(32);
    let max_frame = broker.config.socket_request_max_bytes;

    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            loop {
                match codec::split_frame(&mut buf, max_frame) {
                    Ok(Some(frame)) => {
                        let arrived = Instant::now();
                        let msg = match codec::decode_request(frame) {
                            Ok(req) => Inbound::Request(Box::new(req), arrived),
                            Err(DecodeError::UnsupportedVersion {
                                api_key: ApiKey::ApiVersions,
                                correlation_id,
                                ..
                            }) => {
                                let mut out = BytesMut::new();
                                codec::unsupported_api_versions_response(&mut out, correlation_id);
                                Inbound::Raw(out.freeze())
                            }
                            Err(e) => Inbound::Close(e.to_string()),
                        };
                        let closing = matches!(msg, Inbound::Close(_));
                        if in_tx.send(msg).await.is_err() || closing {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = in_tx.send(Inbound::Close(e.to_string())).await;
                        return;
                    }
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(%peer, pending = buf.len(), "connection closed mid-frame");
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    return;
                }
            }
        }
    });

    let writer = tokio::spawn(async move {
        let mut pending: Chunks = Vec::new();
        // Take one outbound item: its chunks, or `None` to close.
        async fn resolve(o: Outbound) -> Option<Chunks> {
            match o {
                Outbound::Ready(chunks) => Some(chunks),
                Outbound::Later(rx) => rx.await.ok().flatten(),
            }
        }
        'outer: while let Some(first) = out_rx.recv().await {
            let Some(first) = resolve(first).await else {
                break;
            };
            pending.extend(first);
            let mut queued: usize = pending.iter().map(Chunk::len).sum();
            while queued < 1 << 20 {
                match out_rx.try_recv() {
                    Ok(Outbound::Ready(more)) => {
                        queued += more.iter().map(Chunk::len).sum::<usize>();
                        pending.extend(more);
                    }
                    Ok(later @ Outbound::Later(_)) => {
                        // Send what is ready first, then wait for the deferred one.
                        if write_all_chunks(&mut wr, &mut pending).await.is_err() {
                            return;
                        }
                        queued = 0;
                        match resolve(later).await {
                            Some(more) => {
                                queued += more.iter().map(Chunk::len).sum::<usize>();
                                pending.extend(more);
                            }
                            None => break 'outer,
                        }
                    }
                    Err(_) => break,
                }
            }
            if write_all_chunks(&mut wr, &mut pending).await.is_err() {
                return;
            }
        }
        let _ = write_all_chunks(&mut wr, &mut pending).await;
        let _ = wr.shutdown().await;
    });

    loop {
        let msg = tokio::select! {
            m = in_rx.recv() => m,
            _ = shutdown.changed() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            Inbound::Raw(bytes) => {
                if out_tx
                    .send(Outbound::Ready(vec![Chunk::Bytes(bytes)]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Inbound::Close(reason) => {
                broker.metrics.connections_closed_bad_frame.inc();
                tracing::warn!(%peer, %reason, "closing connection: bad request");
                break;
            }
            Inbound::Request(req, arrived) => {
                let api = req.api_key;
                let version = req.header.request_api_version;
                let correlation_id = req.header.correlation_id;
                let outcome = handlers::handle_from(&broker, *req, Some(peer)).await;
                let api_name = api_name(api);
                broker.metrics.requests.with_label_values(&[api_name]).inc();
                let out = match outcome {
                    Outcome::Deferred(later) => {
                        let (tx, rx) = oneshot::channel();
                        let b = broker.clone();
                        tokio::spawn(async move {
                            let outcome = later.await;
                            b.metrics
                                .request_latency
                                .with_label_values(&[api_name])
                                .observe(arrived.elapsed().as_secs_f64());
                            let _ = tx.send(encode(outcome, correlation_id, api, version, peer));
                        });
                        Outbound::Later(rx)
                    }
                    outcome => {
                        broker
                            .metrics
                            .request_latency
                            .with_label_values(&[api_name])
                            .observe(arrived.elapsed().as_secs_f64());
                        match outcome {
                            Outcome::NoResponse => continue,
                            outcome => match encode(outcome, correlation_id, api, version, peer) {
                                Some(chunks) => Outbound::Ready(chunks),
                                None => break,
                            },
                        }
                    }
                };
                if out_tx.send(out).await.is_err() {
                    break;
                }
            }
        }
    }
    reader.abort();
    drop(out_tx);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

/// The response frame of an outcome; `None` when the connection must close.
fn encode(
    outcome: Outcome,
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    peer: SocketAddr,
) -> Option<Chunks> {
    let (body, records) = match outcome {
        Outcome::Respond(body) => (body, Vec::new()),
        Outcome::RespondWithRecords(body, records) => (body, records),
        Outcome::NoResponse => return Some(Vec::new()),
        Outcome::Close(reason) => {
            tracing::info!(%peer, ?api, %reason, "closing connection");
            return None;
        }
        Outcome::Deferred(_) => {
            tracing::error!(%peer, ?api, "a deferred response deferred again");
            return None;
        }
    };
    match codec::encode_response_chunks(correlation_id, api, version, *body, records) {
        Ok(chunks) => Some(chunks),
        Err(e) => {
            tracing::error!(%peer, ?api, version, error = %e, "cannot encode response");
            None
        }
    }
}

/// Write every chunk in order — runs of bytes with as few `writev` calls as the socket
/// allows, file ranges with `sendfile` — then clear `chunks`.
async fn write_all_chunks(wr: &mut OwnedWriteHalf, chunks: &mut Chunks) -> std::io::Result<()> {
    // Linux accepts up to 1024 slices per call (IOV_MAX).
    const MAX_SLICES: usize = 256;
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        if let Chunk::Records(range) = &chunks[first] {
            send_file(wr.as_ref(), range).await?;
            first += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_SLICES)
            .map_while(|c| match c {
                Chunk::Bytes(b) => Some(IoSlice::new(b)),
                Chunk::Records(_) => None,
            })
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Chunk::Bytes(c) = &mut chunks[first] else {
                unreachable!("writev covered bytes chunks only")
            };
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
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
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ends before the records being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A stable metric label for an API.
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "Other",
    }
}
