//! [`ControllerClient`]: how a broker reaches the controller quorum over the control RPC.
//!
//! Requests go to the active controller: the client tries the last one it knew, follows
//! "not the controller" hints, moves on to the other voters when one cannot be reached or keeps
//! answering "unavailable", and backs off while an election is under way. Metadata fetches go to any voter (every controller serves
//! its own committed log). Every call has a connect timeout and a request timeout, so a dead voter
//! never hangs a caller. A few idle connections per voter are kept for reuse.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tls::BoxConn;
use tokio::time::Instant;

use super::feed::{ImagePart, MetadataChunk};
use super::heartbeat::HeartbeatSchedule;
use super::network::{read_frame, write_frame, Reply, Request};
use super::service::{Committed, QuorumStatus, SubmitError};
use super::RaftNodeId;
use crate::record::NodeId;
use crate::rpc::ControllerRequest;
use crate::{ClusterImage, MetadataRecord};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Added to a long poll's wait for its request timeout (connect, snapshot, transfer).
const FETCH_MARGIN: Duration = Duration::from_secs(5);

const BACKOFF_MIN: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// "Ask again" answers in a row after which a call to the active controller tries the next
/// voter.
const RETRIES_BEFORE_MOVING_ON: u32 = 2;

/// Idle connections kept per voter.
const MAX_IDLE: usize = 4;

/// No node (in the atomics below).
const NONE: u64 = u64::MAX;

impl std::fmt::Debug for ClientInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInner")
            .field("voters", &self.voters)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A client of the controller quorum. Cheap to clone; clones share connections and hints.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    voters: BTreeMap<RaftNodeId, String>,
    /// TLS on the controller listeners (`None`: plaintext).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The active controller as last seen.
    controller: AtomicU64,
    /// The voter that last answered a metadata fetch (at first, one picked at random).
    answered: AtomicU64,
    idle: Mutex<HashMap<RaftNodeId, Vec<BoxConn>>>,
}

/// What one reply means for a call to the active controller.
enum Answer<T> {
    Done(Result<T, SubmitError>),
    /// Not the active controller; the hint names the one it knows, if any.
    Redirect(Option<NodeId>),
    /// Ask again after a pause.
    Retry(String),
}

impl ControllerClient {
    /// A client of the quorum of `voters` (node id → `host:port` of its controller listener).
    /// Its metadata fetches start at a voter picked at random, so that the brokers of a
    /// cluster spread their fetches (and the encoding of every record they fetch) over the
    /// controllers rather than all asking the first one.
    pub fn new(voters: BTreeMap<RaftNodeId, String>) -> ControllerClient {
        ControllerClient::with_tls(voters, None)
    }

