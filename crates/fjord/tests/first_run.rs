//! What a new user meets first, against real processes: topics created on first use, `consume
//! --exit-at-end`, a CLI that ends quietly when its reader goes away, JSON output for scripts,
//! one-line errors with Kafka's names and codes and documented exit codes, completions and man
//! pages, and `cluster status` / `topic describe` showing addresses, replica lag and
//! under-replicated / offline markers.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{fjord_bin, run, wait_timeout, wait_until, CmdResult, FjordProcess};
use serde_json::Value;

/// A failed command: the given exit status and exactly one line on stderr containing `needle`.
fn assert_one_line(r: &CmdResult, code: i32, needle: &str) {
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(r.output.status.code(), Some(code), "{}", r.describe());
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(needle),
        "expected one line with {needle:?}: {}",
        r.describe()
    );
}

fn fjord(args: &[&str]) -> CmdResult {
    let mut cmd = Command::new(fjord_bin());
    cmd.args(args);
    run(cmd, None, Duration::from_secs(60))
}

fn json(r: CmdResult, what: &str) -> Value {
    let r = r.success(what);
    serde_json::from_str(&r.stdout())
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.describe()))
}

#[test]
fn produce_and_consume_create_topics_and_consume_stops_at_the_end() {
    let broker = FjordProcess::start(&[]);
    let input: String = (1..=10).map(|i| format!("{i}\n")).collect();
    broker
        .cli_with_stdin(&["produce", "numbers"], Some(input.as_bytes()))
        .success("produce to a topic that does not exist yet");
    // --count larger than what is there: -e stops at the end offsets taken at start.
    let t0 = Instant::now();
    let out = broker
        .cli(&[
            "consume",
            "numbers",
            "--from-beginning",
            "--count",
            "100",
            "-e",
        ])
        .success("consume -e");
    assert_eq!(
        out.stdout().lines().collect::<Vec<_>>(),
        (1..=10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // A consumer of a missing topic creates it (Kafka's consumer default) and stops at once.
    let out = broker
        .cli(&["consume", "fresh", "--from-beginning", "--exit-at-end"])
        .success("consume -e of a new topic");
    assert_eq!(out.stdout(), "");
    let topics = json(broker.cli(&["topic", "list", "-o", "json"]), "topic list");
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["fresh", "numbers"], "{topics}");

    // A broker that does not create topics on use: the CLI says so, in one line.
    let strict = FjordProcess::start(&["--set", "auto.create.topics.enable=false"]);
    let r = strict.cli_with_stdin(&["produce", "nosuch"], Some(b"x\n"));
    assert_one_line(&r, 1, "UNKNOWN_TOPIC_OR_PARTITION (3)");
    assert!(
        r.stderr().contains("auto.create.topics.enable"),
        "{}",
        r.describe()
    );
    assert_one_line(
        &strict.cli(&["consume", "nosuch", "-e"]),
        1,
        "UNKNOWN_TOPIC_OR_PARTITION (3)",
    );
    broker.assert_no_panic_in_log();
}

/// Runs `fjord args` with its stdout a pipe whose reading end is already closed, as after
/// `| head` has exited: the command must end quietly, status 0.
fn with_closed_stdout(args: &[&str]) {
    let mut child = Command::new(fjord_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fjord");
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("fjord {args:?} hung with a closed stdout")
    });
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        status.code() == Some(0) || status.code() == Some(141),
        "fjord {args:?} with a closed stdout exited {status}: {err}"
    );
    assert!(
        err.is_empty(),
        "fjord {args:?} with a closed stdout said: {err}"
    );
}

