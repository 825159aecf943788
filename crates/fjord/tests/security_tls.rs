//! TLS listeners (issue 16) with real clients: SSL with mutual TLS, the principal taken from the
//! client certificate (`ssl.principal.mapping.rules`) and checked by the authorizer; SASL_SSL
//! with SCRAM-SHA-512; confluent-kafka, kafka-python, aiokafka, kcat and Kafka's Java tools;
//! untrusted or missing client certificates, plaintext bytes on the TLS port and a garbage
//! handshake each close only their own connection with one log line; certificates reloaded
//! without a restart. Certificates are made here with `rcgen`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::metric_value;
use common::cluster::Cluster;
use common::kafka::Tools;
use common::{wait_until, FjordProcess};

/// A CA and the certificates it signs, written as PEM files.
struct Pki {
    name: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
        Pki {
            name: name.to_string(),
            ca,
            ca_key,
            dir: dir.to_path_buf(),
        }
    }

    fn ca_file(&self, name: &str) -> String {
        self.dir
            .join(format!("{name}-ca.pem"))
            .display()
            .to_string()
    }

    /// Issue a certificate for `cn` (with loopback names for a server); returns the paths of
    /// (certificate, key, key + certificate as one PEM keystore).
    fn issue(&self, cn: &str) -> (String, String, String) {
        self.issue_with(cn, false)
    }

    /// [`Pki::issue`]; with `expired`, a certificate that was valid only in 2019.
    fn issue_with(&self, cn: &str, expired: bool) -> (String, String, String) {
        // Loopback names of up to five nodes (cluster nodes listen on 127.0.0.<id>).
        let names: Vec<String> = std::iter::once("localhost".to_string())
            .chain((1..=5).map(|i| format!("127.0.0.{i}")))
            .collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let path = |suffix: &str| self.dir.join(format!("{}-{cn}-{suffix}.pem", self.name));
        std::fs::write(path("cert"), cert.pem()).unwrap();
        std::fs::write(path("key"), key.serialize_pem()).unwrap();
        std::fs::write(
            path("keystore"),
            format!("{}{}", key.serialize_pem(), cert.pem()),
        )
        .unwrap();
        let s = |p: PathBuf| p.display().to_string();
        (s(path("cert")), s(path("key")), s(path("keystore")))
    }
}

fn metric(broker: &FjordProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&broker.http_get("/metrics").body, name, labels).unwrap_or(0.0)
}

/// Run tls_clients.py with the client's TLS files `who` and then `args`; its JSON line.
fn python_json(
    broker: &FjordProcess,
    who: &[&str],
    args: &[&str],
    what: &str,
) -> serde_json::Value {
    let all: Vec<&str> = who.iter().chain(args).copied().collect();
    let out = broker.python("tls_clients.py", &all).success(what);
    let line = out.stdout();
    serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: bad output {line:?}: {e}"))
}

/// A directory for certificates that outlives the brokers' own temp dirs in this test.
fn cert_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fjord-tls-")
        .tempdir()
        .unwrap()
}

