//! SASL on a SASL_PLAINTEXT listener (issue 16) with real clients: PLAIN users from Kafka's JAAS
//! text, SCRAM-SHA-256/512 users created with AlterUserScramCredentials (Kafka's
//! kafka-configs.sh and `fjord user scram set`), produce and consume with confluent-kafka,
//! kafka-python, kcat, the Java client (Kafka's console tools) and the fjord CLI; wrong
//! passwords, unknown mechanisms, requests before authentication and stalled exchanges each
//! close only their own connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::metric_value;
use common::kafka::Tools;
use common::FjordProcess;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

/// kcat's settings for alice over PLAIN.
const KCAT_ALICE: [&str; 8] = [
    "-X",
    "security.protocol=SASL_PLAINTEXT",
    "-X",
    "sasl.mechanisms=PLAIN",
    "-X",
    "sasl.username=alice",
    "-X",
    "sasl.password=alice-secret",
];

/// A single node whose listener (named PLAINTEXT, mapped to SASL_PLAINTEXT) takes PLAIN and
/// SCRAM; the exchange must finish within 2 s.
fn sasl_broker() -> FjordProcess {
    let jaas = format!("listener.name.plaintext.plain.sasl.jaas.config={JAAS}");
    FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--set",
        &jaas,
        "--set",
        "sasl.authentication.timeout.ms=2000",
    ])
}

