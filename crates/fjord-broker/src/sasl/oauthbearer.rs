//! OAUTHBEARER on the broker (KIP-255, KIP-768): its configuration, the JWKS the tokens are
//! checked against, and that set's refresh. The exchange and the checks themselves are
//! `fjord_security::sasl::oauthbearer`.
//!
//! With `sasl.oauthbearer.jwks.endpoint.url` (a `file:` URL, a path, or an `http(s)://` URL) the
//! keys are read when the configuration is parsed (a broker that cannot read them does not
//! start) and re-read every `sasl.oauthbearer.jwks.endpoint.refresh.ms` on a thread of their
//! own, never on the async workers; a failed refresh keeps the keys held and logs an ERROR.
//! An `https://` endpoint is verified against `SSL_CERT_FILE`, else the system's CA bundle,
//! else Mozilla's roots.
//!
//! Without it the listener runs Kafka's default, the *unsecured* validator: `alg: none`
//! tokens whose claims are believed. A WARN says so at startup.

use std::io::Read;
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
    /// An `http://` or `https://` URL.
    Url(String),
}

impl JwksSource {
    fn parse(url: &str) -> Result<JwksSource, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            let uri: ureq::http::Uri =
                url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("no host in {url}"));
            }
            let authority = uri.authority().map_or("", |a| a.as_str());
            let host_port = authority.rsplit('@').next().unwrap_or(authority);
            if host_port.contains(':') && !host_port.ends_with(']') && uri.port_u16().is_none() {
                return Err(format!("invalid port in {url}"));
            }
            return Ok(JwksSource::Url(url.to_string()));
        }
        let path = url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("file:"));
        match path {
            Some(p) => Ok(JwksSource::File(PathBuf::from(p))),
            None if url.contains("://") => Err(format!(
                "unsupported scheme in {url}: expected file:, http:// or https://"
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
            JwksSource::Url(url) => http_get(url, &system_roots()),
        }
    }
}

/// The CAs an `https://` JWKS endpoint is checked against: the PEM file named by
/// `SSL_CERT_FILE`, else the system's bundle (where operators install internal CAs), else
/// Mozilla's roots built in.
fn system_roots() -> ureq::tls::RootCerts {
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let bundles = BUNDLES.iter().map(PathBuf::from);
    for path in env.into_iter().chain(bundles) {
        if let Ok(pem) = std::fs::read(path) {
            if let Some(roots) = pem_roots(&pem) {
                return roots;
            }
        }
    }
    ureq::tls::RootCerts::WebPki
}

/// The certificates of a PEM bundle as roots (`None` when it holds none).
fn pem_roots(pem: &[u8]) -> Option<ureq::tls::RootCerts> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<ureq::tls::Certificate<'static>> =
        rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
    (!certs.is_empty()).then(|| ureq::tls::RootCerts::Specific(Arc::new(certs)))
}

/// GET `url` (http or https), bounded in time and size.
fn http_get(url: &str, roots: &ureq::tls::RootCerts) -> Result<String, String> {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(roots.clone())
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let mut response = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))
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
            JwksSource::Url("http://idp:8080/keys".into())
        );
        assert_eq!(
            JwksSource::parse("https://idp.example/.well-known/jwks.json").unwrap(),
            JwksSource::Url("https://idp.example/.well-known/jwks.json".into())
        );
        assert!(JwksSource::parse("https:///keys").is_err());
        assert!(JwksSource::parse("ftp://idp/keys").is_err());
        assert!(JwksSource::parse("http://idp:x/keys").is_err());
    }

    /// Serve `responses` one connection each on `listener`, through TLS when `tls` is set;
    /// each request must be a GET of /jwks.
    fn serve(
        listener: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        responses: Vec<String>,
    ) -> std::thread::JoinHandle<()> {
        use std::io::Write;
        std::thread::spawn(move || {
            for resp in responses {
                let (tcp, _) = listener.accept().unwrap();
                let mut stream: Box<dyn ReadWrite> = match &tls {
                    Some(cfg) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(cfg.clone()).unwrap(),
                        tcp,
                    )),
                    None => Box::new(tcp),
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.is_empty() {
                    continue; // a refused handshake
                }
                assert!(req.starts_with(b"GET /jwks HTTP/1.1\r\n"), "{req:?}");
                stream.write_all(resp.as_bytes()).unwrap();
                stream.flush().unwrap();
            }
        })
    }

    trait ReadWrite: Read + std::io::Write {}
    impl<T: Read + std::io::Write> ReadWrite for T {}

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn http_fetch() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let server = serve(
            listener,
            None,
            vec![
                ok(r#"{"keys":[]}"#),
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            ],
        );
        let roots = ureq::tls::RootCerts::WebPki;
        assert_eq!(http_get(&url, &roots).unwrap(), r#"{"keys":[]}"#);
        assert!(http_get(&url, &roots).unwrap_err().contains("404"));
        server.join().unwrap();
    }

    #[test]
    fn https_fetch_checks_the_server_certificate() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let server_config =
            rustls::ServerConfig::builder_with_provider(Arc::new(crate::tls::crypto_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/jwks", listener.local_addr().unwrap());
        let server = serve(
            listener,
            Some(Arc::new(server_config)),
            vec![ok(r#"{"keys":[]}"#), String::new()],
        );
        let trusted = pem_roots(ca.pem().as_bytes()).unwrap();
        assert_eq!(http_get(&url, &trusted).unwrap(), r#"{"keys":[]}"#);
        // Mozilla's roots do not know the test CA.
        let e = http_get(&url, &ureq::tls::RootCerts::WebPki).unwrap_err();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        server.join().unwrap();
    }
}
