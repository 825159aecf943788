//! SASL authentication of a connection on a `SASL_PLAINTEXT` listener, as Kafka's
//! `SaslServerAuthenticator`: before anything else the client may send ApiVersions and must
//! send SaslHandshake (v0-1) naming an enabled mechanism, then the mechanism's tokens — in
//! SaslAuthenticate requests (handshake v1) or as raw size-prefixed tokens (handshake v0, old
//! clients). Any other request closes the connection; a failed exchange answers
//! SASL_AUTHENTICATION_FAILED with Kafka's message and closes; an exchange not finished within
//! `sasl.authentication.timeout.ms` is closed. On success the connection's principal is
//! `User:<name>` and the request pipeline (`crate::server`) takes over the socket.
//!
//! The mechanisms themselves (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) are
//! `fjord_security::sasl`; PLAIN's users come from the listener's JAAS configuration, SCRAM
//! credentials from the metadata image (`fjord_metadata::scram`), OAUTHBEARER's keys from the
//! JWKS of [`oauthbearer`] (KIP-768), or none with Kafka's unsecured validator.
//!
//! Config (Kafka's keys): `listener.security.protocol.map`, `sasl.enabled.mechanisms` and
//! `listener.name.<listener>.sasl.enabled.mechanisms`,
//! `listener.name.<listener>.<mechanism>.sasl.jaas.config` (then `sasl.jaas.config`),
//! `sasl.server.max.receive.size`, `sasl.mechanism.inter.broker.protocol`,
//! `connections.max.reauth.ms` (KIP-368: a session lasts this long; the client re-authenticates
//! on the same connection with SaslHandshake and SaslAuthenticate, which [`Reauth`] intercepts
//! in the request pipeline, and any other request after expiry closes the connection). An
//! OAUTHBEARER token's `exp` also ends the session: it lasts until the earlier of the two, as
//! Kafka's `SaslServerAuthenticator` (a token's expiry applies even without
//! `connections.max.reauth.ms`).
//!
//! OAUTHBEARER keys (KIP-768), each also read as `listener.name.<listener>.oauthbearer.<key>`
//! and `listener.name.<listener>.<key>`: `sasl.oauthbearer.jwks.endpoint.url`,
//! `sasl.oauthbearer.jwks.endpoint.refresh.ms`, `sasl.oauthbearer.expected.audience`,
//! `sasl.oauthbearer.expected.issuer`, `sasl.oauthbearer.sub.claim.name`,
//! `sasl.oauthbearer.scope.claim.name`, `sasl.oauthbearer.clock.skew.seconds`.

mod oauthbearer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fjord_protocol::codec::{self, DecodeError};
use fjord_protocol::error::ErrorCode;
use fjord_security::sasl::jaas::JaasConfig;
use fjord_security::sasl::oauthbearer::{OAuthBearerServer, ServerStep};
use fjord_security::sasl::scram::{random_nonce, ScramMechanism, ScramServer};
use fjord_security::sasl::{self as mechs, plain};
use fjord_security::KafkaPrincipal;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::handlers::{self, Outcome, Session};

/// A listener's security protocol (`listener.security.protocol.map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// How this side logs in to its peers (`sasl.mechanism.inter.broker.protocol` and the JAAS
/// `username` / `password`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The data listener's authentication settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub protocol: SecurityProtocol,
    /// Enabled mechanisms, in the configured order (what UNSUPPORTED_SASL_MECHANISM lists).
    pub mechanisms: Vec<String>,
    /// PLAIN's users (`user_<name>="<password>"` in the JAAS configuration).
    pub plain_users: BTreeMap<String, String>,
    /// The credentials this broker uses towards other brokers' SASL listeners.
    pub inter_broker: Option<ClientCredentials>,
    /// `sasl.server.max.receive.size`: the largest frame accepted before authentication.
    pub max_receive_size: usize,
    /// `sasl.authentication.timeout.ms` (Fjord's): the whole exchange must finish in this.
    pub timeout: Duration,
    /// `connections.max.reauth.ms`: how long a session lasts before the client must
    /// re-authenticate (KIP-368); `None` (0) for sessions without end.
    pub max_reauth: Option<Duration>,
    /// OAUTHBEARER's validation, when the mechanism is enabled.
    pub oauthbearer: Option<Arc<oauthbearer::OAuthBearer>>,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("protocol", &self.protocol)
            .field("mechanisms", &self.mechanisms)
            .field("plain_users", &self.plain_users.keys().collect::<Vec<_>>())
            .field("inter_broker", &self.inter_broker)
            .field("max_receive_size", &self.max_receive_size)
            .field("timeout", &self.timeout)
            .field("max_reauth", &self.max_reauth)
            .field("oauthbearer", &self.oauthbearer)
            .finish()
    }
}

/// Fixed keys this module reads, with Kafka's defaults (Fjord's for the timeout).
const KEYS: &[(&str, &str)] = &[
    ("listener.security.protocol.map", ""),
    ("sasl.enabled.mechanisms", ""),
    ("sasl.jaas.config", ""),
    ("sasl.server.max.receive.size", "524288"),
    ("sasl.mechanism.inter.broker.protocol", ""),
    ("security.inter.broker.protocol", ""),
    ("inter.broker.listener.name", ""),
    ("connections.max.reauth.ms", "0"),
    ("sasl.authentication.timeout.ms", "10000"),
];

