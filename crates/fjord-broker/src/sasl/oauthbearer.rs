//! OAUTHBEARER on the broker (KIP-255, KIP-768): its configuration, the JWKS the tokens are
//! checked against, and that set's refresh. The exchange and the checks themselves are
//! `fjord_security::sasl::oauthbearer`.
//!
//! With `sasl.oauthbearer.jwks.endpoint.url` (a `file:` URL, a path, or an `http://` URL) the
//! keys are read when the configuration is parsed (a broker that cannot read them does not
//! start) and re-read every `sasl.oauthbearer.jwks.endpoint.refresh.ms` on a thread of their
//! own, never on the async workers; a failed refresh keeps the keys held and logs an ERROR.
//! `https://` is refused: Fjord has no HTTP client with TLS (serve the set through a file).
//!
//! Without it the listener runs Kafka's default, the *unsecured* validator: `alg: none`
//! tokens whose claims are believed. A WARN says so at startup.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use fjord_security::sasl::jaas::JaasConfig;
use fjord_security::sasl::oauthbearer::{
    validate_jwt, validate_unsecured, Jwks, TokenError, ValidToken, ValidatorConfig,
};

/// The largest JWKS document read (file or HTTP body).
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Connect and read timeout of a JWKS fetch over HTTP.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `sasl.oauthbearer.*` keys, with Kafka's defaults.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("sasl.oauthbearer.jwks.endpoint.url", ""),
    ("sasl.oauthbearer.jwks.endpoint.refresh.ms", "3600000"),
    ("sasl.oauthbearer.expected.audience", ""),
    ("sasl.oauthbearer.expected.issuer", ""),
    ("sasl.oauthbearer.sub.claim.name", "sub"),
    ("sasl.oauthbearer.scope.claim.name", "scope"),
    ("sasl.oauthbearer.clock.skew.seconds", "30"),
];

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// `http://host[:port]/path`.
    Http {
        host: String,
        port: u16,
        path: String,
    },
}

impl JwksSource {
    fn parse(url: &str) -> Result<JwksSource, String> {
        if let Some(rest) = url.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| format!("invalid port in {url}"))?,
                ),
                _ => (authority, 80),
            };
            if host.is_empty() {
                return Err(format!("no host in {url}"));
            }
            return Ok(JwksSource::Http {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
                path: path.to_string(),
            });
        }
        if url.starts_with("https://") {
            return Err(
                "https:// JWKS endpoints are not supported (Fjord has no HTTP client with TLS): fetch the key set into a file and give its file: URL"
                    .into(),
            );
        }
        let path = url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("file:"));
        match path {
            Some(p) => Ok(JwksSource::File(PathBuf::from(p))),
            None if url.contains("://") => Err(format!(
                "unsupported scheme in {url}: expected file: or http://"
            )),
            None => Ok(JwksSource::File(PathBuf::from(url))),
        }
    }

    /// Read the set (blocking: on the refresh thread, or at startup).
    fn fetch(&self) -> Result<String, String> {
        match self {
            JwksSource::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let mut s = String::new();
                f.take(MAX_JWKS_BYTES + 1)
                    .read_to_string(&mut s)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                if s.len() as u64 > MAX_JWKS_BYTES {
                    return Err(format!("{}: over {MAX_JWKS_BYTES} bytes", p.display()));
                }
                Ok(s)
            }
            JwksSource::Http { host, port, path } => http_get(host, *port, path),
        }
    }
}

/// A plain HTTP/1.0 GET (no chunked encoding to decode), bounded in time and size.
fn http_get(host: &str, port: u16, path: &str) -> Result<String, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).ok();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nUser-Agent: fjord\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut body = Vec::new();
    s.take(MAX_JWKS_BYTES + 16 * 1024)
        .read_to_end(&mut body)
        .map_err(|e| format!("{addr}: {e}"))?;
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("http://{host}:{port}{path}: no HTTP response header"))?;
    let head = String::from_utf8_lossy(&body[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        let shown: String = status.chars().take(100).collect();
        return Err(format!("http://{host}:{port}{path}: {shown}"));
    }
    String::from_utf8(body[end + 4..].to_vec())
        .map_err(|_| format!("http://{host}:{port}{path}: the body is not UTF-8"))
}

