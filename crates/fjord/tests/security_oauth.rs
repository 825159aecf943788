//! SASL/OAUTHBEARER (KIP-255, KIP-768) with real clients: a SASL_PLAINTEXT listener that checks
//! JWTs against a JWKS file, confluent-kafka (librdkafka) handing over tokens signed here;
//! expired tokens and tokens signed by another key are refused; ACLs match the principal from
//! the token's `sub`. Without a JWKS the listener runs Kafka's unsecured validator, which the
//! Java client's default login module (`unsecuredLoginStringClaim_sub`) relies on.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::metric_value;
use common::kafka::Tools;
use common::{wait_until, FjordProcess};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// An identity provider's signing key (EC P-256): signs tokens, and its public JWK.
struct Idp {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Idp {
    fn new(kid: &str) -> Idp {
        use base64::Engine as _;
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Idp {
            kid: kid.to_string(),
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
            jwk: json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig","alg":"ES256",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
        }
    }

    /// A token for `sub`, valid for `lifetime_s` seconds (negative: expired that long ago).
    fn token(&self, sub: &str, lifetime_s: i64) -> String {
        let now = now_s();
        let claims = json!({"sub": sub, "iss": "https://idp.test", "aud": ["fjord"],
            "iat": now.min(now + lifetime_s) - 60, "exp": now + lifetime_s, "scope": "kafka"});
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn oauth(broker: &FjordProcess, token: &str, args: &[&str]) -> Value {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    let out = broker
        .python("oauth_clients.py", &full)
        .success(&format!("oauth_clients.py {args:?}"));
    let line = out.stdout();
    serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("bad output {line:?}: {e}"))
}

fn metric(broker: &FjordProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&broker.http_get("/metrics").body, name, labels).unwrap_or(0.0)
}

/// Lines of the broker's log reporting a failed SASL authentication.
fn failure_lines(broker: &FjordProcess) -> Vec<String> {
    broker
        .all_logs()
        .lines()
        .filter(|l| l.contains("SASL authentication failed"))
        .map(str::to_string)
        .collect()
}

#[test]
fn oauthbearer_with_jwks_and_acls() {
    let idp = Idp::new("idp-1");
    let other = Idp::new("idp-1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [idp.jwk] }).to_string()).unwrap();
    let url = format!("sasl.oauthbearer.jwks.endpoint.url=file:{}", jwks.display());
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        "sasl.enabled.mechanisms=OAUTHBEARER",
        "--set",
        &url,
        "--set",
        "sasl.oauthbearer.expected.audience=fjord",
        "--set",
        "listener.name.plaintext.oauthbearer.sasl.oauthbearer.expected.issuer=https://idp.test",
        "--set",
        "sasl.authentication.timeout.ms=5000",
        "--set",
        "sasl.oauthbearer.jwks.endpoint.refresh.ms=1000",
        "--set",
        AUTHORIZER,
        "--set",
        "super.users=User:admin",
        "--set",
        "allow.everyone.if.no.acl.found=false",
        "--set",
        "auto.create.topics.enable=false",
    ]);
    assert!(
        !broker.all_logs().contains("NOT verified"),
        "no unsecured warning with a JWKS"
    );

    // The super user creates the topic and lets alice use it.
    let created = oauth(
        &broker,
        &idp.token("admin", 600),
        &["--create-topic", "oauth-t", "--grant", "User:alice"],
    );
    assert_eq!(created["created"], "oauth-t");

