//! Lag evaluation with Burrow's rules against a real `fjord` process and confluent-kafka
//! consumers (`tests/clients/ck_lag.py`): a consumer that keeps up is OK, one that stops
//! committing while the producer goes on is STOP (group ERR), one committing the same offset
//! with lag is STALL, offsets going back are REWIND — each read through
//! `GET /v1/groups/{group}/status` and `fjord group lag`. Windows are short (3 samples, 100 ms
//! minimum distance) so each case takes seconds.

mod common;

use std::time::{Duration, Instant};

use common::{python_command, FjordProcess};
use serde_json::Value;

const SHORT_WINDOWS: &[&str] = &[
    "--set",
    "group.lag.window.intervals=3",
    "--set",
    "group.lag.min.distance.ms=100",
    "--set",
    "group.initial.rebalance.delay.ms=0",
];

/// Poll `GET /v1/groups/{group}/status` until `want(status)`; the last answer.
fn wait_status(broker: &FjordProcess, group: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = broker.http_get(&format!("/v1/groups/{group}/status"));
        if r.status == 200 {
            last = serde_json::from_str(&r.body).expect("JSON status");
            if want(&last["status"]) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for the status of {group}; last answer: {last}");
}

fn cli_lag(broker: &FjordProcess, group: &str) -> Value {
    let out = broker
        .cli(&[
            "group",
            "lag",
            group,
            "--admin",
            broker.admin(),
            "--output",
            "json",
        ])
        .success("fjord group lag");
    let v: Value = serde_json::from_str(&out.stdout()).expect("JSON from fjord group lag");
    v[0].clone()
}

fn run_script(broker: &FjordProcess, topic: &str, group: &str, mode: &str) {
    broker.create_topic(topic, 1, &[]);
    broker
        .python(
            "ck_lag.py",
            &["--topic", topic, "--group", group, "--mode", mode],
        )
        .success(mode);
}

#[test]
fn burrow_statuses_through_http_and_cli() {
    let broker = FjordProcess::start(SHORT_WINDOWS);

    // OK: a subscribed consumer that keeps up (its window has a sample with zero lag).
    run_script(&broker, "lag-ok", "g-ok", "ok");
    let s = wait_status(&broker, "g-ok", |s| s["status"] == "OK");
    assert_eq!(s["status"]["partition_count"], 1, "{s}");
    assert_eq!(cli_lag(&broker, "g-ok")["status"], "OK");

    // STOP: commit-only consumer stops committing with lag → partition STOP, group ERR.
    run_script(&broker, "lag-stop", "g-stop", "stop");
    let s = wait_status(&broker, "g-stop", |s| s["status"] == "ERR");
    assert_eq!(s["status"]["partitions"][0]["status"], "STOP", "{s}");
    assert_eq!(s["status"]["maxlag"]["status"], "STOP", "{s}");
    assert!(s["status"]["totallag"].as_i64().unwrap() >= 24, "{s}");
    assert_eq!(s["status"]["complete"], 1.0, "{s}");
    let c = cli_lag(&broker, "g-stop");
    assert_eq!(c["status"], "ERR");
    assert_eq!(c["partitions"][0]["status"], "STOP");
    assert!(
        c["partitions"][0]["time_lag_ms"].as_i64().unwrap() > 0,
        "{c}"
    );

    // REWIND: 5, 6, 7, then 2.
    run_script(&broker, "lag-rewind", "g-rewind", "rewind");
    let s = wait_status(&broker, "g-rewind", |s| s["status"] == "ERR");
    assert_eq!(s["status"]["partitions"][0]["status"], "REWIND", "{s}");
    assert_eq!(
        cli_lag(&broker, "g-rewind")["partitions"][0]["status"],
        "REWIND"
    );

    // STALL: the same offset committed with lag, seen while the consumer is still committing.
    broker.create_topic("lag-stall", 1, &[]);
    let mut stall = python_command("ck_lag.py")
        .args(["--bootstrap", broker.bootstrap()])
        .args([
            "--topic",
            "lag-stall",
            "--group",
            "g-stall",
            "--mode",
            "stall",
        ])
        .args(["--seconds", "20"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start ck_lag.py");
    let s = wait_status(&broker, "g-stall", |s| {
        s["partitions"][0]["status"] == "STALL"
    });
    assert_eq!(s["status"]["status"], "ERR", "{s}");
    let c = cli_lag(&broker, "g-stall");
    assert_eq!(c["partitions"][0]["status"], "STALL", "{c}");
    let _ = stall.kill();
    let _ = stall.wait();

    // Every group is listed, and the table prints the statuses.
    let r = broker.http_get("/v1/groups");
    let groups: Value = serde_json::from_str(&r.body).unwrap();
    for g in ["g-ok", "g-stop", "g-rewind", "g-stall"] {
        assert!(
            groups["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == g),
            "{groups}"
        );
    }
    let table = broker
        .cli(&["group", "lag", "--admin", broker.admin()])
        .success("fjord group lag (table)")
        .stdout();
    assert!(
        table.contains("g-rewind") && table.contains("REWIND"),
        "{table}"
    );
    // Prometheus gauges (refreshed every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = broker.http_get("/metrics").body;
        if m.contains("fjord_group_status{group=\"g-stop\"} 3")
            && m.contains("fjord_group_lag{group=\"g-stop\",partition=\"0\",topic=\"lag-stop\"}")
        {
            break;
        }
        assert!(Instant::now() < deadline, "lag gauges missing:\n{m}");
        std::thread::sleep(Duration::from_millis(250));
    }
    broker.assert_no_panic_in_log();
}

/// A group whose partitions live on three brokers, most of them not on its coordinator: every
/// partition is sampled (the coordinator asks their leaders for their log ends) and evaluated,
/// through any broker.
#[test]
fn partitions_led_by_other_brokers_are_evaluated() {
    let cluster = common::cluster::Cluster::builder()
        .config(
            "default.replication.factor = 1\n\
             group.lag.window.intervals = 3\n\
             group.lag.min.distance.ms = 100\n\
             group.initial.rebalance.delay.ms = 0",
        )
        .start();
    let n1 = cluster.node(1);
    n1.create_topic("lag-multi", 6, &[]);
    let layout = cluster.converged(&[1, 2, 3], "lag-multi", |l| {
        l.len() == 6 && l.values().all(|p| p.leader > 0)
    });
    let leaders: std::collections::BTreeSet<i64> = layout.values().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "partitions on every broker: {layout:?}");

    // Commit-only consumer: 2, 4, 6 on every partition (0.5 s apart), then the producer goes on.
    n1.python(
        "ck_lag.py",
        &[
            "--topic",
            "lag-multi",
            "--group",
            "g-multi",
            "--mode",
            "stop",
            "--partitions",
            "6",
            "--interval",
            "0.5",
        ],
    )
    .success("ck_lag.py stop on 6 partitions");

    // Asked through each broker (two of them forward to the coordinator).
    for via in [1, 2, 3] {
        let node = cluster.node(via);
        // Partitions turn STOP at different moments (a window spans the time between its
        // first and last samples, and a partition hosted elsewhere misses the first commit's),
        // and remote log ends arrive with the next poll: wait for all of it.
        let s = wait_status(node, "g-multi", |s| {
            s["status"] == "ERR"
                && s["partition_count"] == 6
                && s["partitions"].as_array().is_some_and(|ps| {
                    ps.len() == 6
                        && ps
                            .iter()
                            .all(|p| p["status"] == "STOP" && p["current_lag"] == 24)
                })
        });
        let parts = s["status"]["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 6, "every partition evaluated (via {via}): {s}");
        for p in parts {
            assert_eq!(p["status"], "STOP", "{s}");
            // 20 + 10 produced, 6 committed: the remote log ends are known, not guessed.
            assert_eq!(p["current_lag"], 24, "{s}");
        }
        assert_eq!(s["status"]["totallag"], 6 * 24, "{s}");
    }
    let polls = (1..=3)
        .filter_map(|id| cluster.metric(id, "fjord_group_lag_end_polls_total", &[("result", "ok")]))
        .sum::<f64>();
    assert!(polls > 0.0, "log ends were polled from the leaders");
    cluster.assert_no_panic_in_logs();
}
