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
//!
//! Limits (Kafka's keys; see `docs/architecture.md`, "Limits"): the acceptor stops accepting at
//! `max.connections` and closes a connection over `max.connections.per.ip` right after accept
//! ([`crate::conn_limits`]); the reader reserves each frame's size from the broker-wide
//! `queued.max.request.bytes` pool before reading its body and stops reading while the pool is
//! exhausted ([`crate::memory_pool`]), growing the frame buffer only as bytes arrive; and a
//! connection that neither completes a request nor is sent a response for
//! `connections.max.idle.ms` is closed, whether it is silent or trickling a request (slowloris).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use fjord_protocol::codec::{self, Chunk, DecodeError, FrameError, Request};
use fjord_storage::FileRange;
use kafka_protocol::messages::ApiKey;
use parking_lot::Mutex;
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::accounting::{Charge, ConnAccounting};
use crate::broker::Broker;
use crate::conn_limits::{ConnectionSlot, LogThrottle, SharedQuotas};
use crate::handlers::{self, Outcome};
use crate::memory_pool::{MemoryPool, PoolMetrics, Reservation};
use crate::stream::{ReadSide, Stream, WriteSide};
use crate::tls::TlsListener;

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
    /// A request with the pool memory its frame holds until it has been handled, and the
    /// frame's size on the wire (with its size prefix) for traffic accounting.
    Request(Box<Request>, Instant, Reservation, usize),
    /// A reply that needs no handler (ApiVersions with a too-new version), and the size of the
    /// request frame it answers.
    Raw(bytes::Bytes, usize),
    /// The connection must close after what is already queued.
    Close(String),
}

/// At most one message per this interval for events a flood repeats (rejections, slowloris).
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How much the reader asks the socket for when it does not yet know the next frame's size.
/// Bytes beyond the current frame are not in the pool; this bounds them per connection.
const LOOKAHEAD: usize = 16 * 1024;
/// The smallest step by which a frame buffer grows.
const MIN_GROW: usize = 64 * 1024;

/// What the listener enforces, shared by the acceptor and every connection.
struct Limits {
    quotas: Arc<SharedQuotas>,
    pool: MemoryPool,
    max_frame: usize,
    max_idle: Option<Duration>,
    /// Slowloris closes, from every connection.
    incomplete_log: Mutex<LogThrottle>,
    /// The listener's TLS configuration (SSL and SASL_SSL), reloaded when its files change.
    tls: Option<Arc<TlsListener>>,
}

impl Limits {
    fn new(broker: &Broker, tls: Option<Arc<TlsListener>>) -> Limits {
        let c = &broker.config;
        let m = &broker.metrics;
        Limits {
            quotas: SharedQuotas::new(c.limits.connections.clone()),
            pool: MemoryPool::new(
                c.limits.memory_pool_bytes,
                PoolMetrics {
                    used: m.memory_pool_used.clone(),
                    available: m.memory_pool_available.clone(),
                    depleted_seconds: m.memory_pool_depleted_seconds.clone(),
                },
            ),
            max_frame: c.socket_request_max_bytes,
            max_idle: c.limits.connections_max_idle,
            incomplete_log: Mutex::new(LogThrottle::new(LOG_INTERVAL)),
            tls,
        }
    }
}

/// How often a TLS listener looks for changed keystore and truststore files.
const TLS_RELOAD_CHECK: Duration = Duration::from_secs(10);

