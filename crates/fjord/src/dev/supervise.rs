//! The foreground part of `fjord dev cluster`: watching the nodes, and stopping them on
//! Ctrl-C/SIGTERM/SIGHUP (SIGTERM to each, SIGKILL after a bound or at a second signal).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::start::Node;
use super::state::{self, SHUTDOWN_TIMEOUT};

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed): each stops the cluster.
pub(super) struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Foreground: report nodes that exit on their own (the others keep running) until a signal,
/// then stop them all. Returns when every node has exited.
pub(super) async fn supervise(nodes: &mut [Node], signals: &mut Signals) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            sig = signals.recv() => {
                note!("{sig}: stopping the cluster (again to kill the nodes at once)");
                shutdown(nodes, signals).await;
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
            if let Some(status) = n.child.try_wait()? {
                n.exited = Some(status);
                note!(
                    "node {} (pid {}) exited ({status}); the other nodes keep running; its log: {}",
                    n.spec.id,
                    n.pid,
                    n.spec.log.display()
                );
            }
        }
        if nodes.iter().all(|n| n.exited.is_some()) {
            let failed: Vec<String> = nodes
                .iter()
                .filter_map(|n| match n.exited {
                    Some(s) if !s.success() => Some(format!("node {}: {s}", n.spec.id)),
                    _ => None,
                })
                .collect();
            if failed.is_empty() {
                note!("every node has stopped");
                return Ok(());
            }
            anyhow::bail!("every node has exited ({})", failed.join(", "));
        }
    }
}

/// Stop every node. Those that are serving get SIGTERM — a controlled shutdown each — while
/// the ones that never became ready still hold up the quorum; those get SIGKILL afterwards
/// (they have nothing to hand over). SIGKILL too for a node still running after
/// [`SHUTDOWN_TIMEOUT`] or at a second signal.
pub(super) async fn shutdown(nodes: &mut [Node], signals: &mut Signals) {
    for n in nodes
        .iter_mut()
        .filter(|n| n.exited.is_none() && n.ready.is_some())
    {
        if let Err(e) = state::terminate(n.pid) {
            note!(
                "node {} (pid {}): cannot send SIGTERM: {e}",
                n.spec.id,
                n.pid
            );
        }
    }
    let started = Instant::now();
    let deadline = started + SHUTDOWN_TIMEOUT;
    let mut force = false;
    loop {
        for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
            match n.child.try_wait() {
                Ok(Some(status)) => {
                    n.exited = Some(status);
                    note!("node {} stopped ({status})", n.spec.id);
                }
                Ok(None) => {}
                Err(e) => {
                    note!("node {}: {e}", n.spec.id);
                    n.exited = Some(ExitStatus::default());
                }
            }
        }
        let serving = |n: &&mut Node| n.exited.is_none() && n.ready.is_some();
        if !nodes.iter_mut().any(|n| serving(&n)) {
            break;
        }
        if force || Instant::now() >= deadline {
            for n in nodes.iter_mut().filter(serving) {
                kill(n).await;
                note!(
                    "node {} did not stop{}: killed (SIGKILL)",
                    n.spec.id,
                    if force {
                        String::new()
                    } else {
                        format!(" within {} s", SHUTDOWN_TIMEOUT.as_secs())
                    }
                );
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            // A signal sent to our whole process group (`timeout`, `kill 0`) may arrive twice
            // at once: only a later one is a request to hurry.
            _ = signals.recv() => force = started.elapsed() >= Duration::from_secs(1),
        }
    }
    for n in nodes.iter_mut().filter(|n| n.exited.is_none()) {
        kill(n).await;
        note!("node {} stopped before it was ready (SIGKILL)", n.spec.id);
    }
}

/// SIGKILL a node and reap it.
async fn kill(n: &mut Node) {
    let _ = n.child.start_kill();
    n.exited = Some(n.child.wait().await.unwrap_or_default());
}
