//! One TCP connection to one broker (plain or TLS), with API version negotiation and
//! pipelining.
//!
//! Kafka answers requests on a connection strictly in the order it received them, so pipelining
//! needs no request ids beyond the correlation id check: a sender takes the writer lock, pushes
//! its reply slot on a FIFO and writes its frame while still holding the lock (so FIFO order is
//! wire order); a reader task pops the FIFO for every response frame. A semaphore bounds the
//! number of requests awaiting a response (`max_in_flight`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fjord_protocol::codec::split_frame;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};
use crate::tls::TlsClient;

/// Settings for a [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent as `client_id` in every request header.
    pub client_id: String,
    /// How long to wait for each response (fetches add their `max_wait_ms` on top).
    pub request_timeout: Duration,
    /// How long to wait for the TCP connection to open and the TLS handshake to finish.
    pub connect_timeout: Duration,
    /// Requests that may await a response at once on this connection.
    pub max_in_flight: usize,
    /// Largest response frame accepted.
    pub max_frame: usize,
    /// Authenticate with SASL right after ApiVersions (a `SASL_PLAINTEXT` or `SASL_SSL`
    /// listener).
    pub sasl: Option<crate::sasl::SaslCredentials>,
    /// Handshake TLS right after the TCP connect (an `SSL` or `SASL_SSL` listener); see
    /// [`TlsClient::from_properties`].
    pub tls: Option<TlsClient>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "fjord-client".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_in_flight: 5,
            max_frame: fjord_protocol::codec::DEFAULT_MAX_FRAME,
            sasl: None,
            tls: None,
        }
    }
}

type Reply = oneshot::Sender<Result<BytesMut>>;

struct InFlight {
    correlation_id: i32,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<InFlight>,
    /// Set once the connection is unusable; later sends fail with this reason.
    closed: Option<String>,
}

impl Pending {
    fn close(&mut self, addr: &str, reason: String) {
        for f in self.queue.drain(..) {
            let _ = f.reply.send(Err(Error::Disconnected {
                addr: addr.to_string(),
                reason: reason.clone(),
            }));
        }
        self.closed.get_or_insert(reason);
    }
}

/// The halves of a plain TCP or a TLS stream. An enum rather than boxed trait objects, so the
/// plain path keeps tokio's owned TCP halves: no lock shared by reader and writer, no dynamic
/// call, no extra copy.
enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl ReadHalf {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            ReadHalf::Tcp(h) => h.read_buf(buf).await,
            ReadHalf::Tls(h) => h.read_buf(buf).await,
        }
    }
}

impl WriteHalf {
    async fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            WriteHalf::Tcp(h) => h.write_all(frame).await,
            // rustls may keep encrypted records it could not write yet; a request must leave
            // now, so flush.
            WriteHalf::Tls(h) => {
                h.write_all(frame).await?;
                h.flush().await
            }
        }
    }
}

struct Writer {
    half: WriteHalf,
    buf: BytesMut,
    next_correlation_id: i32,
}