/// Per-listener suffixes after `listener.name.<listener>.` this module reads.
const LISTENER_SUFFIXES: &[&str] = &[
    "sasl.enabled.mechanisms",
    "plain.sasl.jaas.config",
    "scram-sha-256.sasl.jaas.config",
    "scram-sha-512.sasl.jaas.config",
    "oauthbearer.sasl.jaas.config",
    "sasl.jaas.config",
    "connections.max.reauth.ms",
];

/// Whether `key` is a key this module owns (for the broker's unknown-key check).
pub fn is_config_key(key: &str) -> bool {
    let oauth_key = |k: &str| oauthbearer::KEYS.iter().any(|(o, _)| *o == k);
    if KEYS.iter().any(|(k, _)| *k == key) || oauth_key(key) {
        return true;
    }
    key.strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(name, suffix)| {
            !name.is_empty()
                && (LISTENER_SUFFIXES.contains(&suffix)
                    || oauth_key(suffix)
                    || suffix.strip_prefix("oauthbearer.").is_some_and(oauth_key))
        })
}

/// The security protocol of listener `name` under `listener.security.protocol.map` (Kafka's
/// default maps each protocol name to itself).
pub fn protocol_of(map: &str, name: &str) -> Result<String, String> {
    for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((l, p)) = entry.split_once(':') else {
            return Err(format!(
                "invalid value \"{map}\" for listener.security.protocol.map: expected NAME:PROTOCOL pairs such as CLIENT:SASL_PLAINTEXT"
            ));
        };
        if l.trim() == name {
            return Ok(p.trim().to_ascii_uppercase());
        }
    }
    match name {
        "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" | "CONTROLLER" => Ok(if name == "CONTROLLER" {
            "PLAINTEXT".into()
        } else {
            name.into()
        }),
        _ => Err(format!(
            "listener {name} has no security protocol: add {name}:PLAINTEXT (or SASL_PLAINTEXT) to listener.security.protocol.map"
        )),
    }
}