/// A client properties file in the broker's scratch directory.
fn props(broker: &FjordProcess, name: &str, mechanism: &str, user: &str, password: &str) -> String {
    let module = if mechanism == "PLAIN" {
        "org.apache.kafka.common.security.plain.PlainLoginModule"
    } else {
        "org.apache.kafka.common.security.scram.ScramLoginModule"
    };
    let path = broker.scratch_dir().join(name);
    std::fs::write(
        &path,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism={mechanism}\nsasl.jaas.config={module} required username=\"{user}\" password=\"{password}\";\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn metric(broker: &FjordProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&broker.http_get("/metrics").body, name, labels).unwrap_or(0.0)
}

fn sasl_python(
    broker: &FjordProcess,
    client: &str,
    mechanism: &str,
    user: &str,
    password: &str,
    topic: &str,
    expect_failure: bool,
) -> serde_json::Value {
    let mut args = vec![
        "--client",
        client,
        "--mechanism",
        mechanism,
        "--user",
        user,
        "--password",
        password,
        "--topic",
        topic,
        "--count",
        "200",
    ];
    if expect_failure {
        args.push("--expect-auth-failure");
    }
    let out = broker
        .python("sasl_clients.py", &args)
        .success(&format!("{client} {mechanism} as {user}"));
    let line = out.stdout();
    serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{client}: bad output {line:?}: {e}"))
}

#[test]
fn plain_and_scram_with_real_clients() {
    let mut broker = sasl_broker();
    let b = broker.bootstrap().to_string();
    let admin = props(
        &broker,
        "admin.properties",
        "PLAIN",
        "admin",
        "admin-secret",
    );

    // Without credentials the CLI's first request (Metadata) is refused and the connection closed.
    let out = broker
        .cli(&["topic", "list"])
        .failure("topic list without SASL");
    assert!(out.stderr().contains("closed"), "{}", out.stderr());
    broker
        .cli(&[
            "--command-config",
            &admin,
            "topic",
            "create",
            "sasl-t",
            "--partitions",
            "2",
        ])
        .success("create topic as admin (PLAIN)");

    // SCRAM users: SCRAM-SHA-512 with Kafka's own kafka-configs.sh (the Java AdminClient's
    // AlterUserScramCredentials, authenticated with PLAIN), SCRAM-SHA-256 with the fjord CLI.
    let tools = Tools::new();
    tools.ok(
        "kafka-configs",
        &[
            "--bootstrap-server",
            &b,
            "--command-config",
            &admin,
            "--alter",
            "--add-config",
            "SCRAM-SHA-512=[iterations=8192,password=bob-secret]",
            "--entity-type",
            "users",
            "--entity-name",
            "bob",
        ],
    );
    broker
        .cli(&[
            "--command-config",
            &admin,
            "user",
            "scram",
            "set",
            "--user",
            "carol",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password",
            "carol-secret",
        ])
        .success("fjord user scram set");
    let listed = broker
        .cli(&[
            "--command-config",
            &admin,
            "-o",
            "json",
            "user",
            "scram",
            "list",
        ])
        .success("fjord user scram list")
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let creds: Vec<(String, String, i64)> = v["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap().to_string(),
                c["mechanism"].as_str().unwrap().to_string(),
                c["iterations"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        creds,
        vec![
            ("bob".into(), "SCRAM-SHA-512".into(), 8192),
            ("carol".into(), "SCRAM-SHA-256".into(), 4096)
        ],
        "{listed}"
    );
    assert!(
        !listed.contains("salt") && !listed.contains("key"),
        "{listed}"
    );

    // Produce and consume with every client, each mechanism.
    for (client, mech, user, pw) in [
        ("confluent", "PLAIN", "alice", "alice-secret"),
        ("confluent", "SCRAM-SHA-512", "bob", "bob-secret"),
        ("confluent", "SCRAM-SHA-256", "carol", "carol-secret"),
        ("kafka-python", "PLAIN", "alice", "alice-secret"),
        ("kafka-python", "SCRAM-SHA-512", "bob", "bob-secret"),
    ] {
        let topic = format!("sasl-{client}-{}", mech.to_lowercase());
        let r = sasl_python(&broker, client, mech, user, pw, &topic, false);
        assert_eq!(r["consumed"], 200, "{r}");
    }
    // kcat (librdkafka 2.0.x) with PLAIN. Its SCRAM repeats the client nonce in the final
    // message (fixed in librdkafka 2.6.1), which Kafka 4 and Fjord refuse.
    let kcat_auth = [
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=PLAIN",
        "-X",
        "sasl.username=alice",
        "-X",
        "sasl.password=alice-secret",
    ];
    let mut args = kcat_auth.to_vec();
    args.extend(["-P", "-t", "sasl-kcat"]);
    broker
        .kcat(&args, Some(b"one\ntwo\nthree\n"))
        .success("kcat -P with PLAIN");
    let mut args = kcat_auth.to_vec();
    args.extend(["-C", "-t", "sasl-kcat", "-e", "-q"]);
    let out = broker.kcat(&args, None).success("kcat -C with PLAIN");
    assert_eq!(out.stdout(), "one\ntwo\nthree\n");
    // The Java client: Kafka's console producer and consumer with SCRAM-SHA-512.
    let bob = props(
        &broker,
        "bob.properties",
        "SCRAM-SHA-512",
        "bob",
        "bob-secret",
    );
    tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &b,
            "--command-config",
            &bob,
            "--create",
            "--topic",
            "sasl-java",
        ],
    );
    // Kafka's console producer and consumer with SCRAM-SHA-512.
    let read = tools.console_round_trip(&b, "sasl-java", &bob, &["j1", "j2", "j3"]);
    assert_eq!(read.len(), 3, "{read:?}");

    // Wrong passwords: an authentication error for that client; the broker serves the others.
    let failures_before = metric(
        &broker,
        "fjord_sasl_authentications_total",
        &[("mechanism", "SCRAM-SHA-512"), ("result", "failure")],
    );
    let r = sasl_python(
        &broker,
        "confluent",
        "SCRAM-SHA-512",
        "bob",
        "wrong",
        "x",
        true,
    );
    assert!(
        r["auth_error"]
            .as_str()
            .unwrap()
            .contains("invalid credentials"),
        "{r}"
    );
    let r = sasl_python(
        &broker,
        "kafka-python",
        "PLAIN",
        "alice",
        "wrong",
        "x",
        true,
    );
    assert!(r["auth_error"].as_str().is_some(), "{r}");
    let wrong = props(
        &broker,
        "wrong.properties",
        "SCRAM-SHA-256",
        "carol",
        "nope",
    );
    let out = broker
        .cli(&["--command-config", &wrong, "topic", "list"])
        .failure("topic list with a wrong password");
    assert!(
        out.stderr().contains("SASL_AUTHENTICATION_FAILED (58)"),
        "{}",
        out.stderr()
    );
    let unknown = props(
        &broker,
        "unknown.properties",
        "SCRAM-SHA-512",
        "nobody",
        "x",
    );
    broker
        .cli(&["--command-config", &unknown, "topic", "list"])
        .failure("topic list as an unknown SCRAM user");
    assert!(
        metric(
            &broker,
            "fjord_sasl_authentications_total",
            &[("mechanism", "SCRAM-SHA-512"), ("result", "failure")]
        ) >= failures_before + 2.0
    );
    assert!(
        metric(
            &broker,
            "fjord_sasl_authentications_total",
            &[("mechanism", "PLAIN"), ("result", "success")]
        ) > 0.0
    );
    let log = broker.all_logs();
    assert!(
        log.contains("SASL authentication failed") && log.contains("principal=\"User:carol\""),
        "no WARN line for the failed authentication"
    );
    for secret in ["alice-secret", "bob-secret", "carol-secret", "nope"] {
        assert!(!log.contains(secret), "the broker log contains a password");
    }

    // A deleted credential no longer authenticates; credentials survive a restart.
    broker
        .cli(&[
            "--command-config",
            &admin,
            "user",
            "scram",
            "delete",
            "--user",
            "carol",
            "--mechanism",
            "SCRAM-SHA-256",
        ])
        .success("fjord user scram delete");
    let carol = props(
        &broker,
        "carol.properties",
        "SCRAM-SHA-256",
        "carol",
        "carol-secret",
    );
    broker
        .cli(&["--command-config", &carol, "topic", "list"])
        .failure("carol after deletion");
    broker.restart();
    let out = broker
        .cli(&["--command-config", &bob, "topic", "list"])
        .success("bob after a restart");
    assert!(out.stdout().contains("sasl-java"), "{}", out.stdout());
    broker.assert_no_panic_in_log();
}

