//! The README's examples, run as a new user would copy them: every ```sh and ```python block in
//! order, against real `fjord` processes, so the README cannot drift from what works.
//!
//! The only changes made to a block are its addresses: the single-node sections talk to a broker
//! this test starts on ephemeral ports (`127.0.0.1:9092` and `127.0.0.1:9644` are replaced by
//! its Kafka and admin addresses), and the local-cluster section gets ports free on
//! 127.0.0.1-3 (`:9092`, `:9093`, `:9644` replaced, and `fjord dev cluster` told to use them).
//! A block is skipped only when the line before it says `<!-- readme-test: skip (reason) -->`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// One fenced code block of the README.
#[derive(Debug)]
struct Block {
    /// The `## ` heading it is under.
    section: String,
    lang: String,
    code: String,
    /// 1-based line of the opening fence.
    line: usize,
    skip: Option<String>,
}

fn parse(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut prev = "";
    let mut lines = readme.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
        }
        if let Some(lang) = line.strip_prefix("```") {
            let lang = lang.trim().to_string();
            let mut code = String::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            let skip = prev
                .trim()
                .strip_prefix("<!-- readme-test: skip")
                .map(|r| r.trim_end_matches("-->").trim().to_string());
            out.push(Block {
                section: section.clone(),
                lang,
                code,
                line: i + 1,
                skip,
            });
        }
        prev = line;
    }
    out
}

fn runnable(b: &Block) -> bool {
    b.skip.is_none() && matches!(b.lang.as_str(), "sh" | "python")
}

const CLUSTER_SECTION: &str = "A local 3-node cluster";

#[test]
fn readme_blocks_are_found_and_only_marked_ones_skipped() {
    let blocks = parse(readme());
    let run: Vec<&Block> = blocks.iter().filter(|b| runnable(b)).collect();
    for section in ["Produce and consume with kcat", "CLI", CLUSTER_SECTION] {
        assert!(
            run.iter().any(|b| b.section == section),
            "no block of README section {section:?} would run: {blocks:#?}"
        );
    }
    assert!(run.iter().any(|b| b.lang == "python"));
    // A skip needs a reason.
    for b in &blocks {
        if let Some(reason) = &b.skip {
            assert!(
                reason.starts_with('(') && reason.len() > 3,
                "README line {}: a skipped block must say why: {reason:?}",
                b.line
            );
        }
    }
}

fn readme() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(readme_text)
}

fn readme_text() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md")
}

/// A port free on 127.0.0.1, .2 and .3 (the dev cluster's nodes), found by binding.
fn free_port_on_three() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().unwrap().port();
        let others: Vec<_> = (2..=3)
            .map(|i| TcpListener::bind(format!("127.0.0.{i}:{port}")))
            .collect();
        if others.iter().all(|r| r.is_ok()) {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

/// `fjord dev cluster ...` (not `stop`/`status`) gets explicit ports.
fn with_dev_ports(code: &str, kafka: u16, controller: u16, admin: u16) -> String {
    let mut out = String::new();
    for line in code.lines() {
        let mut line = line.to_string();
        if let Some(at) = line.find("fjord dev cluster") {
            let end = at + "fjord dev cluster".len();
            let next = line[end..].split_whitespace().next().unwrap_or("");
            if next != "stop" && next != "status" {
                line.insert_str(
                    end,
                    &format!(
                        " --kafka-port {kafka} --controller-port {controller} --admin-port {admin}"
                    ),
                );
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

struct Env {
    work: PathBuf,
    home: PathBuf,
    path: String,
    bootstrap: String,
    admin: String,
}

fn run_block(b: &Block, code: &str, env: &Env) {
    let mut cmd = match b.lang.as_str() {
        "sh" => {
            let mut c = Command::new("bash");
            c.arg("-euo").arg("pipefail").arg("-c").arg(code);
            c
        }
        "python" => {
            let mut c = Command::new(python_bin());
            c.arg("-c").arg(code);
            c
        }
        other => unreachable!("not runnable: {other}"),
    };
    cmd.current_dir(&env.work)
        .env("PATH", &env.path)
        .env("HOME", &env.home)
        .env("FJORD_BOOTSTRAP_SERVER", &env.bootstrap)
        .env("FJORD_ADMIN", &env.admin)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let result = run(cmd, None, Duration::from_secs(240));
    assert!(
        result.ok(),
        "README block at line {} (section {:?}) failed:\n{code}\n{}",
        b.line,
        b.section,
        result.describe()
    );
}

/// Processes whose working directory is under `dir`: what the README's blocks left running.
fn processes_under(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .collect()
}

/// Stops what the README left running: a dev cluster (by its own stop command), then any
/// process started from the work directory (SIGTERM, SIGKILL after 20 s).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dev = self.0.join("fjord-dev-cluster");
        if dev.join("cluster.json").exists() {
            let _ = Command::new(fjord_bin())
                .args(["dev", "cluster", "stop", "--dir"])
                .arg(&dev)
                .status();
        }
        let left = processes_under(&self.0);
        for pid in &left {
            send_signal(*pid, "TERM");
        }
        if !wait_until(Duration::from_secs(20), || {
            processes_under(&self.0).is_empty()
        }) {
            for pid in processes_under(&self.0) {
                send_signal(pid, "KILL");
            }
        }
    }
}

#[test]
fn readme_examples_work_as_written() {
    require_tool("kcat");
    let _ = python_bin();
    let broker = FjordProcess::start(&[]);
    let work = broker.scratch_dir();
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let _cleanup = Cleanup(work.clone());
    let bin_dir = Path::new(fjord_bin()).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = Env {
        work,
        home,
        path,
        bootstrap: broker.bootstrap().to_string(),
        admin: broker.admin().to_string(),
    };
    let (kafka, controller, admin) = (
        free_port_on_three(),
        free_port_on_three(),
        free_port_on_three(),
    );
    let mut ran = 0;
    for b in parse(readme()).iter().filter(|b| runnable(b)) {
        let code = if b.section == CLUSTER_SECTION {
            let code = b
                .code
                .replace(":9092", &format!(":{kafka}"))
                .replace(":9093", &format!(":{controller}"))
                .replace(":9644", &format!(":{admin}"));
            with_dev_ports(&code, kafka, controller, admin)
        } else {
            b.code
                .replace("127.0.0.1:9092", broker.bootstrap())
                .replace("127.0.0.1:9644", broker.admin())
        };
        run_block(b, &code, &env);
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} README blocks ran");
    // The README must clean up after itself (e.g. `fjord dev cluster stop`).
    let left = processes_under(&env.work);
    assert!(
        left.is_empty(),
        "the README's blocks left processes running: {:?}",
        left.iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " "))
            .collect::<Vec<_>>()
    );
    broker.assert_no_panic_in_log();
}
