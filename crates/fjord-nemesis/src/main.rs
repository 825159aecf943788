//! `fjord-nemesis`: run seeded fault rounds against a 3-node fjord cluster (docs/testing.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use fjord_nemesis::{default_fjord_bin, run_round, FaultKind, RoundConfig};

#[derive(Debug, Parser)]
#[command(
    name = "fjord-nemesis",
    about = "Jepsen-style fault rounds against a 3-node fjord cluster"
)]
struct Args {
    /// Seed of the first round (printed; the same seed replays the same fault schedule).
    /// Round k uses seed + k.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of rounds.
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// Seconds of faults per round.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Fault kinds, comma-separated (kill, pause, isolate, isolate-controller, bridge,
    /// one-way, loss, slow, disk-full, disk-full-controller); default all.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The fjord binary (default: $FJORD_BIN, else `fjord` next to this binary).
    #[arg(long)]
    fjord_bin: Option<PathBuf>,
    /// Reports, histories and server logs go to DIR/seed-N/.
    #[arg(long, default_value = "/tmp/fjord-nemesis-out")]
    out: PathBuf,
    /// Run on loopback addresses even when network namespaces are possible.
    #[arg(long)]
    no_netns: bool,
    /// Size of each node's tmpfs data disk in MiB (0: no tmpfs, no disk-full faults).
    #[arg(long, default_value_t = 256)]
    disk_mb: u64,
    /// Partitions of the load's topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Shortest and longest hold of a fault, in seconds.
    #[arg(long, default_value_t = 2)]
    hold_min: u64,
    #[arg(long, default_value_t = 6)]
    hold_max: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.fjord_bin.clone().or_else(default_fjord_bin) {
        Some(b) => b,
        None => bail!("no fjord binary: build it (cargo build -p fjord) or pass --fjord-bin"),
    };
    let kinds: Vec<FaultKind> = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::parse(f).with_context(|| format!("unknown fault kind {f:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut failed = Vec::new();
    for k in 0..args.rounds {
        let s = seed + k;
        eprintln!(
            "fjord-nemesis: round {}/{} seed {s} (replay: fjord-nemesis --seed {s} --duration {})",
            k + 1,
            args.rounds,
            args.duration
        );
        let mut cfg = RoundConfig::new(s, bin.clone(), args.out.join(format!("seed-{s}")));
        cfg.duration = Duration::from_secs(args.duration);
        cfg.kinds = kinds.clone();
        cfg.netns = !args.no_netns;
        cfg.disk_mb = args.disk_mb;
        cfg.partitions = args.partitions;
        cfg.hold = (
            Duration::from_secs(args.hold_min),
            Duration::from_secs(args.hold_max.max(args.hold_min)),
        );
        let result = rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = run_round(&cfg) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                _ = term.recv() => bail!("terminated"),
            }
        });
        // Dropping the round's future (on a signal) has killed the nodes and removed the
        // namespaces, mounts and data already.
        match result {
            Ok(report) => {
                print!("{}", report.text());
                if !report.anomalies.is_empty() {
                    failed.push(s);
                }
            }
            Err(e) => {
                eprintln!("fjord-nemesis: round with seed {s} failed: {e:#}");
                if e.to_string() == "interrupted" || e.to_string() == "terminated" {
                    return Err(e);
                }
                failed.push(s);
            }
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    if failed.is_empty() {
        println!(
            "fjord-nemesis: {} round(s) from seed {seed}: no anomalies",
            args.rounds
        );
        Ok(())
    } else {
        bail!("rounds with anomalies or errors, seeds: {failed:?}")
    }
}
