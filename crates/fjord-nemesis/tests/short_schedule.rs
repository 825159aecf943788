//! CI's fixed-seed nemesis schedule (docs/testing.md): a 3-node cluster in network namespaces
//! (loopback addresses when they are unavailable, with the network faults skipped) under load,
//! each fault kind about twice in ~60-90 s, and zero anomalies from the checkers.
//!
//! Needs the `fjord` binary: `FJORD_BIN`, else `target/<profile>/fjord` (built by
//! `cargo test --workspace`; with `-p fjord-nemesis` alone run `cargo build -p fjord` first).
//! `FJORD_NEMESIS_NO_NETNS=1` forces the loopback fallback.

use std::time::Duration;

use fjord_nemesis::{default_fjord_bin, run_round, FaultKind, RoundConfig};

/// The schedule's seed: change it only on purpose (a new seed is a new schedule).
const SEED: u64 = 20;

/// The kinds CI runs: all but the full disks, which have their own test below
/// (`a_full_disk_on_the_active_controller_is_survived`).
fn ci_kinds() -> Vec<FaultKind> {
    FaultKind::ALL
        .into_iter()
        .filter(|k| !k.needs_disk())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn short_fixed_seed_schedule_has_no_anomalies() {
    let bin = default_fjord_bin().expect(
        "no fjord binary: set FJORD_BIN or build it (cargo build -p fjord) before this test",
    );
    let out = tempfile::Builder::new()
        .prefix("fjord-nemesis-test-")
        .tempdir()
        .expect("temp dir");
    let mut cfg = RoundConfig::new(SEED, bin, out.path().to_path_buf());
    cfg.netns = std::env::var_os("FJORD_NEMESIS_NO_NETNS").is_none();
    cfg.duration = Duration::from_secs(80);
    cfg.hold = (Duration::from_millis(1500), Duration::from_secs(3));
    cfg.kinds = ci_kinds();
    cfg.max_faults = 2 * cfg.kinds.len();
    cfg.disk_mb = 128;
    let report = runtime()
        .block_on(run_round(&cfg))
        .unwrap_or_else(|e| panic!("round failed: {e:#}"));
    println!("{}", report.text());
    let keep = || {
        let dir = out.path().to_path_buf();
        std::mem::forget(out);
        dir
    };
    // Open findings (docs/testing.md, Findings) that a run may hit by timing: reported, not
    // failed on, until their fix lands. Remove a kind from here with its fix.
    const KNOWN_OPEN: &[&str] = &[];
    let (known, anomalies): (Vec<_>, Vec<_>) = report
        .anomalies
        .iter()
        .partition(|a| KNOWN_OPEN.contains(&a.kind.as_str()));
    for a in &known {
        eprintln!("known open finding hit: [{}] {}", a.kind, a.detail);
    }
    if !anomalies.is_empty() {
        panic!(
            "{} anomalies; report, history and server logs kept in {}",
            anomalies.len(),
            keep().display()
        );
    }
    // Every fault kind the mode allows was applied, and the load made progress.
    for kind in ci_kinds() {
        if !report.skipped_kinds.contains(&kind) {
            assert!(
                report.faults.iter().any(|f| f.kind == kind),
                "{kind:?} never applied"
            );
        }
    }
    assert!(report.acked_records > 100, "{}", report.text());
    assert!(report.ops.get("commit").is_some_and(|c| c.ok > 10));
    assert!(report.ops.get("create-topic").is_some_and(|c| c.ok > 0));
}

/// Finding of the first nemesis rounds (seed 3, `fjord-nemesis --seed 3 --faults
/// disk-full-controller --duration 5`): a write of the metadata Raft log failing with ENOSPC
/// ended the node's Raft core for good ("quit RaftCore::main on error ... No space left on
/// device"), and the node kept serving with frozen metadata; after the controller's disk and
/// then the next controller's disk filled, the quorum was gone. Now `fjord server` stops when
/// its controller's Raft core stops (as Kafka halts a node whose metadata log fails) and the
/// harness, as a supervisor would, starts it again: the cluster converges.
#[test]
fn a_full_disk_on_the_active_controller_is_survived() {
    let bin = default_fjord_bin().expect("no fjord binary: set FJORD_BIN");
    let out = tempfile::Builder::new()
        .prefix("fjord-nemesis-test-")
        .tempdir()
        .expect("temp dir");
    let mut cfg = RoundConfig::new(3, bin, out.path().to_path_buf());
    cfg.kinds = vec![FaultKind::DiskFullController];
    cfg.duration = Duration::from_secs(5);
    cfg.max_faults = 2;
    let report = runtime()
        .block_on(run_round(&cfg))
        .unwrap_or_else(|e| panic!("round failed: {e:#}"));
    println!("{}", report.text());
    if report.skipped_kinds.is_empty() {
        assert!(report.anomalies.is_empty(), "{}", report.text());
    }
}

/// Finding of seed 410 (`fjord-nemesis --seed 400 --rounds 22 --duration 40 --faults
/// kill,pause,isolate,isolate-controller,bridge,one-way,loss`): right after a loss fault the
/// active controller's openraft core died on its "follower log reversion" debug assertion: a
/// heartbeat's late conflict answer (openraft issue 1500) looked like a follower's log going
/// back. openraft's `loosen-follower-log-revert` feature makes the leader search for the
/// match again instead. The round replays by seed, but its timing does not, so a run may pass
/// without the race: ignored in CI (about 70 s), run by hand when touching the quorum.
#[test]
#[ignore = "about 70 s; replays the seed-410 round by hand"]
fn seed_410_loss_round_keeps_the_raft_cores_running() {
    let bin = default_fjord_bin().expect("no fjord binary: set FJORD_BIN");
    let out = tempfile::Builder::new()
        .prefix("fjord-nemesis-test-")
        .tempdir()
        .expect("temp dir");
    let mut cfg = RoundConfig::new(410, bin, out.path().to_path_buf());
    cfg.netns = std::env::var_os("FJORD_NEMESIS_NO_NETNS").is_none();
    cfg.duration = Duration::from_secs(40);
    cfg.kinds = ci_kinds();
    let report = runtime()
        .block_on(run_round(&cfg))
        .unwrap_or_else(|e| panic!("round failed: {e:#}"));
    println!("{}", report.text());
    let fatal: Vec<_> = report
        .anomalies
        .iter()
        .filter(|a| ["raft-reversion-panic", "raft-stopped", "panic"].contains(&a.kind.as_str()))
        .collect();
    assert!(fatal.is_empty(), "{}", report.text());
}
