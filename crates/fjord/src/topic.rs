//! `fjord topic ...`

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use fjord_client::{
    config_source, error_name, AlterConfigOp, ElectionType, NewTopic, PartitionProgress,
    ResourceType,
};

use crate::args::{key_value, Connect};
use crate::output::{self, alert, Output, Table};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the broker's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// Topic config (repeatable), e.g. --config retention.ms=60000.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
        /// Only ask the broker to validate the request.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics with their partition count and topic id.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show partitions (leader, replicas, ISR, offsets) and non-default configs of a topic.
    Describe {
        name: String,
        /// Show each partition's active producers instead (DescribeProducers to the leaders:
        /// producer id, epoch, last sequence and timestamp, the coordinator epoch of its last
        /// transaction marker and the first offset of its open transaction).
        #[arg(long)]
        producers: bool,
    },
    /// The hottest partitions against the topic's mean bytes-in rate, and the keys driving
    /// them (from the brokers' admin endpoints).
    Skew(crate::topic_skew::SkewArgs),
    /// Delete a topic.
    Delete {
        name: String,
        /// Succeed if the topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Change topic configs (IncrementalAlterConfigs).
    AlterConfig {
        name: String,
        /// Set a config (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Remove a config override, reverting to the default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Only ask the broker to validate the change.
        #[arg(long)]
        validate_only: bool,
    },
    /// Increase the partition count of a topic.
    AddPartitions {
        name: String,
        /// The new total partition count.
        #[arg(long)]
        total: i32,
    },
    /// Elect leaders (ElectLeaders): move leadership back to preferred replicas, or, with
    /// --type unclean, elect any live replica where a partition has no leader (records the
    /// old ISR acknowledged may be lost). Fails if any partition could not be elected.
    ElectLeaders {
        #[arg(long = "type", value_enum, default_value = "preferred")]
        election_type: Election,
        /// Only this topic (default: every partition of every topic).
        #[arg(long)]
        topic: Option<String>,
        /// Only these partitions of --topic (repeatable; default: all of its partitions).
        #[arg(long = "partition", requires = "topic")]
        partitions: Vec<i32>,
    },
    /// Topics neither produced to nor fetched by a consumer for --idle (never-used ones
    /// counted from their creation), with size, last use and groups (admin endpoint).
    Unused(crate::topic_gc::UnusedArgs),
    /// Topic GC: mark topics idle for --idle, delete them once marked for topic.gc.grace.ms
    /// and still idle; a dry run unless --execute (admin endpoint).
    Gc(crate::topic_gc::GcArgs),
}

/// `--type` of `topic elect-leaders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Election {
    Preferred,
    Unclean,
}

const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub async fn run(connect: &Connect, output: Output, command: TopicCommand) -> anyhow::Result<()> {
    // Unused topics, topic GC and skew are answered by the admin endpoint.
    let command = match command {
        TopicCommand::Unused(a) => return crate::topic_gc::unused(a, output).await,
        TopicCommand::Gc(a) => return crate::topic_gc::gc(a, output).await,
        TopicCommand::Skew(a) => return crate::topic_skew::run(a, output).await,
        c => c,
    };
    let client = connect.client().await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            validate_only,
        } => {
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
            };
            match client.create_topic(&topic, validate_only).await {
                Ok(created) if validate_only => outln!(
                    "topic {name:?} is valid: {} partitions, replication factor {}",
                    created.partitions,
                    created.replication_factor
                ),
                Ok(created) => outln!(
                    "created topic {name:?} ({} partitions, replication factor {}, id {})",
                    created.partitions,
                    created.replication_factor,
                    created.topic_id
                ),
                Err(e) if if_not_exists && e.code() == Some(TOPIC_ALREADY_EXISTS) => {
                    outln!("topic {name:?} already exists")
                }
                Err(e) => return Err(e.into()),
            }
        }
        TopicCommand::List { internal } => {
            let md = client.metadata(None).await?;
            let mut topics: Vec<_> = md
                .topics
                .into_iter()
                .filter(|t| internal || !t.is_internal)
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            if output == Output::Json {
                let list: Vec<_> = topics
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "topic_id": t.topic_id.to_string(),
                            "partitions": t.partitions.len(),
                            "internal": t.is_internal,
                        })
                    })
                    .collect();
                output::json(&serde_json::json!({ "topics": list }));
            } else {
                let mut table = Table::new(&["TOPIC", ">PARTITIONS", "TOPIC ID"]);
                for t in topics {
                    table.row(vec![
                        t.name,
                        t.partitions.len().to_string(),
                        t.topic_id.to_string(),
                    ]);
                }
                table.print();
            }
        }
        TopicCommand::Describe {
            name,
            producers: false,
        } => describe(&client, &name, output).await?,
        TopicCommand::Describe {
            name,
            producers: true,
        } => describe_producers(&client, &name, output).await?,
        TopicCommand::Unused(_) | TopicCommand::Gc(_) | TopicCommand::Skew(_) => {
            unreachable!("answered from the admin endpoint above")
        }
        TopicCommand::Delete { name, if_exists } => match client.delete_topic(&name).await {
            Ok(()) => outln!("deleted topic {name:?}"),
            Err(e) if if_exists && e.code() == Some(UNKNOWN_TOPIC_OR_PARTITION) => {
                outln!("topic {name:?} does not exist")
            }
            Err(e) => return Err(e.into()),
        },
        TopicCommand::AlterConfig {
            name,
            set,
            delete,
            validate_only,
        } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --set KEY=VALUE and/or --delete KEY");
            }
            let ops: Vec<AlterConfigOp> = set
                .into_iter()
                .map(|(k, v)| AlterConfigOp::Set(k, v))
                .chain(delete.into_iter().map(AlterConfigOp::Delete))
                .collect();
            client
                .incremental_alter_configs(ResourceType::Topic, &name, &ops, validate_only)
                .await?;
            if validate_only {
                outln!("config change for topic {name:?} is valid");
            } else {
                outln!("updated config of topic {name:?}");
            }
        }
        TopicCommand::AddPartitions { name, total } => {
            client.create_partitions(&name, total, false).await?;
            outln!("topic {name:?} now has {total} partitions");
        }
        TopicCommand::ElectLeaders {
            election_type,
            topic,
            partitions,
        } => elect_leaders(&client, election_type, topic, partitions).await?,
    }
    Ok(())
}