impl SaslConfig {
    /// Parse the data listener `listener`'s settings.
    pub fn parse(get: &dyn Fn(&str) -> String, listener: &str) -> Result<SaslConfig, String> {
        let get = |key: &str| -> String {
            let v = get(key);
            if v.is_empty() {
                KEYS.iter()
                    .chain(oauthbearer::KEYS)
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default()
            } else {
                v
            }
        };
        let lower = listener.to_ascii_lowercase();
        // Kafka's per-listener keys use the listener name in lower case.
        let per_listener = |suffix: &str| -> String {
            let v = get(&format!("listener.name.{lower}.{suffix}"));
            if v.is_empty() && lower != listener {
                get(&format!("listener.name.{listener}.{suffix}"))
            } else {
                v
            }
        };
        let protocol = match protocol_of(&get("listener.security.protocol.map"), listener)?.as_str()
        {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            other => {
                return Err(format!(
                    "listener {listener} has security protocol {other}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                ))
            }
        };
        let max_receive_size = crate::config::parse_int(
            &get("sasl.server.max.receive.size"),
            "sasl.server.max.receive.size",
            64,
            i32::MAX as i64,
        )? as usize;
        let timeout_ms = crate::config::parse_int(
            &get("sasl.authentication.timeout.ms"),
            "sasl.authentication.timeout.ms",
            1,
            i32::MAX as i64,
        )? as u64;
        let reauth_ms = {
            let key = format!("listener.name.{lower}.connections.max.reauth.ms");
            let v = get(&key);
            if v.is_empty() {
                crate::config::parse_int(
                    &get("connections.max.reauth.ms"),
                    "connections.max.reauth.ms",
                    0,
                    i64::MAX,
                )?
            } else {
                crate::config::parse_int(&v, &key, 0, i64::MAX)?
            }
        };
        let jaas_for = |mech: &str| -> Result<Option<JaasConfig>, String> {
            let key = format!(
                "listener.name.{lower}.{}.sasl.jaas.config",
                mech.to_ascii_lowercase()
            );
            let mut text = per_listener(&format!("{}.sasl.jaas.config", mech.to_ascii_lowercase()));
            let mut which = key;
            if text.is_empty() {
                text = per_listener("sasl.jaas.config");
                which = format!("listener.name.{lower}.sasl.jaas.config");
            }
            if text.is_empty() {
                text = get("sasl.jaas.config");
                which = "sasl.jaas.config".into();
            }
            if text.is_empty() {
                return Ok(None);
            }
            JaasConfig::parse(&text)
                .map(Some)
                .map_err(|e| format!("invalid value for {which}: {e}"))
        };
        let plain_jaas = jaas_for(mechs::PLAIN)?;
        let plain_users = plain_jaas
            .as_ref()
            .map(JaasConfig::plain_users)
            .unwrap_or_default();
        let configured = {
            let v = per_listener("sasl.enabled.mechanisms");
            if v.is_empty() {
                get("sasl.enabled.mechanisms")
            } else {
                v
            }
        };
        let mechanisms: Vec<String> = if configured.trim().is_empty() {
            // Kafka's default is GSSAPI, which Fjord lacks: every mechanism Fjord can serve.
            let mut m = Vec::new();
            if !plain_users.is_empty() {
                m.push(mechs::PLAIN.to_string());
            }
            m.push(mechs::SCRAM_SHA_256.to_string());
            m.push(mechs::SCRAM_SHA_512.to_string());
            m
        } else {
            configured
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .collect()
        };
        if protocol.sasl() {
            for m in &mechanisms {
                if !mechs::is_supported_mechanism(m) {
                    return Err(format!(
                        "invalid value \"{configured}\" for sasl.enabled.mechanisms: {m} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER are)"
                    ));
                }
            }
            if mechanisms.iter().any(|m| m == mechs::PLAIN) && plain_users.is_empty() {
                return Err(format!(
                    "PLAIN is enabled on listener {listener} but no users are configured: set listener.name.{lower}.plain.sasl.jaas.config with user_<name>=\"<password>\" options"
                ));
            }
        }
        let oauthbearer = if protocol.sasl() && mechanisms.iter().any(|m| m == mechs::OAUTHBEARER) {
            // Kafka reads a mechanism's keys under `listener.name.<l>.<mechanism>.` first.
            let oauth_get = |key: &str| -> String {
                let v = per_listener(&format!("oauthbearer.{key}"));
                if !v.is_empty() {
                    return v;
                }
                let v = per_listener(key);
                if v.is_empty() {
                    get(key)
                } else {
                    v
                }
            };
            let jaas = jaas_for(mechs::OAUTHBEARER)?;
            Some(oauthbearer::OAuthBearer::parse(
                &oauth_get,
                jaas.as_ref(),
                listener,
            )?)
        } else {
            None
        };
        let inter_mech = get("sasl.mechanism.inter.broker.protocol").to_ascii_uppercase();
        if protocol.sasl() && inter_mech == mechs::OAUTHBEARER {
            // Brokers log in to each other with a password (Fjord's client has no token
            // source); OAUTHBEARER is for clients.
            return Err(format!(
                "sasl.mechanism.inter.broker.protocol={inter_mech} is not supported: brokers authenticate to each other with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (enable one next to OAUTHBEARER on listener {listener})"
            ));
        }
        let inter_broker = if protocol.sasl() {
            let mech = if inter_mech.is_empty() {
                mechs::PLAIN.to_string()
            } else {
                inter_mech
            };
            jaas_for(&mech)?
                .and_then(|j| j.credentials())
                .map(|(username, password)| ClientCredentials {
                    mechanism: mech,
                    username,
                    password,
                })
        } else {
            None
        };
        Ok(SaslConfig {
            protocol,
            mechanisms,
            plain_users,
            inter_broker,
            max_receive_size,
            timeout: Duration::from_millis(timeout_ms),
            max_reauth: (reauth_ms > 0).then(|| Duration::from_millis(reauth_ms as u64)),
            oauthbearer,
        })
    }

    /// Whether connections must authenticate before anything else.
    pub fn required(&self) -> bool {
        self.protocol.sasl()
    }

    /// Say at startup what an operator must know (the configuration is parsed before logging
    /// is set up): OAUTHBEARER without a JWKS believes any token.
    pub fn log_startup_warnings(&self, listener: &str) {
        if self.oauthbearer.as_ref().is_some_and(|o| o.unsecured()) {
            tracing::warn!(
                listener,
                "OAUTHBEARER is enabled without sasl.oauthbearer.jwks.endpoint.url: tokens on this listener are NOT verified (Kafka's unsecured validator accepts unsigned alg=none tokens and believes their claims); for development only"
            );
        }
    }
}

/// The credentials this broker presents to other brokers' data listeners (replica fetchers,
/// transaction markers and verification): `None` on a PLAINTEXT listener.
pub fn inter_broker_credentials(broker: &Broker) -> Option<fjord_client::SaslCredentials> {
    let c = broker.config.sasl.inter_broker.as_ref()?;
    Some(fjord_client::SaslCredentials {
        mechanism: c.mechanism.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
    })
}

/// Authentication metrics.
pub struct SaslMetrics {
    /// Exchanges finished, by `mechanism` and `result` (success, failure).
    pub authentications: IntCounterVec,
    /// Unauthenticated connections the broker closed, by `reason`: `timeout`,
    /// `unexpected_request`, `unsupported_mechanism`, `bad_frame`.
    pub closed: IntCounterVec,
}

impl SaslMetrics {
    pub fn new(registry: &Registry) -> SaslMetrics {
        let authentications = IntCounterVec::new(
            Opts::new(
                "sasl_authentications_total",
                "SASL authentications on this broker's listener, by mechanism and result (success, failure)",
            ),
            &["mechanism", "result"],
        )
        .expect("metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "sasl_connections_closed_total",
                "Connections closed before authenticating, by reason (timeout, unexpected_request, unsupported_mechanism, bad_frame), or when their session expired without re-authentication (session_expired)",
            ),
            &["reason"],
        )
        .expect("metric");
        for m in [
            mechs::PLAIN,
            mechs::SCRAM_SHA_256,
            mechs::SCRAM_SHA_512,
            mechs::OAUTHBEARER,
        ] {
            for r in ["success", "failure"] {
                authentications.with_label_values(&[m, r]);
            }
        }
        for r in [
            "timeout",
            "unexpected_request",
            "unsupported_mechanism",
            "bad_frame",
            "session_expired",
        ] {
            closed.with_label_values(&[r]);
        }
        registry
            .register(Box::new(authentications.clone()))
            .expect("register");
        registry
            .register(Box::new(closed.clone()))
            .expect("register");
        SaslMetrics {
            authentications,
            closed,
        }
    }
}

/// One mechanism's exchange on the server side.
enum Exchange {
    Plain,
    Scram(ScramServer),
    /// With the token's `exp` (ms since the epoch) once it is accepted.
    OAuthBearer(OAuthBearerServer, Option<i64>),
}

/// Why the exchange ended without a principal.
struct Failure {
    /// What the client is told (SaslAuthenticate's error message); never a secret.
    message: String,
    /// The user name the client tried, when it got that far.
    user: Option<String>,
    /// What the broker logs when it says more than `message` (why a token was refused).
    detail: Option<String>,
}

enum Step {
    /// Send this token and wait for the next.
    Continue(Vec<u8>),
    /// Send this token; the user is authenticated.
    Done(Vec<u8>, String),
}

impl Exchange {
    fn new(mechanism: &str) -> Option<Exchange> {
        match mechanism {
            mechs::PLAIN => Some(Exchange::Plain),
            mechs::OAUTHBEARER => Some(Exchange::OAuthBearer(OAuthBearerServer::new(), None)),
            m => ScramMechanism::from_name(m).map(|m| Exchange::Scram(ScramServer::new(m))),
        }
    }

