//! Shared argument types and parsers.

use std::time::Duration;

use anyhow::Context;
use fjord_client::{
    client_id_with_az, Client, ClientConfig, Compression, ConnectionConfig, SaslCredentials,
    TlsClient,
};

/// How client commands reach the cluster.
#[derive(Debug, Clone)]
pub struct Connect {
    pub bootstrap: String,
    pub request_timeout: Duration,
    /// SASL and TLS from `--command-config`.
    pub security: Security,
}

/// How client connections are secured (`security.protocol` and its keys): SASL credentials for
/// SASL_PLAINTEXT and SASL_SSL, TLS for SSL and SASL_SSL, neither for PLAINTEXT.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub sasl: Option<SaslCredentials>,
    pub tls: Option<TlsClient>,
}

/// The client id of every CLI command.
const CLIENT_ID: &str = "fjord-cli";

impl Connect {
    pub fn config(&self) -> ClientConfig {
        self.config_in_rack(None)
    }

    /// The client settings of a client in `rack` (an availability zone): its client id carries
    /// `fjord_az=<rack>` (`fjord-cli,fjord_az=b`), which brokers read to account traffic per
    /// zone.
    pub fn config_in_rack(&self, rack: Option<&str>) -> ClientConfig {
        ClientConfig {
            connection: ConnectionConfig {
                client_id: match rack {
                    Some(rack) => client_id_with_az(CLIENT_ID, rack),
                    None => CLIENT_ID.to_string(),
                },
                request_timeout: self.request_timeout,
                sasl: self.security.sasl.clone(),
                tls: self.security.tls.clone(),
                ..ConnectionConfig::default()
            },
        }
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(self.config()).await
    }

    pub async fn client_with(&self, config: ClientConfig) -> anyhow::Result<Client> {
        Client::connect_with(&self.bootstrap, config)
            .await
            .with_context(|| format!("bootstrap server {}", self.bootstrap))
    }
}

/// A Java properties file (`key=value` or `key: value`, `#` and `!` comments, a trailing `\`
/// continues a line), as Kafka's tools read `--command-config`.
pub fn properties(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            logical.push_str(part);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let split = entry.find(['=', ':']).unwrap_or(entry.len());
        let (k, v) = entry.split_at(split);
        let v = v.get(1..).unwrap_or("");
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    out
}

/// The client security of a `--command-config` file: nothing for `security.protocol`
/// PLAINTEXT (the default). Reads the file and the TLS stores it names: blocking, so call it
/// before the async runtime runs.
pub fn command_config(path: &std::path::Path) -> anyhow::Result<Security> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --command-config {}", path.display()))?;
    security_from_properties(&properties(&text))
        .map_err(|e| anyhow::anyhow!("--command-config {}: {e}", path.display()))
}

fn security_from_properties(
    props: &std::collections::BTreeMap<String, String>,
) -> Result<Security, String> {
    let protocol = props
        .get("security.protocol")
        .map(|p| p.trim().to_ascii_uppercase())
        .unwrap_or_else(|| "PLAINTEXT".into());
    let (sasl, tls) = match protocol.as_str() {
        "PLAINTEXT" => (false, false),
        "SSL" => (false, true),
        "SASL_PLAINTEXT" => (true, false),
        "SASL_SSL" => (true, true),
        other => {
            return Err(format!(
                "security.protocol {other} is not supported (PLAINTEXT, SSL, SASL_PLAINTEXT and \
                 SASL_SSL are)"
            ))
        }
    };
    let tls = match tls {
        true => Some(
            TlsClient::from_properties(&|k: &str| props.get(k).cloned())
                .map_err(|e| e.to_string())?,
        ),
        false => None,
    };
    let sasl = match sasl {
        true => Some(sasl_credentials(props, &protocol)?),
        false => None,
    };
    Ok(Security { sasl, tls })
}

