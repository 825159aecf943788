//! `fjord consume`: print records from one partition or all of them.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use fjord_client::{FetchOptions, OffsetSpec};

use crate::args::Connect;
use crate::format::{render, Format};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the earliest offset (default: only new records).
    #[arg(long, group = "start")]
    from_beginning: bool,
    /// Start at this offset (with --partition, or in every partition).
    #[arg(long, group = "start", value_name = "N")]
    offset: Option<i64>,
    /// Start at the first record with timestamp >= MS (milliseconds since the epoch).
    #[arg(long, group = "start", value_name = "MS")]
    timestamp: Option<i64>,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
    /// Stop at the end: exit once every partition is read up to its end offset as it was at
    /// start (like `kcat -e`).
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Exit after this long without new records (default: follow until Ctrl-C).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Maximum bytes per fetch response.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    fetch_max_bytes: i32,
}

pub async fn run(connect: &Connect, args: ConsumeArgs) -> anyhow::Result<()> {
    if args.offset.is_some_and(|o| o < 0) {
        bail!("--offset must not be negative");
    }
    let client = connect.client().await?;
    let topic = client.topic_metadata_auto_create(&args.topic).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if topic.partitions.iter().any(|x| x.partition == p) => vec![p],
        Some(p) => bail!(
            "topic {:?} has {} partitions; partition {p} does not exist",
            args.topic,
            topic.partitions.len()
        ),
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    if partitions.is_empty() {
        bail!("topic {:?} has no partitions", args.topic);
    }
    let mut positions: Vec<(i32, i64)> = if let Some(o) = args.offset {
        partitions.iter().map(|&p| (p, o)).collect()
    } else {
        let spec = if args.from_beginning {
            OffsetSpec::Earliest
        } else if let Some(ts) = args.timestamp {
            OffsetSpec::Timestamp(ts)
        } else {
            OffsetSpec::Latest
        };
        let found = client.list_offsets(&args.topic, &partitions, spec).await?;
        let mut latest = None;
        let mut out = Vec::new();
        for &p in &partitions {
            let mut o = found.get(&p).map(|l| l.offset).unwrap_or(-1);
            if o < 0 {
                // No record at or after the timestamp: start at the end.
                if latest.is_none() {
                    latest = Some(
                        client
                            .list_offsets(&args.topic, &partitions, OffsetSpec::Latest)
                            .await?,
                    );
                }
                o = latest
                    .as_ref()
                    .and_then(|m| m.get(&p))
                    .map(|l| l.offset)
                    .unwrap_or(0);
            }
            out.push((p, o));
        }
        out
    };

    // With --exit-at-end, the end offsets taken now; a partition is done once read up to its.
    let ends: Option<std::collections::BTreeMap<i32, i64>> = if args.exit_at_end {
        let latest = client
            .list_offsets(&args.topic, &partitions, OffsetSpec::Latest)
            .await?;
        Some(latest.into_iter().map(|(p, l)| (p, l.offset)).collect())
    } else {
        None
    };
    let at_end = |positions: &[(i32, i64)]| {
        ends.as_ref().is_some_and(|ends| {
            positions
                .iter()
                .all(|(p, o)| ends.get(p).is_none_or(|end| o >= end))
        })
    };
    if args.count == Some(0) || at_end(&positions) {
        return Ok(());
    }
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let options = FetchOptions {
        max_bytes: args.fetch_max_bytes,
        max_wait: idle_timeout
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500)),
        ..FetchOptions::default()
    };
    let mut printed = 0u64;
    let mut last_data = Instant::now();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let fetched = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            r = client.fetch_many(&args.topic, &positions, options) => r?,
        };
        let mut out = std::io::stdout().lock();
        let mut got_any = false;
        for pf in fetched {
            if let Some(pos) = positions.iter_mut().find(|(p, _)| *p == pf.partition) {
                pos.1 = pos.1.max(pf.next_offset);
            }
            for r in &pf.records {
                got_any = true;
                if let Err(e) = writeln!(out, "{}", render(args.format, r)) {
                    return quiet_broken_pipe(e);
                }
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    return out.flush().or_else(quiet_broken_pipe);
                }
            }
        }
        if let Err(e) = out.flush() {
            return quiet_broken_pipe(e);
        }
        drop(out);
        if at_end(&positions) {
            return Ok(());
        }
        if got_any {
            last_data = Instant::now();
        } else if idle_timeout.is_some_and(|t| last_data.elapsed() >= t) {
            return Ok(());
        }
    }
}

/// `fjord consume ... | head` should end quietly when `head` exits.
fn quiet_broken_pipe(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e).context("writing to stdout")
    }
}
