//! Traffic accounting by rack and usage per topic and client (docs/cross-az.md): what real
//! clients send is counted in the right rack and kind, the totals match what librdkafka
//! counted on the wire, `/v1/traffic` answers for a whole cluster from one admin address, and
//! `fjord cluster traffic` / `fjord usage` print it.

mod common;

use std::time::Duration;

use common::cluster::{metric_value, Cluster};
use common::{fjord_bin, run, FjordProcess, CMD_TIMEOUT};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn traffic(admin: &str, path: &str) -> Value {
    let r = common::http_get(admin, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    json(&r.body)
}

/// (bytes_in, bytes_out) of the flows of `broker` matching `rack` and `kind` (None: any).
fn flow(broker: &Value, rack: Option<&str>, kind: Option<&str>) -> (u64, u64) {
    broker["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| rack.is_none_or(|r| f["client_rack"] == r))
        .filter(|f| kind.is_none_or(|k| f["kind"] == k))
        .fold((0, 0), |(i, o), f| {
            (
                i + f["bytes_in"].as_u64().unwrap(),
                o + f["bytes_out"].as_u64().unwrap(),
            )
        })
}

fn total(io: (u64, u64)) -> u64 {
    io.0 + io.1
}

fn within_one_percent(what: &str, broker: u64, client: u64) {
    let diff = broker.abs_diff(client) as f64;
    assert!(
        diff <= client as f64 * 0.01,
        "{what}: the broker counted {broker} bytes, the client {client} (more than 1% apart)"
    );
}

/// A producer tagged `fjord_az=b` and a consumer with `client.rack=c` against a broker in rack
/// a: their bytes land in racks b and c with the right kinds, and the broker's totals match
/// librdkafka's statistics (`txbytes` + `rxbytes` of every broker connection), zero-copy
/// fetch responses included. Then the CLI views of the same numbers.
#[test]
fn rack_attribution_and_totals_match_librdkafka() {
    let broker = FjordProcess::start(&["--set", "broker.rack=a"]);
    let topic = "metered";
    let (count, value_size) = (2000u64, 1000u64);
    let r = broker
        .python(
            "ck_traffic.py",
            &[
                "--admin",
                broker.admin(),
                "--topic",
                topic,
                "--count",
                &count.to_string(),
                "--value-size",
                &value_size.to_string(),
                "--producer-client-id",
                "ck-traffic-producer,fjord_az=b",
                "--consumer-client-id",
                "ck-traffic-consumer",
                "--client-rack",
                "c",
            ],
        )
        .success("ck_traffic.py");
    let out = json(r.stdout().trim());
    let t = &out["traffic"]["brokers"][0];
    assert_eq!(t["node_id"], 1);
    assert_eq!(t["rack"], "a");
    assert_eq!(t["enabled"], true);
    let client = |who: &str| out[who]["tx"].as_u64().unwrap() + out[who]["rx"].as_u64().unwrap();
    let records = count * value_size;

    // The producer: every one of its requests is in rack b (tagged from its first request).
    let produce = flow(t, Some("b"), Some("produce"));
    assert!(produce.0 > records, "produce bytes in rack b: {t}");
    within_one_percent(
        "producer (rack b)",
        total(flow(t, Some("b"), None)),
        client("producer"),
    );
    // The consumer: its fetches in rack c; what it sent before its first Fetch (ApiVersions,
    // Metadata, ListOffsets) is in rack unknown (no tag, no client.rack.cidrs).
    let consume = flow(t, Some("c"), Some("consume"));
    assert!(consume.1 > records, "consume bytes in rack c: {t}");
    assert_eq!(flow(t, Some("c"), Some("produce")), (0, 0));
    within_one_percent(
        "consumer (racks c and unknown)",
        total(flow(t, Some("c"), None)) + total(flow(t, Some("unknown"), None)),
        client("consumer"),
    );
    within_one_percent(
        "all clients",
        total(flow(t, None, None)),
        client("producer") + client("consumer"),
    );
    assert_eq!(flow(t, None, Some("replication")), (0, 0));

    // Large fetch responses went out with sendfile, and were counted.
    let metrics = broker.http_get("/metrics").body;
    let zero_copy = metric_value(&metrics, "fjord_fetch_zero_copy_bytes_total", &[]).unwrap();
    assert!(zero_copy > 0.0, "no zero-copy fetch bytes:\n{metrics}");
    let counted = metric_value(
        &metrics,
        "fjord_traffic_bytes_total",
        &[
            ("client_rack", "c"),
            ("broker_rack", "a"),
            ("kind", "consume"),
            ("direction", "out"),
        ],
    )
    .unwrap();
    assert!(counted >= consume.1 as f64, "{counted} < {}", consume.1);

    // `fjord cluster traffic`: the matrix, the cross-rack share and the cost.
    let admin = broker.admin();
    let table = broker
        .cli(&[
            "cluster",
            "traffic",
            "--admin",
            admin,
            "--price-per-gb",
            "0.02",
        ])
        .success("cluster traffic")
        .stdout();
    assert!(table.contains("CLIENT RACK \\ BROKER RACK"), "{table}");
    for row in ["\nb ", "\nc ", "\nunknown ", "\nproduce ", "\nconsume "] {
        assert!(table.contains(row), "no row {row:?}:\n{table}");
    }
    assert!(table.contains("cross-rack: "), "{table}");
    assert!(table.contains("at $0.02/GB"), "{table}");
    let j = json(
        &broker
            .cli(&["cluster", "traffic", "--admin", admin, "-o", "json"])
            .success("cluster traffic json")
            .stdout(),
    );
    let cross = j["cross_rack_bytes"].as_u64().unwrap();
    let unknown = j["unknown_rack_bytes"].as_u64().unwrap();
    let all = j["total_bytes"].as_u64().unwrap();
    assert!(all >= total(flow(t, None, None)), "{j:#}");
    // Everything but the unknown rack crossed racks (clients in b and c, broker in a).
    assert!(cross + unknown == all && cross > 2 * records, "{j:#}");
    assert!(j["estimated_cost"].as_f64().unwrap() > 0.0, "{j:#}");
    assert!(j["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["client_rack"] == "b" && m["broker_rack"] == "a" && m["kind"] == "produce"));

    // `fjord usage`: per topic record bytes in, out and stored; per client wire bytes.
    let u = json(
        &broker
            .cli(&["usage", "--admin", admin, "--since", "1h", "-o", "json"])
            .success("usage by topic")
            .stdout(),
    );
    let row = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == topic)
        .unwrap_or_else(|| panic!("no row for {topic}: {u:#}"))
        .clone();
    for k in ["bytes_in", "bytes_out", "bytes_stored"] {
        assert!(row[k].as_u64().unwrap() > records, "{k}: {row}");
    }
    // Record bytes are the frames' payload: less than what the wire carried.
    assert!(row["bytes_in"].as_u64().unwrap() <= produce.0, "{row}");
    let u = json(
        &broker
            .cli(&["usage", "--by", "client", "--admin", admin, "-o", "json"])
            .success("usage by client")
            .stdout(),
    );
    let by_client = |id: &str| {
        u["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == id)
            .unwrap_or_else(|| panic!("no row for client {id}: {u:#}"))
            .clone()
    };
    assert_eq!(
        by_client("ck-traffic-producer,fjord_az=b")["bytes_in"].as_u64(),
        Some(produce.0)
    );
    assert_eq!(
        by_client("ck-traffic-consumer")["bytes_out"].as_u64(),
        Some(consume.1)
    );
    let table = broker
        .cli(&["usage", "--admin", admin])
        .success("usage table")
        .stdout();
    assert!(table.contains("TOPIC") && table.contains(topic), "{table}");
    broker.assert_no_panic_in_log();
}

/// A client that says nothing is placed by `client.rack.cidrs` (loopback works); with
/// `traffic.accounting.enable=false` nothing is counted and the views say so.
#[test]
fn cidr_racks_and_accounting_off() {
    let broker = FjordProcess::start(&[
        "--set",
        "broker.rack=a",
        "--set",
        "client.rack.cidrs=far=10.0.0.0/8,lo=127.0.0.0/24",
    ]);
    broker
        .cli_with_stdin(&["produce", "plain"], Some(b"one\ntwo\nthree\n"))
        .success("produce");
    let t = traffic(broker.admin(), "/v1/traffic");
    let b = &t["brokers"][0];
    assert!(flow(b, Some("lo"), Some("produce")).0 > 0, "{t:#}");
    assert_eq!(total(flow(b, Some("unknown"), None)), 0, "{t:#}");
    // A client.id tag wins over the address.
    broker
        .cli_with_stdin(&["produce", "plain", "--rack", "z"], Some(b"four\n"))
        .success("produce --rack");
    let t = traffic(broker.admin(), "/v1/traffic?scope=local");
    assert!(
        flow(&t["brokers"][0], Some("z"), Some("produce")).0 > 0,
        "{t:#}"
    );

    let off = FjordProcess::start(&["--set", "traffic.accounting.enable=false"]);
    off.cli_with_stdin(&["produce", "quiet"], Some(b"x\n"))
        .success("produce");
    let t = traffic(off.admin(), "/v1/traffic");
    assert_eq!(t["brokers"][0]["enabled"], false);
    assert_eq!(t["brokers"][0]["flows"], serde_json::json!([]));
    let metrics = off.http_get("/metrics").body;
    assert_eq!(
        metric_value(&metrics, "fjord_traffic_accounting_enabled", &[]),
        Some(0.0)
    );
    let table = off
        .cli(&["cluster", "traffic", "--admin", off.admin()])
        .success("cluster traffic")
        .stdout();
    assert!(table.contains("accounting is off on brokers 1"), "{table}");
    // Bad query parameters are refused in one line.
    let r = common::http_get(off.admin(), "/v1/usage?since=3d");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = broker.cli(&["usage", "--admin", broker.admin(), "--by", "group"]);
    assert_eq!(r.output.status.code(), Some(2), "{}", r.describe());
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
}

/// Bad accounting settings fail startup with one line naming the key.
#[test]
fn bad_accounting_config_is_refused_in_one_line() {
    for (key, value) in [
        ("client.rack.cidrs", "a=10.0.0.0/33"),
        ("client.rack.cidrs", "10.0.0.0/8"),
        ("traffic.accounting.enable", "maybe"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(fjord_bin());
        cmd.arg("server")
            .args(["--listeners", "PLAINTEXT://127.0.0.1:0"])
            .args(["--admin-listener", "127.0.0.1:0"])
            .arg("--log-dirs")
            .arg(dir.path())
            .args(["--set", &format!("{key}={value}")]);
        let r = run(cmd, None, CMD_TIMEOUT).failure(&format!("{key}={value}"));
        assert_eq!(r.output.status.code(), Some(2), "{}", r.describe());
        let err = r.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}", r.describe());
        assert!(
            lines[0].contains(key) && lines[0].contains(value),
            "{}",
            r.describe()
        );
    }
}

/// Three brokers in racks a, b, c with a topic of replication factor 3: one admin address
/// shows every broker's traffic, followers' fetches are replication in the followers' racks,
/// and several admin addresses merge to the same view.
#[test]
fn cluster_traffic_from_one_admin_address() {
    let cluster = Cluster::start();
    let n1 = cluster.node(1);
    let bootstrap = cluster.bootstrap_all();
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(fjord_bin());
        cmd.args(["--bootstrap-server", &bootstrap]).args(args);
        run(cmd, None, CMD_TIMEOUT)
    };
    cli(&[
        "topic",
        "create",
        "replicated",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
    ])
    .success("topic create");
    let lines: String = (0..3000)
        .map(|i| format!("record-{i:06}-{}\n", "x".repeat(200)))
        .collect();
    let mut cmd = std::process::Command::new(fjord_bin());
    cmd.args(["--bootstrap-server", &bootstrap]).args([
        "produce",
        "replicated",
        "--rack",
        "a",
        "--acks",
        "all",
    ]);
    run(cmd, Some(lines.as_bytes()), CMD_TIMEOUT).success("produce");

    let racks = ["a", "b", "c"];
    let mut last = Value::Null;
    let ok = common::wait_until(Duration::from_secs(30), || {
        last = traffic(n1.admin(), "/v1/traffic");
        let brokers = last["brokers"].as_array().unwrap();
        brokers.len() == 3
            && brokers
                .iter()
                .any(|b| flow(b, None, Some("replication")).1 > 3000 * 200)
    });
    assert!(ok, "no replication traffic seen from node 1: {last:#}");
    assert_eq!(last["errors"], serde_json::json!([]), "{last:#}");
    let brokers = last["brokers"].as_array().unwrap();
    for (i, b) in brokers.iter().enumerate() {
        assert_eq!(b["node_id"], i as i64 + 1, "{last:#}");
        assert_eq!(b["rack"], racks[i], "{last:#}");
        // Followers fetch in their own racks (never the leader's, never unknown).
        for f in b["flows"].as_array().unwrap() {
            if f["kind"] == "replication" {
                assert_ne!(f["client_rack"], b["rack"], "{last:#}");
                assert!(
                    racks.contains(&f["client_rack"].as_str().unwrap()),
                    "{last:#}"
                );
            }
        }
    }
    // The producer's bytes are in rack a on whichever brokers lead the partitions.
    let produced: u64 = brokers
        .iter()
        .map(|b| flow(b, Some("a"), Some("produce")).0)
        .sum();
    assert!(produced > 3000 * 200, "{last:#}");

    // The CLI from one address, and from all three merged.
    let one = json(
        &n1.cli(&["cluster", "traffic", "--admin", n1.admin(), "-o", "json"])
            .success("cluster traffic")
            .stdout(),
    );
    let all_admins = [1, 2, 3]
        .map(|i| cluster.node(i).admin().to_string())
        .join(",");
    let merged = json(
        &n1.cli(&["cluster", "traffic", "--admin", &all_admins, "-o", "json"])
            .success("cluster traffic, three addresses")
            .stdout(),
    );
    for v in [&one, &merged] {
        let ids: Vec<i64> = v["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["node_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 2, 3], "{v:#}");
        assert!(v["cross_rack_bytes"].as_u64().unwrap() > 0, "{v:#}");
    }
    let table = n1
        .cli(&["cluster", "traffic", "--admin", n1.admin()])
        .success("cluster traffic table")
        .stdout();
    assert!(table.contains("brokers 1, 2, 3"), "{table}");

    // Usage for the cluster: stored bytes count every replica.
    let u = traffic(n1.admin(), "/v1/usage?by=topic&since=10m");
    assert_eq!(u["brokers"].as_array().unwrap().len(), 3, "{u:#}");
    let row = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "replicated")
        .unwrap_or_else(|| panic!("{u:#}"))
        .clone();
    let bytes_in = row["bytes_in"].as_u64().unwrap();
    assert!(bytes_in > 3000 * 200, "{row}");
    let stored = row["bytes_stored"].as_u64().unwrap();
    let ok =
        common::wait_until(Duration::from_secs(20), || {
            let u = traffic(n1.admin(), "/v1/usage?by=topic&since=10m");
            u["rows"].as_array().unwrap().iter().any(|r| {
                r["name"] == "replicated" && r["bytes_stored"].as_u64() == Some(3 * bytes_in)
            })
        });
    assert!(
        ok,
        "stored {stored}, expected 3 x {bytes_in} once replicated"
    );
    cluster.assert_no_panic_in_logs();
}