    // alice produces and consumes; mallory's token is valid but no ACL names her.
    let out = oauth(&broker, &idp.token("alice", 600), &["--topic", "oauth-t"]);
    assert_eq!(
        (out["produced"].as_i64(), out["consumed"].as_i64()),
        (Some(50), Some(50))
    );
    let out = oauth(
        &broker,
        &idp.token("mallory", 600),
        &[
            "--topic",
            "oauth-t",
            "--count",
            "3",
            "--timeout",
            "10",
            "--expect-denied",
        ],
    );
    assert!(
        out["denied"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("authoriz"),
        "{out}"
    );

    let successes = metric(
        &broker,
        "fjord_sasl_authentications_total",
        &[("mechanism", "OAUTHBEARER"), ("result", "success")],
    );
    assert!(successes >= 3.0, "{successes}");

    // An expired token and a token signed by another key: the client reports an
    // authentication error, the broker logs why and closes the connection.
    let before = failure_lines(&broker).len();
    let out = oauth(
        &broker,
        &idp.token("alice", -3600),
        &["--expect-auth-failure", "--timeout", "15"],
    );
    assert!(out["auth_error"].is_string(), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || failure_lines(&broker)[before..]
            .iter()
            .any(|l| l.contains("expired"))),
        "{:?}",
        failure_lines(&broker)
    );
    let out = oauth(
        &broker,
        &other.token("alice", 600),
        &["--expect-auth-failure", "--timeout", "15"],
    );
    assert!(out["auth_error"].is_string(), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || failure_lines(&broker)
            .iter()
            .any(|l| l.contains("invalid JWT"))),
        "{:?}",
        failure_lines(&broker)
    );
    // A wrong audience is refused the same way.
    let wrong_aud = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(idp.kid.clone());
        let claims = json!({"sub":"alice","iss":"https://idp.test","aud":"elsewhere",
            "exp": now_s() + 600});
        jsonwebtoken::encode(&h, &claims, &idp.key).unwrap()
    };
    oauth(
        &broker,
        &wrong_aud,
        &["--expect-auth-failure", "--timeout", "15"],
    );
    assert!(
        wait_until(Duration::from_secs(5), || failure_lines(&broker)
            .iter()
            .any(|l| l.contains("aud"))),
        "{:?}",
        failure_lines(&broker)
    );
    let failures = metric(
        &broker,
        "fjord_sasl_authentications_total",
        &[("mechanism", "OAUTHBEARER"), ("result", "failure")],
    );
    assert!(failures >= 3.0, "{failures}");

    // The set is re-read every second here: a broken file keeps the keys held (with an
    // ERROR), a rotated one takes effect.
    std::fs::write(&jwks, "not json").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || broker
            .all_logs()
            .contains("JWKS refresh failed")),
        "{}",
        broker.all_logs()
    );
    let out = oauth(
        &broker,
        &idp.token("alice", 600),
        &["--topic", "oauth-t", "--count", "5"],
    );
    assert_eq!(out["produced"].as_i64(), Some(5));
    std::fs::write(&jwks, json!({ "keys": [other.jwk] }).to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let out = oauth(
        &broker,
        &other.token("alice", 600),
        &["--topic", "oauth-t", "--count", "5"],
    );
    assert_eq!(out["produced"].as_i64(), Some(5));
    oauth(
        &broker,
        &idp.token("alice", 600),
        &["--expect-auth-failure", "--timeout", "15"],
    );
}

