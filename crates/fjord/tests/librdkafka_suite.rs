//! librdkafka's own test suite against a real `fjord`: the `tests/NNNN-*.c` programs of the
//! librdkafka that the rdkafka-sys crate bundles (pinned in tests/clients/librdkafka), built
//! into its `test-runner` by `scripts/setup-librdkafka-tests.sh` (which
//! `scripts/setup-test-deps.sh` calls). Each test starts its own broker and runs one
//! librdkafka test by number, as librdkafka's CI runs them against a real Kafka
//! (`TEST_KAFKA_VERSION=4.0.0`, so version-gated subtests take the Kafka 4 path).
//!
//! The one change to the suite: 0129 asks for `segment.bytes=20000`, which Apache Kafka 4.x
//! refuses as fjord does (KIP-1030: at least 1 MiB); the setup script makes it 1 MiB.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{repo_root, run, FjordProcess};

/// How long one librdkafka test may run (its own timeouts are shorter).
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The built librdkafka tree (with `tests/test-runner`).
fn suite_dir() -> PathBuf {
    let root = std::env::var_os("FJORD_LIBRDKAFKA_DIR").map(PathBuf::from);
    let dir = root.or_else(|| {
        let base = repo_root().join("target/librdkafka-suite");
        let mut dirs: Vec<PathBuf> = fs::read_dir(&base)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("tests/test-runner").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    });
    match dir {
        Some(d) if d.join("tests/test-runner").is_file() => d,
        _ => panic!(
            "librdkafka's test-runner not built: run scripts/setup-librdkafka-tests.sh \
             (scripts/setup-test-deps.sh calls it)"
        ),
    }
}

/// Run librdkafka test `number` (e.g. "0103") against `broker`; fails with the runner's
/// output tail unless every test it ran passed.
fn run_librdkafka_test(broker: &FjordProcess, number: &str) {
    let dir = suite_dir();
    let work = broker.scratch_dir().join(format!("librdkafka-{number}"));
    fs::create_dir_all(&work).expect("scratch dir");
    let conf = work.join("test.conf");
    fs::write(
        &conf,
        format!(
            "metadata.broker.list={}\ntest.timeout.multiplier=2\n",
            broker.bootstrap()
        ),
    )
    .expect("test.conf");
    let libs = format!(
        "{}:{}",
        dir.join("src").display(),
        dir.join("src-cpp").display()
    );
    let mut cmd = Command::new(dir.join("tests/test-runner"));
    cmd.current_dir(&work)
        .env("RDKAFKA_TEST_CONF", &conf)
        .env("TEST_KAFKA_VERSION", "4.0.0")
        .env("TESTS", number)
        .env("LD_LIBRARY_PATH", libs);
    let r = run(cmd, None, TEST_TIMEOUT);
    let out = format!("{}{}", r.stdout(), r.stderr());
    if !(r.ok() && out.contains("ALL TESTS PASSED")) {
        let tail: Vec<&str> = out.lines().rev().take(60).collect();
        let failures: Vec<&str> = out.lines().filter(|l| l.contains("failed at")).collect();
        panic!(
            "librdkafka test {number} failed:\n{}\n--- output tail ---\n{}\n--- broker log ---\n{}",
            failures.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            broker.log_tail(40)
        );
    }
    broker.assert_no_panic_in_log();
}

/// 0090: the idempotent producer's own checks (sequence numbers, no duplicates across
/// retries) — also the check that the suite runs here at all.
#[test]
fn librdkafka_0090_idempotence() {
    let broker = FjordProcess::start(&[]);
    run_librdkafka_test(&broker, "0090");
}
