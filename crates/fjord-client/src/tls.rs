//! TLS for client connections (`security.protocol` SSL and SASL_SSL) with rustls, configured
//! with Kafka's client keys (PEM stores, KIP-651):
//!
//! - `ssl.truststore.location` (a PEM file) or `ssl.truststore.certificates` (inline PEM): the
//!   CAs the brokers' certificates must chain to. Required: the client has no built-in roots.
//! - `ssl.keystore.location` (PEM with the private key and the certificate chain), or inline
//!   `ssl.keystore.key` and `ssl.keystore.certificate.chain`: the client certificate for mutual
//!   TLS; `ssl.key.password` decrypts an `ENCRYPTED PRIVATE KEY` (PKCS#8).
//! - `ssl.truststore.type` / `ssl.keystore.type`: `PEM` only (JKS and PKCS12 are refused with a
//!   message that says how to convert).
//! - `ssl.endpoint.identification.algorithm`: `https` (the default) checks that the broker's
//!   certificate names the host connected to; empty checks the chain only, as Kafka.
//! - `ssl.enabled.protocols`: `TLSv1.2,TLSv1.3` (older ones are not offered).
//!
//! Inline PEM may come joined onto one line (a properties value continued with `\`), so every
//! store is re-wrapped into canonical PEM before it is parsed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, Result};

/// The TLS side of a client connection: the rustls configuration every connection handshakes
/// with (cheap to clone). `Debug` shows no key material.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Use a rustls configuration built elsewhere.
    pub fn new(config: Arc<ClientConfig>) -> TlsClient {
        TlsClient { config }
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Build from Kafka's client keys, looked up through `get` (`ssl.truststore.location`, ...).
    /// Reads the store files: blocking, so call at startup or off the async workers. Errors name
    /// the key.
    pub fn from_properties(get: &dyn Fn(&str) -> Option<String>) -> Result<TlsClient> {
        from_properties(get).map_err(Error::Invalid)
    }
}

const TRUSTSTORE_HINT: &str = "convert a JKS or PKCS12 truststore with `keytool -exportcert -rfc \
    -keystore truststore.jks -alias <alias> -file ca.pem` or `openssl pkcs12 -in truststore.p12 \
    -nokeys -out ca.pem`";
const KEYSTORE_HINT: &str = "convert a PKCS12 keystore with `openssl pkcs12 -in keystore.p12 \
    -nodes -out keystore.pem` (a JKS one first with `keytool -importkeystore -srckeystore \
    keystore.jks -destkeystore keystore.p12 -deststoretype PKCS12`)";