    /// [`new`](Self::new), connecting with TLS when `tls` is set (an `SSL` controller
    /// listener).
    pub fn with_tls(
        voters: BTreeMap<RaftNodeId, String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> ControllerClient {
        let first = random_voter(&voters);
        ControllerClient {
            inner: Arc::new(ClientInner {
                voters,
                tls,
                controller: AtomicU64::new(NONE),
                answered: AtomicU64::new(first),
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Send to the active controller: tries the last known one first, follows
    /// `NotController { leader }` hints, tries the other voters on connection errors, retries
    /// with short backoff until `timeout`; returns `Refused` at once (not retried). Connection
    /// errors and timeouts end as `Unavailable`.
    ///
    /// A request whose outcome is unknown (the connection broke, or the write failed after the
    /// controller sent it to Raft) may be sent again: callers see Kafka's at-least-once
    /// semantics for controller requests.
    pub async fn submit(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<Committed, SubmitError> {
        let kind = req.kind();
        self.submit_attempts(req, timeout, timeout, Some(kind))
            .await
    }

    /// A heartbeat, on `schedule`'s timeouts: like [`submit`](Self::submit), but a voter that
    /// does not answer within [`HeartbeatSchedule::attempt_timeout`] is given up for the next
    /// one (a heartbeat is safe to send twice). Whether and when to send the next is the
    /// caller's, by [`HeartbeatSchedule::succeeded`] / [`HeartbeatSchedule::failed`].
    pub async fn send_heartbeat(
        &self,
        req: ControllerRequest,
        schedule: &HeartbeatSchedule,
    ) -> Result<Committed, SubmitError> {
        self.submit_attempts(
            req,
            schedule.request_timeout(),
            schedule.attempt_timeout(),
            None,
        )
        .await
    }

    /// [`submit`](Self::submit) with each try on one voter cut short at `attempt_timeout`;
    /// `warn_as`: the request's name, to log at WARN when it had to fail over to another
    /// controller (heartbeats, sent every few hundred milliseconds, log their own way).
    async fn submit_attempts(
        &self,
        req: ControllerRequest,
        timeout: Duration,
        attempt_timeout: Duration,
        warn_as: Option<&str>,
    ) -> Result<Committed, SubmitError> {
        let req = Request::Submit(req);
        self.to_controller(
            &req,
            timeout,
            attempt_timeout,
            warn_as,
            |reply| match reply {
                Reply::Submitted(Ok(c)) => Answer::Done(Ok(c)),
                Reply::Submitted(Err(e @ SubmitError::Refused { .. })) => Answer::Done(Err(e)),
                Reply::Submitted(Err(SubmitError::NotController { leader })) => {
                    Answer::Redirect(leader)
                }
                Reply::Submitted(Err(SubmitError::Unavailable(why))) => Answer::Retry(why),
                other => Answer::Retry(format!("unexpected reply {}", reply_name(&other))),
            },
        )
        .await
    }

    /// Metadata records from offset `from`, waiting up to `max_wait` for new ones, from any
    /// reachable voter (the last that answered first). A reader behind the voter's retained
    /// records gets the image, fetched part by part from that voter and returned whole.
    pub async fn fetch_metadata(
        &self,
        from: i64,
        max_wait: Duration,
    ) -> Result<MetadataChunk, SubmitError> {
        let req = Request::FetchMetadata {
            from,
            max_wait_ms: max_wait.as_millis().try_into().unwrap_or(u64::MAX),
        };
        let ttl = max_wait + FETCH_MARGIN;
        let mut order: Vec<RaftNodeId> = self.inner.voters.keys().copied().collect();
        let answered = self.inner.answered.load(Ordering::Relaxed);
        if let Some(i) = order.iter().position(|id| *id == answered) {
            order.rotate_left(i);
        }
        let mut last = String::from("no controller quorum voters configured");
        for id in order {
            match self.call(id, &req, ttl).await {
                Ok(Reply::Metadata(chunk)) => {
                    self.inner.answered.store(id, Ordering::Relaxed);
                    return Ok(chunk);
                }
                Ok(Reply::ImagePart(Some(first))) => match self.image_parts(id, first).await {
                    Ok(chunk) => {
                        self.inner.answered.store(id, Ordering::Relaxed);
                        return Ok(chunk);
                    }
                    Err(e) => last = format!("node {id}: {e}"),
                },
                Ok(other) => last = format!("node {id}: unexpected reply {}", reply_name(&other)),
                Err(e) => last = format!("node {id} at {}: {e}", self.inner.voters[&id]),
            }
        }
        Err(SubmitError::Unavailable(last))
    }

    /// The image whose first part is `first`, with the other parts from voter `id`, each
    /// applied as it arrives (the whole image as records is never held at once).
    async fn image_parts(&self, id: RaftNodeId, first: ImagePart) -> io::Result<MetadataChunk> {
        let ImagePart {
            offset,
            parts,
            records,
            ..
        } = first;
        let mut image = apply_part(Box::default(), records).await;
        for part in 1..parts {
            let req = Request::FetchImagePart { offset, part };
            match self.call(id, &req, FETCH_MARGIN).await? {
                Reply::ImagePart(Some(p)) if p.offset == offset && p.part == part => {
                    image = apply_part(image, p.records).await;
                }
                Reply::ImagePart(None) => {
                    return Err(io::Error::other(format!(
                        "the image at offset {offset} is no longer held"
                    )))
                }
                other => {
                    return Err(io::Error::other(format!(
                        "unexpected reply {} to image part {part}",
                        reply_name(&other)
                    )))
                }
            }
        }
        Ok(MetadataChunk::Image { offset, image })
    }

    /// The status as the active controller reports it.
    pub async fn status(&self, timeout: Duration) -> Result<QuorumStatus, SubmitError> {
        let inner = self.inner.clone();
        let current = move || inner.controller.load(Ordering::Relaxed);
        self.to_controller(
            &Request::Status,
            timeout,
            timeout,
            None,
            |reply| match reply {
                // Asked of the node the hint points to; it confirms (or corrects) the hint.
                Reply::Status(s) if s.active_controller.is_some_and(|a| a as u64 == current()) => {
                    Answer::Done(Ok(s))
                }
                Reply::Status(s) => Answer::Redirect(s.active_controller),
                other => Answer::Retry(format!("unexpected reply {}", reply_name(&other))),
            },
        )
        .await
    }

    /// The active controller as last seen by this client.
    pub fn last_known_controller(&self) -> Option<NodeId> {
        match self.inner.controller.load(Ordering::Relaxed) {
            NONE => None,
            id => NodeId::try_from(id).ok(),
        }
    }

    /// Ask the active controller, following hints, until `timeout`; a voter that has not
    /// answered within `attempt_timeout` counts as unreachable. `interpret` reads a reply from
    /// the node that is the current target (recorded as the known controller before it runs).
    /// With `warn_as`, an answer that came from another node than the first asked (leadership
    /// moved, or the controller could not be reached) is logged at WARN under that name.
    async fn to_controller<T>(
        &self,
        req: &Request,
        timeout: Duration,
        attempt_timeout: Duration,
        warn_as: Option<&str>,
        interpret: impl Fn(Reply) -> Answer<T>,
    ) -> Result<T, SubmitError> {
        let voters = &self.inner.voters;
        let ids: Vec<RaftNodeId> = voters.keys().copied().collect();
        let Some(first) = ids.first().copied() else {
            return Err(SubmitError::Unavailable(
                "no controller quorum voters configured".into(),
            ));
        };
        let next = |id: RaftNodeId| ids.iter().copied().find(|i| *i > id).unwrap_or(first);
        let deadline = Instant::now() + timeout;
        let known = self.inner.controller.load(Ordering::Relaxed);
        let mut target = if voters.contains_key(&known) {
            known
        } else {
            first
        };
        let mut backoff = BACKOFF_MIN;
        let mut tries = 0;
        // "Ask again" answers in a row from the current target.
        let mut unavailable_here = 0;
        let mut last = String::from("no controller answered");
        let started = Instant::now();
        let asked_first = target;
        // Why each node asked before the one that answers did not (for the failover's log;
        // the first few).
        let mut passed: Vec<String> = Vec::new();
        let note = |passed: &mut Vec<String>, why: String| {
            if passed.len() < 4 {
                passed.push(why);
            }
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(SubmitError::Unavailable(format!(
                    "no active controller within {timeout:?}: {last}"
                )));
            }
            let pause = match self.call(target, req, remaining.min(attempt_timeout)).await {
                Ok(reply) => {
                    self.inner.controller.store(target, Ordering::Relaxed);
                    match interpret(reply) {
                        Answer::Done(r) => {
                            // Only a move away from a controller this client knew is a
                            // failover (a first request finds the controller by hints).
                            let moved = voters.contains_key(&known) && target != asked_first;
                            if let Some(what) = warn_as.filter(|_| moved) {
                                tracing::warn!(
                                    request = what,
                                    from = asked_first,
                                    to = target,
                                    elapsed_ms = started.elapsed().as_millis() as u64,
                                    passed = ?passed,
                                    "request failed over to another controller"
                                );
                            }
                            return r;
                        }
                        Answer::Redirect(hint) => {
                            unavailable_here = 0;
                            last = format!("node {target} is not the active controller");
                            note(&mut passed, last.clone());
                            let hint = hint
                                .and_then(|l| RaftNodeId::try_from(l).ok())
                                .filter(|l| voters.contains_key(l) && *l != target);
                            match hint {
                                Some(leader) => {
                                    self.inner.controller.store(leader, Ordering::Relaxed);
                                    target = leader;
                                    false
                                }
                                None => {
                                    // An election is under way: ask around after a pause.
                                    self.forget_controller(target);
                                    target = next(target);
                                    true
                                }
                            }
                        }
                        Answer::Retry(why) => {
                            last = why;
                            note(&mut passed, format!("node {target}: {last}"));
                            unavailable_here += 1;
                            // A node that keeps saying so may never get better (its Raft
                            // stopped on a disk error, it is cut off from the quorum while
                            // the others elect a new leader): ask the others too; a hint
                            // brings the client back if it does lead.
                            if unavailable_here >= RETRIES_BEFORE_MOVING_ON {
                                unavailable_here = 0;
                                self.forget_controller(target);
                                target = next(target);
                            }
                            true
                        }
                    }
                }
                Err(e) => {
                    unavailable_here = 0;
                    last = format!("node {target} at {}: {e}", voters[&target]);
                    note(&mut passed, last.clone());
                    self.forget_controller(target);
                    target = next(target);
                    false
                }
            };
            tries += 1;
            // Without a pause, go round the voters once at most (hints may point in circles).
            if pause || tries >= ids.len() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tries = 0;
            }
        }
    }

    fn forget_controller(&self, id: RaftNodeId) {
        let _ =
            self.inner
                .controller
                .compare_exchange(id, NONE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One request and its reply, on an idle connection to `id` or a new one, within `ttl`.
    async fn call(&self, id: RaftNodeId, req: &Request, ttl: Duration) -> io::Result<Reply> {
        let deadline = Instant::now() + ttl;
        let addr = self
            .inner
            .voters
            .get(&id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not a voter"))?;
        let idle = self
            .inner
            .idle
            .lock()
            .expect("idle lock")
            .get_mut(&id)
            .and_then(Vec::pop);
        if let Some(stream) = idle {
            match exchange(stream, req, deadline).await {
                Ok((stream, reply)) => {
                    self.put_idle(id, stream);
                    return Ok(reply);
                }
                // The server closed it while it was idle (a restart): use a new one.
                Err(e) if closed(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let connect_timeout =
            CONNECT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let stream = super::tls::connect(self.inner.tls.as_ref(), addr, connect_timeout).await?;
        let (stream, reply) = exchange(stream, req, deadline).await?;
        self.put_idle(id, stream);
        Ok(reply)
    }

    fn put_idle(&self, id: RaftNodeId, stream: BoxConn) {
        let mut idle = self.inner.idle.lock().expect("idle lock");
        let conns = idle.entry(id).or_default();
        if conns.len() < MAX_IDLE {
            conns.push(stream);
        }
    }
}

async fn exchange(
    mut stream: BoxConn,
    req: &Request,
    deadline: Instant,
) -> io::Result<(BoxConn, Reply)> {
    let reply = tokio::time::timeout_at(deadline, async {
        write_frame(&mut stream, req).await?;
        read_frame::<_, Reply>(&mut stream)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
    Ok((stream, reply))
}

fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// `image` with `records` applied, on a blocking thread (a part is tens of thousands of
/// records).
async fn apply_part(image: Box<ClusterImage>, records: Vec<MetadataRecord>) -> Box<ClusterImage> {
    tokio::task::spawn_blocking(move || {
        let mut image = image;
        for r in &records {
            image.apply(r);
        }
        image
    })
    .await
    .expect("applying metadata records does not panic")
}

/// One of `voters` at random (`NONE` for none): the standard library's randomly keyed hasher is
/// randomness enough to spread clients.
fn random_voter(voters: &BTreeMap<RaftNodeId, String>) -> u64 {
    use std::hash::BuildHasher;
    if voters.is_empty() {
        return NONE;
    }
    let r = std::collections::hash_map::RandomState::new().hash_one(voters.len());
    let i = usize::try_from(r % voters.len() as u64).unwrap_or(0);
    voters.keys().nth(i).copied().unwrap_or(NONE)
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::AppendEntries(_) => "AppendEntries",
        Reply::Vote(_) => "Vote",
        Reply::InstallSnapshot(_) => "InstallSnapshot",
        Reply::Submitted(_) => "Submitted",
        Reply::Metadata(_) => "Metadata",
        Reply::ImagePart(_) => "ImagePart",
        Reply::Status(_) => "Status",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::net::TcpListener;

    use super::*;
    use crate::rpc::ControllerReply;

    /// A voter that answers every request with `reply()`; how many it got.
    async fn fake_voter(reply: fn() -> Reply) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let asked = Arc::new(AtomicU64::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    while let Ok(Some(_)) = read_frame::<_, Request>(&mut stream).await {
                        count.fetch_add(1, Ordering::Relaxed);
                        if write_frame(&mut stream, &reply()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, asked)
    }

    /// A controller that keeps answering "unavailable" (its Raft stopped on a disk error, say)
    /// does not hold a request until its timeout while another voter can answer it.
    #[tokio::test]
    async fn a_voter_that_keeps_saying_unavailable_is_passed_over() {
        let (stuck, stuck_asked) =
            fake_voter(|| Reply::Submitted(Err(SubmitError::Unavailable("raft stopped".into()))))
                .await;
        let (good, good_asked) = fake_voter(|| {
            Reply::Submitted(Ok(Committed {
                reply: ControllerReply::Done,
                offset: 7,
            }))
        })
        .await;
        let client = ControllerClient::new(BTreeMap::from([(1, stuck), (2, good)]));
        let started = Instant::now();
        let committed = client
            .submit(
                ControllerRequest::ElectPreferredLeaders,
                Duration::from_secs(5),
            )
            .await
            .expect("answered by the other voter");
        assert_eq!(committed.offset, 7);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            stuck_asked.load(Ordering::Relaxed),
            RETRIES_BEFORE_MOVING_ON as u64
        );
        assert_eq!(good_asked.load(Ordering::Relaxed), 1);
        assert_eq!(client.last_known_controller(), Some(2));
    }
}