/// A listener's OAUTHBEARER settings and, with a JWKS, the keys held.
pub struct OAuthBearer {
    pub validator: ValidatorConfig,
    pub jwks_source: Option<JwksSource>,
    pub refresh: Duration,
    keys: RwLock<Option<Arc<Jwks>>>,
}

impl std::fmt::Debug for OAuthBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthBearer")
            .field("validator", &self.validator)
            .field("jwks_source", &self.jwks_source)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// Two configurations are equal when their settings are (the keys held are state).
impl PartialEq for OAuthBearer {
    fn eq(&self, other: &Self) -> bool {
        self.validator == other.validator
            && self.jwks_source == other.jwks_source
            && self.refresh == other.refresh
    }
}

impl Eq for OAuthBearer {}

impl OAuthBearer {
    /// Read the settings: `get` answers a `sasl.oauthbearer.*` key with the listener's
    /// prefixes already tried, and defaults applied; `jaas` is the listener's OAUTHBEARER JAAS
    /// configuration (the unsecured validator's options). Reads the JWKS and starts its
    /// refresh when one is configured.
    pub fn parse(
        get: &dyn Fn(&str) -> String,
        jaas: Option<&JaasConfig>,
        listener: &str,
    ) -> Result<Arc<OAuthBearer>, String> {
        let url = get("sasl.oauthbearer.jwks.endpoint.url");
        let jwks_source = if url.trim().is_empty() {
            None
        } else {
            Some(JwksSource::parse(url.trim()).map_err(|e| {
                format!("invalid value for sasl.oauthbearer.jwks.endpoint.url: {e}")
            })?)
        };
        let refresh_ms = crate::config::parse_int(
            &get("sasl.oauthbearer.jwks.endpoint.refresh.ms"),
            "sasl.oauthbearer.jwks.endpoint.refresh.ms",
            1000,
            i64::MAX / 2,
        )?;
        let list = |key: &str| -> Vec<String> {
            get(key)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let validator = if jwks_source.is_some() {
            let issuer = get("sasl.oauthbearer.expected.issuer");
            ValidatorConfig {
                expected_audience: list("sasl.oauthbearer.expected.audience"),
                expected_issuer: (!issuer.trim().is_empty()).then(|| issuer.trim().to_string()),
                sub_claim_name: get("sasl.oauthbearer.sub.claim.name"),
                scope_claim_name: get("sasl.oauthbearer.scope.claim.name"),
                clock_skew_ms: crate::config::parse_int(
                    &get("sasl.oauthbearer.clock.skew.seconds"),
                    "sasl.oauthbearer.clock.skew.seconds",
                    0,
                    i32::MAX as i64,
                )? * 1000,
                required_scope: Vec::new(),
            }
        } else {
            // Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler` reads its JAAS options.
            let opt = |k: &str| jaas.and_then(|j| j.options.get(k)).cloned();
            let skew = match opt("unsecuredValidatorAllowableClockSkewMs") {
                Some(v) => v.trim().parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                    format!("invalid unsecuredValidatorAllowableClockSkewMs {v:?}: expected a non-negative number of milliseconds")
                })?,
                None => 0,
            };
            ValidatorConfig {
                expected_audience: Vec::new(),
                expected_issuer: None,
                sub_claim_name: opt("unsecuredValidatorPrincipalClaimName")
                    .unwrap_or_else(|| "sub".into()),
                scope_claim_name: opt("unsecuredValidatorScopeClaimName")
                    .unwrap_or_else(|| "scope".into()),
                clock_skew_ms: skew,
                required_scope: opt("unsecuredValidatorRequiredScope")
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
            }
        };
        if validator.sub_claim_name.trim().is_empty()
            || validator.scope_claim_name.trim().is_empty()
        {
            return Err("sasl.oauthbearer.sub.claim.name and sasl.oauthbearer.scope.claim.name must not be empty".into());
        }
        let keys = match &jwks_source {
            Some(source) => {
                let text = source.fetch().map_err(|e| {
                    format!("cannot read the JWKS of sasl.oauthbearer.jwks.endpoint.url: {e}")
                })?;
                let jwks = Jwks::parse(&text).map_err(|e| {
                    format!("invalid JWKS at sasl.oauthbearer.jwks.endpoint.url {url}: {e}")
                })?;
                Some(Arc::new(jwks))
            }
            None => None,
        };
        let oauth = Arc::new(OAuthBearer {
            validator,
            jwks_source,
            refresh: Duration::from_millis(refresh_ms as u64),
            keys: RwLock::new(keys),
        });
        if oauth.jwks_source.is_some() {
            start_refresh(&oauth, listener);
        }
        Ok(oauth)
    }

    /// Whether tokens are believed without a signature (no JWKS configured).
    pub fn unsecured(&self) -> bool {
        self.jwks_source.is_none()
    }

    /// Check a bearer token at `now_ms`.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidToken, TokenError> {
        if self.jwks_source.is_none() {
            return validate_unsecured(token, &self.validator, now_ms);
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        match keys {
            Some(keys) => validate_jwt(token, &keys, &self.validator, now_ms),
            None => Err(TokenError("no JWKS loaded".into())),
        }
    }

    /// Re-read the JWKS; on failure keep the keys held.
    fn refresh_keys(&self, listener: &str) {
        let Some(source) = &self.jwks_source else {
            return;
        };
        match source.fetch().and_then(|t| Jwks::parse(&t)) {
            Ok(jwks) => {
                tracing::debug!(
                    listener,
                    keys = jwks.len(),
                    skipped = jwks.skipped,
                    "OAUTHBEARER JWKS refreshed"
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(jwks));
            }
            Err(e) => tracing::error!(
                listener,
                error = %e,
                "OAUTHBEARER JWKS refresh failed (sasl.oauthbearer.jwks.endpoint.url); keeping the keys held"
            ),
        }
    }
}

