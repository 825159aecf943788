//! Cross-AZ behaviour on a 3-rack cluster (nodes 1, 2, 3 in racks a, b, c) with real clients:
//! rack-aware group assignment under both group protocols, and topics led from every rack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{Cluster, Layout};
use common::member::Member;
use common::wait_until;

/// Node N's rack in [`Cluster`]: a, b, c.
fn rack_of(node: i64) -> String {
    ((b'a' + (node as u8 - 1)) as char).to_string()
}

/// Create `name` with `partitions` partitions of `rf` replicas through node 1 and wait until
/// every broker shows each partition led.
fn create(c: &mut Cluster, name: &str, partitions: u32, rf: u32) -> Layout {
    let (p, r) = (partitions.to_string(), rf.to_string());
    c.node(1)
        .cli(&[
            "topic",
            "create",
            name,
            "--partitions",
            &p,
            "--replication-factor",
            &r,
        ])
        .success("create topic");
    c.wait_layout(name, "every partition led", |l| {
        l.len() == partitions as usize && l.values().all(|p| p.leader >= 0)
    })
}

/// Three consumers, one per rack, in `group` with `args`: wait until each owns two
/// partitions, all six owned once, every one in a rack holding a replica of it.
fn assert_rack_local_group(c: &Cluster, topic: &str, layout: &Layout, group: &str, args: &[&str]) {
    let racks_of =
        |p: i64| -> BTreeSet<String> { layout[&p].replicas.iter().map(|n| rack_of(*n)).collect() };
    let members: Vec<(String, Member)> = ["a", "b", "c"]
        .iter()
        .map(|r| {
            let rack = format!("client.rack={r}");
            let mut extra = args.to_vec();
            extra.extend_from_slice(&["-X", &rack]);
            let m = Member::start_at(
                &c.bootstrap_all(),
                &c.scratch(),
                &format!("{group}-{r}"),
                topic,
                group,
                &extra,
            );
            (r.to_string(), m)
        })
        .collect();
    let local = |ms: &[(String, Member)]| -> BTreeMap<String, BTreeSet<i64>> {
        ms.iter().map(|(r, m)| (r.clone(), m.owned())).collect()
    };
    let ok = wait_until(Duration::from_secs(90), || {
        let owned = local(&members);
        let all: Vec<i64> = owned.values().flatten().copied().collect();
        all.len() == 6
            && all.iter().collect::<BTreeSet<_>>().len() == 6
            && owned
                .iter()
                .all(|(r, ps)| ps.len() == 2 && ps.iter().all(|p| racks_of(*p).contains(r)))
    });
    let owned = local(&members);
    let leaders: BTreeMap<i64, Vec<String>> = layout
        .iter()
        .map(|(p, i)| (*p, i.replicas.iter().map(|n| rack_of(*n)).collect()))
        .collect();
    assert!(
        ok,
        "group {group} ({args:?}): each consumer should own the two partitions of its rack; \
         owned by rack {owned:?}, replica racks by partition {leaders:?}"
    );
}

/// The case the issue reports: an RF-1 topic of 6 partitions, 2 per rack, and one KIP-848
/// consumer per rack. The broker used to give the assignor its own rack for every partition,
/// so rack-awareness never engaged; now each consumer gets its rack's two partitions. The
/// classic protocol, where librdkafka's own rack-aware range assignor (KIP-881) works from
/// Metadata's broker racks, gives the same.
#[test]
fn each_rack_consumer_gets_its_racks_partitions_under_both_protocols() {
    let mut c = Cluster::start();
    let layout = create(&mut c, "az", 6, 1);
    let per_rack: BTreeMap<String, usize> = layout.values().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(rack_of(p.replicas[0])).or_default() += 1;
        m
    });
    assert_eq!(
        per_rack.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "placement puts two partitions in each rack: {layout:?}"
    );
    assert_rack_local_group(&c, "az", &layout, "g-848", &["--protocol", "consumer"]);
    assert_rack_local_group(&c, "az", &layout, "g-classic", &["--assignor", "range"]);
    c.assert_no_panic_in_logs();
}