/// Accept connections until `shutdown` flips, then wait for them to finish. `tls`: the
/// listener's TLS configuration when its protocol is SSL or SASL_SSL.
pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some(tls) = &tls {
        tokio::spawn(reload_certificates(
            broker.clone(),
            tls.clone(),
            shutdown.clone(),
        ));
    }
    let limits = Arc::new(Limits::new(&broker, tls));
    let mut blocked_log = LogThrottle::new(LOG_INTERVAL);
    let mut rejected_log = LogThrottle::new(LOG_INTERVAL);
    let mut conns = JoinSet::new();
    loop {
        if !limits.quotas.slot_available() {
            // `max.connections`: like Kafka's acceptor, stop accepting until a connection
            // closes; new clients wait in the listen backlog.
            if let Some(more) = blocked_log.admit(Instant::now()) {
                tracing::warn!(
                    max_connections = broker.config.limits.connections.max_connections,
                    times_before = more,
                    "max.connections reached: not accepting connections until one closes"
                );
            }
            let start = Instant::now();
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = limits.quotas.wait_for_slot() => {}
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
            broker
                .metrics
                .acceptor_blocked_seconds
                .inc_by(start.elapsed().as_secs_f64());
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match limits.quotas.try_acquire(peer.ip()) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        let b = broker.clone();
                        let sd = shutdown.clone();
                        let l = limits.clone();
                        conns.spawn(async move { serve_connection(b, stream, peer, sd, l, slot).await });
                    }
                    Err(rejected) => {
                        // Closed at once, as Kafka closes a connection over its address's
                        // limit (TooManyConnectionsException); it never counted.
                        drop(stream);
                        broker
                            .metrics
                            .connections_rejected
                            .with_label_values(&[rejected.reason()])
                            .inc();
                        if let Some(more) = rejected_log.admit(Instant::now()) {
                            tracing::info!(
                                ip = %peer.ip(),
                                limit = ?rejected,
                                rejected_since_last_message = more,
                                "rejected connection: the address already has the maximum number of connections (max.connections.per.ip)"
                            );
                        }
                    }
                },
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