fn from_properties(get: &dyn Fn(&str) -> Option<String>) -> Result<TlsClient, String> {
    let key = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    for (type_key, hint) in [
        ("ssl.truststore.type", TRUSTSTORE_HINT),
        ("ssl.keystore.type", KEYSTORE_HINT),
    ] {
        if let Some(t) = key(type_key).filter(|t| !t.trim().eq_ignore_ascii_case("PEM")) {
            return Err(format!(
                "invalid value {t:?} for {type_key}: only PEM stores are supported ({hint})"
            ));
        }
    }

    let trust_pem = match (
        key("ssl.truststore.location"),
        key("ssl.truststore.certificates"),
    ) {
        (Some(path), None) => read_store("ssl.truststore.location", &path, TRUSTSTORE_HINT)?,
        (None, Some(inline)) => pem("ssl.truststore.certificates", &inline)?,
        (None, None) => {
            let protocol = key("security.protocol").unwrap_or_else(|| "SSL".into());
            return Err(format!(
                "security.protocol={protocol} needs ssl.truststore.location (a PEM file of the CA \
                 certificates that signed the brokers' certificates) or \
                 ssl.truststore.certificates: there are no built-in trusted roots"
            ));
        }
        (Some(_), Some(_)) => {
            return Err(
                "set either ssl.truststore.location or ssl.truststore.certificates, not both"
                    .into(),
            )
        }
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trust_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("truststore: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("truststore: a certificate is not usable as a CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the truststore (ssl.truststore.*) holds no certificate".into());
    }

    let identity = match (
        key("ssl.keystore.location"),
        key("ssl.keystore.key"),
        key("ssl.keystore.certificate.chain"),
    ) {
        (None, None, None) => None,
        (Some(path), None, None) => {
            let store = read_store("ssl.keystore.location", &path, KEYSTORE_HINT)?;
            Some(("ssl.keystore.location", store.clone(), store))
        }
        (None, Some(k), Some(chain)) => Some((
            "ssl.keystore.key",
            pem("ssl.keystore.key", &k)?,
            pem("ssl.keystore.certificate.chain", &chain)?,
        )),
        _ => {
            return Err(
                "set either ssl.keystore.location or both ssl.keystore.key and \
                 ssl.keystore.certificate.chain"
                    .into(),
            )
        }
    };

    let verify_host_name = match get("ssl.endpoint.identification.algorithm")
        .map(|a| a.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("https") => true,
        Some("") => false,
        Some(other) => {
            return Err(format!(
                "invalid value {other:?} for ssl.endpoint.identification.algorithm: expected \
                 https (check the broker's host name) or empty (do not)"
            ))
        }
    };

    let protocols = key("ssl.enabled.protocols").unwrap_or_else(|| "TLSv1.2,TLSv1.3".into());
    let mut versions = Vec::new();
    for p in protocols
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match p {
            "TLSv1.3" => versions.push(&rustls::version::TLS13),
            "TLSv1.2" => versions.push(&rustls::version::TLS12),
            "TLSv1" | "TLSv1.1" | "SSLv3" => tracing::warn!(
                protocol = p,
                "ssl.enabled.protocols names an insecure protocol; it is not offered"
            ),
            other => {
                return Err(format!(
                "invalid value {protocols:?} for ssl.enabled.protocols: unknown protocol {other:?}"
            ))
            }
        }
    }
    if versions.is_empty() {
        return Err(format!(
            "invalid value {protocols:?} for ssl.enabled.protocols: enable TLSv1.2 or TLSv1.3"
        ));
    }

    let provider = Arc::new(crypto_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabled.protocols: {e}"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("truststore: {e}"))?;
    let builder = if verify_host_name {
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier(verifier)))
    };
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((key_name, key_pem, chain_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("keystore certificates: {e}"))?;
            if chain.is_empty() {
                return Err(format!("{key_name}: the keystore holds no certificate"));
            }
            let private_key = private_key(key_pem.as_bytes(), key("ssl.key.password").as_deref())
                .map_err(|e| format!("{key_name}: {e}"))?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| format!("{key_name}: {e}"))?
        }
    };
    Ok(TlsClient::new(Arc::new(config)))
}

/// Read the store file `path` given by `key` as canonical PEM.
fn read_store(key: &str, path: &str, hint: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{key}: cannot read {path}: {e}"))?;
    let text = String::from_utf8(bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN "));
    let text = text.ok_or_else(|| format!("{key}: {path} is not a PEM file (PEM only: {hint})"))?;
    pem(&format!("{key} {path}"), &text)
}

/// `text` re-wrapped as canonical PEM: each `-----BEGIN X-----` ... `-----END X-----` block on
/// its own lines with the base64 in 64-character lines, whatever whitespace it came with (Kafka
/// accepts a PEM value joined onto one line; rustls's and pkcs8's parsers want lines). Text
/// between blocks (openssl's "Bag Attributes") is dropped.
fn pem(what: &str, text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 64);
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| format!("{what}: a BEGIN line without its closing dashes"))?;
        let label = &after[..label_end];
        let body = &after[label_end + "-----".len()..];
        let end_line = format!("-----END {label}-----");
        let end = body
            .find(&end_line)
            .ok_or_else(|| format!("{what}: a {label} block without its END line"))?;
        if body[..end].contains("Proc-Type:") {
            return Err(format!(
                "{what}: a legacy OpenSSL-encrypted {label}: convert it to PKCS#8 with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-pkcs8.pem`"
            ));
        }
        let base64: Vec<u8> = body[..end]
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if !base64
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(format!("{what}: the {label} block is not base64"));
        }
        out.push_str("-----BEGIN ");
        out.push_str(label);
        out.push_str("-----\n");
        for line in base64.chunks(64) {
            // Checked above: ASCII only.
            out.extend(line.iter().map(|&b| b as char));
            out.push('\n');
        }
        out.push_str(&end_line);
        out.push('\n');
        rest = &body[end + end_line.len()..];
    }
    if out.is_empty() {
        return Err(format!("{what}: no PEM block (-----BEGIN ...-----)"));
    }
    Ok(out)
}

