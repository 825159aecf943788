//! TLS for SSL and SASL_SSL listeners with `rustls`, configured with Kafka's keys (PEM
//! stores, KIP-651), per listener as Kafka reads them: `listener.name.<name>.ssl.*` first, then
//! `ssl.*`.
//!
//! - `ssl.keystore.type` = `PEM` (the only type: JKS and PKCS12 are refused with a message that
//!   says how to convert); `ssl.keystore.location` is a PEM file with the private key and the
//!   certificate chain, or `ssl.keystore.key` and `ssl.keystore.certificate.chain` hold them
//!   inline; `ssl.key.password` decrypts an encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`).
//! - `ssl.truststore.location` (or inline `ssl.truststore.certificates`): the CAs that client
//!   certificates must chain to.
//! - `ssl.client.auth` = `none` | `requested` | `required` (mutual TLS).
//! - `ssl.enabled.protocols` (`TLSv1.2,TLSv1.3`).
//! - `ssl.principal.mapping.rules`: a client certificate's subject to a user name.
//!
//! The certificates are reloaded without a restart: [`TlsListener::reload_if_changed`]
//! rebuilds the configuration when a store file's modification time or size changes, and
//! keeps serving the old one (with an error logged) when the new files do not load. New
//! connections use the new certificates; open ones keep theirs, as in Kafka.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use fjord_security::ssl_principal::{certificate_subject, SslPrincipalMapper};
use fjord_security::KafkaPrincipal;
use parking_lot::RwLock;
use prometheus::{IntCounterVec, Opts, Registry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The keys [`TlsSettings::from_config`] reads, each also under `listener.name.<l>.`; other
/// `ssl.*` keys Kafka has (cipher suites, key managers, JKS passwords) are accepted and ignored
/// so an operator's file loads, with the ones that matter for PEM stores honoured.
const KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.truststore.password",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.protocol",
    "ssl.principal.mapping.rules",
    "ssl.endpoint.identification.algorithm",
    "ssl.cipher.suites",
];

/// Whether `key` is a TLS key (for the broker's unknown-key check).
pub fn is_config_key(key: &str) -> bool {
    let bare = key
        .strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
        .map_or(key, |(_, suffix)| suffix);
    KEYS.contains(&bare)
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// Where a PEM store comes from.
#[derive(Debug, Clone, PartialEq)]
enum Pem {
    File(PathBuf),
    Inline(String),
}

/// One listener's TLS settings, as configured (files are read by [`TlsSettings::load`]).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    listener: String,
    /// Key and certificate chain: one file, or the key and the chain inline.
    keystore: (Pem, Option<Pem>),
    key_password: Option<String>,
    truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    tls12: bool,
    tls13: bool,
    pub principal_mapper: SslPrincipalMapper,
}