/// Look for changed certificate files (`tls::reload_loop`) until shutdown.
async fn reload_certificates(
    broker: Arc<Broker>,
    tls: Arc<TlsListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let reloads = broker.metrics.tls.reloads.clone();
    let listener = broker.config.listener.name.clone();
    tokio::select! {
        _ = shutdown.changed() => {}
        _ = crate::tls::reload_loop(tls, listener, Some(reloads), TLS_RELOAD_CHECK) => {}
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    limits: Arc<Limits>,
    slot: ConnectionSlot,
) {
    // Given back to `max.connections` / `max.connections.per.ip` when this returns.
    let _slot = slot;
    broker.metrics.connections.inc();
    let mut session =
        handlers::Session::anonymous(Arc::from(broker.config.listener.name.as_str()), Some(peer));
    let mut stream = match &limits.tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let handshake = tokio::select! {
                r = crate::stream::accept_tls(&broker, tls, tcp, peer) => r,
                _ = shutdown.changed() => None,
            };
            match handshake {
                // SSL: the certificate's principal (ANONYMOUS without one); SASL_SSL replaces
                // it with the SASL user, as in Kafka.
                Some((stream, principal)) => {
                    session.principal = Arc::new(principal);
                    stream
                }
                None => {
                    broker.metrics.connections.dec();
                    return;
                }
            }
        }
    };
    // An OAUTHBEARER token's expiry, which ends the session (KIP-368).
    let mut credential_expiry = None;
    if broker.config.sasl.required() {
        // SASL_PLAINTEXT: nothing but ApiVersions and the SASL exchange until it succeeds.
        match crate::sasl::authenticate(&broker, &mut stream, peer, &mut shutdown).await {
            Some(done) => {
                session.principal = Arc::new(done.principal);
                credential_expiry = done.credential_expiry;
            }
            None => {
                broker.metrics.connections.dec();
                return;
            }
        }
    }
    // KIP-368: sessions that end (`connections.max.reauth.ms`) and re-authentication.
    let mut reauth = crate::sasl::Reauth::new(&broker, &session.principal, peer, credential_expiry);
    let (rd, mut wr) = stream.split();
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(32);
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(32);
    let activity = Arc::new(Activity::new());
    // Client quotas mute the connection (KIP-219): neither read nor handled while muted.
    let mute = Arc::new(crate::quota::Mute::default());
    // Traffic by client rack and usage per client id (`None` when accounting is off).
    let mut accounting = ConnAccounting::new(&broker.accounting, peer);

    let reader = tokio::spawn(read_requests(
        broker.clone(),
        rd,
        peer,
        in_tx,
        limits,
        activity.clone(),
        mute.clone(),
    ));

    let processor_activity = activity.clone();
    let writer = tokio::spawn(async move {
        let activity = activity;
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
                        activity.touch();
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
            activity.touch();
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
            Inbound::Raw(bytes, request_bytes) => {
                if let Some(a) = &accounting {
                    a.unhandled(request_bytes, bytes.len());
                }
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
            Inbound::Request(req, arrived, reservation, wire_bytes) => {
                if let Some(r) = reauth.as_mut() {
                    match r.intercept(&broker, &req) {
                        crate::sasl::Intercept::Pass => {}
                        crate::sasl::Intercept::Respond(body, close) => {
                            let mut out = BytesMut::new();
                            let h = &req.header;
                            if let Err(e) = codec::encode_response(
                                &mut out,
                                h.correlation_id,
                                req.api_key,
                                h.request_api_version,
                                &body,
                            ) {
                                tracing::error!(%peer, error = %e, "cannot encode a re-authentication response");
                                break;
                            }
                            let sent =
                                out_tx.send(Outbound::Ready(vec![Chunk::Bytes(out.freeze())]));
                            if sent.await.is_err() || close {
                                break;
                            }
                            continue;
                        }
                        crate::sasl::Intercept::Close(reason) => {
                            tracing::info!(%peer, %reason, "closing connection");
                            break;
                        }
                    }
                }
                let api = req.api_key;
                let version = req.header.request_api_version;
                let correlation_id = req.header.correlation_id;
                let charge = accounting
                    .as_mut()
                    .map(|a| a.request(&broker, &req, wire_bytes));
                let usage = crate::quota::RequestUsage::of(&req, wire_bytes);
                // A reference-counted copy (the request moves into its handler), not a String.
                let client_id = req.header.client_id.clone();
                let handling = Instant::now();
                let mut outcome = handlers::handle_from(&broker, *req, &session).await;
                let client = crate::quota::QuotaClient {
                    user: &session.principal.name,
                    client_id: client_id.as_deref().unwrap_or(""),
                };
                let (mut throttle, mut quota_type) = broker.quotas.request_throttle(
                    &usage,
                    client,
                    handling.elapsed(),
                    fjord_protocol::clock::now_ms(),
                );
                if let Outcome::RespondWithRecords(body, ranges) = &mut outcome {
                    // Sizing the response walks its partitions: only with a fetch quota.
                    if usage.consumer_fetch && broker.quotas.enabled(crate::quota::QuotaType::Fetch)
                    {
                        let bytes = crate::quota::fetch_response_bytes(body, ranges);
                        let t = broker.quotas.record(
                            crate::quota::QuotaType::Fetch,
                            client,
                            bytes as f64,
                            fjord_protocol::clock::now_ms(),
                        );
                        if t > throttle {
                            (throttle, quota_type) = (t, crate::quota::QuotaType::Fetch);
                        }
                    }
                }
                let throttle_ms = throttle.min(i32::MAX as i64) as i32;
                if throttle > 0 {
                    broker.quotas.note_throttle(quota_type, throttle);
                }
                // Handled: the request's memory goes back to the pool (Kafka releases the
                // request buffer after handling, also when the response is deferred).
                drop(reservation);
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
                            let chunks =
                                encode(outcome, correlation_id, api, version, peer, throttle_ms);
                            charge_response(&charge, chunks.as_ref());
                            let _ = tx.send(chunks);
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
                            outcome => match encode(
                                outcome,
                                correlation_id,
                                api,
                                version,
                                peer,
                                throttle_ms,
                            ) {
                                Some(chunks) => {
                                    charge_response(&charge, Some(&chunks));
                                    Outbound::Ready(chunks)
                                }
                                None => break,
                            },
                        }
                    }
                };
                if throttle > 0 {
                    // KIP-219: the client backs off by itself, so it has its response at once
                    // and the connection is muted; an older client gets the response after
                    // the throttle time.
                    mute.mute_for(throttle);
                    if !crate::quota::client_throttles(api, version) {
                        tokio::select! {
                            _ = mute.wait() => {}
                            _ = shutdown.changed() => break,
                        }
                    }
                }
                if out_tx.send(out).await.is_err() {
                    break;
                }
                tokio::select! {
                    waited = mute.wait() => processor_activity.forgive(waited),
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    reader.abort();
    drop(out_tx);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

/// When a connection last made progress — read a whole request or was sent a response — for
/// `connections.max.idle.ms`. Bytes of a request still arriving are not progress, so a client
/// trickling a request (slowloris) is closed like a silent one. Shared by reader and writer.
struct Activity {
    origin: Instant,
    /// Milliseconds after `origin`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Time the broker made the connection wait (for pool memory) does not count as idle.
    fn forgive(&self, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        let now = self.now_ms();
        let _ = self
            .last_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(
                    last.saturating_add(waited.as_millis() as u64)
                        .min(now)
                        .max(last),
                )
            });
    }

    /// When the connection counts as idle; `None` if that is beyond any clock.
    fn deadline(&self, max_idle: Duration) -> Option<Instant> {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.checked_add(last)?.checked_add(max_idle)
    }
}