fn sasl_credentials(
    props: &std::collections::BTreeMap<String, String>,
    protocol: &str,
) -> Result<SaslCredentials, String> {
    let mechanism = props
        .get("sasl.mechanism")
        .or_else(|| props.get("sasl.mechanisms"))
        .map(|m| m.trim().to_ascii_uppercase())
        .ok_or_else(|| format!("security.protocol {protocol} needs sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"))?;
    if mechanism == fjord_security::sasl::OAUTHBEARER {
        return oauthbearer_credentials(props);
    }
    let (username, password) = match props.get("sasl.jaas.config") {
        Some(jaas) => fjord_security::sasl::jaas::JaasConfig::parse(jaas)
            .map_err(|e| format!("sasl.jaas.config: {e}"))?
            .credentials()
            .ok_or("sasl.jaas.config needs username=\"...\" and password=\"...\"")?,
        None => (
            props
                .get("sasl.username")
                .cloned()
                .ok_or("give sasl.jaas.config or sasl.username and sasl.password")?,
            props
                .get("sasl.password")
                .cloned()
                .ok_or("give sasl.jaas.config or sasl.username and sasl.password")?,
        ),
    };
    let creds = SaslCredentials {
        mechanism,
        username,
        password,
    };
    creds.validate().map_err(|e| e.to_string())?;
    Ok(creds)
}

/// OAUTHBEARER's token, as Kafka's Java client finds one: `sasl.oauthbearer.token.endpoint.url`
/// as a `file:` URL holding a JWT (KIP-768), or the default login module's unsecured token
/// from `unsecuredLoginStringClaim_sub` in `sasl.jaas.config` (for brokers without a JWKS).
fn oauthbearer_credentials(
    props: &std::collections::BTreeMap<String, String>,
) -> Result<SaslCredentials, String> {
    let creds = |label: String, token: String| SaslCredentials {
        mechanism: fjord_security::sasl::OAUTHBEARER.to_string(),
        username: label,
        password: token,
    };
    if let Some(url) = props.get("sasl.oauthbearer.token.endpoint.url") {
        let url = url.trim();
        let path = url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("file:"))
            .ok_or_else(|| {
                format!("sasl.oauthbearer.token.endpoint.url {url}: only file: URLs (a file holding the token) are supported")
            })?;
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("sasl.oauthbearer.token.endpoint.url {url}: {e}"))?;
        return Ok(creds(
            format!("the token of {path}"),
            token.trim().to_string(),
        ));
    }
    let jaas = props.get("sasl.jaas.config").ok_or(
        "OAUTHBEARER needs sasl.oauthbearer.token.endpoint.url=file:<token file> or sasl.jaas.config with unsecuredLoginStringClaim_sub",
    )?;
    let jaas = fjord_security::sasl::jaas::JaasConfig::parse(jaas)
        .map_err(|e| format!("sasl.jaas.config: {e}"))?;
    let sub = jaas
        .options
        .get("unsecuredLoginStringClaim_sub")
        .ok_or("sasl.jaas.config for OAUTHBEARER needs unsecuredLoginStringClaim_sub (or give sasl.oauthbearer.token.endpoint.url)")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Kafka's `unsecuredLoginLifetimeSeconds` default: an hour.
    let token = fjord_security::sasl::oauthbearer::unsecured_token(
        &serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600}),
    );
    Ok(creds(format!("User:{sub} (unsecured token)"), token))
}