impl TlsSettings {
    /// Read `listener`'s TLS settings through `get` (a config lookup by Kafka key). Errors
    /// name the key.
    pub fn from_config(
        listener: &str,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TlsSettings, String> {
        let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
        let key = |k: &str| {
            get(&format!("{prefix}{k}"))
                .or_else(|| get(k))
                .filter(|v| !v.trim().is_empty())
        };
        let store_type = key("ssl.keystore.type").unwrap_or_else(|| "PEM".into());
        if !store_type.eq_ignore_ascii_case("PEM") {
            return Err(format!(
                "invalid value {store_type:?} for ssl.keystore.type of listener {listener}: only PEM \
                 stores are supported (convert with `openssl pkcs12 -in store.p12 -nodes -out store.pem`)"
            ));
        }
        if let Some(t) = key("ssl.truststore.type").filter(|t| !t.eq_ignore_ascii_case("PEM")) {
            return Err(format!(
                "invalid value {t:?} for ssl.truststore.type of listener {listener}: only PEM stores are supported"
            ));
        }
        let keystore = match (
            key("ssl.keystore.location"),
            key("ssl.keystore.key"),
            key("ssl.keystore.certificate.chain"),
        ) {
            (Some(path), None, None) => (Pem::File(path.into()), None),
            (None, Some(k), Some(chain)) => (Pem::Inline(k), Some(Pem::Inline(chain))),
            (None, None, None) => {
                return Err(format!(
                    "listener {listener} uses TLS but has no ssl.keystore.location (or \
                     ssl.keystore.key and ssl.keystore.certificate.chain)"
                ))
            }
            _ => {
                return Err(format!(
                    "listener {listener}: set either ssl.keystore.location or both \
                     ssl.keystore.key and ssl.keystore.certificate.chain"
                ))
            }
        };
        let truststore = match (
            key("ssl.truststore.location"),
            key("ssl.truststore.certificates"),
        ) {
            (Some(p), None) => Some(Pem::File(p.into())),
            (None, Some(c)) => Some(Pem::Inline(c)),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "listener {listener}: set either ssl.truststore.location or ssl.truststore.certificates"
                ))
            }
        };
        let client_auth = match key("ssl.client.auth").as_deref().map(str::trim) {
            None | Some("none") => ClientAuth::None,
            Some("requested") => ClientAuth::Requested,
            Some("required") => ClientAuth::Required,
            Some(other) => {
                return Err(format!(
                "invalid value {other:?} for ssl.client.auth: expected required, requested or none"
            ))
            }
        };
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(format!(
                "listener {listener}: ssl.client.auth={} needs ssl.truststore.location to verify client certificates",
                if client_auth == ClientAuth::Required { "required" } else { "requested" }
            ));
        }
        let protocols = key("ssl.enabled.protocols").unwrap_or_else(|| "TLSv1.2,TLSv1.3".into());
        let (mut tls12, mut tls13) = (false, false);
        for p in protocols
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match p {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "TLSv1" | "TLSv1.1" | "SSLv3" => {
                    tracing::warn!(listener, protocol = p, "ssl.enabled.protocols names an insecure protocol; it is not offered")
                }
                other => {
                    return Err(format!(
                        "invalid value {protocols:?} for ssl.enabled.protocols: unknown protocol {other:?}"
                    ))
                }
            }
        }
        if !tls12 && !tls13 {
            return Err(format!(
                "invalid value {protocols:?} for ssl.enabled.protocols: enable TLSv1.2 or TLSv1.3"
            ));
        }
        let principal_mapper = SslPrincipalMapper::parse(
            &key("ssl.principal.mapping.rules").unwrap_or_else(|| "DEFAULT".into()),
        )?;
        Ok(TlsSettings {
            listener: listener.to_string(),
            keystore,
            key_password: key("ssl.key.password"),
            truststore,
            client_auth,
            tls12,
            tls13,
            principal_mapper,
        })
    }

    /// The files this configuration reads, for reload.
    fn files(&self) -> Vec<PathBuf> {
        [
            Some(&self.keystore.0),
            self.keystore.1.as_ref(),
            self.truststore.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Pem::File(f) => Some(f.clone()),
            Pem::Inline(_) => None,
        })
        .collect()
    }

    /// Read the stores and build the rustls configuration (blocking file reads: call at
    /// startup or off the async workers).
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        let listener = &self.listener;
        let read = |p: &Pem| -> Result<Vec<u8>, String> {
            match p {
                Pem::File(f) => std::fs::read(f)
                    .map_err(|e| format!("listener {listener}: cannot read {}: {e}", f.display())),
                Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
            }
        };
        let key_pem = read(&self.keystore.0)?;
        let chain_pem = match &self.keystore.1 {
            Some(c) => read(c)?,
            None => key_pem.clone(),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("listener {listener}: keystore certificates: {e}"))?;
        if chain.is_empty() {
            return Err(format!(
                "listener {listener}: the keystore holds no certificate"
            ));
        }
        let key = fjord_client::tls::private_key(&key_pem, self.key_password.as_deref())
            .map_err(|e| format!("listener {listener}: keystore key: {e}"))?;
        let provider = Arc::new(crypto_provider());
        let mut versions = Vec::new();
        if self.tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("listener {listener}: {e}"))?;
        let builder = match (&self.truststore, self.client_auth) {
            (Some(trust), auth) if auth != ClientAuth::None => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(trust)?) {
                    let c = c.map_err(|e| format!("listener {listener}: truststore: {e}"))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("listener {listener}: truststore: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "listener {listener}: the truststore holds no certificate"
                    ));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("listener {listener}: truststore: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("listener {listener}: keystore: {e}"))?;
        Ok(Arc::new(config))
    }
}

/// A TLS listener's current configuration, swapped on reload.
pub struct TlsListener {
    settings: TlsSettings,
    config: RwLock<Arc<ServerConfig>>,
    /// The stores' (modification time, size) when `config` was built.
    stamp: RwLock<Vec<Option<(SystemTime, u64)>>>,
}

