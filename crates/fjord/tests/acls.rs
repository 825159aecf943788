//! ACLs with real clients (issue 16): a broker with `authorizer.class.name` set, ACLs managed
//! with `fjord acl` and Kafka's own `kafka-acls.sh`, enforced for kcat (librdkafka) and
//! checked in the audit log and the decisions metric.
//!
//! Plaintext connections are all `User:ANONYMOUS`, so the tests tell allowed from denied by
//! resource: `allow.everyone.if.no.acl.found=true` lets resources without ACLs through, and
//! DENY or ALLOW ACLs for ANONYMOUS on a resource decide there.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::kafka::Tools;
use common::{ck_consume, ck_produce, wait_until, FjordProcess};

const AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";

fn secured(allow_everyone: bool) -> FjordProcess {
    let allow = format!("allow.everyone.if.no.acl.found={allow_everyone}");
    FjordProcess::start(&[
        "--set",
        AUTHORIZER,
        "--set",
        &allow,
        "--set",
        "auto.create.topics.enable=false",
    ])
}

/// Produce one line with kcat; the output and whether it was delivered.
fn kcat_produce(b: &FjordProcess, topic: &str) -> common::CmdResult {
    b.kcat(&["-P", "-t", topic, "-m", "10"], Some(b"hello\n"))
}