const ELECTION_NOT_NEEDED: i16 = 84;

async fn elect_leaders(
    client: &fjord_client::Client,
    election: Election,
    topic: Option<String>,
    mut partitions: Vec<i32>,
) -> anyhow::Result<()> {
    let election = match election {
        Election::Preferred => ElectionType::Preferred,
        Election::Unclean => ElectionType::Unclean,
    };
    let asked = match topic {
        None => None,
        Some(t) => {
            if partitions.is_empty() {
                let md = client.topic_metadata(&t).await?;
                partitions = md.partitions.iter().map(|p| p.partition).collect();
            }
            Some(vec![(t, partitions)])
        }
    };
    let results = client.elect_leaders(election, asked.as_deref()).await?;
    if results.is_empty() {
        outln!("no partition needed an election");
    }
    let mut failed = 0;
    for r in &results {
        let outcome = if r.error_code == 0 {
            "NONE (leader elected)".to_string()
        } else {
            let message = r
                .error_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!("{} ({}){message}", error_name(r.error_code), r.error_code)
        };
        outln!("{}-{}  {outcome}", r.topic, r.partition);
        if r.error_code != 0 && r.error_code != ELECTION_NOT_NEEDED {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("leader election failed for {failed} partition(s)");
    }
    Ok(())
}

/// `topic describe --producers`: DescribeProducers to each partition's leader.
async fn describe_producers(
    client: &fjord_client::Client,
    name: &str,
    output: Output,
) -> anyhow::Result<()> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{DescribeProducersRequest, TopicName};
    let t = client.topic_metadata(name).await?;
    let mut leaders: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for p in &t.partitions {
        leaders.entry(p.leader).or_default().push(p.partition);
    }
    // (partition, error, producers)
    let mut rows = Vec::new();
    for (leader, partitions) in leaders {
        if leader < 0 {
            for p in partitions {
                rows.push((p, Some("no leader".to_string()), Vec::new()));
            }
            continue;
        }
        let conn = client.broker_connection(leader).await?;
        let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                name.to_string(),
            )))
            .with_partition_indexes(partitions)]);
        let r = conn.send(&req).await?;
        for p in r.topics.into_iter().flat_map(|t| t.partitions) {
            let error = (p.error_code != 0).then(|| fjord_client::error_name(p.error_code));
            rows.push((p.partition_index, error, p.active_producers));
        }
    }
    rows.sort_by_key(|r| r.0);
    if output == Output::Json {
        let partitions: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, error, producers)| {
                serde_json::json!({
                    "partition": p,
                    "error": error,
                    "producers": producers.iter().map(|s| serde_json::json!({
                        "producer_id": s.producer_id.0,
                        "producer_epoch": s.producer_epoch,
                        "last_sequence": s.last_sequence,
                        "last_timestamp": s.last_timestamp,
                        "coordinator_epoch": s.coordinator_epoch,
                        "current_txn_start_offset": s.current_txn_start_offset,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&serde_json::json!({ "name": t.name, "partitions": partitions }));
        return Ok(());
    }
    let mut table = Table::new(&[
        ">PARTITION",
        ">PRODUCER ID",
        ">EPOCH",
        ">LAST SEQUENCE",
        ">LAST TIMESTAMP",
        ">COORDINATOR EPOCH",
        ">TXN START OFFSET",
    ]);
    let dash = |v: i64| {
        if v < 0 {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    for (p, error, producers) in &rows {
        if let Some(e) = error {
            table.row(vec![
                p.to_string(),
                alert(e),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for s in producers {
            table.row(vec![
                p.to_string(),
                s.producer_id.0.to_string(),
                s.producer_epoch.to_string(),
                dash(s.last_sequence as i64),
                dash(s.last_timestamp),
                dash(s.coordinator_epoch as i64),
                dash(s.current_txn_start_offset),
            ]);
        }
    }
    table.print();
    Ok(())
}

async fn describe(client: &fjord_client::Client, name: &str, output: Output) -> anyhow::Result<()> {
    let t = client.topic_metadata(name).await?;
    let progress = client.replica_progress(&t).await?;
    let configs = client
        .describe_configs(ResourceType::Topic, name, None)
        .await?;
    let min_isr: usize = configs
        .iter()
        .find(|c| c.name == "min.insync.replicas")
        .and_then(|c| c.value.as_deref()?.parse().ok())
        .unwrap_or(1);
    let mut overrides: Vec<_> = configs
        .into_iter()
        .filter(|c| c.source == config_source::DYNAMIC_TOPIC_CONFIG)
        .map(|c| {
            let value = if c.is_sensitive {
                "(sensitive)".to_string()
            } else {
                c.value.unwrap_or_else(|| "(null)".into())
            };
            (c.name, value)
        })
        .collect();
    overrides.sort();
    let replication_factor = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0);
    if output == Output::Json {
        let partitions: Vec<serde_json::Value> = progress
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).expect("plain data");
                v["under_min_isr"] = (p.isr.len() < min_isr).into();
                v
            })
            .collect();
        output::json(&serde_json::json!({
            "name": t.name,
            "topic_id": t.topic_id.to_string(),
            "internal": t.is_internal,
            "replication_factor": replication_factor,
            "min_insync_replicas": min_isr,
            "partitions": partitions,
            "configs": overrides.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        }));
        return Ok(());
    }
    outln!(
        "topic: {}  id: {}  partitions: {}  replication factor: {}",
        t.name,
        t.topic_id,
        t.partitions.len(),
        replication_factor
    );
    let list = |v: &[i32]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let num = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    let mut table = Table::new(&[
        ">PARTITION",
        ">LEADER",
        "REPLICAS",
        "ISR",
        ">LOG START",
        ">HIGH WATERMARK",
        ">LOG END",
        "STATUS",
    ]);
    for p in &progress {
        table.row(vec![
            p.partition.to_string(),
            if p.leader < 0 {
                "none".to_string()
            } else {
                p.leader.to_string()
            },
            list(&p.replicas),
            list(&p.isr),
            num(p.log_start_offset),
            num(p.high_watermark),
            num(p.log_end_offset),
            status(p, min_isr),
        ]);
    }
    table.print();
    if replication_factor > 1 || progress.iter().any(|p| p.offline) {
        outln!();
        outln!("replicas (lag behind the leader's log end; time since the first committed record a replica lacks):");
        let mut table = Table::new(&[
            ">PARTITION",
            ">REPLICA",
            "ROLE",
            "IN-SYNC",
            ">LOG END",
            ">OFFSET LAG",
            ">TIME LAG",
            "NOTE",
        ]);
        for p in &progress {
            for r in &p.replica_progress {
                table.row(vec![
                    p.partition.to_string(),
                    r.broker.to_string(),
                    if r.leader { "leader" } else { "follower" }.to_string(),
                    if r.in_sync {
                        "yes".to_string()
                    } else {
                        alert("no")
                    },
                    num(r.log_end_offset),
                    num(r.offset_lag),
                    r.time_lag_ms.map_or_else(|| "-".to_string(), human_ms),
                    r.error.clone().unwrap_or_default(),
                ]);
            }
        }
        table.print();
    }
    if overrides.is_empty() {
        outln!("configs: (defaults)");
    } else {
        outln!("configs:");
        for (k, v) in overrides {
            outln!("  {k}={v}");
        }
    }
    Ok(())
}

/// The STATUS column: `ok`, or the markers that apply.
fn status(p: &PartitionProgress, min_isr: usize) -> String {
    let mut marks = Vec::new();
    if p.offline {
        marks.push("OFFLINE");
    }
    if p.under_replicated {
        marks.push("UNDER-REPLICATED");
    }
    if !p.offline && p.isr.len() < min_isr {
        marks.push("UNDER-MIN-ISR");
    }
    if marks.is_empty() {
        "ok".to_string()
    } else {
        alert(&marks.join(","))
    }
}

/// `1500` → `1.5s`, `90000` → `1m30s`, `0` → `0s`.
pub fn human_ms(ms: i64) -> String {
    match ms {
        ..=0 => "0s".to_string(),
        1..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::human_ms;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_ms(0), "0s");
        assert_eq!(human_ms(250), "250ms");
        assert_eq!(human_ms(1500), "1.5s");
        assert_eq!(human_ms(90_000), "1m30s");
        assert_eq!(human_ms(7_380_000), "2h3m");
    }
}