impl TlsListener {
    /// Load the stores now (startup: an error stops the broker with its message).
    pub fn new(settings: TlsSettings) -> Result<TlsListener, String> {
        let stamp = file_stamps(&settings.files());
        let config = settings.load()?;
        Ok(TlsListener {
            settings,
            config: RwLock::new(config),
            stamp: RwLock::new(stamp),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// An acceptor with the current certificates.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().clone())
    }

    /// Rebuild the configuration if a store file changed (blocking reads: run off the async
    /// workers). `Ok(true)`: reloaded; `Err`: the new files do not load and the old
    /// certificates stay in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = file_stamps(&self.settings.files());
        if *self.stamp.read() == now {
            return Ok(false);
        }
        // Remember the stamp even when loading fails, so a bad file is reported once, not on
        // every check; fixing it changes the stamp again.
        *self.stamp.write() = now;
        let config = self.settings.load()?;
        *self.config.write() = config;
        Ok(true)
    }

    /// The principal of a handshaken connection: `User:<mapped subject>` of the client's
    /// certificate, `User:ANONYMOUS` without one (`ssl.client.auth` none or requested), or an
    /// error when no mapping rule applies.
    pub fn principal(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<KafkaPrincipal, String> {
        let Some(cert) = peer_certificates.and_then(|c| c.first()) else {
            return Ok(KafkaPrincipal::anonymous());
        };
        let dn = certificate_subject(cert.as_ref())?;
        self.settings
            .principal_mapper
            .name(&dn)
            .map(KafkaPrincipal::user)
            .ok_or_else(|| format!("no ssl.principal.mapping.rules rule applies to {dn:?}"))
    }
}

/// The client side of this broker towards other brokers' TLS listeners, from the listener's own
/// keys as Kafka does: its truststore verifies the peers and its keystore is the client
/// certificate (for peers with `ssl.client.auth=required`); `ssl.endpoint.identification.algorithm`
/// applies. A single node without a truststore trusts its own keystore's certificates, so the
/// connections it makes to itself (transaction markers) work; a cluster must have one.
pub fn inter_broker_client(
    get: &dyn Fn(&str) -> Option<String>,
    listener: &str,
    cluster: bool,
) -> Result<fjord_client::TlsClient, String> {
    let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
    let key = |k: &str| get(&format!("{prefix}{k}")).or_else(|| get(k));
    let has_truststore =
        key("ssl.truststore.location").is_some() || key("ssl.truststore.certificates").is_some();
    if !has_truststore && cluster {
        return Err(format!(
            "listener {listener} is TLS but has no ssl.truststore.location: brokers verify each \
             other with it (the CA that signed the brokers' certificates)"
        ));
    }
    let lookup = |k: &str| -> Option<String> {
        match k {
            "security.protocol" => Some("SSL".into()),
            "ssl.truststore.location" if !has_truststore => key("ssl.keystore.location"),
            "ssl.truststore.certificates" if !has_truststore => {
                key("ssl.keystore.certificate.chain")
            }
            _ => key(k),
        }
    };
    fjord_client::TlsClient::from_properties(&lookup)
        .map_err(|e| format!("listener {listener}: connections to other brokers: {e}"))
}

/// TLS of the controller listener, when `listener.security.protocol.map` maps the first of
/// `controller.listener.names` to `SSL`: the server side on a controller, and on every node the
/// client side towards the controllers (Kafka's brokers, too, read the controller listener's
/// `listener.name.<controller>.ssl.*` keys to reach the quorum).
#[derive(Debug, Clone)]
pub struct ControllerTls {
    /// The listener's settings on a node that runs a controller.
    pub server: Option<TlsSettings>,
    pub client: fjord_client::TlsClient,
}

/// Read the controller listener's TLS (`None`: it is PLAINTEXT).
pub fn controller_tls(
    get: &dyn Fn(&str) -> Option<String>,
    controller_names: &[String],
    is_controller: bool,
) -> Result<Option<ControllerTls>, String> {
    let Some(name) = controller_names.first() else {
        return Ok(None);
    };
    let map = get("listener.security.protocol.map").unwrap_or_default();
    match crate::sasl::protocol_of(&map, name)?.as_str() {
        "PLAINTEXT" => Ok(None),
        "SSL" => {
            let server = if is_controller {
                let settings = TlsSettings::from_config(name, get)?;
                settings.load()?;
                Some(settings)
            } else {
                None
            };
            let client = inter_broker_client(get, name, true)?;
            Ok(Some(ControllerTls { server, client }))
        }
        other => Err(format!(
            "controller listener {name} has security protocol {other}: the controller listener \
             takes PLAINTEXT or SSL (use SSL with ssl.client.auth=required to admit only nodes \
             with a certificate)"
        )),
    }
}

impl TlsListener {
    /// The current server configuration (the controller listener's acceptor takes it per
    /// connection).
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.read().clone()
    }
}

/// This broker's TLS client towards other brokers, when its listener is TLS.
pub fn inter_broker(broker: &crate::broker::Broker) -> Option<fjord_client::TlsClient> {
    broker.config.inter_broker_tls.clone()
}

/// Look for changed store files every `every` (off the async workers) and swap them in: new
/// connections get the new certificates, open ones keep theirs. Runs until dropped.
pub async fn reload_loop(
    tls: Arc<TlsListener>,
    listener: String,
    reloads: Option<IntCounterVec>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let t = tls.clone();
        let Ok(result) = tokio::task::spawn_blocking(move || t.reload_if_changed()).await else {
            continue;
        };
        let count = |r: &str| {
            if let Some(c) = &reloads {
                c.with_label_values(&[r]).inc();
            }
        };
        match result {
            Ok(false) => {}
            Ok(true) => {
                count("success");
                tracing::info!(%listener, "TLS certificates reloaded: new connections use them");
            }
            Err(e) => {
                count("failure");
                tracing::error!(%listener, error = %e, "TLS certificates changed but do not load: still serving the previous ones");
            }
        }
    }
}