/// Re-read the set every `refresh` on a thread of its own (file and socket reads block); the
/// thread ends once the configuration is dropped.
fn start_refresh(oauth: &Arc<OAuthBearer>, listener: &str) {
    let weak: Weak<OAuthBearer> = Arc::downgrade(oauth);
    let every = oauth.refresh;
    let listener = listener.to_string();
    let spawned = std::thread::Builder::new()
        .name("fjord-jwks-refresh".into())
        .spawn(move || loop {
            // Sleep in short steps so a dropped configuration ends the thread soon.
            let mut left = every;
            while !left.is_zero() {
                let step = left.min(Duration::from_secs(1));
                std::thread::sleep(step);
                left -= step;
                if weak.strong_count() == 0 {
                    return;
                }
            }
            let Some(oauth) = weak.upgrade() else {
                return;
            };
            oauth.refresh_keys(&listener);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the OAUTHBEARER JWKS refresh thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            JwksSource::parse("file:/etc/jwks.json").unwrap(),
            JwksSource::File("/etc/jwks.json".into())
        );
        assert_eq!(
            JwksSource::parse("file:///etc/jwks.json").unwrap(),
            JwksSource::File("/etc/jwks.json".into())
        );
        assert_eq!(
            JwksSource::parse("/etc/jwks.json").unwrap(),
            JwksSource::File("/etc/jwks.json".into())
        );
        assert_eq!(
            JwksSource::parse("http://idp:8080/keys").unwrap(),
            JwksSource::Http {
                host: "idp".into(),
                port: 8080,
                path: "/keys".into()
            }
        );
        assert_eq!(
            JwksSource::parse("http://idp").unwrap(),
            JwksSource::Http {
                host: "idp".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert!(JwksSource::parse("https://idp/keys").is_err());
        assert!(JwksSource::parse("ftp://idp/keys").is_err());
        assert!(JwksSource::parse("http://idp:x/keys").is_err());
    }

    #[test]
    fn http_fetch() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for body in [Some(r#"{"keys":[]}"#), None] {
                let (mut c, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0);
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(req.starts_with(b"GET /jwks HTTP/1.0\r\n"));
                let resp = match body {
                    Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
                    None => "HTTP/1.1 404 Not Found\r\n\r\n".to_string(),
                };
                c.write_all(resp.as_bytes()).unwrap();
            }
        });
        assert_eq!(
            http_get("127.0.0.1", port, "/jwks").unwrap(),
            r#"{"keys":[]}"#
        );
        assert!(http_get("127.0.0.1", port, "/jwks")
            .unwrap_err()
            .contains("404"));
        server.join().unwrap();
    }
}
