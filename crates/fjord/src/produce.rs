//! `fjord produce`: lines from stdin become records.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use fjord_client::partitioner::partition_for_key;
use fjord_client::{Compression, ProduceOptions, ProduceRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::{acks, compression, key_value, Connect};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Send every record to this partition (default: by key hash, round-robin when unkeyed).
    #[arg(long)]
    partition: Option<i32>,
    /// Split each line into key and value at the first occurrence of SEP.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Header added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// 0, 1, -1 or all.
    #[arg(long, default_value = "all", value_parser = acks)]
    acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = compression)]
    compression: Compression,
    /// Lines per produce request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

/// Turn one input line into a record.
pub fn parse_line(
    line: &str,
    key_separator: Option<&str>,
    headers: &[(String, String)],
) -> ProduceRecord {
    let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (Some(Bytes::copy_from_slice(k.as_bytes())), v),
        None => (None, line),
    };
    ProduceRecord {
        key,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v.as_bytes()))))
            .collect(),
        timestamp: None,
    }
}

/// Assign each record a partition: the fixed one, else murmur2 of the key, else `round_robin`
/// (one partition for all unkeyed records of a batch).
pub fn assign(
    records: Vec<ProduceRecord>,
    fixed: Option<i32>,
    partitions: i32,
    round_robin: i32,
) -> BTreeMap<i32, Vec<ProduceRecord>> {
    let mut out: BTreeMap<i32, Vec<ProduceRecord>> = BTreeMap::new();
    for r in records {
        let p = match (fixed, &r.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => round_robin.rem_euclid(partitions),
        };
        out.entry(p).or_default().push(r);
    }
    out
}

pub async fn run(connect: &Connect, args: ProduceArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let client = connect.client().await?;
    let partitions = client
        .topic_metadata_auto_create(&args.topic)
        .await?
        .partitions
        .len() as i32;
    if let Some(p) = args.partition {
        if p < 0 || p >= partitions {
            bail!(
                "topic {:?} has {partitions} partitions; partition {p} does not exist",
                args.topic
            );
        }
    }
    let options = ProduceOptions {
        acks: args.acks,
        compression: args.compression,
        ..ProduceOptions::default()
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut total = 0usize;
    let mut used: BTreeMap<i32, usize> = BTreeMap::new();
    let mut round_robin: i32 = rand::random::<u16>() as i32;
    let mut eof = false;
    while !eof {
        let mut batch = Vec::with_capacity(args.batch_size.min(10_000));
        while batch.len() < args.batch_size {
            match lines.next_line().await.context("reading stdin")? {
                Some(line) => batch.push(parse_line(
                    &line,
                    args.key_separator.as_deref(),
                    &args.headers,
                )),
                None => {
                    eof = true;
                    break;
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        for (partition, records) in assign(batch, args.partition, partitions, round_robin) {
            client
                .produce(&args.topic, partition, &records, options)
                .await?;
            total += records.len();
            *used.entry(partition).or_default() += records.len();
        }
        round_robin = round_robin.wrapping_add(1);
    }
    let parts: Vec<String> = used.keys().map(|p| p.to_string()).collect();
    eprintln!(
        "produced {total} records to topic {:?} (partitions: {})",
        args.topic,
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(",")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_split_at_first_separator() {
        let r = parse_line("k:v:w", Some(":"), &[("h".into(), "1".into())]);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:w"[..]));
        assert_eq!(
            r.headers,
            vec![("h".to_string(), Some(Bytes::from_static(b"1")))]
        );
        let r = parse_line("no separator", Some(":"), &[]);
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"no separator"[..]));
        let r = parse_line("a:b", None, &[]);
        assert_eq!(r.key, None);
    }

    #[test]
    fn keyed_records_hash_unkeyed_share_a_partition() {
        let records = vec![
            parse_line("foobar=1", Some("="), &[]),
            parse_line("x", Some("="), &[]),
            parse_line("y", Some("="), &[]),
            parse_line("foobar=2", Some("="), &[]),
        ];
        let got = assign(records, None, 4, 5);
        let foobar = partition_for_key(b"foobar", 4);
        let keyed: usize = got
            .get(&foobar)
            .map(|v| v.iter().filter(|r| r.key.is_some()).count())
            .unwrap_or(0);
        assert_eq!(keyed, 2);
        let unkeyed: Vec<_> = got
            .iter()
            .filter(|(_, v)| v.iter().any(|r| r.key.is_none()))
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(unkeyed, vec![1]); // 5 % 4
        let fixed = assign(vec![parse_line("foobar=1", Some("="), &[])], Some(3), 4, 0);
        assert!(fixed.contains_key(&3));
    }
}