#[test]
fn closed_stdout_ends_quietly_json_everywhere_and_one_line_errors() {
    let broker = FjordProcess::start(&[]);
    let b = broker.bootstrap();
    let admin = broker.admin();
    broker
        .cli(&["topic", "create", "orders", "--partitions", "3"])
        .success("create");
    broker
        .cli_with_stdin(
            &["produce", "orders", "--key-separator", ":"],
            Some(b"k:v\n"),
        )
        .success("produce");
    // A group with committed offsets (kcat commits on exit).
    broker
        .kcat(
            &["-G", "g1", "orders", "-e", "-o", "beginning", "-c", "1"],
            None,
        )
        .success("kcat group consume");

    for args in [
        &["--bootstrap-server", b, "topic", "list"][..],
        &["--bootstrap-server", b, "topic", "describe", "orders"],
        &["--bootstrap-server", b, "group", "list"],
        &["--bootstrap-server", b, "group", "describe", "g1"],
        &["--bootstrap-server", b, "cluster", "info"],
        &["cluster", "status", "--admin", admin],
        &[
            "--bootstrap-server",
            b,
            "consume",
            "orders",
            "--from-beginning",
            "-e",
        ],
        &["completions", "bash"],
        &["man"],
        &["--help"],
    ] {
        with_closed_stdout(args);
    }

    // --output json on every listing and describe command.
    let cli = |args: &[&str]| broker.cli(args);
    let v = json(
        cli(&["topic", "describe", "orders", "-o", "json"]),
        "describe",
    );
    assert_eq!(v["partitions"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["partitions"][0]["under_replicated"], false, "{v}");
    assert_eq!(
        v["partitions"][0]["replica_progress"][0]["offset_lag"], 0,
        "{v}"
    );
    let v = json(cli(&["group", "list", "--output", "json"]), "group list");
    assert_eq!(v["groups"][0]["group"], "g1", "{v}");
    let v = json(
        cli(&["group", "describe", "g1", "-o", "json"]),
        "group describe",
    );
    assert_eq!(v["type"], "classic", "{v}");
    assert_eq!(v["offsets"][0]["topic"], "orders", "{v}");
    assert_eq!(v["offsets"][0]["lag"], 0, "{v}");
    let v = json(cli(&["cluster", "info", "-o", "json"]), "cluster info");
    assert_eq!(
        v["brokers"][0]["port"].as_i64().unwrap().to_string(),
        b.rsplit(':').next().unwrap()
    );
    let v = json(
        fjord(&["cluster", "status", "--admin", admin, "-o", "json"]),
        "cluster status",
    );
    assert_eq!(v["partitions"]["offline"], 0, "{v}");

    // The only node's address is shown (it used to be `-`).
    let status = fjord(&["cluster", "status", "--admin", admin]).success("cluster status");
    assert!(status.stdout().contains(b), "{}", status.describe());

    // Errors: Kafka's name and code, one line.
    assert_one_line(
        &cli(&["group", "describe", "nosuch"]),
        1,
        "GROUP_ID_NOT_FOUND (69)",
    );
    assert_one_line(
        &cli(&["topic", "create", "orders"]),
        1,
        "TOPIC_ALREADY_EXISTS (36)",
    );
    // Bad arguments: one line and status 2, before anything is sent.
    assert_one_line(&fjord(&["nosuch"]), 2, "unrecognized subcommand 'nosuch'");
    assert_one_line(
        &fjord(&["topic", "create", "x", "--partitions", "many"]),
        2,
        "invalid value 'many'",
    );
    assert_one_line(&fjord(&["produce", "t", "--acks", "7"]), 2, "acks must be");
    assert_one_line(
        &fjord(&["topic", "list", "-o", "yaml"]),
        2,
        "invalid value 'yaml'",
    );
    assert_one_line(
        &fjord(&["server", "--set", "log.retention.ms=abc"]),
        2,
        "log.retention.ms",
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn unreachable_wrong_and_silent_brokers_fail_in_one_line_within_the_timeout() {
    let broker = FjordProcess::start(&[]);
    let timeout = ["--request-timeout-ms", "2000"];
    // Nothing listens.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // Listens, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    for (addr, needle) in [
        (closed.as_str(), "Connection refused"),
        // The admin HTTP port speaks HTTP, not Kafka.
        (broker.admin(), broker.admin()),
        (silent_addr.as_str(), "timed out"),
    ] {
        let t0 = Instant::now();
        let mut args = vec!["--bootstrap-server", addr];
        args.extend_from_slice(&timeout);
        args.extend_from_slice(&["topic", "list"]);
        let r = fjord(&args);
        assert_one_line(&r, 1, needle);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{addr}: took {:?}",
            t0.elapsed()
        );
    }
    // A bootstrap list, as Kafka's bootstrap.servers: the first reachable address is used.
    let list = format!("{closed},{}", broker.bootstrap());
    fjord(&["--bootstrap-server", &list, "topic", "list"]).success("bootstrap list");
    // cluster status against a port that is not an admin endpoint.
    let r = fjord(&["cluster", "status", "--admin", &closed]);
    assert_one_line(&r, 1, &closed);
    drop(silent);
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definitions() {
    let bash = fjord(&["completions", "bash"]).success("bash completions");
    assert!(bash.stdout().contains("consume") && bash.stdout().contains("--exit-at-end"));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fjord.bash");
    std::fs::write(&script, bash.stdout()).unwrap();
    let mut check = Command::new("bash");
    check.arg("-n").arg(&script);
    run(check, None, Duration::from_secs(30)).success("bash -n on the completion script");
    for shell in ["zsh", "fish"] {
        let out = fjord(&["completions", shell]).success(shell);
        assert!(out.stdout().contains("fjord"), "{}", out.describe());
    }
    let man = fjord(&["man"]).success("man");
    assert!(man.stdout().contains(".TH fjord 1"), "{}", man.describe());
    assert!(man.stdout().contains("Exit status"), "{}", man.describe());
    let pages = dir.path().join("man1");
    fjord(&["man", "--dir", pages.to_str().unwrap()]).success("man --dir");
    let page = std::fs::read_to_string(pages.join("fjord-topic-create.1")).unwrap();
    assert!(page.contains("\\-\\-partitions"), "{page}");
    assert!(pages.join("fjord-dev-cluster.1").exists());
}

/// `topic describe` and `cluster status` on a cluster: replica lag per replica, and the
/// under-replicated markers while a follower is stopped, gone once it has caught up.
#[test]
fn describe_and_status_show_replica_progress_and_markers() {
    let mut c = Cluster::builder()
        .config("replica.lag.time.max.ms = 1500")
        .start();
    let n1 = c.node(1);
    n1.cli(&[
        "topic",
        "create",
        "rep",
        "--partitions",
        "1",
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=3",
    ])
    .success("create");
    let layout = c.wait_isr("rep", Some(0), 3);
    let leader = layout[&0].leader as usize;
    // Stop a follower that is not the active controller, so status keeps answering.
    let active = c.active_controller(leader);
    let follower = (1..=3).find(|&n| n != leader && n != active).unwrap();
    let via = leader;
    let input: String = (0..100).map(|i| format!("{i}\n")).collect();
    c.node(via)
        .cli_with_stdin(&["produce", "rep", "--acks", "all"], Some(input.as_bytes()))
        .success("produce");
    let describe = |c: &Cluster| {
        let r = c.node(via).cli(&[
            "--request-timeout-ms",
            "2000",
            "topic",
            "describe",
            "rep",
            "-o",
            "json",
        ]);
        json(r, "topic describe")
    };
    let v = describe(&c);
    let p = &v["partitions"][0];
    assert_eq!(p["log_end_offset"], 100, "{v}");
    for r in p["replica_progress"].as_array().unwrap() {
        assert_eq!(r["log_end_offset"], 100, "{v}");
        assert_eq!(r["offset_lag"], 0, "{v}");
        assert_eq!(r["time_lag_ms"], 0, "{v}");
        assert_eq!(r["in_sync"], true, "{v}");
    }

    // A stopped follower leaves the ISR: markers in describe and status.
    c.freeze(follower);
    c.node(via)
        .cli_with_stdin(&["produce", "rep", "--acks", "1"], Some(input.as_bytes()))
        .success("produce acks=1");
    c.wait_layout_for(
        "rep",
        "follower out of the ISR",
        Duration::from_secs(30),
        |l| !l[&0].isr.contains(&(follower as i64)),
    );
    let v = describe(&c);
    let p = &v["partitions"][0];
    assert_eq!(p["under_replicated"], true, "{v}");
    assert_eq!(p["under_min_isr"], true, "{v}");
    let stopped = p["replica_progress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["broker"] == follower)
        .unwrap();
    assert_eq!(stopped["in_sync"], false, "{v}");
    assert!(
        stopped["error"].is_string(),
        "a stopped replica cannot answer: {v}"
    );
    let table = c
        .node(via)
        .cli(&["--request-timeout-ms", "2000", "topic", "describe", "rep"])
        .success("describe table");
    let text = table.stdout();
    assert!(
        text.contains("UNDER-REPLICATED") && text.contains("UNDER-MIN-ISR"),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colour when not a terminal: {text}"
    );
    let status = c
        .node(via)
        .cli(&["cluster", "status", "--admin", c.node(via).admin()])
        .success("status");
    assert!(
        status.stdout().contains("under-replicated: 1"),
        "{}",
        status.describe()
    );
    let status = json(
        c.node(via).cli(&[
            "cluster",
            "status",
            "--admin",
            c.node(via).admin(),
            "-o",
            "json",
        ]),
        "status json",
    );
    assert_eq!(
        status["partitions"]["per_broker"][follower.to_string()]["out_of_sync"],
        1,
        "{status}"
    );
    for id in 1..=3 {
        let addr = c.node(id).bootstrap().to_string();
        let brokers = status["status"]["brokers"].as_array().unwrap();
        let b = brokers.iter().find(|b| b["node_id"] == id).unwrap();
        assert_eq!(
            format!(
                "{}:{}",
                b["endpoints"][0]["host"].as_str().unwrap(),
                b["endpoints"][0]["port"]
            ),
            addr
        );
    }

    // Back: it catches up, rejoins the ISR, and the markers go.
    c.thaw(follower);
    c.wait_isr("rep", Some(0), 3);
    let mut last = Value::Null;
    let caught_up = wait_until(Duration::from_secs(30), || {
        last = describe(&c);
        let p = &last["partitions"][0];
        p["under_replicated"] == false
            && p["replica_progress"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["offset_lag"] == 0 && r["log_end_offset"] == 200)
    });
    assert!(caught_up, "never caught up: {last}");
    let table = c
        .node(via)
        .cli(&["topic", "describe", "rep"])
        .success("describe table");
    assert!(
        !table.stdout().contains("UNDER-REPLICATED"),
        "{}",
        table.stdout()
    );
    c.assert_no_panic_in_logs();
}
