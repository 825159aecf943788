//! Differential tests in CI: the scenarios of `tests/differential/differential.py --ci` played
//! against Apache Kafka (one KRaft node from the Maven jars, started by bench/kafka/start.sh)
//! and against a real `fjord` process; any difference not listed, with its reason, in
//! `tests/differential/known-differences.json` fails the test. The other scenarios run outside
//! CI: `python3 tests/differential/differential.py --start`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{fjord_bin, python_bin, repo_root, run};

#[test]
fn kafka_and_fjord_look_the_same_to_a_client() {
    let script = repo_root().join("tests/differential/differential.py");
    let mut cmd = Command::new(python_bin());
    cmd.arg("-u")
        .arg(&script)
        .args(["--start", "--ci", "--json", "--fjord-bin", fjord_bin()])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let r = run(cmd, None, Duration::from_secs(600));
    let report: serde_json::Value = r
        .stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report: {}", r.describe()));
    // Differences seen once and not when the scenario was played again: shown, not failed on.
    if let Some(flaky) = report["flaky"].as_array().filter(|f| !f.is_empty()) {
        eprintln!("differences that did not come back when played again: {flaky:?}");
    }
    let unexpected: Vec<&serde_json::Value> = report["scenarios"]
        .as_object()
        .into_iter()
        .flat_map(|s| s.values())
        .filter_map(|rows| rows.as_array())
        .flatten()
        .filter(|row| row["known"].is_null())
        .collect();
    assert_eq!(
        report["unexpected"],
        0,
        "differences from Kafka (each seen twice): {}",
        serde_json::to_string(&unexpected).unwrap()
    );
    assert!(r.ok(), "{}", r.describe());
    // Every CI scenario ran on both sides.
    for name in [
        "topic_admin",
        "produce_consume",
        "produce_errors",
        "metadata",
    ] {
        assert!(
            report["scenarios"].get(name).is_some(),
            "scenario {name} missing: {report}"
        );
    }
}