/// One request frame.
fn request<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sasl-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// The next frame's body, `None` when the broker closed the connection.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
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

fn connect(broker: &FjordProcess) -> TcpStream {
    let s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn handshake(s: &mut TcpStream, mechanism: &str, version: i16) -> SaslHandshakeResponse {
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()));
    s.write_all(&request(ApiKey::SaslHandshake, version, 1, &req))
        .unwrap();
    response(s, ApiKey::SaslHandshake, version)
}

#[test]
fn refuses_unauthenticated_requests_and_stalled_exchanges() {
    let broker = sasl_broker();
    let admin = props(
        &broker,
        "admin.properties",
        "PLAIN",
        "admin",
        "admin-secret",
    );

    // ApiVersions is answered before authentication; then a Metadata request closes.
    let mut s = connect(&broker);
    s.write_all(&request(
        ApiKey::ApiVersions,
        3,
        0,
        &ApiVersionsRequest::default(),
    ))
    .unwrap();
    let r: kafka_protocol::messages::ApiVersionsResponse = response(&mut s, ApiKey::ApiVersions, 3);
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16));
    s.write_all(&request(
        ApiKey::Metadata,
        12,
        1,
        &MetadataRequest::default(),
    ))
    .unwrap();
    assert!(
        read_frame(&mut s).is_none(),
        "Metadata before authentication must close"
    );

    // A mechanism that is not enabled: UNSUPPORTED_SASL_MECHANISM with the list, then closed.
    let mut s = connect(&broker);
    let r = handshake(&mut s, "GSSAPI", 1);
    assert_eq!(r.error_code, 33);
    let offered: Vec<String> = r.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(read_frame(&mut s).is_none());

    // A wrong password: SASL_AUTHENTICATION_FAILED with Kafka's message, then closed.
    let mut s = connect(&broker);
    assert_eq!(handshake(&mut s, "PLAIN", 1).error_code, 0);
    let auth = SaslAuthenticateRequest::default()
        .with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0wrong"));
    s.write_all(&request(ApiKey::SaslAuthenticate, 2, 2, &auth))
        .unwrap();
    let r: SaslAuthenticateResponse = response(&mut s, ApiKey::SaslAuthenticate, 2);
    assert_eq!(r.error_code, 58);
    assert_eq!(
        r.error_message.as_deref(),
        Some("Authentication failed: Invalid username or password")
    );
    assert!(read_frame(&mut s).is_none());

    // Handshake v0: raw tokens, then requests as usual.
    let mut s = connect(&broker);
    assert_eq!(handshake(&mut s, "PLAIN", 0).error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    s.write_all(&frame).unwrap();
    assert_eq!(
        read_frame(&mut s),
        Some(Vec::new()),
        "PLAIN's empty server token"
    );
    s.write_all(&request(
        ApiKey::Metadata,
        12,
        3,
        &MetadataRequest::default(),
    ))
    .unwrap();
    let m: kafka_protocol::messages::MetadataResponse = response(&mut s, ApiKey::Metadata, 12);
    assert_eq!(m.brokers.len(), 1);

    // A stalled exchange (handshake, then nothing) is closed after sasl.authentication.timeout.ms,
    // while another client authenticates and works meanwhile.
    let mut stalled = connect(&broker);
    assert_eq!(handshake(&mut stalled, "SCRAM-SHA-512", 1).error_code, 0);
    let started = Instant::now();
    broker
        .cli(&["--command-config", &admin, "topic", "list"])
        .success("another client while one stalls");
    assert!(
        read_frame(&mut stalled).is_none(),
        "the stalled exchange must be closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    assert!(
        metric(
            &broker,
            "fjord_sasl_connections_closed_total",
            &[("reason", "timeout")]
        ) >= 1.0
    );
    assert!(
        metric(
            &broker,
            "fjord_sasl_connections_closed_total",
            &[("reason", "unexpected_request")]
        ) >= 1.0
    );
    let log = broker.all_logs();
    assert!(
        log.contains("SASL authentication did not complete"),
        "no timeout log line"
    );
    assert!(
        log.contains("unexpected Metadata"),
        "no log line for the early request"
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn three_brokers_replicate_over_sasl() {
    // Every broker's data listener takes only SASL (PLAIN); followers fetch from leaders and
    // the transaction and verification clients connect with the broker's own JAAS credentials.
    let cluster = common::cluster::Cluster::builder()
        .config(&format!(
            "listener.security.protocol.map = \"PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT\"\n\
             sasl.enabled.mechanisms = \"PLAIN\"\n\
             sasl.mechanism.inter.broker.protocol = \"PLAIN\"\n\
             listener.name.plaintext.plain.sasl.jaas.config = '{JAAS}'\n"
        ))
        .start();
    let node = cluster.node(1);
    let admin = props(node, "admin.properties", "PLAIN", "admin", "admin-secret");
    node.cli(&[
        "--command-config",
        &admin,
        "topic",
        "create",
        "replicated",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
    ])
    .success("create an RF-3 topic over SASL");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sizes: Vec<Vec<usize>> = cluster
            .brokers()
            .iter()
            .map(|&id| cluster.node(id).isr_sizes("replicated", &KCAT_ALICE))
            .collect();
        if sizes
            .iter()
            .all(|s| s.len() == 3 && s.iter().all(|&n| n == 3))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ISRs never reached 3 (followers cannot fetch over SASL?): {sizes:?}\n{}",
            node.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = sasl_python(
        node,
        "confluent",
        "PLAIN",
        "alice",
        "alice-secret",
        "replicated",
        false,
    );
    assert_eq!(r["consumed"], 200, "{r}");
    // The followers authenticated as the broker's own user.
    let inter = cluster
        .brokers()
        .iter()
        .map(|&id| {
            metric(
                cluster.node(id),
                "fjord_sasl_authentications_total",
                &[("mechanism", "PLAIN"), ("result", "success")],
            )
        })
        .sum::<f64>();
    assert!(inter >= 3.0, "{inter} PLAIN authentications in the cluster");
    for &id in cluster.brokers() {
        assert!(
            !cluster
                .node(id)
                .all_logs()
                .contains("SASL authentication failed"),
            "node {id} refused a peer"
        );
        cluster.node(id).assert_no_panic_in_log();
    }
}

/// Authenticate a raw connection with PLAIN over SaslAuthenticate v1; the session lifetime.
fn plain_v1(
    s: &mut TcpStream,
    user: &str,
    password: &str,
    correlation_id: i32,
) -> SaslAuthenticateResponse {
    assert_eq!(handshake(s, "PLAIN", 1).error_code, 0);
    let token = format!("\0{user}\0{password}").into_bytes();
    let auth = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token));
    s.write_all(&request(ApiKey::SaslAuthenticate, 1, correlation_id, &auth))
        .unwrap();
    response(s, ApiKey::SaslAuthenticate, 1)
}

