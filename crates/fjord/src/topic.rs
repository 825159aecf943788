//! `fjord topic ...`

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use fjord_client::{
    config_source, error_name, AlterConfigOp, ElectionType, NewTopic, OffsetSpec, ResourceType,
};

use crate::args::{key_value, Connect};

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
    Describe { name: String },
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
}

/// `--type` of `topic elect-leaders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Election {
    Preferred,
    Unclean,
}

const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub async fn run(connect: &Connect, command: TopicCommand) -> anyhow::Result<()> {
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
                Ok(created) if validate_only => println!(
                    "topic {name:?} is valid: {} partitions, replication factor {}",
                    created.partitions, created.replication_factor
                ),
                Ok(created) => println!(
                    "created topic {name:?} ({} partitions, replication factor {}, id {})",
                    created.partitions, created.replication_factor, created.topic_id
                ),
                Err(e) if if_not_exists && e.code() == Some(TOPIC_ALREADY_EXISTS) => {
                    println!("topic {name:?} already exists")
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
            let width = topics
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(0)
                .max(5);
            println!("{:<width$}  {:>10}  TOPIC ID", "TOPIC", "PARTITIONS");
            for t in topics {
                println!(
                    "{:<width$}  {:>10}  {}",
                    t.name,
                    t.partitions.len(),
                    t.topic_id
                );
            }
        }
        TopicCommand::Describe { name } => describe(&client, &name).await?,
        TopicCommand::Delete { name, if_exists } => match client.delete_topic(&name).await {
            Ok(()) => println!("deleted topic {name:?}"),
            Err(e) if if_exists && e.code() == Some(UNKNOWN_TOPIC_OR_PARTITION) => {
                println!("topic {name:?} does not exist")
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
                println!("config change for topic {name:?} is valid");
            } else {
                println!("updated config of topic {name:?}");
            }
        }
        TopicCommand::AddPartitions { name, total } => {
            client.create_partitions(&name, total, false).await?;
            println!("topic {name:?} now has {total} partitions");
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
        println!("no partition needed an election");
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
        println!("{}-{}  {outcome}", r.topic, r.partition);
        if r.error_code != 0 && r.error_code != ELECTION_NOT_NEEDED {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("leader election failed for {failed} partition(s)");
    }
    Ok(())
}

async fn describe(client: &fjord_client::Client, name: &str) -> anyhow::Result<()> {
    let t = client.topic_metadata(name).await?;
    let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
    let (start, end) = if ids.is_empty() {
        Default::default()
    } else {
        (
            client
                .list_offsets(name, &ids, OffsetSpec::Earliest)
                .await?,
            client.list_offsets(name, &ids, OffsetSpec::Latest).await?,
        )
    };
    println!(
        "topic: {}  id: {}  partitions: {}  replication factor: {}",
        t.name,
        t.topic_id,
        t.partitions.len(),
        t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0)
    );
    println!(
        "{:>9}  {:>6}  {:<12}  {:<12}  {:>16}  {:>16}",
        "PARTITION", "LEADER", "REPLICAS", "ISR", "LOG START OFFSET", "LOG END OFFSET"
    );
    let list = |v: &[i32]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for p in &t.partitions {
        let off = |m: &std::collections::BTreeMap<i32, fjord_client::ListedOffset>| {
            m.get(&p.partition)
                .map(|o| o.offset.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:>9}  {:>6}  {:<12}  {:<12}  {:>16}  {:>16}",
            p.partition,
            p.leader,
            list(&p.replicas),
            list(&p.isr),
            off(&start),
            off(&end)
        );
    }
    let configs = client
        .describe_configs(ResourceType::Topic, name, None)
        .await?;
    let mut overrides: Vec<_> = configs
        .into_iter()
        .filter(|c| c.source == config_source::DYNAMIC_TOPIC_CONFIG)
        .collect();
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    if overrides.is_empty() {
        println!("configs: (defaults)");
    } else {
        println!("configs:");
        for c in overrides {
            let value = if c.is_sensitive {
                "(sensitive)".to_string()
            } else {
                c.value.unwrap_or_else(|| "(null)".into())
            };
            println!("  {}={}", c.name, value);
        }
    }
    Ok(())
}
