//! Apache Kafka's command-line tools, from the distribution `scripts/setup-kafka.sh` unpacks
//! (`FJORD_KAFKA_HOME`, else `~/.cache/fjord/kafka-<bench/kafka/VERSION>`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{repo_root, run, CmdResult};

/// One tool run (a JVM start is about a second on two cores; the perf tools take longer).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(90);

/// The Kafka distribution directory written by `bench/kafka/fetch.sh`.
pub fn kafka_home() -> PathBuf {
    let home = match std::env::var_os("FJORD_KAFKA_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            let version = std::env::var("FJORD_KAFKA_VERSION").unwrap_or_else(|_| {
                fs::read_to_string(repo_root().join("bench/kafka/VERSION"))
                    .expect("read bench/kafka/VERSION")
                    .trim()
                    .to_string()
            });
            let user_home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&user_home)
                .join(".cache/fjord")
                .join(format!("kafka-{version}"))
        }
    };
    assert!(
        home.join("bin/kafka-topics.sh").is_file() && home.join("libs").is_dir(),
        "Kafka's command-line tools not found in {}: run scripts/setup-kafka.sh \
         (CI runs it from scripts/setup-test-deps.sh)",
        home.display()
    );
    home
}

/// Runs `bin/<tool>.sh` of the Kafka distribution with JVM options for a quick start.
pub struct Tools {
    pub home: PathBuf,
    /// (major, minor) of the Kafka release (its `VERSION` file, written by fetch.sh).
    pub version: (u32, u32),
}

impl Tools {
    pub fn new() -> Tools {
        let home = kafka_home();
        let v = fs::read_to_string(home.join("VERSION")).unwrap_or_default();
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Tools { home, version }
    }

    /// Kafka 4.2 renamed the tools' property options (KIP-1147: `--property` became
    /// `--reader-property`/`--formatter-property`, `--consumer-property` and `--producer-props`
    /// became `--command-property`, `--messages` became `--num-records`); the old names still
    /// work but print a deprecation warning, on stdout for some tools.
    pub fn renamed<'a>(&self, old: &'a str, new: &'a str) -> &'a str {
        if self.version >= (4, 2) {
            new
        } else {
            old
        }
    }

    pub fn run(&self, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
        let mut cmd = Command::new(self.home.join("bin").join(format!("{tool}.sh")));
        cmd.args(args)
            // C1 only and the serial collector: these JVMs live a second or two.
            .env(
                "KAFKA_JVM_PERFORMANCE_OPTS",
                "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto",
            )
            .env("KAFKA_HEAP_OPTS", "-Xmx256m")
            .env_remove("KAFKA_OPTS")
            .env_remove("KAFKA_LOG4J_OPTS");
        run(cmd, stdin, TOOL_TIMEOUT)
    }

    pub fn ok(&self, tool: &str, args: &[&str]) -> String {
        self.run(tool, args, None)
            .success(&format!("{tool} {}", args.join(" ")))
            .stdout()
    }
    /// Produce `lines` with kafka-console-producer, then read that many back from the
    /// beginning with kafka-console-consumer, both with the client properties file `props`
    /// (security settings); returns the lines read.
    pub fn console_round_trip(
        &self,
        bootstrap: &str,
        topic: &str,
        props: &str,
        lines: &[&str],
    ) -> Vec<String> {
        let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        self.run(
            "kafka-console-producer",
            &[
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                self.renamed("--producer.config", "--command-config"),
                props,
            ],
            Some(input.as_bytes()),
        )
        .success(&format!("kafka-console-producer to {topic} with {props}"));
        let count = lines.len().to_string();
        let out = self.ok(
            "kafka-console-consumer",
            &[
                "--bootstrap-server",
                bootstrap,
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                &count,
                self.renamed("--consumer.config", "--command-config"),
                props,
            ],
        );
        out.lines()
            .filter(|l| lines.contains(l))
            .map(str::to_string)
            .collect()
    }
}