/// A connection to one broker. Cheap to share behind an `Arc`; all methods take `&self` and
/// may run concurrently (that is how requests are pipelined).
pub struct Connection {
    addr: String,
    config: ConnectionConfig,
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<StdMutex<Pending>>,
    in_flight: Arc<Semaphore>,
    /// API key → the version we use (highest both sides support).
    versions: HashMap<i16, i16>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Open a connection to `addr` (`host:port`), handshake TLS if configured (the server name
    /// is `host`), negotiate API versions and authenticate with SASL if configured.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        // One deadline for the TCP connect and the TLS handshake together.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("connecting to {addr}"),
                after: config.connect_timeout,
            })?
            .map_err(|error| Error::Connect {
                addr: addr.to_string(),
                error,
            })?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = match &config.tls {
            None => {
                let (r, w) = stream.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Some(tls) => {
                let server_name = crate::tls::server_name(addr)?;
                let connector = tokio_rustls::TlsConnector::from(tls.config().clone());
                let stream =
                    tokio::time::timeout_at(deadline, connector.connect(server_name, stream))
                        .await
                        .map_err(|_| Error::Timeout {
                            what: format!("TLS handshake with {addr}"),
                            after: config.connect_timeout,
                        })?
                        .map_err(|error| Error::Tls {
                            addr: addr.to_string(),
                            reason: crate::tls::describe_error(&error),
                        })?;
                let (r, w) = tokio::io::split(stream);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        };
        let pending = Arc::new(StdMutex::new(Pending::default()));
        let reader = tokio::spawn(read_loop(
            read_half,
            pending.clone(),
            addr.to_string(),
            config.max_frame,
        ));
        let mut conn = Connection {
            addr: addr.to_string(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            writer: tokio::sync::Mutex::new(Writer {
                half: write_half,
                buf: BytesMut::with_capacity(64 * 1024),
                next_correlation_id: 0,
            }),
            pending,
            versions: HashMap::new(),
            reader,
        };
        conn.versions = conn.negotiate_versions().await?;
        if let Some(creds) = conn.config.sasl.clone() {
            crate::sasl::authenticate(&conn, &creds).await?;
        }
        Ok(conn)
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version used for `api_key`, if the broker supports one we can speak.
    pub fn version(&self, api_key: ApiKey) -> Option<i16> {
        self.versions.get(&(api_key as i16)).copied()
    }

    /// The request timeout configured for this connection.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// ApiVersions v3; a broker that does not know v3 answers UNSUPPORTED_VERSION with a v0 body
    /// that still lists its APIs, so fall back to that (or to a v0 request).
    async fn negotiate_versions(&self) -> Result<HashMap<i16, i16>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("fjord-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let frame = self
            .send_raw(
                ApiKey::ApiVersions,
                3,
                &request,
                self.config.request_timeout,
            )
            .await?;
        let response =
            match decode_body::<ApiVersionsResponse>(frame.clone(), ApiKey::ApiVersions, 3) {
                Ok(r) if r.error_code == 0 => r,
                _ => {
                    let v0 = decode_body::<ApiVersionsResponse>(frame, ApiKey::ApiVersions, 0);
                    match v0 {
                        Ok(r) if !r.api_keys.is_empty() => r,
                        _ => {
                            let frame = self
                                .send_raw(
                                    ApiKey::ApiVersions,
                                    0,
                                    &ApiVersionsRequest::default(),
                                    self.config.request_timeout,
                                )
                                .await?;
                            decode_body::<ApiVersionsResponse>(frame, ApiKey::ApiVersions, 0)?
                        }
                    }
                }
            };
        if response.error_code != 0 && response.api_keys.is_empty() {
            return Err(Error::kafka(
                response.error_code,
                format!("ApiVersions to {}", self.addr),
                None,
            ));
        }
        Ok(pick_versions(&response))
    }

    /// Send a request at the negotiated version and wait for its response.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response> {
        self.send_with_timeout(request, self.config.request_timeout)
            .await
    }

    /// Like [`Connection::send`] with an explicit timeout (fetch adds its max wait).
    pub async fn send_with_timeout<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response> {
        let (api_key, version) = self.api(R::KEY)?;
        let frame = self.send_raw(api_key, version, request, timeout).await?;
        decode_body::<R::Response>(frame, api_key, version)
    }

    /// Send a request at `version` rather than the negotiated one (to speak as an older
    /// client does, e.g. AddPartitionsToTxn v3 and below as producers send it).
    pub async fn send_at<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        let (api_key, _) = self.api(R::KEY)?;
        let frame = self
            .send_raw(api_key, version, request, self.config.request_timeout)
            .await?;
        decode_body::<R::Response>(frame, api_key, version)
    }

    /// Send a request for which the broker sends no response (Produce with acks=0).
    pub async fn send_oneway<R: Request>(&self, request: &R) -> Result<()> {
        let (api_key, version) = self.api(R::KEY)?;
        self.write_request(api_key, version, request, None).await
    }

    fn api(&self, key: i16) -> Result<(ApiKey, i16)> {
        let api_key =
            ApiKey::try_from(key).map_err(|_| Error::Protocol(format!("unknown api key {key}")))?;
        let version = self
            .versions
            .get(&key)
            .copied()
            .ok_or_else(|| Error::UnsupportedApi {
                addr: self.addr.clone(),
                api: format!("{api_key:?}"),
            })?;
        Ok((api_key, version))
    }

    async fn send_raw<M: Encodable>(
        &self,
        api_key: ApiKey,
        version: i16,
        request: &M,
        timeout: Duration,
    ) -> Result<BytesMut> {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.disconnected("connection closed"))?;
        let (tx, rx) = oneshot::channel();
        self.write_request(api_key, version, request, Some((tx, permit)))
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(Error::Timeout {
                what: format!("{api_key:?} request to {}", self.addr),
                after: timeout,
            }),
            Ok(Err(_)) => Err(self.disconnected("reader stopped")),
            Ok(Ok(r)) => r,
        }
    }

    async fn write_request<M: Encodable>(
        &self,
        api_key: ApiKey,
        version: i16,
        request: &M,
        reply: Option<(Reply, OwnedSemaphorePermit)>,
    ) -> Result<()> {
        let mut w = self.writer.lock().await;
        if let Some(reason) = self.pending.lock().expect("pending lock").closed.clone() {
            return Err(self.disconnected(&reason));
        }
        let correlation_id = w.next_correlation_id;
        w.next_correlation_id = w.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.config.client_id.clone())));
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.put_i32(0);
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .and_then(|_| request.encode(&mut buf, version))
            .map_err(|e| Error::Protocol(format!("encoding {api_key:?} v{version}: {e:#}")))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        if let Some((reply, permit)) = reply {
            self.pending
                .lock()
                .expect("pending lock")
                .queue
                .push_back(InFlight {
                    correlation_id,
                    reply,
                    _permit: permit,
                });
        }
        let result = w.half.write_frame(&buf).await;
        w.buf = buf;
        if let Err(error) = result {
            self.pending
                .lock()
                .expect("pending lock")
                .close(&self.addr, format!("write failed: {error}"));
            return Err(Error::Io {
                addr: self.addr.clone(),
                error,
            });
        }
        Ok(())
    }

    fn disconnected(&self, reason: &str) -> Error {
        Error::Disconnected {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The highest version of each API that both we (the `kafka-protocol` codec) and the broker
/// support.
fn pick_versions(response: &ApiVersionsResponse) -> HashMap<i16, i16> {
    let mut out = HashMap::new();
    for a in &response.api_keys {
        let Ok(key) = ApiKey::try_from(a.api_key) else {
            continue;
        };
        let ours = key.valid_versions();
        let max = ours.max.min(a.max_version);
        if max >= ours.min.max(a.min_version) {
            out.insert(a.api_key, max);
        }
    }
    out
}

fn decode_body<M: Decodable>(frame: BytesMut, api_key: ApiKey, version: i16) -> Result<M> {
    let mut bytes = frame.freeze();
    ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
        .and_then(|_| M::decode(&mut bytes, version))
        .map_err(|e| Error::Protocol(format!("decoding {api_key:?} v{version} response: {e:#}")))
}

async fn read_loop(
    mut half: ReadHalf,
    pending: Arc<StdMutex<Pending>>,
    addr: String,
    max_frame: usize,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let reason = loop {
        // Deliver every complete frame already buffered before reading more.
        match split_frame(&mut buf, max_frame) {
            Err(e) => break format!("bad frame: {e}"),
            Ok(Some(frame)) => {
                if frame.len() < 4 {
                    break "response frame too short".to_string();
                }
                // Both response header versions start with the correlation id.
                let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let mut p = pending.lock().expect("pending lock");
                match p.queue.pop_front() {
                    Some(f) if f.correlation_id == correlation_id => {
                        let _ = f.reply.send(Ok(frame));
                    }
                    Some(f) => {
                        let reason = format!(
                            "response correlation id {correlation_id}, expected {}",
                            f.correlation_id
                        );
                        let _ = f.reply.send(Err(Error::Protocol(reason.clone())));
                        p.close(&addr, reason);
                        return;
                    }
                    None => {
                        p.close(&addr, format!("unexpected response {correlation_id}"));
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {
                // The broker is trusted up to `max_frame`: make room for the whole response
                // so the next reads land in one allocation.
                if let Ok(Some(size)) = fjord_protocol::codec::frame_size(&buf, max_frame) {
                    buf.reserve((4 + size).saturating_sub(buf.len()));
                }
            }
        }
        match half.read_buf(&mut buf).await {
            Ok(0) => break "closed by broker".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {}", crate::tls::describe_error(&e)),
        }
    };
    pending.lock().expect("pending lock").close(&addr, reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_protocol::codec::{
        decode_request, encode_response, unsupported_api_versions_response, DEFAULT_MAX_FRAME,
    };
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::{
        MetadataRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// A fake broker: answers ApiVersions (as an old broker that rejects v3 when `old`) and
    /// echoes Metadata topic names, answering slowly so requests pile up. Returns its address
    /// and the most requests it ever saw waiting for an answer.
    async fn fake_broker(old: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let max_waiting = Arc::new(AtomicUsize::new(0));
        let max = max_waiting.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut rd, mut wr) = stream.into_split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<BytesMut>();
            let waiting = Arc::new(AtomicUsize::new(0));
            let w2 = waiting.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    while let Some(frame) = split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                        let n = w2.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        tx.send(frame).unwrap();
                    }
                    if rd.read_buf(&mut buf).await.unwrap() == 0 {
                        return;
                    }
                }
            });
            while let Some(frame) = rx.recv().await {
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let mut out = BytesMut::new();
                let req = decode_request(frame).unwrap();
                let corr = req.header.correlation_id;
                match req.body {
                    RequestKind::ApiVersions(_) if old && version == 3 => {
                        unsupported_api_versions_response(&mut out, corr)
                    }
                    RequestKind::ApiVersions(_) => {
                        let body = fjord_protocol::api_versions_response();
                        encode_response(
                            &mut out,
                            corr,
                            ApiKey::ApiVersions,
                            version,
                            &ResponseKind::ApiVersions(body),
                        )
                        .unwrap();
                    }
                    RequestKind::Metadata(m) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let topics = m
                            .topics
                            .unwrap_or_default()
                            .into_iter()
                            .map(|t| MetadataResponseTopic::default().with_name(t.name))
                            .collect();
                        let body = MetadataResponse::default().with_topics(topics);
                        encode_response(
                            &mut out,
                            corr,
                            ApiKey::Metadata,
                            version,
                            &ResponseKind::Metadata(body),
                        )
                        .unwrap();
                    }
                    other => panic!("unexpected request {other:?}"),
                }
                waiting.fetch_sub(1, Ordering::SeqCst);
                wr.write_all(&out).await.unwrap();
            }
        });
        (addr, max_waiting)
    }

    async fn pipelined_metadata(old: bool) {
        let (addr, max_waiting) = fake_broker(old).await;
        let config = ConnectionConfig {
            max_in_flight: 3,
            ..ConnectionConfig::default()
        };
        let conn = Arc::new(Connection::connect(&addr, config).await.unwrap());
        assert_eq!(conn.version(ApiKey::Metadata), Some(13));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("t{i}");
                let req = MetadataRequest::default()
                    .with_topics(Some(vec![MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))]));
                let resp = conn.send(&req).await.unwrap();
                assert_eq!(resp.topics.len(), 1);
                assert_eq!(
                    resp.topics[0].name.as_deref().map(|n| n.to_string()),
                    Some(name)
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let max = max_waiting.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "max waiting requests {max}");
    }

    #[tokio::test]
    async fn pipelines_and_matches_responses_in_order() {
        pipelined_metadata(false).await;
    }

    #[tokio::test]
    async fn falls_back_when_api_versions_v3_is_unsupported() {
        pipelined_metadata(true).await;
    }

    #[tokio::test]
    async fn timeout_and_refused_connection_are_distinct_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accept but never answer.
        let _keep = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let config = ConnectionConfig {
            request_timeout: Duration::from_millis(100),
            ..ConnectionConfig::default()
        };
        let err = Connection::connect(&addr, config.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        drop(_keep);
        let err = Connection::connect("127.0.0.1:1", config)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
    }
}