#[test]
fn ssl_with_mutual_tls_and_certificate_principals() {
    let dir = cert_dir();
    let pki = Pki::new(dir.path(), "good");
    let rogue = Pki::new(dir.path(), "rogue");
    let (_, _, server_store) = pki.issue("broker");
    let (alice_cert, alice_key, _) = pki.issue("alice");
    let (bob_cert, bob_key, _) = pki.issue("bob");
    let (mallory_cert, mallory_key, _) = rogue.issue("alice");
    let (expired_cert, expired_key, _) = pki.issue_with("carol", true);
    let ca = pki.ca_file("good");
    // alice is a super user by her certificate's CN; bob is anyone else (no ACLs: denied).
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SSL",
        "--set",
        &format!("ssl.keystore.location={server_store}"),
        "--set",
        &format!("ssl.truststore.location={ca}"),
        "--set",
        "ssl.client.auth=required",
        "--set",
        "ssl.principal.mapping.rules=RULE:^CN=([a-z]+)$/$1/,DEFAULT",
        "--set",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "--set",
        "super.users=User:alice",
    ]);
    let b = broker.bootstrap().to_string();
    let alice = ["--ca", &ca, "--cert", &alice_cert, "--key", &alice_key];
    for client in ["confluent", "kafka-python", "aiokafka"] {
        let topic = format!("tls-{client}");
        let out = python_json(
            &broker,
            &alice,
            &["--client", client, "--topic", &topic, "--count", "200"],
            &format!("{client} over mutual TLS"),
        );
        assert_eq!(out["consumed"], 200, "{client}: {out}");
    }
    // Records of ~60 KB make fetch responses with file ranges: copied through TLS, not sent
    // with sendfile.
    let out = python_json(
        &broker,
        &alice,
        &[
            "--client",
            "confluent",
            "--topic",
            "tls-big",
            "--count",
            "100",
            "--repeat",
            "12000",
        ],
        "big records over TLS",
    );
    assert_eq!(out["consumed"], 100, "{out}");

    // kcat, with librdkafka's own TLS keys.
    let kcat_tls = [
        "-X",
        "security.protocol=SSL",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-X",
        &format!("ssl.certificate.location={alice_cert}"),
        "-X",
        &format!("ssl.key.location={alice_key}"),
    ];
    let mut produce = kcat_tls.to_vec();
    produce.extend(["-P", "-t", "tls-kcat"]);
    broker
        .kcat(&produce, Some(b"k1\nk2\nk3\n"))
        .success("kcat produce over TLS");
    let mut consume = kcat_tls.to_vec();
    consume.extend(["-C", "-t", "tls-kcat", "-o", "beginning", "-c", "3", "-e"]);
    let out = broker.kcat(&consume, None).success("kcat consume over TLS");
    assert_eq!(out.stdout().lines().count(), 3, "{}", out.stdout());

    // Kafka's Java tools with PEM stores (KIP-651). A keystore file needs an encrypted key
    // (ssl.key.password) in Java; inline PEM takes a plain one (newlines as `\n` escapes).
    let one_line = |path: &str| std::fs::read_to_string(path).unwrap().replace('\n', "\\n");
    let props = dir.path().join("alice.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nssl.keystore.type=PEM\nssl.keystore.key={}\nssl.keystore.certificate.chain={}\n",
            one_line(&alice_key),
            one_line(&alice_cert),
        ),
    )
    .unwrap();
    let props = props.display().to_string();
    let tools = Tools::new();
    tools.ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &b,
            "--command-config",
            &props,
            "--create",
            "--topic",
            "tls-java",
            "--partitions",
            "2",
        ],
    );
    // Java console producer over mutual TLS.
    let read = tools.console_round_trip(&b, "tls-java", &props, &["j1", "j2", "j3"]);
    assert_eq!(read.len(), 3, "{read:?}");

    // The fjord CLI and `fjord perf` with the same kind of properties file (a PEM keystore file
    // with a plain key).
    let cli_props = dir.path().join("alice-cli.properties");
    std::fs::write(
        &cli_props,
        format!(
            "security.protocol=SSL\nssl.truststore.location={ca}\nssl.keystore.location={}\n",
            pki.dir.join("good-alice-keystore.pem").display()
        ),
    )
    .unwrap();
    let cli_props = cli_props.display().to_string();
    broker
        .cli(&[
            "--command-config",
            &cli_props,
            "topic",
            "create",
            "tls-cli",
            "--partitions",
            "2",
        ])
        .success("fjord topic create over mutual TLS");
    broker
        .cli_with_stdin(
            &["--command-config", &cli_props, "produce", "tls-cli"],
            Some(b"c1\nc2\nc3\n"),
        )
        .success("fjord produce over TLS");
    let out = broker
        .cli(&[
            "--command-config",
            &cli_props,
            "perf",
            "produce",
            "--topic",
            "tls-cli",
            "--num-records",
            "2000",
            "--record-size",
            "1000",
        ])
        .success("fjord perf produce over TLS");
    assert!(out.stdout().contains("2000"), "{}", out.stdout());
    // Without the client certificate the CLI gets a one-line error, not a hang.
    let no_cert = dir.path().join("no-cert.properties");
    std::fs::write(
        &no_cert,
        format!("security.protocol=SSL\nssl.truststore.location={ca}\n"),
    )
    .unwrap();
    let out = broker
        .cli(&[
            "--command-config",
            &no_cert.display().to_string(),
            "topic",
            "list",
        ])
        .failure("fjord without a client certificate");
    assert!(!out.stderr().contains("panicked"), "{}", out.stderr());

    // bob's certificate is trusted, so he connects — as User:bob, who may do nothing.
    python_json(
        &broker,
        &["--ca", &ca, "--cert", &bob_cert, "--key", &bob_key],
        &[
            "--client",
            "confluent",
            "--topic",
            "tls-confluent",
            "--expect-denied",
        ],
        "bob is denied by the authorizer",
    );

    // A certificate from another CA (even with alice's name) and no certificate at all are
    // refused in the handshake.
    let failures_before = metric(
        &broker,
        "fjord_tls_handshakes_total",
        &[("result", "error")],
    );
    python_json(
        &broker,
        &["--ca", &ca, "--cert", &mallory_cert, "--key", &mallory_key],
        &[
            "--client",
            "confluent",
            "--expect-failure",
            "--timeout",
            "10",
        ],
        "an untrusted client certificate",
    );
    python_json(
        &broker,
        &["--ca", &ca, "--cert", &expired_cert, "--key", &expired_key],
        &[
            "--client",
            "confluent",
            "--expect-failure",
            "--timeout",
            "10",
        ],
        "an expired client certificate",
    );
    python_json(
        &broker,
        &[],
        &[
            "--client",
            "kafka-python",
            "--ca",
            &ca,
            "--expect-failure",
            "--timeout",
            "10",
        ],
        "no client certificate",
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &broker,
            "fjord_tls_handshakes_total",
            &[("result", "error")]
        ) >= failures_before + 3.0),
        "handshake failures not counted"
    );

    // Plaintext Kafka bytes on the TLS port: closed, with a line that says what happened.
    let mut s = TcpStream::connect(&b).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // An ApiVersions v0 request frame.
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0])
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "a plaintext request on the TLS port must be closed without an answer"
    );
    // A TLS record header followed by garbage.
    let mut s = TcpStream::connect(&b).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    let _ = s.read(&mut buf);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = broker.all_logs();
            log.contains("not a TLS handshake")
                && log.contains("certificate expired")
                && log.matches("TLS handshake failed").count() >= 5
        }),
        "expected one log line per failed handshake:\n{}",
        broker.log_tail(40)
    );
    assert_eq!(
        metric(
            &broker,
            "fjord_tls_handshakes_total",
            &[("result", "not_tls")]
        ),
        1.0
    );

    // The broker kept serving throughout.
    python_json(
        &broker,
        &alice,
        &[
            "--client",
            "confluent",
            "--topic",
            "tls-after",
            "--count",
            "10",
        ],
        "after the bad connections",
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn sasl_ssl_scram_and_certificate_reload() {
    let dir = cert_dir();
    let pki = Pki::new(dir.path(), "good");
    let (_, _, first_store) = pki.issue("broker-one");
    let (_, _, second_store) = pki.issue("broker-two");
    let keystore = dir.path().join("server-keystore.pem");
    std::fs::copy(&first_store, &keystore).unwrap();
    let ca = pki.ca_file("good");
    let jaas = r#"listener.name.plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret";"#;
    let broker = FjordProcess::start(&[
        "--set",
        "listener.security.protocol.map=PLAINTEXT:SASL_SSL",
        "--set",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
        "--set",
        jaas,
        "--set",
        &format!("ssl.keystore.location={}", keystore.display()),
    ]);
    let b = broker.bootstrap().to_string();
    let admin = dir.path().join("admin.properties");
    std::fs::write(
        &admin,
        format!(
            "security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"admin-secret\";\n"
        ),
    )
    .unwrap();
    let tools = Tools::new();
    tools.ok(
        "kafka-configs",
        &[
            "--bootstrap-server",
            &b,
            "--command-config",
            &admin.display().to_string(),
            "--alter",
            "--add-config",
            "SCRAM-SHA-512=[iterations=4096,password=carol-secret]",
            "--entity-type",
            "users",
            "--entity-name",
            "carol",
        ],
    );
    for client in ["confluent", "kafka-python", "aiokafka"] {
        let topic = format!("sasl-ssl-{client}");
        let out = python_json(
            &broker,
            &[],
            &[
                "--client",
                client,
                "--protocol",
                "SASL_SSL",
                "--ca",
                &ca,
                "--mechanism",
                "SCRAM-SHA-512",
                "--user",
                "carol",
                "--password",
                "carol-secret",
                "--topic",
                &topic,
            ],
            &format!("{client} SASL_SSL SCRAM-SHA-512"),
        );
        assert_eq!(out["consumed"], 100, "{client}: {out}");
    }
    // A wrong password over TLS fails authentication on that connection only.
    python_json(
        &broker,
        &[],
        &[
            "--client",
            "confluent",
            "--protocol",
            "SASL_SSL",
            "--ca",
            &ca,
            "--mechanism",
            "SCRAM-SHA-512",
            "--user",
            "carol",
            "--password",
            "wrong",
            "--expect-failure",
            "--timeout",
            "10",
        ],
        "wrong SCRAM password over TLS",
    );
    // Kafka's Java console tools as carol, SCRAM-SHA-512 over TLS.
    let carol = dir.path().join("carol.properties");
    std::fs::write(
        &carol,
        format!(
            "security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"carol\" password=\"carol-secret\";\n"
        ),
    )
    .unwrap();
    let carol = carol.display().to_string();
    // Java console producer, SCRAM-SHA-512 over TLS.
    let read = tools.console_round_trip(&b, "sasl-ssl-java", &carol, &["s1", "s2", "s3"]);
    assert_eq!(read.len(), 3, "{read:?}");
    // The Java client with a wrong password: an authentication error, and the tool exits.
    let wrong = dir.path().join("wrong.properties");
    std::fs::write(
        &wrong,
        format!(
            "security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"carol\" password=\"wrong\";\n"
        ),
    )
    .unwrap();
    let out = tools
        .run(
            "kafka-topics",
            &[
                "--bootstrap-server",
                &b,
                "--command-config",
                &wrong.display().to_string(),
                "--list",
            ],
            None,
        )
        .failure("kafka-topics.sh with a wrong password");
    assert!(
        out.stderr().contains("SaslAuthenticationException")
            || out.stdout().contains("SaslAuthenticationException"),
        "{}",
        out.stderr()
    );
    // kcat with PLAIN over SASL_SSL.
    broker
        .kcat(
            &[
                "-X",
                "security.protocol=SASL_SSL",
                "-X",
                &format!("ssl.ca.location={ca}"),
                "-X",
                "sasl.mechanism=PLAIN",
                "-X",
                "sasl.username=admin",
                "-X",
                "sasl.password=admin-secret",
                "-L",
            ],
            None,
        )
        .success("kcat metadata over SASL_SSL");

    // Certificate reload: the keystore file is replaced; new connections get the new
    // certificate within the reload check (10 s), without a restart.
    let served = || -> String {
        python_json(
            &broker,
            &[],
            &["--client", "peer-cert", "--ca", &ca],
            "the server's certificate",
        )["cn"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(served(), "broker-one");
    std::fs::copy(&second_store, &keystore).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || served() == "broker-two"),
        "the new certificate was not picked up:\n{}",
        broker.log_tail(20)
    );
    // A broken file keeps the old certificate, with an error logged.
    std::fs::write(&keystore, "not a PEM file").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            &broker,
            "fjord_tls_certificate_reloads_total",
            &[("result", "failure")]
        ) >= 1.0),
        "a broken keystore was not reported"
    );
    assert_eq!(served(), "broker-two");
    broker.assert_no_panic_in_log();
}

