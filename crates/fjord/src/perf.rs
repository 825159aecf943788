//! `fjord perf produce|consume`: load generators in the spirit of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use fjord_client::{
    BatchTemplate, Client, Compression, FetchOptions, NewTopic, OffsetSpec, Partitioner,
    ProduceOptions,
};
use fjord_protocol::clock::now_ms;
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::sync::Semaphore;

use crate::args::{acks, compression, rack, Connect};

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as allowed and report throughput and latency.
    Produce(ProducePerfArgs),
    /// Read records from the beginning of a topic and report throughput.
    Consume(ConsumePerfArgs),
    /// Time for N group members to reach Stable, and to stabilise after one leaves.
    Group(crate::perf_group::GroupPerfArgs),
}

#[derive(Debug, Args)]
pub struct ProducePerfArgs {
    #[arg(long)]
    topic: String,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long)]
    num_records: u64,
    /// Records per second to aim for; -1 for no limit.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// 0, 1, -1 or all.
    #[arg(long, default_value = "all", value_parser = acks)]
    acks: i16,
    /// Create the topic with this many partitions if it does not exist (default 1).
    #[arg(long)]
    partitions: Option<i32>,
    /// Target bytes of record values per batch (one batch per produce request).
    #[arg(long, default_value_t = 16384)]
    batch_size: usize,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = compression)]
    compression: Compression,
    /// Produce requests awaiting acknowledgement at once.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// The producer's rack (availability zone): batches go only to partitions whose leader is
    /// in this rack (all partitions if none is); the client id carries fjord_az=RACK.
    #[arg(long, value_name = "RACK", value_parser = rack)]
    rack: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConsumePerfArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    num_records: u64,
    /// Maximum bytes per fetch response.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    fetch_max_bytes: i32,
    /// Give up after this long without new records.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub async fn run(connect: &Connect, command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce(a) => on_one_thread(connect, a).await,
        PerfCommand::Consume(a) => consume(connect, a).await,
        PerfCommand::Group(a) => crate::perf_group::run(connect, a).await,
    }
}

const MB: f64 = 1024.0 * 1024.0;
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Latency and throughput since the last report, and overall.
struct Stats {
    started: Instant,
    total: Histogram<u64>,
    records: u64,
    window_start: Instant,
    window_records: u64,
    window_batches: u64,
    window_latency_us: u64,
    window_max_us: u64,
    error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        let now = Instant::now();
        Stats {
            started: now,
            // 1 µs .. 1 h, 3 significant digits.
            total: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            records: 0,
            window_start: now,
            window_records: 0,
            window_batches: 0,
            window_latency_us: 0,
            window_max_us: 0,
            error: None,
        }
    }

    fn record(&mut self, records: u64, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.total.record(us);
        self.records += records;
        self.window_records += records;
        self.window_batches += 1;
        self.window_latency_us += us;
        self.window_max_us = self.window_max_us.max(us);
    }

    fn report_window(&mut self, record_size: usize) {
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let rps = self.window_records as f64 / secs;
        let avg = if self.window_batches > 0 {
            self.window_latency_us as f64 / self.window_batches as f64 / 1000.0
        } else {
            0.0
        };
        outln!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency.",
            self.window_records,
            rps,
            rps * record_size as f64 / MB,
            avg,
            self.window_max_us as f64 / 1000.0
        );
        self.window_start = Instant::now();
        self.window_records = 0;
        self.window_batches = 0;
        self.window_latency_us = 0;
        self.window_max_us = 0;
    }

    fn report_total(&self, record_size: usize) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rps = self.records as f64 / secs;
        let h = &self.total;
        let ms = |us: u64| us as f64 / 1000.0;
        outln!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th.",
            self.records,
            rps,
            rps * record_size as f64 / MB,
            h.mean() / 1000.0,
            ms(h.max()),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
        );
    }
}

/// Make sure `topic` exists, creating it with `partitions` (default 1) if not.
async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: Option<i32>,
) -> anyhow::Result<i32> {
    match client.topic_metadata(topic).await {
        Ok(t) => return Ok(t.partitions.len() as i32),
        Err(e) if e.code() == Some(3) => {}
        Err(e) => return Err(e.into()),
    }
    let n = partitions.unwrap_or(1);
    match client
        .create_topic(&NewTopic::new(topic, n, -1), false)
        .await
    {
        Ok(_) => eprintln!("created topic {topic:?} with {n} partitions"),
        Err(e) if e.code() == Some(36) => {}
        Err(e) => return Err(e.into()),
    }
    // Metadata may lag creation by a moment.
    for _ in 0..50 {
        if let Ok(t) = client.topic_metadata(topic).await {
            if !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader >= 0) {
                return Ok(t.partitions.len() as i32);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topic {topic:?} was created but has no leaders yet")
}

/// Run the producer, its connections' reader tasks included, on one thread of its own: on the
/// multi-threaded runtime every request woke another worker (a spawn, a reply), and those
/// wake-ups and context switches cost the load generator more CPU than sending the bytes.
async fn on_one_thread(connect: &Connect, args: ProducePerfArgs) -> anyhow::Result<()> {
    let connect = connect.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the producer's runtime")?
            .block_on(produce(&connect, args))
    })
    .await
    .context("producer thread")?
}