    fn step(&mut self, broker: &Broker, token: &[u8]) -> Result<Step, Failure> {
        match self {
            Exchange::Plain => {
                let tried = plain::PlainMessage::parse(token).ok().map(|m| m.username);
                plain::authenticate(token, &broker.config.sasl.plain_users)
                    .map(|user| Step::Done(Vec::new(), user))
                    .map_err(|e| Failure {
                        message: e.to_string(),
                        user: tried,
                        detail: None,
                    })
            }
            Exchange::Scram(server) => {
                let mech = server.mechanism();
                let invalid = |user: Option<String>| {
                    Failure {
                    message: format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                        mech.name()
                    ),
                    user,
                    detail: None,
                }
                };
                if server.is_awaiting_client_first() {
                    let first = server.client_first(token).map_err(|e| Failure {
                        message: e.to_string(),
                        user: None,
                        detail: None,
                    })?;
                    let user = first.username.clone();
                    let credential =
                        broker.with_image(|i| i.scram_credentials().get(&user, mech).cloned());
                    let Some(credential) = credential else {
                        return Err(invalid(Some(user)));
                    };
                    Ok(Step::Continue(server.server_first(
                        first,
                        credential,
                        &random_nonce(),
                    )))
                } else {
                    let user = server.username().map(str::to_string);
                    match server.client_final(token) {
                        Ok(fin) => Ok(Step::Done(fin, user.unwrap_or_default())),
                        Err(e) => {
                            tracing::debug!(error = %e, "SCRAM client-final message refused");
                            Err(invalid(user))
                        }
                    }
                }
            }
            Exchange::OAuthBearer(server, expires_ms) => {
                let Some(oauth) = &broker.config.sasl.oauthbearer else {
                    return Err(Failure {
                        message: fjord_security::sasl::oauthbearer::MALFORMED_MESSAGE.into(),
                        user: None,
                        detail: Some("OAUTHBEARER is not configured".into()),
                    });
                };
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                match server.step(token, |t| oauth.validate(t, now_ms)) {
                    Ok(ServerStep::Challenge(json)) => {
                        if let Some(why) = server.refusal() {
                            tracing::debug!(reason = %why, "OAUTHBEARER token refused; error challenge sent");
                        }
                        Ok(Step::Continue(json))
                    }
                    Ok(ServerStep::Done(token)) => {
                        *expires_ms = Some(token.expires_ms);
                        Ok(Step::Done(Vec::new(), token.principal))
                    }
                    Err(e) => Err(Failure {
                        message: e.message,
                        user: e.principal,
                        detail: Some(e.detail),
                    }),
                }
            }
        }
    }