/// Parse `--rack`: a broker.rack value, which also goes into the client id as
/// `fjord_az=<rack>`, so it may not hold a comma, `=` or whitespace.
pub fn rack(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c == ',' || c == '=' || c.is_whitespace()) {
        return Err(format!(
            "a rack is a non-empty name without commas, '=' or spaces, got {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// Parse `key=value` (the value may contain `=`; the key may not be empty).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parse `--acks`: `0`, `1`, `-1` or `all`.
pub fn acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err(format!("acks must be 0, 1, -1 or all, got {s:?}")),
    }
}

/// Parse `--compression`.
pub fn compression(s: &str) -> Result<Compression, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "compression must be none, gzip, snappy, lz4 or zstd, got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_first_equals() {
        assert_eq!(
            key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), "".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=x").is_err());
    }

    #[test]
    fn rack_goes_into_the_client_id() {
        assert_eq!(rack("eu-west-1a"), Ok("eu-west-1a".into()));
        for bad in ["", "a,b", "a=b", "a b"] {
            assert!(rack(bad).is_err(), "{bad:?}");
        }
        let connect = Connect {
            bootstrap: "127.0.0.1:9092".into(),
            request_timeout: Duration::from_secs(1),
            security: Security::default(),
        };
        assert_eq!(connect.config().connection.client_id, "fjord-cli");
        assert_eq!(
            connect.config_in_rack(Some("b")).connection.client_id,
            "fjord-cli,fjord_az=b"
        );
    }

    #[test]
    fn command_config_files() {
        let props = properties(
            "# a comment\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism: SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n   username=\"alice\" password=\"a=b\";\n",
        );
        let c = security_from_properties(&props).unwrap().sasl.unwrap();
        assert_eq!(
            (
                c.mechanism.as_str(),
                c.username.as_str(),
                c.password.as_str()
            ),
            ("SCRAM-SHA-512", "alice", "a=b")
        );
        let props = properties(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=p\n",
        );
        let security = security_from_properties(&props).unwrap();
        assert_eq!(security.sasl.unwrap().username, "u");
        assert!(security.tls.is_none());
        let plaintext = security_from_properties(&properties("")).unwrap();
        assert!(plaintext.sasl.is_none() && plaintext.tls.is_none());
        for bad in [
            "security.protocol=SSL",
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=p",
            "security.protocol=TLS",
            "security.protocol=SASL_PLAINTEXT",
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\nsasl.username=u\nsasl.password=p",
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN",
        ] {
            assert!(security_from_properties(&properties(bad)).is_err(), "{bad}");
        }
        let e = security_from_properties(&properties("security.protocol=SSL")).unwrap_err();
        assert!(e.contains("ssl.truststore.location"), "{e}");
    }

    #[test]
    fn oauthbearer_command_config() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token.jwt");
        std::fs::write(&token, "eyJh.eyJi.c2ln\n").unwrap();
        let text = format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.oauthbearer.token.endpoint.url=file://{}\n",
            token.display()
        );
        let s = security_from_properties(&properties(&text)).unwrap();
        let c = s.sasl.unwrap();
        assert_eq!(
            (c.mechanism.as_str(), c.password.as_str()),
            ("OAUTHBEARER", "eyJh.eyJi.c2ln")
        );
        let s = security_from_properties(&properties(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"dev\";",
        ))
        .unwrap();
        let token = s.sasl.unwrap().password;
        let v = fjord_security::sasl::oauthbearer::validate_unsecured(
            &token,
            &Default::default(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        )
        .unwrap();
        assert_eq!(v.principal, "dev");
        for bad in [
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER",
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.oauthbearer.token.endpoint.url=https://idp/token",
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.oauthbearer.token.endpoint.url=file:/nonexistent/token",
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.jaas.config=M required a=\"b\";",
        ] {
            assert!(security_from_properties(&properties(bad)).is_err(), "{bad}");
        }
    }

    /// A self-signed CA certificate in a PEM file (nothing is handshaken here; the handshakes
    /// are tested in fjord-client's tls.rs).
    fn ca_pem(dir: &std::path::Path) -> std::path::PathBuf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    }

    #[test]
    fn command_config_files_with_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem(dir.path());
        let ssl = format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            ca.display()
        );
        let security = security_from_properties(&properties(&ssl)).unwrap();
        assert!(security.tls.is_some() && security.sasl.is_none());
        let sasl_ssl = format!(
            "{}\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=bob\nsasl.password=pw\n\
             ssl.endpoint.identification.algorithm=\n",
            ssl.replace("=SSL", "=sasl_ssl")
        );
        let security = security_from_properties(&properties(&sasl_ssl)).unwrap();
        assert!(security.tls.is_some());
        assert_eq!(security.sasl.unwrap().mechanism, "SCRAM-SHA-256");
        // SASL_SSL without a mechanism names the protocol.
        let e =
            security_from_properties(&properties(&ssl.replace("=SSL", "=SASL_SSL"))).unwrap_err();
        assert!(e.contains("SASL_SSL needs sasl.mechanism"), "{e}");
        // A file: the TLS settings reach every connection the CLI opens.
        let file = dir.path().join("client.properties");
        std::fs::write(&file, &ssl).unwrap();
        let connect = Connect {
            bootstrap: "127.0.0.1:9093".into(),
            request_timeout: Duration::from_secs(1),
            security: command_config(&file).unwrap(),
        };
        assert!(connect.config().connection.tls.is_some());
        assert!(connect.config_in_rack(Some("b")).connection.tls.is_some());
        let jks = ssl.replace("=PEM", "=JKS");
        std::fs::write(&file, jks).unwrap();
        let e = format!("{:#}", command_config(&file).unwrap_err());
        assert!(
            e.contains("client.properties") && e.contains("ssl.truststore.type"),
            "{e}"
        );
    }

    #[test]
    fn acks_and_compression() {
        assert_eq!(acks("all"), Ok(-1));
        assert_eq!(acks("-1"), Ok(-1));
        assert_eq!(acks("0"), Ok(0));
        assert!(acks("2").is_err());
        assert_eq!(compression("ZSTD"), Ok(Compression::Zstd));
        assert!(compression("brotli").is_err());
    }
}
