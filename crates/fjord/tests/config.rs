//! Server configuration: bad keys and values are rejected at startup with one line naming the
//! key; TOML files accept Kafka's dotted key names both as nested tables and quoted.

mod common;

use std::time::Duration;

use common::{fjord_bin, run, CmdResult, FjordProcess};

/// Starts a server that is expected to refuse its configuration.
fn server_must_refuse(extra: &[&str]) -> CmdResult {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(fjord_bin());
    cmd.arg("server")
        .args(["--listeners", "PLAINTEXT://127.0.0.1:0"])
        .args(["--admin-listener", "127.0.0.1:0"])
        .arg("--log-dirs")
        .arg(dir.path())
        .args(extra);
    // `run` fails the test if the server keeps running (i.e. accepted the config).
    let r = run(cmd, None, Duration::from_secs(30));
    assert!(
        !r.stdout().contains("fjord ready"),
        "server started despite {extra:?}: {}",
        r.describe()
    );
    r.failure(&format!("server with {extra:?}"))
}

fn assert_names_key_in_one_line(r: &CmdResult, key: &str) {
    let err = r.stderr();
    let naming: Vec<&str> = err.lines().filter(|l| l.contains(key)).collect();
    assert_eq!(
        naming.len(),
        1,
        "expected exactly one error line naming `{key}`: {}",
        r.describe()
    );
    assert!(
        !err.contains("panicked"),
        "server panicked: {}",
        r.describe()
    );
}

#[test]
fn bad_value_is_rejected_naming_the_key() {
    let r = server_must_refuse(&["--set", "log.retention.ms=abc"]);
    assert_names_key_in_one_line(&r, "log.retention.ms");
}

#[test]
fn unknown_key_is_rejected_naming_the_key() {
    let r = server_must_refuse(&["--set", "no.such.key=1"]);
    assert_names_key_in_one_line(&r, "no.such.key");
}

#[test]
fn bad_value_in_toml_file_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fjord.toml");
    std::fs::write(&file, "\"num.partitions\" = \"many\"\n").unwrap();
    let r = server_must_refuse(&["--config", file.to_str().unwrap()]);
    assert_names_key_in_one_line(&r, "num.partitions");
}

fn broker_config(broker: &FjordProcess) -> serde_json::Value {
    let out = broker
        .python("admin.py", &["describe-configs", "broker"])
        .success("describe broker configs");
    serde_json::from_str(out.stdout().trim()).unwrap()
}

fn toml_file_is_applied(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fjord.toml");
    std::fs::write(&file, toml).unwrap();
    let broker = FjordProcess::start(&["--config", file.to_str().unwrap()]);
    let cfg = broker_config(&broker);
    assert_eq!(
        cfg["log.retention.ms"]["value"], "60000",
        "broker DescribeConfigs log.retention.ms from {toml:?}: {}",
        cfg["log.retention.ms"]
    );
    // A topic without its own retention.ms inherits the broker's log.retention.ms.
    broker.create_topic("inherits", 1, &[]);
    let out = broker
        .python("admin.py", &["describe-configs", "topic", "inherits"])
        .success("describe topic configs");
    let topic: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap();
    assert_eq!(
        topic["retention.ms"]["value"], "60000",
        "topic retention.ms should come from log.retention.ms: {}",
        topic["retention.ms"]
    );
    broker.assert_no_panic_in_log();
}

#[test]
fn toml_dotted_keys_as_nested_tables() {
    toml_file_is_applied("log.retention.ms = 60000\n");
}

#[test]
fn toml_quoted_dotted_keys() {
    toml_file_is_applied("\"log.retention.ms\" = 60000\n");
}

#[test]
fn set_flag_is_visible_in_describe_configs() {
    let broker = FjordProcess::start(&["--set", "log.retention.ms=60000"]);
    assert_eq!(broker_config(&broker)["log.retention.ms"]["value"], "60000");
}
