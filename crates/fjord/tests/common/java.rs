//! The Java client scenarios of `tests/clients/java` (built into a jar by
//! `scripts/setup-java-clients.sh`): how a test starts one and reads its JSON line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use serde_json::Value;

use super::cluster::Background;
use super::{repo_root, require_tool, wait_until};

pub fn jar() -> PathBuf {
    let p = repo_root().join("tests/clients/java/target/fjord-java-clients.jar");
    assert!(
        p.is_file(),
        "{} not found: run scripts/setup-test-deps.sh (it builds the Java client scenarios \
         with Maven through scripts/setup-java-clients.sh)",
        p.display()
    );
    p
}

/// `java -jar fjord-java-clients.jar SCENARIO --bootstrap ADDR ARGS...`, with a JVM sized for
/// a short client run on a shared 2-core machine.
pub fn java_command(scenario: &str, bootstrap: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(require_tool("java"));
    cmd.args([
        "-Xmx384m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-jar",
    ])
    .arg(jar())
    .args([scenario, "--bootstrap", bootstrap])
    .args(args);
    cmd
}

/// A client's JSON line (the last line of its stdout starting with `{`); fails the test, with
/// `details`, unless the process succeeded and the line says `"ok": true`.
pub fn client_json(what: &str, ok: bool, stdout: &str, details: &str) -> Value {
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let v: Value = match line {
        Some(l) => {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: bad JSON {l:?}: {e}"))
        }
        None => panic!("{what}: no JSON line\n{details}"),
    };
    assert!(
        ok && v["ok"] == Value::Bool(true),
        "{what} failed: {:#}\n{details}",
        v["failures"]
    );
    v
}

/// A Java scenario's JSON line ([`client_json`]), from kafka-clients 4.x.
pub fn scenario_json(what: &str, ok: bool, stdout: &str, details: &str) -> Value {
    let v = client_json(what, ok, stdout, details);
    assert_eq!(
        v["kafka_clients_version"]
            .as_str()
            .unwrap_or("")
            .split('.')
            .next(),
        Some("4"),
        "{v}"
    );
    v
}

/// A JSON number as an integer (fails the test otherwise).
pub fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A value of a scenario's progress file, `key1=N key2=M ...` (0 until it is written).
pub fn progress(path: &Path, key: &str) -> i64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Wait until `key` (e.g. `p0`: records acknowledged on partition 0) reached `from + more`,
/// while the scenario keeps running; returns the value.
pub fn wait_progress(path: &Path, bg: &mut Background, key: &str, more: i64, what: &str) -> i64 {
    let from = progress(path, key);
    let ok = wait_until(Duration::from_secs(90), || {
        progress(path, key) >= from + more || !bg.is_running()
    });
    let text = fs::read_to_string(path).unwrap_or_default();
    assert!(
        ok && bg.is_running(),
        "{what}: waiting for {key} >= {}, progress {text:?}\n{}",
        from + more,
        bg.output()
    );
    progress(path, key)
}
