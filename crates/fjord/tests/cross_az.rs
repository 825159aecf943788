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
    let racks_of = |p: i64| -> BTreeSet<String> {
        layout[&p].replicas.iter().map(|n| rack_of(*n)).collect()
    };
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
            && owned.iter().all(|(r, ps)| {
                ps.len() == 2 && ps.iter().all(|p| racks_of(*p).contains(r))
            })
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
    let per_rack: BTreeMap<String, usize> =
        layout.values().fold(BTreeMap::new(), |mut m, p| {
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
