//! The controller listener: Raft RPCs between controllers and the control-plane RPC from
//! brokers, on one port. Each request and each reply is one frame, a 4-byte big-endian length
//! and a JSON body ([`Request`], [`Reply`]). The server answers the requests of a connection in
//! order; a malformed or oversized frame closes that connection only. A Raft peer keeps one
//! connection per peer and reconnects after any error.
//!
//! Control requests ([`Request::Submit`], [`Request::Status`]) go to the node's
//! [`ControllerService`](super::service::ControllerService) once it is attached;
//! [`Request::FetchMetadata`] is answered from the node's own state machine, active or not.
//!
//! JSON keeps frames readable with standard tools; metadata traffic is small (the data path
//! never goes through Raft).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::feed::{FeedChunk, ImagePart, MetadataChunk, MetadataFeed, MAX_PART_BYTES};
use super::service::{Committed, QuorumStatus, SubmitError};
use super::tls::{BoxConn, QuorumTls};
use super::{RaftNodeId, TypeConfig};
use crate::rpc::ControllerRequest;

/// Largest frame accepted from a peer (a snapshot chunk is far smaller).
pub const MAX_FRAME: usize = 64 << 20;

/// Longest a metadata fetch waits for new records, whatever the caller asked.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A frame sent to the controller listener.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A request for the active controller.
    Submit(ControllerRequest),
    /// Metadata records from offset `from`, waiting up to `max_wait_ms` for new ones. A reader
    /// behind the retained records gets the first part of the image ([`Reply::ImagePart`]).
    FetchMetadata {
        from: i64,
        max_wait_ms: u64,
    },
    /// Part `part` of the image at metadata offset `offset` (after its first part).
    FetchImagePart {
        offset: i64,
        part: u32,
    },
    /// The quorum and the brokers as this node sees them.
    Status,
}

/// The reply to the [`Request`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    Submitted(Result<Committed, SubmitError>),
    Metadata(MetadataChunk),
    /// `None`: this node no longer holds the image asked for (fetch from the start again).
    ImagePart(Option<ImagePart>),
    Status(QuorumStatus),
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What serves control requests on a node: its controller service.
pub(crate) trait ControlPlane: Send + Sync {
    fn submit(&self, req: ControllerRequest) -> BoxFuture<'_, Result<Committed, SubmitError>>;
    fn status(&self) -> BoxFuture<'_, QuorumStatus>;
}

/// Everything the listener serves on one node.
pub(crate) struct Server {
    raft: Raft<TypeConfig>,
    feed: MetadataFeed,
    /// Attached after start (the service is built around the running node); weak so that the
    /// server does not keep a dropped service alive.
    control: OnceLock<Weak<dyn ControlPlane>>,
    /// Largest encoded part of an image sent to a reader behind the window.
    part_bytes: AtomicUsize,
}

impl Server {
    pub(crate) fn new(raft: Raft<TypeConfig>, feed: MetadataFeed) -> Server {
        Server {
            raft,
            feed,
            control: OnceLock::new(),
            part_bytes: AtomicUsize::new(MAX_PART_BYTES),
        }
    }

    pub(crate) fn set_image_part_bytes(&self, max_bytes: usize) {
        self.part_bytes.store(max_bytes.max(1), Ordering::Relaxed);
    }

    pub(crate) fn attach(&self, control: Weak<dyn ControlPlane>) {
        let _ = self.control.set(control);
    }

    fn control(&self) -> Option<Arc<dyn ControlPlane>> {
        self.control.get().and_then(Weak::upgrade)
    }
}

/// Write one frame.
pub async fn write_frame<S, T>(stream: &mut S, msg: &T) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    // TLS may hold the bytes until flushed (a no-op on TCP).
    stream.flush().await
}

/// Read one frame; `Ok(None)` when the peer closed the connection between frames. A frame
/// larger than [`MAX_FRAME`] or that does not parse is an `InvalidData` error.
pub async fn read_frame<S, T>(stream: &mut S) -> io::Result<Option<T>>
where
    S: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than {MAX_FRAME}"),
        ));
    }
    // Grown as bytes arrive (at most 64 KiB ahead), not allocated from the peer's length: a
    // connection claiming 64 MiB and sending nothing holds next to nothing.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if read < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Serve the controller listener until the task is aborted; aborting it also closes every