/// Preferred leaders of every topic are spread over the racks, whatever the cluster's load:
/// a producer in any rack finds partitions of each topic led locally.
#[test]
fn every_topic_is_led_from_every_rack() {
    let mut c = Cluster::start();
    // Topics of 1 and 2 partitions first leave the cluster's leader counts uneven.
    create(&mut c, "one", 1, 3);
    create(&mut c, "two", 2, 3);
    for (name, n) in [("three", 3), ("six", 6)] {
        let layout = create(&mut c, name, n, 3);
        let mut led: BTreeMap<String, u32> = BTreeMap::new();
        for p in layout.values() {
            *led.entry(rack_of(p.replicas[0])).or_default() += 1;
        }
        assert_eq!(
            led.values().copied().collect::<Vec<_>>(),
            vec![n / 3; 3],
            "{name}: preferred leaders by rack {led:?} ({layout:?})"
        );
    }
    // Partitions added later continue the spread.
    c.node(1)
        .cli(&["topic", "add-partitions", "three", "--total", "6"])
        .success("add partitions");
    let layout = c.wait_layout("three", "six partitions led", |l| {
        l.len() == 6 && l.values().all(|p| p.leader >= 0)
    });
    let mut led: BTreeMap<String, u32> = BTreeMap::new();
    for p in layout.values() {
        *led.entry(rack_of(p.replicas[0])).or_default() += 1;
    }
    assert_eq!(
        led.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "three after growing to 6: {led:?} ({layout:?})"
    );
}

const RACK_AWARE_SELECTOR: &str =
    "replica.selector.class = \"org.apache.kafka.common.replica.RackAwareReplicaSelector\"\n";

/// Bytes by (broker rack, client rack, kind) over the whole cluster, from one admin address.
type Flows = BTreeMap<(String, String, String), u64>;

fn traffic(c: &Cluster) -> Flows {
    let r = c.node(1).http_get("/v1/traffic");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["errors"].as_array().map_or(0, |e| e.len()), 0, "{v}");
    let mut out = Flows::new();
    for b in v["brokers"].as_array().unwrap() {
        let rack = b["rack"].as_str().unwrap().to_string();
        for f in b["flows"].as_array().unwrap() {
            let key = (
                rack.clone(),
                f["client_rack"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            );
            *out.entry(key).or_default() += f["bytes"].as_u64().unwrap();
        }
    }
    out
}

/// Per kind: (bytes between a client and a broker in another rack, all bytes whose client rack
/// is known) from `before` to `after`.
fn cross_rack(before: &Flows, after: &Flows) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (k @ (broker, client, kind), n) in after {
        let d = n - before.get(k).copied().unwrap_or(0);
        if client == "unknown" || client == "other" {
            continue;
        }
        let e = out.entry(kind.clone()).or_default();
        e.1 += d;
        if client != broker {
            e.0 += d;
        }
    }
    out
}

/// Produces `count` unkeyed 1 KB records per rack through the rack's own node: with
/// `fjord produce --rack` when `aware`, else with librdkafka's default partitioner and only a
/// `fjord_az` tag in the client id (so the brokers know the client's rack, but the client
/// picks partitions over all racks).
fn produce_per_rack(c: &Cluster, topic: &str, count: usize, aware: bool) {
    let line = "x".repeat(1000);
    let input: String = (0..count).map(|i| format!("{i}-{line}\n")).collect();
    for (i, r) in ["a", "b", "c"].iter().enumerate() {
        let node = c.node(i + 1);
        if aware {
            node.cli_with_stdin(
                &["produce", topic, "--acks", "all", "--rack", r],
                Some(input.as_bytes()),
            )
            .success("produce --rack");
        } else {
            let acks = c.scratch().join(format!("unaware-acks-{r}"));
            let (n, id) = (count.to_string(), format!("client.id=unaware,fjord_az={r}"));
            node.python(
                "ck_produce.py",
                &[
                    "--topic",
                    topic,
                    "--count",
                    &n,
                    "--value-pad",
                    "1000",
                    "--acks-out",
                    acks.to_str().unwrap(),
                    "-X",
                    &id,
                ],
            )
            .success("unaware produce");
        }
    }
}

/// One consumer per rack in `group` (`args`: protocol, rack settings) until they have read
/// `total` records between them.
fn consume_per_rack(c: &Cluster, topic: &str, group: &str, total: usize, args: &[&[&str]]) {
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .zip(args)
        .map(|(r, extra)| {
            Member::start_at(
                &c.bootstrap_all(),
                &c.scratch(),
                &format!("{group}-{r}"),
                topic,
                group,
                extra,
            )
        })
        .collect();
    let read = |ms: &[Member]| ms.iter().map(|m| m.values().len()).sum::<usize>();
    assert!(
        wait_until(Duration::from_secs(120), || read(&members) >= total),
        "group {group} read {} of {total} records",
        read(&members)
    );
    for mut m in members {
        m.stop();
    }
}

