//! `fjord produce`: lines from stdin become records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use fjord_client::{Client, Compression, Error, Partitioner, ProduceOptions, ProduceRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::{acks, compression, key_value, rack, Connect};

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
    /// The producer's rack (availability zone), as brokers name theirs in broker.rack: unkeyed
    /// records go only to partitions whose leader is in this rack (all partitions if none is);
    /// keyed records still go by key hash. The client id carries fjord_az=RACK.
    #[arg(long, value_name = "RACK", value_parser = rack)]
    rack: Option<String>,
}

/// How often a long-running produce re-reads the topic's leaders, so that the partitions led
/// in its rack follow leadership as it moves (Kafka's `metadata.max.age.ms` is 5 minutes).
const METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// Attempts per batch while its partition's leader moves.
const LEADER_MOVED_ATTEMPTS: u32 = 6;

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

/// Assign each record a partition: the fixed one, else the partitioner's (murmur2 of the key;
/// for unkeyed records its sticky partition, one for all unkeyed records of a batch).
pub fn assign(
    records: Vec<ProduceRecord>,
    fixed: Option<i32>,
    partitioner: &Partitioner,
) -> BTreeMap<i32, Vec<ProduceRecord>> {
    let mut out: BTreeMap<i32, Vec<ProduceRecord>> = BTreeMap::new();
    for r in records {
        let p = fixed.unwrap_or_else(|| partitioner.partition(r.key.as_deref()));
        out.entry(p).or_default().push(r);
    }
    out
}

/// Whether the broker certainly appended nothing because the partition's leader is not where
/// the client thought (or could not be reached at all), so the batch may go again after a
/// metadata refresh.
fn leader_moved(e: &Error) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
    // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
    matches!(e, Error::Connect { .. }) || matches!(e.code(), Some(3 | 5 | 6 | 74 | 75))
}

/// Re-read the topic's leaders into `partitioner`.
async fn refresh(
    client: &Client,
    topic: &str,
    partitioner: &mut Partitioner,
) -> anyhow::Result<()> {
    let t = client.topic_metadata(topic).await?;
    partitioner.update(&t, &client.brokers());
    Ok(())
}

/// Where unkeyed records go, for a producer with a rack.
fn rack_note(topic: &str, partitioner: &Partitioner) -> Option<String> {
    let rack = partitioner.rack()?;
    Some(if partitioner.is_rack_local() {
        let ps: Vec<String> = partitioner
            .in_rack()
            .iter()
            .map(|p| p.to_string())
            .collect();
        format!(
            "rack {rack}: unkeyed records go to partitions {} of topic {topic:?} (led in rack {rack})",
            ps.join(",")
        )
    } else {
        format!(
            "rack {rack}: no partition of topic {topic:?} is led in rack {rack}; unkeyed records \
             go to every partition with a leader"
        )
    })
}