/// TLS metrics.
pub struct TlsMetrics {
    /// Handshakes on the TLS listener by `result`: `success`, or why it failed (`not_tls`,
    /// `timeout`, `error`, `principal`, `eof`, `io`).
    pub handshakes: IntCounterVec,
    /// Certificate reloads by `result` (`success`, `failure`).
    pub reloads: IntCounterVec,
}

impl TlsMetrics {
    pub fn new(registry: &Registry) -> TlsMetrics {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "tls_handshakes_total",
                "TLS handshakes on this broker's listener, by result (success, or the failure: not_tls, timeout, error, principal, eof, io)",
            ),
            &["result"],
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "tls_certificate_reloads_total",
                "Reloads of the listener's keystore and truststore after their files changed, by result (success, failure: the old certificates stay in use)",
            ),
            &["result"],
        )
        .expect("metric");
        for r in ["success", "not_tls", "timeout", "error", "principal", "eof"] {
            handshakes.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            reloads.with_label_values(&[r]);
        }
        registry
            .register(Box::new(handshakes.clone()))
            .expect("register");
        registry
            .register(Box::new(reloads.clone()))
            .expect("register");
        TlsMetrics {
            handshakes,
            reloads,
        }
    }
}

/// rustls with *ring* (no C toolchain beyond `cc`), the same provider as the clients'
/// (`fjord_client::tls::crypto_provider`).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    fjord_client::tls::crypto_provider()
}