/// Kafka's default without a JWKS: unsigned (`alg: none`) tokens are believed, with a WARN at
/// startup; a signed token is refused there (the unsecured validator wants `none`).
#[test]
fn oauthbearer_unsecured_default() {
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        "sasl.enabled.mechanisms=OAUTHBEARER",
        "--set",
        "sasl.authentication.timeout.ms=5000",
    ]);
    assert!(
        broker.all_logs().contains("NOT verified"),
        "{}",
        broker.all_logs()
    );
    let now = now_s();
    let token = fjord_security::sasl::oauthbearer::unsecured_token(
        &json!({"sub":"dev","iat": now, "exp": now + 600}),
    );
    oauth(&broker, &token, &["--create-topic", "dev-t"]);
    let out = oauth(&broker, &token, &["--topic", "dev-t", "--count", "20"]);
    assert_eq!(out["consumed"].as_i64(), Some(20));
    let signed = Idp::new("k").token("dev", 600);
    oauth(
        &broker,
        &signed,
        &["--expect-auth-failure", "--timeout", "15"],
    );
    assert!(
        wait_until(Duration::from_secs(5), || failure_lines(&broker)
            .iter()
            .any(|l| l.contains("unsecured JWS"))),
        "{:?}",
        failure_lines(&broker)
    );

    // The fjord CLI makes the same unsecured token from the same JAAS options.
    let cli_props = broker.scratch_dir().join("cli.properties");
    std::fs::write(
        &cli_props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n\
         sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"cliuser\";\n",
    )
    .unwrap();
    let listed = broker
        .cli(&[
            "--command-config",
            &cli_props.display().to_string(),
            "topic",
            "list",
        ])
        .success("fjord topic list with an unsecured token")
        .stdout();
    assert!(listed.contains("dev-t"), "{listed}");

    // The Java client's default login module makes such tokens from its JAAS options.
    let tools = Tools::new();
    let b = broker.bootstrap().to_string();
    let props = broker.scratch_dir().join("oauth.properties");
    std::fs::write(
        &props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n\
         sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"javauser\";\n",
    )
    .unwrap();
    let props = props.display().to_string();
    tools
        .run(
            "kafka-console-producer",
            &[
                "--bootstrap-server",
                &b,
                "--topic",
                "dev-t",
                tools.renamed("--producer.config", "--command-config"),
                &props,
            ],
            Some(b"j1\nj2\nj3\n"),
        )
        .success("Java console producer with OAUTHBEARER (unsecured login)");
    let out = tools.ok(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            "dev-t",
            "--from-beginning",
            "--max-messages",
            "23",
            tools.renamed("--consumer.config", "--command-config"),
            &props,
        ],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with('j')).count(),
        3,
        "{out}"
    );
    assert!(
        broker
            .all_logs()
            .lines()
            .all(|l| !l.contains("javauser") || !l.contains("failed")),
        "{}",
        broker.all_logs()
    );
    // kcat (librdkafka's own unsecured JWT: alg none, sub = principal).
    let kcat_oauth = [
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=OAUTHBEARER",
        "-X",
        "enable.sasl.oauthbearer.unsecure.jwt=true",
        "-X",
        "sasl.oauthbearer.config=principal=kcatuser",
    ];
    let mut produce = kcat_oauth.to_vec();
    produce.extend(["-P", "-t", "kcat-oauth"]);
    broker
        .kcat(&produce, Some(b"o1\no2\n"))
        .success("kcat produce with OAUTHBEARER");
    let mut consume = kcat_oauth.to_vec();
    consume.extend(["-C", "-t", "kcat-oauth", "-o", "beginning", "-c", "2", "-e"]);
    let out = broker
        .kcat(&consume, None)
        .success("kcat consume with OAUTHBEARER");
    assert_eq!(out.stdout(), "o1\no2\n");
}

mod raw {
    //! The exchange on the wire, for what clients hide: the error challenge and the session
    //! lifetime bounded by the token's `exp`.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
        SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn request<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("oauth-test")))
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// The next frame's body, `None` when the broker closed the connection.
    pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut size = [0u8; 4];
        s.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut body).ok()?;
        Some(body)
    }

    fn response<R: Decodable>(s: &mut TcpStream, api: ApiKey, version: i16) -> R {
        let frame = read_frame(s).expect("a response, not a closed connection");
        let mut b = bytes::Bytes::from(frame);
        ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
        R::decode(&mut b, version).unwrap()
    }

    pub fn connect(addr: &str) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    pub fn handshake(s: &mut TcpStream) {
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("OAUTHBEARER"));
        s.write_all(&request(ApiKey::SaslHandshake, 1, 1, &req))
            .unwrap();
        let r: SaslHandshakeResponse = response(s, ApiKey::SaslHandshake, 1);
        assert_eq!(r.error_code, 0, "{r:?}");
    }

    pub fn authenticate(s: &mut TcpStream, token: &[u8], cid: i32) -> SaslAuthenticateResponse {
        let auth = SaslAuthenticateRequest::default()
            .with_auth_bytes(bytes::Bytes::copy_from_slice(token));
        s.write_all(&request(ApiKey::SaslAuthenticate, 2, cid, &auth))
            .unwrap();
        response(s, ApiKey::SaslAuthenticate, 2)
    }

    pub fn metadata_ok(s: &mut TcpStream, cid: i32) -> bool {
        s.write_all(&request(
            ApiKey::Metadata,
            12,
            cid,
            &MetadataRequest::default(),
        ))
        .is_ok()
            && read_frame(s).is_some()
    }
}