fn metadata_ok(s: &mut TcpStream, correlation_id: i32) -> bool {
    if s.write_all(&request(
        ApiKey::Metadata,
        12,
        correlation_id,
        &MetadataRequest::default(),
    ))
    .is_err()
    {
        return false;
    }
    read_frame(s).is_some()
}

#[test]
fn sessions_end_unless_clients_reauthenticate() {
    let jaas = format!("listener.name.plaintext.plain.sasl.jaas.config={JAAS}");
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "--set",
        &jaas,
        "--set",
        "connections.max.reauth.ms=4000",
    ]);

    // The session lifetime is announced (SaslAuthenticate v1+); re-authenticating on the same
    // connection extends it; a request after the end closes the connection.
    let mut s = connect(&broker);
    let start = Instant::now();
    let r = plain_v1(&mut s, "alice", "alice-secret", 1);
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 4000));
    assert!(metadata_ok(&mut s, 2));
    std::thread::sleep(Duration::from_millis(2400).saturating_sub(start.elapsed()));
    let r = plain_v1(&mut s, "alice", "alice-secret", 3);
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 4000));
    let reauthenticated = Instant::now();
    std::thread::sleep(Duration::from_millis(5000).saturating_sub(start.elapsed()));
    assert!(
        reauthenticated.elapsed() < Duration::from_millis(4000),
        "the test machine is too slow for this check"
    );
    assert!(
        metadata_ok(&mut s, 4),
        "a re-authenticated session must go on"
    );
    std::thread::sleep(Duration::from_millis(4200).saturating_sub(reauthenticated.elapsed()));
    assert!(!metadata_ok(&mut s, 5), "an expired session must be closed");
    assert!(
        metric(
            &broker,
            "fjord_sasl_connections_closed_total",
            &[("reason", "session_expired")]
        ) >= 1.0
    );

    // Re-authenticating as someone else is refused and closes.
    let mut s = connect(&broker);
    assert_eq!(plain_v1(&mut s, "alice", "alice-secret", 1).error_code, 0);
    let r = plain_v1(&mut s, "admin", "admin-secret", 2);
    assert_eq!(r.error_code, 58, "{r:?}");
    assert!(read_frame(&mut s).is_none());

    // librdkafka (confluent-kafka) re-authenticates by itself: a producer outliving several
    // sessions keeps its connection and loses nothing.
    let before = metric(
        &broker,
        "fjord_sasl_authentications_total",
        &[("mechanism", "PLAIN"), ("result", "success")],
    );
    let out = broker
        .python(
            "sasl_clients.py",
            &[
                "--client",
                "confluent",
                "--mechanism",
                "PLAIN",
                "--user",
                "alice",
                "--password",
                "alice-secret",
                "--topic",
                "reauth",
                "--count",
                "120",
                "--interval",
                "0.1",
            ],
        )
        .success("confluent producer across sessions");
    assert!(
        out.stdout().contains("\"consumed\": 120"),
        "{}",
        out.stdout()
    );
    let after = metric(
        &broker,
        "fjord_sasl_authentications_total",
        &[("mechanism", "PLAIN"), ("result", "success")],
    );
    assert!(after - before >= 4.0, "{} authentications", after - before);
    let expired = metric(
        &broker,
        "fjord_sasl_connections_closed_total",
        &[("reason", "session_expired")],
    );
    assert_eq!(
        expired, 1.0,
        "a client that re-authenticates is never cut off"
    );
    broker.assert_no_panic_in_log();
}
