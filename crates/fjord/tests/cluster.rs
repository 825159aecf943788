//! A three-node cluster (every node broker and controller, racks a, b and c) on 127.0.0.1-3:
//! replicas spread over racks, metadata converging on every broker, the active controller
//! killed with SIGKILL and replaced, fencing of a broker that stops heartbeating, and a new
//! broker epoch for every restart, with the old epoch refused.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{send_signal, FjordProcess};
use serde_json::Value;

/// A free port on `ip` (bound, then released; the node binds it a moment later).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    nodes: Vec<FjordProcess>,
    voters: String,
}

impl Cluster {
    /// Start nodes 1..=3 on 127.0.0.N, racks a, b, c, each broker and controller, and wait
    /// for every ready line.
    fn start() -> Cluster {
        Cluster::start_with(&["broker,controller"; 3])
    }

    /// Start node N (from 1) on 127.0.0.N with `roles[N-1]`, racks a, b, c, d, ...
    fn start_with(roles: &[&str]) -> Cluster {
        let ports: Vec<u16> = (1..=roles.len())
            .map(|i| free_port(&format!("127.0.0.{i}")))
            .collect();
        let voters = (1..=roles.len())
            .filter(|i| roles[i - 1].contains("controller"))
            .map(|i| format!("{i}@127.0.0.{i}:{}", ports[i - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<FjordProcess> = (1..=roles.len())
            .map(|i| {
                let mut listeners = Vec::new();
                if roles[i - 1].contains("broker") {
                    listeners.push(format!("PLAINTEXT://127.0.0.{i}:0"));
                }
                if roles[i - 1].contains("controller") {
                    listeners.push(format!("CONTROLLER://127.0.0.{i}:{}", ports[i - 1]));
                }
                FjordProcess::create_node(&format!(
                    r#"node.id = {i}
process.roles = "{roles}"
broker.rack = "{rack}"
listeners = "{listeners}"
controller.quorum.voters = "{voters}"
admin.listener = "127.0.0.{i}:0"
broker.heartbeat.interval.ms = 200
broker.session.timeout.ms = 2000
group.initial.rebalance.delay.ms = 0
"#,
                    roles = roles[i - 1],
                    rack = (b'a' + (i as u8 - 1)) as char,
                    listeners = listeners.join(","),
                ))
            })
            .collect();
        let pending: Vec<_> = nodes.iter_mut().map(|n| n.spawn_only()).collect();
        for (n, rx) in nodes.iter_mut().zip(pending) {
            n.wait_ready(rx);
        }
        Cluster { nodes, voters }
    }

    fn node(&self, id: usize) -> &FjordProcess {
        &self.nodes[id - 1]
    }

    /// `fjord cluster status --json` from node `via`.
    fn status(&self, via: usize) -> Option<Value> {
        let r = self.node(via).cli(&[
            "cluster",
            "status",
            "--json",
            "--admin",
            self.node(via).admin(),
        ]);
        r.ok()
            .then(|| serde_json::from_str(&r.stdout()).expect("status JSON"))
    }

    /// Poll `f` on the status from `via` until it holds.
    fn wait_status(&self, via: usize, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status(via) {
                if f(&s["status"]) {
                    return s;
                }
                if Instant::now() > deadline {
                    panic!("{what}: last status {s:#}");
                }
            } else if Instant::now() > deadline {
                panic!("{what}: no status from node {via}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn broker(status: &Value, id: i64) -> &Value {
    status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node_id"] == id)
        .unwrap_or_else(|| panic!("broker {id} not in {status:#}"))
}

fn unfenced(status: &Value) -> usize {
    status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["fenced"] == false)
        .count()
}

/// Partition → (leader, replicas, isr) of `topic` as node `via` answers Metadata (kcat -L -J).
fn layout(node: &FjordProcess, topic: &str) -> BTreeMap<i64, (i64, Vec<i64>, Vec<i64>)> {
    let r = node
        .kcat(&["-L", "-J", "-t", topic], None)
        .success("kcat -L");
    let v: Value = serde_json::from_str(&r.stdout()).expect("kcat JSON");
    let t = &v["topics"][0];
    assert!(t["error"].is_null(), "{topic}: {t:#}");
    let ids = |a: &Value| -> Vec<i64> {
        a.as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_i64().unwrap())
            .collect()
    };
    t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                (
                    p["leader"].as_i64().unwrap(),
                    ids(&p["replicas"]),
                    ids(&p["isrs"]),
                ),
            )
        })
        .collect()
}

/// Wait until every node in `via` answers the same layout for `topic`; returns it.
fn converged(
    c: &Cluster,
    via: &[usize],
    topic: &str,
    ok: impl Fn(&BTreeMap<i64, (i64, Vec<i64>, Vec<i64>)>) -> bool,
) -> BTreeMap<i64, (i64, Vec<i64>, Vec<i64>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<_> = via.iter().map(|i| layout(c.node(*i), topic)).collect();
        if views.windows(2).all(|w| w[0] == w[1]) && ok(&views[0]) {
            return views[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "brokers {via:?} disagree on {topic}: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn replicas_spread_over_racks_and_controller_failover() {
    let c = Cluster::start();
    c.wait_status(1, "three unfenced brokers", |s| unfenced(s) == 3);

    // RF 3 over 3 racks: every partition on all three brokers, leaders balanced.
    c.node(2)
        .cli(&[
            "topic",
            "create",
            "spread",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
        ])
        .success("create spread");
    let spread = converged(&c, &[1, 2, 3], "spread", |l| l.len() == 6);
    let mut leads = BTreeMap::new();
    for (p, (leader, replicas, isr)) in &spread {
        let mut r = replicas.clone();
        r.sort_unstable();
        assert_eq!(r, vec![1, 2, 3], "partition {p} replicas {replicas:?}");
        assert_eq!(isr.len(), 3);
        assert_eq!(*leader, replicas[0], "preferred leader leads partition {p}");
        *leads.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(
        leads.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{leads:?}"
    );

    // Clients reach the leaders through any broker.
    let lines: String = (0..300).map(|i| format!("r{i}\n")).collect();
    c.node(1)
        .kcat(&["-P", "-t", "spread"], Some(lines.as_bytes()))
        .success("produce");
    let got = c
        .node(3)
        .kcat(&["-C", "-t", "spread", "-e", "-q"], None)
        .success("consume");
    assert_eq!(got.stdout().lines().count(), 300);

    // A consumer group: its coordinator is the leader of its __consumer_offsets partition,
    // found through any broker; committed offsets are there for the next member.
    let group = [
        "-G",
        "g1",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-q",
        "spread",
    ];
    let first = c.node(1).kcat(&group, None).success("group consume");
    assert_eq!(first.stdout().lines().count(), 300);
    let again = c.node(3).kcat(&group, None).success("group consume again");
    assert_eq!(again.stdout().lines().count(), 0, "offsets were committed");
    converged(&c, &[1, 2, 3], "__consumer_offsets", |l| l.len() == 50);

    // Kill the active controller; the others elect a new one and admin keeps working.
    let s = c.wait_status(1, "an active controller", |s| {
        s["active_controller"].is_i64()
    });
    let old = s["status"]["active_controller"].as_i64().unwrap() as usize;
    let old_epoch = broker(&s["status"], old as i64)["broker_epoch"]
        .as_i64()
        .unwrap();
    let mut c = c;
    c.nodes[old - 1].kill9();
    let others: Vec<usize> = (1..=3).filter(|i| *i != old).collect();
    let via = others[0];
    let s = c.wait_status(via, "a new active controller", |s| {
        s["active_controller"]
            .as_i64()
            .is_some_and(|a| a as usize != old)
    });
    let new = s["status"]["active_controller"].as_i64().unwrap();
    assert_ne!(new as usize, old);
    // The dead broker is fenced after its session and leads nothing any more.
    c.wait_status(via, "the killed broker fenced", |s| {
        broker(s, old as i64)["fenced"] == true
    });
    c.node(others[1])
        .cli(&[
            "topic",
            "create",
            "after",
            "--partitions",
            "4",
            "--replication-factor",
            "2",
        ])
        .success("create after failover");
    let after = converged(&c, &others, "after", |l| l.len() == 4);
    for (p, (leader, replicas, _)) in &after {
        assert!(
            !replicas.contains(&(old as i64)),
            "partition {p} placed on the fenced broker"
        );
        assert!(others.contains(&(*leader as usize)));
    }
    converged(&c, &others, "spread", |l| {
        l.values()
            .all(|(leader, _, isr)| *leader as usize != old && !isr.contains(&(old as i64)))
    });

    // It comes back with a new, larger epoch, is unfenced, and catches up.
    c.nodes[old - 1].restart();
    let s = c.wait_status(via, "the restarted broker unfenced", |s| {
        let b = broker(s, old as i64);
        b["fenced"] == false && b["broker_epoch"].as_i64().unwrap() > old_epoch
    });
    let new_epoch = broker(&s["status"], old as i64)["broker_epoch"]
        .as_i64()
        .unwrap();
    converged(&c, &[1, 2, 3], "after", |l| l.len() == 4);
    converged(&c, &[1, 2, 3], "spread", |l| l.len() == 6);

    // A heartbeat carrying the previous incarnation's epoch is refused.
    let voters = fjord_metadata::quorum::parse_quorum_voters(&c.voters).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = fjord_metadata::quorum::ControllerClient::new(voters);
    let stale = rt.block_on(client.submit(
        fjord_metadata::ControllerRequest::Heartbeat {
            node_id: old as i32,
            broker_epoch: old_epoch,
            current_metadata_offset: i64::MAX / 2,
            want_fence: false,
        },
        Duration::from_secs(10),
    ));
    match stale {
        Err(fjord_metadata::quorum::SubmitError::Refused { code, .. }) => assert_eq!(code, 77),
        other => panic!("stale epoch heartbeat: {other:?}"),
    }
    let s = c.status(via).unwrap();
    assert_eq!(
        broker(&s["status"], old as i64)["broker_epoch"]
            .as_i64()
            .unwrap(),
        new_epoch,
        "the stale heartbeat changed nothing"
    );
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}

#[test]
fn a_broker_that_stops_heartbeating_is_fenced_until_it_returns() {
    let c = Cluster::start();
    c.wait_status(1, "three unfenced brokers", |s| unfenced(s) == 3);
    c.node(1)
        .cli(&[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ])
        .success("create t");
    converged(&c, &[1, 2, 3], "t", |l| l.len() == 3);
    let s = c.wait_status(1, "an active controller", |s| {
        s["active_controller"].is_i64()
    });
    let active = s["status"]["active_controller"].as_i64().unwrap() as usize;
    // Freeze a broker that is not the active controller.
    let frozen = (1..=3).find(|i| *i != active).unwrap();
    let epoch = broker(&s["status"], frozen as i64)["broker_epoch"].clone();
    send_signal(c.node(frozen).pid(), "STOP");
    c.wait_status(active, "the frozen broker fenced", |s| {
        broker(s, frozen as i64)["fenced"] == true
    });
    let live: Vec<usize> = (1..=3).filter(|i| *i != frozen).collect();
    converged(&c, &live, "t", |l| {
        l.values()
            .all(|(leader, _, isr)| *leader as usize != frozen && !isr.contains(&(frozen as i64)))
    });
    // Thawed, it heartbeats again with the same epoch and is unfenced.
    send_signal(c.node(frozen).pid(), "CONT");
    let s = c.wait_status(active, "the thawed broker unfenced", |s| {
        broker(s, frozen as i64)["fenced"] == false
    });
    assert_eq!(broker(&s["status"], frozen as i64)["broker_epoch"], epoch);
    let text = c.node(frozen).http_get("/metrics").body;
    assert!(text.contains("fjord_broker_epoch"), "{text}");
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}

#[test]
fn broker_only_and_controller_only_nodes() {
    // Nodes 1 and 2: broker and controller; node 3: controller only; node 4: broker only,
    // which follows the metadata log over the controller listener.
    let c = Cluster::start_with(&[
        "broker,controller",
        "broker,controller",
        "controller",
        "broker",
    ]);
    let s = c.wait_status(4, "three unfenced brokers", |s| unfenced(s) == 3);
    let ids: Vec<i64> = s["status"]["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["node_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 4], "the controller-only node is no broker");
    assert_eq!(s["status"]["voters"].as_array().unwrap().len(), 3);
    assert_eq!(
        c.node(3).bootstrap(),
        "-",
        "a controller-only node has no Kafka listener"
    );
    c.wait_status(3, "status from the controller-only node", |s| {
        unfenced(s) == 3
    });

    // Created through the broker-only node: replicas on brokers 1, 2 and 4 (racks a, b, d).
    c.node(4)
        .cli(&[
            "topic",
            "create",
            "mixed",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ])
        .success("create through the broker-only node");
    let l = converged(&c, &[1, 2, 4], "mixed", |l| l.len() == 3);
    for (_, (_, replicas, _)) in l {
        let mut r = replicas.clone();
        r.sort_unstable();
        assert_eq!(r, vec![1, 2, 4]);
    }
    let lines: String = (0..50).map(|i| format!("m{i}\n")).collect();
    c.node(4)
        .kcat(&["-P", "-t", "mixed"], Some(lines.as_bytes()))
        .success("produce via node 4");
    let got = c
        .node(1)
        .kcat(&["-C", "-t", "mixed", "-e", "-q"], None)
        .success("consume via node 1");
    assert_eq!(got.stdout().lines().count(), 50);

    // Deleted through node 1: every broker forgets it and removes its directories.
    c.node(1)
        .cli(&["topic", "delete", "mixed"])
        .success("delete");
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in [1, 2, 4] {
        loop {
            // (A Metadata request naming the topic would auto-create it again.)
            let r = c.node(i).cli(&["topic", "list"]);
            let gone = r.ok()
                && !r
                    .stdout()
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some("mixed"));
            let dirs_left = std::fs::read_dir(c.node(i).data_dir())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("mixed-"));
            if gone && !dirs_left {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} still has topic mixed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for n in &c.nodes {
        n.assert_no_panic_in_log();
    }
}