    /// When the credential stops being valid (an OAUTHBEARER token's `exp`), once the
    /// exchange is done.
    fn credential_expiry(&self) -> Option<Instant> {
        let Exchange::OAuthBearer(_, Some(exp_ms)) = self else {
            return None;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Some(Instant::now() + Duration::from_millis(exp_ms.saturating_sub(now_ms).max(0) as u64))
    }
}

/// How long a session lasts (KIP-368, as `SaslServerAuthenticator`): the earlier of
/// `connections.max.reauth.ms` and the credential's expiry; `None` without either.
fn session_lifetime(cfg: &SaslConfig, credential_expiry: Option<Instant>) -> Option<Duration> {
    let left = credential_expiry.map(|e| e.saturating_duration_since(Instant::now()));
    match (cfg.max_reauth, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A connection that authenticated: who, and until when its credential is valid.
pub struct Authenticated {
    pub principal: KafkaPrincipal,
    /// An OAUTHBEARER token's expiry: the session ends then at the latest.
    pub credential_expiry: Option<Instant>,
}

/// Why authentication ended the connection.
enum Closed {
    /// Logged and counted where it happened.
    Done,
    Io(std::io::Error),
}

impl From<std::io::Error> for Closed {
    fn from(e: std::io::Error) -> Self {
        Closed::Io(e)
    }
}

/// Run the SASL exchange on a new connection. `Some` when it authenticated; `None` when the
/// connection must close (already logged and counted).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    stream: &mut S,
    peer: SocketAddr,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Authenticated> {
    let cfg = &broker.config.sasl;
    let exchange = run(broker, stream, peer);
    let outcome = tokio::select! {
        r = tokio::time::timeout(cfg.timeout, exchange) => r,
        _ = shutdown.changed() => return None,
    };
    match outcome {
        Ok(Ok(authenticated)) => Some(authenticated),
        Ok(Err(Closed::Done)) => None,
        Ok(Err(Closed::Io(e))) => {
            tracing::debug!(%peer, error = %e, "connection lost during SASL authentication");
            None
        }
        Err(_) => {
            broker
                .metrics
                .sasl
                .closed
                .with_label_values(&["timeout"])
                .inc();
            tracing::warn!(
                %peer,
                timeout_ms = cfg.timeout.as_millis() as u64,
                "closing connection: SASL authentication did not complete within sasl.authentication.timeout.ms"
            );
            None
        }
    }
}

/// Read one size-prefixed frame of at most `max` bytes, growing the buffer only as bytes
/// arrive. `Ok(None)` for a bad size.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Option<BytesMut>, Closed> {
    let size = stream.read_i32().await?;
    if size < 0 || size as usize > max {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity((size as usize).min(64 * 1024));
    let n = (&mut *stream)
        .take(size as u64)
        .read_to_end(&mut buf)
        .await?;
    if n < size as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(BytesMut::from(&buf[..])))
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: ResponseKind,
) -> Result<(), Closed> {
    let mut out = BytesMut::new();
    codec::encode_response(&mut out, correlation_id, api, version, &body)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&out).await?;
    // A TLS stream may hold the bytes until flushed (a no-op on TCP).
    stream.flush().await?;
    Ok(())
}

fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The exchange itself, without its timeout.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    stream: &mut S,
    peer: SocketAddr,
) -> Result<Authenticated, Closed> {
    let cfg = &broker.config.sasl;
    let metrics = &broker.metrics.sasl;
    let close = |reason: &'static str, what: String| {
        metrics.closed.with_label_values(&[reason]).inc();
        tracing::warn!(%peer, %what, "closing connection before authentication");
        Closed::Done
    };
    let session = Session::anonymous(Arc::from(broker.config.listener.name.as_str()), Some(peer));
    // The mechanism chosen by the handshake, and whether tokens come raw (handshake v0).
    let mut chosen: Option<(String, Exchange, bool)> = None;
    loop {
        let Some(frame) = read_frame(stream, cfg.max_receive_size).await? else {
            return Err(close(
                "bad_frame",
                format!(
                    "a frame over sasl.server.max.receive.size ({} bytes) or with a negative size",
                    cfg.max_receive_size
                ),
            ));
        };
        if let Some((mech, exchange, true)) = &mut chosen {
            // Handshake v0: the frame is a raw token, answered by a raw token.
            match exchange.step(broker, &frame) {
                Ok(step) => {
                    let (token, done) = match step {
                        Step::Continue(t) => (t, None),
                        Step::Done(t, user) => (t, Some(user)),
                    };
                    stream.write_i32(token.len() as i32).await?;
                    stream.write_all(&token).await?;
                    stream.flush().await?;
                    if let Some(user) = done {
                        return Ok(Authenticated {
                            principal: succeeded(broker, peer, mech, user),
                            credential_expiry: exchange.credential_expiry(),
                        });
                    }
                }
                Err(f) => {
                    failed(broker, peer, mech, &f);
                    return Err(Closed::Done);
                }
            }
            continue;
        }
        let req = match codec::decode_request(frame) {
            Ok(req) => req,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let mut out = BytesMut::new();
                codec::unsupported_api_versions_response(&mut out, correlation_id);
                stream.write_all(&out).await?;
                stream.flush().await?;
                continue;
            }
            Err(e) => {
                return Err(close(
                    "unexpected_request",
                    format!("not a valid request during SASL authentication: {e}"),
                ))
            }
        };
        let version = req.header.request_api_version;
        let correlation_id = req.header.correlation_id;
        let api = req.api_key;
        if chosen.is_none() && matches!(req.body, RequestKind::ApiVersions(_)) {
            let Outcome::Respond(body) = handlers::handle_from(broker, req, &session).await else {
                return Err(Closed::Done);
            };
            respond(stream, correlation_id, api, version, *body).await?;
            continue;
        }
        match (req.body, &mut chosen) {
            (RequestKind::SaslHandshake(r), None) => {
                let mech = r.mechanism.to_string();
                let enabled = cfg.mechanisms.contains(&mech);
                let exchange = enabled.then(|| Exchange::new(&mech)).flatten();
                let mut resp = SaslHandshakeResponse::default()
                    .with_mechanisms(cfg.mechanisms.iter().map(|m| sb(m.clone())).collect());
                let Some(exchange) = exchange else {
                    resp.error_code = ErrorCode::UnsupportedSaslMechanism.code();
                    respond(stream, correlation_id, api, version, resp.into()).await?;
                    let shown: String = mech.chars().take(64).collect();
                    return Err(close(
                        "unsupported_mechanism",
                        format!(
                            "client asked for SASL mechanism {shown:?}, enabled: {}",
                            cfg.mechanisms.join(",")
                        ),
                    ));
                };
                respond(stream, correlation_id, api, version, resp.into()).await?;
                chosen = Some((mech, exchange, version == 0));
            }
            (RequestKind::SaslAuthenticate(r), Some((mech, exchange, false))) => {
                match exchange.step(broker, &r.auth_bytes) {
                    Ok(step) => {
                        let (token, done) = match step {
                            Step::Continue(t) => (t, None),
                            Step::Done(t, user) => (t, Some(user)),
                        };
                        let credential_expiry = exchange.credential_expiry();
                        let lifetime = session_lifetime(cfg, credential_expiry);
                        let resp = SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(token))
                            .with_session_lifetime_ms(lifetime_ms(lifetime));
                        respond(stream, correlation_id, api, version, resp.into()).await?;
                        if let Some(user) = done {
                            return Ok(Authenticated {
                                principal: succeeded(broker, peer, mech, user),
                                credential_expiry,
                            });
                        }
                    }
                    Err(f) => {
                        let resp = SaslAuthenticateResponse::default()
                            .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                            .with_error_message(Some(sb(f.message.clone())));
                        failed(broker, peer, mech, &f);
                        respond(stream, correlation_id, api, version, resp.into()).await?;
                        return Err(Closed::Done);
                    }
                }
            }
            (_, _) => {
                return Err(close(
                    "unexpected_request",
                    format!("unexpected {api:?} v{version} request during SASL authentication"),
                ))
            }
        }
    }
}