pub async fn run(connect: &Connect, args: ProduceArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let client = connect
        .client_with(connect.config_in_rack(args.rack.as_deref()))
        .await?;
    let topic = client.topic_metadata_auto_create(&args.topic).await?;
    let partitions = topic.partitions.len() as i32;
    if let Some(p) = args.partition {
        if p < 0 || p >= partitions {
            bail!(
                "topic {:?} has {partitions} partitions; partition {p} does not exist",
                args.topic
            );
        }
    }
    let mut partitioner = Partitioner::new(args.rack.clone(), rand::random::<u16>() as usize);
    partitioner.update(&topic, &client.brokers());
    let mut refreshed = Instant::now();
    let mut note = rack_note(&args.topic, &partitioner);
    if let Some(n) = &note {
        eprintln!("{n}");
    }
    let options = ProduceOptions {
        acks: args.acks,
        compression: args.compression,
        ..ProduceOptions::default()
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut total = 0usize;
    let mut used: BTreeMap<i32, usize> = BTreeMap::new();
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
        if refreshed.elapsed() >= METADATA_MAX_AGE {
            refresh(&client, &args.topic, &mut partitioner).await?;
            refreshed = Instant::now();
        }
        // A batch whose leader moved goes again (its unkeyed records to the partitioner's
        // new choice), after a metadata refresh and a growing pause.
        let mut pending = batch;
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            let mut moved = Vec::new();
            for (partition, records) in assign(pending, args.partition, &partitioner) {
                match client
                    .produce(&args.topic, partition, &records, options)
                    .await
                {
                    Ok(_) => {
                        total += records.len();
                        *used.entry(partition).or_default() += records.len();
                    }
                    Err(e) if leader_moved(&e) && attempt < LEADER_MOVED_ATTEMPTS => {
                        moved.extend(records);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if moved.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            refresh(&client, &args.topic, &mut partitioner).await?;
            refreshed = Instant::now();
            pending = moved;
        }
        let now = rack_note(&args.topic, &partitioner);
        if now != note {
            if let Some(n) = &now {
                eprintln!("{n}");
            }
            note = now;
        }
        partitioner.next_batch();
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
    use fjord_client::partitioner::partition_for_key;
    use fjord_client::{BrokerInfo, PartitionMetadata, TopicMetadata, Uuid};

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
        let mut partitioner = Partitioner::new(None, 5);
        partitioner.update(&topic(&[1, 1, 1, 1]), &[]);
        let got = assign(records, None, &partitioner);
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
        let fixed = assign(
            vec![parse_line("foobar=1", Some("="), &[])],
            Some(3),
            &partitioner,
        );
        assert!(fixed.contains_key(&3));
    }

    /// A topic whose partition `i` is led by broker `leaders[i]`.
    fn topic(leaders: &[i32]) -> TopicMetadata {
        TopicMetadata {
            name: "t".into(),
            topic_id: Uuid::nil(),
            is_internal: false,
            error_code: 0,
            partitions: leaders
                .iter()
                .enumerate()
                .map(|(i, &leader)| PartitionMetadata {
                    partition: i as i32,
                    error_code: 0,
                    leader,
                    leader_epoch: 0,
                    replicas: vec![leader],
                    isr: vec![leader],
                    offline_replicas: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn with_a_rack_unkeyed_records_stay_in_it_and_keys_still_hash() {
        let brokers: Vec<BrokerInfo> = [(1, "a"), (2, "b"), (3, "c")]
            .into_iter()
            .map(|(id, rack)| BrokerInfo {
                node_id: id,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: Some(rack.into()),
                is_fenced: false,
            })
            .collect();
        let mut partitioner = Partitioner::new(Some("b".into()), 0);
        partitioner.update(&topic(&[1, 2, 3, 1, 2, 3]), &brokers);
        let mut unkeyed_partitions = Vec::new();
        for _ in 0..4 {
            let records = vec![
                parse_line("x", Some("="), &[]),
                parse_line("foobar=1", Some("="), &[]),
                parse_line("y", Some("="), &[]),
            ];
            for (p, rs) in assign(records, None, &partitioner) {
                for r in rs {
                    match r.key {
                        Some(k) => assert_eq!(p, partition_for_key(&k, 6)),
                        None => unkeyed_partitions.push(p),
                    }
                }
            }
            partitioner.next_batch();
        }
        assert_eq!(unkeyed_partitions, vec![1, 1, 4, 4, 1, 1, 4, 4]);
        assert!(rack_note("t", &partitioner)
            .unwrap()
            .contains("partitions 1,4"));
        assert_eq!(rack_note("t", &Partitioner::new(None, 0)), None);
    }

    #[test]
    fn only_errors_that_appended_nothing_are_retried() {
        assert!(leader_moved(&Error::kafka(6, "p", None)));
        assert!(leader_moved(&Error::kafka(5, "p", None)));
        // REQUEST_TIMED_OUT: the records may have been appended.
        assert!(!leader_moved(&Error::kafka(7, "p", None)));
        assert!(!leader_moved(&Error::Timeout {
            what: "produce".into(),
            after: Duration::from_secs(1)
        }));
    }
}
