//! One confluent-kafka group member (`tests/clients/group_ck_member.py`) run as a process,
//! and what it reported: assignments, messages, commits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{python_command, send_signal, FjordProcess};

/// One `group_ck_member.py` process.
pub struct Member {
    child: Option<Child>,
    out: PathBuf,
    stop: PathBuf,
}

impl Member {
    pub fn start(
        broker: &FjordProcess,
        name: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
    ) -> Member {
        Member::start_at(
            broker.bootstrap(),
            &broker.scratch_dir(),
            name,
            topic,
            group,
            extra,
        )
    }

    /// A member of `group` on `bootstrap` (any broker of a cluster), its files in `dir`.
    pub fn start_at(
        bootstrap: &str,
        dir: &Path,
        name: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
    ) -> Member {
        let out = dir.join(format!("{name}.jsonl"));
        let stop = dir.join(format!("{name}.stop"));
        let _ = std::fs::remove_file(&stop);
        // A file left by an earlier run in the same directory would read as this member's.
        let _ = std::fs::remove_file(&out);
        let mut cmd = python_command("group_ck_member.py");
        cmd.args(["--bootstrap", bootstrap, "--topic", topic, "--group", group])
            .arg("--out")
            .arg(&out)
            .arg("--stop-file")
            .arg(&stop)
            .args(["--timeout", "90", "--commit"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Member {
            child: Some(cmd.spawn().expect("spawn group member")),
            out,
            stop,
        }
    }

    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn of(&self, ev: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["ev"] == ev)
            .collect()
    }

    /// Partitions owned now (the member reports its assignment whenever it changes).
    pub fn owned(&self) -> BTreeSet<i64> {
        self.of("owned")
            .last()
            .map(|e| {
                e["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn values(&self) -> Vec<String> {
        self.of("msg")
            .iter()
            .map(|e| e["v"].as_str().unwrap().to_string())
            .collect()
    }

    /// Ask it to close (leaving the group) and wait.
    pub fn stop(&mut self) {
        std::fs::write(&self.stop, b"").unwrap();
        if let Some(mut c) = self.child.take() {
            if super::wait_timeout(&mut c, Duration::from_secs(30)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
                panic!("group member did not stop within 30 s");
            }
        }
    }

    /// SIGKILL: no LeaveGroup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "KILL");
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}