/// The test: on a 3-rack cluster with RF 3, AZ-aware producers (`fjord produce
/// --rack`) and consumers with `client.rack` under both group protocols send no record bytes
/// across racks: the brokers' accounting shows produce traffic only within racks, consume
/// traffic across racks only for the first fetch of each partition at its leader (which
/// redirects the consumer to its rack's replica, KIP-392; well under 1 %), and replication
/// as the cross-rack traffic. The same with AZ-unaware clients (racks known to the brokers
/// from a `fjord_az` client-id tag only) shows the share the AZ-aware setup saved.
#[test]
fn az_aware_clients_leave_replication_as_the_only_cross_rack_traffic() {
    let mut c = Cluster::builder().config(RACK_AWARE_SELECTOR).start();
    let topic = "flows";
    create(&mut c, topic, 6, 3);
    c.wait_layout(topic, "all replicas in sync", |l| {
        l.values().all(|p| p.isr.len() == 3)
    });
    let per_rack = 300;
    let total = 3 * per_rack;

    let t0 = traffic(&c);
    produce_per_rack(&c, topic, per_rack, true);
    let rack_args = |r: &str| format!("client.rack={r}");
    let (ra, rb, rc) = (rack_args("a"), rack_args("b"), rack_args("c"));
    let with_rack = |proto: &'static str| -> Vec<Vec<&str>> {
        [&ra, &rb, &rc]
            .iter()
            .map(|r| vec!["--protocol", proto, "-X", r.as_str()])
            .collect()
    };
    for (group, proto) in [("aware-848", "consumer"), ("aware-classic", "classic")] {
        let args = with_rack(proto);
        let refs: Vec<&[&str]> = args.iter().map(|a| a.as_slice()).collect();
        consume_per_rack(&c, topic, group, total, &refs);
    }
    let t1 = traffic(&c);
    let aware = cross_rack(&t0, &t1);
    eprintln!("AZ-aware, (cross-rack bytes, bytes) by kind: {aware:?}");
    let (cross, all) = aware["produce"];
    assert!(
        all > (total * 1000) as u64,
        "produce bytes counted: {aware:?}"
    );
    assert_eq!(cross, 0, "AZ-aware produce crossed racks: {aware:?}");
    let (cross, all) = aware["consume"];
    assert!(
        all > (2 * total * 1000) as u64,
        "consume bytes counted: {aware:?}"
    );
    assert!(
        cross * 100 < all,
        "AZ-aware consumers crossed racks for more than 1 % of their bytes: {aware:?}"
    );
    let (cross, _) = aware["replication"];
    assert!(
        cross > (2 * total * 1000) as u64,
        "replication is cross-rack: {aware:?}"
    );

    // The same without AZ awareness.
    let (ua, ub, uc) = (
        "client.id=unaware,fjord_az=a".to_string(),
        "client.id=unaware,fjord_az=b".to_string(),
        "client.id=unaware,fjord_az=c".to_string(),
    );
    produce_per_rack(&c, topic, per_rack, false);
    for (group, proto) in [("unaware-848", "consumer"), ("unaware-classic", "classic")] {
        let args: Vec<Vec<&str>> = [&ua, &ub, &uc]
            .iter()
            .map(|id| vec!["--protocol", proto, "-X", id.as_str()])
            .collect();
        let refs: Vec<&[&str]> = args.iter().map(|a| a.as_slice()).collect();
        // Each group reads the whole topic: both produce rounds.
        consume_per_rack(&c, topic, group, 2 * total, &refs);
    }
    let t2 = traffic(&c);
    let unaware = cross_rack(&t1, &t2);
    eprintln!("AZ-unaware, (cross-rack bytes, bytes) by kind: {unaware:?}");
    for kind in ["produce", "consume"] {
        let (cross, all) = unaware[kind];
        assert!(
            cross * 10 > all * 3,
            "AZ-unaware {kind} should cross racks for about 2/3 of its bytes: {unaware:?}"
        );
    }
    c.assert_no_panic_in_logs();
}