/// The first private key in `pem` (canonical PEM): PKCS#8 (decrypted with `password` when it is
/// an `ENCRYPTED PRIVATE KEY`), PKCS#1 or SEC1.
///
/// The broker's `tls.rs` has the same function for its keystore; it could use this one
/// (fjord-broker depends on this crate).
pub fn private_key(pem: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    if let Some(start) = text.find(BEGIN) {
        let end = text[start..]
            .find(END)
            .map(|e| start + e + END.len())
            .ok_or("an ENCRYPTED PRIVATE KEY without its END line")?;
        let password = password.ok_or(
            "the key is encrypted (ENCRYPTED PRIVATE KEY) but ssl.key.password is not set",
        )?;
        let (_label, doc) = pkcs8::Document::from_pem(&text[start..end])
            .map_err(|e| format!("encrypted key: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("encrypted key: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|_| "cannot decrypt the key with ssl.key.password".to_string())?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))
}

/// rustls with *ring*, as the broker (`fjord_broker::tls::crypto_provider`): no C toolchain
/// beyond `cc`. rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
#[allow(deprecated)]
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS server name for `addr` (`host:port`, `[v6]:port`): a DNS name or an IP address.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string()).map_err(|_| {
        Error::Invalid(format!(
            "{host:?} (of {addr}) is not a valid TLS server name"
        ))
    })
}

/// Why a TLS handshake or read failed, with a hint at the setting to look at (a plain I/O
/// error as it is).
pub(crate) fn describe_error(error: &std::io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "{tls} (ssl.endpoint.identification.algorithm=https checks the broker's host name; \
             an empty value checks only the chain)"
        ),
        rustls::Error::InvalidCertificate(_) => format!(
            "the broker's certificate is not trusted: {tls} (is its CA in ssl.truststore.location?)"
        ),
        // With TLS 1.3 the broker checks the client certificate after the client's side of the
        // handshake is done: its refusal arrives as an alert on the first read.
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA,
        ) => format!(
            "{tls} (the broker did not accept the client certificate: see ssl.keystore.location)"
        ),
        _ => tls.to_string(),
    }
}