/// Why the reader stopped.
enum ReadEnd {
    /// The peer closed (`pending` bytes of an unfinished frame were dropped).
    Eof {
        pending: usize,
    },
    Io(std::io::Error),
    /// `connections.max.idle.ms` passed without progress; `pending` bytes of an unfinished
    /// request had arrived (0: simply idle).
    Idle {
        pending: usize,
    },
    /// A size prefix that is negative or over `socket.request.max.bytes`.
    Bad(FrameError),
}

/// Await `io` unless the connection goes idle first.
async fn unless_idle<T>(
    activity: &Activity,
    max_idle: Option<Duration>,
    pending: usize,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ReadEnd> {
    let Some(max_idle) = max_idle else {
        return io.await.map_err(ReadEnd::Io);
    };
    tokio::pin!(io);
    loop {
        let Some(deadline) = activity.deadline(max_idle) else {
            return io.await.map_err(ReadEnd::Io);
        };
        match tokio::time::timeout_at(deadline.into(), &mut io).await {
            Ok(r) => return r.map_err(ReadEnd::Io),
            // The writer may have sent a response meanwhile, which moves the deadline.
            Err(_)
                if activity
                    .deadline(max_idle)
                    .is_some_and(|d| d > Instant::now()) => {}
            Err(_) => return Err(ReadEnd::Idle { pending }),
        }
    }
}

/// Read the next frame into `buf` and split it off, with its pool reservation.
///
/// The size prefix is read in small steps (up to [`LOOKAHEAD`], which also picks up pipelined
/// small requests in one read); then the frame's size is reserved from the pool — waiting, and
/// not reading, while the pool is exhausted — and the body is read, the buffer growing with the
/// bytes that have arrived and never past the frame's end.
async fn read_frame(
    rd: &mut ReadSide,
    buf: &mut BytesMut,
    limits: &Limits,
    activity: &Activity,
) -> Result<(BytesMut, Reservation), ReadEnd> {
    let size = loop {
        if let Some(size) = codec::frame_size(buf, limits.max_frame).map_err(ReadEnd::Bad)? {
            break size;
        }
        // On TCP, bytes are awaited before room is made, so an idle connection holds no
        // buffer.
        let pending = buf.len();
        if unless_idle(
            activity,
            limits.max_idle,
            pending,
            rd.read_some(buf, LOOKAHEAD),
        )
        .await?
            == 0
        {
            return Err(ReadEnd::Eof { pending });
        }
    };
    let (reservation, waited) = limits.pool.reserve(size).await;
    activity.forgive(waited);
    let end = 4 + size;
    while buf.len() < end {
        let remaining = end - buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(remaining.min(buf.len().max(MIN_GROW)));
        }
        let pending = buf.len();
        let mut body = (&mut *rd).take(remaining as u64);
        if unless_idle(activity, limits.max_idle, pending, body.read_buf(buf)).await? == 0 {
            return Err(ReadEnd::Eof { pending });
        }
    }
    let frame = codec::split_frame(buf, limits.max_frame)
        .map_err(ReadEnd::Bad)?
        .expect("the whole frame is buffered");
    if buf.is_empty() {
        // Drop this buffer's share of the frame's allocation, so the frame's memory is freed
        // when the request is done with it, not when this connection next reads.
        *buf = BytesMut::new();
    }
    activity.touch();
    Ok((frame, reservation))
}