#[test]
fn three_nodes_over_mutual_tls_on_data_and_controller_listeners() {
    // Every node's data and controller listeners are TLS with required client certificates:
    // Raft between the controllers, the brokers' metadata fetches and heartbeats, followers
    // fetching from leaders and the transaction clients all connect with the node's own
    // certificate, verified against the listener's truststore.
    let dir = cert_dir();
    let pki = Pki::new(dir.path(), "good");
    let (_, _, broker_store) = pki.issue("broker");
    let (client_cert, client_key, _) = pki.issue("client");
    let ca = pki.ca_file("good");
    let mut cluster = Cluster::builder()
        .config(&format!(
            "listener.security.protocol.map = \"PLAINTEXT:SSL,CONTROLLER:SSL\"\n\
             ssl.keystore.location = \"{broker_store}\"\n\
             ssl.truststore.location = \"{ca}\"\n\
             ssl.client.auth = \"required\"\n"
        ))
        .start();
    let tls = [
        "-X",
        "security.protocol=SSL",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-X",
        &format!("ssl.certificate.location={client_cert}"),
        "-X",
        &format!("ssl.key.location={client_key}"),
    ];
    let tls: Vec<&str> = tls.iter().map(|s| s.as_ref()).collect();
    let node = cluster.node(1);
    let props = dir.path().join("client.properties");
    let one_line = |path: &str| std::fs::read_to_string(path).unwrap().replace('\n', "\\n");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nssl.keystore.type=PEM\nssl.keystore.key={}\nssl.keystore.certificate.chain={}\n",
            one_line(&client_key),
            one_line(&client_cert),
        ),
    )
    .unwrap();
    Tools::new().ok(
        "kafka-topics",
        &[
            "--bootstrap-server",
            node.bootstrap(),
            "--command-config",
            &props.display().to_string(),
            "--create",
            "--topic",
            "replicated",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    let full = |cluster: &Cluster| {
        cluster.brokers().iter().all(|&id| {
            let s = cluster.node(id).isr_sizes("replicated", &tls);
            s.len() == 3 && s.iter().all(|&n| n == 3)
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), || full(&cluster)),
        "the ISRs never reached 3 (followers cannot fetch over TLS?):\n{}",
        cluster.node(2).log_tail(30)
    );
    let ca_args = ["--ca", &ca, "--cert", &client_cert, "--key", &client_key];
    let mut a = ca_args.to_vec();
    a.extend([
        "--client",
        "confluent",
        "--topic",
        "replicated",
        "--count",
        "200",
    ]);
    let out = python_json(
        cluster.node(1),
        &[],
        &a,
        "acks=all produce to RF 3 over TLS",
    );
    assert_eq!(out["consumed"], 200, "{out}");

    for &id in cluster.brokers() {
        let log = cluster.node(id).all_logs();
        assert!(
            !log.contains("TLS handshake failed"),
            "node {id} refused a peer's TLS connection"
        );
    }

    // A broker killed and restarted catches up over TLS; nothing acknowledged is lost.
    cluster.kill9(3);
    let mut a = ca_args.to_vec();
    a.extend([
        "--client",
        "kafka-python",
        "--topic",
        "replicated",
        "--count",
        "100",
    ]);
    python_json(cluster.node(1), &[], &a, "produce with a broker down");
    cluster.start_node(3);
    assert!(
        wait_until(Duration::from_secs(60), || full(&cluster)),
        "the restarted broker never rejoined the ISRs over TLS:\n{}",
        cluster.node(3).log_tail(30)
    );
    let mut consume = tls.clone();
    consume.extend(["-C", "-t", "replicated", "-o", "beginning", "-e", "-q"]);
    let out = cluster
        .node(3)
        .kcat(&consume, None)
        .success("read everything back from the restarted broker's cluster");
    assert_eq!(out.stdout().lines().count(), 300, "records lost");
    for &id in cluster.brokers() {
        // Handshakes cut by the kill end as eof or io; none is refused for its certificate.
        let log = cluster.node(id).all_logs();
        assert!(
            !log.contains("reason=\"error\""),
            "node {id} refused a peer's TLS connection"
        );
        cluster.node(id).assert_no_panic_in_log();
    }
}

#[test]
fn three_nodes_sasl_ssl_with_acls_and_quotas() {
    // docs/security.md's walk-through: clients log in with SCRAM over TLS, brokers with PLAIN
    // over TLS as a super user, the controller listener takes only nodes with a certificate.
    let dir = cert_dir();
    let pki = Pki::new(dir.path(), "good");
    let (_, _, node_store) = pki.issue("node");
    let ca = pki.ca_file("good");
    let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret";"#;
    let cluster = Cluster::builder()
        .config(&format!(
            "listener.security.protocol.map = \"PLAINTEXT:SASL_SSL,CONTROLLER:SSL\"\n\
             ssl.keystore.type = \"PEM\"\n\
             ssl.keystore.location = \"{node_store}\"\n\
             ssl.truststore.location = \"{ca}\"\n\
             listener.name.controller.ssl.client.auth = \"required\"\n\
             sasl.enabled.mechanisms = \"PLAIN,SCRAM-SHA-512\"\n\
             sasl.mechanism.inter.broker.protocol = \"PLAIN\"\n\
             listener.name.plaintext.plain.sasl.jaas.config = '{jaas}'\n\
             authorizer.class.name = \"org.apache.kafka.metadata.authorizer.StandardAuthorizer\"\n\
             super.users = \"User:admin\"\n"
        ))
        .start();
    let admin = dir.path().join("admin.properties");
    std::fs::write(
        &admin,
        format!(
            "security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"admin-secret\";\n"
        ),
    )
    .unwrap();
    let admin = admin.display().to_string();
    let node = cluster.node(1);
    let cli = |args: &[&str], what: &str| {
        let mut full = vec!["--command-config", admin.as_str()];
        full.extend_from_slice(args);
        node.cli(&full).success(what)
    };
    cli(
        &[
            "user",
            "scram",
            "set",
            "--user",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password",
            "alice-secret",
        ],
        "SCRAM user",
    );
    cli(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        "RF 3 topic",
    );
    cli(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:alice",
            "--producer",
            "--consumer",
            "--topic",
            "orders",
            "--group",
            "tls-orders",
        ],
        "alice's ACLs",
    );
    cli(
        &[
            "quota",
            "set",
            "--user",
            "alice",
            "--producer-byte-rate",
            "1048576",
        ],
        "alice's quota",
    );
    let kcat_admin = [
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-X",
        "sasl.mechanism=PLAIN",
        "-X",
        "sasl.username=admin",
        "-X",
        "sasl.password=admin-secret",
    ];
    let kcat_admin: Vec<&str> = kcat_admin.iter().map(|s| s.as_ref()).collect();
    assert!(
        wait_until(Duration::from_secs(60), || cluster.brokers().iter().all(
            |&id| {
                let s = cluster.node(id).isr_sizes("orders", &kcat_admin);
                s.len() == 3 && s.iter().all(|&n| n == 3)
            }
        )),
        "the ISRs never reached 3 over SASL_SSL:\n{}",
        cluster.node(2).log_tail(30)
    );
    let alice = [
        "--protocol",
        "SASL_SSL",
        "--ca",
        &ca,
        "--mechanism",
        "SCRAM-SHA-512",
        "--user",
        "alice",
        "--password",
        "alice-secret",
    ];
    let mut a = alice.to_vec();
    a.extend([
        "--client",
        "confluent",
        "--topic",
        "orders",
        "--count",
        "300",
    ]);
    let out = python_json(node, &[], &a, "alice produces and consumes orders");
    assert_eq!(out["consumed"], 300, "{out}");
    let mut a = alice.to_vec();
    a.extend([
        "--client",
        "confluent",
        "--topic",
        "payments",
        "--expect-denied",
    ]);
    python_json(node, &[], &a, "alice is denied another topic");
    let out = cli(&["quota", "describe", "--user", "alice"], "quota describe");
    assert!(out.stdout().contains("1048576"), "{}", out.stdout());
    for &id in cluster.brokers() {
        let log = cluster.node(id).all_logs();
        assert!(
            !log.contains("reason=\"error\"") && !log.contains("SASL authentication failed"),
            "node {id} refused a peer"
        );
        cluster.node(id).assert_no_panic_in_log();
    }
}