#[test]
fn acls_deny_and_allow_topics_for_real_clients() {
    let b = secured(true);
    b.create_topic("open", 1, &[]);
    b.create_topic("secret", 1, &[]);
    kcat_produce(&b, "secret").success("produce before any ACL");

    // Deny ANONYMOUS everything on `secret`.
    let out = b
        .cli(&[
            "acl",
            "add",
            "--deny-principal",
            "User:ANONYMOUS",
            "--operation",
            "All",
            "--topic",
            "secret",
        ])
        .success("fjord acl add");
    assert!(
        out.stdout().contains("Created 1 ACL(s)"),
        "{}",
        out.describe()
    );
    let list = b.cli(&["acl", "list"]).success("fjord acl list").stdout();
    assert!(
        list.contains("secret") && list.contains("DENY") && list.contains("User:ANONYMOUS"),
        "{list}"
    );

    // Produce: WRITE on the topic.
    kcat_produce(&b, "open").success("produce to open");
    let denied = kcat_produce(&b, "secret");
    assert!(
        denied.describe().contains("Topic authorization failed"),
        "produce to secret: {}",
        denied.describe()
    );
    // Fetch: READ on the topic.
    let fetch = b.kcat(&["-C", "-t", "secret", "-e", "-o", "beginning"], None);
    assert!(
        fetch.describe().contains("Topic authorization failed"),
        "consume secret: {}",
        fetch.describe()
    );
    b.kcat(&["-C", "-t", "open", "-e", "-o", "beginning"], None)
        .success("consume open");
    // Metadata: the full listing hides the topic.
    let meta = b.kcat(&["-L"], None).success("kcat -L").stdout();
    assert!(
        meta.contains("\"open\"") && !meta.contains("\"secret\""),
        "{meta}"
    );

    // The audit log names who, what and where.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = b.all_logs();
            log.contains("authorization denied")
                && log.contains("principal=User:ANONYMOUS")
                && log.contains("resource=\"secret\"")
        }),
        "no audit line: {}",
        b.log_tail(40)
    );
    let metrics = b.http_get("/metrics").body;
    let denied_topics = metrics
        .lines()
        .find(|l| {
            l.starts_with("fjord_authorizer_decisions_total")
                && l.contains("result=\"denied\"")
                && l.contains("resource_type=\"topic\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(denied_topics >= 2.0, "{metrics}");

    // Kafka's own tool lists the ACL and removes it.
    let tools = Tools::new();
    let listed = tools.ok(
        "kafka-acls",
        &[
            "--bootstrap-server",
            b.bootstrap(),
            "--list",
            "--topic",
            "secret",
        ],
    );
    assert!(
        listed.contains("User:ANONYMOUS") && listed.contains("DENY"),
        "{listed}"
    );
    let removed = b
        .cli(&["acl", "remove", "--topic", "secret"])
        .success("fjord acl remove")
        .stdout();
    assert!(removed.contains("Removed 1 ACL(s)"), "{removed}");
    kcat_produce(&b, "secret").success("produce once the ACL is gone");
    b.assert_no_panic_in_log();
}

#[test]
fn kafka_acls_tool_adds_prefixed_acls_and_only_acls_allow() {
    // The first ACLs go in while resources without ACLs are open to everyone; the broker then
    // restarts with allow.everyone.if.no.acl.found=false and only the ACLs allow.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fjord.toml");
    let write = |allow: bool| {
        std::fs::write(
            &file,
            format!(
                "\"authorizer.class.name\" = \"org.apache.kafka.metadata.authorizer.StandardAuthorizer\"\n\
                 \"allow.everyone.if.no.acl.found\" = \"{allow}\"\n\
                 \"auto.create.topics.enable\" = \"false\"\n"
            ),
        )
        .unwrap()
    };
    write(true);
    let mut b = FjordProcess::start(&["--config", file.to_str().unwrap()]);
    b.create_topic("app-orders", 1, &[]);
    b.create_topic("other", 1, &[]);
    let tools = Tools::new();
    let bs = b.bootstrap().to_string();
    for args in [
        vec!["--cluster", "--operation", "All"],
        vec![
            "--topic",
            "app-",
            "--resource-pattern-type",
            "prefixed",
            "--operation",
            "All",
        ],
    ] {
        let mut full = vec![
            "--bootstrap-server",
            &bs,
            "--add",
            "--allow-principal",
            "User:ANONYMOUS",
        ];
        full.extend(args);
        tools.ok("kafka-acls", &full);
    }
    write(false);
    b.restart();
    kcat_produce(&b, "app-orders").success("produce to a topic of the prefix");
    let denied = kcat_produce(&b, "other");
    assert!(
        denied.describe().contains("Topic authorization failed"),
        "{}",
        denied.describe()
    );
    let meta = b.kcat(&["-L"], None).success("kcat -L").stdout();
    assert!(
        meta.contains("app-orders") && !meta.contains("\"other\""),
        "{meta}"
    );
    // The ACLs survived the restart (they are metadata records).
    let listed = b
        .cli(&["-o", "json", "acl", "list"])
        .success("acl list")
        .stdout();
    assert!(
        listed.contains("PREFIXED") && listed.contains("app-") && listed.contains("CLUSTER"),
        "{listed}"
    );
}

#[test]
fn acl_apis_without_an_authorizer_answer_security_disabled() {
    let b = FjordProcess::start(&[]);
    let out = b
        .cli(&["acl", "list"])
        .failure("acl list without authorizer");
    assert!(
        out.describe().contains("SECURITY_DISABLED"),
        "{}",
        out.describe()
    );
}

/// Brokers fetch from each other as `User:ANONYMOUS` on plaintext: with the broker principal in
/// `super.users` (as Kafka requires) and nothing allowed without ACLs, a 3-node cluster keeps
/// its replicas in sync under acks=all produce, and the follower fetches are authorized as
/// CLUSTER_ACTION (counted as allowed cluster decisions).
#[test]
fn three_nodes_replicate_with_acls_on() {
    let mut c = Cluster::builder()
        .config(
            "\"authorizer.class.name\" = \"org.apache.kafka.metadata.authorizer.StandardAuthorizer\"\n\
             \"super.users\" = \"User:ANONYMOUS\"\n\
             \"allow.everyone.if.no.acl.found\" = \"false\"",
        )
        .start();
    c.node(1)
        .cli(&[
            "topic",
            "create",
            "acl-repl",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=3",
        ])
        .success("create topic");
    c.wait_isr("acl-repl", None, 3);
    ck_produce(c.node(1), "acl-repl", 300, &["--acks", "all"]);
    let layout = c.wait_isr("acl-repl", None, 3);
    assert_eq!(layout.len(), 3, "{layout:#?}");
    assert_eq!(ck_consume(c.node(2), "acl-repl", 300).len(), 300);
    let cluster_allowed = |m: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("fjord_authorizer_decisions_total")
                    && l.contains("result=\"allowed\"")
                    && l.contains("resource_type=\"cluster\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let total: f64 = (1..=3)
        .map(|i| cluster_allowed(&c.node(i).http_get("/metrics").body))
        .sum();
    assert!(total > 0.0, "no CLUSTER_ACTION decisions counted");
    c.assert_no_panic_in_logs();
}

/// Groups, transactional ids and admin APIs with confluent-kafka: a DENY ACL gives the client
/// the authorization error, the same operation on a resource without ACLs succeeds.
#[test]
fn groups_transactions_and_admin_apis_are_authorized() {
    let b = secured(true);
    b.create_topic("events", 1, &[]);
    b.create_topic("keep", 1, &[]);
    kcat_produce(&b, "events").success("produce");
    for args in [
        &["--group", "g-denied", "--operation", "Read"][..],
        &["--transactional-id", "tx-denied", "--operation", "Write"][..],
        &["--topic", "keep", "--operation", "Delete"][..],
        &["--topic", "keep", "--operation", "DescribeConfigs"][..],
    ] {
        let mut full = vec!["acl", "add", "--deny-principal", "User:ANONYMOUS"];
        full.extend_from_slice(args);
        b.cli(&full).success("acl add");
    }
    let probe = |args: &[&str]| {
        b.python("ck_acl_probe.py", args)
            .success("ck_acl_probe.py")
            .stdout()
            .trim()
            .to_string()
    };
    assert_eq!(
        probe(&["consume-group", "g-denied", "events"]),
        "GROUP_AUTHORIZATION_FAILED"
    );
    assert_eq!(probe(&["consume-group", "g-ok", "events"]), "OK");
    assert_eq!(
        probe(&["init-transactions", "tx-denied"]),
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    );
    assert_eq!(probe(&["init-transactions", "tx-ok"]), "OK");
    assert_eq!(
        probe(&["delete-topic", "keep"]),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        probe(&["describe-topic-configs", "keep"]),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(probe(&["describe-topic-configs", "events"]), "OK");
    assert_eq!(probe(&["delete-topic", "events"]), "OK");
    // SCRAM credentials need ALTER on the cluster (last: CreateAcls needs it too).
    b.cli(&["user", "scram", "set", "--user", "u1", "--password", "p1"])
        .success("scram set while allowed");
    b.cli(&[
        "acl",
        "add",
        "--deny-principal",
        "User:ANONYMOUS",
        "--operation",
        "Alter",
        "--cluster",
    ])
    .success("deny cluster ALTER");
    let denied = b
        .cli(&["user", "scram", "set", "--user", "u2", "--password", "p2"])
        .failure("scram set without ALTER on the cluster");
    assert!(
        denied.describe().contains("CLUSTER_AUTHORIZATION_FAILED"),
        "{}",
        denied.describe()
    );
    b.assert_no_panic_in_log();
}

/// Host-specific ACLs: the only ACL of a topic allows DESCRIBE from 127.0.0.2, so a client
/// connecting from 127.0.0.2 sees the topic and one from 127.0.0.1 gets
/// TOPIC_AUTHORIZATION_FAILED (29), although both are `User:ANONYMOUS`.
#[test]
fn host_acls_tell_loopback_addresses_apart() {
    let b = secured(true);
    b.create_topic("hosty", 1, &[]);
    b.cli(&[
        "acl",
        "add",
        "--allow-principal",
        "User:ANONYMOUS",
        "--allow-host",
        "127.0.0.2",
        "--operation",
        "Describe",
        "--topic",
        "hosty",
    ])
    .success("acl add");
    let error_from = |source: &str| {
        b.python("metadata_from_host.py", &["--source", source, "hosty"])
            .success("metadata_from_host.py")
            .stdout()
            .trim()
            .to_string()
    };
    assert_eq!(error_from("127.0.0.2"), "0");
    assert_eq!(error_from("127.0.0.1"), "29");
    let log = b.all_logs();
    assert!(
        log.contains("host=\"127.0.0.1\"") && log.contains("resource=\"hosty\""),
        "{}",
        b.log_tail(20)
    );
}
