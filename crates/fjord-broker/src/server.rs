//! The Kafka listener and per-connection request pipeline.
//!
//! Each connection runs three stages: a reader that splits frames and decodes requests ahead of
//! time, a processor that handles them strictly one at a time in arrival order (so appends from
//! one producer connection keep their order, as in Kafka), and a writer that coalesces queued
//! responses into few vectored writes (`writev`): a Fetch response arrives as chunks, its record
//! data still the buffer read from the log, so record bytes are not copied again in user space.
//! A frame that cannot be decoded closes that one connection; every other connection is
//! unaffected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use fjord_protocol::codec::{self, DecodeError, Request};
use kafka_protocol::messages::ApiKey;
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};

/// What the processor hands to the writer, in request order.
enum Outbound {
    Ready(Vec<Bytes>),
    /// A deferred response (acks=all): the writer waits for it before anything queued after
    /// it; `None` closes the connection.
    Later(oneshot::Receiver<Option<Vec<Bytes>>>),
}

/// What the reader hands to the processor.
enum Inbound {
    Request(Box<Request>, Instant),
    /// A reply that needs no handler (ApiVersions with a too-new version).
    Raw(Bytes),
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
        let mut pending: Vec<Bytes> = Vec::new();
        // Take one outbound item: its chunks, or `None` to close.
        async fn resolve(o: Outbound) -> Option<Vec<Bytes>> {
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
            let mut queued: usize = pending.iter().map(Bytes::len).sum();
            while queued < 1 << 20 {
                match out_rx.try_recv() {
                    Ok(Outbound::Ready(more)) => {
                        queued += more.iter().map(Bytes::len).sum::<usize>();
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
                                queued += more.iter().map(Bytes::len).sum::<usize>();
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
                if out_tx.send(Outbound::Ready(vec![bytes])).await.is_err() {
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
) -> Option<Vec<Bytes>> {
    match outcome {
        Outcome::Respond(body) => {
            match codec::encode_response_chunks(correlation_id, api, version, *body) {
                Ok(chunks) => Some(chunks),
                Err(e) => {
                    tracing::error!(%peer, ?api, version, error = %e, "cannot encode response");
                    None
                }
            }
        }
        Outcome::NoResponse => Some(Vec::new()),
        Outcome::Close(reason) => {
            tracing::info!(%peer, ?api, %reason, "closing connection");
            None
        }
        Outcome::Deferred(_) => {
            tracing::error!(%peer, ?api, "a deferred response deferred again");
            None
        }
    }
}

/// Write every chunk with as few `writev` calls as the socket allows, then clear `chunks`.
async fn write_all_chunks<W: AsyncWrite + Unpin>(
    wr: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    // Linux accepts up to 1024 slices per call (IOV_MAX).
    const MAX_SLICES: usize = 256;
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_SLICES)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
        // Skip empty chunks so the loop condition sees real progress.
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    chunks.clear();
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
