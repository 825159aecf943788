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
use crate::output::{self, Output, Table};

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
    /// Lag status by Burrow's rules over each partition's recent commits: the group's status
    /// (OK, WARN, ERR), each partition's (OK, WARN, STOP, STALL, REWIND), lag in offsets and
    /// in time (from the admin endpoint of any broker).
    Lag {
        /// One group (default: every group with commits).
        group: Option<String>,
        /// The admin HTTP address of any broker (`admin.listener`).
        #[arg(long, default_value = "127.0.0.1:9644", env = "FJORD_ADMIN")]
        admin: String,
        /// Print again every SECONDS (default 2) until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
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

/// Kafka's name and code, as every other error prints: `GROUP_ID_NOT_FOUND (69)`.
fn error_name(code: i16) -> String {
    format!("{} ({code})", fjord_client::error_name(code))
}

pub async fn run(connect: &Connect, output: Output, command: GroupCommand) -> anyhow::Result<()> {
    if let GroupCommand::Lag {
        group,
        admin,
        watch,
    } = command
    {
        return crate::group_lag::run(&admin, group, watch, output).await;
    }
    let client = connect.client().await?;
    match command {
        GroupCommand::List { states, types } => list(&client, output, states, types).await?,
        GroupCommand::Describe { group } => {
            let conn = client.group_coordinator(&group).await?;
            describe(&client, &conn, &group, output).await?
        }
        GroupCommand::Delete { groups } => {
            let mut failed = false;
            for group in &groups {
                let conn = match client.group_coordinator(group).await {
                    Ok(c) => c,
                    Err(e) => {
                        failed = true;
                        eprintln!("cannot delete group {group}: {e}");
                        continue;
                    }
                };
                let resp = conn
                    .send(
                        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(group))]),
                    )
                    .await?;
                for r in resp.results {
                    if r.error_code == 0 {
                        outln!("deleted group {}", r.group_id.0.as_str());
                    } else {
                        failed = true;
                        eprintln!(
                            "cannot delete group {}: {}",
                            r.group_id.0.as_str(),
                            error_name(r.error_code)
                        );
                    }
                }
            }
            if failed {
                bail!("some groups were not deleted");
            }
        }
        GroupCommand::ResetOffsets(a) => {
            let conn = client.group_coordinator(&a.group).await?;
            reset(&client, &conn, a).await?
        }
        // Answered above, from the admin endpoint, without a Kafka connection.
        GroupCommand::Lag { .. } => {}
    }
    Ok(())
}

/// ListGroups from every broker (each lists the groups it coordinates), merged.
async fn list(
    client: &fjord_client::Client,
    output: Output,
    states: Vec<String>,
    types: Vec<String>,
) -> anyhow::Result<()> {
    let md = client.metadata(Some(&[])).await?;
    let request = ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|s| sb(s)).collect())
        .with_types_filter(types.iter().map(|s| sb(s)).collect());
    let mut groups = Vec::new();
    for b in &md.brokers {
        let resp = client
            .broker_connection(b.node_id)
            .await?
            .send(&request)
            .await?;
        if resp.error_code != 0 {
            bail!(
                "ListGroups on broker {}: {}",
                b.node_id,
                error_name(resp.error_code)
            );
        }
        groups.extend(resp.groups);
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    groups.dedup_by(|a, b| a.group_id == b.group_id);
    if output == Output::Json {
        let list: Vec<_> = groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "group": g.group_id.0.as_str(),
                    "type": g.group_type.as_str(),
                    "protocol_type": g.protocol_type.as_str(),
                    "state": g.group_state.as_str(),
                })
            })
            .collect();
        output::json(&serde_json::json!({ "groups": list }));
        return Ok(());
    }
    let mut table = Table::new(&["GROUP", "TYPE", "PROTOCOL-TYPE", "STATE"]);
    for g in groups {
        table.row(vec![
            g.group_id.0.to_string(),
            g.group_type.to_string(),
            if g.protocol_type.is_empty() {
                "-".to_string()
            } else {
                g.protocol_type.to_string()
            },
            g.group_state.to_string(),
        ]);
    }
    table.print();
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

/// Everything `group describe` shows, for the table and for `--output json`.
#[derive(serde::Serialize)]
struct GroupView {
    group: String,
    state: String,
    protocol_type: String,
    /// `classic` or `consumer` (KIP-848).
    #[serde(rename = "type")]
    kind: &'static str,
    /// The classic group's assignor (protocol), if any.
    protocol: Option<String>,
    group_epoch: Option<i32>,
    assignment_epoch: Option<i32>,
    assignor: Option<String>,
    members: Vec<MemberView>,
    offsets: Vec<OffsetRow>,
}

#[derive(serde::Serialize)]
struct MemberView {
    member_id: String,
    client_id: String,
    host: String,
    instance_id: Option<String>,
    rack: Option<String>,
    member_epoch: Option<i32>,
    assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(serde::Serialize)]