/// The reader stage: frames off the socket, decoded, to the processor.
async fn read_requests(
    broker: Arc<Broker>,
    mut rd: ReadSide,
    peer: SocketAddr,
    in_tx: mpsc::Sender<Inbound>,
    limits: Arc<Limits>,
    activity: Arc<Activity>,
    mute: Arc<crate::quota::Mute>,
) {
    let mut buf = BytesMut::new();
    loop {
        // A muted connection is not read (a throttled client's requests wait in the socket).
        activity.forgive(mute.wait().await);
        let (frame, reservation) = match read_frame(&mut rd, &mut buf, &limits, &activity).await {
            Ok(f) => f,
            Err(ReadEnd::Bad(e)) => {
                let _ = in_tx.send(Inbound::Close(e.to_string())).await;
                return;
            }
            Err(ReadEnd::Eof { pending }) => {
                if pending > 0 {
                    tracing::debug!(%peer, pending, "connection closed mid-frame");
                }
                return;
            }
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(%peer, error = %e, "read failed");
                return;
            }
            Err(ReadEnd::Idle { pending: 0 }) => {
                broker
                    .metrics
                    .connections_closed
                    .with_label_values(&["idle"])
                    .inc();
                tracing::debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                return;
            }
            Err(ReadEnd::Idle { pending }) => {
                broker
                    .metrics
                    .connections_closed
                    .with_label_values(&["incomplete_request"])
                    .inc();
                if let Some(more) = limits.incomplete_log.lock().admit(Instant::now()) {
                    tracing::info!(%peer, received = pending, closed_since_last_message = more,
                        "closing connection: a request was not completed within connections.max.idle.ms");
                }
                return;
            }
        };
        let arrived = Instant::now();
        let wire_bytes = 4 + frame.len();
        let msg = match codec::decode_request(frame) {
            Ok(req) => Inbound::Request(Box::new(req), arrived, reservation, wire_bytes),
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let mut out = BytesMut::new();
                codec::unsupported_api_versions_response(&mut out, correlation_id);
                Inbound::Raw(out.freeze(), wire_bytes)
            }
            Err(e) => Inbound::Close(e.to_string()),
        };
        let closing = matches!(msg, Inbound::Close(_));
        if in_tx.send(msg).await.is_err() || closing {
            return;
        }
    }
}

/// Count a response frame (size prefix and file ranges included) where its request was charged.
fn charge_response(charge: &Option<Charge>, chunks: Option<&Chunks>) {
    if let (Some(charge), Some(chunks)) = (charge, chunks) {
        charge.response(chunks.iter().map(Chunk::len).sum());
    }
}

/// The response frame of an outcome; `None` when the connection must close.
fn encode(
    outcome: Outcome,
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    peer: SocketAddr,
    throttle_ms: i32,
) -> Option<Chunks> {
    let (mut body, records) = match outcome {
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
    if throttle_ms > 0 {
        crate::quota::set_throttle_time(&mut body, throttle_ms);
    }
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
async fn write_all_chunks(wr: &mut WriteSide, chunks: &mut Chunks) -> std::io::Result<()> {
    // Linux accepts up to 1024 slices per call (IOV_MAX).
    const MAX_SLICES: usize = 256;
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        if let Chunk::Records(range) = &chunks[first] {
            wr.send_file(range).await?;
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
    // TLS may hold the last record until flushed (a no-op on TCP).
    wr.flush().await
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
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::UnregisterBroker => "UnregisterBroker",
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
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        _ => "Other",
    }
}