/// SaslAuthenticate's `session_lifetime_ms`: 0 without expiry. A session already over (a
/// token expiring within the clock skew) still gets 1 ms, so the client re-authenticates
/// rather than believing it never has to.
fn lifetime_ms(lifetime: Option<Duration>) -> i64 {
    lifetime.map_or(0, |d| (d.as_millis() as i64).max(1))
}

/// What the pipeline does with a request on an authenticated connection (KIP-368).
pub enum Intercept {
    /// Not a re-authentication and the session is valid: handle it as usual.
    Pass,
    /// Answer with this body (a re-authentication step); then close if `close`.
    Respond(Box<ResponseKind>, bool),
    /// Close the connection (the session expired), without an answer.
    Close(String),
}

/// Re-authentication state of one authenticated connection, when its session ends
/// (`connections.max.reauth.ms`, or an OAUTHBEARER token's expiry): the session's end and a
/// re-authentication in progress.
pub struct Reauth {
    expires: Instant,
    user: String,
    peer: SocketAddr,
    pending: Option<(String, Exchange)>,
}

impl Reauth {
    /// `None` when the session does not expire.
    pub fn new(
        broker: &Broker,
        principal: &KafkaPrincipal,
        peer: SocketAddr,
        credential_expiry: Option<Instant>,
    ) -> Option<Reauth> {
        if !broker.config.sasl.required() {
            return None;
        }
        let lifetime = session_lifetime(&broker.config.sasl, credential_expiry)?;
        Some(Reauth {
            expires: Instant::now() + lifetime,
            user: principal.name.clone(),
            peer,
            pending: None,
        })
    }