async fn produce(connect: &Connect, args: ProducePerfArgs) -> anyhow::Result<()> {
    if args.record_size == 0 {
        bail!("--record-size must be at least 1");
    }
    if args.throughput == 0 || args.throughput < -1 {
        bail!("--throughput must be positive or -1 (unlimited)");
    }
    let max_in_flight = args.max_in_flight.max(1);
    let mut config = connect.config_in_rack(args.rack.as_deref());
    config.connection.max_in_flight = max_in_flight;
    let client = Arc::new(
        Client::connect_with(&connect.bootstrap, config)
            .await
            .with_context(|| format!("bootstrap server {}", connect.bootstrap))?,
    );
    ensure_topic(&client, &args.topic, args.partitions).await?;
    // Batches go round-robin over the partitions (those led in --rack, if any is).
    let mut partitioner = Partitioner::new(args.rack.clone(), 0);
    partitioner.update(
        &client.topic_metadata(&args.topic).await?,
        &client.brokers(),
    );
    if let Some(rack) = partitioner.rack() {
        if partitioner.is_rack_local() {
            eprintln!(
                "rack {rack}: producing to partitions {:?}",
                partitioner.in_rack()
            );
        } else {
            eprintln!("rack {rack}: no partition is led in rack {rack}; producing to all");
        }
    }
    // Random uppercase letters, like Kafka's perf tool; built once and shared by every record.
    let payload: Bytes = {
        let mut rng = rand::thread_rng();
        (0..args.record_size)
            .map(|_| rng.gen_range(b'A'..=b'Z'))
            .collect::<Vec<u8>>()
            .into()
    };
    let per_batch = (args.batch_size / args.record_size).max(1);
    // Every request sends the same encoded batch, re-stamped when the millisecond moves: the
    // load generator does no per-record work, so it measures the broker, not itself.
    let mut full = BatchTemplate::new(per_batch, payload.clone(), args.compression, now_ms())?;
    let options = ProduceOptions {
        acks: args.acks,
        compression: args.compression,
        ..ProduceOptions::default()
    };
    let topic: Arc<str> = args.topic.as_str().into();
    let stats = Arc::new(Mutex::new(Stats::new()));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent = 0u64;
    while sent < args.num_records {
        if let Some(e) = stats.lock().expect("stats").error.take() {
            bail!("{e}");
        }
        if args.throughput > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.throughput as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            stats.lock().expect("stats").report_window(args.record_size);
            last_report = Instant::now();
        }
        let left = args.num_records - sent;
        let (n, batch) = if left >= full.records() {
            (full.records(), full.stamped(now_ms()))
        } else {
            // The last, shorter batch: encoded once, for this request only.
            let mut last =
                BatchTemplate::new(left as usize, payload.clone(), args.compression, now_ms())?;
            (left, last.stamped(now_ms()))
        };
        let partition = partitioner.unkeyed();
        partitioner.next_batch();
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, stats, topic) = (client.clone(), stats.clone(), topic.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = client
                .produce_batch(&topic, partition, batch, options)
                .await;
            let mut s = stats.lock().expect("stats");
            match result {
                Ok(_) => s.record(n, t0.elapsed()),
                Err(e) => {
                    s.error.get_or_insert_with(|| e.to_string());
                }
            }
            drop(permit);
        });
        sent += n;
    }
    // Wait for every outstanding batch.
    let _all = in_flight
        .acquire_many(max_in_flight as u32)
        .await
        .map_err(|_| anyhow!("in-flight semaphore closed"))?;
    let s = stats.lock().expect("stats");
    if let Some(e) = &s.error {
        bail!("{e}");
    }
    s.report_total(args.record_size);
    Ok(())
}

async fn consume(connect: &Connect, args: ConsumePerfArgs) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let topic = client.topic_metadata(&args.topic).await?;
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    if partitions.is_empty() {
        bail!("topic {:?} has no partitions", args.topic);
    }
    let start = client
        .list_offsets(&args.topic, &partitions, OffsetSpec::Earliest)
        .await?;
    let mut positions: Vec<(i32, i64)> = partitions
        .iter()
        .map(|p| (*p, start.get(p).map(|o| o.offset).unwrap_or(0)))
        .collect();
    let options = FetchOptions {
        max_bytes: args.fetch_max_bytes,
        partition_max_bytes: args.fetch_max_bytes,
        ..FetchOptions::default()
    };
    let idle = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let mut last_data = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.num_records {
        let fetched = client.fetch_many(&args.topic, &positions, options).await?;
        let mut got = false;
        for pf in fetched {
            if let Some(pos) = positions.iter_mut().find(|(p, _)| *p == pf.partition) {
                pos.1 = pos.1.max(pf.next_offset);
            }
            for r in &pf.records {
                got = true;
                records += 1;
                bytes += (r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())) as u64;
            }
        }
        if got {
            last_data = Instant::now();
        } else if last_data.elapsed() >= idle {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    outln!(
        "{} records consumed, {:.2} MB, {:.2} s, {:.1} records/sec, {:.2} MB/sec.",
        records,
        bytes as f64 / MB,
        secs,
        records as f64 / secs,
        bytes as f64 / MB / secs
    );
    if records < args.num_records {
        bail!(
            "only {records} of {} records arrived before {} ms without new data",
            args.num_records,
            args.timeout_ms
        );
    }
    Ok(())
}