fn file_stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Pki {
        fn new() -> Pki {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test CA");
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let ca = params.self_signed(&ca_key).unwrap();
            Pki { ca, ca_key }
        }

        /// (certificate PEM, key PEM) for `cn`, signed by the CA.
        fn issue(&self, cn: &str, names: &[&str]) -> (String, String) {
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "Acme");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn settings(map: &HashMap<&str, String>) -> Result<TlsSettings, String> {
        TlsSettings::from_config("SSL", &|k| map.get(k).cloned())
    }

    /// A TLS server on loopback with `listener`'s current config; a client handshake with
    /// `client`; the server's view of the principal and what the client read back.
    async fn handshake(
        listener: &TlsListener,
        client: rustls::ClientConfig,
    ) -> (
        Result<KafkaPrincipal, String>,
        Result<Vec<u8>, std::io::Error>,
    ) {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let acceptor = listener.acceptor();
        let serve = async {
            let (tcp, _) = server.accept().await.unwrap();
            match acceptor.accept(tcp).await {
                Ok(mut tls) => {
                    let principal = listener.principal(tls.get_ref().1.peer_certificates());
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                    principal
                }
                Err(e) => Err(format!("handshake: {e}")),
            }
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok(buf)
        };
        tokio::join!(serve, connect)
    }

    fn client_config(pki: &Pki, identity: Option<(String, String)>) -> rustls::ClientConfig {
        let provider = Arc::new(crypto_provider());
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match identity {
            None => b.with_no_client_auth(),
            Some((cert, key)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        }
    }

    #[tokio::test]
    async fn mutual_tls_maps_the_client_certificate_to_a_principal() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (cert, key) = pki.issue("broker", &["localhost"]);
        let store = dir.path().join("broker.pem");
        std::fs::write(&store, format!("{key}{cert}")).unwrap();
        let trust = dir.path().join("ca.pem");
        std::fs::write(&trust, pki.ca.pem()).unwrap();
        let map: HashMap<&str, String> = [
            (
                "listener.name.ssl.ssl.keystore.location",
                store.display().to_string(),
            ),
            ("ssl.truststore.location", trust.display().to_string()),
            ("ssl.client.auth", "required".into()),
            (
                "ssl.principal.mapping.rules",
                "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT".into(),
            ),
        ]
        .into_iter()
        .collect();
        let listener = TlsListener::new(settings(&map).unwrap()).unwrap();

        let (principal, read) = handshake(
            &listener,
            client_config(&pki, Some(pki.issue("Alice", &[]))),
        )
        .await;
        assert_eq!(principal.unwrap(), KafkaPrincipal::user("alice"));
        assert_eq!(read.unwrap(), b"hello");

        // Required: a client without a certificate is refused.
        let (principal, _) = handshake(&listener, client_config(&pki, None)).await;
        assert!(principal.is_err(), "{principal:?}");

        // A certificate from another CA is refused.
        let other = Pki::new();
        let (principal, _) = handshake(
            &listener,
            client_config(&pki, Some(other.issue("mallory", &[]))),
        )
        .await;
        assert!(principal.is_err(), "{principal:?}");
    }

    #[tokio::test]
    async fn requested_client_auth_lets_anonymous_in_and_reload_swaps_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (cert, key) = pki.issue("broker", &["localhost"]);
        let store = dir.path().join("broker.pem");
        std::fs::write(&store, format!("{cert}{key}")).unwrap();
        let trust = dir.path().join("ca.pem");
        std::fs::write(&trust, pki.ca.pem()).unwrap();
        let map: HashMap<&str, String> = [
            ("ssl.keystore.location", store.display().to_string()),
            ("ssl.truststore.location", trust.display().to_string()),
            ("ssl.client.auth", "requested".into()),
        ]
        .into_iter()
        .collect();
        let listener = TlsListener::new(settings(&map).unwrap()).unwrap();
        let (principal, _) = handshake(&listener, client_config(&pki, None)).await;
        assert_eq!(principal.unwrap(), KafkaPrincipal::anonymous());
        let (principal, _) =
            handshake(&listener, client_config(&pki, Some(pki.issue("bob", &[])))).await;
        assert_eq!(principal.unwrap(), KafkaPrincipal::user("CN=bob,O=Acme"));

        assert!(!listener.reload_if_changed().unwrap(), "nothing changed");
        // A broken store is reported and the old certificates stay in use.
        std::fs::write(&store, "garbage").unwrap();
        assert!(listener.reload_if_changed().is_err());
        let (_, read) = handshake(&listener, client_config(&pki, None)).await;
        assert_eq!(read.unwrap(), b"hello");
        // A store from a new CA: clients trusting only the old CA are refused after reload.
        let new_pki = Pki::new();
        let (cert, key) = new_pki.issue("broker", &["localhost"]);
        std::fs::write(&store, format!("{cert}{key}")).unwrap();
        assert!(listener.reload_if_changed().unwrap());
        let (_, read) = handshake(&listener, client_config(&pki, None)).await;
        assert!(read.is_err(), "the old CA no longer verifies the broker");
        let (_, read) = handshake(&listener, client_config(&new_pki, None)).await;
        assert_eq!(read.unwrap(), b"hello");
    }

    #[test]
    fn encrypted_keys_need_the_password() {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = key.serialize_der();
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        let encrypted = info
            .encrypt(rand::thread_rng(), "s3cret")
            .unwrap()
            .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
            .unwrap();
        assert!(fjord_client::tls::private_key(encrypted.as_bytes(), Some("s3cret")).is_ok());
        assert!(fjord_client::tls::private_key(encrypted.as_bytes(), Some("wrong")).is_err());
        let e = fjord_client::tls::private_key(encrypted.as_bytes(), None).unwrap_err();
        assert!(e.contains("ssl.key.password"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut map: HashMap<&str, String> = HashMap::new();
        assert!(settings(&map)
            .unwrap_err()
            .contains("ssl.keystore.location"));
        map.insert("ssl.keystore.location", "/nonexistent.pem".into());
        map.insert("ssl.keystore.type", "JKS".into());
        assert!(settings(&map).unwrap_err().contains("ssl.keystore.type"));
        map.remove("ssl.keystore.type");
        map.insert("ssl.client.auth", "required".into());
        assert!(settings(&map)
            .unwrap_err()
            .contains("ssl.truststore.location"));
        map.insert("ssl.client.auth", "maybe".into());
        assert!(settings(&map).unwrap_err().contains("ssl.client.auth"));
        map.remove("ssl.client.auth");
        map.insert("ssl.enabled.protocols", "TLSv1.1".into());
        assert!(settings(&map)
            .unwrap_err()
            .contains("ssl.enabled.protocols"));
        map.remove("ssl.enabled.protocols");
        let s = settings(&map).unwrap();
        assert!(s.load().unwrap_err().contains("/nonexistent.pem"));
    }
}
