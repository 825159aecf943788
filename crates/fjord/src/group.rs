//! `fjord group list|describe|delete|reset-offsets` (ListGroups, DescribeGroups,
//! ConsumerGroupDescribe, OffsetFetch, ListOffsets, DeleteGroups, OffsetCommit).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fjord_client::OffsetSpec;
use kafka_protocol::messages::{
    offset_commit_request, offset_fetch_request, ConsumerGroupDescribeRequest, DeleteGroupsRequest,
    DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups with their type, protocol type and state.
    List {
        /// Only groups in this state (repeatable), e.g. Stable, Empty.
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only groups of this type (repeatable): classic or consumer.
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// State, protocol, members (client id, host, rack, assignment) and per-partition
    /// committed offset, log end and lag.
    Describe { group: String },
    /// Delete empty groups and their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (the group must be empty).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    group: String,
    #[arg(long, required = true)]
    topic: String,
    #[arg(long, group = "to")]
    to_earliest: bool,
    #[arg(long, group = "to")]
    to_latest: bool,
    #[arg(long, group = "to", value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Apply the change (otherwise only print the plan, as kafka-consumer-groups does).
    #[arg(long)]
    execute: bool,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

pub async fn run(connect: &Connect, command: GroupCommand) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let conn = client.bootstrap_connection().clone();
    match command {
        GroupCommand::List { states, types } => {
            let resp = conn
                .send(
                    &ListGroupsRequest::default()
                        .with_states_filter(states.iter().map(|s| sb(s)).collect())
                        .with_types_filter(types.iter().map(|s| sb(s)).collect()),
                )
                .await?;
            if resp.error_code != 0 {
                bail!("ListGroups failed: {}", error_name(resp.error_code));
            }
            let mut groups = resp.groups;
            groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
            println!(
                "{:<32} {:<9} {:<14} STATE",
                "GROUP", "TYPE", "PROTOCOL-TYPE"
            );
            for g in groups {
                println!(
                    "{:<32} {:<9} {:<14} {}",
                    g.group_id.0.as_str(),
                    g.group_type.as_str(),
                    if g.protocol_type.is_empty() {
                        "-"
                    } else {
                        g.protocol_type.as_str()
                    },
                    g.group_state.as_str()
                );
            }
        }
        GroupCommand::Describe { group } => describe(&client, &conn, &group).await?,
        GroupCommand::Delete { groups } => {
            let resp = conn
                .send(
                    &DeleteGroupsRequest::default()
                        .with_groups_names(groups.iter().map(|g| GroupId(sb(g))).collect()),
                )
                .await?;
            let mut failed = false;
            for r in resp.results {
                if r.error_code == 0 {
                    println!("deleted group {}", r.group_id.0.as_str());
                } else {
                    failed = true;
                    eprintln!(
                        "cannot delete group {}: {}",
                        r.group_id.0.as_str(),
                        error_name(r.error_code)
                    );
                }
            }
            if failed {
                bail!("some groups were not deleted");
            }
        }
        GroupCommand::ResetOffsets(a) => reset(&client, &conn, a).await?,
    }
    Ok(())
}

async fn committed(
    conn: &fjord_client::Connection,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let resp = conn
        .send(&OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_topics(None),
            ]))
        .await?;
    let mut out = BTreeMap::new();
    for g in resp.groups {
        if g.error_code != 0 {
            bail!("OffsetFetch failed: {}", error_name(g.error_code));
        }
        for t in g.topics {
            for p in t.partitions {
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    }
    Ok(out)
}

async fn describe(
    client: &fjord_client::Client,
    conn: &fjord_client::Connection,
    group: &str,
) -> anyhow::Result<()> {
    let resp = conn
        .send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]))
        .await?;
    let d = resp
        .groups
        .into_iter()
        .next()
        .context("empty DescribeGroups response")?;
    if d.error_code != 0 {
        bail!("group {group}: {}", error_name(d.error_code));
    }
    println!("group:         {group}");
    println!("state:         {}", d.group_state.as_str());
    println!("protocol type: {}", d.protocol_type.as_str());
    let is_consumer_group = d.protocol_type.as_str() == "consumer" && d.protocol_data.is_empty();
    // KIP-848 groups: epochs and per-member epochs from ConsumerGroupDescribe.
    let mut epochs: BTreeMap<String, i32> = BTreeMap::new();
    if is_consumer_group {
        if let Ok(c) = conn
            .send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb(group))]))
            .await
        {
            if let Some(g) = c.groups.into_iter().next().filter(|g| g.error_code == 0) {
                println!("type:          consumer (KIP-848)");
                println!(
                    "group epoch:   {} (assignment epoch {}, assignor {})",
                    g.group_epoch,
                    g.assignment_epoch,
                    g.assignor_name.as_str()
                );
                for m in g.members {
                    epochs.insert(m.member_id.to_string(), m.member_epoch);
                }
            }
        }
    } else {
        println!("type:          classic");
        println!("protocol:      {}", d.protocol_data.as_str());
    }
    println!("members:       {}", d.members.len());
    for m in &d.members {
        let sub = fjord_group::subscription::parse_subscription(&m.member_metadata);
        let rack = sub
            .as_ref()
            .and_then(|s| s.rack.clone())
            .unwrap_or_else(|| "-".into());
        let assignment = fjord_group::subscription::parse_assignment(&m.member_assignment)
            .unwrap_or_default()
            .iter()
            .map(|(t, ps)| {
                format!(
                    "{t}:{}",
                    ps.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let epoch = epochs
            .get(m.member_id.as_str())
            .map(|e| format!("  epoch={e}"))
            .unwrap_or_default();
        println!(
            "  {}  client-id={}  host={}  instance={}  rack={}{}",
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str(),
            m.group_instance_id.as_deref().unwrap_or("-"),
            rack,
            epoch
        );
        println!(
            "    assignment: {}",
            if assignment.is_empty() {
                "-".into()
            } else {
                assignment
            }
        );
    }
    let offsets = committed(conn, group).await?;
    println!();
    println!(
        "{:<24} {:>9} {:>16} {:>14} {:>10}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    let mut by_topic: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in &offsets {
        by_topic.entry(t.clone()).or_default().push((*p, *o));
    }
    for (t, ps) in by_topic {
        let parts: Vec<i32> = ps.iter().map(|(p, _)| *p).collect();
        let ends = client
            .list_offsets(&t, &parts, OffsetSpec::Latest)
            .await
            .ok();
        for (p, o) in ps {
            let end = ends.as_ref().and_then(|e| e.get(&p)).map(|x| x.offset);
            println!(
                "{:<24} {:>9} {:>16} {:>14} {:>10}",
                t,
                p,
                o,
                end.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                end.map(|e| (e - o).max(0).to_string())
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(())
}

async fn reset(
    client: &fjord_client::Client,
    conn: &fjord_client::Connection,
    a: ResetArgs,
) -> anyhow::Result<()> {
    let count = client.partition_count(&a.topic).await?;
    let parts: Vec<i32> = (0..count).collect();
    let targets: BTreeMap<i32, i64> = if let Some(o) = a.to_offset {
        parts.iter().map(|p| (*p, o)).collect()
    } else {
        let spec = if a.to_latest {
            OffsetSpec::Latest
        } else if a.to_earliest {
            OffsetSpec::Earliest
        } else {
            bail!("give one of --to-earliest, --to-latest, --to-offset");
        };
        client
            .list_offsets(&a.topic, &parts, spec)
            .await?
            .into_iter()
            .map(|(p, o)| (p, o.offset))
            .collect()
    };
    println!("{:<24} {:>9} {:>12}", "TOPIC", "PARTITION", "NEW-OFFSET");
    for (p, o) in &targets {
        println!("{:<24} {:>9} {:>12}", a.topic, p, o);
    }
    if !a.execute {
        println!("(dry run: add --execute to apply)");
        return Ok(());
    }
    let resp = conn
        .send(
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(sb(&a.group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(TopicName(sb(&a.topic)))
                        .with_partitions(
                            targets
                                .iter()
                                .map(|(p, o)| {
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(*o)
                                        .with_committed_leader_epoch(-1)
                                })
                                .collect(),
                        ),
                ]),
        )
        .await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                let hint = if p.error_code == 22 || p.error_code == 25 {
                    " (the group must be empty: stop its consumers first)"
                } else {
                    ""
                };
                bail!(
                    "cannot reset partition {}: {}{hint}",
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
        }
    }
    println!("offsets of group {} reset", a.group);
    Ok(())
}