    /// Look at the next request: re-authentication steps are answered here (they never reach
    /// the handlers), anything else passes while the session is valid and closes after.
    pub fn intercept(
        &mut self,
        broker: &Broker,
        req: &fjord_protocol::codec::Request,
    ) -> Intercept {
        let cfg = &broker.config.sasl;
        match &req.body {
            RequestKind::SaslHandshake(r) if req.header.request_api_version >= 1 => {
                let mech = r.mechanism.to_string();
                let resp = SaslHandshakeResponse::default()
                    .with_mechanisms(cfg.mechanisms.iter().map(|m| sb(m.clone())).collect());
                match cfg
                    .mechanisms
                    .contains(&mech)
                    .then(|| Exchange::new(&mech))
                    .flatten()
                {
                    Some(exchange) => {
                        self.pending = Some((mech, exchange));
                        Intercept::Respond(Box::new(resp.into()), false)
                    }
                    None => {
                        broker
                            .metrics
                            .sasl
                            .closed
                            .with_label_values(&["unsupported_mechanism"])
                            .inc();
                        Intercept::Respond(
                            Box::new(
                                resp.with_error_code(ErrorCode::UnsupportedSaslMechanism.code())
                                    .into(),
                            ),
                            true,
                        )
                    }
                }
            }
            RequestKind::SaslAuthenticate(r) if self.pending.is_some() => {
                let (mech, exchange) = self.pending.as_mut().expect("checked");
                let mech = mech.clone();
                let failure = |f: Failure| {
                    failed(broker, self.peer, &mech, &f);
                    Intercept::Respond(
                        Box::new(
                            SaslAuthenticateResponse::default()
                                .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                                .with_error_message(Some(sb(f.message)))
                                .into(),
                        ),
                        true,
                    )
                };
                match exchange.step(broker, &r.auth_bytes) {
                    Ok(Step::Continue(token)) => Intercept::Respond(
                        Box::new(
                            SaslAuthenticateResponse::default()
                                .with_auth_bytes(Bytes::from(token))
                                .into(),
                        ),
                        false,
                    ),
                    Ok(Step::Done(token, user)) => {
                        let credential_expiry = exchange.credential_expiry();
                        self.pending = None;
                        if user != self.user {
                            return failure(Failure {
                                message: format!(
                                    "Cannot change principals during re-authentication from User:{}: User:{user}",
                                    self.user
                                ),
                                user: Some(user),
                                detail: None,
                            });
                        }
                        succeeded(broker, self.peer, &mech, user);
                        // A session without end after one that had it (PLAIN after
                        // OAUTHBEARER without connections.max.reauth.ms): Kafka's far future.
                        let lifetime = session_lifetime(cfg, credential_expiry);
                        self.expires = Instant::now()
                            + lifetime.unwrap_or(Duration::from_secs(100 * 365 * 86_400));
                        Intercept::Respond(
                            Box::new(
                                SaslAuthenticateResponse::default()
                                    .with_auth_bytes(Bytes::from(token))
                                    .with_session_lifetime_ms(lifetime_ms(lifetime))
                                    .into(),
                            ),
                            false,
                        )
                    }
                    Err(f) => {
                        self.pending = None;
                        failure(f)
                    }
                }
            }
            _ if Instant::now() >= self.expires => {
                broker
                    .metrics
                    .sasl
                    .closed
                    .with_label_values(&["session_expired"])
                    .inc();
                Intercept::Close(format!(
                    "the SASL session of User:{} expired (connections.max.reauth.ms or the token's expiry) without re-authentication",
                    self.user
                ))
            }
            _ => Intercept::Pass,
        }
    }
}

fn succeeded(broker: &Broker, peer: SocketAddr, mech: &str, user: String) -> KafkaPrincipal {
    broker
        .metrics
        .sasl
        .authentications
        .with_label_values(&[mech, "success"])
        .inc();
    tracing::debug!(%peer, mechanism = mech, user = %user, "SASL authentication succeeded");
    KafkaPrincipal::user(user)
}