/// `ssl.endpoint.identification.algorithm=` (empty): the broker's certificate must chain to a
/// trusted CA and be valid, but need not name the host. WebPKI checks the name last, after the
/// chain, so only that error is forgiven.
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{Connection, ConnectionConfig};
    use bytes::BytesMut;
    use fjord_protocol::codec::{decode_request, encode_response, split_frame, DEFAULT_MAX_FRAME};
    use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
    use std::collections::HashMap;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

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

        /// (certificate PEM, key PEM) for `cn` with subject alternative names `names`.
        fn issue(&self, cn: &str, names: &[&str]) -> (String, rcgen::KeyPair) {
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            (cert.pem(), key)
        }

        fn roots(&self) -> RootCertStore {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            roots
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A TLS broker on 127.0.0.1 whose certificate (from `pki`) names `names`; it answers
    /// ApiVersions on every connection. With `client_ca`, it requires a client certificate
    /// from that CA. Returns its port and, per handshake, the client's certificate.
    async fn tls_broker(
        pki: &Pki,
        names: &[&str],
        client_ca: Option<&Pki>,
    ) -> (
        u16,
        mpsc::UnboundedReceiver<Option<CertificateDer<'static>>>,
    ) {
        let (cert, key) = pki.issue("broker", names);
        let provider = Arc::new(crypto_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
        };
        let config = builder
            .with_single_cert(
                vec![der(&cert)],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = tls.get_ref().1.peer_certificates();
                    let _ = tx.send(peer.and_then(|c| c.first()).map(|c| c.clone().into_owned()));
                    let mut buf = BytesMut::new();
                    loop {
                        while let Ok(Some(frame)) = split_frame(&mut buf, DEFAULT_MAX_FRAME) {
                            let version = i16::from_be_bytes([frame[2], frame[3]]);
                            let request = decode_request(frame).unwrap();
                            let RequestKind::ApiVersions(_) = request.body else {
                                return;
                            };
                            let mut out = BytesMut::new();
                            encode_response(
                                &mut out,
                                request.header.correlation_id,
                                ApiKey::ApiVersions,
                                version,
                                &ResponseKind::ApiVersions(fjord_protocol::api_versions_response()),
                            )
                            .unwrap();
                            if tls.write_all(&out).await.is_err() || tls.flush().await.is_err() {
                                return;
                            }
                        }
                        match tls.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        (port, rx)
    }

    fn lookup(props: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn tls_client(props: &[(&str, String)]) -> Result<TlsClient> {
        TlsClient::from_properties(&lookup(props))
    }

    /// Connect to `host:port` with `props` and negotiate ApiVersions.
    async fn connect(host: &str, port: u16, props: &[(&str, String)]) -> Result<Connection> {
        let config = ConnectionConfig {
            tls: Some(tls_client(props)?),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ..ConnectionConfig::default()
        };
        Connection::connect(&format!("{host}:{port}"), config).await
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn verifies_the_broker_against_the_truststore() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (port, _) = tls_broker(&pki, &["localhost", "127.0.0.1"], None).await;
        let trust = write(&dir, "ca.pem", &pki.ca.pem());
        let props = [("ssl.truststore.location", trust.clone())];
        let conn = connect("127.0.0.1", port, &props).await.unwrap();
        assert!(conn.version(ApiKey::Metadata).is_some());
        connect("localhost", port, &props).await.unwrap();
        // TLS 1.2 only, and the CA inline on one line (a properties value continued with `\`).
        let one_line = pki.ca.pem().replace('\n', " ");
        connect(
            "127.0.0.1",
            port,
            &[
                ("ssl.truststore.certificates", one_line),
                ("ssl.enabled.protocols", "TLSv1.2".into()),
            ],
        )
        .await
        .unwrap();

        // A broker certificate from a CA the truststore does not hold.
        let other = write(&dir, "other.pem", &Pki::new().ca.pem());
        let err = connect("127.0.0.1", port, &[("ssl.truststore.location", other)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("not trusted") && message.contains("ssl.truststore.location"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn host_name_checked_unless_endpoint_identification_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (port, _) = tls_broker(&pki, &["broker.example"], None).await;
        let trust = write(&dir, "ca.pem", &pki.ca.pem());
        let err = connect(
            "127.0.0.1",
            port,
            &[("ssl.truststore.location", trust.clone())],
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("ssl.endpoint.identification.algorithm"),
            "{err}"
        );
        let explicit_https = [
            ("ssl.truststore.location", trust.clone()),
            ("ssl.endpoint.identification.algorithm", "HTTPS".into()),
        ];
        assert!(connect("127.0.0.1", port, &explicit_https).await.is_err());

        let no_name_check = [
            ("ssl.truststore.location", trust),
            ("ssl.endpoint.identification.algorithm", String::new()),
        ];
        connect("127.0.0.1", port, &no_name_check).await.unwrap();
        // The chain is still verified.
        let other = write(&dir, "other.pem", &Pki::new().ca.pem());
        let err = connect(
            "127.0.0.1",
            port,
            &[
                ("ssl.truststore.location", other),
                ("ssl.endpoint.identification.algorithm", String::new()),
            ],
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
    }

    #[tokio::test]
    async fn mutual_tls_presents_the_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let clients = Pki::new();
        let (port, mut presented) = tls_broker(&pki, &["127.0.0.1"], Some(&clients)).await;
        let trust = write(&dir, "ca.pem", &pki.ca.pem());
        let (cert, key) = clients.issue("alice", &[]);
        let keystore = write(&dir, "alice.pem", &format!("{}{cert}", key.serialize_pem()));
        connect(
            "127.0.0.1",
            port,
            &[
                ("ssl.truststore.location", trust.clone()),
                ("ssl.keystore.location", keystore),
            ],
        )
        .await
        .unwrap();
        assert_eq!(presented.recv().await.unwrap(), Some(der(&cert)));

        // Inline key and chain.
        connect(
            "127.0.0.1",
            port,
            &[
                ("ssl.truststore.location", trust.clone()),
                ("ssl.keystore.key", key.serialize_pem()),
                ("ssl.keystore.certificate.chain", cert.clone()),
            ],
        )
        .await
        .unwrap();
        assert_eq!(presented.recv().await.unwrap(), Some(der(&cert)));

        // No client certificate: the broker refuses the connection.
        let err = connect("127.0.0.1", port, &[("ssl.truststore.location", trust)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ssl.keystore.location"), "{err}");
    }

    #[tokio::test]
    async fn encrypted_keystore_key_needs_ssl_key_password() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (port, mut presented) = tls_broker(&pki, &["127.0.0.1"], Some(&pki)).await;
        let trust = write(&dir, "ca.pem", &pki.ca.pem());
        let (cert, key) = pki.issue("bob", &[]);
        let der_key = key.serialize_der();
        let encrypted = pkcs8::PrivateKeyInfo::try_from(der_key.as_slice())
            .unwrap()
            .encrypt(rand::thread_rng(), "s3cret")
            .unwrap()
            .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
            .unwrap();
        let keystore = write(&dir, "bob.pem", &format!("{}{cert}", &*encrypted));
        let props = |password: Option<&str>| {
            let mut p = vec![
                ("ssl.truststore.location", trust.clone()),
                ("ssl.keystore.location", keystore.clone()),
            ];
            if let Some(password) = password {
                p.push(("ssl.key.password", password.to_string()));
            }
            p
        };
        for password in [None, Some("wrong")] {
            let err = tls_client(&props(password)).unwrap_err().to_string();
            assert!(
                err.contains("ssl.key.password") && err.contains("ssl.keystore.location"),
                "{err}"
            );
        }
        connect("127.0.0.1", port, &props(Some("s3cret")))
            .await
            .unwrap();
        assert_eq!(presented.recv().await.unwrap(), Some(der(&cert)));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = |props: &[(&str, String)]| tls_client(props).unwrap_err().to_string();
        let e = err(&[]);
        assert!(
            e.contains("security.protocol=SSL needs ssl.truststore.location"),
            "{e}"
        );
        let e = err(&[("security.protocol", "SASL_SSL".into())]);
        assert!(e.contains("security.protocol=SASL_SSL needs"), "{e}");
        let e = err(&[
            ("ssl.truststore.location", "/x.jks".into()),
            ("ssl.truststore.type", "JKS".into()),
        ]);
        assert!(
            e.contains("ssl.truststore.type") && e.contains("keytool"),
            "{e}"
        );
        let e = err(&[("ssl.keystore.type", "PKCS12".into())]);
        assert!(
            e.contains("ssl.keystore.type") && e.contains("openssl"),
            "{e}"
        );
        let binary = write(&dir, "truststore.jks", "\u{feed}\u{fe}binary");
        let e = err(&[("ssl.truststore.location", binary)]);
        assert!(e.contains("not a PEM file"), "{e}");
        let e = err(&[("ssl.truststore.location", "/nonexistent/ca.pem".into())]);
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");

        let trust = write(&dir, "ca.pem", &Pki::new().ca.pem());
        let with = |k: &'static str, v: &str| {
            vec![
                ("ssl.truststore.location", trust.clone()),
                (k, v.to_string()),
            ]
        };
        tls_client(&with("ssl.enabled.protocols", "TLSv1.3")).unwrap();
        let e = err(&with("ssl.enabled.protocols", "TLSv1.1"));
        assert!(e.contains("ssl.enabled.protocols"), "{e}");
        let e = err(&with("ssl.endpoint.identification.algorithm", "ldap"));
        assert!(e.contains("ssl.endpoint.identification.algorithm"), "{e}");
        let e = err(&with("ssl.keystore.key", "x"));
        assert!(e.contains("ssl.keystore.certificate.chain"), "{e}");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let mut props = with("ssl.keystore.key", legacy);
        props.push(("ssl.keystore.certificate.chain", Pki::new().ca.pem()));
        let e = err(&props);
        assert!(
            e.contains("ssl.keystore.key") && e.contains("PKCS#8"),
            "{e}"
        );
    }

    #[test]
    fn pem_values_are_rewrapped() {
        let pki = Pki::new();
        let canonical = pki.ca.pem().replace("\r\n", "\n");
        let joined = format!(
            "Bag Attributes\n  friendlyName: ca\n{}",
            canonical.replace('\n', "  ")
        );
        assert_eq!(pem("x", &joined).unwrap(), canonical);
        assert!(pem("x", "no pem here")
            .unwrap_err()
            .contains("no PEM block"));
        assert!(pem("x", "-----BEGIN CERTIFICATE----- AAAA")
            .unwrap_err()
            .contains("END"));
        assert!(pem(
            "x",
            "-----BEGIN CERTIFICATE----- ÄÖ -----END CERTIFICATE-----"
        )
        .unwrap_err()
        .contains("base64"));
    }

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("[::1]:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("10.0.0.1:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert_eq!(
            server_name("broker-1.example:9093").unwrap(),
            ServerName::try_from("broker-1.example").unwrap()
        );
        assert!(server_name("bad name:9093").is_err());
    }
}