struct OffsetRow {
    topic: String,
    partition: i32,
    committed_offset: i64,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
}

async fn describe(
    client: &fjord_client::Client,
    conn: &fjord_client::Connection,
    group: &str,
    output: Output,
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
        return Err(fjord_client::Error::kafka(
            d.error_code,
            format!("group {group:?}"),
            d.error_message.as_ref().map(|m| m.to_string()),
        )
        .into());
    }
    // KIP-848 groups answer ConsumerGroupDescribe (epochs, assignor, member epochs); classic
    // groups, even empty ones that look alike in DescribeGroups, answer it with an error.
    let consumer_group = if d.protocol_type.as_str() == "consumer" {
        conn.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb(group))]))
            .await
            .ok()
            .and_then(|c| c.groups.into_iter().next())
            .filter(|g| g.error_code == 0)
    } else {
        None
    };
    let mut view = GroupView {
        group: group.to_string(),
        state: d.group_state.to_string(),
        protocol_type: d.protocol_type.to_string(),
        kind: if consumer_group.is_some() {
            "consumer"
        } else {
            "classic"
        },
        protocol: consumer_group
            .is_none()
            .then(|| d.protocol_data.to_string()),
        group_epoch: None,
        assignment_epoch: None,
        assignor: None,
        members: Vec::new(),
        offsets: Vec::new(),
    };
    let mut epochs: BTreeMap<String, i32> = BTreeMap::new();
    if let Some(g) = consumer_group {
        view.group_epoch = Some(g.group_epoch);
        view.assignment_epoch = Some(g.assignment_epoch);
        view.assignor = Some(g.assignor_name.to_string());
        for m in g.members {
            epochs.insert(m.member_id.to_string(), m.member_epoch);
        }
    }
    for m in &d.members {
        let sub = fjord_group::subscription::parse_subscription(&m.member_metadata);
        let assignment = fjord_group::subscription::parse_assignment(&m.member_assignment)
            .unwrap_or_default()
            .into_iter()
            .collect();
        view.members.push(MemberView {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            rack: sub.as_ref().and_then(|s| s.rack.clone()),
            member_epoch: epochs.get(m.member_id.as_str()).copied(),
            assignment,
        });
    }
    let offsets = committed(conn, group).await?;
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
            view.offsets.push(OffsetRow {
                topic: t.clone(),
                partition: p,
                committed_offset: o,
                log_end_offset: end,
                lag: end.map(|e| (e - o).max(0)),
            });
        }
    }
    if output == Output::Json {
        output::json(&serde_json::to_value(&view)?);
        return Ok(());
    }
    print_group(&view);
    Ok(())
}

fn print_group(view: &GroupView) {
    outln!("group:         {}", view.group);
    outln!("state:         {}", view.state);
    outln!("protocol type: {}", view.protocol_type);
    if view.kind == "consumer" {
        outln!("type:          consumer (KIP-848)");
        if let (Some(e), Some(a), Some(n)) =
            (view.group_epoch, view.assignment_epoch, &view.assignor)
        {
            outln!("group epoch:   {e} (assignment epoch {a}, assignor {n})");
        }
    } else {
        outln!("type:          classic");
        outln!("protocol:      {}", view.protocol.as_deref().unwrap_or(""));
    }
    outln!("members:       {}", view.members.len());
    for m in &view.members {
        let assignment = m
            .assignment
            .iter()
            .map(|(t, ps)| {
                let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                format!("{t}:{}", ps.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let epoch = m
            .member_epoch
            .map(|e| format!("  epoch={e}"))
            .unwrap_or_default();
        outln!(
            "  {}  client-id={}  host={}  instance={}  rack={}{}",
            m.member_id,
            m.client_id,
            m.host,
            m.instance_id.as_deref().unwrap_or("-"),
            m.rack.as_deref().unwrap_or("-"),
            epoch
        );
        outln!(
            "    assignment: {}",
            if assignment.is_empty() {
                "-"
            } else {
                &assignment
            }
        );
    }
    outln!();
    let mut table = Table::new(&[
        "TOPIC",
        ">PARTITION",
        ">CURRENT-OFFSET",
        ">LOG-END-OFFSET",
        ">LAG",
    ]);
    let num = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    for r in &view.offsets {
        table.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.committed_offset.to_string(),
            num(r.log_end_offset),
            num(r.lag),
        ]);
    }
    table.print();
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
    outln!("{:<24} {:>9} {:>12}", "TOPIC", "PARTITION", "NEW-OFFSET");
    for (p, o) in &targets {
        outln!("{:<24} {:>9} {:>12}", a.topic, p, o);
    }
    if !a.execute {
        outln!("(dry run: add --execute to apply)");
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
    outln!("offsets of group {} reset", a.group);
    Ok(())
}
