//! The fault kinds and the seeded schedule of them. A fault starts, holds for a while and is
//! healed; the run then waits for the cluster to converge before the next one.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FaultKind {
    /// SIGKILL a node, restart it at heal.
    Kill,
    /// SIGSTOP a node, SIGCONT at heal.
    Pause,
    /// Cut one node off from the other two (for 3 nodes: the minority/majority split).
    Isolate,
    /// Cut the active controller off from the other nodes.
    IsolateController,
    /// Two nodes cannot reach each other, the third reaches both (overlapping majorities).
    Bridge,
    /// Packets from one node to another are dropped, the other direction works.
    OneWay,
    /// Drop a share of the packets between all nodes.
    Loss,
    /// A slow link: one node's traffic with the other nodes goes through a narrow pipe (a
    /// rate limit with a short queue: delay and tail drops). `tc netem` is not on the CI
    /// kernel, so latency comes from queueing, as on a congested link.
    Slow,
    /// Fill a node's data disk (a tmpfs) to the last byte, free it at heal.
    DiskFull,
    /// Fill the active controller's data disk.
    DiskFullController,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::IsolateController,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::Loss,
        FaultKind::Slow,
        FaultKind::DiskFull,
        FaultKind::DiskFullController,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateController => "isolate-controller",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::Loss => "loss",
            FaultKind::Slow => "slow",
            FaultKind::DiskFull => "disk-full",
            FaultKind::DiskFullController => "disk-full-controller",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the fault needs a small tmpfs data disk per node.
    pub fn needs_disk(self) -> bool {
        matches!(self, FaultKind::DiskFull | FaultKind::DiskFullController)
    }

    /// Whether the fault needs network namespaces (nft rules between nodes).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            FaultKind::Isolate
                | FaultKind::IsolateController
                | FaultKind::Bridge
                | FaultKind::OneWay
                | FaultKind::Loss
                | FaultKind::Slow
        )
    }
}

/// One step of a schedule: which fault, how long it holds, the pause after convergence, and
/// random numbers that pick its targets.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub kind: FaultKind,
    pub hold: Duration,
    pub gap: Duration,
    /// Picks the target node(s): node `pick % n + 1`, the next one `(pick / n) % (n-1)` on.
    pub pick: u64,
    /// Loss percentage for [`FaultKind::Loss`]; also picks [`Step::slow_kbit`].
    pub loss_pct: u32,
}

impl Step {
    /// The primary target among `n` nodes (1-based).
    pub fn node(&self, n: usize) -> usize {
        (self.pick % n as u64) as usize + 1
    }

    /// The rate of a [`FaultKind::Slow`] link in kbit/s: 40-160, from `loss_pct` (no draw
    /// of its own, so the schedules of seeds run before this kind existed are unchanged).
    pub fn slow_kbit(&self) -> u32 {
        self.loss_pct * 4
    }

    /// A second node different from [`Step::node`].
    pub fn other(&self, n: usize) -> usize {
        let first = self.node(n);
        let k = ((self.pick / n as u64) % (n as u64 - 1)) as usize;
        (first + k) % n + 1
    }
}

/// The seeded schedule: steps drawn from `kinds` (round-robin over a shuffled order, so every
/// kind comes up once before any repeats), holds in `hold`.
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    order: Vec<FaultKind>,
    hold: (Duration, Duration),
}

impl Schedule {
    pub fn new(seed: u64, kinds: &[FaultKind], hold: (Duration, Duration)) -> Schedule {
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds: kinds.to_vec(),
            order: Vec::new(),
            hold,
        }
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.kinds.is_empty() {
            return None;
        }
        if self.order.is_empty() {
            let mut order = self.kinds.clone();
            // Fisher-Yates with our own rng (stable across rand versions' shuffle changes).
            for i in (1..order.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                order.swap(i, j);
            }
            self.order = order;
        }
        let kind = self.order.pop().expect("non-empty");
        let (lo, hi) = self.hold;
        let hold = Duration::from_millis(
            self.rng
                .gen_range(lo.as_millis() as u64..=hi.as_millis().max(lo.as_millis()) as u64),
        );
        Some(Step {
            kind,
            hold,
            gap: Duration::from_millis(self.rng.gen_range(500..=2000)),
            pick: self.rng.gen(),
            loss_pct: self.rng.gen_range(10..=40),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_covers_every_kind() {
        let hold = (Duration::from_secs(2), Duration::from_secs(5));
        let n = FaultKind::ALL.len();
        let a: Vec<_> = Schedule::new(7, &FaultKind::ALL, hold)
            .take(2 * n)
            .collect();
        let b: Vec<_> = Schedule::new(7, &FaultKind::ALL, hold)
            .take(2 * n)
            .collect();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let first: std::collections::BTreeSet<_> = a[..n].iter().map(|s| s.kind).collect();
        assert_eq!(first.len(), FaultKind::ALL.len());
        for s in &a {
            assert_ne!(s.node(3), s.other(3));
            assert!((1..=3).contains(&s.other(3)));
            assert!((40..=160).contains(&s.slow_kbit()));
        }
    }
}