/// connection it accepted (a stopped controller must not keep answering on old connections).
pub(crate) async fn serve(listener: TcpListener, server: Arc<Server>, tls: Option<QuorumTls>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "controller listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let stream = match super::tls::accept(tls.as_ref(), stream).await {
                        Ok(s) => s,
                        Err(e) if matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::BrokenPipe
                        ) =>
                        {
                            tracing::debug!(%peer, error = %e, "controller TLS handshake abandoned by the client");
                            return;
                        }
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "closing controller connection: TLS handshake failed");
                            return;
                        }
                    };
                    if let Err(e) = serve_connection(stream, &server).await {
                        tracing::debug!(%peer, error = %e, "controller connection closed");
                    }
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(mut stream: BoxConn, server: &Server) -> io::Result<()> {
    let raft = &server.raft;
    let part_bytes = server.part_bytes.load(Ordering::Relaxed);
    while let Some(req) = read_frame::<_, Request>(&mut stream).await? {
        let reply = match req {
            Request::AppendEntries(r) => Reply::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) => Reply::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => Reply::InstallSnapshot(raft.install_snapshot(r).await),
            Request::Submit(r) => Reply::Submitted(match server.control() {
                Some(control) => control.submit(r).await,
                None => Err(SubmitError::Unavailable(
                    "this node runs no controller service".into(),
                )),
            }),
            Request::FetchMetadata { from, max_wait_ms } => {
                let wait = Duration::from_millis(max_wait_ms).min(MAX_FETCH_WAIT);
                match server.feed.fetch_shared(from, wait).await {
                    FeedChunk::Records { base, records } => {
                        Reply::Metadata(MetadataChunk::Records { base, records })
                    }
                    FeedChunk::Image(image) => Reply::ImagePart(image.part(0, part_bytes)),
                }
            }
            Request::FetchImagePart { offset, part } => Reply::ImagePart(
                server
                    .feed
                    .shared_image(offset)
                    .and_then(|image| image.part(part, part_bytes)),
            ),
            Request::Status => match server.control() {
                Some(control) => Reply::Status(control.status().await),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "status asked of a node without a controller service",
                    ))
                }
            },
        };
        write_frame(&mut stream, &reply).await?;
    }
    Ok(())
}

/// Makes a [`TcpNetwork`] per peer; a peer's address is its [`BasicNode::addr`].
#[derive(Debug, Clone, Default)]
pub struct TcpNetworkFactory {
    /// TLS towards the other controllers (`None`: plaintext).
    pub tls: Option<QuorumTls>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetworkFactory {
    type Network = TcpNetwork;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> TcpNetwork {
        TcpNetwork {
            target,
            addr: node.addr.clone(),
            conn: None,
            tls: self.tls.clone(),
        }
    }
}

/// The connection to one peer.
pub struct TcpNetwork {
    target: RaftNodeId,
    addr: String,
    conn: Option<BoxConn>,
    tls: Option<QuorumTls>,
}

impl std::fmt::Debug for TcpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpNetwork")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a call failed: the peer could not be reached (back off) or the exchange broke (retry).
enum CallError {
    Unreachable(io::Error),
    Network(io::Error),
}

impl TcpNetwork {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Reply, CallError> {
        if self.conn.is_none() {
            let stream = super::tls::connect(
                self.tls.as_ref().map(|t| &t.client),
                &self.addr,
                CONNECT_TIMEOUT,
            )
            .await
            .map_err(CallError::Unreachable)?;
            self.conn = Some(stream);
        }
        let stream = self.conn.as_mut().expect("connected");
        let exchange = async {
            write_frame(stream, req).await?;
            read_frame::<_, Reply>(stream)
                .await?
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        };
        let result = match tokio::time::timeout(ttl, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        };
        result.map_err(|e| {
            // The stream may hold half a frame: start over on a new connection.
            self.conn = None;
            CallError::Network(e)
        })
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
    ) -> RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(
        &self,
    ) -> RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>> {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            "reply does not match the request",
        );
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for TcpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>,
    > {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::AppendEntries(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>>
    {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_short_frame_is_an_error_without_its_claimed_size() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, &vec![1u32, 2, 3]).await.unwrap();
        let got: Option<Vec<u32>> = read_frame(&mut b).await.unwrap();
        assert_eq!(got, Some(vec![1, 2, 3]));
        // A peer claiming a 64 MiB frame and sending 10 bytes: an error at its end, after a
        // buffer of the bytes present (not 64 MiB).
        a.write_all(&((MAX_FRAME as u32).to_be_bytes()))
            .await
            .unwrap();
        a.write_all(&[b'x'; 10]).await.unwrap();
        drop(a);
        let e = read_frame::<_, Vec<u32>>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Over the limit: refused before reading.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME as u32 + 1).to_be_bytes()))
            .await
            .unwrap();
        let e = read_frame::<_, Vec<u32>>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