/// On the wire: a refused token gets the JSON challenge, `\x01` then fails with it; an
/// accepted token's `exp` is the session's end (without `connections.max.reauth.ms`), which a
/// re-authentication with a fresh token moves.
#[test]
fn oauthbearer_error_challenge_and_session_end() {
    use fjord_security::sasl::oauthbearer::ClientInitialResponse;
    let idp = Idp::new("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [idp.jwk] }).to_string()).unwrap();
    let url = format!("sasl.oauthbearer.jwks.endpoint.url={}", jwks.display());
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        "sasl.enabled.mechanisms=OAUTHBEARER",
        "--set",
        &url,
    ]);
    let first = |token: &str| ClientInitialResponse::encode(token, &Default::default());

    let mut s = raw::connect(broker.bootstrap());
    raw::handshake(&mut s);
    let r = raw::authenticate(&mut s, &first(&idp.token("alice", -3600)), 2);
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(&r.auth_bytes[..], br#"{"status":"invalid_token"}"#);
    let r = raw::authenticate(&mut s, b"\x01", 3);
    assert_eq!(r.error_code, 58, "{r:?}");
    assert_eq!(
        r.error_message.as_deref(),
        Some(r#"{"status":"invalid_token"}"#)
    );
    assert!(
        raw::read_frame(&mut s).is_none(),
        "closed after the failure"
    );
    // Garbage instead of a client first message fails at once.
    let mut s = raw::connect(broker.bootstrap());
    raw::handshake(&mut s);
    let r = raw::authenticate(&mut s, b"n,,\x01auth=Bearer \x01\x01", 2);
    assert_eq!(r.error_code, 58, "{r:?}");

    // A token valid for 5 s: the session lasts that long (the claim is in whole seconds).
    let mut s = raw::connect(broker.bootstrap());
    raw::handshake(&mut s);
    let started = std::time::Instant::now();
    let r = raw::authenticate(&mut s, &first(&idp.token("alice", 5)), 2);
    assert_eq!(r.error_code, 0, "{r:?}");
    assert!(
        (3000..=5000).contains(&r.session_lifetime_ms),
        "{}",
        r.session_lifetime_ms
    );
    assert!(raw::metadata_ok(&mut s, 3));
    let lifetime = Duration::from_millis(r.session_lifetime_ms as u64);
    std::thread::sleep((lifetime + Duration::from_millis(500)).saturating_sub(started.elapsed()));
    assert!(
        !raw::metadata_ok(&mut s, 4),
        "a session past its token's exp must be closed"
    );

    // Re-authenticating with a fresh token moves the end.
    let mut s = raw::connect(broker.bootstrap());
    raw::handshake(&mut s);
    let started = std::time::Instant::now();
    let r = raw::authenticate(&mut s, &first(&idp.token("alice", 4)), 2);
    assert_eq!(r.error_code, 0, "{r:?}");
    let lifetime = Duration::from_millis(r.session_lifetime_ms as u64);
    raw::handshake(&mut s);
    let r = raw::authenticate(&mut s, &first(&idp.token("alice", 600)), 3);
    assert_eq!(r.error_code, 0, "{r:?}");
    assert!(r.session_lifetime_ms > 500_000, "{}", r.session_lifetime_ms);
    std::thread::sleep((lifetime + Duration::from_millis(500)).saturating_sub(started.elapsed()));
    assert!(raw::metadata_ok(&mut s, 4), "the renewed session goes on");
    // As someone else: refused, closed.
    raw::handshake(&mut s);
    let r = raw::authenticate(&mut s, &first(&idp.token("mallory", 600)), 5);
    assert_eq!(r.error_code, 58, "{r:?}");

    // The fjord CLI with a token file (KIP-768's file: token endpoint), and an expired one.
    let token_file = dir.path().join("token.jwt");
    let props = dir.path().join("cli.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\nsasl.oauthbearer.token.endpoint.url=file:{}\n",
            token_file.display()
        ),
    )
    .unwrap();
    let props = props.display().to_string();
    std::fs::write(&token_file, idp.token("alice", 600)).unwrap();
    broker
        .cli(&["--command-config", &props, "topic", "create", "cli-t"])
        .success("fjord topic create with OAUTHBEARER");
    std::fs::write(&token_file, idp.token("alice", -3600)).unwrap();
    let out = broker
        .cli(&["--command-config", &props, "topic", "list"])
        .failure("fjord topic list with an expired token");
    assert!(out.stderr().contains("invalid_token"), "{}", out.stderr());
}