fn failed(broker: &Broker, peer: SocketAddr, mech: &str, f: &Failure) {
    broker
        .metrics
        .sasl
        .authentications
        .with_label_values(&[mech, "failure"])
        .inc();
    let user: Option<String> = f.user.as_ref().map(|u| u.chars().take(256).collect());
    tracing::warn!(
        %peer,
        mechanism = mech,
        principal = user.map(|u| format!("User:{u}")).as_deref().unwrap_or("(none)"),
        reason = %f.detail.as_deref().unwrap_or(&f.message),
        "SASL authentication failed; closing connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], listener: &str) -> Result<SaslConfig, String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SaslConfig::parse(&|k| m.get(k).cloned().unwrap_or_default(), listener)
    }

    const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

    #[test]
    fn config() {
        let c = parse(&[], "PLAINTEXT").unwrap();
        assert!(!c.required());
        let c = parse(
            &[("listener.name.sasl_plaintext.plain.sasl.jaas.config", JAAS)],
            "SASL_PLAINTEXT",
        )
        .unwrap();
        assert!(c.required());
        assert_eq!(c.mechanisms, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
        assert_eq!(c.plain_users.len(), 2);
        assert_eq!(c.inter_broker.as_ref().unwrap().username, "admin");
        assert!(!format!("{c:?}").contains("secret"));
        let c = parse(
            &[
                ("listener.security.protocol.map", "CLIENT:SASL_PLAINTEXT"),
                (
                    "listener.name.client.sasl.enabled.mechanisms",
                    "SCRAM-SHA-512",
                ),
            ],
            "CLIENT",
        )
        .unwrap();
        assert!(c.required());
        assert_eq!(c.mechanisms, ["SCRAM-SHA-512"]);
        for bad in [
            vec![("sasl.enabled.mechanisms", "GSSAPI")],
            vec![("sasl.enabled.mechanisms", "PLAIN")],
            vec![("connections.max.reauth.ms", "-1")],
            vec![("sasl.jaas.config", "Module required user_a=\"b\"")],
        ] {
            assert!(parse(&bad, "SASL_PLAINTEXT").is_err(), "{bad:?}");
        }
        // SSL is a TLS listener without SASL.
        assert!(!parse(&[], "SSL").unwrap().required());
        assert!(parse(&[], "SASL_SSL").unwrap().required());
        assert!(parse(&[], "CLIENT").is_err());
        assert!(is_config_key("listener.name.client.plain.sasl.jaas.config"));
        assert!(is_config_key("sasl.enabled.mechanisms"));
        assert!(!is_config_key("listener.name.client.ssl.keystore.location"));
    }

    const EC_JWK: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    #[test]
    fn oauthbearer_config() {
        let base = [
            ("listener.security.protocol.map", "CLIENT:SASL_PLAINTEXT"),
            ("sasl.enabled.mechanisms", "OAUTHBEARER,PLAIN"),
            ("listener.name.client.plain.sasl.jaas.config", JAAS),
        ];
        // No JWKS: Kafka's unsecured validator, with its JAAS options.
        let mut pairs = base.to_vec();
        pairs.push((
            "listener.name.client.oauthbearer.sasl.jaas.config",
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredValidatorPrincipalClaimName="client_id" unsecuredValidatorAllowableClockSkewMs="5000";"#,
        ));
        let c = parse(&pairs, "CLIENT").unwrap();
        assert_eq!(c.mechanisms, ["OAUTHBEARER", "PLAIN"]);
        let o = c.oauthbearer.as_ref().unwrap();
        assert!(o.unsecured());
        assert_eq!(o.validator.sub_claim_name, "client_id");
        assert_eq!(o.validator.clock_skew_ms, 5000);
        // A JWKS file, with keys under the listener's prefixes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, EC_JWK).unwrap();
        let url = format!("file:{}", path.display());
        let mut pairs = base.to_vec();
        pairs.extend([
            ("sasl.oauthbearer.jwks.endpoint.url", url.as_str()),
            ("sasl.oauthbearer.expected.audience", "fjord, kafka"),
            (
                "listener.name.client.oauthbearer.sasl.oauthbearer.expected.issuer",
                "https://idp",
            ),
            (
                "listener.name.client.sasl.oauthbearer.sub.claim.name",
                "azp",
            ),
        ]);
        let c = parse(&pairs, "CLIENT").unwrap();
        let o = c.oauthbearer.as_ref().unwrap();
        assert!(!o.unsecured());
        assert_eq!(o.validator.expected_audience, ["fjord", "kafka"]);
        assert_eq!(o.validator.expected_issuer.as_deref(), Some("https://idp"));
        assert_eq!(o.validator.sub_claim_name, "azp");
        assert_eq!(o.validator.clock_skew_ms, 30_000);
        assert_eq!(o.refresh, Duration::from_secs(3600));
        assert!(o.validate("a.b.c", 0).is_err());
        // Unreadable or empty key sets, https, bad numbers: the broker does not start.
        std::fs::write(dir.path().join("empty.json"), r#"{"keys":[]}"#).unwrap();
        let empty = format!("{}", dir.path().join("empty.json").display());
        for (k, v) in [
            (
                "sasl.oauthbearer.jwks.endpoint.url",
                "file:/nonexistent/jwks.json",
            ),
            ("sasl.oauthbearer.jwks.endpoint.url", empty.as_str()),
            ("sasl.oauthbearer.jwks.endpoint.url", "https://idp/jwks"),
            ("sasl.oauthbearer.clock.skew.seconds", "-1"),
            ("sasl.oauthbearer.jwks.endpoint.refresh.ms", "x"),
        ] {
            let mut pairs = base.to_vec();
            if !k.ends_with(".url") {
                pairs.push(("sasl.oauthbearer.jwks.endpoint.url", url.as_str()));
            }
            pairs.push((k, v));
            assert!(parse(&pairs, "CLIENT").is_err(), "{k}={v}");
        }
        // Without OAUTHBEARER enabled nothing is read.
        let c = parse(
            &[
                ("listener.security.protocol.map", "CLIENT:SASL_PLAINTEXT"),
                ("sasl.oauthbearer.jwks.endpoint.url", "file:/nonexistent"),
            ],
            "CLIENT",
        )
        .unwrap();
        assert!(c.oauthbearer.is_none());
        for k in [
            "sasl.oauthbearer.jwks.endpoint.url",
            "sasl.oauthbearer.clock.skew.seconds",
            "listener.name.client.oauthbearer.sasl.oauthbearer.expected.audience",
            "listener.name.client.sasl.oauthbearer.expected.issuer",
            "listener.name.client.oauthbearer.sasl.jaas.config",
        ] {
            assert!(is_config_key(k), "{k}");
        }
        assert!(!is_config_key("sasl.oauthbearer.token.endpoint.urls"));
        let mut pairs = base.to_vec();
        pairs.push(("sasl.mechanism.inter.broker.protocol", "OAUTHBEARER"));
        assert!(parse(&pairs, "CLIENT").is_err());
    }

    #[test]
    fn session_lifetimes() {
        let mut c = parse(&[], "SASL_PLAINTEXT").unwrap();
        assert_eq!(session_lifetime(&c, None), None);
        let soon = Instant::now() + Duration::from_secs(60);
        let l = session_lifetime(&c, Some(soon)).unwrap();
        assert!(l <= Duration::from_secs(60) && l > Duration::from_secs(50));
        c.max_reauth = Some(Duration::from_secs(10));
        assert_eq!(
            session_lifetime(&c, Some(soon)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(session_lifetime(&c, None), Some(Duration::from_secs(10)));
        let past = Instant::now();
        assert_eq!(lifetime_ms(session_lifetime(&c, Some(past))), 1);
        assert_eq!(lifetime_ms(None), 0);
    }
}
