//! A Jepsen-style nemesis for a 3-node fjord cluster (docs/testing.md): each node in its own
//! network namespace, faults (kill -9, SIGSTOP, partitions, one-way drops, loss, a full disk)
//! from a seeded schedule under idempotent-producer, consumer-group and admin load, and
//! checkers over the history afterwards.

pub mod check;
pub mod fault;
pub mod history;
pub mod load;
pub mod net;
pub mod node;
pub mod run;
pub mod txn_load;

pub use fault::FaultKind;
pub use run::{run_round, Report, RoundConfig};

/// The `fjord` binary to test: `FJORD_BIN` when set, else `fjord` next to the running
/// executable or one directory up (cargo's `target/<profile>/` for binaries and tests).
pub fn default_fjord_bin() -> Option<std::path::PathBuf> {
    if let Some(b) = std::env::var_os("FJORD_BIN").filter(|b| !b.is_empty()) {
        return Some(b.into());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("fjord"), dir.parent()?.join("fjord")]
        .into_iter()
        .find(|p| p.is_file())
}
